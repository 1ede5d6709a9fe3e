"""The verdicts' statistics on simulated studies: a study where no setting differs, one where one does, and the
winner's curse that choosing on test would bring."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from beanlib.stats import ALPHA, against_original, choose, holm, original_p, verdict

VAL_IMAGES, TEST_IMAGES = 133, 128  # the beans validation and test splits


def _study(rng, means, runs=3, seed_sd=0.02):
    """One simulated factor: per setting, `runs` trained models of true accuracy mean + seed noise, each scored on
    a validation and a test split of the beans sizes (binomial counting noise). Rows as beanlib.tables.summarize has them."""
    rows = []
    for i, mean in enumerate(means):
        true = np.clip(rng.normal(mean, seed_sd, runs), 0, 1)
        val, test = rng.binomial(VAL_IMAGES, true) / VAL_IMAGES, rng.binomial(TEST_IMAGES, true) / TEST_IMAGES
        rows.append({"setting": f"s{i}", "n": runs, "accuracies": list(100 * test), "test_accuracy": 100 * test.mean(),
                     "val_accuracy": 100 * val.mean(), "val_loss": 1 - val.mean(), "survivors_only": False})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("settings, runs", [(3, 3), (4, 3), (4, 5)])
def test_with_no_real_difference_a_difference_is_claimed_at_most_at_the_nominal_rate(settings, runs):
    rng = np.random.default_rng(settings * 10 + runs)
    studies = 2000
    claims = sum(verdict(_study(rng, [0.75] * settings, runs)).claims_difference for _ in range(studies))
    margin = 3 * np.sqrt(ALPHA * (1 - ALPHA) / studies)  # three Monte Carlo standard errors
    assert claims / studies <= ALPHA + margin, claims / studies


def test_a_real_lead_is_found_and_chosen():
    rng = np.random.default_rng(7)
    verdicts = [verdict(_study(rng, [0.75, 0.75, 0.85])) for _ in range(300)]
    assert np.mean([v.chosen == "s2" for v in verdicts]) > 0.9
    assert np.mean([v.claims_difference for v in verdicts]) > 0.5  # 10 points, 3 runs each: about 65% power
    # when it claims, the chosen setting is mostly ahead of at least one other beyond the noise (Holm costs power with
    # three runs), and never behind one
    claimed = [v for v in verdicts if v.claims_difference and v.chosen == "s2"]
    assert np.mean([any(p < ALPHA and lead > 0 for _, lead, p in v.pairwise) for v in claimed]) > 0.6  # 71% here
    assert not any(p < ALPHA and lead < 0 for v in claimed for _, lead, p in v.pairwise)
    ahead = next(v for v in claimed if all(p < ALPHA for _, _, p in v.pairwise))
    assert "the settings differ beyond the noise" in ahead.text() and "s2 is ahead of s0 (+" in ahead.text()


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


def test_pruned_settings_are_shown_but_never_chosen_nor_tested():
    rng = np.random.default_rng(0)
    rows = _study(rng, [0.75, 0.75, 0.95])
    rows.loc[2, "survivors_only"] = True  # its mean is over the runs ASHA let finish
    result = verdict(rows)
    assert result.chosen in ("s0", "s1") and result.settings == 2 and result.left_out == ["s2"]
    assert "left out: s2" in result.text()


def test_one_run_per_setting_is_never_tested():
    result = verdict(_study(np.random.default_rng(0), [0.7, 0.8, 0.9], runs=1))
    assert result.omnibus_p is None and not result.claims_difference
    assert "one run per setting, so run-to-run noise is unknown" in result.text()


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
