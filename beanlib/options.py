"""What a sweep takes and what it hands back: its options (the flags of `jobs.sweep`) and its summary. No Ray here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from beanlib.results import FINISHED


class Progress(Protocol):
    """What the sweep tells a live display (beanlib.console.SweepConsole): trials to run, started, finished."""

    def start(self, total: int, description: str) -> None: ...
    def trial_started(self) -> None: ...
    def trial_finished(self, failed: bool) -> None: ...
    def stop(self) -> None: ...


@dataclass
class SweepOptions:
    """Everything `jobs.sweep` takes (see its --help)."""

    study: str
    data: str = "tfds"
    results: str = "results"
    name: str | None = None
    image_size: int | None = None
    epochs: int | None = None
    fine_tune_epochs: int | None = None
    repeats: int | None = None  # seeds per setting; None: the study's own (1 unless its file says)
    weights: str | None = None
    per_class: int | None = None
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    retries: int = 1
    checkpoint_seconds: float = 60.0  # a running trial's checkpoint after an epoch, at most this often (0: every epoch)
    keep_models: str = "best"  # a key of KEEP_MODELS
    fresh_workers: bool = False  # a new worker process per trial, not a warm one that ran an earlier trial
    force: bool = False  # take the run's lease even while another driver holds it (beanlib.lease)
    retrain_stale: bool = False  # train again the finished trials that older code computed differently (beanlib.semantics)
    only: tuple[str, ...] = ()  # run only these settings now; the run's plan stays whole (the rest run later)
    early_stop: int | None = None  # patience in epochs (0 or None: off, the studies' fixed epochs)
    scheduler: str = "fifo"  # a key of SCHEDULERS
    precision: str | None = None  # every trial's dtype policy (config.PRECISIONS), or "auto" (beanlib.precision)
    backend: str | None = None  # Keras backend of every trial (beanlib.backend); None: $KERAS_BACKEND, else tensorflow
    dry_run: bool = False
    verbose: bool = False  # Ray Tune's status tables and the workers' output on the console
    # Tests of failure handling: "SETTING" makes that setting's trials raise; "SETTING:crash" kills
    # their worker process outright, as Ray's OOM killer or a lost node would; "SETTING:crash@E" kills it once
    # epoch E is reported, once per trial (its restart runs on); "SETTING:lost-connection" raises what a dropped
    # connection raises, an error of the environment rather than of the trial.
    inject_fault: tuple[str, ...] = ()

    def overrides(self) -> dict[str, Any]:
        # A weights file is named by its absolute path: Tune runs trials in other working directories.
        weights = os.path.abspath(self.weights) if self.weights and os.path.isfile(self.weights) else self.weights
        values = {"image_size": self.image_size, "epochs": self.epochs, "fine_tune_epochs": self.fine_tune_epochs, "weights": weights,
                  "early_stop": self.early_stop or None, "precision": self.precision}
        return {k: v for k, v in values.items() if v is not None}


@dataclass
class SweepSummary:
    """How a sweep ended: planned trials, and the status of each trial it was to run ("missing": no row, because
    the sweep was stopped before the trial ended)."""

    planned: int
    ran: int
    statuses: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(1 for s in self.statuses.values() if s not in FINISHED and s != "missing")

    @property
    def missing(self) -> int:
        return sum(1 for s in self.statuses.values() if s == "missing")
