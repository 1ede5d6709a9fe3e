"""What building the training state before `fit` saves (beanlib.backend.build_for_fit): one Inception-v3 trial that
fine-tunes, run in fresh processes with it and without it (the second trace TensorFlow makes then), alternately.

    python -m benchmarks.one_trace [--unfreeze-from 133] [--image-size 75] [--per-class 2] [--runs 2]

Prints, per leg, each run's head epoch, first fine-tune epoch and whole-process seconds, and the medians. Random-init
weights and synthetic images: the trace's cost depends on the open blocks, not on what the weights hold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CHILD = """
import json, sys
from beanlib import backend
if sys.argv[1] == "without":
    backend.build_for_fit = lambda model, x, y: None
from beanlib.data import load_beans
from beanlib.train import run_trial
config = {"model": "inception", "weights": "none", "image_size": int(sys.argv[2]), "epochs": 1, "batch_size": 8,
          "unfreeze_from": int(sys.argv[3]), "fine_tune_epochs": 1}
result = run_trial(config, load_beans("synthetic", int(sys.argv[2]), per_class=int(sys.argv[4])))
print(json.dumps([r["seconds"] for r in result.history]))
"""


def one_run(leg: str, args) -> tuple[float, float, float]:
    """(head epoch, first fine-tune epoch, whole process) seconds of one trial in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, leg, str(args.image_size), str(args.unfreeze_from), str(args.per_class)],
                          capture_output=True, text=True, check=True)
    head, fine_tune = json.loads(done.stdout.strip().splitlines()[-1])
    return head, fine_tune, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unfreeze-from", type=int, default=133)
    parser.add_argument("--image-size", type=int, default=75)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    legs = {"with": [], "without": []}
    for _ in range(args.runs):
        for leg, runs in legs.items():
            runs.append(one_run(leg, args))
            print(f"{leg:8s} head {runs[-1][0]:6.2f}s  first fine-tune epoch {runs[-1][1]:6.2f}s  process {runs[-1][2]:6.2f}s")
    for leg, runs in legs.items():
        head, fine_tune, whole = (statistics.median(column) for column in zip(*runs))
        print(f"median {leg:8s} head {head:6.2f}s  first fine-tune epoch {fine_tune:6.2f}s  process {whole:6.2f}s")


if __name__ == "__main__":
    main()
