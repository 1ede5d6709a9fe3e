"""Transfer learning on a pretrained Keras Applications base: a frozen-base head phase (on cached base features), then
the top blocks fine-tuned with BatchNorm on its moving statistics. One family per base (`model: inception`,
`model: resnet50`, ...), all with the same fields and protocol; the family's Keras code is `model`.

"Top N blocks" is a per-base table of block starts: the index, in the base's operations, of each block's first
operation, where the base can be cut cleanly (nothing from that block on reads anything before the previous
operation). tests/test_models.py checks every table against the network Keras builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from beanlib.errors import BeanlibError
from beanlib.families.family import Family, positive_float

if TYPE_CHECKING:
    from beanlib.config import TrialConfig


@dataclass(frozen=True)
class Base:
    """A Keras Applications base network, include_top=False."""

    application: str  # its keras.applications name
    title: str
    block_starts: tuple[int, ...]  # operation index where each block begins: the top N blocks open from the N-th last
    operations: int  # operations in the network Keras builds
    params: int  # its parameters, at any image size
    channels: int  # channels of its last feature map (what the head pools)
    macs_224: float  # one forward pass at 224px, in multiply-adds (the model papers); it scales with area
    preprocessing: str  # "inception": pixels to [-1, 1]; "caffe": RGB to BGR less ImageNet's mean; "included": its own layers
    options: tuple[tuple[str, Any], ...] = ()  # what the application is built with besides weights
    features_name: str = ""  # how its cached features are keyed (default: the family's name)


BASES: dict[str, Base] = {
    # The original's base. 249, 229 and 133 open its top 2, 3 and 6 blocks (each starts after a `mixedN` concat).
    "inception": Base("InceptionV3", "Inception-v3", (41, 64, 87, 101, 133, 165, 197, 229, 249, 280), 311, 21_802_784,
                      2048, 5.7e9 * (224 / 299) ** 2, "inception", features_name="inception_v3"),
    "resnet50": Base("ResNet50", "ResNet50", (7, 19, 29, 39, 51, 61, 71, 81, 93, 103, 113, 123, 133, 143, 155, 165), 175,
                     23_587_712, 2048, 4.1e9, "caffe"),
    "efficientnet_b0": Base("EfficientNetB0", "EfficientNetB0", (7, 17, 31, 46, 60, 75, 89, 104, 119, 132, 147, 162, 176,
                                                                191, 206, 221), 237, 4_049_571, 1280, 0.39e9, "included"),
    "mobilenet_v3_large": Base("MobileNetV3Large", "MobileNetV3Large", (5, 11, 20, 29, 46, 63, 80, 89, 98, 107, 116, 132,
                                                                       149, 166, 183), 203, 2_996_352, 960, 0.22e9,
                               "included", (("include_preprocessing", True),)),
    "convnext_tiny": Base("ConvNeXtTiny", "ConvNeXtTiny", (3, 11, 19, 27, 36, 44, 52, 61, 69, 77, 85, 93, 101, 109, 117,
                                                          125, 134, 142), 151, 27_820_128, 768, 4.5e9, "included"),
}
MIN_SIZE = 75  # smallest input keras.applications.InceptionV3 accepts; the others take it too
BATCHNORM = ("inference", "batch")  # keys: model.BATCHNORM_MODES

DEFAULTS: dict[str, Any] = {
    "weights": "imagenet",  # "imagenet", "none" (random init) or a .h5/.keras path
    "unfreeze_from": None,  # None: head only; else the base's operation index where a block starts (Base.block_starts)
    "fine_tune_epochs": 10,  # not stated (ours)
    "fine_tune_learning_rate": 1e-5,  # "much lower" in the original; value ours
    "feature_cache": True,  # phase 1 on cached base features (same result, far faster)
    "batchnorm": "inference",  # unfrozen BatchNorm layers keep their moving statistics (the original's protocol)
}


def validate(c: "TrialConfig") -> None:
    base = BASES[c.model]
    if c.image_size < MIN_SIZE:
        raise BeanlibError(f"image_size {c.image_size} is too small for {base.title}: use at least {MIN_SIZE}")
    if c.unfreeze_from is not None and c.unfreeze_from not in base.block_starts:
        raise BeanlibError(f"unfreeze_from {c.unfreeze_from!r} is not where a block of {base.title} starts: "
                           f"use one of {', '.join(map(str, base.block_starts))} (or None for head only)")
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
    base = BASES[c.model]
    forward = base.macs_224 * (c.image_size / 224) ** 2
    head_phase = 0.0 if c.feature_cache else c.epochs * forward
    if "fine_tune" not in phases(c):
        return head_phase
    unfrozen = (base.operations - c.unfreeze_from) / base.operations  # operations as a proxy for work
    if c.feature_cache and c.batchnorm == "inference":
        return head_phase + forward * (1 - unfrozen) + c.fine_tune_epochs * 3 * forward * unfrozen
    return head_phase + c.fine_tune_epochs * forward * (1 + 2 * unfrozen)  # forward all, backward the open part


def params(c: "TrialConfig", num_classes: int) -> int:
    base = BASES[c.model]
    preprocessing = 12 if base.preprocessing == "caffe" else 0  # its fixed Dense(3): model.preprocessing
    return preprocessing + base.params + (base.channels + 1) * 1024 + (1024 + 1) * num_classes  # base, Dense(1024), logits


def _family(name: str, base: Base) -> Family:
    # One whole GPU per trial: Inception-v3 fine-tuning (1,226-2,643 images/s alone on an H200) has no packing
    # measurement, nor have the others.
    return Family(name, base.title, DEFAULTS, validate, phases, cost, params, gpu_share=1.0,
                  model="beanlib.families.transfer.model", base=base.application, base_options=dict(base.options),
                  features_name=base.features_name or name,
                  arch_neutral={"weights": "none", "batchnorm": "inference", "fine_tune_epochs": 1,
                                "fine_tune_learning_rate": 1.0, "feature_cache": True})


FAMILIES = tuple(_family(name, base) for name, base in BASES.items())
