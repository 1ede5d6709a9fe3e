"""Classify new images with a run's kept model: pick the model, decode the images as the trials saw theirs, predict.

The model is a plain Keras 3 `.keras` file (beanlib.models.for_inference): loading it needs Keras, not beanlib.
Images are decoded and resized exactly as the training data was (beanlib.data.decode_image); the model rescales.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from beanlib.config import CLASS_NAMES
from beanlib.data import decode_image
from beanlib.errors import BeanlibError
from beanlib.report import load_run
from beanlib.stats import winners

PREDICTION_SCHEMA = pa.schema([
    ("file", pa.string()),
    ("predicted", pa.string()),
    ("confidence", pa.float64()),  # the predicted class's probability
    ("probabilities", pa.list_(pa.float64())),  # in the order of class_names
    ("class_names", pa.list_(pa.string())),
    ("run", pa.string()),
    ("trial_id", pa.string()),
    ("model_sha256", pa.string()),
])


@dataclass
class RunModel:
    """A run's kept model, as `choose_model` found it: its trial's row and where its .keras file lies."""

    row: dict
    path: str  # local path or URI

    @property
    def class_names(self) -> list[str]:
        names = self.row.get("class_names")
        return list(CLASS_NAMES if names is None else names)  # rows from before class_names: beans'


def choose_model(run_dir: str, which: str = "best") -> RunModel:
    """The model `which` names in run `run_dir`: "best" (the family chosen on validation, beanlib.stats.winners)
    or a trial id. One clear BeanlibError when the run, the trial or its model file is missing."""
    trials, _, _, store = load_run(run_dir)
    kept = trials[trials["model_file"].notna()]
    choices = f"pass --model with one of: {', '.join(kept['trial_id'])}" if len(kept) else \
        "re-run the sweep with --keep-models best (the default) or all"
    if which == "best":
        which = winners(trials).get("best", "")
        if not which:
            raise BeanlibError(f"{run_dir} has no trial that ran in full to choose a best model from: {choices}")
    rows = trials[trials["trial_id"] == which]
    if rows.empty:
        raise BeanlibError(f"{run_dir} has no trial {which!r}: {choices}")
    row = rows.iloc[0].to_dict()
    if not isinstance(row.get("model_file"), str):
        raise BeanlibError(f"trial {which} of {run_dir} has no kept model (--keep-models kept others): {choices}")
    path = store.model_path(row["model_file"])
    if store.fs.get_file_info(f"{store.path}/{row['model_file']}").type.name != "File":
        raise BeanlibError(f"the model file {path} of trial {which} is missing: re-run the sweep to train it again, or {choices}")
    expected, found = row.get("model_sha256"), _sha256(store.fs, f"{store.path}/{row['model_file']}")
    if isinstance(expected, str) and found != expected:
        raise BeanlibError(f"the model file {path} of trial {which} is not the one its trial saved (sha256 {found[:12]}..., "
                           f"its row records {expected[:12]}...): it was replaced or damaged; restore it from a copy of "
                           f"the run, or {choices}")
    return RunModel(row, path)


def _sha256(fs, path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def image_files(paths: list[str]) -> list[Path]:
    """The files to classify: each file given, and every file under each folder given (sorted, hidden ones left
    out); one clear BeanlibError for a path that does not exist or a folder without files."""
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(given).parts))
            if not found:
                raise BeanlibError(f"folder {given} holds no files: pass image files or a folder of them")
            files += found
        elif given.is_file():
            files.append(given)
        else:
            raise BeanlibError(f"{given} does not exist: pass image files or folders")
    return files


def load(model: RunModel):
    """The Keras model in `model`'s file, loaded in Keras's safe mode; one BeanlibError when Keras refuses it."""
    import keras

    try:  # safe mode, always: a Lambda layer's code in a model file never runs here
        net = keras.saving.load_model(_local(model.path), compile=False, safe_mode=True)
    except Exception as error:  # Keras refuses unsafe or unreadable files with ValueError, OSError and others
        raise BeanlibError(f"Keras refused to load the model file {model.path} ({type(error).__name__}: "
                           f"{(str(error).splitlines() or [''])[0][:200]}): it is not a model beanlib saved; "
                           "restore the run's copy of it, or pass --model with another trial's id") from None
    return net


def classify(model: RunModel, files: list[Path], batch_size: int = 32) -> tuple[list[dict], list[Path]]:
    """Predict each image's class: (one PREDICTION_SCHEMA row per image classified, the files that are not images)."""
    net = load(model)
    size = net.input_shape[1]
    decoded = [(path, decode_image(path, size)) for path in files]
    good = [(path, image) for path, image in decoded if image is not None]
    rows = []
    for start in range(0, len(good), batch_size):
        chunk = good[start:start + batch_size]
        logits = np.asarray(net.predict(np.stack([image for _, image in chunk]), verbose=0), np.float64)
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        for (path, _), p in zip(chunk, probabilities):
            best = int(p.argmax())
            rows.append({"file": str(path), "predicted": model.class_names[best], "confidence": float(p[best]),
                         "probabilities": p.tolist(), "class_names": model.class_names, "run": model.row["run"],
                         "trial_id": model.row["trial_id"], "model_sha256": model.row.get("model_sha256")})
    return rows, [path for path, image in decoded if image is None]


def write_predictions(rows: list[dict], out: str) -> None:
    """The predictions as one Parquet file at `out` (a path or a URI), written whole or not at all."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from beanlib.results import write_atomically

    fs, path = pafs.FileSystem.from_uri(out) if "://" in out else (pafs.LocalFileSystem(), os.path.abspath(out))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    table = pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)
    write_atomically(fs, path, lambda stream: pq.write_table(table, stream))


def _local(path: str) -> str:
    """A local copy of a model file named by URI (Keras reads local files), else the path itself."""
    if "://" not in path:
        return path
    import pyarrow.fs as pafs

    fs, inner = pafs.FileSystem.from_uri(path)
    local = os.path.join(tempfile.mkdtemp(prefix="beanlib-model-"), os.path.basename(inner))
    pafs.copy_files(inner, local, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return local
