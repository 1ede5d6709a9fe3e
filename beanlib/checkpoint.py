"""A trial's state between two epochs, as a checkpoint directory: written by a running trial, read by its restart.

    DIR/state.json      the phase, epochs done (counted across phases), the history so far, the trial's counters,
                        and the sha256 of the two arrays files (a damaged or replaced one is refused)
    DIR/variables.npz   every variable of the trial's model, in order: weights, BatchNorm statistics, and dropout's
                        seed state (so the restarted trial draws the same dropout masks as an uninterrupted one)
    DIR/optimizer.npz   the optimizer's variables, in order: its step count and moments

No Ray here: the sweep hands these directories to Ray Tune (`tune.report(..., checkpoint=...)`), which stores them
beside the run's results, as RUN/tune/EXPERIMENT/TRIAL_ID/checkpoint_N, and gives the last one back to a restarted
trial. `latest` finds the one an earlier sweep left for a trial; `drop` deletes a finished trial's.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow.fs as pafs

from beanlib.weights import file_sha256

if TYPE_CHECKING:
    from beanlib.results import RunStore

STATE, VARIABLES, OPTIMIZER = "state.json", "variables.npz", "optimizer.npz"
FORMAT = 1  # bump when the layout changes: an older checkpoint is then not resumed (the trial starts over)


@dataclass
class TrialState:
    """What a trial resumes from: where it was (phase, epochs done), what it recorded, and its variables' values."""

    phase: str
    epoch: int  # epochs done, counted across phases
    history: list[dict]
    counters: dict[str, Any] = field(default_factory=dict)  # the trial's running totals (feature seconds, images)
    variables: Sequence = field(default_factory=list)  # arrays; when saving, the Keras variables themselves
    optimizer: Sequence = field(default_factory=list)


def save(directory: str, state: TrialState) -> None:
    """Write `state` into `directory` (which exists): the arrays first, state.json last, so a directory without
    state.json is an incomplete checkpoint that `load` refuses."""
    for name, values in ((VARIABLES, state.variables), (OPTIMIZER, state.optimizer)):
        _savez(os.path.join(directory, name), values)
    meta = {"format": FORMAT, "phase": state.phase, "epoch": state.epoch, "history": state.history, "counters": state.counters,
            "sha256": {name: file_sha256(os.path.join(directory, name)) for name in (VARIABLES, OPTIMIZER)}}
    with open(os.path.join(directory, STATE), "w") as f:
        json.dump(meta, f)


def load(directory: str) -> TrialState:
    """The TrialState saved in `directory`; ValueError when it is incomplete or from another checkpoint format."""
    path = os.path.join(directory, STATE)
    if not os.path.isfile(path):
        raise ValueError(f"{directory} holds no {STATE}: not a (complete) beanlib checkpoint")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {meta.get('format')} in {directory}, this beanlib reads format {FORMAT}")
    for name, expected in meta.get("sha256", {}).items():  # checkpoints from before the hashes are read as they are
        if file_sha256(os.path.join(directory, name)) != expected:
            raise ValueError(f"{name} in {directory} does not match the sha256 its state.json recorded: damaged or replaced")

    def arrays(name: str) -> list[np.ndarray]:
        with np.load(os.path.join(directory, name)) as npz:
            return [npz[f"arr_{i}"] for i in range(len(npz.files))]

    return TrialState(meta["phase"], meta["epoch"], meta["history"], meta["counters"], arrays(VARIABLES), arrays(OPTIMIZER))


def _savez(path: str, values: Sequence) -> None:
    """np.savez's file (arr_0.npy, arr_1.npy, ... stored in a zip) written one value at a time: each Keras variable
    is copied to host memory only while it is written. Copying them all first, as `np.savez(*values)` needs, put a
    copy of the model and of Adam's two moments in memory at once: saving LeNet 12-32-240 at 299 px (54 M
    parameters, a 619 MiB checkpoint) took the process 635 MiB above its size before, and 222 MiB this way
    (the largest variable, the 206 MiB Dense kernel, and its copy as written)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for i, value in enumerate(values):
            with archive.open(f"arr_{i}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, _host(value), allow_pickle=False)


def _host(value: Any) -> np.ndarray:
    """A Keras variable's current value (any backend), or an array, as a NumPy array."""
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def assign(variables: Sequence, values: Sequence[np.ndarray], what: str) -> None:
    """Set each Keras variable to its saved value; ValueError when the two lists do not match (another model)."""
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [tuple(a.shape) for a in values]:
        raise ValueError(f"the checkpoint's {what} do not match this trial's ({len(values)} arrays against {len(shapes)} "
                         "variables, or other shapes): it was written by another model")
    for variable, value in zip(variables, values):
        variable.assign(value)


def _folders(store: "RunStore", trial_ids: set[str]) -> dict[str, list[str]]:
    """trial id -> its checkpoint folders under RUN/tune/EXPERIMENT/ID/ (Tune's layout), oldest first. Lists only
    the named trials' folders, not every experiment's logs: a sweep calls this each time a trial finishes."""
    found: dict[str, list[str]] = {}
    experiments = store.fs.get_file_info(pafs.FileSelector(f"{store.path}/tune", allow_not_found=True))
    for experiment in (e for e in experiments if e.type == pafs.FileType.Directory):
        for trial_id in trial_ids:
            inside = store.fs.get_file_info(pafs.FileSelector(f"{experiment.path}/{trial_id}", allow_not_found=True))
            found.setdefault(trial_id, []).extend(i.path for i in inside if i.type == pafs.FileType.Directory
                                                  and i.base_name.startswith("checkpoint_"))
    return {trial_id: sorted(paths) for trial_id, paths in found.items() if paths}  # experiment names sort by start time


def latest(store: "RunStore", trial_ids: set[str]) -> dict[str, str]:
    """trial id -> the URI of the newest checkpoint an earlier sweep left for it, for the trials about to run."""
    prefix = store.uri[: len(store.uri) - len(store.path)] if store.uri.endswith(store.path) else ""
    return {trial_id: prefix + paths[-1] for trial_id, paths in _folders(store, trial_ids).items()}


def drop(store: "RunStore", trial_ids: set[str]) -> None:
    """Delete the checkpoints of finished trials: a finished trial's model is its row's model_file, if kept."""
    for paths in _folders(store, trial_ids).values():
        for path in paths:
            store.fs.delete_dir(path)
