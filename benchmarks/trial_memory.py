"""Peak resident memory of a study's trials, each alone in a fresh process (as a Ray trial runs), with its seconds.

    python -m benchmarks.trial_memory --data PATH [--study seed] [--image-size 299] [--epochs 1]
        [--only SETTING ...] [--weights PATH] [--limit-gib 4] [--checkpoint] [--sweep]

Every setting of the study (or those named by --only) runs `epochs` epochs (and as many fine-tune epochs) on one
CPU thread in a child process that loads the prepared data from the cache, trains, evaluates, and reports its peak
resident memory (`beanlib.train.peak_rss_bytes`, what the sweep's rows record). Without checkpoints one epoch
gave a 20-epoch trial's peak (LeNet 12-32-240 at 299px, before the input pipeline's fix: 3.63 GiB here, 3.68 GiB in
the 20-epoch sweep row). With
them a 20-epoch sweep trial of that setting peaked at 3.79 GiB against 2.82-3.40 GiB for 2 epochs (one run each;
the same run varies by 0.3-0.6 GiB): for a margin, measure with --epochs 20 or read the sweep's rows. Prints one line per
setting and the largest (overall and LeNet's), against --limit-gib. With --checkpoint each trial also writes a
checkpoint after every epoch but the last, as a sweep's trial does (so --epochs 2 or more), and the peak includes it.
With --sweep the settings run as a sweep's trials instead: `jobs.sweep`'s own code on a local Ray, one trial at a
time, each in a fresh Ray worker, a checkpoint after every epoch: the peak that a sweep's rows record, Ray's worker
and Tune's checkpoint handling included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = """
import json, sys
from beanlib import backend
backend.choose(None)
backend.configure(1)
from beanlib.data import load_beans
from beanlib.train import run_trial
config, data, per_class, saves = json.loads(sys.argv[1]), sys.argv[2], (int(sys.argv[3]) or None), sys.argv[4] == "1"
hook = (lambda record, directory: None) if saves else None  # the checkpoint is written into a directory, then dropped
result = run_trial(config, load_beans(data, config["image_size"], per_class), cpus=1, on_checkpoint=hook)
print(json.dumps({"peak_rss_bytes": result.peak_rss_bytes, "train_seconds": result.train_seconds,
                  "test_accuracy": result.test_accuracy, "trainable_params": result.trainable_params}))
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trial_memory", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--study", default="seed")
    p.add_argument("--image-size", type=int, default=299)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--weights", default="none", help="Inception-v3 base (default: none, random init: same memory)")
    p.add_argument("--only", nargs="*", help="settings to run (default: every setting of the study)")
    p.add_argument("--per-class", type=int, default=0, help="images per class per split (default: all)")
    p.add_argument("--limit-gib", type=float, default=4.0)
    p.add_argument("--checkpoint", action="store_true", help="write a checkpoint after each epoch but the last")
    p.add_argument("--sweep", action="store_true", help="run the settings as a sweep's trials, in Ray workers")
    args = p.parse_args(argv)
    from beanlib.data import load_beans
    from beanlib.studies import plan

    overrides = {"image_size": args.image_size, "epochs": args.epochs, "fine_tune_epochs": args.epochs, "weights": args.weights}
    specs = [s for s in plan(args.study, overrides=overrides) if not args.only or s.setting in args.only]
    load_beans(args.data, args.image_size, args.per_class or None)  # decoded once, into the cache the children read
    if (args.checkpoint or args.sweep) and args.epochs < 2:
        p.error("--checkpoint and --sweep need --epochs 2 or more: a trial writes no checkpoint after its last epoch")
    how = ("as sweep trials, one at a time, each in a fresh Ray worker, a checkpoint after each epoch but the last" if args.sweep else
           "one CPU thread, one fresh process per trial" + (", a checkpoint after each epoch but the last" if args.checkpoint else ""))
    print(f"{args.study} at {args.image_size}px, {args.epochs} epoch(s), {how}")
    peaks = {}
    for setting, result in (in_sweep(args, specs) if args.sweep else in_processes(args, specs)):
        if "error" in result:
            print(f"{setting:28s} failed: {result['error']}")
            continue
        peaks[setting] = result["peak_rss_bytes"] / 2**30
        print(f"{setting:28s} peak {peaks[setting]:5.2f} GiB  train {result['train_seconds']:7.1f} s  "
              f"wall {result['wall_seconds']:7.1f} s  trainable {result['trainable_params']:,}")
    lenet = {s.setting: peaks[s.setting] for s in specs if s.config.model == "lenet" and s.setting in peaks}
    for label, group in (("largest", peaks), ("largest LeNet", lenet)):  # the target is LeNet's (issue: full-size protocol)
        if group:
            worst = max(group, key=group.get)
            verdict = "within" if group[worst] <= args.limit_gib else "OVER"
            print(f"{label}: {worst} at {group[worst]:.2f} GiB, {verdict} the {args.limit_gib:g} GiB target")


def in_processes(args, specs):
    """(setting, figures) of each spec, trained alone in a fresh Python process (CHILD)."""
    for spec in specs:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec.config.to_dict()), args.data, str(args.per_class),
                               str(int(args.checkpoint))],
                              capture_output=True, text=True)
        if done.returncode != 0:
            yield spec.setting, {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
            continue
        yield spec.setting, {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_seconds": time.perf_counter() - started}


def in_sweep(args, specs):
    """(setting, figures) of each spec from the rows of a sweep that ran only them (`--only`), in a temporary folder."""
    import tempfile

    import pandas as pd

    from beanlib.sweep import SweepOptions, run_sweep

    with tempfile.TemporaryDirectory() as results:
        run_sweep(SweepOptions(study=args.study, data=args.data, results=results, image_size=args.image_size,
                               epochs=args.epochs, fine_tune_epochs=args.epochs, weights=args.weights,
                               per_class=args.per_class or None, only=tuple(s.setting for s in specs), max_concurrent=1,
                               fresh_workers=True, checkpoint_seconds=0, keep_models="none"), out=lambda line: None)
        trials = pd.read_parquet(f"{results}/{args.study}/trials")
    for _, row in trials.iterrows():
        if row["status"] != "ok":
            yield row["setting"], {"error": f"{row['status']}: {row['error']}"}
            continue
        yield row["setting"], {"peak_rss_bytes": row["peak_rss_bytes"], "train_seconds": row["train_seconds"],
                               "wall_seconds": (row["end_time"] - row["start_time"]).total_seconds(),
                               "trainable_params": int(row["trainable_params"])}


if __name__ == "__main__":
    main()
