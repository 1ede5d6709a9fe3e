"""How the runs were made, as a model: seeds are blocks, the test images one fixed sample, variances per setting.

A run's test accuracy is the mean of its per-image correctness c[s, i] (seed s, image i). Every seed of a study is
scored on the same N test images, so an accuracy varies with the seed *and* with which images the test split
happened to draw; averaging seeds shrinks the first, never the second. With per-image predictions in the rows,
a setting (or a difference of two settings, image by image and seed by seed) is a seeds x images table, and the
variance of its mean under the crossed random-effects model

    x[s, i] = mu + a[s] + b[i] + e[s, i]:   Var(mean) = var_a / S + var_b / N + var_e / (S N)

is estimated from the table's mean squares, each component kept at zero or above, with Satterthwaite's degrees of
freedom. That covers accuracy *on new images from the same source*, by a new seed. Differences are taken within
a seed (the seed's shared data order and, for a fine-tune, its head-only start cancel) and within an image, so
each contrast carries its own variance: no common variance is assumed anywhere.

Without per-image predictions (rows from before them) a setting's interval adds the binomial variance of N images
to the seeds' spread, and a contrast is a paired t-test over seeds, which holds *for these test images* only:
said wherever it is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from beanlib.stats.choice import ran_in_full

POWER = 0.8  # the power at which the smallest detectable difference is stated


@dataclass(frozen=True)
class Components:
    """The variance components of one seeds x images table (fractions squared): seeds, images, their interaction;
    `images` None when only per-seed accuracies were known (then `image` holds the binomial variance per image)."""

    seed: float
    image: float
    residual: float
    seeds: int
    images: int | None
    conditional: bool = False  # a paired t over seeds: nothing is known of the images (a contrast without predictions)

    def variance(self, seeds: int | None = None) -> float:
        """Var of the table's mean with `seeds` seeds (default: as measured), the test images as they are."""
        s = seeds or self.seeds
        if self.conditional:
            return self.seed / s
        return self.seed / s + self.image / self.images + self.residual / (s * self.images)

    def df(self, seeds: int | None = None) -> float:
        """Satterthwaite's degrees of freedom of `variance(seeds)`, from the mean squares that estimate it."""
        s = seeds or self.seeds
        if self.conditional or self.images is None:
            return float(s - 1)
        n = self.images
        # Expected mean squares at s seeds: seeds I var_a + var_e (df s-1), images s var_b + var_e (df n-1),
        # residual var_e (df (s-1)(n-1)); variance() is (MS_seed + MS_image - MS_residual) / (s n) when every
        # component is above zero, and drops the terms of a component kept at zero.
        terms = [(n * self.seed + self.residual, s - 1)] if self.seed > 0 else []
        terms += [(s * self.image + self.residual, n - 1)] if self.image > 0 else []
        if self.seed > 0 and self.image > 0:
            terms.append((-self.residual, (s - 1) * (n - 1)))
        terms = terms or [(self.residual, (s - 1) * (n - 1))]
        total = sum(ms for ms, _ in terms)
        return float(total ** 2 / sum(ms ** 2 / df for ms, df in terms)) if total > 0 else float(s - 1)


def crossed(table: np.ndarray) -> tuple[float, Components]:
    """(mean, components) of a seeds x images table, components from its two-way mean squares, each >= 0."""
    s, n = table.shape
    grand = float(table.mean())
    seed_means, image_means = table.mean(1), table.mean(0)
    ms_seed = n * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    ms_image = s * float(((image_means - grand) ** 2).sum()) / (n - 1)
    residual = table - seed_means[:, None] - image_means[None, :] + grand
    ms_residual = float((residual ** 2).sum()) / ((s - 1) * (n - 1))
    return grand, Components(seed=max(0.0, (ms_seed - ms_residual) / n), image=max(0.0, (ms_image - ms_residual) / s),
                             residual=ms_residual, seeds=s, images=n)


@dataclass(frozen=True)
class Estimate:
    """A mean (a setting's accuracy, or a contrast's difference), in points, with what its interval covers."""

    value: float
    components: Components
    covers: str  # "new images" or "these test images"

    @property
    def se(self) -> float:
        return 100 * math.sqrt(self.components.variance())

    @property
    def df(self) -> float:
        return self.components.df()

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        from scipy import stats

        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * self.se
        return self.value - half, self.value + half

    @property
    def p(self) -> float:
        """Two-sided p-value of no difference (for a contrast)."""
        from scipy import stats

        if self.se == 0:
            return 1.0 if self.value == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.value) / self.se, self.df))

    def detectable(self, alpha: float, seeds: int | None = None) -> float:
        """The smallest true difference (points) this design finds at POWER, two-sided at `alpha`, with `seeds`
        seeds (default: as run) and the same test images."""
        return detectable(self.components, alpha, seeds)


def detectable(components: Components, alpha: float, seeds: int | None = None) -> float:
    """The smallest true difference (points) found at POWER by a two-sided t-test at `alpha` (noncentral t)."""
    from scipy import optimize, stats

    se, df = 100 * math.sqrt(components.variance(seeds)), components.df(seeds)
    if se == 0 or df <= 0:
        return math.nan
    short = lambda d: power(components, d, alpha, seeds) - POWER  # noqa: E731 (grows with d, from alpha - POWER at 0)
    high = (float(stats.t.ppf(1 - alpha / 2, df)) + 10) * se
    while short(high) < 0 and high < 1e4 * se:  # one or two degrees of freedom: heavy tails need far larger shifts
        high *= 2
    return float(optimize.brentq(short, 0, high)) if short(high) >= 0 else math.inf


def power(components: Components, difference: float, alpha: float, seeds: int | None = None) -> float:
    """The share of studies of this design in which a true `difference` (points) is found at `alpha`."""
    from scipy import stats

    se, df = 100 * math.sqrt(components.variance(seeds)), components.df(seeds)
    crit, shift = stats.t.ppf(1 - alpha / 2, df), abs(difference) / se
    found = stats.nct.sf(crit, df, shift) + stats.nct.cdf(-crit, df, shift)
    return float(1.0 if math.isnan(found) else min(1.0, found))  # nct's tail is NaN far beyond the critical value


def seeds_needed(components: Components, difference: float, alpha: float, most: int = 100) -> int | None:
    """Seeds needed to find a true `difference` (points) at POWER with these test images; None when no number of
    seeds up to `most` does (the test split's own sampling noise is larger than that). For conditional components
    (no per-image predictions) the answer holds for these test images only."""
    return next((s for s in range(2, most + 1) if detectable(components, alpha, s) <= difference), None)


# --- from rows --------------------------------------------------------------------------------------


def correctness(runs: pd.DataFrame) -> dict[int, np.ndarray] | None:
    """repeat -> each test image's correctness (0/1) for runs that ran in full; None unless every run has its
    per-image predictions and labels."""
    ok = ran_in_full(runs)
    if ok.empty or "test_labels" not in ok or ok["test_predicted"].isna().any() or ok["test_labels"].isna().any():
        return None
    return {int(r): (np.asarray(p) == np.asarray(y)).astype(float)
            for r, p, y in zip(ok["repeat"], ok["test_predicted"], ok["test_labels"])}


def accuracy(runs: pd.DataFrame) -> Estimate | None:
    """A setting's test accuracy with the variance of new images by a new seed; None with fewer than two runs."""
    ok = ran_in_full(runs)
    if len(ok) < 2:
        return None
    table = correctness(ok)
    if table is not None:
        mean, components = crossed(np.stack([table[r] for r in sorted(table)]))
        return Estimate(100 * mean, components, "new images")
    acc = ok["test_accuracy"].to_numpy(float)
    images = _images(ok)
    p = float(acc.mean())
    # Seeds' spread (which holds the images' interaction with the seed) plus N images' binomial sampling variance.
    return Estimate(100 * p, Components(seed=float(acc.var(ddof=1)), image=p * (1 - p), residual=0.0,
                                        seeds=len(acc), images=images), "new images")


def contrast(first: pd.DataFrame, second: pd.DataFrame) -> Estimate | None:
    """first - second (points), paired by seed (repeat) and, where both have per-image predictions, by image;
    None with fewer than two paired seeds."""
    a, b = ran_in_full(first).set_index("repeat"), ran_in_full(second).set_index("repeat")
    seeds = sorted(set(a.index) & set(b.index))
    if len(seeds) < 2:
        return None
    ca, cb = correctness(a.loc[seeds].reset_index()), correctness(b.loc[seeds].reset_index())
    if ca is not None and cb is not None and all(len(ca[s]) == len(cb[s]) for s in seeds):
        mean, components = crossed(np.stack([ca[s] - cb[s] for s in seeds]))
        return Estimate(100 * mean, components, "new images")
    d = a.loc[seeds, "test_accuracy"].to_numpy(float) - b.loc[seeds, "test_accuracy"].to_numpy(float)
    return Estimate(100 * float(d.mean()), Components(seed=float(d.var(ddof=1)), image=0.0, residual=0.0,
                                                        seeds=len(seeds), images=None, conditional=True),
                    "these test images")


def _images(runs: pd.DataFrame) -> int:
    """The test split's size, from a run's confusion matrix."""
    matrix = runs["confusion_matrix"].dropna()
    return int(sum(map(sum, matrix.iloc[0]))) if len(matrix) else 0
