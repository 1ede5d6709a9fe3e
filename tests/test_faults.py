"""Faults get one line: a replaced or tampered model, a damaged checkpoint, a damaged results file."""

import os
import subprocess
import sys

import numpy as np
import pytest

from beanlib.errors import BeanlibError
from beanlib.results import RunStore
from beanlib.rows import trial_row
from beanlib.studies import plan
from beanlib.train import TrialResult


def _run_with_model(root, model_path):
    """A run of one trial whose kept model is the .keras file at `model_path` (its sha256 in the row)."""
    import hashlib

    store = RunStore(str(root), "run")
    store.check_manifest({"study": "smoke", "data": "synthetic", "repeats": 1, "per_class": None, "overrides": {}})
    spec = plan("smoke")[0]
    result = TrialResult("ok", [], test_accuracy=0.5, val_accuracy=0.5, val_loss=1.0, per_class_accuracy=[0.5] * 3,
                         confusion_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]], trainable_params=5, total_params=5)
    row = trial_row(spec, result, status="ok", data="synthetic")
    row["model_file"] = store.write_model(spec.trial_id, str(model_path))
    row["model_sha256"] = hashlib.sha256(open(model_path, "rb").read()).hexdigest()
    store.write_trial(row, [])
    return root / "run", spec.trial_id


def _tiny_model(path, lambda_marker=None):
    """A 75px 3-class Keras model saved at `path`; with `lambda_marker`, a Lambda layer that creates that file when run."""
    import keras

    inputs = keras.Input((75, 75, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    if lambda_marker:
        x = keras.layers.Lambda(lambda t: (open(lambda_marker, "w").close(), t)[1])(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(path)
    return path


def test_a_replaced_model_file_is_refused_before_keras_reads_it(tmp_path):
    from beanlib.predict import choose_model

    run, trial_id = _run_with_model(tmp_path / "results", _tiny_model(tmp_path / "m.keras"))
    assert choose_model(str(run), trial_id).row["trial_id"] == trial_id
    model_file = run / "models" / f"{trial_id}.keras"
    model_file.write_bytes(model_file.read_bytes() + b"\0")  # one byte more: a partial copy, a failing disk, a swap
    with pytest.raises(BeanlibError, match="is not the one its trial saved") as caught:
        choose_model(str(run), trial_id)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_a_model_whose_lambda_runs_code_is_refused_in_one_line_and_its_code_never_runs(tmp_path):
    """A tampered model whose row was changed to match: Keras's safe mode refuses it, and jobs.predict says so in one
    error line, with no traceback and exit 2."""
    import hashlib

    marker = tmp_path / "code-ran"
    run, trial_id = _run_with_model(tmp_path / "results", _tiny_model(tmp_path / "m.keras"))
    _tiny_model(run / "models" / f"{trial_id}.keras", lambda_marker=str(marker))
    marker.unlink(missing_ok=True)  # building the model here ran the Lambda once
    store = RunStore(str(tmp_path / "results"), "run")
    table = store._read_file(f"{store.path}/trials/{trial_id}.parquet")
    row = {**table.to_pylist()[0], "model_sha256": hashlib.sha256((run / "models" / f"{trial_id}.keras").read_bytes()).hexdigest()}
    store._write_table("trials", trial_id, [row], table.schema)
    image = tmp_path / "leaf.png"
    from PIL import Image

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    done = subprocess.run([sys.executable, "-m", "jobs.predict", "--run", str(run), "--model", trial_id, str(image)],
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Keras refused to load the model file" in lines[0] and "Traceback" not in done.stderr
    assert not marker.exists()


def test_a_damaged_checkpoint_is_refused_so_the_trial_starts_over(tmp_path):
    from beanlib import checkpoint

    state = checkpoint.TrialState("train", 2, [{"epoch": 1}, {"epoch": 2}], {}, [np.ones(3)], [np.zeros(2)])
    checkpoint.save(str(tmp_path), state)
    assert checkpoint.load(str(tmp_path)).epoch == 2
    path = tmp_path / checkpoint.VARIABLES
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF  # one flipped byte inside the zip's data
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the sha256"):
        checkpoint.load(str(tmp_path))


def test_a_truncated_trials_file_is_set_aside_named_in_the_report_and_its_trial_is_missing_again(tmp_path):
    """A trials file cut short (a partial copy, a failing disk): the report reads the rest, names the trial, and the
    file is kept under RUN/damaged/ with its epochs, so that the trial runs again and nothing is lost."""
    from beanlib.report import build_report

    store = RunStore(str(tmp_path), "run")
    store.check_manifest({"study": "smoke", "data": "synthetic", "repeats": 1, "per_class": None, "overrides": {}})
    specs = plan("smoke")[:3]
    for spec in specs:
        result = TrialResult("ok", [{"phase": "train", "epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_accuracy": 0.5,
                                     "val_loss": 1.0, "seconds": 1.0}], test_accuracy=0.5, per_class_accuracy=[0.5] * 3,
                             confusion_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]], trainable_params=5, total_params=5).summarize_history()
        store.write_trial(trial_row(spec, result, status="ok", data="synthetic"), result.history)
    damaged = tmp_path / "run" / "trials" / f"{specs[1].trial_id}.parquet"
    original = damaged.read_bytes()
    damaged.write_bytes(original[: len(original) // 2])
    report = build_report(str(tmp_path / "run"))
    markdown = (report.out_dir / "report.md").read_text()
    assert f"**Damaged files**: the files of 1 trial(s) could not be read and were set aside in RUN/damaged/ (kept, not deleted): {specs[1].trial_id}" in markdown
    assert f"{specs[1].setting} (repeat 0)" in report.missing
    assert (tmp_path / "run" / "damaged" / "trials" / damaged.name).read_bytes() == original[: len(original) // 2]
    assert (tmp_path / "run" / "damaged" / "epochs" / damaged.name).exists()  # its epochs kept beside it
    assert sorted(store.finished()) == sorted(s.trial_id for s in (specs[0], specs[2]))
    assert store.set_aside_damaged() == []  # done once


@pytest.mark.slow
def test_the_sweep_names_a_damaged_file_in_one_line_and_plans_its_trial_again(tmp_path):
    from beanlib.sweep import SweepOptions, run_sweep

    store = RunStore(str(tmp_path), "smoke")
    spec = plan("smoke")[0]
    store.write_trial(trial_row(spec, None, status="ok", data="synthetic"), [])
    path = tmp_path / "smoke" / "trials" / f"{spec.trial_id}.parquet"
    path.write_bytes(path.read_bytes()[:10])
    lines = []
    summary = run_sweep(SweepOptions(study="smoke", data="synthetic", results=str(tmp_path), dry_run=True), out=lines.append)
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"{spec.trial_id}.parquet cannot be read" in warnings[0] and "runs again" in warnings[0]
    assert spec.trial_id not in summary.statuses and (tmp_path / "smoke" / "damaged" / "trials" / path.name).exists()


@pytest.mark.parametrize("error, status", [
    (OSError(28, "No space left on device"), "environment"),
    (OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device"), "environment"),  # pyarrow's
    (PermissionError(13, "Permission denied"), "environment"),
    (ConnectionResetError("reset by peer"), "environment"),
    ("ray.exceptions.NodeDiedError: the node is dead", "environment"),  # the text Ray gives for a trial's lost node
    (ValueError("shapes (3,) and (4,) do not match"), "error"),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB"), "oom"),  # JAX's XlaRuntimeError
    (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate"), "oom"),  # torch's
    (MemoryError(), "oom"),
])
def test_a_trials_failure_is_told_apart_as_out_of_memory_its_environments_or_its_own(error, status):
    from beanlib.errors import failure_status

    assert failure_status(error) == status


def test_a_full_disk_is_recognised_through_the_errors_raised_on_top_of_it():
    from beanlib.errors import no_space

    try:
        try:
            raise OSError(28, "No space left on device", "/r/trials/x.parquet")
        except OSError as error:
            raise BeanlibError("cannot write results") from None  # as RunStore words it, its cause hidden
    except BeanlibError as wrapped:
        assert no_space(wrapped)
    assert not no_space(BeanlibError("cannot write results (Permission denied)")) and not no_space(None)


def test_a_sweep_whose_writes_cannot_fit_is_refused_with_the_figures(tmp_path, monkeypatch):
    """Before training, the run's writes (kept models, checkpoints, Parquet) are weighed against the free space at
    --results: a sweep that keeps every model is refused in one line where one that keeps none fits."""
    import shutil
    from collections import namedtuple

    from beanlib import preflight

    specs, store = plan("smoke"), RunStore(str(tmp_path), "smoke")
    keep_all, keep_none = (preflight.space_needed(specs, keep, 2, 3) for keep in ("all", "none"))
    assert keep_all > keep_none > 0
    free = (keep_all + keep_none) // 2
    monkeypatch.setattr(shutil, "disk_usage", lambda path: namedtuple("usage", "total used free")(2 * free, free, free))
    with pytest.raises(BeanlibError) as caught:
        preflight.check_space(store, specs, "all", 2, 3)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}/smoke has {free / 2**20:,.0f} MB free, and the 12 trial(s) to run will write "
                              f"up to {keep_all / 2**20:,.0f} MB there") and "\n" not in message
    preflight.check_space(store, specs, "none", 2, 3)  # fits: no error
    assert not (tmp_path / "smoke").exists()  # nothing written by the check
