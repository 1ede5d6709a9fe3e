"""How much of a sweep's wall is not training: the `seed` study at 128px, as a user runs it, warm or fresh workers.

    python -m benchmarks.sweep_overhead --data PATH/TO/beans --weights PATH/TO/base.weights.h5 [--fresh-workers]

It runs `python -m jobs.sweep --study seed --image-size 128` in a new process (into a temporary results folder)
and times it from start to exit, then reads the trials' rows. Training is what the rows count as such: each
trial's train_seconds (its epochs, and cached activations it computed) plus the sweep's one shared computation of
Inception's base features. With S trials at once (the most that overlapped), the time outside training is
S x wall - training, in trial-slot seconds, and its share of S x wall is the figure the target is on (<= 5%).
It is split into: before the first trial starts (Python, Ray, data, the first worker), gaps between one trial's
end and the next trial's start in a slot (a new worker, or a warm one), inside trials outside training (building,
compiling, testing, saving the model), idle slots once the last trials run alone, and after the last trial.
The time inside trials is split again, from Ray Tune's record of each report: before a trial's first epoch,
between its epochs, after its last epoch (`inside_trials`; the trials' own feature seconds are training).
Compare runs with the same caches: the first sweep on a machine decodes the images and computes the base
features (it shows features_s > 0), later ones read both from $BEANLIB_CACHE.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd


def breakdown(trials: pd.DataFrame, started: float, ended: float) -> dict:
    """The sweep's time outside training, in trial-slot seconds, from its rows and its process's start and end."""
    t = trials.assign(start=trials["start_time"].map(lambda v: v.timestamp()), end=trials["end_time"].map(lambda v: v.timestamp()))
    t = t.sort_values("start")
    slots = max(sum((t["start"] <= s) & (t["end"] > s)) for s in t["start"])  # the most trials at once
    free: list[float] = [started] * slots  # when each slot last became free
    first_start, gaps = {}, 0.0
    for _, row in t.iterrows():  # each trial takes the slot that has been free longest
        slot = min(range(slots), key=lambda i: free[i])
        if free[slot] == started:
            first_start[slot] = row["start"] - started
        else:
            gaps += row["start"] - free[slot]
        free[slot] = row["end"]
    last_end = max(free)
    features = t["shared_feature_seconds"].dropna()
    training = float(t["train_seconds"].sum() + (features.iloc[0] if len(features) else 0.0))
    wall = ended - started
    inside = float((t["end"] - t["start"] - t["train_seconds"]).sum())
    figures = {
        "trials": len(t), "slots": slots, "wall_s": wall, "training_slot_s": training,
        "before_first_trial_s": sum(first_start.values()), "gaps_between_trials_s": gaps,
        "inside_trials_outside_training_s": inside, "idle_slots_at_the_end_s": sum(last_end - f for f in free),
        "after_last_trial_s": slots * (ended - last_end),
        "features_s": float(features.iloc[0]) if len(features) else 0.0,
    }
    figures["outside_training_slot_s"] = slots * wall - training
    figures["outside_training_share"] = figures["outside_training_slot_s"] / (slots * wall)
    return figures


def inside_trials(run: str, trials: pd.DataFrame) -> dict:
    """Where a trial's time outside training goes, in seconds summed over the trials, from Ray Tune's own record of
    each report (RUN/tune/EXPERIMENT/TRIAL/result.json: time_total_s since the trial started) and the epochs' seconds:
    before its first reported epoch (worker set-up, data, building the model, base features), between reported epochs
    (checkpoints, a phase switch and its cached activations), and after the last reported one (its last epoch is
    reported with the final result: the last epoch's own seconds are taken off, leaving testing and saving)."""
    epochs = pd.read_parquet(os.path.join(run, "epochs")).set_index(["trial_id", "epoch"])["seconds"]
    whole = set(trials.loc[trials["resumed_from_epoch"].isna(), "trial_id"])  # a resumed trial's record starts midway
    parts = {"before_first_epoch_s": 0.0, "between_epochs_s": 0.0, "after_last_epoch_s": 0.0, "worst_between_s": 0.0}
    for path in glob.glob(os.path.join(run, "tune", "*", "*", "result.json")):
        trial_id = os.path.basename(os.path.dirname(path))
        with open(path) as f:
            reports = [json.loads(line) for line in f]
        done = [r for r in reports if r.get("finished") == 1]
        if not done or trial_id not in whole:
            continue
        marks = [(r["epoch"], r["time_total_s"]) for r in reports if r.get("finished") == 0]
        marks.append((done[-1]["epoch"], done[-1]["time_total_s"]))
        previous_epoch, previous_time = 0, 0.0
        for i, (epoch, at) in enumerate(marks):
            trained = sum(epochs.get((trial_id, e), 0.0) for e in range(previous_epoch + 1, epoch + 1))
            part = ("before_first_epoch_s" if i == 0 else "after_last_epoch_s" if i == len(marks) - 1 else "between_epochs_s")
            outside = at - previous_time - trained
            parts[part] += outside
            if part == "between_epochs_s":
                parts["worst_between_s"] = max(parts["worst_between_s"], outside)
            previous_epoch, previous_time = epoch, at
    parts["trials_own_features_s"] = float(trials.loc[trials["trial_id"].isin(whole), "feature_seconds"].sum())  # training,
    return parts  # counted before the first epoch (base features) and between phases (cached activations)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the beans folder (split/class/*.jpg)")
    p.add_argument("--weights", required=True, help="the Inception-v3 base weights file")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--fresh-workers", action="store_true", help="a new worker process per trial (as before warm workers)")
    p.add_argument("--results", help="keep the run in this (new) results folder (default: a temporary one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="beanlib-overhead-") as scratch:
        results = args.results or scratch
        command = [sys.executable, "-m", "jobs.sweep", "--study", "seed", "--image-size", str(args.image_size),
                   "--data", args.data, "--weights", args.weights, "--results", results, "--name", "seed",
                   "--keep-models", "best", *(["--fresh-workers"] if args.fresh_workers else [])]
        started = time.time()
        subprocess.run(command, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ended = time.time()
        trials = pd.read_parquet(os.path.join(results, "seed", "trials"))
        inside = inside_trials(os.path.join(results, "seed"), trials)
    figures = {"workers": "fresh" if args.fresh_workers else "warm", **breakdown(trials, started, ended), **inside}
    for name, value in figures.items():
        print(f"{name:34s} {value:.3f}" if isinstance(value, float) else f"{name:34s} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
