"""One Ray Tune trial of a sweep, run in a worker: train it (with retries), report each epoch and checkpoint, and
hand the final row to the driver (beanlib.sweep.writer)."""

from __future__ import annotations

import itertools
import json
import logging
import os
from datetime import datetime, timezone

import ray
from ray import tune

from beanlib import backend, checkpoint, scratch
from beanlib.console import hide_native_logs
from beanlib.errors import BeanlibError, failure_status, first_line
from beanlib.families import family
from beanlib.results import FINISHED, RAN_IN_FULL, RunStore
from beanlib.rows import trial_row
from beanlib.studies import TrialSpec


def spec_of(config: dict, context: dict, point: int | None = None) -> TrialSpec:
    """The trial a Tune config stands for: a grid's planned trial by its id, or a searched point's seed."""
    if "trial" in config:
        return TrialSpec.from_dict(context["specs"][config["trial"]["trial_id"]])
    from beanlib.sweep.search import spec_of as searched

    return searched(config, context["search"], point)


_TRIALS_IN_THIS_WORKER = itertools.count(1)  # a worker process counts the trials it runs (Tune reuses workers)


def trainable(config: dict, data: dict, features: dict, context: dict) -> None:
    """One Ray Tune trial: run it (with retries), report each epoch, and hand the final row to the driver."""
    hide_native_logs()  # before TensorFlow starts in this worker
    backend.choose(context["backend"])  # before Keras loads in this worker (also on a cluster that has other defaults)
    from beanlib.features import features_key
    from beanlib.train import run_trial

    spec = spec_of(config, context)
    store = RunStore(*context["results"].rsplit("/", 1))
    if context["search"] and _reported_kept(store, spec.trial_id):
        return
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
    report, report_checkpoint = _reporters(spec, context["inject_fault"])

    result, status, error, attempts = None, "error", None, 0
    for attempts in range(1, context["retries"] + 2):
        try:
            _injected(spec.setting, context["inject_fault"])
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
            row["model_file"] = store.write_model(spec.trial_id, model_file)
        except (OSError, BeanlibError) as exc:  # the storage refused it (full, read-only, gone): not the trial's doing
            row.update(status="environment", error=first_line(exc))
    if model_file and os.path.exists(model_file):
        os.remove(model_file)
    last = result.history[-1] if result and result.history else {"epoch": 0, "val_accuracy": 0.0}  # for a scheduler
    # What a searcher maximises: the row's validation accuracy; nan (left out of a point's mean) for a failed trial.
    objective = {"objective": row["val_accuracy"] if status in RAN_IN_FULL else float("nan")}
    tune.report({"finished": 1, "status": status, "test_accuracy": row.get("test_accuracy"), **objective,
                 "epoch": last["epoch"], "val_accuracy": last["val_accuracy"],
                 "beanlib_row": json.dumps(row, default=str), "beanlib_epochs": json.dumps(result.history if result else [])})


def _reported_kept(store: RunStore, trial_id: str) -> bool:
    """Report a re-suggested point's finished seed from its row (the searcher's answer, not a new run); False when
    the trial has no finished row."""
    from beanlib.sweep.search import kept_result

    if (kept := kept_result(store, trial_id)) is None:
        return False
    tune.report(kept)
    return True


def _reporters(spec: TrialSpec, faults: list[str]):
    """(report an epoch, report an epoch with its checkpoint folder) to Tune; a test's injected crash at an epoch
    (SETTING:crash@EPOCH) kills the worker once, after that epoch's report."""
    crash_at = next((int(f.rsplit("@", 1)[1]) for f in faults if f.startswith(f"{spec.setting}:crash@")), None)

    def report(record: dict, saved: tune.Checkpoint | None = None) -> None:
        _report_epoch(record, spec.config.planned_epochs, saved)
        if record["epoch"] == crash_at:
            marker = os.path.join(tune.get_context().get_trial_dir(), "injected-crash")
            if not os.path.exists(marker):  # once per trial: its restart (from a checkpoint or from zero) runs on
                open(marker, "w").close()
                os._exit(17)

    def report_checkpoint(record: dict, directory: str) -> None:
        report(record, tune.Checkpoint.from_directory(directory))

    return report, report_checkpoint


def _injected(setting: str, faults: list[str]) -> None:
    """The faults a test asked of this setting (SweepOptions.inject_fault): a crash, an error, a lost connection."""
    if f"{setting}:crash" in faults:
        os._exit(17)
    if setting in faults:
        raise RuntimeError(f"injected fault in setting {setting}")
    if f"{setting}:lost-connection" in faults:
        raise ConnectionResetError(f"injected: the connection of setting {setting} was reset")


def _report_epoch(record: dict, planned_epochs: int, saved: tune.Checkpoint | None = None) -> None:
    """Every epoch but the last goes to Tune as it ends, with the trial's checkpoint when one was taken (Tune
    stores it in the run's storage, keeps the latest, and hands it to the trial's restart). The last epoch arrives
    only with the final result, so a scheduler that stops the trial there finds it complete, not to be pruned."""
    if record["epoch"] < planned_epochs:  # a searcher's metric in every result, as Tune requires: this epoch's
        tune.report({**record, "finished": 0, "objective": record["val_accuracy"]}, checkpoint=saved)


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