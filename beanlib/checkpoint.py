"""A trial's state between two epochs, as a checkpoint directory: written by a running trial, read by its restart.

    DIR/state.json      the phase, epochs done (counted across phases), the history so far, the trial's counters
    DIR/variables.npz   every variable of the trial's model, in order: weights, BatchNorm statistics, and dropout's
                        seed state (so the restarted trial draws the same dropout masks as an uninterrupted one)
    DIR/optimizer.npz   the optimizer's variables, in order: its step count and moments

No Ray here: the sweep hands these directories to Ray Tune (`tune.report(..., checkpoint=...)`), which stores them
beside the run's results and gives the last one back to a restarted trial.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

STATE, VARIABLES, OPTIMIZER = "state.json", "variables.npz", "optimizer.npz"
FORMAT = 1  # bump when the layout changes: an older checkpoint is then not resumed (the trial starts over)


@dataclass
class TrialState:
    """What a trial resumes from: where it was (phase, epochs done), what it recorded, and its variables' values."""

    phase: str
    epoch: int  # epochs done, counted across phases
    history: list[dict]
    counters: dict[str, Any] = field(default_factory=dict)  # the trial's running totals (feature seconds, images)
    variables: list[np.ndarray] = field(default_factory=list)
    optimizer: list[np.ndarray] = field(default_factory=list)


def save(directory: str, state: TrialState) -> None:
    """Write `state` into `directory` (which exists): the arrays first, state.json last, so a directory without
    state.json is an incomplete checkpoint that `load` refuses."""
    for name, arrays in ((VARIABLES, state.variables), (OPTIMIZER, state.optimizer)):
        np.savez(os.path.join(directory, name), *arrays)
    meta = {"format": FORMAT, "phase": state.phase, "epoch": state.epoch, "history": state.history, "counters": state.counters}
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

    def arrays(name: str) -> list[np.ndarray]:
        with np.load(os.path.join(directory, name)) as npz:
            return [npz[f"arr_{i}"] for i in range(len(npz.files))]

    return TrialState(meta["phase"], meta["epoch"], meta["history"], meta["counters"], arrays(VARIABLES), arrays(OPTIMIZER))


def values_of(variables: Sequence) -> list[np.ndarray]:
    """Keras variables' current values, as NumPy arrays (any backend)."""
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


def assign(variables: Sequence, values: Sequence[np.ndarray], what: str) -> None:
    """Set each Keras variable to its saved value; ValueError when the two lists do not match (another model)."""
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [tuple(a.shape) for a in values]:
        raise ValueError(f"the checkpoint's {what} do not match this trial's ({len(values)} arrays against {len(shapes)} "
                         "variables, or other shapes): it was written by another model")
    for variable, value in zip(variables, values):
        variable.assign(value)
