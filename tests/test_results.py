"""The Parquet contract: schema, atomic writes, one row per trial however often it is written, the run manifest."""

from datetime import datetime, timezone

import pandas as pd
import pyarrow.parquet as pq
import pytest

from beanlib.errors import BeanlibError
from beanlib.results import EPOCH_SCHEMA, TRIAL_SCHEMA, RunStore, provenance, trial_row
from beanlib.studies import plan
from beanlib.train import TrialResult


def _result(accuracy: float) -> TrialResult:
    history = [{"phase": "train", "epoch": e, "loss": 1.0 / e, "accuracy": accuracy, "val_loss": 1.0,
                "val_accuracy": accuracy, "seconds": 0.5} for e in (1, 2)]
    return TrialResult(status="ok", history=history, test_accuracy=accuracy, test_loss=0.7,
                       per_class_accuracy=[1.0, 0.5, accuracy], confusion_matrix=[[1, 0, 0], [1, 1, 0], [0, 0, 1]],
                       trainable_params=10, total_params=12, train_seconds=1.0, data_fingerprint="abc")


def _row(spec, accuracy=0.5, status="ok"):
    now = datetime.now(timezone.utc)
    return trial_row(spec, _result(accuracy), status=status, data="synthetic", node="n1", device="CPU x1",
                     start_time=now, end_time=now, provenance=provenance())


def test_rows_round_trip_with_the_documented_columns(tmp_path):
    store = RunStore(str(tmp_path), "run1")
    specs = plan("seed")
    for spec in specs[:3]:
        store.write_trial(_row(spec), _result(0.5).history)
    trials = pd.read_parquet(tmp_path / "run1" / "trials")
    assert list(trials.columns) == TRIAL_SCHEMA.names and len(trials) == 3
    row = trials.set_index("trial_id").loc[specs[1].trial_id]
    assert (row["setting"], row["factor"], row["kernel_counts"], row["run"]) == ("baseline", "kernel_size,kernel_counts,regularizer", "6-16-120", "run1")
    assert list(row["confusion_matrix"][1]) == [1, 1, 0] and row["epochs_run"] == 2
    assert row["tensorflow_version"].startswith("2.") and row["python_version"].startswith("3.")
    epochs = pd.read_parquet(tmp_path / "run1" / "epochs")
    assert list(epochs.columns) == EPOCH_SCHEMA.names and len(epochs) == 6


def test_rewriting_a_trial_replaces_its_row_and_leaves_no_temporary_files(tmp_path):
    store = RunStore(str(tmp_path), "run1")
    spec = plan("seed")[0]
    store.write_trial(_row(spec, 0.4, "error"), [])
    store.write_trial(_row(spec, 0.9), _result(0.9).history)
    trials = pd.read_parquet(tmp_path / "run1" / "trials")
    assert len(trials) == 1 and trials.loc[0, "test_accuracy"] == 0.9 and trials.loc[0, "status"] == "ok"
    assert store.finished() == {spec.trial_id: "ok"}
    assert sorted(p.name for p in (tmp_path / "run1").rglob("*") if p.is_file()) == [f"{spec.trial_id}.parquet"] * 2


def test_readers_ignore_a_half_written_temporary_file(tmp_path):
    store = RunStore(str(tmp_path), "run1")
    spec = plan("seed")[0]
    store.write_trial(_row(spec), [])
    (tmp_path / "run1" / "trials" / f".{spec.trial_id}.parquet.dead.tmp").write_bytes(b"PAR1 half a file")
    assert len(pd.read_parquet(tmp_path / "run1" / "trials")) == 1
    assert len(pq.read_table(tmp_path / "run1" / "trials")) == 1
    assert len(store.read_table("trials")) == 1 and store.finished() == {spec.trial_id: "ok"}  # what the sweep reads


def test_an_empty_run_reads_as_no_rows(tmp_path):
    assert RunStore(str(tmp_path), "nothing").finished() == {}


def test_the_manifest_refuses_to_mix_different_runs(tmp_path):
    store = RunStore(str(tmp_path), "run1")
    store.check_manifest({"study": "seed", "data": "tfds", "overrides": {}})
    store.check_manifest({"study": "seed", "data": "tfds", "overrides": {}})  # the same options: resume
    with pytest.raises(BeanlibError, match="already holds a run with different overrides: .*new --name"):
        store.check_manifest({"study": "seed", "data": "tfds", "overrides": {"epochs": 3}})
    with pytest.raises(BeanlibError, match="already holds a run with different study"):
        store.check_manifest({"study": "inception", "data": "tfds", "overrides": {}})


def test_a_run_is_matched_by_content_not_by_where_its_inputs_lie(tmp_path):
    store = RunStore(str(tmp_path), "run1")
    weights = {"weights": "sha256:1111"}
    store.check_manifest({"study": "seed", "data": "/old/beans", "overrides": weights}, data_fingerprints={"64": "aaaa"},
                         weights_sha256={"/old/w.h5": "1111"})
    # the same content read from elsewhere resumes; the new places are recorded as provenance
    store.check_manifest({"study": "seed", "data": "/new/beans", "overrides": weights}, data_fingerprints={"64": "aaaa", "75": "bbbb"},
                         weights_sha256={"/new/w.h5": "1111"})
    manifest = store.manifest()
    assert manifest["data"] == "/new/beans" and manifest["data_fingerprints"] == {"64": "aaaa", "75": "bbbb"}
    assert manifest["weights_sha256"] == {"/old/w.h5": "1111", "/new/w.h5": "1111"}
    with pytest.raises(BeanlibError, match=r"different data content \(fingerprint\)"):
        store.check_manifest({"study": "seed", "data": "/old/beans", "overrides": weights}, data_fingerprints={"64": "cccc"})
    # other weights content (under any path) is another run
    with pytest.raises(BeanlibError, match="different overrides"):
        store.check_manifest({"study": "seed", "data": "/old/beans", "overrides": {"weights": "sha256:2222"}},
                             weights_sha256={"/old/w.h5": "2222"})


def test_more_repeats_extend_a_run(tmp_path):
    import json

    store = RunStore(str(tmp_path), "run1")
    store.check_manifest({"study": "seed", "data": "tfds", "repeats": 1})
    store.check_manifest({"study": "seed", "data": "tfds", "repeats": 3})
    store.check_manifest({"study": "seed", "data": "tfds", "repeats": 1})  # resuming with fewer keeps the larger plan
    assert json.loads((tmp_path / "run1" / "run.json").read_text())["repeats"] == 3
    # repeat 0 of a 3-repeat plan is the 1-repeat plan's trial: extending never re-runs it
    assert {s.trial_id for s in plan("seed")} <= {s.trial_id for s in plan("seed", repeats=3)}


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "_tmp"])
def test_bad_run_names_are_refused(tmp_path, name):
    with pytest.raises(BeanlibError, match="must be a plain folder name"):
        RunStore(str(tmp_path), name)


def test_a_failed_trial_row_has_its_config_and_no_metrics(tmp_path):
    spec = plan("inception")[1]
    row = trial_row(spec, None, status="oom", error="ResourceExhaustedError: OOM", data="tfds")
    store = RunStore(str(tmp_path), "run1")
    store.write_trial(row, [])
    got = pd.read_parquet(tmp_path / "run1" / "trials").iloc[0]
    assert got["status"] == "oom" and got["unfreeze_from"] == 249 and pd.isna(got["test_accuracy"])
    assert pd.isna(got["kernel_size"])  # the other family's fields are null, not zero
