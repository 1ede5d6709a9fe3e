"""The study's answers: its planned contrasts, tested as the runs were made, corrected together, with their power.

Each factor asks the questions its study declares (beanlib.studies.Factor.contrasts): one-factor-at-a-time, each
change against the baseline; Inception-v3, each fine-tune against head-only, then the fine-tunes with each other.
Each contrast is paired by seed and image (beanlib.stats.design). Every contrast of the study and the two families'
comparison form one family: Holm's adjustment over all of them keeps the chance of any false claim in the whole
report at ALPHA. Each factor also says the smallest difference its design would have found at 80% power, so that
"no difference beyond the noise" is read with its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from beanlib.stats.choice import by_factor, choose, ran_in_full
from beanlib.stats.design import Components, Estimate, contrast, detectable, seeds_needed

ALPHA = 0.05  # family-wise, over every contrast of the study and the families' comparison
PRACTICAL = 5.0  # points: the difference whose cost in seeds each verdict states


@dataclass
class Contrast:
    """One planned comparison: setting - reference (points), its estimate and Holm-adjusted p-value."""

    factor: str
    setting: str
    reference: str
    estimate: Estimate | None = None
    p_adjusted: float | None = None
    why_untested: str = ""

    def text(self) -> str:
        if self.estimate is None:
            return f"{self.setting} against {self.reference}: {self.why_untested}"
        low, high = self.estimate.interval()
        beyond = self.p_adjusted is not None and self.p_adjusted < ALPHA
        return (f"{self.setting} against {self.reference}: {self.estimate.value:+.1f} points (95% CI {low:+.1f} to "
                f"{high:+.1f} before the correction), {'beyond' if beyond else 'not beyond'} the noise (p = {_p(self.p_adjusted)})")


@dataclass
class Verdict:
    """A factor's answer: the setting chosen on validation, its planned contrasts, and what the design could see."""

    factor: str
    chosen: str | None = None
    val_accuracy: float = math.nan
    test_accuracy: float = math.nan
    contrasts: list[Contrast] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    noise: Components | None = None  # the factor's contrasts' variance components, pooled
    family_size: int = 1  # contrasts Holm adjusts over, study-wide
    shared_choice: list[str] = field(default_factory=list)  # other factors that chose the same runs (the baseline)

    @property
    def tested(self) -> list[Contrast]:
        return [c for c in self.contrasts if c.p_adjusted is not None]

    @property
    def claims_difference(self) -> bool:
        """Whether some planned contrast of the factor is beyond the noise, after the study-wide correction."""
        return any(c.p_adjusted < ALPHA for c in self.tested)

    def text(self) -> str:
        """The verdict in plain words (Markdown)."""
        if self.chosen is None:
            return f"no setting ran in full{self._left_out()}: nothing to choose"
        parts = [f"chosen on validation: **{self.chosen}** (validation {self.val_accuracy:.1f}%, test {self.test_accuracy:.1f}%)"
                 + (f", the same runs as {', '.join(self.shared_choice)} chose: one observation, not "
                    f"{len(self.shared_choice) + 1}" if self.shared_choice else "")]
        if not self.tested:
            reasons = sorted({c.why_untested for c in self.contrasts}) or ["no planned contrast"]
            return "; ".join(parts + [f"untested: {'; '.join(reasons)}"]) + self._left_out()
        found = [c for c in self.tested if c.p_adjusted < ALPHA]
        parts.append("beyond the noise: " + "; ".join(c.text() for c in found) if found
                     else "no planned contrast is beyond the noise")
        rest = [c for c in self.contrasts if c not in found]
        if rest:
            parts.append(("the others: " if found else "") + "; ".join(c.text() for c in rest))
        parts.append(self.power_text())
        basis = {c.estimate.covers for c in self.tested}
        parts.append("paired by seed and test image, so these hold for new images from the same source"
                     if basis == {"new images"} else
                     "paired by seed only (rows without per-image predictions), so these hold for these test images "
                     "only, not for new ones")
        return "; ".join(parts) + self._left_out()

    def power_text(self) -> str:
        """How large a difference the design would have found, and what a PRACTICAL one would need."""
        if self.noise is None:
            return ""
        at = detectable(self.noise, ALPHA)
        corrected = detectable(self.noise, ALPHA / self.family_size)
        needed = seeds_needed(self.noise, PRACTICAL, ALPHA)
        where = " (on these test images)" if self.noise.conditional else ""
        seeds = (f"{PRACTICAL:.0f} points{where} would need {needed} seeds" if needed else
                 f"{PRACTICAL:.0f} points cannot be found with any number of seeds on these test images alone: "
                 "it needs a larger test split" if not self.noise.conditional else
                 f"{PRACTICAL:.0f} points{where} would need more than 100 seeds")
        return (f"power: with {self.noise.seeds} seeds a difference of {at:.1f} points would be found 80% of the time at 5% "
                f"({corrected:.1f} after the correction over the study's {self.family_size} comparisons); smaller ones "
                f"can go unseen, and {seeds}")

    def _left_out(self) -> str:
        return (f"; left out: {', '.join(self.left_out)} (ASHA pruned some of their runs, so their means are "
                "survivors-only)") if self.left_out else ""


def study_verdicts(summary: pd.DataFrame, trials: pd.DataFrame, planned: dict[str, tuple[tuple[str, str], ...]] | None = None,
                   families: dict[str, pd.DataFrame] | None = None) -> tuple[dict[str, Verdict], Contrast | None]:
    """Every factor's Verdict and the families' comparison, Holm-adjusted together.

    `summary`: beanlib.tables.summarize's rows; `planned`: factor -> its contrasts (beanlib.studies.Factor.planned;
    a factor it lacks, as in a study beanlib does not know: every pair); `families`: model -> its chosen setting's runs.
    """
    runs = by_factor(trials)
    verdicts: dict[str, Verdict] = {}
    for factor, rows in summary.groupby("factor", sort=False):
        verdicts[factor] = _factor_verdict(factor, rows, runs[runs["factor"] == factor], (planned or {}).get(factor))
    family = _families(families or {})
    every = [c for v in verdicts.values() for c in v.contrasts] + ([family] if family else [])
    tested = [c for c in every if c.estimate is not None]
    for c, p in zip(tested, holm([c.estimate.p for c in tested])):
        c.p_adjusted = p
    for v in verdicts.values():
        v.family_size = max(1, len(tested))
        v.shared_choice = _shared(v, verdicts, runs)
    return verdicts, family


def _factor_verdict(factor: str, rows: pd.DataFrame, runs: pd.DataFrame, planned) -> Verdict:
    left_out = list(rows.loc[rows["survivors_only"].astype(bool), "setting"])
    chosen = choose(rows)
    if chosen is None:
        return Verdict(factor, left_out=left_out)
    best = rows.loc[chosen]
    verdict = Verdict(factor, best["setting"], best["val_accuracy"], best["test_accuracy"], left_out=left_out)
    eligible = set(rows.loc[(rows["n"] > 0) & ~rows["survivors_only"].astype(bool), "setting"])
    pairs = planned if planned is not None else tuple(
        (a, b) for i, a in enumerate(rows["setting"]) for b in list(rows["setting"])[i + 1:])
    for setting, reference in pairs:
        c = Contrast(factor, setting, reference)
        if not {setting, reference} <= eligible:
            c.why_untested = "a setting has no runs that ran in full, or ASHA pruned some"
        else:
            c.estimate = contrast(runs[runs["label"] == setting], runs[runs["label"] == reference])
            c.why_untested = "" if c.estimate else ("fewer than two seeds in common, so run-to-run noise is unknown: "
                                                    "rerun with --repeats 3 or more")
            if c.estimate is not None and c.estimate.se < 1e-6:  # no spread (but rounding): a t-test would claim anything
                c.why_untested = (f"{c.estimate.value:+.1f} points in every seed: its noise cannot be estimated from "
                                  "these runs, so it is not tested")
                c.estimate = None
        verdict.contrasts.append(c)
    verdict.noise = pooled([c.estimate.components for c in verdict.contrasts if c.estimate is not None])
    return verdict


def _families(chosen: dict[str, pd.DataFrame]) -> Contrast | None:
    """The two families' chosen settings against each other (the first family's minus the second's)."""
    if len(chosen) != 2:
        return None
    (first, a), (second, b) = sorted(chosen.items(), key=lambda item: -ran_in_full(item[1])["test_accuracy"].mean())
    c = Contrast("families", f"{first} ({a['setting'].iloc[0]})", f"{second} ({b['setting'].iloc[0]})")
    c.estimate = contrast(a, b)
    c.why_untested = "" if c.estimate else "fewer than two seeds in common: whether the families differ is unknown (rerun with --repeats 3)"
    return c


def pooled(components: list[Components]) -> Components | None:
    """One factor's noise: its contrasts' variance components averaged (each contrast keeps its own for its test)."""
    if not components:
        return None
    first = components[0]
    mean = lambda name: float(np.mean([getattr(c, name) for c in components]))  # noqa: E731
    return Components(mean("seed"), mean("image"), mean("residual"), min(c.seeds for c in components), first.images,
                      any(c.conditional for c in components))


def _shared(verdict: Verdict, verdicts: dict[str, Verdict], runs: pd.DataFrame) -> list[str]:
    """The other factors whose chosen setting is the same trials as this one's (the one-at-a-time baseline)."""
    def trials_of(v: Verdict) -> frozenset:
        rows = runs[(runs["factor"] == v.factor) & (runs["label"] == v.chosen)]
        return frozenset(rows["trial_id"])

    mine = trials_of(verdict)
    return [v.factor for v in verdicts.values() if v is not verdict and v.chosen and mine and trials_of(v) == mine]


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (capped at 1): family-wise error at most the level, under any dependence."""
    order = np.argsort(p_values)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    if p >= 1:
        return "1, Holm-adjusted and capped at 1"
    return "< 0.001, Holm-adjusted" if p < 0.001 else f"{p:.3f}, Holm-adjusted"
