"""The Parquet contract: schema, atomic writes, one row per trial however often it is written, the run manifest."""

import json
from datetime import datetime, timezone

import pandas as pd
import pyarrow.parquet as pq
import pytest

from beanlib.errors import BeanlibError
from beanlib.results import EPOCH_SCHEMA, TRIAL_SCHEMA, RunStore
from beanlib.rows import provenance, trial_row
from beanlib.studies import plan, search_spec, study_of_run
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
    assert store.read_trial(spec.trial_id, ["status", "test_accuracy"]) == {"status": "ok", "test_accuracy": 0.9}
    assert store.read_trial(plan("seed")[1].trial_id, ["status"]) is None
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


# --- one schema per run, ids from content -------------------------------------------------------

OLD_COLUMNS = ("early_stop", "stop_reason", "epochs_planned", "peak_rss_bytes")  # fields an older beanlib did not write


def _older_file(path, row: dict) -> None:
    """A trials file as an older beanlib wrote it: without the columns added since."""
    import pyarrow as pa

    schema = pa.schema([f for f in TRIAL_SCHEMA if f.name not in OLD_COLUMNS])
    pq.write_table(pa.Table.from_pylist([row], schema=schema), path)


def _readers_columns(folder) -> dict[str, list[str]]:
    """The columns each plain reader sees when it reads a whole folder of Parquet files."""
    import duckdb
    import pyarrow.dataset as ds

    return {"pandas": list(pd.read_parquet(folder).columns),
            "pyarrow.dataset": ds.dataset(folder, format="parquet").schema.names,
            "duckdb": [d[0] for d in duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet')").description]}


def test_a_run_mixing_schemas_is_upgraded_so_that_every_reader_sees_every_column(tmp_path):
    from beanlib.studies import trial_id_of_row

    store = RunStore(str(tmp_path), "run1")
    specs = plan("seed")
    store.write_trial(_row(specs[0], 0.6), _result(0.6).history)  # the current schema
    old = {**_row(specs[1], 0.7), "run": "run1"}
    _older_file(tmp_path / "run1" / "trials" / f"{specs[1].trial_id}.parquet", old)
    # before: a plain reader takes the first file's schema for the folder: the older file's columns win
    assert not set(OLD_COLUMNS) & set(pd.read_parquet(tmp_path / "run1" / "trials").columns)
    changes = store.upgrade(trial_id_of_row)
    assert changes == [f"trial {specs[1].trial_id}: current schema"]
    for reader, columns in _readers_columns(tmp_path / "run1" / "trials").items():
        assert columns == TRIAL_SCHEMA.names, reader
    trials = pd.read_parquet(tmp_path / "run1" / "trials").set_index("trial_id")
    assert trials.loc[specs[1].trial_id, "test_accuracy"] == 0.7 and pd.isna(trials.loc[specs[1].trial_id, "stop_reason"])
    assert trials.loc[specs[0].trial_id, "stop_reason"] == "completed"  # the current file kept its values
    assert store.upgrade(trial_id_of_row) == []  # done once: nothing left to change


def test_a_trial_keyed_by_a_weights_path_gets_its_content_id_and_keeps_its_epochs(tmp_path):
    import hashlib

    from beanlib.studies import trial_id_of_row

    weights = tmp_path / "base.weights.h5"
    weights.write_bytes(b"pretend weights")
    digest = hashlib.sha256(b"pretend weights").hexdigest()
    by_path = {"weights": str(weights), "image_size": 128}
    store = RunStore(str(tmp_path), "old")
    store.check_manifest({"study": "inception", "data": "/data", "repeats": 1, "overrides": by_path},
                         weights_sha256={str(weights): digest})
    spec = plan("inception", overrides=by_path)[0]
    history = _result(0.8).history
    for path_id in ("inception-0ld1d00001", "inception-0ld1d00002"):  # as an older beanlib keyed it (by path), twice:
        row = {**_row(spec, 0.8), "trial_id": path_id}                # the file moved between two resumes
        store._write_table("epochs", path_id, [{"run": "old", "trial_id": path_id, **e} for e in history], EPOCH_SCHEMA)
        store._write_table("trials", path_id, [{**row, "run": "old"}], TRIAL_SCHEMA)
    weights.rename(tmp_path / "moved.weights.h5")  # upgrading needs the file's content, not the file
    changes = store.upgrade(trial_id_of_row)
    assert store.manifest()["overrides"]["weights"] == f"sha256:{digest}"
    assert f"trial inception-0ld1d00001: id from content, now {spec.trial_id}" in changes
    trials, epochs = (pd.read_parquet(tmp_path / "old" / kind) for kind in ("trials", "epochs"))
    assert list(trials["trial_id"]) == [spec.trial_id] and set(epochs["trial_id"]) == {spec.trial_id} and len(epochs) == 2
    assert sorted(p.name for p in (tmp_path / "old" / "trials").iterdir()) == [f"{spec.trial_id}.parquet"]
    # the second row of the same trial is kept aside, not lost and not counted
    assert (tmp_path / "old" / "superseded" / "trials" / "inception-0ld1d00002.parquet").is_file()
    # and the run's plan, from run.json alone, names the same trial
    manifest = store.manifest()
    assert {s.trial_id for s in plan(manifest["study"], overrides=manifest["overrides"])} == {s.trial_id for s in plan("inception", overrides={**by_path, "weights": f"sha256:{digest}"})}
    assert spec.trial_id in {s.trial_id for s in plan(manifest["study"], overrides=manifest["overrides"])}
    assert store.upgrade(trial_id_of_row) == []


def test_every_committed_run_reads_whole_and_matches_its_plan():
    """The reference runs under results/ (those git tracks; a run in progress beside them is not one): every column
    for every plain reader, and exactly the trials of the run's plan, so that a resume re-runs nothing."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files", "results/*/run.json"], cwd=repo, capture_output=True, text=True).stdout
    runs = sorted((repo / line).parent for line in tracked.split())
    assert runs, "no committed runs found"
    for run in runs:
        for kind, schema in (("trials", TRIAL_SCHEMA), ("epochs", EPOCH_SCHEMA)):
            for reader, columns in _readers_columns(run / kind).items():
                assert columns == schema.names, f"{run.name}/{kind} via {reader}: the schema changed since it was " \
                    f"committed: run `python -m jobs.report --results results/{run.name}` (it upgrades the run) and commit it"
        store = RunStore(str(run.parent), run.name)
        manifest = store.manifest()
        study = study_of_run(manifest)
        if study.search is None:
            planned = {s.trial_id for s in plan(study, repeats=manifest["repeats"], overrides=manifest["overrides"])}
        else:  # a search's plan is its budget of points, in the order its searcher suggested them
            points = json.loads((run / "search.json").read_text())["points"]
            assert len(points) == study.search.points(manifest["repeats"]), run.name
            planned = {search_spec(study, values, r, overrides=manifest["overrides"], per_class=manifest["per_class"]).trial_id
                       for values in points for r in range(manifest["repeats"])}
        assert set(pd.read_parquet(run / "trials")["trial_id"]) == planned, run.name
        assert "/" not in json.dumps(manifest["overrides"]), run.name  # known by content, not by a path
