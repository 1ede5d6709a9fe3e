"""cluster.yaml against Ray's own cluster-config schema; a cluster that cannot be reached, or that wants a token, in
one line; `ray job submit` of the smoke study to two local nodes with token authentication."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import pytest
import yaml

import clusters
from beanlib.results import EPOCH_SCHEMA, TRIAL_SCHEMA
from beanlib.studies import plan
from clusters import free_port, user_env
from smoke import SMOKE

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """One two-node local cluster with token authentication for this module's tests (they run one after another on
    one xdist worker: conftest's BUILT_ONCE), stopped once they are done: idle, its two nodes cost about a tenth of
    a core."""
    with clusters.token_cluster(tmp_path_factory.mktemp("token-cluster")) as cluster:
        yield cluster


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises on any schema violation
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}  # trials only on GPU workers
    assert "[gpu]" in " ".join(config["setup_commands"])
    # token authentication on every node, from a token file made outside the repository; the job server on loopback
    options = " ".join(config["docker"]["run_options"])
    assert "-e RAY_AUTH_MODE=token" in options and "-e RAY_AUTH_TOKEN_PATH=/home/ray/.ray/beanlib_auth_token" in options
    assert config["file_mounts"]["/home/ray/.ray/beanlib_auth_token"].startswith("~/")
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


def test_cluster_yaml_schema_check_catches_a_typo():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_an_address_where_no_cluster_listens_is_one_line_not_minutes_of_waiting(no_local_ray, tmp_path, monkeypatch):
    from beanlib import preflight
    from beanlib.errors import BeanlibError
    from beanlib.sweep import SweepOptions, run_sweep

    port = free_port()
    monkeypatch.setattr(preflight, "CONNECT_SECONDS", 2.0)
    with pytest.raises(BeanlibError, match=rf"^no Ray cluster answers at 127\.0\.0\.1:{port} \(.*\): check that its head is up") as caught:
        run_sweep(SweepOptions(study="smoke", data="synthetic", results=str(tmp_path), address=f"127.0.0.1:{port}"),
                  out=lambda line: None)
    assert "\n" not in str(caught.value)
    assert not any(tmp_path.iterdir())  # nothing written, the run's lease released and its folder gone


@pytest.mark.slow
def test_a_token_cluster_refuses_a_wrong_token_in_one_line_and_with_the_right_one_decides_precision_on_a_node(token_cluster, tmp_path):
    address, token = token_cluster.address, token_cluster.token_file.read_text()
    env = user_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32)  # as a user's shell has them, with a wrong token
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", "--study", "smoke", "--data", "synthetic", "--results",
                           str(tmp_path), "--address", address], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: the Ray cluster at {address} answers but did not let this "
                                                   "driver join"), lines
    assert "RAY_AUTH_TOKEN" in lines[0]
    # With its token, --precision auto is decided on a node of the cluster (a one-off task there), not on the driver
    study = tmp_path / "two.yaml"
    study.write_text("name: two\ndescription: two LeNets\nbase: {model: lenet, image_size: 32}\nfactors:\n"
                     "  kernel_size: {settings: {k3: {kernel_size: 3}, k5: {kernel_size: 5}}}\n")
    env["RAY_AUTH_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", "--study", str(study), "--data", "synthetic", "--results",
                           str(tmp_path), "--address", address, "--precision", "auto", "--dry-run"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.match(r"precision auto: (float32|mixed_bfloat16) \(.* on a node of the cluster\)$", done.stdout.splitlines()[0])


# Both families, four trials: enough for each node to run some (one CPU each); no fine-tune, the smoke study's longest
# trials (tests/test_sweep.py fine-tunes in a sweep).
ON_TWO_NODES = ("baseline", "kernel_size=3", "kernel_size=7", "head-only")


def _submit(command: list[str], env: dict, wait: float = 180) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the head's job agent has not registered yet (HTTP 500, "No available agent"),
    as a user would: the job is not created by such a refusal, so a retry cannot start it twice."""
    deadline = time.time() + wait
    while True:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        if "No available agent" not in done.stdout + done.stderr or time.time() > deadline:
            return done
        time.sleep(3)


@pytest.mark.slow
def test_ray_job_submit_to_two_local_nodes_writes_the_smoke_study_and_exits_0(token_cluster, tmp_path):
    """Two `ray start` nodes on one machine, as in the field report where every row was written and yet the job
    exited 1: Ray removed the job's working directory under the driver, and Tune's bookkeeping then failed. The
    nodes run with token authentication (cluster.yaml's setting, Ray 2.61's default): a submit without the token is
    refused and creates no job; the README's commands, with the token file, run the study."""
    env = token_cluster.env
    results = tmp_path / "results"  # absolute: the job runs in a copy of the working dir
    # The user's own runtime env sets keys the sweep also sets for its workers: the job's values win, no merge error.
    runtime_env = '{"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}}'
    submit = ["ray", "job", "submit", "--address", token_cluster.dashboard, "--working-dir", ".",
              "--runtime-env-json", runtime_env, "--", "python", "-m", "jobs.sweep", *SMOKE, "--results", str(results),
              "--only", *ON_TWO_NODES]
    jobs = ["ray", "job", "list", "--address", token_cluster.dashboard]
    before = set(re.findall(r"raysubmit_\w+", subprocess.run(jobs, env=env, capture_output=True, text=True, timeout=120).stdout))
    for shell in ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, {}):  # a wrong token; none at all
        without = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
        refused = _submit(submit, {**without, "HOME": str(tmp_path), **shell})  # no ~/.ray/auth_token to fall back on
        assert refused.returncode != 0 and "AuthenticationError" in refused.stdout + refused.stderr, refused.stderr[-2000:]
    job = _submit(submit, env)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "smoke: done in" in job.stdout and "Traceback" not in job.stdout + job.stderr
    listed = subprocess.run(jobs, env=env, capture_output=True, text=True, timeout=120)
    assert len(set(re.findall(r"raysubmit_\w+", listed.stdout)) - before) == 1, listed.stdout[-2000:]  # refused submits made none
    trials = pd.read_parquet(results / "smoke" / "trials")
    assert list(trials.columns) == TRIAL_SCHEMA.names  # the documented columns, in order
    assert list(pd.read_parquet(results / "smoke" / "epochs").columns) == EPOCH_SCHEMA.names
    assert trials["trial_id"].is_unique and set(trials["trial_id"]) == {s.trial_id for s in plan("smoke") if s.setting in ON_TWO_NODES}
    assert set(trials["status"]) == {"ok"} and (trials["per_class"] == 2).all()
    assert trials["ray_version"].str.startswith("2.").all()
    assert trials["node"].str.split("/").str[1].nunique() == 2  # both nodes ran trials
