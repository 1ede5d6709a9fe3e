"""A trial's scratch files on their way to the run's storage (checkpoints, its model), named after their process.

A worker killed mid-trial (Ray's OOM killer, a lost node, Ctrl-C) cannot remove what it was writing: a checkpoint
of a 299px LeNet is 0.6 GB. The machine and process in each name tell those orphans from files a live process is
writing, and the next trial on the machine removes them (`remove_orphans`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
import uuid
from typing import Iterator

KINDS = ("checkpoint", "model")
# beanlib-KIND-HOST-PID-RANDOM[SUFFIX]. HOST (a hash of the host name) keeps apart containers that share a
# temporary folder but not their process ids. Files of older beanlib versions do not match and are left alone.
_NAME = re.compile(rf"^beanlib-(?:{'|'.join(KINDS)})-([0-9a-f]{{8}})-(\d+)-[0-9a-f]{{12}}")
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def path(kind: str, suffix: str = "") -> str:
    """A new name in the temporary folder for a `kind` ("checkpoint", "model") file or folder of this process."""
    if kind not in KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}: use one of {', '.join(KINDS)}")
    return os.path.join(tempfile.gettempdir(), f"beanlib-{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


@contextlib.contextmanager
def directory(kind: str) -> Iterator[str]:
    """A scratch folder of this process, removed when the block ends (or by `remove_orphans` if the process dies)."""
    folder = path(kind)
    os.mkdir(folder, 0o700)  # as tempfile's own folders: a trial's weights are no other user's business
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def orphaned(name: str) -> bool:
    """Whether `name` (in the temporary folder) is a scratch file or folder of this machine whose process is gone."""
    found = _NAME.match(name)
    return bool(found) and found.group(1) == _HOST and not _alive(int(found.group(2)))


def remove_orphans() -> list[str]:
    """Remove the scratch files and folders whose process is gone; returns their names."""
    folder, removed = tempfile.gettempdir(), []
    for name in filter(orphaned, os.listdir(folder)):
        full = os.path.join(folder, name)
        with contextlib.suppress(OSError):  # another trial on this machine may be removing it at the same time
            if os.path.isdir(full):
                shutil.rmtree(full)
            else:
                os.remove(full)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (a zombie counts: it is removed at the next look)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
