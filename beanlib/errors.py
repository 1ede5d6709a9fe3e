"""The one exception type beanlib raises for bad input: a one-line message naming the problem and the fix."""


class BeanlibError(ValueError):
    """Bad input or environment, explained in one line (cause, then fix).

    Entry points catch it, print the message and exit non-zero, so users see a
    sentence rather than a traceback.
    """
