"""The original study's single runs beside ours: not contradicted, or beyond one run of ours, and how far we can see.

Each of its numbers is one run, so it is judged against the spread of one run of ours (a t prediction interval
from our n runs, one run spreading by s * sqrt(1 + 1/n)), Holm-adjusted over every distinct comparison of the
report. With three runs that interval is wide: its half-width is said beside each verdict, as the smallest
difference that could have been seen at all.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from beanlib.stats.verdicts import holm


def original_p(accuracies: list[float], original: float | None) -> float | None:
    """Two-sided p-value of one more run of ours landing at least as far from our mean as the original's number;
    None with fewer than two runs, no spread between them, or no original number."""
    from scipy import stats

    half = half_width(accuracies)
    if half is None or original is None or math.isnan(original):
        return None
    a = np.asarray(accuracies, float)
    t = (original - a.mean()) / (a.std(ddof=1) * math.sqrt(1 + 1 / len(a)))
    return float(2 * stats.t.sf(abs(t), len(a) - 1))


def half_width(accuracies: list[float], level: float = 0.95) -> float | None:
    """Half-width (points) of the prediction interval for one run of ours: the smallest distance from our mean at
    which an original number could have been called beyond our noise, before the correction."""
    from scipy import stats

    a = np.asarray(accuracies, float)
    if len(a) < 2 or a.std(ddof=1) == 0:
        return None
    return float(stats.t.ppf(0.5 + level / 2, len(a) - 1) * a.std(ddof=1) * math.sqrt(1 + 1 / len(a)))


def against_original(rows: pd.DataFrame) -> list[float | None]:
    """Per summary row (`accuracies`, `original_test_accuracy`), `original_p` Holm-adjusted over every distinct
    comparison of the run. A comparison met under several factors (the baseline's runs against one number) counts once."""
    keys = comparisons(rows)
    raw = {key: original_p(list(key[0]), key[1]) for key in dict.fromkeys(keys)}
    tested = [key for key, p in raw.items() if p is not None]
    adjusted = dict(zip(tested, holm([raw[key] for key in tested])))
    return [adjusted.get(key) for key in keys]


def comparisons(rows: pd.DataFrame) -> list[tuple[tuple[float, ...], float]]:
    """Per summary row, what `against_original` compares: (our runs' accuracies, the original's number)."""
    return [(tuple(a), o) for a, o in zip(rows["accuracies"], rows["original_test_accuracy"])]
