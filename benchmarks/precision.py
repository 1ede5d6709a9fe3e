"""What bf16 buys on this machine: training images per second by family, phase and precision.

    python -m benchmarks.precision --data PATH [--per-class N] [--epochs 2] [--cpus 1] [--cases lenet-128 ...]

Each case runs `jobs.trial` once per precision, each in a fresh process (a dtype policy is process-wide), on the
same data and seed. A phase's speed is its training images over its last epoch's seconds (the first epoch of a
phase also traces and compiles); Inception-v3's head phase trains on cached base features, so the base's forward
pass over every split is shown apart as `features`. Prints the CPU model, its bf16 flags (none: bf16 is emulated
there) and a table with each phase's speed-up of mixed_bfloat16 over float32. Cases:
  lenet-128, lenet-299        the baseline LeNet at 128 and 299 px
  inception-head-299          Inception-v3, head only (its features, then the head)
  inception-top6-299          Inception-v3, top 6 blocks fine-tuned (the study's slowest trial)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASES = {
    "lenet-128": ["--model", "lenet", "--image-size", "128"],
    "lenet-299": ["--model", "lenet", "--image-size", "299"],
    "inception-head-299": ["--model", "inception", "--image-size", "299", "--set", "weights=none"],
    "inception-top6-299": ["--model", "inception", "--image-size", "299", "--set", "weights=none",
                           "--set", "unfreeze_from=133"],
}
PRECISIONS = ("float32", "mixed_bfloat16")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--per-class", type=int, default=None, help="images per class per split (default: all)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per phase (at least 2: the last one is timed)")
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = p.parse_args(argv)

    from beanlib.console import hide_native_logs

    hide_native_logs()  # before the data's decoding imports TensorFlow
    from beanlib import precision
    from beanlib.data import load_beans

    device = precision.probe()
    model = _cpu_model()
    native = sorted(set(precision.NATIVE_BF16_FLAGS) & device.cpu_flags)
    print(f"CPU: {model}; bf16 flags: {', '.join(native) or 'none (bf16 is emulated)'}; "
          f"auto would pick {precision.choose(device, on_gpu=False)[0]}; {args.cpus} CPU(s) per trial")
    print(f"{'case':<20} {'phase':<10} {'float32 img/s':>14} {'bf16 img/s':>11} {'bf16 speed-up':>14} {'test acc f32/bf16':>18}")
    for case in args.cases:
        size = int(CASES[case][CASES[case].index("--image-size") + 1])
        data = load_beans(args.data, size, args.per_class)
        counts = {split: len(data.split(split).labels) for split in ("train", "validation", "test")}
        runs = {p: _trial(case, p, args) for p in PRECISIONS}
        speeds = {p: _speeds(r, counts) for p, r in runs.items()}
        accuracy = "/".join(f"{100 * runs[p]['test_accuracy']:.1f}" for p in PRECISIONS)
        for phase in speeds["float32"]:
            f32, bf16 = speeds["float32"][phase], speeds["mixed_bfloat16"].get(phase, float("nan"))
            print(f"{case:<20} {phase:<10} {f32:>14.1f} {bf16:>11.1f} {bf16 / f32:>13.2f}x {accuracy:>18}")


def _trial(case: str, precision: str, args) -> dict:
    """One `jobs.trial` run in its own process; its result as a dict."""
    command = [sys.executable, "-m", "jobs.trial", *CASES[case], "--data", args.data, "--epochs", str(args.epochs),
               "--cpus", str(args.cpus), "--set", f"precision={precision}"]
    if "inception" in case:
        command += ["--set", f"fine_tune_epochs={args.epochs}"]
    if args.per_class:
        command += ["--per-class", str(args.per_class)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode != 0:
        raise SystemExit(f"{case} at {precision} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout[done.stdout.index("{"):])


def _speeds(result: dict, counts: dict[str, int]) -> dict[str, float]:
    """Images per second: each phase's last epoch, and the base features (every split, once) where computed."""
    speeds = {}
    if result.get("feature_seconds"):
        speeds["features"] = sum(counts.values()) / result["feature_seconds"]
    for epoch in result["history"]:
        speeds[epoch["phase"]] = counts["train"] / epoch["seconds"]  # the last epoch of each phase stays
    return speeds


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
