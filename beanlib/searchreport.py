"""What a search's report adds to a grid's: the points it sampled, each parameter against validation accuracy,
parameter importance, how fast it found its best, and the questions its verdict asks."""

from __future__ import annotations

import math

import pandas as pd

from beanlib.results import RAN_IN_FULL
from beanlib.studies import Study, plain

IMPORTANCE_SEEDS = 5  # fANOVA's forest is random: its importances are shown as the spread over this many forests


def points_table(trials: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per sampled point: its number, its values, its seeds, and its mean validation and test accuracy over
    the seeds that ran in full; in the order the searcher suggested them."""
    fields = [d.field for d in study.search.space]
    rows = []
    for point, g in trials[trials["point"].notna()].groupby("point"):
        full = g[g["status"].isin(RAN_IN_FULL)]
        rows.append({"point": int(point), **{f: g[f].iloc[0] for f in fields}, "n": len(full),
                     "val_accuracy": 100 * full["val_accuracy"].mean() if len(full) else math.nan,
                     "test_accuracy": 100 * full["test_accuracy"].mean() if len(full) else math.nan})
    return pd.DataFrame(rows, columns=["point", *fields, "n", "val_accuracy", "test_accuracy"])


def questions(rows: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    """The contrasts a search's verdict tests, named from validation alone: its best point against the runner-up
    (did the choice at the top matter?) and against the worst (does the searched range matter at all?)."""
    ranked = rows[(rows["n"] > 1) & ~rows["survivors_only"].astype(bool)].sort_values("val_accuracy", ascending=False)
    labels = list(ranked["setting"])
    if len(labels) < 2:
        return ()
    return tuple(dict.fromkeys([(labels[0], labels[1]), (labels[0], labels[-1])]))


def best_so_far(trials: pd.DataFrame) -> pd.DataFrame:
    """The run's trials in the order they finished, with the compute spent so far (train seconds summed) and the best
    setting complete so far, by mean validation accuracy over its seeds (what a searcher sees), with its test mean. A
    setting counts once all its seeds in the run have finished. Works for a grid's settings as for a search's points."""
    done = trials[trials["end_time"].notna()].sort_values("end_time").reset_index(drop=True)
    sizes = done.groupby("setting")["trial_id"].count()
    seen: dict[str, list[int]] = {}
    best, out = None, []
    for i, row in done.iterrows():
        seen.setdefault(row["setting"], []).append(i)
        if len(seen[row["setting"]]) == sizes[row["setting"]]:
            runs = done.loc[seen[row["setting"]]]
            full = runs[runs["status"].isin(RAN_IN_FULL)]
            if len(full) and (best is None or full["val_accuracy"].mean() > best[1]):
                best = (row["setting"], full["val_accuracy"].mean(), full["test_accuracy"].mean())
        out.append({"trial": i + 1, "compute_seconds": float(done.loc[:i, "train_seconds"].fillna(0).sum()),
                    "best": best[0] if best else None, "best_val": 100 * best[1] if best else math.nan,
                    "best_test": 100 * best[2] if best else math.nan})
    return pd.DataFrame(out, columns=["trial", "compute_seconds", "best", "best_val", "best_test"])


def within(curve: pd.DataFrame, points: float = 1.0) -> pd.Series | None:
    """The first row of a best-so-far curve within `points` of its final best validation accuracy."""
    if curve.empty or curve["best_val"].isna().all():
        return None
    return curve[curve["best_val"] >= curve["best_val"].iloc[-1] - points].iloc[0]


def importance(points: pd.DataFrame, study: Study) -> pd.DataFrame | None:
    """Each searched parameter's share of the variance of the points' mean validation accuracy, by Optuna's fANOVA
    (a random forest over the points: the mean, lowest and highest over IMPORTANCE_SEEDS forests); None under three
    points, with one parameter, or when every point scored the same (nothing to apportion)."""
    import optuna

    usable = points[points["val_accuracy"].notna()]
    if len(usable) < 3 or len(study.search.space) < 2 or usable["val_accuracy"].nunique() < 2:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = study.search.distributions()
    record = optuna.create_study(direction="maximize")
    for _, row in usable.iterrows():
        params = {f: plain(row[f]) for f in distributions}
        record.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(row["val_accuracy"])))
    runs = [optuna.importance.get_param_importances(record, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=s))
            for s in range(IMPORTANCE_SEEDS)]
    table = pd.DataFrame(runs).astype(float)
    return pd.DataFrame({"parameter": table.columns, "importance": table.mean().values, "lowest": table.min().values,
                         "highest": table.max().values}).sort_values("importance", ascending=False).reset_index(drop=True)
