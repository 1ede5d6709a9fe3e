"""What a trial computes, as a version: rows trained by code that computes differently are never mixed silently.

`SEMANTICS` is bumped by any change that alters what a trial computes for a given config and seed (its data
order, initialisation, a layer, a default the id does not cover). Every trials row records the version of the
code that trained it; the sweep says on resume which finished trials are stale (`--retrain-stale` trains them
again), and the report flags every setting whose runs mix versions. tests/test_semantics.py pins a tiny trial's
history for the current version, so that a change in what trials compute fails it until the version is bumped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SEMANTICS = 1

# Each version and the commit that introduced it: what changed. Rows written before the column existed are
# dated by their `beanlib_commit` against these (RunStore.upgrade), where a git checkout can tell.
HISTORY: tuple[tuple[int, str, str], ...] = (
    (0, "", "the first versions: a tf.data shuffle seeded once per trial, reshuffled each epoch by TensorFlow"),
    (1, "c81e657", "each epoch's data order a function of (seed, epoch) on every backend (checkpoints resume exactly)"),
)


def describe(version: int | None) -> str:
    """A version in words, for the sweep's and the report's lines."""
    if version is None:
        return "unknown (trained before beanlib recorded it, by a commit this checkout cannot date)"
    return next((f"v{v} ({what})" for v, _, what in HISTORY if v == version), f"v{version} (newer than this beanlib)")


def of_commit(commit: str | None) -> int | None:
    """The semantics version of the code at `commit` (a row's beanlib_commit), by git ancestry against HISTORY;
    None when no git checkout here knows the commit (an installed wheel, a commit from elsewhere)."""
    if not commit or commit == "unknown":
        return None
    commit = commit.removesuffix("+dirty")
    here = Path(__file__).resolve().parent
    version = 0
    for v, introduced, _ in HISTORY[1:]:
        answer = _git(here, "merge-base", "--is-ancestor", introduced, commit)
        if answer is None:
            return None
        if answer:
            version = v
    return version


def _git(cwd: Path, *args: str) -> bool | None:
    """True/False for a git test's exit status 0/1; None when git cannot answer (no checkout, an unknown commit)."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(done.returncode)
