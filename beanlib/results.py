"""The results contract: one Parquet file per trial under RESULTS/RUN/{trials,epochs}/, written atomically.

    RESULTS/RUN/run.json            what the run is (study, data, options): a re-run must match it
    RESULTS/RUN/trials/ID.parquet   one row per trial (TRIAL_SCHEMA)
    RESULTS/RUN/epochs/ID.parquet   one row per trial, phase and epoch (EPOCH_SCHEMA)
    RESULTS/RUN/models/ID.keras     a kept model (Keras 3 native format), named in its trial's row
    RESULTS/RUN/tune/               Ray Tune's experiments: its logs, TensorBoard events, running trials' checkpoints

Each file is written to a hidden temporary name and renamed into place, so a
killed process never leaves half a file, and readers (pandas, DuckDB, pyarrow
datasets all skip names starting with "." or "_") only ever see whole trials.
A trial's epochs file is written before its trials row: the row is the mark of
a finished trial. Re-writing a trial replaces its file: never two rows.
RESULTS may be a local path or any URI pyarrow's filesystems take (s3://, gs://).

One schema per run: every file of a run has the current TRIAL_SCHEMA or
EPOCH_SCHEMA (nulls where a field does not apply), so a plain reader that takes
the first file's schema for all (pandas, DuckDB) sees every column. A run
written by an older beanlib is brought to that contract by `RunStore.upgrade`
(the sweep and the report call it), one atomic file at a time.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from beanlib.errors import BeanlibError
from beanlib.semantics import SEMANTICS, of_commit
from beanlib.weights import weights_sha256

FINISHED = ("ok", "diverged", "pruned")  # statuses a re-run keeps; "error", "oom" and "environment" trials run again
RAN_IN_FULL = ("ok", "diverged")  # the report's statistics come from these; a pruned trial stopped part-way

_CONFIG_COLUMNS = [
    ("model", pa.string()),
    ("image_size", pa.int64()),
    ("epochs", pa.int64()),
    ("batch_size", pa.int64()),
    ("optimizer", pa.string()),
    ("learning_rate", pa.float64()),
    ("seed", pa.int64()),
    ("early_stop", pa.int64()),
    ("precision", pa.string()),
    ("kernel_size", pa.int64()),
    ("kernel_counts", pa.string()),  # "6-16-120": groupable, and TrialConfig.from_dict reads it back
    ("regularizer", pa.string()),
    ("reg_strength", pa.float64()),
    ("weights", pa.string()),
    ("unfreeze_from", pa.int64()),
    ("fine_tune_epochs", pa.int64()),
    ("fine_tune_learning_rate", pa.float64()),
    ("feature_cache", pa.bool_()),
    ("batchnorm", pa.string()),
]
CONFIG_COLUMNS = [name for name, _ in _CONFIG_COLUMNS]

TRIAL_SCHEMA = pa.schema(
    [
        ("run", pa.string()),
        ("trial_id", pa.string()),
        ("study", pa.string()),
        ("factor", pa.string()),  # comma-separated when a setting (the baseline) counts for several factors
        ("setting", pa.string()),
        ("repeat", pa.int64()),
        ("point", pa.int64()),  # a search's point (RUN/search.json's order); null in a grid's rows
        *_CONFIG_COLUMNS,
        ("weights_sha256", pa.string()),  # content hash of a weights file; null for imagenet, none and LeNet
        ("data", pa.string()),
        ("per_class", pa.int64()),
        ("status", pa.string()),  # ok, diverged, pruned (by ASHA), error, oom, environment (beanlib.errors)
        ("error", pa.string()),
        ("attempts", pa.int64()),
        ("train_loss", pa.float64()),
        ("train_accuracy", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("test_loss", pa.float64()),
        ("test_accuracy", pa.float64()),
        ("best_val_accuracy", pa.float64()),
        ("best_epoch", pa.int64()),
        ("per_class_accuracy", pa.list_(pa.float64())),  # in the label order of class_names
        ("confusion_matrix", pa.list_(pa.list_(pa.int64()))),  # rows: true class, columns: predicted
        ("test_predicted", pa.list_(pa.int64())),  # each test image's predicted label, in the test split's order
        ("test_confidence", pa.list_(pa.float64())),  # the probability given to that label
        ("test_labels", pa.list_(pa.int64())),  # each test image's true label (per-image correctness, for the verdicts)
        ("trainable_params", pa.int64()),
        ("total_params", pa.int64()),
        ("epochs_run", pa.int64()),
        ("epochs_planned", pa.int64()),
        ("stop_reason", pa.string()),  # completed, early_stop, diverged, stopped (by the caller), pruned (by ASHA)
        ("train_seconds", pa.float64()),  # fitting, plus feature_seconds (what this trial computed itself)
        ("feature_seconds", pa.float64()),
        ("images_per_second", pa.float64()),
        ("feature_source", pa.string()),  # Inception base features: computed (by this trial), shared (by the sweep), cache
        ("shared_feature_seconds", pa.float64()),  # "shared": the sweep's one computation, not in train_seconds
        ("peak_rss_bytes", pa.int64()),  # the trial process's peak resident memory while it ran this trial
        ("resumed_from_epoch", pa.int64()),  # the checkpoint's epoch the trial resumed from; null: ran from the start
        ("model_file", pa.string()),  # the kept model, relative to the run (models/ID.keras); null: not kept
        ("model_bytes", pa.int64()),  # size and sha256 of the .keras file the trial saved (kept while model_file is set)
        ("model_sha256", pa.string()),
        ("node", pa.string()),
        ("worker_pid", pa.int64()),  # the process that ran the trial on its node
        ("worker_trial", pa.int64()),  # which of that process's trials this was: 1 = a fresh worker, 2 on: reused
        ("device", pa.string()),
        ("backend", pa.string()),  # the Keras backend the trial ran on (tensorflow, jax)
        ("start_time", pa.timestamp("us", tz="UTC")),
        ("end_time", pa.timestamp("us", tz="UTC")),
        ("data_fingerprint", pa.string()),
        ("class_names", pa.list_(pa.string())),  # the data's classes in label order (null in rows from before: beans')
        ("beanlib_commit", pa.string()),
        ("semantics", pa.int64()),  # what the trial computes, as a version (beanlib.semantics): bumped when that changes
        ("tensorflow_version", pa.string()),
        ("keras_version", pa.string()),
        ("backend_version", pa.string()),  # of the backend's own package (jax, tensorflow)
        ("ray_version", pa.string()),
        ("python_version", pa.string()),
    ]
)

EPOCH_SCHEMA = pa.schema(
    [
        ("run", pa.string()),
        ("trial_id", pa.string()),
        ("phase", pa.string()),  # train (LeNet); head, fine_tune (Inception-v3)
        ("epoch", pa.int64()),  # counted across phases, from 1
        ("loss", pa.float64()),
        ("accuracy", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("seconds", pa.float64()),
    ]
)


SPLIT_SCHEMA = pa.schema([("item", pa.string()), ("class", pa.string()), ("split", pa.string())])  # RUN/split.parquet
SCHEMAS = {"trials": TRIAL_SCHEMA, "epochs": EPOCH_SCHEMA}
# run.json keys that say where inputs were read from, not what they are: a re-run may differ in them. A run is
# known by content: its overrides name a weights file by sha256, its data by `data_fingerprints` (per image size).
PROVENANCE = ("data", "weights_sha256")  # the latest data source; every path a weights file was read from -> sha256
MODELS = "models"  # RUN/models/ID.keras: the kept models (--keep-models)
SUPERSEDED = "superseded"  # RUN/superseded/{trials,epochs}/: a second finished row of one trial, set aside by upgrade
DAMAGED = "damaged"  # RUN/damaged/{trials,epochs}/: a trial's files, one of which could not be read (set_aside_damaged)


class RunStore:
    """One run's results folder (local path or URI): its manifest, trial rows and epoch rows."""

    def __init__(self, results: str, run: str):
        if not run or "/" in run or run.startswith((".", "_")):
            raise BeanlibError(f"run name {run!r} must be a plain folder name (no '/', not starting with '.' or '_')")
        self.uri = _absolute(results).rstrip("/") + "/" + run
        try:
            self.fs, self.path = pafs.FileSystem.from_uri(self.uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:
            raise BeanlibError(f"cannot use results location {results!r} ({error}): give a local path or an s3:// / gs:// URI") from None
        self.run = run

    def check_manifest(self, manifest: dict[str, Any], data_fingerprints: dict[str, str] | None = None,
                       weights_sha256: dict[str, str] | None = None) -> None:
        """Record what this run is; refuse to mix a different study, data or options into an existing run.

        Only `repeats` may change: more repeats extend the run with new seeds (the finished ones are kept).
        The run is matched by content: `manifest["overrides"]` names a weights file by "sha256:HEX", and
        `data_fingerprints` (image size -> fingerprint) must agree with those recorded (sizes not seen yet are
        added). Where the data and weights were read from (`data`, `weights_sha256`: path -> hash) is provenance:
        recorded, never compared, so a moved folder or file resumes the run.
        """
        existing = self.manifest() or {}
        fingerprints = {**existing.get("data_fingerprints", {}), **(data_fingerprints or {})}
        if existing:
            changed = sorted(k for k in set(existing) | set(manifest) if existing.get(k) != manifest.get(k)
                             and k not in ("repeats", "data_fingerprints", *PROVENANCE))
            known = existing.get("data_fingerprints", {})
            if any(known.get(size, value) != value for size, value in (data_fingerprints or {}).items()):
                changed.append("data content (fingerprint)")
            if changed:
                raise BeanlibError(
                    f"{self.uri} already holds a run with different {', '.join(changed)}: "
                    "re-run it with the same options to resume, or pass a new --name"
                )
            manifest = {**manifest, "repeats": max(existing.get("repeats", 1), manifest.get("repeats", 1))}
        manifest = {**manifest, "data_fingerprints": fingerprints,
                    "weights_sha256": {**existing.get("weights_sha256", {}), **(weights_sha256 or {})}}
        manifest = {k: v for k, v in manifest.items() if v or k not in ("data_fingerprints", "weights_sha256")}
        if manifest != existing:
            self.write_json("run.json", manifest)

    def manifest(self) -> dict[str, Any] | None:
        """run.json as a dict, or None when the run has none yet."""
        return self.read_json("run.json")

    def read_json(self, name: str) -> dict[str, Any] | None:
        """RUN/name (JSON) as a dict, or None when there is none."""
        path = f"{self.path}/{name}"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read())

    def upgrade(self, trial_id_of: Callable[[dict[str, Any]], str | None]) -> list[str]:
        """Bring a run written by an older beanlib to the current contract, in place; returns what it changed.

        - run.json: a weights file in `overrides` named by content ("sha256:HEX"), no longer by its path.
        - every trials and epochs file: the current schema (new columns null), so plain readers see them all.
        - every row from before `semantics`: the version its beanlib_commit had (beanlib.semantics.of_commit).
        - every trial keyed by `trial_id_of(row)` (its id from content; None: keep it): a trial whose id came from
          a path gets its content id, in its row, its epochs and both file names.
        Each file is replaced atomically and the steps are idempotent: an interrupted upgrade finishes on the next
        call. Two rows that turn out to be one trial (a weights file moved between two resumes) keep the first
        finished; the other is moved to RUN/superseded/, not deleted.
        """
        done: list[str] = []
        tables = {path: self._read_file(path) for path in self._files("trials")}
        rows = [(path, table.to_pylist()[0]) for path, table in tables.items()]
        manifest = self.manifest()
        weights = (manifest or {}).get("overrides", {}).get("weights")
        if weights and weights not in ("imagenet", "none") and not weights.startswith("sha256:"):
            # the hash run.json recorded, else the one every row read from that path recorded, else the file's
            known = {manifest.get("weights_sha256", {}).get(weights)} - {None} or \
                {row.get("weights_sha256") for _, row in rows if row.get("weights") == weights} - {None} or \
                ({weights_sha256(weights)} - {None})
            if len(known) == 1:
                sha = known.pop()
                manifest["overrides"]["weights"] = f"sha256:{sha}"
                manifest["weights_sha256"] = {**manifest.get("weights_sha256", {}), weights: sha}
                self.write_json("run.json", manifest)
                done.append(f"run.json: weights {weights} named by content, sha256:{sha[:12]}")
        keyed: set[str] = set()
        for path, row in sorted(rows, key=lambda item: (item[1].get("end_time") is None, str(item[1].get("end_time")))):
            old, new = row["trial_id"], trial_id_of(row) or row["trial_id"]
            epochs = self._read_file(f"{self.path}/epochs/{old}.parquet") if self._exists("epochs", old) else None
            if new in keyed:  # a second finished row of one trial
                self._set_aside(old)
                done.append(f"trial {old}: the same trial as {new}, finished earlier; set aside in {SUPERSEDED}/")
                continue
            keyed.add(new)
            stale = tables[path].schema != TRIAL_SCHEMA
            if "semantics" not in tables[path].schema.names:  # trained before rows recorded it: dated by its commit
                row = {**row, "semantics": of_commit(row.get("beanlib_commit"))}
            if epochs is not None and (new != old or epochs.schema != EPOCH_SCHEMA):
                rows = [{**e, "trial_id": new} for e in epochs.to_pylist()]
                self._write_table("epochs", new, pa.Table.from_pylist(rows, schema=EPOCH_SCHEMA))
            if new != old or stale:
                self._write_table("trials", new, pa.Table.from_pylist([{**row, "trial_id": new}], schema=TRIAL_SCHEMA))
            if new != old:
                self._delete("trials", old)
                self._delete("epochs", old)
                done.append(f"trial {old}: id from content, now {new}")
            elif stale:
                done.append(f"trial {old}: current schema")
        for path in self._files("epochs"):  # epochs of trials that have no row yet (or never will)
            if pq.read_schema(path, filesystem=self.fs) != EPOCH_SCHEMA:
                trial_id = path.rsplit("/", 1)[1][: -len(".parquet")]
                self._write_table("epochs", trial_id, self._read_file(path).to_pylist(), EPOCH_SCHEMA)
                done.append(f"epochs {trial_id}: current schema")
        return done

    def set_aside_damaged(self) -> list[str]:
        """Move every trial whose trials or epochs file cannot be read (a partial copy, a failing disk) into
        RUN/damaged/, both its files, kept and never deleted, so that readers see whole trials and the trial runs
        again on the next sweep; returns one line per damaged file."""
        lines = []
        for kind in SCHEMAS:
            for path in self._files(kind):
                try:
                    pq.read_table(path, filesystem=self.fs)
                except (pa.ArrowException, OSError) as error:
                    trial_id = path.rsplit("/", 1)[1][: -len(".parquet")]
                    self._set_aside(trial_id, folder=DAMAGED)
                    lines.append(f"{self.uri}/{kind}/{trial_id}.parquet cannot be read ({type(error).__name__}: "
                                 f"{(str(error).splitlines() or [''])[0][:120]}): moved with its trial's other file to "
                                 f"{self.uri}/{DAMAGED}/; trial {trial_id} runs again on the next sweep")
        return lines

    def damaged(self) -> list[str]:
        """The trials whose files were set aside as damaged (RUN/damaged/)."""
        found = self.fs.get_file_info(pafs.FileSelector(f"{self.path}/{DAMAGED}", recursive=True, allow_not_found=True))
        return sorted({i.base_name[: -len(".parquet")] for i in found if i.base_name.endswith(".parquet")})

    def write_model(self, trial_id: str, local_path: str) -> str:
        """Copy a trial's .keras file into RUN/models/ID.keras (atomically); returns that name, relative to the run."""
        name = f"{MODELS}/{trial_id}.keras"

        def copy(out) -> None:
            with open(local_path, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    out.write(block)

        self._write_stream(f"{self.path}/{name}", copy)
        return name

    def model_path(self, name: str) -> str:
        """Where a row's model_file lies (a local path, or a URI)."""
        return f"{self.uri}/{name}"

    def keep_models(self, kept: set[str]) -> list[str]:
        """Delete the model files of trials not in `kept` and clear their rows' model_file; returns those trials."""
        dropped = []
        for row in self.read_table("trials", columns=["trial_id", "model_file"]).to_pylist():
            if row["model_file"] and row["trial_id"] not in kept:
                path = f"{self.path}/{row['model_file']}"
                if self.fs.get_file_info(path).type == pafs.FileType.File:
                    self.fs.delete_file(path)
                table = self._read_file(f"{self.path}/trials/{row['trial_id']}.parquet")
                self._write_table("trials", row["trial_id"], [{**table.to_pylist()[0], "model_file": None}], TRIAL_SCHEMA)
                dropped.append(row["trial_id"])
        return dropped

    def write_split(self, rows) -> None:
        """RUN/split.parquet: which file (or item) went to which split, for a source that beanlib split itself."""
        table = pa.Table.from_pylist([dict(zip(SPLIT_SCHEMA.names, row)) for row in rows], schema=SPLIT_SCHEMA)
        self._write_parquet(f"{self.path}/split.parquet", table)

    def stale(self) -> dict[str, int | None]:
        """trial_id -> semantics version of every finished trial that the current code would compute differently
        (beanlib.semantics; None: not known)."""
        table = self.read_table("trials", columns=["trial_id", "status", "semantics"]).to_pylist()
        return {r["trial_id"]: r["semantics"] for r in table if r["status"] in FINISHED and r["semantics"] != SEMANTICS}

    def finished(self) -> dict[str, str]:
        """trial_id -> status of every trial with a row."""
        table = self.read_table("trials", columns=["trial_id", "status"])
        return dict(zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist()))

    def write_trial(self, row: dict[str, Any], epochs: Iterable[dict[str, Any]]) -> None:
        """Write one trial's epochs, then its row (the mark of a finished trial), each atomically. A finished row
        it replaces (a stale trial trained again: `stale`) is set aside in RUN/superseded/, never overwritten."""
        trial_id = row["trial_id"]
        if self._exists("trials", trial_id):
            old = self._read_file(f"{self.path}/trials/{trial_id}.parquet").to_pylist()[0]
            if old["status"] in FINISHED:
                self._set_aside(trial_id, f".v{old.get('semantics')}")
        epoch_rows = [{"run": self.run, "trial_id": trial_id, **e} for e in epochs]
        self._write_table("epochs", trial_id, pa.Table.from_pylist(epoch_rows, schema=EPOCH_SCHEMA))
        self._write_table("trials", trial_id, pa.Table.from_pylist([{**row, "run": self.run}], schema=TRIAL_SCHEMA))

    def read_table(self, kind: str, columns: list[str] | None = None) -> pa.Table:
        """All rows of `kind` ("trials" or "epochs"); empty with the right schema when there are none."""
        schema = SCHEMAS[kind]
        folder = f"{self.path}/{kind}"
        if self.fs.get_file_info(folder).type != pafs.FileType.Directory:
            return schema.empty_table().select(columns or schema.names)
        return pq.read_table(folder, filesystem=self.fs, schema=schema, columns=columns)

    def read_trial(self, trial_id: str, columns: list[str]) -> dict[str, Any] | None:
        """One trial's row (its own file, not the whole table), or None when it has none."""
        if not self._exists("trials", trial_id):
            return None
        rows = self._read_file(f"{self.path}/trials/{trial_id}.parquet", columns).to_pylist()
        return rows[0] if rows else None

    def _write_table(self, kind: str, trial_id: str, table: pa.Table | list[dict], schema: pa.Schema | None = None) -> None:
        if not isinstance(table, pa.Table):
            table = pa.Table.from_pylist(table, schema=schema)
        self._write_parquet(f"{self.path}/{kind}/{trial_id}.parquet", table)

    def _write_parquet(self, path: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self._write_bytes(path, sink.getvalue().to_pybytes())

    def write_json(self, name: str, value: dict) -> None:
        """Write RUN/name as JSON, atomically."""
        self._write_bytes(f"{self.path}/{name}", json.dumps(value, indent=1, sort_keys=True).encode())

    def _files(self, kind: str) -> list[str]:
        """The Parquet files of `kind` that readers see (no hidden temporary files)."""
        found = self.fs.get_file_info(pafs.FileSelector(f"{self.path}/{kind}", allow_not_found=True))
        return sorted(i.path for i in found if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not i.base_name.startswith((".", "_")))

    def _read_file(self, path: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(path, filesystem=self.fs, columns=columns)

    def _exists(self, kind: str, trial_id: str) -> bool:
        return self.fs.get_file_info(f"{self.path}/{kind}/{trial_id}.parquet").type == pafs.FileType.File

    def _delete(self, kind: str, trial_id: str) -> None:
        if self._exists(kind, trial_id):
            self.fs.delete_file(f"{self.path}/{kind}/{trial_id}.parquet")

    def _set_aside(self, trial_id: str, tag: str = "", folder: str = SUPERSEDED) -> None:
        """Move a trial's files out of what readers see, into RUN/{folder}/ (kept, not counted), as ID{tag}.parquet."""
        for kind in SCHEMAS:
            if self._exists(kind, trial_id):
                self.fs.create_dir(f"{self.path}/{folder}/{kind}", recursive=True)
                self.fs.move(f"{self.path}/{kind}/{trial_id}.parquet", f"{self.path}/{folder}/{kind}/{trial_id}{tag}.parquet")

    def _write_bytes(self, path: str, payload: bytes) -> None:
        self._write_stream(path, lambda out: out.write(payload))

    def _write_stream(self, path: str, write: Callable[[Any], None]) -> None:
        try:
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        except OSError as error:
            raise BeanlibError(f"cannot write results under {self.uri} ({error}): pass a writable --results") from None
        write_atomically(self.fs, path, write)


def write_atomically(fs: pafs.FileSystem, path: str, write: Callable[[Any], None]) -> None:
    """Write what `write(stream)` writes to `path` on `fs` whole or not at all: on a local or mounted filesystem a
    hidden temporary file renamed into place; on an object store a single upload, which is atomic already (a rename
    would copy). The folder must exist."""
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as out:
            write(out)
        return
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(tmp) as out:
            write(out)
        fs.move(tmp, path)
    except BaseException:
        fs.delete_file(tmp) if fs.get_file_info(tmp).type == pafs.FileType.File else None
        raise


def _absolute(results: str) -> str:
    """A URI stays as it is; a local path becomes absolute (Ray and pyarrow want absolute paths)."""
    return results if "://" in results else os.path.abspath(os.path.expanduser(results))
