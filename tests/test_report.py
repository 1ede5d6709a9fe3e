"""The report: tables checked against the Parquet rows of a real smoke sweep (tests/smoke.py), and statistics on
constructed repeats."""

import json
import math
import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from scipy import stats

from beanlib.errors import BeanlibError
from beanlib.report import build_report
from beanlib.results import RunStore
from beanlib.rows import trial_row
from beanlib.stats import holm
from beanlib.studies import plan
from beanlib.train import TrialResult


@pytest.mark.slow
def test_report_tables_match_the_sweeps_rows(smoke_run, tmp_path):
    report = build_report(str(smoke_run.run), str(tmp_path / "report"))
    trials = pd.read_parquet(smoke_run.run / "trials")
    summary = pd.read_parquet(tmp_path / "report" / "summary.parquet")
    assert summary.groupby("factor").size().to_dict() == {"kernel_size": 3, "kernel_counts": 3, "regularizer": 4, "inception": 4}
    assert list(summary["factor"].drop_duplicates()) == ["kernel_size", "kernel_counts", "regularizer", "inception"]
    for _, row in summary.iterrows():
        setting = "baseline" if row["setting"] in ("kernel_size=5", "kernel_counts=6-16-120", "regularizer=none") else row["setting"]
        trial = trials[trials["setting"] == setting].iloc[0]
        assert row["n"] == 1 and row["test_accuracy"] == pytest.approx(100 * trial["test_accuracy"])
        assert row["trainable_params"] == trial["trainable_params"] and math.isnan(row["ci95_low"])
    assert summary.set_index("setting").loc["kernel_size=7", "original_test_accuracy"] == 71.88
    assert summary.set_index("setting").loc["top-6-blocks", "trainable_params"] == 20_431_747
    markdown = (tmp_path / "report" / "report.md").read_text()
    for setting in summary["setting"]:
        assert f"| {setting} |" in markdown
    assert "fewer than two seeds in common, so run-to-run noise is unknown" in markdown and "Partial report" not in markdown
    assert "; Keras backend tensorflow float32. " in markdown and "| CPU x1, tensorflow |" in markdown
    assert "**Inception-v3 base**: random init (not pretrained). Its numbers check the pipeline" in markdown
    # the sweep's one feature computation is said once, apart from the trials' own seconds; memory per trial is shown
    assert re.search(r"Inception-v3 base features were computed once by the sweep \(\d+s, .*\) and shared by 4 trials", markdown)
    assert "| peak MiB |" in markdown
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert [f for f in figures if not f.startswith("mistakes_")] == [
        "answer.png", "confusion_inception.png", "confusion_lenet.png", "curves_inception.png",
        "curves_kernel_counts.png", "curves_kernel_size.png", "curves_regularizer.png"]  # galleries: their own test
    assert all((tmp_path / "report" / "figures" / f).read_bytes()[:4] == b"\x89PNG" for f in figures)
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures) and "figures/" not in page  # self-contained
    assert report.missing == []
    # the report opens with the answer: the summary figure comes before any table
    assert markdown.index("](figures/answer.png)") < markdown.index("## Factors, beside the original study")


@pytest.mark.slow
def test_the_gallery_shows_what_each_familys_best_model_got_wrong(smoke_run, tmp_path):
    import numpy as np

    from beanlib.data import load_beans
    from beanlib.stats import winners

    build_report(str(smoke_run.run), str(tmp_path / "report"))
    trials = pd.read_parquet(smoke_run.run / "trials").set_index("trial_id")
    markdown = (tmp_path / "report" / "report.md").read_text()
    for model, trial_id in winners(trials.reset_index()).items():
        if model not in ("lenet", "inception"):
            continue
        row = trials.loc[trial_id]
        labels = load_beans("synthetic", int(row["image_size"]), per_class=2).test.labels
        wrong = int((np.asarray(row["test_predicted"]) != labels).sum())
        assert wrong == round((1 - row["test_accuracy"]) * len(labels))  # the row's predictions are its accuracy's
        assert all(1 / 3 <= c <= 1 for c in row["test_confidence"])  # a probability, at least 1/3 for the argmax of 3
        gallery = tmp_path / "report" / "figures" / f"mistakes_{model}.png"
        assert gallery.exists() == (wrong > 0)
        assert (f"got wrong, {wrong} of {len(labels)}" in markdown) == (wrong > 0)
    # Data that is not readable here leaves the gallery out, said in the report, and nothing else
    build_report(str(smoke_run.run), str(tmp_path / "elsewhere"), data=str(tmp_path / "nowhere"))
    assert "no gallery, the run's data" in (tmp_path / "elsewhere" / "report.md").read_text()


@pytest.mark.slow
def test_a_partial_run_gives_a_partial_report(smoke_run, tmp_path):
    import shutil

    partial = tmp_path / "smoke"
    shutil.copytree(smoke_run.run, partial, ignore=shutil.ignore_patterns("report", "tune"))
    dropped = sorted((partial / "trials").glob("inception-*.parquet"))[:2]
    for path in dropped:
        path.unlink()
    report = build_report(str(partial))
    assert len(report.missing) == 2 and (partial / "report" / "report.md").exists()
    assert "**Partial report**: 2 planned trials have no row yet" in (partial / "report" / "report.md").read_text()


# --- constructed results with repeats ----------------------------------------------------------

ACCURACIES = {  # test accuracy per setting over three seeds
    "kernel_size=3": [0.70, 0.72, 0.74],
    "baseline": [0.60, 0.61, 0.62],
    "kernel_size=7": [0.69, 0.73, 0.71],
    "kernel_counts=3-8-60": [0.50, 0.52, 0.51],
    "kernel_counts=12-32-240": [0.80, 0.81, 0.82],
}


def _constructed_run(root):
    store = RunStore(str(root), "constructed")
    store.check_manifest({"study": "seed", "data": "synthetic", "repeats": 3, "per_class": None, "overrides": {}})
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for spec in plan("seed", repeats=3):
        if spec.setting not in ACCURACIES:
            continue
        acc = ACCURACIES[spec.setting][spec.repeat]
        history = [{"phase": "train", "epoch": e, "loss": 1 / e, "accuracy": min(1, acc + 0.1 * e),
                    "val_accuracy": acc - 0.05 + 0.02 * e, "val_loss": 1.0, "seconds": 10.0} for e in (1, 2, 3)]
        result = TrialResult("ok", history, test_accuracy=acc, per_class_accuracy=[acc] * 3,
                             confusion_matrix=[[40, 2, 1], [3, 38, 2], [1, 1, 40]], trainable_params=5, total_params=5,
                             train_seconds=30.0, images_per_second=100.0).summarize_history()  # validation: acc + 1 point
        row = trial_row(spec, result, status="ok", data="synthetic", device="CPU x1", node="n",
                        start_time=start + timedelta(seconds=10 * spec.repeat), end_time=start + timedelta(seconds=10 * spec.repeat + 40))
        store.write_trial(row, history)
    failed = next(s for s in plan("seed", repeats=3) if s.setting == "regularizer=l1")
    store.write_trial(trial_row(failed, None, status="oom", error="ResourceExhaustedError: OOM when allocating", data="synthetic"), [])
    return root / "constructed"


def test_statistics_on_repeats(tmp_path):
    report = build_report(str(_constructed_run(tmp_path)))
    summary = report.summary.set_index("setting")
    for setting, values in [("kernel_size=3", ACCURACIES["kernel_size=3"]), ("kernel_size=5", ACCURACIES["baseline"]),
                            ("kernel_counts=6-16-120", ACCURACIES["baseline"])]:
        values = [100 * v for v in values]
        mean = sum(values) / 3
        half = stats.t.ppf(0.975, 2) * pd.Series(values).std() / math.sqrt(3)
        row = summary.loc[setting]
        assert row["n"] == 3 and row["test_accuracy"] == pytest.approx(mean)
        assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((mean - half, mean + half))
    markdown = (tmp_path / "constructed" / "report" / "report.md").read_text()
    # kernel size: chosen on validation (test + 1 point here); each size against the baseline, paired by seed (these
    # rows have no per-image predictions), Holm-adjusted over the study's three tested contrasts
    def paired_p(first, second):
        return stats.ttest_rel([100 * v for v in ACCURACIES[first]], [100 * v for v in ACCURACIES[second]]).pvalue

    verdict_p = holm([paired_p("kernel_size=3", "baseline"), paired_p("kernel_size=7", "baseline"),
                     paired_p("kernel_counts=3-8-60", "baseline")])
    verdict = next(line for line in markdown.splitlines() if line.startswith("chosen on validation: **kernel_size"))
    assert verdict.startswith("chosen on validation: **kernel_size=3** (validation 73.0%, test 72.0%); beyond the noise: "
                              "kernel_size=3 against kernel_size=5: +11.0 points (95% CI +8.5 to +13.5 before the correction), beyond the noise "
                              f"(p = {verdict_p[0]:.3f}, Holm-adjusted); kernel_size=7 against kernel_size=5: +10.0 points"), verdict
    assert "paired by seed only (rows without per-image predictions), so these hold for these test images only" in verdict
    assert re.search(r"power: with 3 seeds a difference of \d+\.\d points would be found 80% of the time", verdict)
    # kernel counts: 12-32-240 leads the baseline by exactly 20 points in every seed: no noise to test against
    assert "kernel_counts=12-32-240 against kernel_counts=6-16-120: +20.0 points in every seed" in markdown
    assert f"kernel_counts=3-8-60 against kernel_counts=6-16-120: -10.0 points (95% CI -12.5 to -7.5 before the correction), beyond the noise (p = {verdict_p[2]:.3f}" in markdown
    assert "| kernel_counts=12-32-240 | yes | 82.0 | 81.0 |" in markdown  # the chosen setting, its validation and test means
    # the oom trial is listed with its error, and the unrun settings are reported missing
    assert "ResourceExhaustedError: OOM when allocating" in markdown and "| oom |" in markdown
    assert len(report.missing) == 12 * 3 - 5 * 3 - 1
    # the original's one run against the spread of one of ours: 4 distinct comparisons (kernel sizes 5 and 7, 3-8-60,
    # and the baseline again as regularizer=none against 69, not 69.5), Holm-adjusted
    def p_one_run(values, original):
        values = pd.Series([100 * v for v in values])
        t = (original - values.mean()) / (values.std() * math.sqrt(1 + 1 / 3))
        return 2 * stats.t.sf(abs(t), 2)

    raw = [p_one_run(ACCURACIES["baseline"], 69.5), p_one_run(ACCURACIES["kernel_size=7"], 71.88),
           p_one_run(ACCURACIES["kernel_counts=3-8-60"], 58.59), p_one_run(ACCURACIES["baseline"], 69.0)]
    adjusted = holm(raw)  # tested on its own in tests/test_stats.py
    half = stats.t.ppf(0.975, 2) * pd.Series([100 * v for v in ACCURACIES["kernel_size=7"]]).std() * math.sqrt(1 + 1 / 3)
    assert "| kernel_size=7 | | 72.0 | 71.0 | " in markdown.replace("|  |", "| |")
    assert (f"71.88; not contradicted by our runs (p = {adjusted[1]:.3f}; only a difference over {half:.1f} points could "
            "have been seen) |") in markdown
    assert f"58.59; beyond one run of ours, p = {adjusted[2]:.3f} |" in markdown if adjusted[2] < 0.05 else "58.59; not contradicted" in markdown
    assert "Holm-adjusted over the 4 settings compared" in markdown
    assert "parallel speed-up of" in markdown


@pytest.mark.slow
def test_a_run_stopped_and_resumed_gives_no_speed_up_and_says_why(tmp_path):
    root = _constructed_run(tmp_path)
    store = RunStore(str(tmp_path), "constructed")
    spec = next(s for s in plan("seed", repeats=3) if s.setting == "regularizer=l2")
    history = [{"phase": "train", "epoch": e, "loss": 1.0, "accuracy": 0.7, "val_accuracy": 0.7, "val_loss": 1.0, "seconds": 10.0}
               for e in (1, 2, 3)]
    result = TrialResult("ok", history, test_accuracy=0.7, per_class_accuracy=[0.7] * 3, confusion_matrix=[[40, 2, 1]] * 3,
                         trainable_params=5, total_params=5, train_seconds=30.0, images_per_second=100.0,
                         resumed_from_epoch=2).summarize_history()
    start = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)  # two hours after the other trials' last end, 40 s after 0:00
    store.write_trial(trial_row(spec, result, status="ok", data="synthetic", device="CPU x1", node="n", start_time=start,
                                end_time=start + timedelta(seconds=12)), history)
    markdown = (build_report(str(root)).out_dir / "report.md").read_text()
    assert "a parallel speed-up of" not in markdown
    assert (f"in more than one sitting: {2 * 3600 - 60:.0f}s of it with no trial running (pauses of 10 minutes or more), "
            "and 1 trial resumed from a checkpoint") in markdown
    assert "| 30.0 | 12.0 (resumed at epoch 2) |" in markdown


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: (root / "empty").mkdir(), "is not a beanlib run (no run.json)"),
        (lambda root: (root / "empty" / "runA").mkdir(parents=True) or (root / "empty" / "runA" / "run.json").write_text("{}"),
         "no finished trial yet"),
    ],
)
def test_bad_folders_get_a_one_line_error(tmp_path, setup, message):
    setup(tmp_path)
    target = tmp_path / "empty" / ("runA" if "no finished" in message else "")
    with pytest.raises(BeanlibError, match=re.escape(message)) as caught:
        build_report(str(target).rstrip("/"))
    assert "\n" not in str(caught.value)


def test_the_results_root_instead_of_a_run_names_the_runs(tmp_path):
    _constructed_run(tmp_path)
    with pytest.raises(BeanlibError, match=r"it holds runs constructed: pass one, e.g. .*/constructed"):
        build_report(str(tmp_path))
    assert json.loads((tmp_path / "constructed" / "run.json").read_text())["study"] == "seed"


@pytest.mark.slow
def test_diverged_and_failed_runs_are_counted_apart_and_never_crash_the_report(tmp_path):
    root = _constructed_run(tmp_path)
    store = RunStore(str(tmp_path), "constructed")
    specs = plan("seed", repeats=3)
    # a fourth kernel_size=7 result would be a different seed: instead make repeat 0 diverge (no accuracy)
    k7 = next(s for s in specs if s.setting == "kernel_size=7" and s.repeat == 0)
    store.write_trial(trial_row(k7, TrialResult("diverged", [], trainable_params=5, total_params=5), status="diverged",
                                data="synthetic"), [])
    for spec in (s for s in specs if s.config.model == "inception"):  # a whole family without a single accuracy
        store.write_trial(trial_row(spec, None, status="error", error="RuntimeError: boom", data="synthetic"), [])
    lost = next(s for s in specs if s.setting == "regularizer=l2" and s.repeat == 1)  # its node lost mid-trial
    store.write_trial(trial_row(lost, None, status="environment", error="NodeDiedError: gone", data="synthetic"), [])
    report = build_report(str(root))
    summary = report.summary.set_index("setting")
    assert (summary.loc["kernel_size=7", "n"], summary.loc["kernel_size=7", "failed"]) == (2, 1)
    assert summary.loc["kernel_size=7", "test_accuracy"] == pytest.approx(72.0)  # (73 + 71) / 2, the NaN left out
    assert (summary.loc["top-2-blocks", "n"], summary.loc["top-2-blocks", "failed"]) == (0, 3)
    markdown = (root / "report" / "report.md").read_text()
    kernel_verdict = next(line for line in markdown.splitlines() if line.startswith("chosen on validation: **kernel_size"))
    assert "kernel_size=7 against kernel_size=5: +10.5 points" in kernel_verdict  # the diverged run is no NaN in a test
    assert "| inception |" not in markdown  # no chosen Inception-v3 row without an accuracy
    assert "inception: no setting ran in full: nothing to choose." in markdown
    assert markdown.count("RuntimeError: boom") == 12
    assert "1 of them (status environment) were stopped by their surroundings" in markdown


def test_rows_outside_the_current_plan_are_left_out_and_named(tmp_path):
    root = _constructed_run(tmp_path)
    stale = plan("seed", overrides={"epochs": 7})[0]  # same setting, other defaults: another trial id
    RunStore(str(tmp_path), "constructed").write_trial(trial_row(stale, _one_result(0.1), status="ok", data="synthetic"), [])
    report = build_report(str(root))
    assert report.summary.set_index("setting").loc["kernel_size=3", "n"] == 3
    assert "**Left out**: 1 trial rows are not in the run's current plan" in (root / "report" / "report.md").read_text()


def _one_result(acc):
    return TrialResult("ok", [], test_accuracy=acc, best_val_accuracy=acc, val_accuracy=acc, val_loss=1.0, per_class_accuracy=[acc] * 3,
                       confusion_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]], trainable_params=5, total_params=5, train_seconds=1.0)


def test_each_inception_row_names_its_base_and_a_file_is_labelled_a_stand_in(tmp_path):
    import hashlib

    weights = tmp_path / "my_base.weights.h5"
    weights.write_bytes(b"pretend weights")
    store = RunStore(str(tmp_path), "filebase")
    overrides = {"weights": str(weights), "image_size": 128}
    store.check_manifest({"study": "inception", "data": "synthetic", "repeats": 1, "per_class": None, "overrides": overrides})
    for spec in plan("inception", overrides=overrides):
        store.write_trial(trial_row(spec, _one_result(0.7), status="ok", data="synthetic"), [])
    report = build_report(str(tmp_path / "filebase"))
    digest = hashlib.sha256(b"pretend weights").hexdigest()
    assert set(pd.read_parquet(tmp_path / "filebase" / "trials")["weights_sha256"]) == {digest}
    label = f"file my_base.weights.h5 (sha256 {digest[:12]}): a stand-in for ImageNet's weights"
    assert set(report.summary["base"]) == {label}
    markdown = (tmp_path / "filebase" / "report" / "report.md").read_text()
    assert f"**Inception-v3 base**: {label}. Its rows stand beside the original's ImageNet numbers" in markdown
    assert markdown.count(f"| {label} |") == 4  # the base column of the inception table, one per variant


def test_early_stopping_shows_epochs_run_against_planned_and_the_compute_saved(tmp_path):
    store = RunStore(str(tmp_path), "early")
    overrides = {"early_stop": 3, "epochs": 20}
    store.check_manifest({"study": "lenet-full", "data": "synthetic", "repeats": 1, "per_class": None, "overrides": overrides})
    specs = plan("lenet-full", overrides=overrides)[:4]
    for spec, run in zip(specs, (8, 10, 20, 6)):  # three stopped early, one ran its 20 epochs
        result = _one_result(0.7)
        result.history = [{"phase": "train", "epoch": e, "loss": 1.0, "accuracy": 0.7, "val_loss": 1.0,
                           "val_accuracy": 0.7, "seconds": 1.0} for e in range(1, run + 1)]
        result.epochs_planned, result.stop_reason = 20, "early_stop" if run < 20 else "completed"
        store.write_trial(trial_row(spec, result, status="ok", data="synthetic"), result.history)
    build_report(str(tmp_path / "early"))
    markdown = (tmp_path / "early" / "report" / "report.md").read_text()
    assert ("Early stopping (patience 3 epochs on validation loss, best weights kept): 3 of 4 trials stopped early; "
            "they ran 44 of 80 planned epochs, 45% of the epoch compute saved.") in markdown
    assert "| 8/20 |" in markdown and "| 20/20 |" in markdown


def test_pruned_trials_are_listed_apart_and_left_out_of_the_statistics(tmp_path):
    store = RunStore(str(tmp_path), "asha")
    store.check_manifest({"study": "seed", "data": "synthetic", "repeats": 3, "per_class": None, "overrides": {}})
    for spec in (s for s in plan("seed", repeats=3) if s.setting in ("kernel_size=3", "kernel_size=7")):
        if spec.setting == "kernel_size=7" and spec.repeat == 2:
            history = [{"phase": "train", "epoch": e, "loss": 1.0, "accuracy": 0.4, "val_loss": 1.0, "val_accuracy": 0.35,
                        "seconds": 1.0} for e in (1, 2)]
            result = TrialResult("pruned", history, stop_reason="pruned", epochs_planned=20).summarize_history()
            store.write_trial(trial_row(spec, result, status="pruned", data="synthetic"), history)
        else:
            store.write_trial(trial_row(spec, _one_result(0.7 + 0.01 * spec.repeat), status="ok", data="synthetic"), [])
    report = build_report(str(tmp_path / "asha"))
    k7 = report.summary.set_index("setting").loc["kernel_size=7"]
    assert (k7["n"], k7["pruned"], k7["failed"]) == (2, 1, 0) and k7["test_accuracy"] == pytest.approx(70.5)
    markdown = (tmp_path / "asha" / "report" / "report.md").read_text()
    assert "## Pruned trials" in markdown and "left out of every mean, interval and verdict" in markdown
    assert "| 2/20 | 35.0 |" in markdown and "| oom |" not in markdown
    # kernel_size=7 lost a run to ASHA: its mean is over the survivors, marked, and kept out of the choice and tests
    assert "| 70.5 (survivors only) |" in markdown
    assert "left out: kernel_size=7 (ASHA pruned some of their runs, so their means are survivors-only)" in markdown


@pytest.mark.slow
def test_a_full_factorial_reports_its_main_effects_and_interactions(tmp_path):
    """lenet-full's report tests main effects and two-way interactions with seed blocks: here kernel size moves test
    accuracy by 8 points per step and nothing else matters."""
    import numpy as np

    rng = np.random.default_rng(0)
    store = RunStore(str(tmp_path), "full")
    store.check_manifest({"study": "lenet-full", "data": "synthetic", "repeats": 2, "per_class": None, "overrides": {}})
    for spec in plan("lenet-full", repeats=2):
        acc = round(0.62 + 0.04 * (spec.config.kernel_size - 5) + rng.normal(0, 0.01), 3)
        result = TrialResult("ok", [], test_accuracy=acc, val_accuracy=acc, val_loss=1 - acc, best_val_accuracy=acc,
                             per_class_accuracy=[acc] * 3, confusion_matrix=[[40, 2, 1], [3, 38, 2], [1, 1, 40]],
                             trainable_params=5, total_params=5, train_seconds=1.0)
        store.write_trial(trial_row(spec, result, status="ok", data="synthetic"), [])
    markdown = (build_report(str(tmp_path / "full")).out_dir / "report.md").read_text()
    line = next(line for line in markdown.splitlines() if line.startswith("chosen on validation: **k7/"))
    assert "main effects and two-way interactions (seed-blocked linear model, HC3-robust type-II F-tests, Holm over its 6 effects" in line
    assert re.search(r"beyond the noise: kernel_size \(F = [\d.]+, p = 0\.\d{3}\)$", line), line


def test_a_users_settings_are_listed_with_the_numbers_in_their_names_in_order(tmp_path):
    """Settings outside the original's table keep their numbers' order (e2, e3, e10; a search's point 2 before point
    10), not the alphabet's."""
    from beanlib.studies import Factor, Study
    from beanlib.tables import summarize

    study = Study("numbered", "three epoch budgets", {"model": "lenet", "image_size": 32},
                  (Factor("budget", tuple((f"e{e}", {"epochs": e}) for e in (10, 2, 3))),))
    rows = [trial_row(spec, _one_result(0.5 + i / 100), status="ok", data="synthetic") for i, spec in enumerate(plan(study))]
    assert list(summarize(pd.DataFrame(rows))["setting"]) == ["e2", "e3", "e10"]
