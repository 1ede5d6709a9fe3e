"""A trial's scratch files on their way to the run's storage (checkpoints, its model), named after their process.

A worker killed mid-trial (Ray's OOM killer, a lost node, Ctrl-C) cannot remove what it was writing: a checkpoint
of a 299px LeNet is 0.6 GB. The process id in each name tells those orphans from files a live process is writing,
and the next trial on the machine removes them (`remove_orphans`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from typing import Iterator

KINDS = ("checkpoint", "model")
# beanlib-KIND-PID-RANDOM[SUFFIX]; files of older beanlib versions (no PID) do not match and are left alone.
_NAME = re.compile(rf"^beanlib-({'|'.join(KINDS)})-(\d+)-[0-9a-f]{{12}}")


def path(kind: str, suffix: str = "") -> str:
    """A new name in the temporary folder for a `kind` ("checkpoint", "model") file or folder of this process."""
    if kind not in KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}: use checkpoint or model")
    return os.path.join(tempfile.gettempdir(), f"beanlib-{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


@contextlib.contextmanager
def directory(kind: str) -> Iterator[str]:
    """A scratch folder of this process, removed when the block ends (or by `remove_orphans` if the process dies)."""
    folder = path(kind)
    os.makedirs(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def owner(name: str) -> int | None:
    """The process id in a scratch file's name; None for a name that is not one (or of an older beanlib)."""
    found = _NAME.match(name)
    return int(found.group(2)) if found else None


def remove_orphans() -> list[str]:
    """Remove the scratch files and folders whose process is gone; returns their names."""
    folder, removed = tempfile.gettempdir(), []
    for name in os.listdir(folder):
        pid = owner(name)
        if pid is None or alive(pid):
            continue
        full = os.path.join(folder, name)
        with contextlib.suppress(OSError):  # another trial on this machine may be removing it at the same time
            shutil.rmtree(full) if os.path.isdir(full) else os.remove(full)
            removed.append(name)
    return removed


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
