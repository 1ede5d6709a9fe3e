"""A study's search on Ray Tune: Optuna's samplers through Tune's OptunaSearch, each point run at every seed
(Tune's Repeater, which tells the searcher the mean), started again from the run's own records at each sitting.

What a search has done lives where a grid's does: in the run's rows, plus RUN/search.json, the points the
searcher suggested (numbered in order), written as each point's first trial starts. A new sitting hands the
searcher every point whose seeds all have a finished row, with its mean validation accuracy (OptunaSearch's
`add_evaluated_point`), and first re-suggests every point left unfinished (`points_to_evaluate`): its finished
seeds return their rows at once (`kept_result`), its interrupted ones resume from their checkpoints. So the budget
counts finished trials across sittings, and no finished trial trains twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.repeater import TRIAL_INDEX

from beanlib.results import FINISHED, RAN_IN_FULL, RunStore
from beanlib.studies import Study, TrialSpec, plain, search_spec

POINTS = "search.json"  # RUN/search.json: {"points": [{field: value}, ...]} in the order suggested
METRIC = "objective"  # what a trial's final report gives the searcher: its row's validation accuracy


@dataclass
class SearchState:
    """Where a search stands: the points suggested so far, and each point's rows by repeat."""

    points: list[dict[str, Any]]
    rows: dict[int, dict[int, dict]] = field(default_factory=dict)  # point -> repeat -> row

    def complete(self, repeats: int) -> list[int]:
        """Points whose every seed has a finished row."""
        return [p for p in range(len(self.points))
                if sum(r["status"] in FINISHED for r in self.rows.get(p, {}).values()) == repeats]

    def unfinished(self, context: dict[str, Any], repeats: int) -> list[TrialSpec]:
        """Every seed of the points not complete yet (a sitting re-suggests them first)."""
        complete = set(self.complete(repeats))
        return [search_spec(context["study"], values, r, overrides=context["overrides"], per_class=context["per_class"],
                            point=p) for p, values in enumerate(self.points) if p not in complete for r in range(repeats)]

    def mean(self, point: int) -> float:
        """A point's mean validation accuracy over its seeds that ran in full (nan: none did)."""
        values = [r["val_accuracy"] for r in self.rows.get(point, {}).values() if r["status"] in RAN_IN_FULL]
        return sum(values) / len(values) if values else math.nan


def state_of(store: RunStore, study: Study) -> SearchState:
    """The search's points (RUN/search.json) and rows, as the run holds them now."""
    recorded = store.read_json(POINTS) or {}
    points = [dict(p) for p in recorded.get("points", [])]
    found = SearchState(points)
    columns = ["point", "repeat", "status", "val_accuracy"]
    for row in store.read_table("trials", columns=columns).to_pylist():
        if row["point"] is not None and row["point"] < len(points):
            found.rows.setdefault(row["point"], {})[row["repeat"]] = row
    return found


def searcher(study: Study, repeats: int, found: SearchState) -> tuple[Repeater | None, int]:
    """(Tune's searcher for this sitting, the trials it may start): warm with the complete points, re-suggesting
    the unfinished ones first; (None, 0) when the budget is spent."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study it creates
    search = study.search
    complete = found.complete(repeats)
    left = search.points(repeats) - len(complete)
    if left <= 0:
        return None, 0
    # A seed per sitting that depends on how far the search got: a resumed search does not replay the first draws.
    seed = search.seed + len(complete)
    if search.algorithm == "tpe":
        startup = search.startup or min(10, max(2, search.points(repeats) // 3))
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    unfinished = [found.points[p] for p in range(len(found.points)) if p not in complete][:left]
    optuna_search = OptunaSearch(space=search.distributions(), metric=METRIC, mode="max", sampler=sampler,
                                 points_to_evaluate=unfinished or None)
    for p in complete:
        mean = found.mean(p)
        optuna_search.add_evaluated_point(found.points[p], mean, error=math.isnan(mean))
    return Repeater(optuna_search, repeat=repeats, set_index=True), left * repeats


def spec_of(config: dict[str, Any], context: dict[str, Any], point: int | None = None) -> TrialSpec:
    """The trial a searched Tune config stands for: its point's values at the seed its repeat index gives."""
    study = context["study"]
    values = {d.field: config[d.field] for d in study.search.space}
    return search_spec(study, values, int(config[TRIAL_INDEX]), overrides=context["overrides"],
                       per_class=context["per_class"], point=point)


def values_of(config: dict[str, Any], study: Study) -> dict[str, Any]:
    """The sampled values in a Tune config (JSON-ready)."""
    return {d.field: plain(config[d.field]) for d in study.search.space}


def kept_result(store: RunStore, trial_id: str) -> dict[str, Any] | None:
    """The final report of a trial that has a finished row already (a re-suggested point's finished seed), so that
    the searcher hears its value without training it again; None when it has none."""
    row = store.read_trial(trial_id, ["status", "val_accuracy", "test_accuracy", "epochs_run"])
    if row is None or row["status"] not in FINISHED:
        return None
    objective = {METRIC: row["val_accuracy"] if row["status"] in RAN_IN_FULL else math.nan}
    return {"finished": 1, "kept": 1, "status": row["status"], "test_accuracy": row["test_accuracy"],
            "epoch": row["epochs_run"] or 0, "val_accuracy": row["val_accuracy"] or 0.0, **objective}
