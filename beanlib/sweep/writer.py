"""The driver's side of a sweep's trials: each finished trial's row and epochs written to the run the moment it
ends, one line for it, and the live count."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

from ray import tune

from beanlib import backend, checkpoint
from beanlib.errors import failure_status, no_space
from beanlib.options import Progress
from beanlib.results import FINISHED, RunStore
from beanlib.rows import trial_row
from beanlib.studies import TrialSpec
from beanlib.sweep.trainable import spec_of


class WriteResults(tune.Callback):
    """Driver side: writes each trial's Parquet the moment it finishes, and prints one line for it. In a search it
    also numbers the points as the searcher suggests them, in RUN/search.json (beanlib.sweep.search)."""

    def __init__(self, store: RunStore, context: dict[str, Any], data: str, out: Callable[[str], None],
                 progress: Progress | None = None, points: list[dict] | None = None):
        self.store, self.context, self.data, self.out, self.progress = store, context, data, out, progress
        self.prov = context["provenance"]
        self.epochs: dict[str, list[dict]] = {}  # trial id -> epochs reported so far (a pruned trial's history)
        self.written: set[str] = set()
        self.points = list(points or [])  # a search's points in the order suggested (RUN/search.json)

    def spec(self, trial) -> TrialSpec:
        """The beanlib trial a Tune trial runs."""
        return spec_of(trial.config, self.context, self.point(trial))

    def point(self, trial) -> int | None:
        """A searched trial's point, numbered (and recorded) the first time the searcher suggests it; None in a grid."""
        if not self.context["search"]:
            return None
        from beanlib.sweep.search import POINTS, values_of

        values = values_of(trial.config, self.context["search"]["study"])
        if values not in self.points:
            self.points.append(values)
            self.store.write_json(POINTS, {"points": self.points})
        return self.points.index(values)

    def __getstate__(self):
        """Tune pickles its callbacks with the experiment: the live display and the console stay behind."""
        return {**self.__dict__, "out": print, "progress": None}

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.progress is not None:
            self.progress.trial_started()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        trial_id = self.spec(trial).trial_id
        if not result.get("finished"):
            record = {k: result[k] for k in ("phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")}
            history = [e for e in self.epochs.get(trial_id, []) if e["epoch"] < record["epoch"]]  # a restart repeats none
            self.epochs[trial_id] = [*history, record]
            return
        self.written.add(trial_id)
        if result.get("kept"):  # a finished trial of an earlier sitting: its row stands
            if self.progress is not None:
                self.progress.trial_finished(failed=False)
            return
        row = {**json.loads(result["beanlib_row"]), **self._place(trial)}
        if no_space(row["error"]):  # its row would meet the same full disk: stop the sweep (run_sweep's one line)
            raise OSError(f"trial {trial_id}: {row['error']}")
        for key in ("start_time", "end_time"):
            row[key] = datetime.fromisoformat(row[key])
        self.store.write_trial(row, json.loads(result["beanlib_epochs"]))
        if row["status"] in FINISHED:
            checkpoint.drop(self.store, {trial_id})
        self._line(row)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """A trial that ended without its row was stopped by the scheduler: record it as pruned, with its epochs."""
        spec = self.spec(trial)
        trial_id = spec.trial_id
        if trial_id in self.written:
            return
        backend.needed()  # beanlib.train imports Keras: the driver's set-up (no GPUs) first
        from beanlib.train import TrialResult

        history = self.epochs.get(trial_id, [])
        result = TrialResult("pruned", history, stop_reason="pruned", epochs_planned=spec.config.planned_epochs).summarize_history()
        row = trial_row(spec, result, status="pruned", data=self.data, provenance=self.prov, end_time=datetime.now(timezone.utc),
                        point=self.point(trial))
        self.store.write_trial(row, history)
        checkpoint.drop(self.store, {trial_id})
        self.written.add(trial_id)
        self._line(row)

    def on_trial_error(self, iteration, trials, trial, **info):
        """A trial whose worker died (Ray's OOM killer, a lost node) after all retries: record it as a row."""
        spec = self.spec(trial)
        try:
            error = str(trial.get_error() or "")
        except Exception:  # the error file may be unreadable; the row matters more than its text
            error = ""
        lines = [line for line in error.splitlines() if line.strip()] or ["the trial's worker died"]
        if no_space(error):
            raise OSError(f"trial {spec.trial_id}: {lines[-1]}")
        row = trial_row(spec, None, status=failure_status(error), error=lines[-1][:500],
                        attempts=trial.num_failures, data=self.data, provenance=self.prov,
                        end_time=datetime.now(timezone.utc), point=self.point(trial))
        self.store.write_trial(row, [])
        self._line(row)

    def _place(self, trial) -> dict[str, Any]:
        """A searched trial's point and setting (its worker does not know its point's number); {} in a grid."""
        point = self.point(trial)
        return {} if point is None else {"point": point, "setting": self.spec(trial).setting}

    def _line(self, row: dict) -> None:
        if self.progress is not None:
            self.progress.trial_finished(failed=row["status"] not in FINISHED)
        accuracy = row.get("test_accuracy")
        shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "-"
        self.out(f"trial {row['trial_id']} [{row['factor']}] {row['setting']} repeat {row['repeat']}: "
                 f"{row['status']} test_acc {shown} in {row.get('train_seconds') or 0:.1f}s on {row['device'] or '?'}"
                 + (f" ({row['error']})" if row.get("error") else ""))
