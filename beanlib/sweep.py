"""A study fanned out on Ray Tune, every finished trial written to Parquet, resumable. All Ray imports live here.

The Parquet results are the source of truth: a sweep plans its trials (stable
ids), skips those that already have a finished row, and runs the rest as one
Ray Tune experiment. Each trial reports per epoch to Tune and hands its final
row back to the driver, which writes it atomically (beanlib.results). So the
same command, run again after Ctrl-C, a killed driver or a lost node, runs only
what is unfinished, and no trial ever has two rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Callable

import ray
from ray import tune

from beanlib import backend, checkpoint, preflight, scratch
from beanlib.console import hide_native_logs, without_tunes_restore_hint
from beanlib.data import class_names, load_beans
from beanlib.errors import BeanlibError, failure_status, first_line, no_space
from beanlib.families import FAMILIES, family
from beanlib.lease import Lease
from beanlib.options import Progress, SweepOptions, SweepSummary  # noqa: F401 (SweepOptions: callers import it from here)
from beanlib.results import FINISHED, MODELS, RunStore, provenance, trial_row
from beanlib.stats import winners
from beanlib.studies import Study, TrialSpec, estimated_cost, find_study, hparams, plan, trial_id_of_row, trial_name
from beanlib.weights import weights_sha256


def run_sweep(opts: SweepOptions, out: Callable[[str], None] = print, progress: Progress | None = None) -> SweepSummary:
    """Plan the study, skip finished trials, run the rest on Ray Tune; returns a summary.

    `out` gets every line for the user; `progress` (beanlib.console.SweepConsole) the live count of trials.
    """
    study = find_study(opts.study)  # a built-in name, or a study file
    opts = dataclasses.replace(opts, study=study.name, repeats=opts.repeats or study.repeats)
    chosen = backend.choose(opts.backend)  # before Keras loads here; workers get it in $KERAS_BACKEND
    per_class = opts.per_class or study.per_class
    specs = [dataclasses.replace(s, per_class=per_class) for s in plan(study, repeats=opts.repeats, overrides=opts.overrides())]
    preflight.check_options(opts, specs)
    # The driver may decode images and check weights (TensorFlow), and needs no GPU for it: they are the trials'.
    # Put off until then: with data, features and weights check cached, the driver never starts TensorFlow.
    backend.configure_when_needed(use_gpu=False)
    for model, weights in sorted({(s.config.model, s.config.weights) for s in specs if family(s.config.model).pretrained_base}):
        family(model).check_weights(weights)  # a wrong weights file stops here, in one line, before anything is written
    if opts.keep_models not in KEEP_MODELS:
        raise BeanlibError(f"unknown --keep-models {opts.keep_models!r}: use one of {', '.join(KEEP_MODELS)}")
    store = RunStore(opts.results, opts.name or opts.study)
    if opts.dry_run:
        return _run(opts, study, specs, chosen, per_class, store, out, progress)
    lease = Lease(store, out)  # one driver per run: a second one refuses in one line
    lease.acquire(opts.force)
    try:
        return _run(opts, study, specs, chosen, per_class, store, out, progress)
    except Exception as error:  # a full disk, wherever a write met it (a row, a model, Tune's state): one line
        if not no_space(error):
            raise
        done = store.finished()
        rest = [s for s in specs if done.get(s.trial_id) not in FINISHED]
        raise BeanlibError(preflight.no_space_line(store, rest, opts.keep_models, len(class_names(opts.data)))) from None
    finally:
        lease.release()


def _run(opts: SweepOptions, study: Study, specs: list[TrialSpec], chosen: str, per_class: int | None, store: RunStore,
         out: Callable[[str], None], progress: Progress | None) -> SweepSummary:
    """The sweep once its plan is known and (unless a dry run) its lease held: bring the run up to date, train
    what is unfinished, keep the models chosen on validation, and sum up."""
    for line in store.set_aside_damaged():
        out(f"warning: {line}")
    if not opts.dry_run:
        for change in store.upgrade(trial_id_of_row):  # a run from an older beanlib: current schema, ids from content
            out(f"upgraded {store.run}: {change}")
    done = store.finished() if opts.dry_run else preflight.flag_stale(opts, store, specs, store.finished(), out)
    scope = [s for s in specs if not opts.only or s.setting in opts.only]  # what this sweep is to run
    todo = sorted((s for s in scope if done.get(s.trial_id) not in FINISHED), key=lambda s: -estimated_cost(s.config))
    if opts.dry_run:
        preflight.print_plan(specs, done, out, len(class_names(opts.data)))
        return SweepSummary(len(specs), 0, done)
    # Bad data fails here, before anything is written: decoded once, in the driver. Every planned size, finished or
    # not: the run is matched by the data's content (its fingerprint), wherever the folder lies now.
    sizes = sorted({s.config.image_size for s in specs})
    preflight.check_memory(opts.data, sizes, per_class)
    data = {size: load_beans(opts.data, size, per_class) for size in sizes}
    if todo:
        _connect(opts)
        _check_object_store(data)
        concurrency = opts.max_concurrent or int(ray.cluster_resources().get("CPU", 1) // opts.cpus_per_trial) or 1
        preflight.check_space(store, todo, opts.keep_models, min(len(todo), concurrency), len(class_names(opts.data)))
    carved = next(iter(data.values())).carved
    bases = sorted({s.config.weights for s in specs if family(s.config.model).pretrained_base})
    store.check_manifest(preflight.manifest(opts, chosen, per_class, data, study), data_fingerprints={str(size): d.fingerprint for size, d in data.items()},
                         weights_sha256={w: weights_sha256(w) for w in bases if weights_sha256(w)})
    if carved:
        store.write_split(carved)  # which file went where: the fingerprint guards it, this file shows it
    finished = sum(done.get(s.trial_id) in FINISHED for s in specs)
    out(f"{opts.study}: {len(specs)} trials planned, {finished} finished in {store.uri}, {len(todo)} to run"
        + (f" (--only {' '.join(opts.only)}; {len(specs) - finished - len(todo)} others wait for a run without it)" if opts.only else ""))
    started = time.perf_counter()
    if todo:
        if progress is not None:
            progress.start(len(todo), f"{opts.study}")
        try:
            _tune(opts, store, todo, data, out, progress)
        finally:
            if progress is not None:
                progress.stop()
    statuses = store.finished()
    if opts.retrain_stale:  # a stale row still there was not trained again (the sweep was stopped): not done
        still = store.stale()
        statuses = {t: "missing" if t in still else s for t, s in statuses.items()}
    if all(statuses.get(s.trial_id) in FINISHED for s in specs):
        checkpoint.drop(store, set(statuses))  # left by a driver that stopped between a row and its cleanup
        if opts.keep_models == "best":
            kept = winners(store.read_table("trials").to_pandas())
            dropped = store.keep_models(set(kept.values()))
            if kept:
                out("models kept (chosen on validation): " + ", ".join(f"{label} {trial}" for label, trial in kept.items())
                    + (f"; {len(dropped)} others removed" if dropped else "") + f", in {store.uri}/{MODELS}")
    summary = SweepSummary(len(specs), len(todo), {s.trial_id: statuses.get(s.trial_id, "missing") for s in scope},
                           time.perf_counter() - started)
    counts = {status: list(summary.statuses.values()).count(status) for status in sorted(set(summary.statuses.values()))}
    if summary.missing:  # Ray Tune ends its run on Ctrl+C (SIGINT) and returns: the trials it stopped have no row
        out(f"{opts.study}: stopped after {summary.wall_seconds:.0f}s with {summary.missing} trial(s) unfinished; trials by "
            f"status: {counts}; results in {store.uri}")
        out("resume: run the same command again; finished trials are kept, and a stopped trial continues from its "
            "last checkpoint")
        return summary
    out(f"{opts.study}: done in {summary.wall_seconds:.0f}s; trials by status: {counts}; results in {store.uri}")
    out(f"report: python -m jobs.report --results {store.uri}")
    return summary


def _connect(opts: SweepOptions) -> None:
    """Join (or start) the Ray cluster the options name, unless this process is connected already."""
    if not opts.verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's older reporter: at verbose=0 it prints nothing at all
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)  # a notice per start
        # Tune warns when frequent checkpoints make it save its experiment state often: at our sizes that is cheap.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not ray.is_initialized():
        # No address: RAY_ADDRESS (set by `ray job submit`) or else a new local Ray in this process. Workers get
        # the driver's choice of C++ log level (beanlib.console); their output reaches the console with --verbose.
        address = opts.address or os.environ.get("RAY_ADDRESS")
        if address:
            preflight.check_reachable(address)
        try:
            ray.init(address=opts.address, runtime_env=preflight.runtime_env(), configure_logging=False,
                     log_to_driver=opts.verbose, logging_level=logging.INFO if opts.verbose else logging.WARNING)
        except ConnectionError as error:  # it answers, but refuses this driver: a token, a Ray version
            if not address:
                raise
            raise BeanlibError(preflight.join_refused(address, error)) from None


def _check_object_store(data: dict) -> None:
    """Refuse decoded data larger than Ray's object store, where the trials read it, before any trial starts."""
    need = sum(d.split(s).images.nbytes + d.split(s).labels.nbytes for d in data.values() for s in ("train", "validation", "test"))
    capacity = ray.cluster_resources().get("object_store_memory", 0)
    if capacity and need > capacity:
        raise BeanlibError(f"the decoded images ({need / 2**30:.1f} GiB) do not fit in Ray's object store "
                           f"({capacity / 2**30:.1f} GiB): start Ray with a larger --object-store-memory, or use "
                           "--per-class or a smaller --image-size")


def _tune(opts: SweepOptions, store: RunStore, todo: list[TrialSpec], data: dict, out: Callable[[str], None],
          progress: Progress | None = None) -> None:
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    if not has_gpus and opts.gpus_per_trial is None and (opts.address or os.environ.get("RAY_ADDRESS")):
        out("no GPUs in the cluster right now: trials take CPUs only; on an autoscaling cluster whose GPU nodes are "
            "not up yet, pass --gpus-per-trial to request them")
    resources = _resources(opts, has_gpus)
    features = _shared_features(todo, data, resources, out)
    specs = {s.trial_id: s.to_dict() for s in todo}
    earlier = checkpoint.latest(store, set(specs))
    if earlier:
        out(f"{len(earlier)} trial(s) resume from the checkpoint of an earlier sweep: " + ", ".join(sorted(earlier)))
    context = {"run": store.run, "results": store.uri, "data": opts.data, "provenance": provenance(), "retries": opts.retries,
               "backend": backend.current(), "inject_fault": list(opts.inject_fault), "specs": specs, "earlier": earlier,
               "checkpoint_seconds": opts.checkpoint_seconds, "keep_models": opts.keep_models != "none"}
    # with_parameters puts data and features into Ray's object store once; every trial reads them from there.
    trainable = tune.with_parameters(
        tune.with_resources(_trainable, lambda config: resources[specs[config["trial"]["trial_id"]]["config"]["model"]]),
        data=data, features=features, context=context,
    )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    tuner = tune.Tuner(
        trainable,
        # specs travel in `context`; the config holds the trial id and, for TensorBoard's HParams view, its settings
        param_space={"trial": tune.grid_search([hparams(spec) for spec in specs.values()])},
        tune_config=tune.TuneConfig(max_concurrent_trials=opts.max_concurrent, scheduler=SCHEDULERS[opts.scheduler](todo),
                                    trial_name_creator=lambda trial: trial_name(specs[trial.config["trial"]["trial_id"]]),
                                    trial_dirname_creator=lambda trial: trial.config["trial"]["trial_id"],
                                    # Warm workers: a worker that finished a trial runs the next one that asks for the
                                    # same resources, with its runtime, imports and data already loaded (run_trial
                                    # starts each trial from Keras's blank state and frees it after: beanlib.backend).
                                    reuse_actors=not opts.fresh_workers),
        run_config=tune.RunConfig(
            name=f"tune-{stamp}",
            storage_path=f"{store.uri}/tune",  # Tune's own experiment state lives beside the Parquet
            failure_config=tune.FailureConfig(max_failures=opts.retries),  # crashed workers, lost nodes
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # a running trial's last checkpoint only
            callbacks=[_WriteResults(store, specs, opts.data, context["provenance"], out, progress)],
            verbose=1 if opts.verbose else 0,
        ),
    )
    # Under `ray job submit` the working directory is Ray's copy of the user's, which Ray may delete while the
    # job runs (another node's runtime-env cleanup on the same machine): nothing after this point needs it.
    cwd = _cwd()
    os.chdir(tempfile.gettempdir())
    try:
        with without_tunes_restore_hint():
            tuner.fit()
    except Exception as error:
        finished = store.finished()
        if any(finished.get(trial_id) is None for trial_id in specs):
            raise
        out(f"warning: Ray Tune failed after the run ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}); "
            "every trial has its row, so the sweep's results are complete")
    finally:
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)


def _cwd() -> str | None:
    """The working directory, or None when it was removed already."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


# ASHA's first rung (ours): two epochs, so that one noisy first epoch does not decide; a third survives each rung.
ASHA_GRACE_EPOCHS, ASHA_REDUCTION = 2, 3


def _asha(todo: list[TrialSpec]):
    """Ray Tune's ASHA on validation accuracy, by epoch (counted across Inception's phases)."""
    from ray.tune.schedulers import ASHAScheduler

    # max_t past the last epoch: ASHA stops a trial that reaches max_t, and the trial's last report (its row,
    # after the test evaluation) comes after its last epoch.
    return ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max", grace_period=ASHA_GRACE_EPOCHS,
                         reduction_factor=ASHA_REDUCTION, max_t=max(s.config.planned_epochs for s in todo) + 1)


SCHEDULERS: dict[str, Callable[[list[TrialSpec]], Any]] = {"fifo": lambda todo: None, "asha": _asha}

# --keep-models: which trials' trained models stay under RUN/models once the run is complete. "best": those
# `beanlib.stats.winners` chooses on validation; every trial saves its model until then, since the choice needs
# every row. "none" saves none.
KEEP_MODELS = ("best", "all", "none")


def _resources(opts: SweepOptions, has_gpus: bool) -> dict[str, dict[str, float]]:
    """Per-family trial resources: the given GPU share, else the default one on GPU clusters, else CPUs only."""
    def share(model: str) -> float:
        if opts.gpus_per_trial is not None:
            return opts.gpus_per_trial
        return family(model).gpu_share if has_gpus else 0.0  # the family's default (JAX caps memory at it: beanlib.backend)

    return {model: {"cpu": opts.cpus_per_trial, "gpu": share(model)} for model in FAMILIES}


def _shared_features(todo: list[TrialSpec], data: dict, resources: dict, out: Callable[[str], None]) -> dict:
    """Pretrained base features, computed once per (weights, size, data) in a Ray task, for every trial to share;
    read from this machine's cache instead where they are there (no worker to start, no model to build)."""
    from beanlib.features import cached_features, features_key

    wanted, features = {}, {}
    for spec in todo:
        c = spec.config
        if family(c.model).pretrained_base and c.feature_cache:
            wanted.setdefault(features_key(c, data[c.image_size]), spec)
    for key, spec in list(wanted.items()):
        if (found := cached_features(spec.config, data[spec.config.image_size])) is not None:
            features[key] = found
            del wanted[key]
    if features:
        out(f"base features: {len(features)} set(s) read from the cache, shared by the trials")
    if not wanted:
        return features
    compute = ray.remote(_compute_features)
    refs = {key: compute.options(num_cpus=resources[spec.config.model]["cpu"], num_gpus=resources[spec.config.model]["gpu"])
            .remote(spec.config.to_dict(), data[spec.config.image_size], resources[spec.config.model]["cpu"], backend.current())
            for key, spec in wanted.items()}
    started = time.perf_counter()
    for key, ref in refs.items():
        try:
            features[key] = ray.get(ref)
        except Exception as error:  # e.g. no network for the ImageNet weights: each trial then fails on its own, recorded
            out(f"base features for {wanted[key].setting} failed ({type(error).__name__}): its trials will compute their own")
    out(f"base features: {sum(key in features for key in refs)} set(s) computed once in {time.perf_counter() - started:.0f}s, shared by the trials")
    return features


def _compute_features(config: dict, data, cpus: float, backend_name: str):
    hide_native_logs()
    backend.choose(backend_name)
    from beanlib.train import prepare_features

    return prepare_features(config, data, cpus=max(1, int(cpus)))


_TRIALS_IN_THIS_WORKER = itertools.count(1)  # a worker process counts the trials it runs (Tune reuses workers)


def _trainable(config: dict, data: dict, features: dict, context: dict) -> None:
    """One Ray Tune trial: run it (with retries), report each epoch, and hand the final row to the driver."""
    hide_native_logs()  # before TensorFlow starts in this worker
    backend.choose(context["backend"])  # before Keras loads in this worker (also on a cluster that has other defaults)
    from beanlib.features import features_key
    from beanlib.train import run_trial

    spec = TrialSpec.from_dict(context["specs"][config["trial"]["trial_id"]])
    worker = (os.getpid(), next(_TRIALS_IN_THIS_WORKER))
    required = tune.get_context().get_trial_resources().required_resources
    cpus, gpu_share = max(1, int(required.get("CPU", 1))), required.get("GPU", 0) or 1.0
    gpu_ids = ray.get_gpu_ids()
    device = f"GPU {','.join(map(str, gpu_ids))}" if gpu_ids else f"CPU x{cpus}"
    node = f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:12]}"
    start = datetime.now(timezone.utc)
    trial_data = data[spec.config.image_size]
    shared = features.get(features_key(spec.config, trial_data)) if family(spec.config.model).pretrained_base else None
    resume = _resume_state(context["earlier"].get(spec.trial_id))
    # What a worker killed on this machine left in the temporary folder (a checkpoint being written, a model not yet
    # copied into the run) goes now. The model file is a name only until the trial ends.
    scratch.remove_orphans()
    model_file = scratch.path("model", f"-{spec.trial_id}.keras") if context["keep_models"] else None
    planned = spec.config.planned_epochs

    crash_at = next((int(f.rsplit("@", 1)[1]) for f in context["inject_fault"] if f.startswith(f"{spec.setting}:crash@")), None)

    def report(record: dict, saved: tune.Checkpoint | None = None) -> None:
        _report_epoch(record, planned, saved)
        if record["epoch"] == crash_at:
            marker = os.path.join(tune.get_context().get_trial_dir(), "injected-crash")
            if not os.path.exists(marker):  # once per trial: its restart (from a checkpoint or from zero) runs on
                open(marker, "w").close()
                os._exit(17)

    def report_checkpoint(record: dict, directory: str) -> None:
        report(record, tune.Checkpoint.from_directory(directory))

    result, status, error, attempts = None, "error", None, 0
    for attempts in range(1, context["retries"] + 2):
        try:
            if f"{spec.setting}:crash" in context["inject_fault"]:
                os._exit(17)
            if spec.setting in context["inject_fault"]:
                raise RuntimeError(f"injected fault in setting {spec.setting}")
            if f"{spec.setting}:lost-connection" in context["inject_fault"]:
                raise ConnectionResetError(f"injected: the connection of setting {spec.setting} was reset")
            result = run_trial(spec.config, trial_data, features=shared, cpus=cpus, use_gpu=bool(gpu_ids), gpu_share=gpu_share,
                               on_epoch=report, on_checkpoint=report_checkpoint,
                               checkpoint_seconds=context["checkpoint_seconds"], resume=resume, save_model=model_file)
            status, error = result.status, None
            if status in FINISHED:
                break
        except Exception as exc:  # recorded as the trial's row; the sweep goes on
            status, error, result = failure_status(exc), first_line(exc), None
            if status == "environment":  # a full disk, a lost connection: another attempt now meets the same
                break
    row = trial_row(spec, result, status=status, error=error, attempts=attempts, data=context["data"], node=node,
                    worker=worker, device=device, start_time=start, end_time=datetime.now(timezone.utc), provenance=context["provenance"])
    if result is not None and result.model_sha256:  # the model goes into the run's storage before its row is written
        try:
            row["model_file"] = RunStore(*context["results"].rsplit("/", 1)).write_model(spec.trial_id, model_file)
        except (OSError, BeanlibError) as exc:  # the storage refused it (full, read-only, gone): not the trial's doing
            row.update(status="environment", error=first_line(exc))
    if model_file and os.path.exists(model_file):
        os.remove(model_file)
    last = result.history[-1] if result and result.history else {"epoch": 0, "val_accuracy": 0.0}  # for a scheduler
    tune.report({"finished": 1, "status": status, "test_accuracy": row.get("test_accuracy"),
                 "epoch": last["epoch"], "val_accuracy": last["val_accuracy"],
                 "beanlib_row": json.dumps(row, default=str), "beanlib_epochs": json.dumps(result.history if result else [])})


def _report_epoch(record: dict, planned_epochs: int, saved: tune.Checkpoint | None = None) -> None:
    """Every epoch but the last goes to Tune as it ends, with the trial's checkpoint when one was taken (Tune
    stores it in the run's storage, keeps the latest, and hands it to the trial's restart). The last epoch arrives
    only with the final result, so a scheduler that stops the trial there finds it complete, not to be pruned."""
    if record["epoch"] < planned_epochs:
        tune.report({**record, "finished": 0}, checkpoint=saved)


def _resume_state(earlier: str | None) -> checkpoint.TrialState | None:
    """What this trial continues from: the checkpoint Tune restored after its worker died, else the last one an
    earlier sweep left for it (`earlier`, a path or URI), else None. One that cannot be read is skipped, said in the
    worker's log: the trial then starts over, which costs time but never mixes two runs."""
    saved = tune.get_checkpoint() or (tune.Checkpoint(earlier) if earlier else None)
    if saved is None:
        return None
    try:
        with saved.as_directory() as directory:
            return checkpoint.load(directory)
    except (ValueError, OSError) as error:
        logging.getLogger(__name__).warning("checkpoint %s not resumed (%s): the trial starts over", saved.path, error)
        return None


class _WriteResults(tune.Callback):
    """Driver side: writes each trial's Parquet the moment it finishes, and prints one line for it."""

    def __init__(self, store: RunStore, specs: dict[str, dict], data: str, prov: dict, out: Callable[[str], None],
                 progress: Progress | None = None):
        self.store, self.specs, self.data, self.prov, self.out, self.progress = store, specs, data, prov, out, progress
        self.epochs: dict[str, list[dict]] = {}  # trial id -> epochs reported so far (a pruned trial's history)
        self.written: set[str] = set()

    def __getstate__(self):
        """Tune pickles its callbacks with the experiment: the live display and the console stay behind."""
        return {**self.__dict__, "out": print, "progress": None}

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.progress is not None:
            self.progress.trial_started()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        trial_id = trial.config["trial"]["trial_id"]
        if not result.get("finished"):
            record = {k: result[k] for k in ("phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")}
            history = [e for e in self.epochs.get(trial_id, []) if e["epoch"] < record["epoch"]]  # a restart repeats none
            self.epochs[trial_id] = [*history, record]
            return
        self.written.add(trial_id)
        row = json.loads(result["beanlib_row"])
        if no_space(row["error"]):  # its row would meet the same full disk: stop the sweep (run_sweep's one line)
            raise OSError(f"trial {trial_id}: {row['error']}")
        for key in ("start_time", "end_time"):
            row[key] = datetime.fromisoformat(row[key])
        self.store.write_trial(row, json.loads(result["beanlib_epochs"]))
        if row["status"] in FINISHED:
            checkpoint.drop(self.store, {trial_id})
        self._line(row)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """A trial that ended without its row was stopped by the scheduler: record it as pruned, with its epochs."""
        trial_id = trial.config["trial"]["trial_id"]
        if trial_id in self.written:
            return
        backend.needed()  # beanlib.train imports Keras: the driver's set-up (no GPUs) first
        from beanlib.train import TrialResult

        spec = TrialSpec.from_dict(self.specs[trial_id])
        history = self.epochs.get(trial_id, [])
        result = TrialResult("pruned", history, stop_reason="pruned", epochs_planned=spec.config.planned_epochs).summarize_history()
        row = trial_row(spec, result, status="pruned", data=self.data, provenance=self.prov, end_time=datetime.now(timezone.utc))
        self.store.write_trial(row, history)
        checkpoint.drop(self.store, {trial_id})
        self.written.add(trial_id)
        self._line(row)

    def on_trial_error(self, iteration, trials, trial, **info):
        """A trial whose worker died (Ray's OOM killer, a lost node) after all retries: record it as a row."""
        spec = TrialSpec.from_dict(self.specs[trial.config["trial"]["trial_id"]])
        try:
            error = str(trial.get_error() or "")
        except Exception:  # the error file may be unreadable; the row matters more than its text
            error = ""
        lines = [line for line in error.splitlines() if line.strip()] or ["the trial's worker died"]
        if no_space(error):
            raise OSError(f"trial {spec.trial_id}: {lines[-1]}")
        row = trial_row(spec, None, status=failure_status(error), error=lines[-1][:500],
                        attempts=trial.num_failures, data=self.data, provenance=self.prov,
                        end_time=datetime.now(timezone.utc))
        self.store.write_trial(row, [])
        self._line(row)

    def _line(self, row: dict) -> None:
        if self.progress is not None:
            self.progress.trial_finished(failed=row["status"] not in FINISHED)
        accuracy = row.get("test_accuracy")
        shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "-"
        self.out(f"trial {row['trial_id']} [{row['factor']}] {row['setting']} repeat {row['repeat']}: "
                 f"{row['status']} test_acc {shown} in {row.get('train_seconds') or 0:.1f}s on {row['device'] or '?'}"
                 + (f" ({row['error']})" if row.get("error") else ""))
