"""LeNet: the original's small CNN (three valid convs, 2x2 pools after the first two, Dense(50)), trained from
scratch in one phase. The family's declaration; its Keras code is `model`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from beanlib.errors import BeanlibError
from beanlib.families.family import Family, positive_int

if TYPE_CHECKING:
    from beanlib.config import TrialConfig

REGULARIZERS = ("none", "l1", "l2", "dropout")
# Strengths the original does not state (ours): l1/l2 factors on the conv kernels, small enough not to swamp the
# data loss at init; dropout 0.2 is the original's rate.
DEFAULT_STRENGTH = {"none": 0.0, "l1": 1e-4, "l2": 1e-3, "dropout": 0.2}
DEFAULTS: dict[str, Any] = {
    "kernel_size": 5,
    "kernel_counts": (6, 16, 120),
    "regularizer": "none",
    "reg_strength": None,  # None: DEFAULT_STRENGTH[regularizer]
}


def feature_size(image_size: int, kernel_size: int) -> int:
    """Side of the last conv's output map: three valid convs, two 2x2 poolings between them."""
    side = image_size
    for step in range(3):
        side = side - kernel_size + 1
        if step < 2:
            side //= 2
    return side


def validate(c: "TrialConfig") -> None:
    positive_int(c, "kernel_size")
    if len(c.kernel_counts) != 3 or any(not isinstance(n, int) or n < 1 for n in c.kernel_counts):
        raise BeanlibError(f"kernel_counts must be three positive integers, got {list(c.kernel_counts)!r}")
    if c.regularizer not in REGULARIZERS:
        raise BeanlibError(f"unknown regularizer {c.regularizer!r}: use one of {', '.join(REGULARIZERS)}")
    if not math.isfinite(c.reg_strength) or c.reg_strength < 0:
        raise BeanlibError(f"reg_strength must be a finite number >= 0, got {c.reg_strength!r}")
    if c.regularizer == "dropout" and not c.reg_strength < 1:
        raise BeanlibError(f"dropout rate (reg_strength) must be below 1, got {c.reg_strength!r}")
    if feature_size(c.image_size, c.kernel_size) < 1:
        smallest = next(s for s in range(1, 10_000) if feature_size(s, c.kernel_size) >= 1)
        raise BeanlibError(f"image_size {c.image_size} is too small for LeNet with kernel {c.kernel_size}: use at least {smallest}")


def normalise(values: dict[str, Any]) -> dict[str, Any]:
    """The regularizer's default strength where none is given."""
    if values.get("reg_strength") is None and values.get("regularizer") in DEFAULT_STRENGTH:
        return {**values, "reg_strength": DEFAULT_STRENGTH[values["regularizer"]]}
    return values


def _layers(c: "TrialConfig"):
    """(output side, input channels, filters) of each conv, then the flattened size entering Dense(50)."""
    side, channels, convs = c.image_size, 3, []
    for i, filters in enumerate(c.kernel_counts):
        side -= c.kernel_size - 1
        convs.append((side, channels, filters))
        channels = filters
        if i < 2:
            side //= 2
    return convs, side * side * channels


def cost(c: "TrialConfig") -> float:
    """Training multiply-adds: about 3 forward passes per image (a backward pass is about twice the work)."""
    convs, flat = _layers(c)
    forward = sum(side * side * c.kernel_size ** 2 * cin * f for side, cin, f in convs) + flat * 50
    return c.epochs * 3 * forward


def params(c: "TrialConfig", num_classes: int) -> int:
    convs, flat = _layers(c)
    return sum((c.kernel_size ** 2 * cin + 1) * f for _, cin, f in convs) + (flat + 1) * 50 + (50 + 1) * num_classes


# A GPU share from packing measured on an H200 (Keras on JAX, 299px, each trial in its own process): 4 at once
# trained 2.5x the images/s of one, 8 at once 4.0x. So eight LeNet trials share a GPU.
FAMILY = Family("lenet", "LeNet", DEFAULTS, validate, phases=lambda c: ("train",), cost=cost, params=params,
                gpu_share=0.125, model="beanlib.families.lenet.model", normalise=normalise)
