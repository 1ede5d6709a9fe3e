"""What a person sees while a sweep runs: native log lines hidden, Ray Tune's restore hint hidden, a live progress bar,
one line per trial.

TensorFlow, XLA and absl write C++ log lines straight to file descriptor 2, many of
them before any log level applies (absl's "before InitializeLog" lines, the CUDA
probe on a CPU machine). `hide_native_logs` puts a filter on that descriptor that
drops exactly those lines and passes everything else through; it stands aside when
the user set TF_CPP_MIN_LOG_LEVEL, i.e. asked for TensorFlow's logs their own way.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
import time

NATIVE_LOG = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"  # absl: I0000 00:00:1796073643.352592   6983 port.cc:153]
    rb"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IWEF] \d+ \d+\] \S+:\d+:"  # Ray: [2026-12-06 17:36:24,537 W 9941 9941] gcs_client.cc:210:
    rb"|To enable the following instructions: .* rebuild TensorFlow)"  # the tail of TensorFlow's CPU-feature notice
)

_FILTER: dict[str, object] = {}


def user_set_native_logging() -> bool:
    """Whether the user chose TensorFlow's C++ log level themselves (then beanlib shows what it prints)."""
    return "TF_CPP_MIN_LOG_LEVEL" in os.environ and not os.environ.get("BEANLIB_SET_TF_LOG_LEVEL")


def hide_native_logs() -> None:
    """Drop C++ log lines from this process's stderr (fd 2) from now on, unless the user set their own log level.

    Child processes inherit the setting through the environment (Ray workers call this again on start).
    """
    if _FILTER or user_set_native_logging():
        return
    os.environ.update(TF_CPP_MIN_LOG_LEVEL="3", BEANLIB_SET_TF_LOG_LEVEL="1")  # level 3: fatal only, once absl is up
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    real_stderr = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as source:
            for line in iter(source.readline, b""):
                if not NATIVE_LOG.match(line):
                    os.write(real_stderr, line)

    thread = threading.Thread(target=pump, name="beanlib-stderr-filter", daemon=True)
    thread.start()
    _FILTER.update(thread=thread, real_stderr=real_stderr)
    atexit.register(_restore_stderr)


def _restore_stderr() -> None:
    """Put the real stderr back and let the filter forward what it still holds (at exit: no line is lost)."""
    if not _FILTER:
        return
    sys.stderr.flush()
    os.dup2(_FILTER["real_stderr"], 2)  # closes our pipe's last write end in this process: the filter sees EOF
    _FILTER["thread"].join(timeout=2)  # a child process may still hold the pipe open: do not wait for it
    _FILTER.clear()


class _TunesRestoreHint(logging.Filter):
    """Ray Tune's notes on a run stopped by Ctrl+C that do not hold for a beanlib sweep: "Resume experiment with:
    Tuner.restore(...)" (the same jobs.sweep command resumes it) and "Failed to fetch metrics for N trial(s)", one line
    per trial that had not started. Its "Stop signal received" stays: it tells the user the stop was heard."""

    HIDDEN = ("Experiment has been interrupted", "Failed to fetch metrics for")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.HIDDEN)


@contextlib.contextmanager
def without_tunes_restore_hint():
    """Hide `_TunesRestoreHint`'s notes from the loggers that write them, while Tune runs."""
    hint, loggers = _TunesRestoreHint(), [logging.getLogger(n) for n in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")]
    for logger in loggers:
        logger.addFilter(hint)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(hint)


class SweepConsole:
    """The default console of `jobs.sweep`: lines printed above a live bar of done / running / failed trials,
    elapsed time and an estimate of the time left. Off a terminal (CI, a log file) the bar is drawn once, at the end."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(highlight=False, soft_wrap=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[state]}"), TimeElapsedColumn(), TextColumn("left"),
                            TimeRemainingColumn(), console=self.console)
        self.task = None
        self.running = self.failed = 0
        self.started = time.perf_counter()

    def line(self, text: str) -> None:
        """One line of output, above the bar."""
        self.console.print(text, markup=False)

    def start(self, total: int, description: str) -> None:
        """Show the bar for `total` trials."""
        self.task = self.bar.add_task(description, total=total, state=self._state())
        self.bar.start()

    def trial_started(self) -> None:
        self.running += 1
        self._refresh()

    def trial_finished(self, failed: bool) -> None:
        self.running = max(0, self.running - 1)
        self.failed += failed
        self._refresh(advance=1)

    def stop(self) -> None:
        """Draw the bar a last time and give the terminal back."""
        if self.task is not None:
            self.bar.stop()
            self.task = None

    def _state(self) -> str:
        return f"running {self.running}, failed {self.failed}"

    def _refresh(self, advance: int = 0) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=advance, state=self._state())
