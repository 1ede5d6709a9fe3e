"""What a trial computes, as a version: a tiny trial's history pinned per version, stale rows flagged and retrained."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from beanlib import backend, semantics
from beanlib.data import load_beans
from beanlib.train import run_trial

PINNED_CONFIG = {"model": "lenet", "image_size": 32, "epochs": 3, "batch_size": 8, "seed": 5, "regularizer": "dropout"}
# (loss, val_loss) per epoch of PINNED_CONFIG on synthetic beans (32px, 6 per class), one thread, for the current
# SEMANTICS, per backend. A change in what a trial computes (data order, initialisation, a layer) moves them by
# 1e-2 or more; machines (AVX2 or AVX-512, thread pools) move them by far less than TOLERANCE.
PINNED = {
    1: {
        "tensorflow": [(1.113432765007019, 1.1030714511871338), (1.0749611854553223, 1.1062567234039307),
                       (1.115485668182373, 1.1040759086608887)],
        "jax": [(1.093719720840454, 1.100437045097351), (1.090633749961853, 1.1015595197677612),
                (1.1062434911727905, 1.1028974056243896)],
    },
}
TOLERANCE = 1e-4  # relative
PINNED_TRIAL = f"""
import json
from beanlib.data import load_beans
from beanlib.train import run_trial
result = run_trial({PINNED_CONFIG!r}, load_beans("synthetic", 32, per_class=6), cpus=1)
print(json.dumps([[r["loss"], r["val_loss"]] for r in result.history]))
"""


def _history(backend_name: str) -> list[tuple[float, float]]:
    """The pinned trial in a fresh process (its backend and one thread fixed from the start)."""
    env = {**__import__("os").environ, "KERAS_BACKEND": backend_name}
    done = subprocess.run([sys.executable, "-c", PINNED_TRIAL], capture_output=True, text=True, check=True, env=env)
    return [tuple(pair) for pair in json.loads(done.stdout.strip().splitlines()[-1])]


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["tensorflow", "jax"])
def test_a_tiny_trials_history_is_pinned_for_the_current_semantics(backend_name):
    """Fails when what trials compute changes: bump beanlib.semantics.SEMANTICS, then pin the new history here."""
    if backend_name == "jax":
        pytest.importorskip("jax")
    assert semantics.SEMANTICS in PINNED, f"no history pinned for semantics v{semantics.SEMANTICS}: pin it here"
    got = [value for pair in _history(backend_name) for value in pair]
    pinned = [value for pair in PINNED[semantics.SEMANTICS][backend_name] for value in pair]
    assert got == pytest.approx(pinned, rel=TOLERANCE), (
        "what a trial computes changed: bump beanlib.semantics.SEMANTICS (with a line in HISTORY) and pin the new "
        "history, so that runs mixing the old and the new code are flagged")


def test_a_changed_data_order_moves_the_pinned_history_far_beyond_the_tolerance(monkeypatch):
    """The pin can fail: the same trial with another epoch order lands outside it."""
    order = backend.epoch_order
    monkeypatch.setattr(backend, "epoch_order", lambda count, seed, epoch: order(count, None if seed is None else seed + 1, epoch))
    result = run_trial(PINNED_CONFIG, load_beans("synthetic", 32, per_class=6), cpus=1)
    got = [(r["loss"], r["val_loss"]) for r in result.history]
    pinned = PINNED[semantics.SEMANTICS]["tensorflow"]
    worst = max(abs(a - b) / abs(b) for g, p in zip(got, pinned) for a, b in zip(g, p))
    assert worst > 30 * TOLERANCE


def test_old_commits_are_dated_by_git_ancestry():
    """Rows from before the column get the version of the commit that trained them (where git can tell)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(["git", "cat-file", "-e", "054e1b1e"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout with beanlib's history: commits cannot be dated here")
    assert semantics.of_commit("054e1b1e") == 0  # before the epoch-seeded data order
    assert semantics.of_commit(head + "+dirty") == semantics.SEMANTICS
    assert semantics.of_commit("0" * 40) is None and semantics.of_commit("unknown") is None


ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_stale_rows_are_flagged_and_retrain_stale_replaces_them_with_nothing_duplicated(local_ray, tmp_path, monkeypatch):
    """Rows that older code wrote (here: relabelled semantics 0) are named on resume and kept; --retrain-stale
    trains them again, sets the old rows aside in superseded/, and leaves one row per trial."""
    from beanlib import studies
    from beanlib.results import RunStore
    from beanlib.studies import Factor, Study
    from beanlib.sweep import SweepOptions, run_sweep

    two = Study("two", "two LeNets", {"model": "lenet", "image_size": 32, "epochs": 1, "batch_size": 8},
                (Factor("kernel_size", (("kernel_size=3", {"kernel_size": 3}), ("kernel_size=5", {"kernel_size": 5}))),),
                per_class=3)
    monkeypatch.setitem(studies.STUDIES, "two", two)
    opts = SweepOptions(study="two", data="synthetic", results=str(tmp_path), keep_models="none")
    run_sweep(opts, out=lambda line: None)
    store = RunStore(str(tmp_path), "two")
    first = pd.read_parquet(tmp_path / "two" / "trials").set_index("trial_id")
    assert (first["semantics"] == semantics.SEMANTICS).all()
    old = first.index[0]
    row = store._read_file(f"{store.path}/trials/{old}.parquet").to_pylist()[0]
    store._write_table("trials", old, [{**row, "semantics": 0}], store._read_file(f"{store.path}/trials/{old}.parquet").schema)

    lines: list[str] = []
    assert run_sweep(opts, out=lines.append).ran == 0
    assert any(line.startswith("warning: 1 finished trial(s)") and "--retrain-stale" in line for line in lines)

    again = run_sweep(SweepOptions(**{**opts.__dict__, "retrain_stale": True}), out=lines.append)
    assert again.ran == 1 and again.failed == 0
    trials = pd.read_parquet(tmp_path / "two" / "trials")
    assert trials["trial_id"].is_unique and len(trials) == 2 and (trials["semantics"] == semantics.SEMANTICS).all()
    aside = pd.read_parquet(tmp_path / "two" / "superseded" / "trials")
    assert list(aside["trial_id"]) == [old] and list(aside["semantics"]) == [0]
    assert (tmp_path / "two" / "superseded" / "epochs" / f"{old}.v0.parquet").exists()
    assert run_sweep(SweepOptions(**{**opts.__dict__, "retrain_stale": True}), out=lines.append).ran == 0
