"""A study fanned out on Ray Tune, every finished trial written to Parquet, resumable. All Ray imports live in
this package: the sweep here, its Tune experiment (tuner), one trial (trainable), the driver's writer (writer) and
a study's search (search).

The Parquet results are the source of truth: a sweep plans its trials (stable
ids), skips those that already have a finished row, and runs the rest as one
Ray Tune experiment. Each trial reports per epoch to Tune and hands its final
row back to the driver, which writes it atomically (beanlib.results). So the
same command, run again after Ctrl-C, a killed driver or a lost node, runs only
what is unfinished, and no trial ever has two rows. A search resumes the same way (beanlib.sweep.search).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable

import ray

from beanlib import backend, checkpoint, preflight
from beanlib.data import class_names, load_beans
from beanlib.errors import BeanlibError, no_space
from beanlib.families import family
from beanlib.lease import Lease
from beanlib.options import Progress, SweepOptions, SweepSummary  # noqa: F401 (SweepOptions: callers import it from here)
from beanlib.results import FINISHED, MODELS, RunStore
from beanlib.stats import winners
from beanlib.studies import (SEARCH_FACTOR, Study, TrialSpec, estimated_cost, estimated_params, find_study, plan,
                             search_probes, trial_id_of_row)
from beanlib.sweep import search
from beanlib.sweep.tuner import KEEP_MODELS, tune_trials
from beanlib.weights import weights_sha256


def run_sweep(opts: SweepOptions, out: Callable[[str], None] = print, progress: Progress | None = None) -> SweepSummary:
    """Plan the study, skip finished trials, run the rest on Ray Tune; returns a summary.

    `out` gets every line for the user; `progress` (beanlib.console.SweepConsole) the live count of trials.
    """
    study = find_study(opts.study)  # a built-in name, or a study file
    opts = dataclasses.replace(opts, study=study.name, repeats=opts.repeats or study.repeats)
    if opts.precision is not None:
        opts = _precision(opts, study, out)
    chosen = backend.choose(opts.backend)  # before Keras loads here; workers get it in $KERAS_BACKEND
    per_class = opts.per_class or study.per_class
    if study.search:  # its trials are sampled as it goes: its options, weights and data are checked at its corners
        preflight.check_search(opts, study)
        specs = search_probes(study, opts.overrides(), per_class)
    else:
        specs = [dataclasses.replace(s, per_class=per_class) for s in plan(study, repeats=opts.repeats, overrides=opts.overrides())]
    preflight.check_options(opts, specs)
    # The driver may decode images and check weights (TensorFlow), and needs no GPU for it: they are the trials'.
    # Put off until then: with data, features and weights check cached, the driver never starts TensorFlow.
    backend.configure_when_needed(use_gpu=False)
    for model, weights in _pretrained_bases(specs):
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
        if study.search:
            rest = _search_rest(store, study, opts.repeats, specs)
        raise BeanlibError(preflight.no_space_line(store, rest, opts.keep_models, len(class_names(opts.data)))) from None
    finally:
        lease.release()


def _run(opts: SweepOptions, study: Study, specs: list[TrialSpec], chosen: str, per_class: int | None, store: RunStore,
         out: Callable[[str], None], progress: Progress | None) -> SweepSummary:
    """The sweep once its plan is known and (unless a dry run) its lease held: bring the run up to date, train
    what is unfinished, keep the models chosen on validation, and sum up."""
    _bring_up_to_date(opts, store, out)
    if study.search:
        return _search(opts, study, specs, chosen, per_class, store, out, progress)
    done = store.finished() if opts.dry_run else preflight.flag_stale(opts, store, specs, store.finished(), out)
    scope = [s for s in specs if not opts.only or s.setting in opts.only]  # what this sweep is to run
    todo = sorted((s for s in scope if done.get(s.trial_id) not in FINISHED), key=lambda s: -estimated_cost(s.config))
    if opts.dry_run:
        preflight.print_plan(specs, done, out, len(class_names(opts.data)))
        return SweepSummary(len(specs), 0, done)
    data = _data(opts, specs, per_class)
    if todo:
        _start(opts, data, store, todo)
    _record(opts, chosen, per_class, data, study, specs, store)
    finished = sum(done.get(s.trial_id) in FINISHED for s in specs)
    out(f"{opts.study}: {len(specs)} trials planned, {finished} finished in {store.uri}, {len(todo)} to run"
        + (f" (--only {' '.join(opts.only)}; {len(specs) - finished - len(todo)} others wait for a run without it)" if opts.only else ""))
    started = time.perf_counter()
    _train(opts, len(todo), progress, lambda: tune_trials(opts, store, todo, data, out, progress))
    statuses = store.finished()
    if opts.retrain_stale:  # a stale row still there was not trained again (the sweep was stopped): not done
        still = store.stale()
        statuses = {t: "missing" if t in still else s for t, s in statuses.items()}
    complete = all(statuses.get(s.trial_id) in FINISHED for s in specs)
    summary = SweepSummary(len(specs), len(todo), {s.trial_id: statuses.get(s.trial_id, "missing") for s in scope},
                           time.perf_counter() - started)
    return _sum_up(opts, store, summary, complete, out)


def _search(opts: SweepOptions, study: Study, probes: list[TrialSpec], chosen: str, per_class: int | None,
            store: RunStore, out: Callable[[str], None], progress: Progress | None) -> SweepSummary:
    """A search's sitting: warm the searcher with what the run holds, sample and train up to the budget, sum up."""
    search_ = study.search
    points = search_.points(opts.repeats)
    state = search.state_of(store, study)
    searcher, count = search.searcher(study, opts.repeats, state)
    what = (f"a {search_.algorithm} search of {points} points x {opts.repeats} seed(s) ({points * opts.repeats} trials) over "
            + ", ".join(f"{d.field} {d.kind} {list(d.values)}" for d in search_.space))
    finished = len(state.complete(opts.repeats)) * opts.repeats
    if opts.dry_run:
        out(f"{opts.study}: {what}; {finished} trials of complete points in {store.uri}, {count} to run")
        return SweepSummary(points * opts.repeats, 0, {})
    data = _data(opts, probes, per_class)
    if count:
        _start(opts, data, store, _search_rest(state, study, opts.repeats, probes))
    _record(opts, chosen, per_class, data, study, probes, store)
    out(f"{opts.study}: {what}; {finished} finished in {store.uri}, {count} to run")
    context = {"study": study, "overrides": opts.overrides(), "per_class": per_class, "state": state, "probes": probes}
    started = time.perf_counter()
    if count:
        _train(opts, count, progress, lambda: tune_trials(opts, store, [], data, out, progress, search=(searcher, count, context)))
    state = search.state_of(store, study)
    done = set(state.complete(opts.repeats))
    statuses = _search_statuses(store)
    statuses |= {f"missing-{i}": "missing" for i in range(points * opts.repeats - len(done) * opts.repeats)}
    summary = SweepSummary(points * opts.repeats, count, statuses, time.perf_counter() - started)
    return _sum_up(opts, store, summary, len(done) == points, out)


def _search_statuses(store: RunStore) -> dict[str, str]:
    """trial_id -> status of a search's rows."""
    table = store.read_table("trials", columns=["trial_id", "factor", "status"]).to_pylist()
    return {r["trial_id"]: r["status"] for r in table if r["factor"] == SEARCH_FACTOR}


def _search_rest(state: search.SearchState, study: Study, repeats: int, probes: list[TrialSpec]) -> list[TrialSpec]:
    """Stand-ins for the trials a search has still to run (its largest corner, once per trial): what space
    estimates go by."""
    left = (study.search.points(repeats) - len(state.complete(repeats))) * repeats
    return [max(probes, key=lambda s: estimated_params(s.config))] * max(left, 0)


def _bring_up_to_date(opts: SweepOptions, store: RunStore, out: Callable[[str], None]) -> None:
    """Set aside damaged files, and (not a dry run) bring a run from an older beanlib to the current contract."""
    for line in store.set_aside_damaged():
        out(f"warning: {line}")
    if not opts.dry_run:
        for change in store.upgrade(trial_id_of_row):  # a run from an older beanlib: current schema, ids from content
            out(f"upgraded {store.run}: {change}")


def _data(opts: SweepOptions, specs: list[TrialSpec], per_class: int | None) -> dict:
    """The data at every planned size, decoded once in the driver. Bad data fails here, before anything is written;
    every size, finished or not: the run is matched by the data's content (its fingerprint), wherever it lies now."""
    sizes = sorted({s.config.image_size for s in specs})
    preflight.check_memory(opts.data, sizes, per_class)
    return {size: load_beans(opts.data, size, per_class) for size in sizes}


def _start(opts: SweepOptions, data: dict, store: RunStore, todo: list[TrialSpec]) -> None:
    """Join Ray, and check that the data fits its object store and the trials' writes the disk."""
    _connect(opts)
    _check_object_store(data)
    concurrency = opts.max_concurrent or int(ray.cluster_resources().get("CPU", 1) // opts.cpus_per_trial) or 1
    preflight.check_space(store, todo, opts.keep_models, min(len(todo), concurrency), len(class_names(opts.data)))


def _pretrained_bases(specs: list[TrialSpec]) -> list[tuple[str, str]]:
    """(model, weights) of each pretrained base the trials train on."""
    return sorted({(s.config.model, s.config.weights) for s in specs if family(s.config.model).pretrained_base})


def _record(opts: SweepOptions, chosen: str, per_class: int | None, data: dict, study: Study, specs: list[TrialSpec],
            store: RunStore) -> None:
    """Write (or check against) run.json, and the split beanlib carved, if it did."""
    carved = next(iter(data.values())).carved
    bases = sorted({weights for _, weights in _pretrained_bases(specs)})
    store.check_manifest(preflight.manifest(opts, chosen, per_class, data, study), data_fingerprints={str(size): d.fingerprint for size, d in data.items()},
                         weights_sha256={w: weights_sha256(w) for w in bases if weights_sha256(w)})
    if carved:
        store.write_split(carved)  # which file went where: the fingerprint guards it, this file shows it


def _train(opts: SweepOptions, count: int, progress: Progress | None, fit: Callable[[], None]) -> None:
    """Run the Tune experiment, with the live count of trials around it."""
    if not count:
        return
    if progress is not None:
        progress.start(count, f"{opts.study}")
    try:
        fit()
    finally:
        if progress is not None:
            progress.stop()


def _sum_up(opts: SweepOptions, store: RunStore, summary: SweepSummary, complete: bool, out: Callable[[str], None]) -> SweepSummary:
    """Once the run is complete, keep the models chosen on validation; say how the sweep ended and what is next."""
    if complete:
        checkpoint.drop(store, set(store.finished()))  # left by a driver that stopped between a row and its cleanup
        if opts.keep_models == "best":
            kept = winners(store.read_table("trials").to_pandas())
            dropped = store.keep_models(set(kept.values()))
            if kept:
                out("models kept (chosen on validation): " + ", ".join(f"{label} {trial}" for label, trial in kept.items())
                    + (f"; {len(dropped)} others removed" if dropped else "") + f", in {store.uri}/{MODELS}")
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


def _precision(opts: SweepOptions, study: Study, out: Callable[[str], None]) -> SweepOptions:
    """Resolve --precision auto on the trials' hardware (a cluster's: probed by a task on it), warn where bf16 would
    be emulated, and drop an override that changes nothing (the run and its ids stay those of a run without it)."""
    from beanlib.config import PRECISIONS
    from beanlib import precision

    if opts.precision not in (*PRECISIONS, precision.AUTO):
        raise BeanlibError(f"unknown --precision {opts.precision!r}: use one of {', '.join(PRECISIONS)}, {precision.AUTO}")
    if opts.address or os.environ.get("RAY_ADDRESS"):
        _connect(opts)
        on_gpu = opts.gpus_per_trial != 0 and ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(precision.probe).options(num_cpus=0 if on_gpu else 1, num_gpus=0.01 if on_gpu else 0)
        device = ray.get(task.remote("a node of the cluster"))
    else:
        device = precision.probe()
        on_gpu = opts.gpus_per_trial != 0 and bool(device.gpu_capabilities)
    chosen = opts.precision
    if chosen == precision.AUTO:
        chosen, why = precision.choose(device, on_gpu)
        out(f"precision auto: {chosen} ({why})")
    elif line := precision.emulated(chosen, device, on_gpu):
        out(line)
    unchanged = chosen == study.base.get("precision", "float32")
    return dataclasses.replace(opts, precision=None if unchanged else chosen)


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