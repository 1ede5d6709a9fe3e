"""cluster.yaml against Ray's own cluster-config schema; a cluster that cannot be reached, or that wants a token, in
one line. (A sweep over two nodes: tests/test_jobs.py, through `ray job submit` to two local nodes.)"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from clusters import free_port, user_env

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]


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
