"""A study's trials on one accelerator without Ray: in a row, then packed as N processes; compile and steady costs.

Needs only keras, a backend (JAX on a GPU) and numpy: synthetic data at any size, a random-init Inception base
(the timings do not depend on the weights). Per trial it prints, for its costliest phase (LeNet's training,
Inception's fine-tuning when it has one), the first epoch's seconds (compilation included), the steady epoch's
(the median of the others) and images/s; for the whole study the wall time in a row (one
process, trial after trial) and packed (N processes sharing the device, trials dealt longest first, each process
given 1/N of the memory). Each mode starts with an empty compilation cache of its own, so a repeat's first epoch
shows what reusing an earlier trial's compiled code saves ($BEANLIB_COMPILE_CACHE=off to see it without).

    python -m benchmarks.gpu_study [--study seed] [--image-size 299] [--repeats 1] [--packed 4] [--per-class N]
        [--precision float32|mixed_bfloat16|mixed_float16] [--modes row,packed] [--only SETTING,...]

On the lent H200 (JAX and PyTorch installed there, no TensorFlow, no Ray, no network; Python 3.12). Here,
once, in the repo root (`.whl/` kept out of git; the device tool carries it):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl keras==3.15.1 namex optree

Then one `device` call with carry [".whl"] and the command (the other needs of keras are installed there):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. &&
    PYTHONUNBUFFERED=1 KERAS_BACKEND=jax python3 -m benchmarks.gpu_study --study seed --image-size 299 --packed 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def worker(args) -> None:
    """One process: the trials numbered in `--trials`, one after another; one JSON line per trial."""
    from beanlib import backend
    from beanlib.data import load_beans
    from beanlib.train import run_trial

    backend.choose(None)
    backend.configure(None, gpu_share=args.share)
    specs = _plan(args)
    data = load_beans("synthetic", args.image_size, args.per_class)
    for index in map(int, args.trials.split(",")):
        spec = specs[index]
        result = run_trial(spec.config, data, gpu_share=args.share)
        phases: dict[str, list[float]] = {}
        for record in result.history:
            phases.setdefault(record["phase"], []).append(record["seconds"])
        last = list(phases.values())[-1]  # the costly phase: LeNet's only one, Inception's fine-tune when it has one
        steady = statistics.median(last[1:]) if len(last) > 1 else float("nan")
        print(json.dumps({"index": index, "setting": spec.setting, "repeat": spec.repeat, "status": result.status,
                          "first_epoch_s": last[0], "steady_epoch_s": steady, "feature_s": result.feature_seconds,
                          "images_per_second": len(data.train) / steady if steady == steady else float("nan")}), flush=True)


def _plan(args):
    from beanlib.studies import estimated_cost, plan

    overrides = {"image_size": args.image_size, "weights": "none", "precision": args.precision}
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.fine_tune_epochs:
        overrides["fine_tune_epochs"] = args.fine_tune_epochs
    specs = [s for s in plan(args.study, repeats=args.repeats, overrides=overrides) if not args.only or s.setting in args.only.split(",")]
    return sorted(specs, key=lambda s: -estimated_cost(s.config))  # longest first, as the sweep does


def run_mode(args, processes: int) -> tuple[float, list[dict]]:
    """Run every trial in `processes` concurrent worker processes (trials dealt round-robin, longest first)."""
    count = len(_plan(args))
    base = [sys.executable, "-m", "benchmarks.gpu_study", "--study", args.study, "--image-size", str(args.image_size),
            "--repeats", str(args.repeats), "--precision", args.precision, "--share", str(1 / processes)]
    base += [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("per_class", "epochs", "fine_tune_epochs", "only") if getattr(args, k)]
    with tempfile.TemporaryDirectory(prefix="beanlib-compile-") as cache:
        env = {**os.environ}
        if env.get("BEANLIB_COMPILE_CACHE") != "off":
            env["BEANLIB_COMPILE_CACHE"] = cache  # empty at the start of each mode
        start = time.perf_counter()
        running = [subprocess.Popen(base + ["--trials", ",".join(map(str, range(p, count, processes)))], env=env,
                                    stdout=subprocess.PIPE, text=True) for p in range(processes) if p < count]
        outputs = [p.communicate()[0] for p in running]
        wall = time.perf_counter() - start
    if any(p.returncode for p in running):
        sys.exit(f"a worker failed (exit codes {[p.returncode for p in running]})")
    rows = [json.loads(line) for out in outputs for line in out.splitlines() if line.startswith("{")]
    return wall, sorted(rows, key=lambda r: r["index"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="seed")
    p.add_argument("--image-size", type=int, default=299)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--per-class", type=int, help="images per class per split (default: the full beans counts)")
    p.add_argument("--epochs", type=int, help="override the study's epochs")
    p.add_argument("--fine-tune-epochs", type=int)
    p.add_argument("--precision", default="float32")
    p.add_argument("--only", help="only these settings, comma-separated (e.g. baseline,top-2-blocks)")
    p.add_argument("--packed", type=int, default=4, help="processes sharing the device in the packed mode")
    p.add_argument("--modes", default="row,packed")
    p.add_argument("--trials", help=argparse.SUPPRESS)  # a worker process: these trial numbers
    p.add_argument("--share", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trials:
        return worker(args)
    from beanlib.backend import choose

    name = choose(None)
    print(f"{args.study} at {args.image_size}px, {args.repeats} repeat(s), backend {name}, precision {args.precision}, "
          f"compile cache {'off' if os.environ.get('BEANLIB_COMPILE_CACHE') == 'off' else 'on'}", flush=True)
    walls = {}
    for mode in args.modes.split(","):
        processes = 1 if mode == "row" else args.packed
        wall, rows = run_mode(args, processes)
        walls[mode] = wall
        print(f"\n{mode}: {processes} process(es), wall {wall:.1f}s")
        print(f"{'setting':26s} {'rep':>3s} {'first epoch s':>13s} {'steady s':>9s} {'images/s':>9s} {'features s':>10s}")
        for r in rows:
            print(f"{r['setting']:26s} {r['repeat']:3d} {r['first_epoch_s']:13.2f} {r['steady_epoch_s']:9.3f} "
                  f"{r['images_per_second']:9.0f} {r['feature_s']:10.2f}")
    print("\nwall: " + ", ".join(f"{mode} {wall:.1f}s" for mode, wall in walls.items()))


if __name__ == "__main__":
    main()
