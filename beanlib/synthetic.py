"""A seeded procedural stand-in for the beans photos, so everything runs with no download.

Each image is one bean leaf (ovate, with a midrib and lateral veins) on a
cluttered background, at a random pose, scale and lighting. The class is drawn
on the leaf the way the real diseases look:

- healthy: a clean leaf;
- angular_leaf_spot: a few angular brown lesions, straight-edged as if bounded by veins;
- bean_rust: many small round rust-brown pustules, each with a pale yellow halo.

It is not the real data; it is learnable (the baseline LeNet at 64x64 reaches
85-99% test accuracy after 5 epochs over seeds 0-4, 99% for seed 0 in
tests/test_train.py) and cheap, for smoke runs, tests and first contact. Images are rendered directly at the requested size.
"""

from __future__ import annotations

import numpy as np

GENERATOR_VERSION = 5  # bump when the drawing changes: it is part of the data cache key

_BACKGROUNDS = np.array([[0.42, 0.33, 0.22], [0.30, 0.26, 0.20], [0.55, 0.50, 0.42], [0.25, 0.35, 0.20]])
_LEAF_GREENS = np.array([[0.22, 0.50, 0.15], [0.30, 0.58, 0.20], [0.18, 0.42, 0.12], [0.35, 0.55, 0.22]])


def generate(class_counts: tuple[int, ...], image_size: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Render `class_counts[c]` images of each class c; returns (uint8 NxSxSx3, int64 labels).

    `stream` separates the splits: the same seed gives different train and test images.
    """
    labels = np.repeat(np.arange(len(class_counts)), class_counts)
    images = np.empty((len(labels), image_size, image_size, 3), np.uint8)
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, stream, i])  # one stream per image: order-independent
        images[i] = _render(rng, int(label), image_size)
    return images, labels.astype(np.int64)


def _render(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    img = _background(rng, xx, yy)

    cx, cy = rng.uniform(0.38, 0.62, 2)
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.30, 0.42)  # half-length, as a fraction of the image
    width = length * rng.uniform(0.55, 0.72)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)  # along the midrib
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    t = np.clip(u / length, -1, 1)
    half_width = width * np.sqrt(np.clip(1 - t**2, 0, None)) * (1 - 0.35 * (t + 1) / 2)  # ovate, tapering to the tip
    inside = half_width - np.abs(v)
    leaf = np.clip(inside * size / 1.5, 0, 1) * (np.abs(u) < length)

    green = _LEAF_GREENS[rng.integers(len(_LEAF_GREENS))] * rng.uniform(0.85, 1.15)
    leaf_rgb = green[None, None, :] * (1 + 0.08 * _smooth_noise(rng, xx, yy, 6))[..., None]
    veins = _veins(rng, u, v, length, size)
    leaf_rgb = leaf_rgb * (1 - 0.25 * veins[..., None]) + 0.25 * veins[..., None] * np.array([0.55, 0.75, 0.4])

    spots = _LESIONS[label](rng, u, v, length, half_width, size)
    for alpha, color in spots:
        leaf_rgb = leaf_rgb * (1 - alpha[..., None]) + alpha[..., None] * color
    img = img * (1 - leaf[..., None]) + leaf_rgb * leaf[..., None]

    gain = rng.uniform(0.7, 1.25) * (1 + rng.uniform(-0.25, 0.25) * (xx - 0.5) + rng.uniform(-0.25, 0.25) * (yy - 0.5))
    img = img * gain[..., None] + rng.normal(0, 0.015, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _background(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    base = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))] + rng.normal(0, 0.04, 3)
    img = np.broadcast_to(base, xx.shape + (3,)) * (1 + 0.15 * _smooth_noise(rng, xx, yy, 3))[..., None]
    for _ in range(rng.integers(0, 4)):  # out-of-focus clutter: other leaves, stones
        bx, by, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.25)
        blob = np.clip(1 - np.hypot(xx - bx, yy - by) / r, 0, 1) ** 0.5
        color = _LEAF_GREENS[rng.integers(len(_LEAF_GREENS))] * rng.uniform(0.5, 0.9)
        img = img * (1 - blob[..., None]) + blob[..., None] * color
    return img


def _smooth_noise(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, freq: float) -> np.ndarray:
    """Low-frequency texture in [-1, 1]: a few random plane waves."""
    out = np.zeros_like(xx)
    for _ in range(4):
        kx, ky = rng.normal(0, freq, 2)
        out += np.sin(2 * np.pi * (kx * xx + ky * yy) + rng.uniform(0, 2 * np.pi))
    return out / 4


def _veins(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, length: float, size: int) -> np.ndarray:
    """Midrib plus pairs of lateral veins running to the margin."""
    thickness = 1.2 / size
    veins = np.clip(1 - np.abs(v) / (1.5 * thickness), 0, 1)
    slope = rng.uniform(0.7, 1.2)
    for start in np.linspace(-0.7, 0.6, rng.integers(4, 7)) * length:
        lateral = np.abs(np.abs(v) - slope * (u - start))  # a V opening towards the tip
        veins = np.maximum(veins, np.clip(1 - lateral / thickness, 0, 1) * (u > start))
    return veins


def _on_leaf(rng: np.random.Generator, count: int, length: float, width: float) -> np.ndarray:
    """`count` (u, v) points well inside the leaf blade."""
    u = rng.uniform(-0.8, 0.7, count) * length
    v = rng.uniform(-0.75, 0.75, count) * width * np.sqrt(np.clip(1 - (u / length) ** 2, 0, None))
    return np.stack([u, v], 1)


def _healthy(rng, u, v, length, half_width, size):
    return []


def _angular_leaf_spot(rng, u, v, length, half_width, size):
    """Angular brown lesions: rotated, jittered quadrilaterals with a darker rim."""
    width = float(half_width.max())
    spots = []
    for pu, pv in _on_leaf(rng, rng.integers(5, 10), length, width):
        r = rng.uniform(0.045, 0.075)
        theta = rng.uniform(0, np.pi / 2)
        du, dv = u - pu, v - pv
        a = du * np.cos(theta) + dv * np.sin(theta)
        b = -du * np.sin(theta) + dv * np.cos(theta)
        aspect = rng.uniform(0.6, 1.0)
        box = np.maximum(np.abs(a) / r, np.abs(b) / (r * aspect))  # 1 on the lesion's edge
        alpha = np.clip((1 - box) * r * size / 1.0, 0, 1)
        color = np.array([0.40, 0.24, 0.08]) * rng.uniform(0.8, 1.1)
        spots.append((np.clip((1.5 - box) * r * size / 1.0, 0, 1) * 0.5, np.array([0.70, 0.68, 0.25])))  # chlorotic margin
        spots.append((alpha, color))
        spots.append((np.clip(1 - np.abs(box - 1) * r * size / 1.2, 0, 1) * 0.6, color * 0.6))
    return spots


def _bean_rust(rng, u, v, length, half_width, size):
    """Many small round rust pustules, each inside a pale yellow halo."""
    width = float(half_width.max())
    spots = []
    for pu, pv in _on_leaf(rng, rng.integers(25, 50), length, width):
        r = rng.uniform(0.014, 0.022)
        d = np.hypot(u - pu, v - pv)
        halo = np.clip((2.2 * r - d) * size / 1.0, 0, 1) * 0.7
        core = np.clip((r - d) * size / 0.8, 0, 1)
        spots.append((halo, np.array([0.78, 0.76, 0.38])))
        spots.append((core, np.array([0.55, 0.27, 0.08]) * rng.uniform(0.8, 1.1)))
    return spots


# Indexed by label, in the TFDS order: angular_leaf_spot, bean_rust, healthy.
_LESIONS = (_angular_leaf_spot, _bean_rust, _healthy)
