"""The entry points as a user runs them: one-line errors, a killed driver resumed, `ray job submit` to a real head."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from beanlib.results import EPOCH_SCHEMA, TRIAL_SCHEMA
from beanlib.studies import plan

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--study", "smoke", "--data", "synthetic", "--per-class", "2"]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `ray` and `python` of this venv
    return {**env, **extra}


def _run(*args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["jobs.sweep", "--study", "smoke", "--data", "/no/such/beans"], "error: data folder /no/such/beans does not exist"),
        (["jobs.sweep", "--study", "seed", "--image-size", "64", "--dry-run"], "error: image_size 64 is too small for Inception-v3"),
        (["jobs.sweep", "--study", "smoke", "--repeats", "0"], "error: --repeats must be positive"),
        (["jobs.trial", "--model", "lenet", "--set", "kernel_size=0"], "error: kernel_size must be a positive integer"),
        (["jobs.trial", "--model", "inception", "--set", "unfreeze_from=250"], "error: unfreeze_from 250 is not the first layer"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path, argv, message):
    done = _run(sys.executable, "-m", *argv, "--results" if argv[0] == "jobs.sweep" else "--epochs",
                str(tmp_path / "results") if argv[0] == "jobs.sweep" else "1", timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()  # nothing half-written


def _kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the driver and everything it started (the embedded Ray's processes share its session)."""
    import psutil

    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == process.pid:
                proc.kill()
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


def test_a_killed_driver_resumes_without_rerunning_or_duplicating_trials(tmp_path):
    command = [sys.executable, "-m", "jobs.sweep", *SMOKE, "--results", str(tmp_path), "--max-concurrent", "1"]
    trials_dir = tmp_path / "smoke" / "trials"
    driver = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list(trials_dir.glob("*.parquet"))) < 3:
            time.sleep(0.5)
    finally:
        _kill_session(driver)
    before = pd.read_parquet(trials_dir).set_index("trial_id")
    planned = {s.trial_id for s in plan("smoke")}
    assert 3 <= len(before) < len(planned), "kill the driver mid-sweep"

    resumed = _run(*command)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{len(before)} finished in" in resumed.stdout
    after = pd.read_parquet(trials_dir)
    assert after["trial_id"].is_unique and set(after["trial_id"]) == planned and set(after["status"]) == {"ok"}
    kept = after.set_index("trial_id").loc[before.index]
    assert (kept["start_time"] == before["start_time"]).all()  # finished trials were not run again
    epochs = pd.read_parquet(tmp_path / "smoke" / "epochs")
    assert epochs.groupby("trial_id").size().to_dict() == after.set_index("trial_id")["epochs_run"].to_dict()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_to_a_local_head_writes_the_smoke_study(tmp_path):
    port, dashboard = _free_port(), _free_port()
    # Ray >= 2.52 turns token authentication on for local clusters; the CLI must be told to use it.
    env = _env(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    start = subprocess.run(["ray", "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}", "--num-cpus=2",
                            "--include-dashboard=true", f"--temp-dir={tempfile.mkdtemp(prefix='ray', dir='/tmp')}"],  # short: socket paths
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        results = tmp_path / "results"  # absolute: the job runs in a copy of the working dir
        job = subprocess.run(["ray", "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", ".",
                              "--", "python", "-m", "jobs.sweep", *SMOKE, "--results", str(results)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "smoke: done in" in job.stdout
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
    trials = pd.read_parquet(results / "smoke" / "trials")
    assert list(trials.columns) == TRIAL_SCHEMA.names  # the documented columns, in order
    assert list(pd.read_parquet(results / "smoke" / "epochs").columns) == EPOCH_SCHEMA.names
    assert trials["trial_id"].is_unique and set(trials["trial_id"]) == {s.trial_id for s in plan("smoke")}
    assert set(trials["status"]) == {"ok"} and (trials["per_class"] == 2).all()
    assert trials["ray_version"].str.startswith("2.").all()
