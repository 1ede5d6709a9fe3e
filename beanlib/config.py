"""One trial's configuration: a plain, validated, immutable record.

A trial is described by a flat dict (what Ray Tune and Parquet handle best).
`TrialConfig.from_dict` fills the model family's defaults, refuses anything that
does not apply to that family, and checks every value before any training, so
a bad sweep fails in the first second rather than after an hour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from beanlib.errors import BeanlibError
from beanlib.families import FAMILIES
from beanlib.families import family as of_family
from beanlib.families.family import positive_float, positive_int

CLASS_NAMES = ("angular_leaf_spot", "bean_rust", "healthy")  # TFDS label order
NUM_CLASSES = len(CLASS_NAMES)

OPTIMIZERS = ("adam", "sgd", "rmsprop")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policies; logits and loss stay float32

COMMON_DEFAULTS: dict[str, Any] = {
    "image_size": 299,  # the original's equal-input size for both families
    "epochs": 20,
    "batch_size": 32,  # not stated in the original (ours)
    "optimizer": "adam",  # not stated (ours)
    "learning_rate": 1e-3,  # not stated (ours)
    "seed": 0,
    "early_stop": 0,  # patience in epochs on validation loss, best weights restored; 0: off (the original's fixed epochs)
    "precision": "float32",  # or mixed_bfloat16 (fast on recent GPUs and TPUs), mixed_float16 (with loss scaling)
}
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {name: f.defaults for name, f in FAMILIES.items()}
# Fields added after results were first published: they enter a trial's id only when set away from
# these defaults (or None, in the other family), so earlier runs keep their ids (and resume) unchanged.
ID_NEUTRAL_DEFAULTS: dict[str, Any] = {"batchnorm": "inference", "early_stop": 0, "precision": "float32"}
FAMILY_FIELDS = {family: tuple(d) for family, d in FAMILY_DEFAULTS.items()}
ALL_FIELDS = ("model", *COMMON_DEFAULTS, *dict.fromkeys(f for d in FAMILY_DEFAULTS.values() for f in d))


@dataclass(frozen=True)
class TrialConfig:
    """Everything that determines one trial's training, and nothing else.

    Fields of the other model families are None: every trial is one flat row of the same Parquet schema,
    whatever its family. Build it with `from_dict`.
    """

    model: str
    image_size: int
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    seed: int
    early_stop: int = 0
    precision: str = "float32"
    kernel_size: int | None = None
    kernel_counts: tuple[int, int, int] | None = None
    regularizer: str | None = None
    reg_strength: float | None = None
    weights: str | None = None
    unfreeze_from: int | None = None
    fine_tune_epochs: int | None = None
    fine_tune_learning_rate: float | None = None
    feature_cache: bool | None = None
    batchnorm: str | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrialConfig":
        """Validate a plain dict and fill the family's defaults; BeanlibError on anything wrong."""
        family = values.get("model")
        of_family(family)  # an unknown family: one line naming the known ones
        allowed = ("model", *COMMON_DEFAULTS, *FAMILY_FIELDS[family])
        for key, value in values.items():
            if key not in ALL_FIELDS:
                raise BeanlibError(f"unknown config field {key!r}: known fields are {', '.join(ALL_FIELDS)}")
            if key not in allowed and value is not None:
                raise BeanlibError(f"config field {key!r} does not apply to model {family!r}: drop it")
        merged = {**COMMON_DEFAULTS, **FAMILY_DEFAULTS[family]}
        merged.update({k: v for k, v in values.items() if v is not None})  # None: the default
        merged["model"] = family
        config = cls(**_normalise(merged))
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The config as a flat dict of plain values (tuples become lists)."""
        out = dataclasses.asdict(self)
        if out["kernel_counts"] is not None:
            out["kernel_counts"] = list(out["kernel_counts"])
        return out

    def identity(self) -> dict[str, Any]:
        """What a trial id hashes: `to_dict()` less the later-added fields left at their defaults, and a weights
        file named by its content (sha256), not its path: the same file anywhere gives the same id."""
        from beanlib.weights import content_identity

        values = {**self.to_dict(), "weights": content_identity(self.weights)}
        return {k: v for k, v in values.items() if k not in ID_NEUTRAL_DEFAULTS or v not in (None, ID_NEUTRAL_DEFAULTS[k])}

    @property
    def planned_epochs(self) -> int:
        """Epochs the trial runs when nothing stops it early, over all its phases."""
        return self.epochs + (self.fine_tune_epochs if "fine_tune" in self.phases else 0)

    @property
    def phases(self) -> tuple[str, ...]:
        """The training phases this trial runs, in order."""
        return of_family(self.model).phases(self)

    def validate(self) -> None:
        """Refuse values that would fail (or silently mislead) later in training."""
        positive_int(self, "image_size", "epochs", "batch_size")
        if not isinstance(self.early_stop, int) or self.early_stop < 0:
            raise BeanlibError(f"early_stop (patience in epochs) must be an integer >= 0, got {self.early_stop!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise BeanlibError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.precision not in PRECISIONS:
            raise BeanlibError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.optimizer not in OPTIMIZERS:
            raise BeanlibError(f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        positive_float(self, "learning_rate")
        of_family(self.model).validate(self)


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    """Coerce list/numpy values to the plain types the dataclass declares."""
    out = dict(values)
    if out.get("kernel_counts") is not None:
        if isinstance(out["kernel_counts"], str):  # "6,16,120" from a flag or a Parquet cell
            out["kernel_counts"] = out["kernel_counts"].replace("-", ",").split(",")
        try:
            out["kernel_counts"] = tuple(_as_int(n) for n in out["kernel_counts"])
        except (TypeError, ValueError):
            raise BeanlibError(f"kernel_counts must be three positive integers, got {values['kernel_counts']!r}") from None
    out = of_family(out["model"]).normalise(out)
    for key in ("image_size", "epochs", "batch_size", "seed", "early_stop", "kernel_size", "unfreeze_from", "fine_tune_epochs"):
        if out.get(key) is not None:
            out[key] = _as_int(out[key], key)
    if out.get("feature_cache") is not None:
        out["feature_cache"] = _as_bool(out["feature_cache"], "feature_cache")
    for key in ("learning_rate", "reg_strength", "fine_tune_learning_rate"):
        if out.get(key) is not None:
            try:
                out[key] = float(out[key])
            except (TypeError, ValueError):
                raise BeanlibError(f"{key} must be a number, got {out[key]!r}") from None
    return out


def _as_int(value: Any, name: str = "value") -> int:
    """An int from an int-like value (numpy ints, 5.0); BeanlibError for 5.5 or 'x'."""
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise BeanlibError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not as_float.is_integer():
        raise BeanlibError(f"{name} must be an integer, got {value!r}")
    return int(as_float)


def _as_bool(value: Any, name: str) -> bool:
    """A bool from a bool or a flag's text (true/false, yes/no, 1/0); BeanlibError otherwise."""
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in ("true", "false", "yes", "no", "1", "0"):
        return value if isinstance(value, bool) else text in ("true", "yes", "1")
    raise BeanlibError(f"{name} must be true or false, got {value!r}")
