"""What is chosen, and on what: per-setting summaries, and every "best" chosen on the validation split.

- Every best (a factor's setting, a model family's setting) is chosen on the validation split: the highest mean
  `val_accuracy` over the setting's runs, i.e. of the weights each row reports (its last epoch, or the epoch early
  stopping restored), not `best_val_accuracy` (a maximum over 20-30 noisy epochs, optimistic in its own way).
  Ties go to the lower mean validation loss.
- Test accuracy is then reported for what was chosen. Picking the setting with the highest *test* mean and
  reporting that mean overstates it (the winner's curse): tests/test_stats.py measures how much.
- A setting some of whose runs ASHA pruned has a mean over its survivors only (biased upward): it is shown and
  marked, never chosen, never tested.
"""

from __future__ import annotations

import math

import pandas as pd

from beanlib.families import FAMILIES
from beanlib.results import RAN_IN_FULL

# The shared baseline trial's label within each one-factor-at-a-time factor.
BASELINE_LABEL = {
    "kernel_size": lambda row: f"kernel_size={int(row['kernel_size'])}",
    "kernel_counts": lambda row: f"kernel_counts={row['kernel_counts']}",
    "regularizer": lambda row: f"regularizer={row['regularizer']}",
}


def by_factor(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, factor it counts for), with the setting's label within that factor."""
    rows = trials.assign(factor=trials["factor"].str.split(",")).explode("factor")
    labels = [
        BASELINE_LABEL[row["factor"]](row) if row["setting"] == "baseline" and row["factor"] in BASELINE_LABEL else row["setting"]
        for _, row in rows.iterrows()
    ]
    return rows.assign(label=labels).reset_index(drop=True)


def ran_in_full(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows that count in the statistics: trials that ran all their epochs and have a test accuracy."""
    return trials[trials["status"].isin(RAN_IN_FULL) & trials["test_accuracy"].notna()]


def setting_stats(runs: pd.DataFrame) -> dict:
    """One setting's figures from its rows (all statuses): runs counted, test mean (%) with a 95% t interval,
    validation means (%, the choice's basis), pruned and failed counts, and whether the mean is survivors-only."""
    from scipy import stats

    ok = ran_in_full(runs)
    acc = 100 * ok["test_accuracy"].to_numpy(dtype=float)
    n, pruned = len(acc), int((runs["status"] == "pruned").sum())
    mean = float(acc.mean()) if n else math.nan
    std = float(acc.std(ddof=1)) if n >= 2 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n >= 2 else math.nan
    return {
        "n": n, "pruned": pruned, "failed": len(runs) - n - pruned,
        "test_accuracy": mean, "ci95_low": mean - half, "ci95_high": mean + half, "std": std, "accuracies": acc.tolist(),
        "val_accuracy": float(100 * ok["val_accuracy"].mean()) if n else math.nan,
        "val_loss": float(ok["val_loss"].mean()) if n else math.nan,
        "best_val_accuracy": float(100 * ok["best_val_accuracy"].mean()) if n else math.nan,
        "survivors_only": pruned > 0,
    }


def choose(rows: pd.DataFrame) -> object | None:
    """The index of the row (one per setting, with `setting_stats` columns) chosen on validation: highest mean
    validation accuracy, then lowest mean validation loss; None when no setting is eligible (ran in full, unpruned)."""
    eligible = rows[(rows["n"] > 0) & ~rows["survivors_only"].astype(bool) & rows["val_accuracy"].notna()]
    return None if eligible.empty else _by_validation(eligible).index[0]


def _by_validation(rows: pd.DataFrame, *then: str) -> pd.DataFrame:
    """`rows` best first on validation: highest accuracy, then lowest loss (a missing one last), then `then`."""
    return rows.assign(_loss=rows["val_loss"].fillna(math.inf)).sort_values(
        ["val_accuracy", "_loss", *then], ascending=[False, True, *(True for _ in then)], kind="stable")


def family_choice(trials: pd.DataFrame, model: str) -> pd.DataFrame:
    """The rows (all repeats that ran in full) of the `model` setting chosen on validation; empty when none is eligible."""
    mine = trials[trials["model"] == model]
    if mine.empty:
        return mine
    rows = pd.DataFrame([{"setting": s, **setting_stats(g)} for s, g in mine.groupby("setting", sort=False)])
    chosen = choose(rows)
    return ran_in_full(mine.iloc[:0]) if chosen is None else ran_in_full(mine[mine["setting"] == rows.loc[chosen, "setting"]])


def best_run(runs: pd.DataFrame) -> str | None:
    """The trial id, among one setting's runs that ran in full, of the highest validation accuracy (then the lowest
    validation loss, then the first repeat): the one run of a chosen setting that is kept as its model. Runs with a
    saved model come first: in a run that older beanlib versions began, the earlier rows have none."""
    ok = ran_in_full(runs)
    if "model_file" in ok and ok["model_file"].notna().any():
        ok = ok[ok["model_file"].notna()]
    if ok.empty:
        return None
    return str(_by_validation(ok, "repeat")["trial_id"].iloc[0])


def winners(trials: pd.DataFrame) -> dict[str, str]:
    """The models `--keep-models best` keeps, all chosen on validation: factor or family -> trial id. Each factor's
    chosen setting and each family's, by its best run (`best_run`); and "best", the family whose chosen setting has
    the higher mean validation accuracy (then the lower mean validation loss)."""
    found: dict[str, str] = {}
    for factor, rows in by_factor(trials).groupby("factor", sort=False):
        settings = pd.DataFrame([{"label": label, **setting_stats(g)} for label, g in rows.groupby("label", sort=False)])
        chosen = choose(settings)
        if chosen is not None and (run := best_run(rows[rows["label"] == settings.loc[chosen, "label"]])):
            found[factor] = run
    families = {}
    for model in FAMILIES:
        runs = family_choice(trials, model)
        if not runs.empty:
            found[model] = best_run(runs)
            families[model] = {"label": model, **setting_stats(runs)}
    if families:
        overall = choose(pd.DataFrame(families.values(), index=list(families)))
        found["best"] = found[overall]
    return found
