"""The entry points as a user runs them: one-line errors, a killed driver resumed. (`ray job submit` to two
local nodes: tests/test_cluster.py.)"""

import re
import subprocess
import sys

import pandas as pd
import pytest

from beanlib.studies import plan
from clusters import user_env
from smoke import LENETS, REPO, SMOKE

pytestmark = pytest.mark.slow  # every test here starts a sweep, a cluster or a subprocess job


def _run(*args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["jobs.sweep", "--study", "smoke", "--data", "/no/such/beans"], "error: data folder /no/such/beans does not exist"),
        (["jobs.sweep", "--study", "seed", "--image-size", "64", "--dry-run"], "error: image_size 64 is too small for Inception-v3"),
        (["jobs.sweep", "--study", "smoke", "--repeats", "0"], "error: --repeats must be positive"),
        (["jobs.trial", "--model", "lenet", "--set", "kernel_size=0"], "error: kernel_size must be a positive integer"),
        (["jobs.trial", "--model", "inception", "--set", "unfreeze_from=250"], "error: unfreeze_from 250 is not where a block"),
        (["jobs.trial", "--model", "inception", "--set", "weights=README.md"], "error: README.md is not a Keras Inception-v3 no-top weights file"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path, argv, message):
    done = _run(sys.executable, "-m", *argv, "--results" if argv[0] == "jobs.sweep" else "--epochs",
                str(tmp_path / "results") if argv[0] == "jobs.sweep" else "1", timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(message), done.stderr  # exactly one line
    assert not (tmp_path / "results").exists()  # nothing half-written


def test_a_relative_results_folder_under_ray_job_submit_is_refused(tmp_path):
    """Under `ray job submit` the working directory is Ray's temporary copy: results there would be deleted."""
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", *SMOKE, "--results", "results"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=user_env(RAY_JOB_CONFIG_JSON_ENV_VAR='{"runtime_env": {}}'))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: --results results is relative, and under `ray job submit`")
    assert "pass an absolute path or a URI" in done.stderr


def test_a_killed_driver_resumes_without_rerunning_or_duplicating_trials_on_a_short_calm_console(smoke_run):
    """The README's main job, killed mid-sweep and run again (tests/smoke.py): only unfinished trials run, and the
    console is what a new user sees: the plan, one line per trial, the summary; no C++ log line, no Ray Tune table,
    no traceback."""
    before, resumed = smoke_run.before, smoke_run.resumed
    planned = {s.trial_id for s in plan("smoke")}
    assert len(planned) == 12 and 3 <= len(before) < len(LENETS), "kill the driver mid-sweep"
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    lines = (resumed.stdout + resumed.stderr).strip().splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    # the killed driver's lease: taken over at once, since its process is gone from this host, and said in one line
    assert lines[0].startswith("warning: took over the run from the driver pid ") and "(its process is gone)" in lines[0]
    assert lines[1].startswith(f"smoke: 12 trials planned, {len(before)} finished in") and lines[1].endswith(f", {12 - len(before)} to run")
    assert sum(1 for line in lines if line.startswith("trial ") and ": ok test_acc" in line) == 12 - len(before)
    assert any(line.startswith("smoke: done in") for line in lines)
    noise = re.compile(r"^(WARNING: All log messages|[IWEF]\d{4} \d\d:|Traceback|.*Trial status|.*_trainable_)")
    assert not [line for line in lines if noise.match(line)], "\n".join(lines)
    after = pd.read_parquet(smoke_run.run / "trials")
    assert after["trial_id"].is_unique and set(after["trial_id"]) == planned and set(after["status"]) == {"ok"}
    kept = after.set_index("trial_id").loc[before.index]
    assert (kept["start_time"] == before["start_time"]).all()  # finished trials were not run again
    epochs = pd.read_parquet(smoke_run.run / "epochs")
    assert epochs.groupby("trial_id").size().to_dict() == after.set_index("trial_id")["epochs_run"].to_dict()
