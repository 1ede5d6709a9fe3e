"""One trial's row for the results contract (beanlib.results): its place in the study, its config, its metrics and
where and by what it was computed."""

from __future__ import annotations

import os
from typing import Any

from beanlib.results import TRIAL_SCHEMA
from beanlib.semantics import SEMANTICS
from beanlib.weights import weights_sha256


def trial_row(
    spec,
    result=None,
    *,
    status: str,
    error: str | None = None,
    attempts: int = 1,
    data: str = "",
    node: str = "",
    worker: tuple[int, int] | None = None,
    device: str = "",
    start_time=None,
    end_time=None,
    provenance: dict[str, str] | None = None,
    point: int | None = None,
) -> dict[str, Any]:
    """One trials row: the spec's place in the study, its full config, the result's metrics, and provenance.

    `spec` is a beanlib.studies.TrialSpec, `result` a beanlib.train.TrialResult (None when the trial failed),
    `worker` the (pid, nth trial) of the process that ran it.
    """
    config = spec.config.to_dict()
    if config["kernel_counts"] is not None:
        config["kernel_counts"] = "-".join(map(str, config["kernel_counts"]))
    metrics = {}
    if result is not None:
        metrics = {k: v for k, v in result.to_dict().items() if k in TRIAL_SCHEMA.names}
        metrics["epochs_run"] = len(result.history)
    return {
        "trial_id": spec.trial_id,
        "study": spec.study,
        "factor": spec.factor,
        "setting": spec.setting,
        "repeat": spec.repeat,
        "point": point,
        **config,
        "weights_sha256": weights_sha256(spec.config.weights),
        "data": data,
        "per_class": spec.per_class,
        **metrics,
        "status": status,
        "error": error,
        "semantics": SEMANTICS,
        "attempts": attempts,
        "node": node,
        "worker_pid": worker[0] if worker else None,
        "worker_trial": worker[1] if worker else None,
        "device": device,
        "start_time": start_time,
        "end_time": end_time,
        **(provenance or {}),
    }


def provenance() -> dict[str, str]:
    """Versions and the beanlib commit that produced a result (read without importing TensorFlow or Ray)."""
    import platform
    import subprocess
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    from beanlib.backend import BACKENDS, DEFAULT

    backend_name = os.environ.get("KERAS_BACKEND") or DEFAULT  # as beanlib.backend.choose() set it for every process
    commit = os.environ.get("BEANLIB_COMMIT", "")
    if not commit:
        here = os.path.dirname(os.path.abspath(__file__))
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
            commit += "+dirty" if dirty else ""
        except (OSError, subprocess.SubprocessError):
            commit = "unknown"  # not a git checkout (an installed wheel, a Ray working_dir copy)
    return {
        "beanlib_commit": commit,
        "tensorflow_version": version("tensorflow"),
        "keras_version": version("keras"),
        "backend": backend_name,
        "backend_version": version(BACKENDS[backend_name].module) if backend_name in BACKENDS else "unknown",
        "ray_version": version("ray"),
        "python_version": platform.python_version(),
    }
