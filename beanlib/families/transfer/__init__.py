"""Transfer learning on a pretrained Inception-v3: a frozen-base head phase (on cached base features), then the top
blocks fine-tuned with BatchNorm on its moving statistics. The family's declaration; its Keras code is `model`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beanlib.errors import BeanlibError
from beanlib.families.family import Family, positive_float

if TYPE_CHECKING:
    from beanlib.config import TrialConfig

# Inception-v3 (include_top=False) in Keras 3 has 311 layers; a whole block starts right after each `mixedN`
# concatenation. The original unfroze from 249 (top 2 blocks), 229 (top 3) and 133 (top 6). tests/test_models.py
# checks this table against the built model.
BLOCK_STARTS = (41, 64, 87, 101, 133, 165, 197, 229, 249, 280)
LAYERS = 311
MIN_SIZE = 75  # smallest input keras.applications.InceptionV3 accepts
BASE_PARAMS = 21_802_784  # keras.applications.InceptionV3(include_top=False), at any image size
MACS_299 = 5.7e9  # one forward pass at 299px, in multiply-adds (Szegedy et al. 2016: about 5.7 billion); scales with area
BATCHNORM = ("inference", "batch")  # keys: model.BATCHNORM_MODES

DEFAULTS: dict[str, Any] = {
    "weights": "imagenet",  # "imagenet", "none" (random init) or a .h5/.keras path
    "unfreeze_from": None,  # None: head only; else a base layer index in BLOCK_STARTS
    "fine_tune_epochs": 10,  # not stated (ours)
    "fine_tune_learning_rate": 1e-5,  # "much lower" in the original; value ours
    "feature_cache": True,  # phase 1 on cached base features (same result, far faster)
    "batchnorm": "inference",  # unfrozen BatchNorm layers keep their moving statistics (the original's protocol)
}


def validate(c: "TrialConfig") -> None:
    if c.image_size < MIN_SIZE:
        raise BeanlibError(f"image_size {c.image_size} is too small for Inception-v3: use at least {MIN_SIZE}")
    if c.unfreeze_from is not None and c.unfreeze_from not in BLOCK_STARTS:
        raise BeanlibError(f"unfreeze_from {c.unfreeze_from!r} is not the first layer of an Inception-v3 block: "
                           f"use one of {', '.join(map(str, BLOCK_STARTS))} (or None for head only)")
    if not isinstance(c.fine_tune_epochs, int) or c.fine_tune_epochs < 0:
        raise BeanlibError(f"fine_tune_epochs must be an integer >= 0, got {c.fine_tune_epochs!r}")
    positive_float(c, "fine_tune_learning_rate")
    if c.batchnorm not in BATCHNORM:
        raise BeanlibError(f"unknown batchnorm mode {c.batchnorm!r}: use one of {', '.join(BATCHNORM)}")
    if not isinstance(c.weights, str) or not c.weights:
        raise BeanlibError(f"weights must be 'imagenet', 'none' or a weights file path, got {c.weights!r}")


def phases(c: "TrialConfig") -> tuple[str, ...]:
    return ("head", "fine_tune") if c.unfreeze_from is not None and c.fine_tune_epochs else ("head",)


def cost(c: "TrialConfig") -> float:
    """Training multiply-adds. Cached features: the base runs once, shared, and the head costs next to nothing;
    with BatchNorm on moving statistics the frozen blocks run once too, then only the open ones train."""
    base = MACS_299 * (c.image_size / 299) ** 2
    head_phase = 0.0 if c.feature_cache else c.epochs * base
    if "fine_tune" not in phases(c):
        return head_phase
    unfrozen = (LAYERS - c.unfreeze_from) / LAYERS  # layers as a proxy for work
    if c.feature_cache and c.batchnorm == "inference":
        return head_phase + base * (1 - unfrozen) + c.fine_tune_epochs * 3 * base * unfrozen
    return head_phase + c.fine_tune_epochs * base * (1 + 2 * unfrozen)  # forward all, backward the open part


def params(c: "TrialConfig", num_classes: int) -> int:
    return BASE_PARAMS + (2048 + 1) * 1024 + (1024 + 1) * num_classes  # base, Dense(1024), logits


# One whole GPU per trial: Inception-v3 fine-tuning (1,226-2,643 images/s alone on an H200) has no packing measurement.
FAMILY = Family("inception", "Inception-v3", DEFAULTS, validate, phases, cost, params, gpu_share=1.0,
                model="beanlib.families.transfer.model", pretrained_base=True,
                arch_neutral={"weights": "none", "batchnorm": "inference", "fine_tune_epochs": 1,
                              "fine_tune_learning_rate": 1.0, "feature_cache": True})
