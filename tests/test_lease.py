"""One driver per run: a second driver refuses in one line; a dead driver's lease is taken over; --force."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from beanlib.errors import BeanlibError
from beanlib.lease import LEASE, STALE_SECONDS, Lease
from beanlib.results import RunStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _held_by(run_dir, host: str, pid: int, age: float = 0.0) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LEASE).write_text(json.dumps({"host": host, "pid": pid, "token": "theirs", "started": "2026-12-06T10:00:00+00:00",
                                             "heartbeat": time.time() - age}))


def test_a_second_driver_is_refused_in_one_line_that_names_the_first(tmp_path):
    _held_by(tmp_path / "smoke", "other-host", 4242)
    done = subprocess.run([sys.executable, "-m", "jobs.sweep", "--study", "smoke", "--data", "synthetic", "--results", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is being swept by another driver, pid 4242 on other-host" in errors[0], done.stderr
    assert "--force" in errors[0] and "Traceback" not in done.stderr
    assert sorted(p.name for p in (tmp_path / "smoke").iterdir()) == [LEASE]  # nothing written, the lease untouched


def test_two_drivers_started_together_let_exactly_one_through(tmp_path):
    code = ("import sys, time\nfrom beanlib.lease import Lease\nfrom beanlib.results import RunStore\n"
            "from beanlib.errors import BeanlibError\nlease = Lease(RunStore(sys.argv[1], 'run'), out=lambda line: None)\n"
            "try:\n    lease.acquire()\nexcept BeanlibError as e:\n    print('refused', e); sys.exit(0)\n"
            "print('held'); time.sleep(3); lease.release()\n")
    drivers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
               for _ in range(2)]
    outputs = [d.communicate(timeout=120)[0] for d in drivers]
    assert sorted(o.split()[0] for o in outputs) == ["held", "refused"], outputs
    assert not (tmp_path / "run" / LEASE).exists()  # released by the one that held it


@pytest.mark.parametrize("host, pid, age, force, why", [
    ("other-host", 4242, STALE_SECONDS + 5, False, "its heartbeat stopped"),
    (socket.gethostname(), 2**22 + 12345, 0.0, False, "its process is gone"),  # a killed driver of this host
    ("other-host", 4242, 0.0, True, "--force"),
])
def test_a_dead_or_forced_lease_is_taken_over_with_a_line(tmp_path, host, pid, age, force, why):
    _held_by(tmp_path / "run", host, pid, age)
    lines = []
    lease = Lease(RunStore(str(tmp_path), "run"), out=lines.append)
    lease.acquire(force=force)
    try:
        assert lease.read()["token"] == lease.mine["token"]
        assert len(lines) == 1 and f"took over the run from the driver pid {pid} on {host}" in lines[0] and why in lines[0]
    finally:
        lease.release()
    assert not (tmp_path / "run" / LEASE).exists()


def test_a_live_lease_is_refused_and_kept(tmp_path):
    _held_by(tmp_path / "run", "other-host", 4242)
    with pytest.raises(BeanlibError, match="being swept by another driver"):
        Lease(RunStore(str(tmp_path), "run"), out=lambda line: None).acquire()
    assert json.loads((tmp_path / "run" / LEASE).read_text())["token"] == "theirs"


def test_the_holder_renews_its_heartbeat_while_it_runs(tmp_path, monkeypatch):
    from beanlib import lease as module

    monkeypatch.setattr(module, "HEARTBEAT_SECONDS", 0.2)
    lease = Lease(RunStore(str(tmp_path), "run"), out=lambda line: None)
    lease.acquire()
    try:
        first = lease.read()["heartbeat"]
        deadline = time.time() + 30
        while lease.read()["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.1)
        assert lease.read()["heartbeat"] > first
    finally:
        lease.release()
