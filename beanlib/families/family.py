"""What beanlib asks of a model family: one `Family` per family package, registered in `beanlib.families`.

A family's package (`families/NAME/__init__.py`) declares it without importing Keras, so that the driver plans,
validates and costs trials without starting TensorFlow; its `model` module holds the Keras code: `build(config,
num_classes) -> Built`, `train(trial, features)` (its training phases), `as_in_last_phase(built, config)` (what
trains at the end, for parameter counts) and `for_inference(built)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from beanlib.errors import BeanlibError

if TYPE_CHECKING:
    from beanlib.config import TrialConfig


@dataclass(frozen=True)
class Family:
    """One model family: its config fields and what the sweep, the trainer and the report need to know of it."""

    name: str  # a config's `model` value, and its trial ids' prefix
    title: str  # how tables and figures name it
    defaults: dict[str, Any]  # its own config fields and their defaults (other families' fields are None)
    validate: Callable[["TrialConfig"], None]  # BeanlibError for a config of this family that cannot work
    phases: Callable[["TrialConfig"], tuple[str, ...]]  # its training phases, in order
    cost: Callable[["TrialConfig"], float]  # multiply-adds to train one trial, roughly (the sweep starts the longest first)
    params: Callable[["TrialConfig", int], int]  # all parameters, without building (disk estimates); tested against Keras
    gpu_share: float  # a trial's default share of a GPU on a GPU cluster
    model: str  # the module with its Keras code (see above)
    normalise: Callable[[dict[str, Any]], dict[str, Any]] = lambda values: values  # defaults that depend on other fields
    arch_neutral: dict[str, Any] = field(default_factory=dict)  # fields (and stand-ins) that leave the architecture as is
    base: str | None = None  # its pretrained base, a keras.applications name (None: trained from scratch)
    base_options: dict[str, Any] = field(default_factory=dict)  # what that application is built with besides weights
    features_name: str | None = None  # how cached base features are keyed (a name once given is kept: caches stay valid)

    @property
    def pretrained_base(self) -> bool:
        """Whether its trials start from a base's weights: checked before the sweep, its features shared."""
        return self.base is not None

    def check_weights(self, weights: str) -> None:
        """Refuse, in one line, a weights file that is not a trained no-top base of this family."""
        from beanlib.weights import check_weights

        check_weights(weights, self.base, self.title, **self.base_options)


def positive_int(config: "TrialConfig", *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise BeanlibError(f"{name} must be a positive integer, got {value!r}")


def positive_float(config: "TrialConfig", *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not math.isfinite(value) or value <= 0:
            raise BeanlibError(f"{name} must be a positive number, got {value!r}")
