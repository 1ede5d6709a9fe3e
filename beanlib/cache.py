"""The on-disk cache of prepared arrays (decoded images, base features): npz files written atomically."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def default_cache_dir() -> Path:
    """Where prepared data and features are cached: `$BEANLIB_CACHE`, else `~/.cache/beanlib`."""
    return Path(os.environ.get("BEANLIB_CACHE") or Path.home() / ".cache" / "beanlib")


def cache_path(kind: str, key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache file for entry `key` of `kind` ("data", "features")."""
    return Path(cache_dir or default_cache_dir()) / kind / f"{key}.npz"


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """All arrays of a cache file, or None when it is missing or unreadable (then it is rebuilt)."""
    try:
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temporary file, then rename): a killed process never leaves half an archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        try:
            np.savez(tmp, **arrays)
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)
