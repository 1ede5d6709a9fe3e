"""A study's search: its declaration refused in one line when wrong, a TPE search on synthetic data that keeps its
budget across a stop, never trains a finished trial twice, and reports what a search needs."""

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest

from beanlib import studies  # noqa: F401 (studies before studyfile: the built-ins are read by the loader)
from beanlib.errors import BeanlibError
from beanlib.studyfile import parse_study

SEARCH = """\
name: tpe-tiny
description: learning rate and kernel size of a small LeNet, searched
base: {model: lenet, image_size: 32, epochs: 2, batch_size: 8}
repeats: 2
per_class: 6
search:
  algorithm: tpe
  trials: 6
  startup: 2
  space:
    learning_rate: {loguniform: [1.0e-4, 3.0e-2]}
    kernel_size: {choice: [3, 5]}
"""


def test_a_search_file_declares_its_space_budget_and_sampler():
    study = parse_study(SEARCH, "tpe.yaml")
    assert study.factors == () and study.search.algorithm == "tpe" and study.search.points(study.repeats) == 3
    assert [(d.field, d.kind, d.values) for d in study.search.space] == [
        ("learning_rate", "loguniform", (1e-4, 3e-2)), ("kernel_size", "choice", (3, 5))]
    distributions = study.search.distributions()
    assert distributions["learning_rate"].log and distributions["kernel_size"].choices == (3, 5)


@pytest.mark.parametrize("change, line, message", [
    ("{loguniform: [1.0e-4, 3.0e-2]}", None, None),
    ("{uniform: [0.03, 0.001]}", 11, "low 0.03 is not below high 0.001"),
    ("{loguniform: [0.0, 0.01]}", 11, "a log range must lie above zero"),
    ("{gaussian: [0.0, 0.01]}", 11, "give one of uniform, loguniform, int, choice"),
    ("{int: [1, 2.5]}", 11, "must be [low, high] (integers)"),
])
def test_a_bad_range_is_one_line_naming_the_file_line_and_key(change, line, message):
    text = SEARCH.replace("{loguniform: [1.0e-4, 3.0e-2]}", change)
    if message is None:
        parse_study(text, "tpe.yaml")
        return
    with pytest.raises(BeanlibError) as caught:
        parse_study(text, "tpe.yaml")
    assert str(caught.value).startswith(f"tpe.yaml:{line}: search.space.learning_rate") and message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("old, new, message", [
    ("algorithm: tpe", "algorithm: hyperband", "unknown algorithm 'hyperband': use one of tpe, random"),
    ("trials: 6", "trials: 5", "must be a multiple of repeats (2)"),
    ("kernel_size: {choice: [3, 5]}", "image_size: {choice: [32, 64]}", "image_size cannot be searched"),
    ("kernel_size: {choice: [3, 5]}", "kernel_size: {choice: [3, 0]}", "kernel_size must be a positive integer, got 0"),
    ("  startup: 2\n", "  metric: test_accuracy\n", "a search maximises val_accuracy"),
    ("    learning_rate: {loguniform: [1.0e-4, 3.0e-2]}\n", "", "holds 2 distinct points, and the budget buys 3"),
])
def test_a_bad_search_declaration_is_one_line(old, new, message):
    with pytest.raises(BeanlibError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        parse_study(SEARCH.replace(old, new), "tpe.yaml")
    assert str(caught.value).startswith("tpe.yaml:") and "\n" not in str(caught.value)


def test_an_unknown_algorithm_is_one_error_line_from_the_command(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SEARCH.replace("algorithm: tpe", "algorithm: bayes"))
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", "--study", str(path), "--data", "synthetic",
                           "--results", str(tmp_path / "r"), "--dry-run"], capture_output=True, text=True)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: {path}:7: search.algorithm: unknown algorithm 'bayes': use one "
                                                "of tpe, random"]
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_tpe_search_stopped_part_way_finishes_its_budget_without_training_a_trial_twice_and_reports(local_ray, tmp_path):
    """Ctrl+C as the third trial ends (one point complete, one half done), then the same command: the budget of 6
    trials is met, the half-done point's finished seed is not trained again, and a third run trains nothing. Rows
    carry the sampled values and their point; the report has the points, importance and the best-so-far curve."""
    from beanlib.report import build_report
    from beanlib.sweep import SweepOptions, run_sweep

    path = tmp_path / "tpe.yaml"
    path.write_text(SEARCH)
    run = tmp_path / "r" / "tpe-tiny"
    lines = []

    def out(line):
        lines.append(line)
        finished = sum(line.startswith("trial ") for line in lines)
        if line.startswith("trial ") and finished == 3 and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            os.kill(os.getpid(), signal.SIGINT)

    opts = SweepOptions(study=str(path), data="synthetic", results=str(tmp_path / "r"), max_concurrent=1)
    first = run_sweep(opts, out=out)
    before = pd.read_parquet(run / "trials")
    assert first.missing > 0 and 3 <= len(before) < 6 and lines[-1].startswith("resume: run the same command again")
    lines.clear()
    second = run_sweep(opts, out=lines.append)
    third = run_sweep(opts, out=lines.append)
    # ASHA prunes a searched trial as it does a grid's; a pruned seed completes its point
    asha = tmp_path / "asha.yaml"
    asha.write_text(SEARCH.replace("name: tpe-tiny", "name: asha").replace("epochs: 2", "epochs: 4").replace("trials: 6", "trials: 4"))
    pruning = SweepOptions(study=str(asha), data="synthetic", results=str(tmp_path / "r"), scheduler="asha")
    run_sweep(pruning, out=lambda line: None)
    again = run_sweep(pruning, out=lambda line: None)
    pruned = pd.read_parquet(tmp_path / "r" / "asha" / "trials")
    assert len(pruned) == 4 and set(pruned["status"]) <= {"ok", "pruned"} and again.ran == 0
    assert set(pruned.loc[pruned["status"] == "pruned", "epochs_run"]) <= {2}
    trials = pd.read_parquet(run / "trials")
    trained = [line for line in lines if line.startswith("trial ")]
    assert len(trials) == 6 and trials["trial_id"].is_unique and set(trials["status"]) == {"ok"}
    assert len(trained) == 6 - len(before), trained  # each trial trained once, across both sittings
    assert second.missing == 0 and third.ran == 0
    kept = trials.set_index("trial_id").loc[before["trial_id"]]
    assert (kept["start_time"].values == before.set_index("trial_id")["start_time"].values).all()  # rows untouched
    points = json.loads((run / "search.json").read_text())["points"]
    assert len(points) == 3 and sorted(trials["point"]) == [0, 0, 1, 1, 2, 2]
    for _, row in trials.iterrows():
        assert points[row["point"]] == {"learning_rate": row["learning_rate"], "kernel_size": row["kernel_size"]}
        assert row["setting"] == f"point {row['point']}" and row["seed"] == row["repeat"]
    assert all(1e-4 <= v <= 3e-2 for v in trials["learning_rate"]) and set(trials["kernel_size"]) <= {3, 5}
    build_report(str(run))
    markdown = (run / "report" / "report.md").read_text()
    assert "## The search" in markdown and "A searched best is optimistic on validation" in markdown
    assert (run / "report" / "figures" / "best_so_far.png").is_file()
    assert (run / "report" / "figures" / "search_parameters.png").is_file()
    assert "came within 1 point of its final best validation accuracy" in markdown
    if trials.groupby("point")["val_accuracy"].mean().nunique() > 1:  # fANOVA needs points that differ
        assert "Parameter importance: Optuna's fANOVA over the 3 points" in markdown
