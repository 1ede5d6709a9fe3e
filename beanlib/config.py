"""One trial's configuration: a plain, validated, immutable record.

A trial is described by a flat dict (what Ray Tune and Parquet handle best).
`TrialConfig.from_dict` fills the model family's defaults, refuses anything that
does not apply to that family, and checks every value before any training, so
a bad sweep fails in the first second rather than after an hour.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from beanlib.errors import BeanlibError

CLASS_NAMES = ("angular_leaf_spot", "bean_rust", "healthy")  # TFDS label order
NUM_CLASSES = len(CLASS_NAMES)

OPTIMIZERS = ("adam", "sgd", "rmsprop")
REGULARIZERS = ("none", "l1", "l2", "dropout")
BATCHNORM = ("inference", "batch")  # keys: beanlib.models.BATCHNORM_MODES
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policies; logits and loss stay float32
# Strengths the original does not state (ours): l1/l2 factors on the conv
# kernels, small enough not to swamp the data loss at init; dropout 0.2 is the
# original's rate.
DEFAULT_STRENGTH = {"none": 0.0, "l1": 1e-4, "l2": 1e-3, "dropout": 0.2}

# Inception-v3 (include_top=False) in Keras 3 has 311 layers; a whole block
# starts right after each `mixedN` concatenation. The original unfroze from
# 249 (top 2 blocks), 229 (top 3) and 133 (top 6). tests/test_models.py checks
# this table against the built model.
INCEPTION_BLOCK_STARTS = (41, 64, 87, 101, 133, 165, 197, 229, 249, 280)
INCEPTION_MIN_SIZE = 75  # smallest input keras.applications.InceptionV3 accepts

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
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "lenet": {
        "kernel_size": 5,
        "kernel_counts": (6, 16, 120),
        "regularizer": "none",
        "reg_strength": None,  # None: DEFAULT_STRENGTH[regularizer]
    },
    "inception": {
        "weights": "imagenet",  # "imagenet", "none" (random init) or a .h5/.keras path
        "unfreeze_from": None,  # None: head only; else a base layer index in INCEPTION_BLOCK_STARTS
        "fine_tune_epochs": 10,  # not stated (ours)
        "fine_tune_learning_rate": 1e-5,  # "much lower" in the original; value ours
        "feature_cache": True,  # phase 1 on cached base features (same result, far faster)
        "batchnorm": "inference",  # unfrozen BatchNorm layers keep their moving statistics (the original's protocol)
    },
}
# Fields added after results were first published: they enter a trial's id only when set away from
# these defaults (or None, in the other family), so earlier runs keep their ids (and resume) unchanged.
ID_NEUTRAL_DEFAULTS: dict[str, Any] = {"batchnorm": "inference", "early_stop": 0, "precision": "float32"}
FAMILY_FIELDS = {family: tuple(d) for family, d in FAMILY_DEFAULTS.items()}
ALL_FIELDS = ("model", *COMMON_DEFAULTS, *dict.fromkeys(f for d in FAMILY_DEFAULTS.values() for f in d))


@dataclass(frozen=True)
class TrialConfig:
    """Everything that determines one trial's training, and nothing else.

    Fields of the other model family are None. Build it with `from_dict`.
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
        if family not in FAMILY_DEFAULTS:
            raise BeanlibError(f"unknown model {family!r}: use one of {', '.join(FAMILY_DEFAULTS)}")
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
        if self.model == "inception" and self.unfreeze_from is not None and self.fine_tune_epochs:
            return ("head", "fine_tune")
        return ("head",) if self.model == "inception" else ("train",)

    def validate(self) -> None:
        """Refuse values that would fail (or silently mislead) later in training."""
        _positive_int(self, "image_size", "epochs", "batch_size")
        if not isinstance(self.early_stop, int) or self.early_stop < 0:
            raise BeanlibError(f"early_stop (patience in epochs) must be an integer >= 0, got {self.early_stop!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise BeanlibError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.precision not in PRECISIONS:
            raise BeanlibError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.optimizer not in OPTIMIZERS:
            raise BeanlibError(f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        _positive_float(self, "learning_rate")
        VALIDATORS[self.model](self)


def lenet_feature_size(image_size: int, kernel_size: int) -> int:
    """Side of the last conv's output map: three valid convs, two 2x2 poolings between them."""
    side = image_size
    for step in range(3):
        side = side - kernel_size + 1
        if step < 2:
            side //= 2
    return side


def _validate_lenet(c: TrialConfig) -> None:
    _positive_int(c, "kernel_size")
    if len(c.kernel_counts) != 3 or any(not isinstance(n, int) or n < 1 for n in c.kernel_counts):
        raise BeanlibError(f"kernel_counts must be three positive integers, got {list(c.kernel_counts)!r}")
    if c.regularizer not in REGULARIZERS:
        raise BeanlibError(f"unknown regularizer {c.regularizer!r}: use one of {', '.join(REGULARIZERS)}")
    if not math.isfinite(c.reg_strength) or c.reg_strength < 0:
        raise BeanlibError(f"reg_strength must be a finite number >= 0, got {c.reg_strength!r}")
    if c.regularizer == "dropout" and not c.reg_strength < 1:
        raise BeanlibError(f"dropout rate (reg_strength) must be below 1, got {c.reg_strength!r}")
    if lenet_feature_size(c.image_size, c.kernel_size) < 1:
        smallest = next(s for s in range(1, 10_000) if lenet_feature_size(s, c.kernel_size) >= 1)
        raise BeanlibError(
            f"image_size {c.image_size} is too small for LeNet with kernel {c.kernel_size}: use at least {smallest}"
        )


def _validate_inception(c: TrialConfig) -> None:
    if c.image_size < INCEPTION_MIN_SIZE:
        raise BeanlibError(
            f"image_size {c.image_size} is too small for Inception-v3: use at least {INCEPTION_MIN_SIZE}"
        )
    if c.unfreeze_from is not None and c.unfreeze_from not in INCEPTION_BLOCK_STARTS:
        raise BeanlibError(
            f"unfreeze_from {c.unfreeze_from!r} is not the first layer of an Inception-v3 block: "
            f"use one of {', '.join(map(str, INCEPTION_BLOCK_STARTS))} (or None for head only)"
        )
    if not isinstance(c.fine_tune_epochs, int) or c.fine_tune_epochs < 0:
        raise BeanlibError(f"fine_tune_epochs must be an integer >= 0, got {c.fine_tune_epochs!r}")
    _positive_float(c, "fine_tune_learning_rate")
    if c.batchnorm not in BATCHNORM:
        raise BeanlibError(f"unknown batchnorm mode {c.batchnorm!r}: use one of {', '.join(BATCHNORM)}")
    if not isinstance(c.weights, str) or not c.weights:
        raise BeanlibError(f"weights must be 'imagenet', 'none' or a weights file path, got {c.weights!r}")


VALIDATORS = {"lenet": _validate_lenet, "inception": _validate_inception}


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
    if out.get("model") == "lenet" and out.get("reg_strength") is None and out.get("regularizer") in DEFAULT_STRENGTH:
        out["reg_strength"] = DEFAULT_STRENGTH[out["regularizer"]]
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


def _positive_int(c: TrialConfig, *names: str) -> None:
    for name in names:
        value = getattr(c, name)
        if not isinstance(value, int) or value < 1:
            raise BeanlibError(f"{name} must be a positive integer, got {value!r}")


def _positive_float(c: TrialConfig, *names: str) -> None:
    for name in names:
        value = getattr(c, name)
        if not math.isfinite(value) or value <= 0:
            raise BeanlibError(f"{name} must be a positive number, got {value!r}")
