"""Scratch files (beanlib.scratch): what a killed worker was writing is removed, what a live process writes is not."""

import os
import subprocess
import sys
import tempfile

from beanlib import scratch


def test_scratch_files_of_a_dead_process_are_removed_and_a_live_ones_are_not():
    made = ("from beanlib import scratch; import os; c = scratch.path('checkpoint'); os.makedirs(c); "
            "open(os.path.join(c, 'arr_0.npy'), 'w').close(); m = scratch.path('model', '-t.keras'); open(m, 'w').close(); print(c, m)")
    dead = subprocess.run([sys.executable, "-c", made], capture_output=True, text=True, check=True).stdout.split()
    assert len(dead) == 2 and all(os.path.exists(p) and scratch.orphaned(os.path.basename(p)) for p in dead)
    older = tempfile.mkdtemp(prefix="beanlib-checkpoint-")  # an older beanlib's name: no machine or process, left alone
    try:
        with scratch.directory("checkpoint") as live:
            assert oct(os.stat(live).st_mode & 0o777) == "0o700"
            scratch.remove_orphans()
            assert not any(os.path.exists(p) for p in dead)  # (another trial on this machine may have removed them first)
            assert os.path.isdir(live) and not scratch.orphaned(os.path.basename(live)) and os.path.isdir(older)
        assert not os.path.exists(live)
    finally:
        os.rmdir(older)
