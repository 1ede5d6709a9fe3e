"""What a finished run cost, per setting, from its own rows: seconds, images/s, peak memory, and the sweep's wall.

    python -m benchmarks.protocol_cost --results RESULTS/RUN [--limit-gib 4]

Prints a Markdown table, one line per setting (its repeats' figures, mean and range), then the sweep's wall time.
A trial that shared the CPUs with other work (tests, benchmarks, the sweep's other trial) ran slower than it would
alone. Its epochs show it: every epoch of a phase does the same work, so the phase's fastest epochs give its pace
when least disturbed. "fastest-pace train s" is that pace over all the trial's epochs: per phase, the median of its 3
fastest epochs times its epochs (the first epoch's tracing, a few seconds, is left out). It is an estimate, not a
bound and not a second measurement: about what the trial would take alone on the machine (a median of 3, so some
epochs ran faster still). A trial resumed from a checkpoint ran over two
sessions: its train seconds are its epochs' (both sessions'), its wall only the last session's, so no wall is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

FASTEST = 3  # epochs per phase whose median gives the phase's pace when least disturbed


def fastest_pace_seconds(epochs: pd.DataFrame) -> float:
    """One trial's epoch seconds at the pace of its fastest epochs (see the module's docstring)."""
    return float(sum(len(e) * np.median(np.sort(e["seconds"].to_numpy())[:FASTEST]) for _, e in epochs.groupby("phase")))


def per_trial(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """The trials that ran in full, with their fastest-pace train seconds (the features a trial computed itself
    included, as in its train seconds) and their wall (None for a resumed trial: its wall is its last sitting's)."""
    ok = trials[trials["status"] == "ok"]
    pace = epochs[epochs["trial_id"].isin(ok["trial_id"])].groupby("trial_id").apply(fastest_pace_seconds, include_groups=False)
    return ok.assign(fastest=ok["trial_id"].map(pace) + ok["feature_seconds"].fillna(0),
                     wall=(ok["end_time"] - ok["start_time"]).dt.total_seconds().where(ok["resumed_from_epoch"].isna()))


def cost_table(trials: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    """One row per setting of `per_trial`'s trials, in `order` (setting -> rank): runs, test accuracies, wall, train
    and fastest-pace seconds, images/s at that pace and peak memory."""
    def spread(values: pd.Series, fmt: str = "{:,.0f}") -> str:
        values = values.dropna()
        if values.empty:
            return ""
        if len(values) == 1 or values.min() == values.max():
            return fmt.format(values.iloc[0])
        return f"{fmt.format(values.mean())} ({fmt.format(values.min())}-{fmt.format(values.max())})"

    rows = []
    for setting, t in sorted(trials.groupby("setting", sort=False), key=lambda item: order.get(item[0], len(order))):
        images = t["images_per_second"] * t["train_seconds"]  # images trained on, all epochs
        rows.append({
            "setting": setting, "model": t["model"].iloc[0], "n": len(t),
            "test %": ", ".join(f"{100 * a:.1f}" for a in t.sort_values("repeat")["test_accuracy"]),
            "wall s": spread(t["wall"]), "train s": spread(t["train_seconds"]),
            "fastest-pace train s": spread(t["fastest"]),
            "images/s at that pace": spread(images / t["fastest"], "{:.1f}"),
            "peak GiB": spread(t["peak_rss_bytes"] / 2**30, "{:.2f}"),
            "resumed": int(t["resumed_from_epoch"].notna().sum()),
        })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.protocol_cost", description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="the run's folder, RESULTS/RUN")
    p.add_argument("--limit-gib", type=float, default=4.0, help="the per-trial memory target for LeNet")
    args = p.parse_args(argv)
    from beanlib.page import Doc
    from beanlib.studies import plan

    trials = pd.read_parquet(f"{args.results}/trials")
    epochs = pd.read_parquet(f"{args.results}/epochs")
    study = json.loads(Path(args.results, "run.json").read_text())["study"]
    order = {setting: i for i, setting in enumerate(dict.fromkeys(s.setting for s in plan(study)))}
    ok = per_trial(trials, epochs)
    table = cost_table(ok, order)
    doc = Doc()
    doc.table(table.drop(columns="model"))
    print(doc.to_markdown())
    wall = (ok["end_time"].max() - ok["start_time"].min()).total_seconds()
    print(f"\n{len(ok)} trials; {ok['train_seconds'].sum():,.0f} s of training summed; first start to last end "
          f"{wall:,.0f} s ({wall / 3600:.1f} h), pauses between sessions included; "
          f"{ok['fastest'].sum():,.0f} s at the fastest pace.")
    lenet = ok[ok["model"] == "lenet"]
    worst = lenet.loc[lenet["peak_rss_bytes"].idxmax()] if lenet["peak_rss_bytes"].notna().any() else None
    if worst is not None:
        peak = worst["peak_rss_bytes"] / 2**30
        print(f"largest LeNet peak: {worst['setting']} repeat {worst['repeat']} at {peak:.2f} GiB "
              f"({worst['beanlib_commit'][:7]}), {'within' if peak <= args.limit_gib else 'OVER'} the {args.limit_gib:g} GiB target")


if __name__ == "__main__":
    main()
