"""Pretrained base weights (Inception-v3 and the other Keras Applications bases): loading them safely, their
content identity, and how a report names them.

A trial's `weights` is "imagenet" (Keras downloads its ImageNet file), "none"
(random init) or the path of a Keras no-top weights file. A file is known by
the sha256 of its content, not its path: that hash keys the cached base
features and goes into every result row, so two files under one name never mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

from beanlib.errors import BeanlibError

IMAGENET, RANDOM = "imagenet", "none"
CHECK_SIZE = 75  # smallest input Inception-v3 takes (the others take it too): the cheapest build that loads every weight
CHECK_VERSION = 1  # what check_weights verifies: a change to it makes every file be checked again

_SHA256: dict[tuple, str] = {}
_LOADABLE: set[tuple[str, str]] = set()  # (content hash, file suffix) already checked in this process
_VALUES: dict[tuple[str, str], list] = {}  # (content hash, file suffix) -> the values last loaded from that file


def file_sha256(path: str) -> str:
    """The sha256 of a file's content; memoised per (path, size, mtime) so a 44 MB file is hashed once."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def weights_sha256(weights: str | None) -> str | None:
    """The content hash of a weights file; None for "imagenet", "none", or a LeNet trial (no weights)."""
    if weights in (None, IMAGENET, RANDOM):
        return None
    return file_sha256(weights) if os.path.isfile(weights) else None


CONTENT_PREFIX = "sha256:"  # a weights file named by its content, as trial ids and run.json know it


def content_identity(weights: str | None) -> str | None:
    """How a trial id and run.json name a base: "imagenet", "none", None (LeNet) as they are, a file as
    "sha256:HEX" of its content (wherever it lies), which passes through unchanged."""
    if weights in (None, IMAGENET, RANDOM) or str(weights).startswith(CONTENT_PREFIX):
        return weights
    if not os.path.isfile(weights):
        raise BeanlibError(f"weights file {weights} does not exist: pass a Keras Applications no-top weights file "
                           "(.weights.h5), 'imagenet' or 'none'")
    return CONTENT_PREFIX + file_sha256(weights)


def describe(weights: str | None, sha256: str | None) -> str:
    """How a report names a base: ImageNet, random init, or a file's name and content hash (labelled a stand-in)."""
    if weights == IMAGENET:
        return "ImageNet (Keras download)"
    if weights == RANDOM:
        return "random init (not pretrained)"
    name = os.path.basename(str(weights))
    digest = f"sha256 {sha256[:12]}" if sha256 else "content hash unknown"
    return f"file {name} ({digest}): a stand-in for ImageNet's weights"


def load_base(weights: str, image_size: int, base: str = "InceptionV3", title: str = "Inception-v3", **options):
    """keras.applications.`base`(include_top=False, **options) at `image_size` with `weights` loaded, or a one-line
    BeanlibError (naming the base by `title`) when a file is missing, not HDF5, truncated, or holds another
    architecture's weights.

    A file's values are kept for the process's next load (one file at a time): a warm worker's next Inception
    trial sets them in 0.07 s instead of reading the file again in 1.4 s (measured at 128px). Keras warns about
    parts of a file it cannot place before it raises; the warning is the clearer reason.
    """
    import keras

    if weights not in (IMAGENET, RANDOM) and not os.path.isfile(weights):
        raise BeanlibError(f"weights file {weights} does not exist: pass a Keras {title} no-top weights file "
                           "(.weights.h5), 'imagenet' or 'none'")
    network = getattr(keras.applications, base)(include_top=False, weights=IMAGENET if weights == IMAGENET else None,
                                                input_shape=(image_size, image_size, 3), **options)
    if weights in (IMAGENET, RANDOM):
        return network
    key = (*_file_key(weights), base)
    if key in _VALUES:
        network.set_weights(_VALUES[key])  # what the application with weights=FILE does: build, then load_weights(FILE)
        return network
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", category=UserWarning, module=r"keras\.src\.saving")
            network.load_weights(weights)
    except (OSError, ValueError, KeyError, TypeError, UserWarning) as error:
        reason = f"its layers do not match {title}'s" if isinstance(error, UserWarning) else \
            (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise BeanlibError(f"{weights} is not a Keras {title} no-top weights file ({reason}): pass the file that "
                           f"keras.applications.{base}(include_top=False).save_weights wrote, 'imagenet' or 'none'") from None
    _VALUES.clear()
    _VALUES[key] = network.get_weights()
    return network


def check_weights(weights: str | None, base: str = "InceptionV3", title: str = "Inception-v3", **options) -> None:
    """Refuse, before any training, a weights file that would not load as a `base` no-top network, or that holds
    untrained weights (every BatchNorm statistic still at its initial 0 mean and 1 variance).

    Loads it once at the smallest size (a few seconds, and TensorFlow's start in a process that had no need of it);
    a file that passed is not checked again: in this process, nor on this machine (a mark in the beanlib cache,
    keyed by its content, the suffix Keras reads it by, and the Keras version).
    """
    if weights in (None, IMAGENET, RANDOM):
        return
    key = (*_file_key(weights), base)
    mark = _checked_mark(*key)
    if key in _LOADABLE or (mark is not None and mark.exists()):
        _LOADABLE.add(key)
        return
    from beanlib import backend

    backend.needed()  # set up as this process wants it (a sweep's driver: no GPUs) before Keras starts its runtime
    import keras
    import numpy as np

    network = load_base(weights, CHECK_SIZE, base, title, **options)
    moving = [v for v in network.non_trainable_weights if "moving_" in v.path]
    untrained = bool(moving) and all(np.all(v.numpy() == (0.0 if "moving_mean" in v.path else 1.0)) for v in moving)
    keras.backend.clear_session()
    if untrained:
        raise BeanlibError(f"{weights} holds untrained {title} weights (BatchNorm statistics at their initial "
                           "values): pass a pretrained file, or 'none' for a random-init base")
    _LOADABLE.add(key)
    if mark is not None:
        with contextlib.suppress(OSError):  # a read-only or full cache: the next run checks again, no harm
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()  # empty: its name is the record


def _file_key(weights: str) -> tuple[str, str]:
    """A weights file as Keras reads it: its content hash, and its suffix (Keras picks its reader by the suffix)."""
    return weights_sha256(weights), "".join(os.path.basename(weights).partition(".")[1:])


def _checked_mark(sha256: str, suffix: str, base: str) -> Path | None:
    """The cache file whose presence says that a weights file of this content and suffix passed check_weights as
    a `base` under the installed Keras; None where the Keras version cannot be read without importing it (always check)."""
    from importlib.metadata import PackageNotFoundError, version

    from beanlib.cache import default_cache_dir

    try:
        keras_version = version("keras")
    except PackageNotFoundError:  # Keras installed under another name (keras-nightly)
        return None
    as_base = "" if base == "InceptionV3" else f"-{base}"  # Inception-v3's marks keep the names they had
    return default_cache_dir() / "weights-checked" / f"{sha256}{suffix}{as_base}-keras{keras_version}-check{CHECK_VERSION}"
