"""The study's statistics: per-setting summaries, each "best" chosen on validation, and verdicts that do not select first.

Selection and testing use different data, so that neither biases the other:
- Every best (a factor's setting, a model family's setting) is chosen on the validation split: the highest mean
  `val_accuracy` over the setting's runs, i.e. of the weights each row reports (its last epoch, or the epoch early
  stopping restored), not `best_val_accuracy` (a maximum over 20-30 noisy epochs, optimistic in its own way).
  Ties go to the lower mean validation loss.
- Test accuracy is then reported for what was chosen. Picking the setting with the highest *test* mean and
  reporting that mean overstates it (the winner's curse): tests/test_stats.py measures how much.
- Whether a factor matters is one test across all its settings on the test split, which picks nothing first
  (one-way ANOVA). Only when it rejects are the chosen setting's differences from the others tested (Welch
  t-tests, Holm-corrected). A study in which no setting differs therefore claims a difference at no more than the
  nominal rate, ALPHA (tests/test_stats.py simulates such studies).
- A setting some of whose runs ASHA pruned has a mean over its survivors only (biased upward): it is shown and
  marked, never chosen, never tested.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from beanlib.results import RAN_IN_FULL

ALPHA = 0.05  # the verdicts' significance level (family-wise, per factor)

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
    for model in ("lenet", "inception"):
        runs = family_choice(trials, model)
        if not runs.empty:
            found[model] = best_run(runs)
            families[model] = {"label": model, **setting_stats(runs)}
    if families:
        overall = choose(pd.DataFrame(families.values(), index=list(families)))
        found["best"] = found[overall]
    return found


@dataclass
class Verdict:
    """A factor's answer: the setting chosen on validation, one test across every eligible setting (on test), and
    the chosen setting's Holm-corrected comparisons with each other one (made only when the first test rejects)."""

    chosen: str | None = None
    val_accuracy: float = math.nan
    test_accuracy: float = math.nan
    settings: int = 0  # eligible settings compared
    runs: list[int] = field(default_factory=list)  # runs per compared setting
    omnibus_p: float | None = None  # one-way ANOVA on test accuracy; None when it cannot be computed
    pairwise: list[tuple[str, float, float]] = field(default_factory=list)  # (other, chosen - other in points, Holm p)
    left_out: list[str] = field(default_factory=list)  # settings with ASHA-pruned runs (survivors-only means)
    why_untested: str = ""

    @property
    def claims_difference(self) -> bool:
        """Whether the verdict says that some setting of the factor differs beyond the noise."""
        return self.omnibus_p is not None and self.omnibus_p < ALPHA

    def text(self) -> str:
        """The verdict in plain words (Markdown)."""
        if self.chosen is None:
            return f"no setting ran in full{self._left_out()}: nothing to choose"
        head = (f"chosen on validation: **{self.chosen}** (validation {self.val_accuracy:.1f}%, "
                f"test {self.test_accuracy:.1f}%)")
        if self.why_untested:
            return f"{head}; {self.why_untested}{self._left_out()}"
        tested = f"one-way ANOVA on test accuracy over {self.settings} settings, n = {_runs(self.runs)}, p = {self.omnibus_p:.3f}"
        if not self.claims_difference:
            return f"{head}; the settings do not differ beyond the noise ({tested}){self._left_out()}"
        ahead = [f"{other} ({lead:+.1f} points, p = {p:.3f})" for other, lead, p in self.pairwise if p < ALPHA and lead > 0]
        behind = [f"{other} ({lead:+.1f} points, p = {p:.3f})" for other, lead, p in self.pairwise if p < ALPHA and lead < 0]
        level = [f"{other} ({lead:+.1f}, p = {p:.3f})" for other, lead, p in self.pairwise if p >= ALPHA]
        parts = [f"the settings differ beyond the noise ({tested})"]
        parts += [f"{self.chosen} is ahead of {', '.join(ahead)}"] if ahead else []
        parts += [f"behind {', '.join(behind)}"] if behind else []
        parts += [f"not distinguishable from {', '.join(level)}"] if level else []
        parts += ["no single comparison with it reaches the 5% level after Holm's adjustment"] if not (ahead or behind) else []
        return f"{head}; " + "; ".join(parts) + f" (Welch t-tests, Holm-adjusted){self._left_out()}"

    def _left_out(self) -> str:
        return (f"; left out: {', '.join(self.left_out)} (ASHA pruned some of their runs, so their means are "
                "survivors-only)") if self.left_out else ""


def verdict(rows: pd.DataFrame) -> Verdict:
    """The Verdict for one factor's rows (one per setting, with `setting`, `accuracies` and `setting_stats` columns)."""
    left_out = list(rows.loc[rows["survivors_only"].astype(bool), "setting"])
    eligible = rows[(rows["n"] > 0) & ~rows["survivors_only"].astype(bool)]
    chosen = choose(rows)
    if chosen is None:
        return Verdict(left_out=left_out)
    best = rows.loc[chosen]
    out = Verdict(chosen=best["setting"], val_accuracy=best["val_accuracy"], test_accuracy=best["test_accuracy"],
                  settings=len(eligible), runs=[int(n) for n in eligible["n"]], left_out=left_out)
    groups = [np.asarray(a, float) for a in eligible["accuracies"]]
    if len(groups) < 2:
        out.why_untested = f"only {len(groups)} setting ran in full: no comparison"
    elif min(len(g) for g in groups) < 2:
        out.why_untested = "one run per setting, so run-to-run noise is unknown: rerun with --repeats 3 or more to tell"
    else:
        out.omnibus_p = anova_p(groups)
        if out.omnibus_p is None:
            out.why_untested = "cannot be tested: no setting varied between its runs"
        elif out.claims_difference:
            others = [(r["setting"], np.asarray(r["accuracies"], float)) for _, r in eligible.iterrows() if r["setting"] != out.chosen]
            mine = np.asarray(best["accuracies"], float)
            raw = [welch_p(mine, theirs) for _, theirs in others]
            out.pairwise = [(name, float(mine.mean() - theirs.mean()), p)
                            for (name, theirs), p in zip(others, holm(raw))]
    return out


def anova_p(groups: list[np.ndarray]) -> float | None:
    """One-way ANOVA p-value across groups; None when it is undefined (no variance within any group and none between)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant or near-constant input: judged by the result below
        p = float(stats.f_oneway(*groups).pvalue)
    return p if math.isfinite(p) else None


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Welch t-test p-value; 1.0 when it is undefined (neither group varied)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else 1.0


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: family-wise error at most the level for any number of comparisons."""
    order = np.argsort(p_values)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def original_p(accuracies: list[float], original: float) -> float | None:
    """How surprising the original study's one run is beside ours: the two-sided p-value of one more run of ours
    landing at least as far from our mean as the original's number. That is a t prediction interval from our n runs
    (one run spreads by s * sqrt(1 + 1/n)), the right comparison for a single run; a confidence interval of our mean
    would not be. None with fewer than two runs, no spread between them, or no original number."""
    from scipy import stats

    a = np.asarray(accuracies, float)
    if len(a) < 2 or original is None or math.isnan(original) or a.std(ddof=1) == 0:
        return None
    t = (original - a.mean()) / (a.std(ddof=1) * math.sqrt(1 + 1 / len(a)))
    return float(2 * stats.t.sf(abs(t), len(a) - 1))


def against_original(rows: pd.DataFrame) -> list[float | None]:
    """Per summary row (`accuracies`, `original_test_accuracy`), `original_p` Holm-adjusted over every distinct
    comparison of the run, so that comparing many settings with the original does not find a difference by chance.
    A comparison met under several factors (the baseline's runs against one number) counts once."""
    keys = comparisons(rows)
    raw = {key: original_p(list(key[0]), key[1]) for key in dict.fromkeys(keys)}
    tested = [key for key, p in raw.items() if p is not None]
    adjusted = dict(zip(tested, holm([raw[key] for key in tested])))
    return [adjusted.get(key) for key in keys]


def comparisons(rows: pd.DataFrame) -> list[tuple[tuple[float, ...], float]]:
    """Per summary row, what `against_original` compares: (our runs' accuracies, the original's number). Rows with
    equal keys are one comparison (the baseline under several factors)."""
    return [(tuple(a), o) for a, o in zip(rows["accuracies"], rows["original_test_accuracy"])]


def family_comparison(lenet: pd.DataFrame, inception: pd.DataFrame) -> str:
    """Whether the two families' chosen settings differ on test: a Welch t-test of two settings picked on validation."""
    a, b = (100 * t["test_accuracy"].to_numpy(float) for t in (inception, lenet))
    if min(len(a), len(b)) < 2:
        return "One run per setting: whether the families differ beyond the noise is unknown (rerun with --repeats 3)."
    p = welch_p(a, b)
    beyond = "beyond the noise" if p < ALPHA else "not beyond the noise"
    return (f"Inception-v3's chosen setting against LeNet's: {a.mean() - b.mean():+.1f} points on test, {beyond} "
            f"(Welch t-test, p = {p:.3f}, n = {len(a)} and {len(b)}).")


def convergence(epochs: pd.DataFrame, trial_id: str, within: float) -> tuple[int | None, float | None]:
    """(first epoch within `within` of the trial's best validation accuracy, final train - validation accuracy gap)."""
    e = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
    if e.empty:
        return None, None
    reached = e[e["val_accuracy"] >= e["val_accuracy"].max() - within]
    return int(reached["epoch"].iloc[0]), float(e["accuracy"].iloc[-1] - e["val_accuracy"].iloc[-1])


def _runs(counts: list[int]) -> str:
    return str(counts[0]) + " each" if len(set(counts)) == 1 else "/".join(map(str, counts))
