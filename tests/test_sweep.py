"""The sweep on an embedded local Ray: every trial once in Parquet, an injected fault recorded, re-runs resume."""

import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from beanlib import scratch, studies  # noqa: E402
from beanlib.errors import BeanlibError  # noqa: E402
from beanlib.results import EPOCH_SCHEMA, TRIAL_SCHEMA  # noqa: E402
from beanlib.studies import Factor, Study  # noqa: E402
from beanlib.sweep import SweepOptions, run_sweep  # noqa: E402
from clusters import embedded_ray  # noqa: E402

pytestmark = pytest.mark.slow  # most tests here start a Ray sweep

TINY = Study(
    "tiny",
    "two LeNets and two Inception-v3 variants at 75px, one epoch, three images per class",
    {"model": "lenet", "image_size": 75, "epochs": 1, "batch_size": 8, "fine_tune_epochs": 1, "weights": "none"},
    (
        Factor("kernel_size", (("kernel_size=3", {"kernel_size": 3}), ("kernel_size=5", {"kernel_size": 5}))),
        Factor("inception", (("head-only", {"model": "inception"}), ("top-2-blocks", {"model": "inception", "unfreeze_from": 249}))),
    ),
    per_class=3,
)


@pytest.fixture
def tiny_study(monkeypatch):
    monkeypatch.setitem(studies.STUDIES, "tiny", TINY)
    return "tiny"


def test_sweep_records_every_trial_once_and_a_failure_without_stopping(local_ray, tiny_study, tmp_path):
    lines = []
    opts = SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path), inject_fault=("kernel_size=3",))
    summary = run_sweep(opts, out=lines.append)
    trials = pd.read_parquet(tmp_path / "tiny" / "trials")
    assert list(trials.columns) == TRIAL_SCHEMA.names
    assert len(trials) == 4 and trials["trial_id"].is_unique and summary.failed == 1
    by_setting = trials.set_index("setting")
    failed = by_setting.loc["kernel_size=3"]
    assert failed["status"] == "error" and "injected fault" in failed["error"] and failed["attempts"] == 2
    ok = trials[trials["setting"] != "kernel_size=3"]
    assert set(ok["status"]) == {"ok"} and ok["test_accuracy"].between(0, 1).all()
    assert (ok["data_fingerprint"].str.len() == 16).all() and (ok["node"] != "").all() and (ok["device"] == "CPU x1").all()
    tuned = by_setting.loc["top-2-blocks"]
    assert tuned["trainable_params"] == 13_216_131 and tuned["unfreeze_from"] == 249
    # the base features came from the sweep's one shared computation: said in the row, and not in its train seconds
    assert tuned["feature_source"] == "shared" and tuned["shared_feature_seconds"] >= 0
    assert pd.isna(by_setting.loc["kernel_size=5", "feature_source"])
    assert (ok["peak_rss_bytes"] > 100 * 2**20).all()  # a trial process holds at least its runtime and data
    epochs = pd.read_parquet(tmp_path / "tiny" / "epochs")
    assert list(epochs.columns) == EPOCH_SCHEMA.names
    phases = epochs[epochs["trial_id"] == tuned["trial_id"]].sort_values("epoch")
    assert list(zip(phases["phase"], phases["epoch"])) == [("head", 1), ("fine_tune", 2)]
    # Longest first (estimated_cost): the fine-tune takes one of the two first slots, the head-only trial comes last.
    assert tuned["start_time"] < by_setting.loc["head-only", "start_time"]
    assert by_setting.loc["head-only", "start_time"] == trials["start_time"].max()
    assert sum(line.startswith("trial ") for line in lines) == 4  # one progress line per finished trial

    # --only a finished setting runs nothing, and leaves the failed trial for a run without it.
    only = run_sweep(SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path), only=("head-only",)), out=lines.append)
    assert only.ran == 0 and only.failed == 0 and any("0 to run (--only head-only; 1 others wait for a run without it)" in line for line in lines)
    # The same command again: only the failed trial runs, and it still has exactly one row.
    again = run_sweep(SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path)), out=lines.append)
    assert again.ran == 1 and again.failed == 0
    trials = pd.read_parquet(tmp_path / "tiny" / "trials")
    assert len(trials) == 4 and set(trials["status"]) == {"ok"}
    assert (trials.set_index("trial_id").loc[ok["trial_id"], "start_time"] == ok.set_index("trial_id")["start_time"]).all()

    # A third time there is nothing left to run.
    assert run_sweep(SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path)), out=lines.append).ran == 0


def test_a_full_disk_stops_the_sweep_in_one_line_and_an_error_of_the_environment_is_not_the_trials(
        local_ray, tiny_study, monkeypatch, tmp_path):
    """The disk fills as the last trial's row is written: the sweep stops in one line that says what to do. A trial
    whose connection dropped is recorded as "environment", not retried now, and trained again with the rest when the
    same command runs again; the finished trial is kept as it was."""
    import errno

    from beanlib import results

    real = results.write_atomically

    def filling(fs, path, write):  # what a full disk does to the rows of the trial that runs last (head-only)
        if "/trials/" in path and last in path:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(fs, path, write)

    last = next(s.trial_id for s in studies.plan(TINY) if s.setting == "head-only")
    monkeypatch.setattr(results, "write_atomically", filling)
    lines = []
    # One trial at a time, longest first: both LeNets have their rows before head-only runs, however loaded the machine.
    opts = SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path), only=("kernel_size=3", "kernel_size=5", "head-only"),
                        inject_fault=("kernel_size=5:lost-connection",), max_concurrent=1)
    with pytest.raises(BeanlibError) as caught:
        run_sweep(opts, out=lines.append)
    message = str(caught.value)
    assert message.startswith(f"no space left on device: {tmp_path}/tiny is full") and "\n" not in message, message
    assert "the 3 trial(s) not finished" in message and "run the same command: it resumes" in message
    assert not (tmp_path / "tiny" / ".lease.json").exists()  # released: the next sweep needs no --force
    first = pd.read_parquet(tmp_path / "tiny" / "trials").set_index("setting")
    assert sorted(first.index) == ["kernel_size=3", "kernel_size=5"]
    lost = first.loc["kernel_size=5"]
    assert lost["status"] == "environment" and lost["attempts"] == 1 and lost["error"].startswith("ConnectionResetError")

    monkeypatch.setattr(results, "write_atomically", real)
    again = run_sweep(dataclasses.replace(opts, inject_fault=()), out=lines.append)  # the same command, with room
    assert again.ran == 2 and again.failed == 0
    trials = pd.read_parquet(tmp_path / "tiny" / "trials")
    assert len(trials) == 3 and trials["trial_id"].is_unique and set(trials["status"]) == {"ok"}
    assert trials.set_index("setting").loc["kernel_size=3", "start_time"] == first.loc["kernel_size=3", "start_time"]


def test_a_users_study_file_sweeps_resumes_and_reports_its_own_questions(local_ray, tmp_path):
    """--study FILE: its repeats and subsample apply, run.json records what it declared, the report names its factor
    and asks its contrasts (and shows no original's column: its settings only share the original's names), the same
    command resumes with nothing to run, and a changed declaration is a different study."""
    import json

    from beanlib.report import build_report

    path = tmp_path / "mine.yaml"
    path.write_text("""\
name: mine
description: kernel size on a small LeNet
base: {model: lenet, image_size: 32, epochs: 1, batch_size: 8}
repeats: 2
per_class: 3
factors:
  kernel_size:
    baseline: kernel_size=5
    settings: {kernel_size=3: {kernel_size: 3}, kernel_size=5: {kernel_size: 5}}
""")
    lines = []
    run_sweep(SweepOptions(study=str(path), data="synthetic", results=str(tmp_path / "r")), out=lines.append)
    run = tmp_path / "r" / "mine"
    trials = pd.read_parquet(run / "trials")
    assert len(trials) == 4 and set(trials["study"]) == {"mine"} and sorted(trials["repeat"]) == [0, 0, 1, 1]
    assert set(trials["per_class"]) == {3} and set(trials["status"]) == {"ok"}
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["repeats"] == 2 and manifest["study_file"]["factors"]["kernel_size"]["baseline"] == "kernel_size=5"
    build_report(str(run))
    markdown = (run / "report" / "report.md").read_text()
    assert "kernel_size=3 against kernel_size=5" in markdown and "### kernel_size" in markdown
    assert "original %" not in markdown and "## Factors\n" in markdown and "beside the original" not in markdown
    assert run_sweep(SweepOptions(study=str(path), data="synthetic", results=str(tmp_path / "r")), out=lines.append).ran == 0
    path.write_text(path.read_text().replace("kernel_size=5: {kernel_size: 5}}", "kernel_size=5: {kernel_size: 5}, k2: {kernel_size: 2}}"))
    with pytest.raises(BeanlibError, match="already holds a run with different study_file"):
        run_sweep(SweepOptions(study=str(path), data="synthetic", results=str(tmp_path / "r")), out=lines.append)


def test_a_users_factorial_study_file_runs_and_its_report_fits_the_crossed_fields(local_ray, tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("""\
name: grid
description: kernel size crossed with learning rate on a small LeNet
base: {model: lenet, image_size: 32, epochs: 1, batch_size: 8}
repeats: 2
per_class: 3
factorial:
  levels:
    kernel_size: {k3: {kernel_size: 3}, k5: {kernel_size: 5}}
    learning_rate: {fast: {learning_rate: 0.01}, slow: {learning_rate: 0.001}}
""")
    from beanlib.report import build_report

    run_sweep(SweepOptions(study=str(path), data="synthetic", results=str(tmp_path / "r")), out=lambda line: None)
    trials = pd.read_parquet(tmp_path / "r" / "grid" / "trials")
    assert len(trials) == 8 and sorted(set(trials["setting"])) == ["k3/fast", "k3/slow", "k5/fast", "k5/slow"]
    build_report(str(tmp_path / "r" / "grid"))
    markdown = (tmp_path / "r" / "grid" / "report" / "report.md").read_text()
    assert "main effects and two-way interactions (seed-blocked linear model, HC3-robust type-II F-tests, Holm over its 3 effects" in markdown


def test_a_sweep_stopped_by_ctrl_c_says_how_to_resume_and_the_same_command_resumes(local_ray, tiny_study, tmp_path):
    """Ctrl+C (SIGINT) as the first trial ends: Ray Tune ends the run and returns. The sweep says it stopped and how
    to resume, without Tune's "Resume experiment with: Tuner.restore(...)", and the same command runs what was left."""
    import logging
    import os
    import signal

    heard = []
    catch = logging.Handler()
    catch.emit = lambda record: heard.append(record.getMessage())
    loggers = [logging.getLogger(name) for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")]
    lines = []

    def out(line):
        lines.append(line)
        # only where Tune has put its own handler in place: the default one would end the test run
        if line.startswith("trial ") and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            os.kill(os.getpid(), signal.SIGINT)

    opts = SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path), only=("kernel_size=3", "kernel_size=5"),
                        max_concurrent=1)
    for logger in loggers:
        logger.addHandler(catch)
    try:
        summary = run_sweep(opts, out=out)
    finally:
        for logger in loggers:
            logger.removeHandler(catch)
    assert any(m.startswith("Stop signal received") for m in heard)  # Tune heard the stop
    assert not any("Tuner.restore" in m or "Failed to fetch metrics" in m for m in heard), heard
    assert summary.missing == 1 and summary.failed == 0
    assert lines[-2].startswith("tiny: stopped after") and "1 trial(s) unfinished" in lines[-2]
    assert lines[-1].startswith("resume: run the same command again")
    again = run_sweep(dataclasses.replace(opts, max_concurrent=None), out=lines.append)
    assert again.ran == 1 and again.missing == 0 and again.failed == 0
    trials = pd.read_parquet(tmp_path / "tiny" / "trials")
    assert sorted(trials["setting"]) == ["kernel_size=3", "kernel_size=5"] and trials["trial_id"].is_unique


def test_a_setting_the_study_does_not_have_is_refused_before_anything_is_written(tiny_study, tmp_path):
    with pytest.raises(BeanlibError, match=r"^--only kernel_size=9: study tiny has no such setting: use one of "
                                           r"kernel_size=3, kernel_size=5, head-only, top-2-blocks$"):
        run_sweep(SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path), only=("kernel_size=3", "kernel_size=9")),
                  out=lambda line: None)
    assert not (tmp_path / "tiny").exists()


def test_dry_run_prints_the_trial_table_and_writes_nothing(tiny_study, tmp_path):
    lines = []
    run_sweep(SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path), dry_run=True), out=lines.append)
    assert any("top-2-blocks" in line and "13,216,131" in line and "23,904,035" in line for line in lines)
    assert lines[-1] == "4 trials, 0 finished" and not any(tmp_path.iterdir())
    header, rows = lines[-6], lines[-5:-1]  # each id whole in its column, however long its model's name
    assert sorted(row[:header.index("factor")].rstrip() for row in rows) == sorted(s.trial_id for s in studies.plan(TINY))


def test_a_dead_worker_is_recorded_as_a_failed_trial(local_ray, tiny_study, tmp_path):
    """A worker process that dies mid-trial (its LeNet) is a failed row; the trial beside it is untouched."""
    opts = SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path), retries=0,
                        inject_fault=("kernel_size=5:crash",), only=("kernel_size=3", "kernel_size=5"))
    summary = run_sweep(opts, out=lambda line: None)
    trials = pd.read_parquet(tmp_path / "tiny" / "trials").set_index("setting")
    assert summary.failed == 1 and len(trials) == 2
    dead = trials.loc["kernel_size=5"]
    assert dead["status"] == "error" and dead["error"] and pd.isna(dead["test_accuracy"]) and dead["kernel_size"] == 5
    assert set(trials.drop(index="kernel_size=5")["status"]) == {"ok"}


GRID = Study(
    "grid",
    "twelve small LeNets, from learning rates that learn to ones that barely move: ASHA has something to prune",
    {"model": "lenet", "image_size": 48, "epochs": 10, "batch_size": 8},  # ASHA's rungs at epochs 2 and 6
    (Factor("lenet_grid", tuple((f"k{k}/lr={lr:g}", {"kernel_size": k, "learning_rate": lr})
                                for k in (3, 5) for lr in (3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5))),),
    per_class=8,
)


def test_asha_prunes_trailing_trials_records_them_and_a_rerun_keeps_them(local_ray, monkeypatch, tmp_path):
    monkeypatch.setitem(studies.STUDIES, "grid", GRID)
    opts = SweepOptions(study="grid", data="synthetic", results=str(tmp_path), scheduler="asha")
    summary = run_sweep(opts, out=lambda line: None)
    trials = pd.read_parquet(tmp_path / "grid" / "trials").set_index("trial_id")
    assert len(trials) == 12 and summary.failed == 0
    pruned, full = trials[trials["status"] == "pruned"], trials[trials["status"] == "ok"]
    assert len(pruned) >= 1 and len(full) >= 1, trials["status"].value_counts()
    assert (pruned["stop_reason"] == "pruned").all() and (pruned["epochs_run"] < 10).all() and pruned["test_accuracy"].isna().all()
    assert (full["epochs_run"] == 10).all() and full["test_accuracy"].notna().all()
    epochs = pd.read_parquet(tmp_path / "grid" / "epochs")
    assert (epochs.groupby("trial_id").size().loc[pruned.index] == pruned["epochs_run"]).all()  # its history so far

    again = run_sweep(opts, out=lambda line: None)  # a re-run runs nothing: pruned trials are finished rows
    assert again.ran == 0
    assert (pd.read_parquet(tmp_path / "grid" / "trials").set_index("trial_id").loc[pruned.index, "end_time"] == pruned["end_time"]).all()


def test_asha_is_refused_on_a_study_that_mixes_model_families(tiny_study, tmp_path):
    from beanlib.errors import BeanlibError

    with pytest.raises(BeanlibError, match="mixes LeNet and Inception-v3.*run one family per sweep"):
        run_sweep(SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path), scheduler="asha"), out=lambda line: None)
    assert not any(tmp_path.iterdir())


def test_the_jobs_runtime_env_wins_and_is_never_merged_twice(monkeypatch):
    import json

    from beanlib.preflight import runtime_env

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert runtime_env()["env_vars"] == {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    job = {"runtime_env": {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}, "working_dir": "gcs://x.zip"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert runtime_env()["env_vars"] == {"KERAS_BACKEND": "tensorflow"}


def test_a_moved_data_folder_and_weights_file_resume_with_nothing_rerun(local_ray, monkeypatch, tmp_path, jpeg_folder,
                                                                        pretrained_weights):
    """A run is known by its inputs' content: the same folder and weights file elsewhere find every trial finished."""
    import shutil

    study = Study("moved", "one LeNet and one Inception-v3 head at 75px, one epoch, on a tiny JPEG folder",
                  {"model": "lenet", "image_size": 75, "epochs": 1, "batch_size": 4},
                  (Factor("both", (("lenet", {}), ("head-only", {"model": "inception"}))),))
    monkeypatch.setitem(studies.STUDIES, study.name, study)
    first = tmp_path / "first"
    first.mkdir()
    shutil.move(jpeg_folder, first / "beans")
    shutil.copy(pretrained_weights, first / "base.weights.h5")

    def sweep(where):
        return run_sweep(SweepOptions(study="moved", data=str(where / "beans"), weights=str(where / "base.weights.h5"),
                                      results=str(tmp_path / "results")), out=lambda line: None)

    assert sweep(first).ran == 2
    ids = set(pd.read_parquet(tmp_path / "results" / "moved" / "trials")["trial_id"])
    shutil.move(first, tmp_path / "second")
    again = sweep(tmp_path / "second")
    assert again.ran == 0 and set(again.statuses) == ids and set(again.statuses.values()) == {"ok"}
    from beanlib.results import RunStore

    manifest = RunStore(str(tmp_path / "results"), "moved").manifest()
    assert manifest["data"] == str(tmp_path / "second" / "beans")  # where it was read from last: provenance
    assert manifest["overrides"]["weights"].startswith("sha256:")
    assert not (tmp_path / "results" / "moved" / "split.parquet").exists()  # the folder's own splits: none made

    # With the data, the base features and the weights check cached, a new run's driver never starts TensorFlow
    # (beanlib.backend.configure_when_needed): its trials run on this test's Ray, and the driver says what it loaded.
    driver = f"""
import sys
from beanlib import studies
from beanlib.studies import Factor, Study
from beanlib.sweep import SweepOptions, run_sweep
studies.STUDIES["moved"] = Study("moved", "", {study.base!r}, (Factor("both", {study.factors[0].settings!r}),))
summary = run_sweep(SweepOptions(study="moved", data={str(tmp_path / "second" / "beans")!r}, address={ray.get_runtime_context().gcs_address!r},
                                 weights={str(tmp_path / "second" / "base.weights.h5")!r}, results={str(tmp_path / "fresh")!r}), out=lambda line: None)
print("ran", summary.ran, "failed", summary.failed, "tensorflow", "tensorflow" in sys.modules, "keras", "keras" in sys.modules)
"""
    shown = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=300)
    assert shown.stdout.split()[-8:] == ["ran", "2", "failed", "0", "tensorflow", "False", "keras", "False"], shown.stderr[-2000:]


def test_a_five_class_folder_runs_end_to_end_with_its_class_names(local_ray, monkeypatch, tmp_path, five_classes_unsplit):
    """Five classes of PNGs in every mode, in a folder without splits: beanlib splits them, and the names reach the
    rows, the manifest and the report. (The same images in split folders load alike: tests/test_data.py.)"""
    from beanlib.models import parameter_counts
    from beanlib.report import build_report
    from beanlib.results import RunStore

    study = Study("shapes", "a LeNet and an Inception-v3 head on five classes of PNGs in every mode",
                  {"model": "lenet", "image_size": 75, "epochs": 1, "batch_size": 4, "weights": "none"},
                  (Factor("family", (("lenet", {}), ("head-only", {"model": "inception"}))),))
    monkeypatch.setitem(studies.STUDIES, study.name, study)
    names = ["circle", "leaf", "moon", "square", "star"]
    lenet = studies.plan(study)[0].config
    plan_lines = []
    run_sweep(SweepOptions(study="shapes", data=str(five_classes_unsplit), results=str(tmp_path), dry_run=True), out=plan_lines.append)
    assert any(f"{parameter_counts(lenet, 5)[0]:,}" in line for line in plan_lines if " lenet " in line)  # 5 logits
    summary = run_sweep(SweepOptions(study="shapes", data=str(five_classes_unsplit), results=str(tmp_path)), out=lambda line: None)
    assert summary.failed == 0
    trials = pd.read_parquet(tmp_path / "shapes" / "trials").set_index("setting")
    assert all(list(n) == names for n in trials["class_names"])
    assert all(len(m) == 5 and len(a) == 5 for m, a in zip(trials["confusion_matrix"], trials["per_class_accuracy"]))
    assert trials.loc["lenet", "total_params"] == parameter_counts(lenet, 5)[1]
    assert RunStore(str(tmp_path), "shapes").manifest()["classes"] == names
    split = pd.read_parquet(tmp_path / "shapes" / "split.parquet")  # the split beanlib made: which file went where
    assert len(split) == 30 and split.groupby("split").size().to_dict() == {"test": 5, "train": 20, "validation": 5}
    assert "made by beanlib" in RunStore(str(tmp_path), "shapes").manifest()["split"]
    markdown = (build_report(str(tmp_path / "shapes")).out_dir / "report.md").read_text()
    assert "(5 classes: circle, leaf, moon, square, star)" in markdown and "circle: " in markdown
    assert "original %" not in markdown  # the original study's numbers are beans' only


def test_data_that_would_not_fit_is_refused_with_the_figures_before_anything_is_written(monkeypatch, tiny_study, tmp_path):
    import psutil

    from beanlib.errors import BeanlibError

    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=2**10))  # 1 KiB free
    with pytest.raises(BeanlibError, match=r"the decoded images need 0\.0 GiB .* at 75px\) and this machine has 0\.0 GiB available: use --per-class"):
        run_sweep(SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path)), out=lambda line: None)
    assert not any(tmp_path.iterdir())


def test_data_larger_than_the_object_store_is_refused_before_any_trial(local_ray, monkeypatch, tiny_study, tmp_path):
    from beanlib import sweep
    from beanlib.errors import BeanlibError

    monkeypatch.setattr(sweep.ray, "cluster_resources", lambda: {"CPU": 2, "object_store_memory": 1024})
    with pytest.raises(BeanlibError, match=r"do not fit in Ray's object store \(0\.0 GiB\): start Ray with a larger --object-store-memory"):
        run_sweep(SweepOptions(study=tiny_study, data="synthetic", results=str(tmp_path)), out=lambda line: None)
    assert not any(tmp_path.iterdir())


RESUME = Study(
    "resume",
    "two LeNets with dropout, four epochs: one is killed at epoch 2 and resumes",
    {"model": "lenet", "image_size": 32, "epochs": 4, "batch_size": 4, "regularizer": "dropout", "reg_strength": 0.3},
    (Factor("kernel_size", (("kernel_size=3", {"kernel_size": 3}), ("kernel_size=5", {"kernel_size": 5}))),),
    per_class=6,
)


@pytest.fixture(scope="session")
def resumed_and_clean(tmp_path_factory):
    """The RESUME study twice: once with kernel_size=3's worker killed after epoch 2 (models: best), once not (all)."""
    embedded_ray()
    root = tmp_path_factory.mktemp("resume")
    studies.STUDIES["resume"] = RESUME
    before = set(Path(tempfile.gettempdir()).glob("beanlib-*"))
    try:
        run_sweep(SweepOptions(study="resume", data="synthetic", results=str(root / "killed"), checkpoint_seconds=0,
                               inject_fault=("kernel_size=3:crash@2",)), out=lambda line: None)
        run_sweep(SweepOptions(study="resume", data="synthetic", results=str(root / "clean"), checkpoint_seconds=0,
                               keep_models="all", fresh_workers=True), out=lambda line: None)
    finally:
        del studies.STUDIES["resume"]
    # What those sweeps left in the temporary folder: a checkpoint or model of a process that is gone (the killed
    # worker's checkpoint, until the next trial removes it: beanlib.scratch), or a model file of one of their trials.
    ids = set(pd.read_parquet(root / "killed" / "resume" / "trials")["trial_id"])
    TEMP_LEFT[:] = sorted(p.name for p in set(Path(tempfile.gettempdir()).glob("beanlib-*")) - before
                          if scratch.orphaned(p.name) or (p.name.startswith("beanlib-model-") and any(i in p.name for i in ids)))
    return root / "killed" / "resume", root / "clean" / "resume"


TEMP_LEFT: list[str] = []


def test_a_warm_worker_runs_its_next_trial_exactly_as_a_fresh_worker_does(resumed_and_clean, monkeypatch, tmp_path):
    """One trial at a time: both trials run in one worker process, one after the other. The second gives, epoch by
    epoch, the numbers it gave in a worker of its own (the clean sweep, --fresh-workers)."""
    _, clean = resumed_and_clean
    monkeypatch.setitem(studies.STUDIES, "resume", RESUME)
    run_sweep(SweepOptions(study="resume", data="synthetic", results=str(tmp_path), checkpoint_seconds=0, max_concurrent=1),
              out=lambda line: None)
    warm, fresh = (pd.read_parquet(run / "trials").set_index("trial_id") for run in (tmp_path / "resume", clean))
    assert warm["worker_pid"].nunique() == 1 and sorted(warm["worker_trial"]) == [1, 2]
    assert fresh["worker_pid"].nunique() == 2 and set(fresh["worker_trial"]) == {1}
    second = warm["worker_trial"].idxmax()
    epochs = {run: pd.read_parquet(run / "epochs").set_index("trial_id").loc[[second]].sort_values("epoch")
              for run in (tmp_path / "resume", clean)}
    metrics = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert (epochs[tmp_path / "resume"][metrics].to_numpy() == epochs[clean][metrics].to_numpy()).all()
    assert warm.loc[second, "test_accuracy"] == fresh.loc[second, "test_accuracy"]
    assert [list(r) for r in warm.loc[second, "confusion_matrix"]] == [list(r) for r in fresh.loc[second, "confusion_matrix"]]


def test_a_worker_killed_mid_trial_resumes_from_its_checkpoint_as_if_never_stopped(resumed_and_clean):
    killed, clean = resumed_and_clean
    rows = {run: pd.read_parquet(run / "trials").set_index("setting") for run in (killed, clean)}
    epochs = {run: pd.read_parquet(run / "epochs").sort_values(["trial_id", "epoch"]) for run in (killed, clean)}
    resumed = rows[killed].loc["kernel_size=3"]
    assert resumed["status"] == "ok" and resumed["resumed_from_epoch"] == 2
    assert rows[clean]["resumed_from_epoch"].isna().all() and pd.isna(rows[killed].loc["kernel_size=5", "resumed_from_epoch"])
    mine = epochs[killed][epochs[killed]["trial_id"] == resumed["trial_id"]]
    assert list(mine["epoch"]) == [1, 2, 3, 4]  # each epoch once: the killed attempt's epochs 1-2, the restart's 3-4
    # Weights, optimizer, dropout's seed state and the data order all came back: the same numbers as never stopping.
    metrics = ["loss", "accuracy", "val_loss", "val_accuracy"]
    uninterrupted = epochs[clean][epochs[clean]["trial_id"] == resumed["trial_id"]]
    assert (mine[metrics].to_numpy() == uninterrupted[metrics].to_numpy()).all()
    assert resumed["test_accuracy"] == rows[clean].loc["kernel_size=3", "test_accuracy"]
    # A finished trial's checkpoints are gone: disk holds checkpoints of running trials only.
    assert not list((killed / "tune").rglob("checkpoint_*")) and not list((clean / "tune").rglob("checkpoint_*"))
    # Nor does the temporary folder keep a checkpoint or model of theirs, the killed worker's included.
    assert TEMP_LEFT == []


def test_models_are_kept_as_the_option_says_and_named_in_their_rows(resumed_and_clean):
    import hashlib

    from beanlib.stats import winners

    killed, clean = resumed_and_clean
    for run, expected in ((killed, "best"), (clean, "all")):
        trials = pd.read_parquet(run / "trials")
        kept = set(trials.loc[trials["model_file"].notna(), "trial_id"])
        files = {p.name for p in (run / "models").iterdir()}
        assert files == {f"{t}.keras" for t in kept}
        assert kept == (set(trials["trial_id"]) if expected == "all" else set(winners(trials).values())) and len(kept) >= 1
        for _, row in trials[trials["model_file"].notna()].iterrows():
            payload = (run / row["model_file"]).read_bytes()
            assert len(payload) == row["model_bytes"] and hashlib.sha256(payload).hexdigest() == row["model_sha256"]


def test_tensorboard_shows_each_trials_curves_and_its_hyperparameters(resumed_and_clean):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, clean = resumed_and_clean
    trials = pd.read_parquet(clean / "trials").set_index("trial_id")
    for trial_id, row in trials.iterrows():
        (folder,) = {p.parent for p in (clean / "tune").rglob(f"{trial_id}/events.out.tfevents.*")}
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
        val = [e.value for e in events.Scalars("ray/tune/val_accuracy")]
        assert len(val) == 4 and val[-1] == pytest.approx(row["val_accuracy"])  # three epochs, then the final result
        content = events.PluginTagToContent("hparams")
        start = next(plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info for c in content.values()
                     if plugin_data_pb2.HParamsPluginData.FromString(c).HasField("session_start_info"))
        assert start.hparams["trial/kernel_size"].number_value == row["kernel_size"]
        assert start.hparams["trial/setting"].string_value == row["setting"]
        assert start.hparams["trial/regularizer"].string_value == "dropout" and start.hparams["trial/factor"].string_value == "kernel_size"


LOAD_AND_SCORE = """
import sys, numpy as np, keras
models = [keras.saving.load_model(path) for path in sys.argv[1:]]  # plain Keras: nothing of beanlib is imported to load them
assert not any(name.startswith("beanlib") for name in sys.modules)
from beanlib.data import load_beans
test = load_beans("synthetic", 32, per_class=6).test
print(*(repr(float(np.mean(np.argmax(m.predict(test.images, verbose=0), 1) == test.labels))) for m in models))
"""


@pytest.mark.parametrize("keras_backend", ["tensorflow", "jax"])
def test_a_kept_model_loads_in_a_fresh_process_and_scores_its_rows_test_accuracy(resumed_and_clean, keras_backend):
    import os
    import subprocess
    import sys

    _, clean = resumed_and_clean
    trials = pd.read_parquet(clean / "trials")
    done = subprocess.run([sys.executable, "-c", LOAD_AND_SCORE, *(str(clean / f) for f in trials["model_file"])],
                          capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": keras_backend}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [float(a) for a in done.stdout.splitlines()[-1].split()] == list(trials["test_accuracy"])


def test_predict_classifies_images_with_the_best_model_and_skips_a_corrupt_one(resumed_and_clean, beans_dir, tmp_path):
    import subprocess
    import sys

    from beanlib.stats import winners

    _, clean = resumed_and_clean
    images = [sorted((beans_dir / "test" / name).iterdir())[0] for name in ("angular_leaf_spot", "bean_rust", "healthy")]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "predictions.parquet"
    job = [sys.executable, "-m", "jobs.predict", "--run", str(clean)]
    done = subprocess.run([*job, "--out", str(out), *map(str, images), str(tmp_path / "broken.jpg")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]  # one image could not be read: said, and the others classified
    assert f"error: {tmp_path / 'broken.jpg'} could not be read as an image" in done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [line[0] for line in lines] == list(map(str, images))
    assert all(line[1] in ("angular_leaf_spot", "bean_rust", "healthy") and line[2].startswith("angular_leaf_spot=") for line in lines)
    written = pd.read_parquet(out)
    trials = pd.read_parquet(clean / "trials")
    assert list(written["file"]) == list(map(str, images)) and set(written["trial_id"]) == {winners(trials)["best"]}
    assert np.allclose(written["probabilities"].map(sum), 1) and (written["confidence"] == written["probabilities"].map(max)).all()

    for args, says in (([str(images[0]), "--model", "lenet-nope"], "has no trial 'lenet-nope'"),
                       ([str(images[0]), "--run", str(tmp_path / "nowhere")], "does not exist")):
        bad = subprocess.run([*job, *args], capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and says in bad.stderr, bad.stderr[-2000:]
        assert len(bad.stderr.strip().splitlines()) == 1


def test_tune_keeps_one_checkpoint_per_trial_and_a_failed_trial_resumes_from_it_on_the_next_sweep(local_ray, monkeypatch, tmp_path):
    """Ray Tune's CheckpointConfig(num_to_keep=1), as the README says: after three checkpointed epochs a dead trial
    (no retries left) has one checkpoint, its last; the same command run again resumes it from there."""
    from beanlib import checkpoint

    monkeypatch.setitem(studies.STUDIES, "resume", RESUME)
    opts = SweepOptions(study="resume", data="synthetic", results=str(tmp_path), checkpoint_seconds=0, retries=0,
                        inject_fault=("kernel_size=3:crash@3",))
    assert run_sweep(opts, out=lambda line: None).failed == 1
    (folder,) = list((tmp_path / "resume" / "tune").rglob("checkpoint_*"))  # epochs 1, 2 and 3 were checkpointed
    assert checkpoint.load(str(folder)).epoch == 3
    lines = []
    again = run_sweep(SweepOptions(study="resume", data="synthetic", results=str(tmp_path), checkpoint_seconds=0), out=lines.append)
    assert again.ran == 1 and again.failed == 0 and any("resume from the checkpoint of an earlier sweep" in line for line in lines)
    row = pd.read_parquet(tmp_path / "resume" / "trials").set_index("setting").loc["kernel_size=3"]
    assert row["status"] == "ok" and row["resumed_from_epoch"] == 3
    assert not list((tmp_path / "resume" / "tune").rglob("checkpoint_*"))
