"""Local Ray clusters in tests: the session's embedded one, and stopping one without touching the machine's others."""

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


def embedded_ray():
    """The session's embedded Ray, started on first use and shared by every in-process sweep: each start costs
    seconds. A test that needs no Ray in this process shuts it down; the next user starts it again.

    One CPU, so one trial at a time: a sweep's trials then run one after another in one warm worker, which imports
    TensorFlow once (about 10 s of CPU on this kind of machine), where two would each import it. The suite's two
    xdist workers keep both cores mostly busy already. Trials on two nodes at once: tests/test_cluster.py."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
    return ray


def stop_cluster(temp_dir: str) -> None:
    """Kill the Ray processes of the cluster under `temp_dir` and their workers; other Rays on this machine live on
    (`ray stop` would end every Ray of the machine, a user's or another test's too)."""
    import psutil

    doomed = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and any(temp_dir in part for part in proc.info["cmdline"] or []):
                doomed += [proc, *proc.children(recursive=True)]
        except psutil.Error:
            pass
    for proc in doomed:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(doomed, timeout=60)


def free_port() -> int:
    """A TCP port that nothing on this machine listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_env(**extra: str) -> dict:
    """This process's environment as a user's shell has it: no Ray address or log settings of ours, and this venv's
    `ray` and `python` first on PATH."""
    env = dict(os.environ)
    for name in ("RAY_ADDRESS", "TF_CPP_MIN_LOG_LEVEL", "BEANLIB_SET_TF_LOG_LEVEL"):
        env.pop(name, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return {**env, **extra}


@dataclass(frozen=True)
class TokenCluster:
    """Two local Ray nodes of one CPU each, with token authentication on (cluster.yaml's setting, Ray 2.61's default)."""

    address: str  # the head's GCS, for a driver's --address
    dashboard: str  # the job server, for `ray job submit --address`
    token_file: Path
    env: dict  # a shell that holds the token, as the README tells a user to set it up


@contextlib.contextmanager
def token_cluster(folder: Path):
    """Start a TokenCluster whose token lies in `folder`; stop its processes (and only them) on exit."""
    port, dashboard = free_port(), free_port()
    token_file = folder / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    env = user_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), RAY_USAGE_STATS_ENABLED="0")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
    # Ports of our own for what Ray fixes by default (the job agent's 52365, the client server's 10001): another Ray on
    # this machine (a user's, or a sweep running beside the tests) holds those, and a head whose job agent cannot bind
    # refuses every job with "No available agent".
    def own_ports() -> list[str]:
        return [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]

    try:
        for node in (["--head", f"--port={port}", f"--dashboard-port={dashboard}", "--include-dashboard=true",
                      f"--temp-dir={temp_dir}", f"--ray-client-server-port={free_port()}"],
                     [f"--address=127.0.0.1:{port}"]):
            started = subprocess.run(["ray", "start", *node, "--num-cpus=1", *own_ports()], env=env, capture_output=True,
                                     text=True, timeout=180)
            if started.returncode != 0:
                raise RuntimeError(f"ray start {' '.join(node)} failed: {started.stderr[-3000:]}")
        yield TokenCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", token_file, env)
    finally:
        stop_cluster(temp_dir)
