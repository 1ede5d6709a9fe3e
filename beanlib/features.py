"""Pooled base features of a pretrained (transfer-family) base, computed once per (weights, image size, data) and reused.

With the base frozen and called with training=False, its output for an image
never changes, so the head-only phase can train on these features instead of
pushing every image through the base every epoch. They are memoised in-process
and cached on disk beside the prepared data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from beanlib import backend
from beanlib.config import TrialConfig
from beanlib.families import family
from beanlib.cache import cache_path, read_npz, write_npz
from beanlib.data import SPLITS, BeansData
from beanlib.weights import weights_sha256

INFERENCE_BATCH = 64  # larger batches only add memory on CPU; on GPU this is small enough for any size


@dataclass(frozen=True)
class Features:
    """Pooled base features (N, 2048) float32 per split, the key they were computed for, and the seconds
    this call spent computing them (0 when they were reused)."""

    key: str
    splits: dict[str, np.ndarray]
    seconds: float


_MEMO: dict[str, Features] = {}


def predict_in_place(model, images: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """`model.predict(images, batch_size)`, written batch by batch into one preallocated array. Keras's `predict`
    keeps every batch's output and then concatenates them, holding the result twice at its peak: 2.3 GB for the
    frozen blocks' output at 299px before fine-tuning the top 6 blocks. Same batches, same compiled function
    (`predict_on_batch`), so the same numbers (tests/test_train.py)."""
    out = None
    for start in range(0, len(images), batch_size):
        batch = np.asarray(model.predict_on_batch(images[start:start + batch_size]))
        if out is None:
            out = np.empty((len(images), *batch.shape[1:]), batch.dtype)
        out[start:start + len(batch)] = batch
    return out


def features_key(config: TrialConfig, data: BeansData) -> str:
    """What determines the features: the base weights, the image size, the data, the precision and the backend.

    Random-init weights ("none") depend on the trial's seed; a weights file on its content (sha256), not its path.
    """
    weights: object = weights_sha256(config.weights) or config.weights
    if config.weights == "none":
        weights = ["none", config.seed]
    # Only a non-default precision or backend enters the key: features cached before either existed keep theirs.
    numerics = [config.precision, backend.current()]
    blob = json.dumps([family(config.model).features_name, weights, config.image_size, data.fingerprint,
                       *([numerics] if numerics != ["float32", backend.DEFAULT] else [])])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached_features(config: TrialConfig, data: BeansData, *, cache_dir: str | os.PathLike | None = None) -> Features | None:
    """The features `compute_features` would give, when they are memoised or on disk already (nothing computed:
    seconds 0); else None. Needs no model, so a sweep's driver can look before it starts a worker to compute them."""
    key = features_key(config, data)
    if key in _MEMO:
        return dataclasses.replace(_MEMO[key], seconds=0.0)
    cached = read_npz(cache_path("features", key, cache_dir))
    if cached is None:
        return None
    _MEMO[key] = Features(key, cached, 0.0)
    return _MEMO[key]


def compute_features(features_model, config: TrialConfig, data: BeansData, *, cache_dir: str | os.PathLike | None = None) -> Features:
    """The pooled features of every split under `features_model`, from memo, disk cache, or computed."""
    found = cached_features(config, data, cache_dir=cache_dir)
    if found is not None:
        return found
    key = features_key(config, data)
    path = cache_path("features", key, cache_dir)
    start = time.perf_counter()
    splits = {
        s: np.asarray(predict_in_place(features_model, data.split(s).images), np.float32)
        for s in SPLITS
    }
    _MEMO[key] = Features(key, splits, time.perf_counter() - start)
    write_npz(path, splits)
    return _MEMO[key]
