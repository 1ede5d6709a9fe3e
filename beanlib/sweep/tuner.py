"""The sweep's Ray Tune experiment: resources, schedulers, shared base features, and the Tuner for a grid's
planned trials or a search's sampled ones."""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timezone
from typing import Any, Callable

import ray
from ray import tune

from beanlib import backend, checkpoint
from beanlib.console import hide_native_logs, without_tunes_restore_hint
from beanlib.families import FAMILIES, family
from beanlib.options import Progress, SweepOptions
from beanlib.results import RunStore
from beanlib.rows import provenance
from beanlib.studies import TrialSpec, hparams, trial_name
from beanlib.sweep.trainable import trainable
from beanlib.sweep.writer import WriteResults


def tune_trials(opts: SweepOptions, store: RunStore, todo: list[TrialSpec], data: dict, out: Callable[[str], None],
                progress: Progress | None = None, search: tuple | None = None) -> None:
    """Run `todo` (a grid's planned trials), or with `search` (searcher, trials, context) the trials a searcher
    samples, as one Tune experiment; every finished trial's row is written as it ends (WriteResults)."""
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    if not has_gpus and opts.gpus_per_trial is None and (opts.address or os.environ.get("RAY_ADDRESS")):
        out("no GPUs in the cluster right now: trials take CPUs only; on an autoscaling cluster whose GPU nodes are "
            "not up yet, pass --gpus-per-trial to request them")
    resources = _resources(opts, has_gpus)
    searcher, count, searched = search or (None, 0, None)
    # A search's trials are not known ahead: its unfinished points' seeds (they may have checkpoints) and its corners.
    probes = searched["state"].unfinished(searched, opts.repeats) + searched["probes"] if searched else todo
    features = _shared_features(probes, data, resources, out)
    specs = {s.trial_id: s.to_dict() for s in todo}
    earlier = checkpoint.latest(store, {s.trial_id for s in probes})
    if earlier:
        out(f"{len(earlier)} trial(s) resume from the checkpoint of an earlier sweep: " + ", ".join(sorted(earlier)))
    context = {"run": store.run, "results": store.uri, "data": opts.data, "provenance": provenance(), "retries": opts.retries,
               "backend": backend.current(), "inject_fault": list(opts.inject_fault), "specs": specs, "earlier": earlier,
               "checkpoint_seconds": opts.checkpoint_seconds, "keep_models": opts.keep_models != "none",
               "search": searched and {k: searched[k] for k in ("study", "overrides", "per_class")}}
    # with_parameters puts data and features into Ray's object store once; every trial reads them from there.
    model = (lambda config: searched["study"].base["model"]) if searched else \
        (lambda config: specs[config["trial"]["trial_id"]]["config"]["model"])
    run = tune.with_parameters(tune.with_resources(trainable, lambda config: resources[model(config)]),
                               data=data, features=features, context=context)
    writer = WriteResults(store, context, opts.data, out, progress, searched["state"].points if searched else None)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    if searched:  # the searcher holds the space and samples it; Tune starts up to `count` trials
        param_space, sampling = {}, {"search_alg": searcher, "num_samples": count}
    else:  # specs travel in `context`; the config holds the trial id and, for TensorBoard's HParams view, its settings
        param_space, sampling = {"trial": tune.grid_search([hparams(spec) for spec in specs.values()])}, {}
    tuner = tune.Tuner(
        run,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=opts.max_concurrent, scheduler=SCHEDULERS[opts.scheduler](probes),
                                    trial_name_creator=lambda trial: trial_name(writer.spec(trial).to_dict()),
                                    trial_dirname_creator=lambda trial: writer.spec(trial).trial_id, **sampling,
                                    # Warm workers: a worker that finished a trial runs the next one that asks for the
                                    # same resources, with its runtime, imports and data already loaded (run_trial
                                    # starts each trial from Keras's blank state and frees it after: beanlib.backend).
                                    reuse_actors=not opts.fresh_workers),
        run_config=tune.RunConfig(
            name=f"tune-{stamp}",
            storage_path=f"{store.uri}/tune",  # Tune's own experiment state lives beside the Parquet
            failure_config=tune.FailureConfig(max_failures=opts.retries),  # crashed workers, lost nodes
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # a running trial's last checkpoint only
            callbacks=[writer],
            verbose=1 if opts.verbose else 0,
        ),
    )
    _fit(tuner, store, specs, bool(searched), out)


def _fit(tuner, store: RunStore, specs: dict, searched: bool, out: Callable[[str], None]) -> None:
    """Run the Tune experiment away from the working directory; a failure of Tune's own after every planned trial
    has its row is a warning, not an error."""
    # Under `ray job submit` the working directory is Ray's copy of the user's, which Ray may delete while the
    # job runs (another node's runtime-env cleanup on the same machine): nothing after this point needs it.
    cwd = _cwd()
    os.chdir(tempfile.gettempdir())
    try:
        with without_tunes_restore_hint():
            tuner.fit()
    except Exception as error:
        finished = store.finished()
        if searched or any(finished.get(trial_id) is None for trial_id in specs):
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
