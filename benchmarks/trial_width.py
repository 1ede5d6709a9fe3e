"""Narrow or wide trials on a small machine: N one-thread LeNet trials at once against one N-thread trial.

Which a machine favours (it varies between machines of the same size). Each leg trains the same LeNet (the `seed` baseline)
on the same prepared data; the figure is training images per second summed over the trials running at once.

    python -m benchmarks.trial_width --data PATH [--image-size 128] [--epochs 3] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from jobs.common import default_data


def one_trial(data: str, size: int, epochs: int, cpus: int) -> None:
    """One trial in this process with `cpus` threads; prints its steady images/s (first epoch left out: tracing)."""
    from beanlib.data import load_beans
    from beanlib.train import run_trial

    prepared = load_beans(data, size)
    result = run_trial({"model": "lenet", "image_size": size, "epochs": epochs}, prepared, cpus=cpus)
    steady = result.history[1:] or result.history
    print(json.dumps({"images_per_second": len(prepared.train) * len(steady) / sum(r["seconds"] for r in steady)}))


def leg(args, processes: int, threads: int) -> float:
    """Images/s summed over `processes` concurrent trials of `threads` threads each."""
    command = [sys.executable, "-m", "benchmarks.trial_width", "--one", str(threads), "--data", args.data,
               "--image-size", str(args.image_size), "--epochs", str(args.epochs)]
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    outputs = [p.communicate()[0] for p in running]
    if any(p.returncode for p in running):
        sys.exit(f"a trial failed: {' '.join(command)}")
    return sum(json.loads(out.strip().splitlines()[-1])["images_per_second"] for out in outputs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=default_data())
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="cores to fill (default: all)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single trial's own process, with this many threads
    args = p.parse_args()
    if args.one:
        return one_trial(args.data, args.image_size, args.epochs, args.one)
    from beanlib.data import load_beans

    load_beans(args.data, args.image_size)  # decoded once into the cache, outside the timings
    print(f"LeNet baseline, {args.image_size}px, data {args.data}, {args.cpus} cores, steady epochs of {args.epochs}")
    for processes, threads in ((1, 1), (1, args.cpus), (args.cpus, 1)):
        start = time.perf_counter()
        rate = leg(args, processes, threads)
        print(f"{processes} trial(s) x {threads} thread(s): {rate:6.0f} images/s together  ({time.perf_counter() - start:.0f}s)")


if __name__ == "__main__":
    main()
