"""The one exception type beanlib raises for bad input (a one-line message naming the problem and the fix), and how a
failed trial's error is classed: out of memory, caused by its environment, or its own."""

from __future__ import annotations

import errno


class BeanlibError(ValueError):
    """Bad input or environment, explained in one line (cause, then fix).

    Entry points catch it, print the message and exit non-zero, so users see a
    sentence rather than a traceback.
    """


# Out of memory as each backend says it: TensorFlow's and Python's exception classes, Ray's (a worker killed by its
# memory monitor), torch's class and CUDA message, and XLA's status code (JAX raises a plain XlaRuntimeError).
OOM_ERRORS = ("ResourceExhaustedError", "MemoryError", "OutOfMemoryError", "RESOURCE_EXHAUSTED", "CUDA out of memory")

# What the machine or the cluster did to a trial, not what the trial did: a full or read-only disk, a permission, a
# lost connection, a lost node or object (Ray's classes). Such a trial is recorded as "environment" and runs again.
NO_SPACE = ("No space left on device", "Disk quota exceeded", "OutOfDiskError")
ENVIRONMENT_ERRORS = (*NO_SPACE, "Read-only file system", "Permission denied", "PermissionError", "ConnectionError",
                      "ConnectionResetError", "ConnectionRefusedError", "BrokenPipeError", "NodeDiedError",
                      "ObjectLostError", "OwnerDiedError")


def failure_status(error: BaseException | str) -> str:
    """'oom' for an out-of-memory error (an exception, or the text Ray gives for a dead worker), 'environment' for
    one the environment caused (ENVIRONMENT_ERRORS), else 'error' (the trial's own)."""
    text = error if isinstance(error, str) else " ".join([*(cls.__name__ for cls in type(error).__mro__), str(error)[:2000]])
    if any(name in text for name in OOM_ERRORS):
        return "oom"
    return "environment" if any(name in text for name in ENVIRONMENT_ERRORS) else "error"


def first_line(error: BaseException) -> str:
    """An exception as a row's `error` or a one-line message: its class and the first line of its text."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:500]}"


def no_space(error: BaseException | str | None) -> bool:
    """Whether `error`, or an exception it was raised from or during, says a disk or quota is full."""
    seen = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) or any(t in str(error) for t in NO_SPACE):
            return True
        error = error.__cause__ or error.__context__
    return isinstance(error, str) and any(t in error for t in NO_SPACE)
