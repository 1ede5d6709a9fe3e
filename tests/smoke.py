"""The README's main job as a user meets it: killed mid-sweep, then run again to the end. One such run serves the
killed-driver test (tests/test_jobs.py) and the report's tests (tests/test_report.py), which would otherwise each
start sweeps of their own."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clusters import user_env

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--study", "smoke", "--data", "synthetic", "--per-class", "2"]
# The smoke study's LeNets: the killed driver runs only these, trials of a few seconds each, so that the kill lands
# mid-sweep; the run that resumes it trains the rest, the Inception-v3 trials among them.
LENETS = ("baseline", "kernel_size=3", "kernel_size=7", "kernel_counts=3-8-60", "kernel_counts=12-32-240",
          "regularizer=l1", "regularizer=l2", "regularizer=dropout")


@dataclass(frozen=True)
class KilledAndResumed:
    """A smoke run whose first driver was killed mid-sweep and whose second ran the whole study to the end."""

    run: Path  # the run's folder, every trial finished
    before: pd.DataFrame  # the rows the killed driver had written, by trial_id
    resumed: subprocess.CompletedProcess  # the second driver: its exit status and console


def killed_and_resumed(root: Path) -> KilledAndResumed:
    """Start `jobs.sweep` on the smoke study's LeNets, SIGKILL it and its Ray once three rows are written, then run
    the whole study with the same options. Its own cache, so that the second driver computes the Inception-v3 base
    features itself (the report says so) rather than finding another test's. One trial at a time: one worker per
    driver, so one TensorFlow start each (the other core runs another test)."""
    command = [sys.executable, "-m", "jobs.sweep", *SMOKE, "--results", str(root), "--max-concurrent", "1"]
    env = user_env(BEANLIB_CACHE=str(root / "cache"))
    trials = root / "smoke" / "trials"
    driver = subprocess.Popen([*command, "--only", *LENETS], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(list(trials.glob("*.parquet"))) < 3:
            time.sleep(0.5)
    finally:
        _kill_session(driver)
    before = pd.read_parquet(trials).set_index("trial_id")
    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return KilledAndResumed(root / "smoke", before, resumed)


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
