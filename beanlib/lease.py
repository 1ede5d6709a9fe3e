"""One driver per run: a lease in the run's folder, renewed while a sweep runs, refused to a second driver.

RUN/.lease.json (hidden, so no reader of the results sees it) names the driver that holds the run: host, pid,
start time, a random token, and a heartbeat that a thread renews every HEARTBEAT_SECONDS. A second sweep of the
same run refuses in one line that names the first. A lease is stale, and taken over with a line that says so,
when its heartbeat is older than STALE_SECONDS, or at once when it names a process of this host that is gone
(a killed driver's resume needs no wait). `--force` takes it over in any case.

On a local filesystem the first lease is created exclusively (O_EXCL): of two drivers that start together, one
gets it. Elsewhere, and when a stale lease is taken over, the lease is written whole and read back after
SETTLE_SECONDS, and the driver whose token is not there refuses: that holds on object stores with read-after-write
consistency (S3, GCS) as long as a writer is not stalled longer than SETTLE_SECONDS between its read and its write.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable

import pyarrow.fs as pafs

from beanlib.errors import BeanlibError

LEASE = ".lease.json"
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 60.0  # six missed heartbeats
SETTLE_SECONDS = 0.5  # longer than one lease write takes, so that a racing writer's lease is seen on read-back


class Lease:
    """The lease of one run (a beanlib.results.RunStore) for this process."""

    def __init__(self, store, out: Callable[[str], None] = print):
        self.store, self.out = store, out
        self.path = f"{store.path}/{LEASE}"
        self.mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
                     "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created: str | None = None  # the highest folder that acquire made (the run's, or the results root)

    def acquire(self, force: bool = False) -> None:
        """Hold the run, or raise one BeanlibError that names the driver holding it and what to do."""
        self._created = _missing_top(self.store.fs, self.store.path)
        held = self.read()
        if held and not force and not self._stale(held):
            raise BeanlibError(self._refusal(held))
        if held:
            self.out(f"warning: took over the run from the driver {_who(held)} ({'--force' if force else self._why_stale(held)})")
            self._write()
        elif not self._create():  # a local filesystem: the first lease is created exclusively, so no race
            raise BeanlibError(self._refusal(self.read() or {}))
        time.sleep(SETTLE_SECONDS)
        now = self.read()
        if not now or now.get("token") != self.mine["token"]:
            raise BeanlibError(self._refusal(now or {}))
        self._thread = threading.Thread(target=self._beat, name="beanlib-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and remove the lease, if it is still this process's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = self.read()
        if held and held.get("token") == self.mine["token"]:
            self.store.fs.delete_file(self.path)
        if self._created and not any(i.type == pafs.FileType.File for i in self.store.fs.get_file_info(
                pafs.FileSelector(self._created, recursive=True, allow_not_found=True))):
            self.store.fs.delete_dir(self._created)  # a sweep that stopped before writing anything leaves no folder

    def read(self) -> dict | None:
        """The lease as written, or None when there is none (or it cannot be parsed: a writer's crash mid-write
        cannot leave that, the write being atomic, so it is treated as no lease)."""
        try:
            with self.store.fs.open_input_stream(self.path) as f:
                return json.loads(f.read())
        except (FileNotFoundError, OSError, ValueError):
            return None

    def _write(self) -> None:
        from beanlib.results import write_atomically

        payload = json.dumps({**self.mine, "heartbeat": time.time()}).encode()
        try:
            self.store.fs.create_dir(self.store.path, recursive=True)
            write_atomically(self.store.fs, self.path, lambda out: out.write(payload))
        except OSError as error:
            raise BeanlibError(f"cannot write results under {self.store.uri} ({error}): pass a writable --results") from None

    def _create(self) -> bool:
        """Write the first lease; on a local filesystem only if none exists (O_EXCL): False when another driver's
        lease appeared first. Elsewhere a plain write, settled by the read-back in `acquire`."""
        if not isinstance(self.store.fs, pafs.LocalFileSystem):
            self._write()
            return True
        payload = json.dumps({**self.mine, "heartbeat": time.time()}).encode()
        try:
            self.store.fs.create_dir(self.store.path, recursive=True)
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise BeanlibError(f"cannot write results under {self.store.uri} ({error}): pass a writable --results") from None
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            held = self.read()
            if held and held.get("token") != self.mine["token"]:
                self.out(f"warning: the driver {_who(held)} took this run over: this sweep's results may mix with its")
                return
            try:
                self._write()
            except BeanlibError:  # a missed heartbeat (a full disk, a lost mount): the next one tries again
                pass

    def _stale(self, held: dict) -> bool:
        return bool(self._why_stale(held))

    def _why_stale(self, held: dict) -> str:
        age = time.time() - float(held.get("heartbeat", 0))
        if (held.get("host"), held.get("pid")) == (self.mine["host"], self.mine["pid"]):
            return "this process's own, left by an earlier sweep in it"
        if age > STALE_SECONDS:
            return f"its heartbeat stopped {age:.0f}s ago"
        if held.get("host") == self.mine["host"] and not _alive(int(held.get("pid", 0))):
            return "its process is gone"
        return ""

    def _refusal(self, held: dict) -> str:
        age = time.time() - float(held.get("heartbeat", time.time()))
        return (f"{self.store.uri} is being swept by another driver, {_who(held)} (heartbeat {age:.0f}s ago): wait for "
                f"it to finish, or stop it; a driver that died is taken over once its heartbeat is {STALE_SECONDS:.0f}s "
                "old, and --force takes the run over now")


def _missing_top(fs, path: str) -> str | None:
    """The highest folder on `path` that does not exist yet (None when the path exists)."""
    top = None
    while path and "/" in path and fs.get_file_info(path).type == pafs.FileType.NotFound:
        top, path = path, path.rsplit("/", 1)[0]
    return top


def _who(held: dict) -> str:
    return f"pid {held.get('pid')} on {held.get('host')}, started {held.get('started')}"


def _alive(pid: int) -> bool:
    """Whether a process of this host with that pid exists."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
