"""The verdicts' statistics on simulated studies with the real structure of the runs (tests/simulated.py): seeds as
blocks shared by the settings, fine-tunes following their seed's head-only run, one fixed test split scored image by
image, unequal variances. A study where no setting differs, one where one does, the intervals' coverage, the
factorial's effects, and the winner's curse that choosing on test would bring."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from beanlib.stats import ALPHA, against_original, choose, holm, original_p, study_verdicts
from beanlib.stats.design import accuracy, contrast, power
from beanlib.stats.verdicts import pooled
from simulated import SETTINGS, Population

VAL_IMAGES, TEST_IMAGES = 133, 128  # the beans validation and test splits
INCEPTION_CONTRASTS = tuple((k, SETTINGS[0]) for k in SETTINGS[1:]) + tuple(itertools.combinations(SETTINGS[1:], 2))


def _summary(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows beanlib.tables.summarize gives the verdicts, for one simulated factor."""
    rows = []
    for setting, g in trials.groupby("setting", sort=False):
        rows.append({"factor": "inception", "setting": setting, "n": len(g), "survivors_only": False,
                     "val_accuracy": 100 * g["val_accuracy"].mean(), "val_loss": g["val_loss"].mean(),
                     "test_accuracy": 100 * g["test_accuracy"].mean(), "accuracies": list(100 * g["test_accuracy"])})
    return pd.DataFrame(rows)


def _verdict(trials: pd.DataFrame):
    trials = trials.assign(factor="inception", trial_id=trials["setting"] + "-" + trials["repeat"].astype(str))
    verdicts, _ = study_verdicts(_summary(trials), trials, {"inception": INCEPTION_CONTRASTS})
    return verdicts["inception"]


@pytest.fixture(scope="session")
def null_population():
    return Population({k: 0.84 for k in SETTINGS}, np.random.default_rng(1))


@pytest.mark.slow
def test_with_no_real_difference_the_verdict_claims_one_at_most_at_the_nominal_rate(null_population):
    """Every setting has the same accuracy on new images: the verdict (six planned contrasts, paired by seed and
    image, Holm) claims a difference in at most ALPHA of studies. The one-way ANOVA beanlib used before, on the
    same studies, claims one far more often: the test split's images favour some settings by chance, the same way
    in every seed, and a test over seeds alone reads that as an effect."""
    rng = np.random.default_rng(2)
    studies = [null_population.study(rng) for _ in range(300)]
    claims = np.mean([_verdict(t).claims_difference for t in studies])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anova = np.mean([stats.f_oneway(*[g["test_accuracy"] for _, g in t.groupby("setting")]).pvalue < ALPHA for t in studies])
    margin = 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(studies))
    assert claims <= ALPHA + margin, claims
    assert anova > ALPHA + margin, anova  # 0.13 on these studies


@pytest.mark.slow
def test_a_real_fine_tune_effect_is_found_about_as_often_as_the_power_statement_says():
    """top-6 6.5 points above the others, 3 seeds: the planned contrast (top-6 against head-only, Holm over six) finds
    it in a share of studies that lies between the stated power at ALPHA / 6 (Bonferroni, what Holm's first step
    asks) and at ALPHA (what Holm asks of the last)."""
    rng = np.random.default_rng(3)
    population = Population({"head-only": 0.80, "top-2-blocks": 0.80, "top-3-blocks": 0.80, "top-6-blocks": 0.865}, rng)
    found, components = [], []
    for _ in range(200):
        trials = population.study(rng)
        verdict = _verdict(trials)
        top6 = next(c for c in verdict.contrasts if c.setting == "top-6-blocks" and c.reference == "head-only")
        found.append(top6.p_adjusted is not None and top6.p_adjusted < ALPHA and top6.estimate.value > 0)
        components.append(top6.estimate.components)
    noise = pooled(components)
    low, high = power(noise, 6.5, ALPHA / 6), power(noise, 6.5, ALPHA)
    share = np.mean(found)
    margin = 3 * np.sqrt(0.25 / len(found))
    assert low - margin <= share <= high + margin, (low, share, high)
    assert share > 0.3  # found often enough to matter: 3 seeds and 128 images see 6.5 points


@pytest.mark.slow
def test_the_new_images_interval_covers_the_true_accuracy_and_the_seed_only_one_does_not(null_population):
    """Each setting's interval for new images (seeds x images) covers its true accuracy on new images about 95% of
    the time; the interval over seeds alone, which takes the test images as fixed, covers it far less often."""
    rng = np.random.default_rng(4)
    new, seed_only = [], []
    for _ in range(300):
        trials = null_population.study(rng)
        for _, g in trials.groupby("setting"):
            low, high = accuracy(g).interval()
            new.append(low <= 84.0 <= high)
            acc = 100 * g["test_accuracy"].to_numpy()
            half = stats.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / np.sqrt(len(acc))
            seed_only.append(abs(acc.mean() - 84.0) <= half)
    assert 0.90 <= np.mean(new) <= 0.995, np.mean(new)
    assert np.mean(seed_only) < 0.8, np.mean(seed_only)  # 0.71 here


@pytest.mark.slow
def test_without_per_image_predictions_contrasts_fall_back_to_seeds_and_say_so(null_population):
    trials = null_population.study(np.random.default_rng(5)).assign(test_predicted=None)
    verdict = _verdict(trials)
    assert all(c.estimate.covers == "these test images" for c in verdict.tested)
    assert "these test images only, not for new ones" in verdict.text()
    assert contrast(trials[trials["setting"] == "head-only"], trials[trials["setting"] == "top-2-blocks"]).df == 2


def test_a_difference_that_never_varied_between_seeds_is_not_tested():
    rows = pd.DataFrame([{"setting": s, "repeat": r, "status": "ok", "test_accuracy": a + r / 100, "test_predicted": None,
                          "test_labels": None, "val_accuracy": 0.5, "val_loss": 1.0}
                         for s, a in (("head-only", 0.70), ("top-2-blocks", 0.75)) for r in range(3)])
    verdict = _verdict(rows)
    (c,) = [c for c in verdict.contrasts if c.setting == "top-2-blocks" and c.reference == "head-only"]
    assert c.estimate is None and "in every seed" in c.why_untested and not verdict.claims_difference


@pytest.mark.slow
def test_one_run_per_setting_is_never_tested(null_population):
    trials = null_population.study(np.random.default_rng(6), seeds=1)
    verdict = _verdict(trials)
    assert not verdict.tested and not verdict.claims_difference
    assert "rerun with --repeats 3 or more" in verdict.text()


@pytest.mark.slow
def test_pruned_settings_are_shown_but_never_chosen_nor_tested(null_population):
    trials = null_population.study(np.random.default_rng(7))
    trials.loc[trials["setting"] == "top-6-blocks", "val_accuracy"] = 1.0  # would be chosen
    trials = trials.assign(factor="inception", trial_id=trials["setting"] + "-" + trials["repeat"].astype(str))
    summary = _summary(trials)
    summary.loc[summary["setting"] == "top-6-blocks", "survivors_only"] = True
    verdict = study_verdicts(summary, trials, {"inception": INCEPTION_CONTRASTS})[0]["inception"]
    assert verdict.chosen != "top-6-blocks" and verdict.left_out == ["top-6-blocks"]
    assert all(c.estimate is None for c in verdict.contrasts if "top-6-blocks" in (c.setting, c.reference))


def _factorial(rng, effect: float):
    """A 3 x 3 x 4 LeNet grid, 3 seeds: kernel size moves accuracy by `effect` points per step, nothing else does."""
    from beanlib.stats.factorial import effects

    rows = []
    block = rng.normal(0, 2, 3)
    for (k, c, r), s in itertools.product(itertools.product((3, 5, 7), ("a", "b", "c"), ("n", "l1", "l2", "d")), range(3)):
        sd = 1.0 if r == "n" else 3.0  # unequal spreads
        acc = 70 + effect * (k - 5) / 2 + block[s] + rng.normal(0, sd)
        rows.append({"kernel_size": k, "kernel_counts": c, "regularizer": r, "repeat": s, "status": "ok",
                     "test_accuracy": rng.binomial(TEST_IMAGES, acc / 100) / TEST_IMAGES})
    return effects(pd.DataFrame(rows), ("kernel_size", "kernel_counts", "regularizer"))


def test_a_factorial_finds_a_real_main_effect_and_claims_none_where_there_is_none():
    rng = np.random.default_rng(8)
    found = _factorial(rng, 6.0).set_index("effect")
    assert found.loc["kernel_size", "p_holm"] < ALPHA and len(found) == 6
    nulls = [(_factorial(rng, 0.0)["p_holm"] < ALPHA).any() for _ in range(100)]
    assert np.mean(nulls) <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(nulls)), np.mean(nulls)


def _study(rng, means, runs=3, seed_sd=0.02):
    """One simulated factor, per-run accuracies only: per setting, `runs` trained models of true accuracy mean +
    seed noise, each scored on a validation and a test split of the beans sizes (binomial counting noise)."""
    rows = []
    for i, mean in enumerate(means):
        true = np.clip(rng.normal(mean, seed_sd, runs), 0, 1)
        val, test = rng.binomial(VAL_IMAGES, true) / VAL_IMAGES, rng.binomial(TEST_IMAGES, true) / TEST_IMAGES
        rows.append({"setting": f"s{i}", "n": runs, "accuracies": list(100 * test), "test_accuracy": 100 * test.mean(),
                     "val_accuracy": 100 * val.mean(), "val_loss": 1 - val.mean(), "survivors_only": False})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_the_chosen_settings_test_accuracy_is_not_inflated_by_the_choice():
    """Choosing on validation and reporting test: where runs differ only by which images each split holds, the
    chosen setting's test mean is the true accuracy on average. Choosing on test (the maximum of the test means)
    overstates it by about 2 points here: the winner's curse."""
    rng = np.random.default_rng(3)
    studies = [_study(rng, [0.75] * 4, seed_sd=0.0) for _ in range(4000)]
    chosen = np.mean([s.loc[choose(s), "test_accuracy"] for s in studies])
    by_test = np.mean([s["test_accuracy"].max() for s in studies])
    assert abs(chosen - 75.0) < 0.3, chosen
    assert by_test - 75.0 > 1.5, by_test  # what the report showed before it chose on validation


def test_holm_adjusts_step_down_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])


def test_winners_are_chosen_on_validation_and_keep_each_choices_best_run_with_a_model():
    from beanlib.stats import winners

    def row(trial_id, model, setting, val, test, model_file=None, factor=None):
        return {"trial_id": trial_id, "model": model, "factor": factor or model, "setting": setting, "repeat": int(trial_id[-1]),
                "status": "ok", "val_accuracy": val, "val_loss": 1 - val, "best_val_accuracy": val, "test_accuracy": test,
                "model_file": model_file,
                "kernel_size": 5, "kernel_counts": "6-16-120", "regularizer": "none"}

    trials = pd.DataFrame([
        # LeNet: setting a has the higher mean validation accuracy (0.70 against 0.68) though b has the best single run
        row("l-a0", "lenet", "a", 0.66, 0.90, "models/l-a0.keras"), row("l-a1", "lenet", "a", 0.74, 0.60, "models/l-a1.keras"),
        row("l-b0", "lenet", "b", 0.80, 0.95, "models/l-b0.keras"), row("l-b1", "lenet", "b", 0.56, 0.95, "models/l-b1.keras"),
        # Inception: one setting; its best run on validation (i-x0) has no model (an older row), so i-x1 is kept
        row("i-x0", "inception", "x", 0.90, 0.80, None), row("i-x1", "inception", "x", 0.85, 0.80, "models/i-x1.keras"),
    ])
    found = winners(trials)
    assert found["lenet"] == "l-a1"  # setting chosen on mean validation, then its best run; test never looked at
    assert found["inception"] == "i-x1" and found["best"] == "i-x1"  # Inception's setting: 0.875 mean validation


def _beside(rng, means, runs=3):
    """Per setting, `runs` of ours and one more run of the same setting standing for the original's (`_study`'s noise)."""
    rows = _study(rng, means, runs + 1)
    return rows.assign(original_test_accuracy=[a[0] for a in rows["accuracies"]], accuracies=[a[1:] for a in rows["accuracies"]])


@pytest.mark.slow
def test_an_original_run_of_the_same_setting_is_judged_beyond_the_noise_at_the_nominal_rate():
    """The original's number is one run: judged against the spread of one run of ours (a prediction interval), a run
    of the same setting is called different 5% of the time, and, Holm-adjusted, a study of 6 settings at most 5%.
    Judged against our mean's confidence interval instead, it would be called different about 15% of the time."""
    rng = np.random.default_rng(11)
    studies = [_beside(rng, [0.7, 0.75, 0.8, 0.7, 0.75, 0.8]) for _ in range(1500)]
    raw = np.array([[original_p(a, o) for a, o in zip(s["accuracies"], s["original_test_accuracy"])] for s in studies], float)
    margin = 3 * np.sqrt(ALPHA * (1 - ALPHA) / raw.size)
    assert abs(np.nanmean(raw < ALPHA) - ALPHA) < margin, np.nanmean(raw < ALPHA)
    # the same comparison against a confidence interval of our mean: t grows by sqrt(1 + 1/3) / sqrt(1/3) = 2
    by_mean = [stats.t.sf(abs(stats.t.isf(p / 2, 2)) * 2, 2) * 2 < ALPHA for p in raw[~np.isnan(raw)]]
    assert np.mean(by_mean) > 0.12, np.mean(by_mean)
    any_claim = np.mean([min((p for p in against_original(s) if p is not None), default=1) < ALPHA for s in studies])
    assert any_claim <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(studies)), any_claim


def test_an_original_far_from_our_runs_is_beyond_the_noise_and_a_comparison_met_twice_counts_once():
    assert original_p([70.0, 71.0, 72.0], 71.0) == pytest.approx(1.0)
    # t = (80 - 71) / (1 * sqrt(1 + 1/3)) with 2 degrees of freedom
    assert original_p([70.0, 71.0, 72.0], 80.0) == pytest.approx(2 * (1 - _t_cdf(9 / np.sqrt(4 / 3), 2)))
    assert original_p([70.0], 80.0) is None and original_p([70.0, 70.0], 80.0) is None and original_p([70.0, 71.0], float("nan")) is None
    rows = pd.DataFrame({"accuracies": [[70.0, 71.0, 72.0]] * 3 + [[60.0, 64.0, 62.0]],  # the baseline under 3 factors
                         "original_test_accuracy": [80.0, 80.0, 81.0, 61.0]})
    raw = [original_p([70.0, 71.0, 72.0], 80.0), original_p([70.0, 71.0, 72.0], 81.0), original_p([60.0, 64.0, 62.0], 61.0)]
    expected = holm(raw)  # three distinct comparisons, not four
    assert against_original(rows) == pytest.approx([expected[0], expected[0], expected[1], expected[2]])


def _t_cdf(t, df):
    """Student's t CDF for 2 degrees of freedom in closed form, to check scipy's use without scipy."""
    assert df == 2
    return 0.5 + t / (2 * np.sqrt(2 + t * t))
