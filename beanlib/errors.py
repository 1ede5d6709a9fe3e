"""The one exception type beanlib raises for bad input (a one-line message naming the problem and the fix), and how a
failed trial's error is classed."""


class BeanlibError(ValueError):
    """Bad input or environment, explained in one line (cause, then fix).

    Entry points catch it, print the message and exit non-zero, so users see a
    sentence rather than a traceback.
    """


# Out of memory as each backend says it: TensorFlow's and Python's exception classes, Ray's (a worker killed by its
# memory monitor), torch's class and CUDA message, and XLA's status code (JAX raises a plain XlaRuntimeError).
OOM_ERRORS = ("ResourceExhaustedError", "MemoryError", "OutOfMemoryError", "RESOURCE_EXHAUSTED", "CUDA out of memory")


def failure_status(error: BaseException | str) -> str:
    """'oom' for an out-of-memory error (an exception, or the text Ray gives for a dead worker), else 'error'."""
    text = error if isinstance(error, str) else " ".join([*(cls.__name__ for cls in type(error).__mro__), str(error)[:2000]])
    return "oom" if any(name in text for name in OOM_ERRORS) else "error"
