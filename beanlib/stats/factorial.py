"""A full factorial's answer: main effects and two-way interactions, with seeds as blocks (statsmodels' anova_lm).

The model is test accuracy ~ seed + A + B + C + A:B + A:C + B:C, fitted by least squares; each effect is tested
by a type-II F-test with heteroscedasticity-robust (HC3) covariance, since settings' spreads differ, and the
effects are Holm-adjusted among themselves. The runs' accuracies are on one fixed test split, so the effects hold
for these test images.
"""

from __future__ import annotations

import warnings

import pandas as pd

from beanlib.stats.choice import ran_in_full
from beanlib.stats.verdicts import ALPHA, holm


def effects(trials: pd.DataFrame, fields: tuple[str, ...]) -> pd.DataFrame | None:
    """One row per effect (main and two-way): F, df, raw and Holm-adjusted p; None when the runs cannot fit it
    (fewer than two seeds, or a field that did not vary)."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    ok = ran_in_full(trials)
    if ok["repeat"].nunique() < 2 or any(ok[f].astype(str).nunique() < 2 for f in fields):
        return None
    data = pd.DataFrame({f: ok[f].astype(str) for f in fields} | {"seed": ok["repeat"].astype(str),
                                                                   "accuracy": 100 * ok["test_accuracy"].astype(float)})
    terms = " + ".join(f"C({f})" for f in fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.ols(f"accuracy ~ C(seed) + ({terms}) ** 2", data).fit()
        table = anova_lm(fit, typ=2, robust="hc3")
    table = table.drop(index=["C(seed)", "Residual"], errors="ignore")
    out = pd.DataFrame({"effect": [_name(i) for i in table.index], "F": table["F"].to_numpy(), "df": table["df"].to_numpy(),
                        "p": table["PR(>F)"].to_numpy()})
    out["p_holm"] = holm(list(out["p"]))
    return out


def text(table: pd.DataFrame | None) -> str:
    """The factorial's effects in plain words."""
    if table is None:
        return "main effects and interactions: untested (fewer than two seeds, or a factor that did not vary)"
    found = table[table["p_holm"] < ALPHA]
    listed = "; ".join(f"{r.effect} (F = {r.F:.1f}, p = {r.p_holm:.3f})" for r in found.itertuples())
    return (f"main effects and two-way interactions (seed-blocked linear model, HC3-robust type-II F-tests, Holm over "
            f"its {len(table)} effects, on these test images): " + (f"beyond the noise: {listed}" if listed else "none beyond the noise"))


def _name(term: str) -> str:
    """C(kernel_size):C(regularizer) -> kernel_size x regularizer."""
    return " x ".join(part[2:-1] for part in term.split(":"))
