"""The report's tables and sentences: the per-setting summary beside the original study's numbers, each family's
chosen setting, runtime. Statistics come from beanlib.stats; this module only arranges and words them."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from beanlib.config import CLASS_NAMES
from beanlib.families import FAMILIES, family
from beanlib.stats import (ALPHA, accuracy, against_original, by_factor, choose, comparisons, family_choice, half_width,
                           ran_in_full, setting_stats)

# SEED_STUDY.md's reported test accuracy (percent) per factor setting, and what else it said.
ORIGINAL: dict[str, dict[str, tuple[float | None, str]]] = {
    "kernel_size": {
        "kernel_size=3": (None, "7?.?% (digits illegible; stated best)"),
        "kernel_size=5": (69.5, ""),
        "kernel_size=7": (71.88, ""),
    },
    "kernel_counts": {
        "kernel_counts=3-8-60": (58.59, ""),
        "kernel_counts=6-16-120": (69.5, ""),
        "kernel_counts=12-32-240": (None, "not run: out of memory"),
    },
    "regularizer": {
        "regularizer=none": (69.0, "baseline; strong overfitting"),
        "regularizer=l1": (None, "removes the overfitting (figure only)"),
        "regularizer=l2": (None, "removes it, higher accuracy than L1 (figure only)"),
        "regularizer=dropout": (None, "stops overfitting, lower accuracy (figure only)"),
    },
    "inception": {
        "head-only": (77.0, "validation 87%"),
        "top-2-blocks": (88.0, "validation and test"),
        "top-3-blocks": (88.0, "about 88%"),
        "top-6-blocks": (90.0, "starting to overfit"),
    },
}
CONVERGED_WITHIN = 0.02  # "converged": first epoch within 2 accuracy points of the trial's best validation accuracy (ours)
SUMMARY_COLUMNS = ["factor", "setting", "model", "n", "pruned", "failed", "test_accuracy", "ci95_low", "ci95_high", "std",
                   "new_low", "new_high", "new_covers", "semantics", "accuracies", "val_accuracy", "val_loss", "best_val_accuracy", "survivors_only", "chosen",
                   "original_test_accuracy", "original_note", "original_p", "original_half_width", "trainable_params", "total_params", "train_seconds",
                   "peak_rss_mib", "base"]


def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """Per factor and setting: `beanlib.stats.setting_stats`, whether it is the factor's choice on validation, its
    parameters, seconds, memory and base, and the original's number (for beanlib's own studies, which restate the
    original's settings, on beans only: a user's study gets no column it did not ask for); in the original's order."""
    from beanlib.studies import STUDIES

    groups = []
    builtin = trials["study"].isin(list(STUDIES)).all() if "study" in trials else False
    original_numbers = ORIGINAL if builtin and class_names(trials) == CLASS_NAMES else {}
    for (factor, label), g in by_factor(trials).groupby(["factor", "label"], sort=False):
        ok = ran_in_full(g)
        original, note = original_numbers.get(factor, {}).get(label, (None, ""))
        new = accuracy(g)
        low, high = new.interval() if new else (math.nan, math.nan)
        groups.append({
            "factor": factor, "setting": label, "model": g["model"].iloc[0], **setting_stats(g), "chosen": False,
            "new_low": low, "new_high": high,
            "new_covers": "" if new is None else "seeds and images" if new.components.residual else "seeds and images (binomial)",
            "semantics": ", ".join(f"v{v:.0f}" if pd.notna(v) else "unknown" for v in sorted(ok["semantics"].unique(), key=str)),
            "original_test_accuracy": original if original is not None else math.nan, "original_note": note,
            "trainable_params": _first(g["trainable_params"]), "total_params": _first(g["total_params"]),
            "train_seconds": float(ok["train_seconds"].mean()) if len(ok) else math.nan,
            "peak_rss_mib": float(ok["peak_rss_bytes"].max()) / 2**20 if ok["peak_rss_bytes"].notna().any() else math.nan,
            "base": "; ".join(sorted(set(bases(g)))),
        })
    frame = pd.DataFrame(groups, columns=SUMMARY_COLUMNS).astype({"trainable_params": "Int64", "total_params": "Int64"})
    if frame.empty:
        return frame
    frame["original_p"] = pd.array(against_original(frame), dtype="Float64")
    frame["original_half_width"] = [half_width(a) if pd.notna(o) else None for a, o in zip(frame["accuracies"], frame["original_test_accuracy"])]
    for _, rows in frame.groupby("factor", sort=False):
        chosen = choose(rows)
        if chosen is not None:
            frame.loc[chosen, "chosen"] = True
    order = {name: i for i, name in enumerate(dict.fromkeys([*ORIGINAL, *frame["factor"]]))}
    settings = {label: i for i, label in enumerate(label for f in ORIGINAL.values() for label in f)}
    key = frame["factor"].map(order) * 10_000 + frame["setting"].map(lambda s: settings.get(s, 9_999))
    natural = frame["setting"].map(_natural)  # "point 2" before "point 10"
    return frame.assign(_key=key, _natural=natural).sort_values(["_key", "_natural"]).drop(columns=["_key", "_natural"]) \
        .reset_index(drop=True)


def _natural(text: str) -> tuple:
    """A sort key that orders the numbers inside a name by value: k3 < k5 < k11, point 2 < point 10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text))


def class_names(trials: pd.DataFrame) -> tuple[str, ...]:
    """The run's classes in label order, from its rows (rows from before the column: beans')."""
    known = trials["class_names"].dropna() if "class_names" in trials else pd.Series(dtype=object)
    return tuple(known.iloc[0]) if len(known) else CLASS_NAMES


def bases(trials: pd.DataFrame) -> list[str]:
    """Each row's pretrained base, named by beanlib.weights.describe ("" for a family trained from scratch)."""
    from beanlib.weights import describe

    sha = trials["weights_sha256"] if "weights_sha256" in trials else pd.Series(None, index=trials.index)
    return [describe(w, h if isinstance(h, str) else None) if family(m).pretrained_base else ""
            for m, w, h in zip(trials["model"], trials["weights"], sha)]


def _first(values: pd.Series) -> int | None:
    """The first known value (failed trials have no parameter counts), else None."""
    known = values.dropna()
    return int(known.iloc[0]) if len(known) else None


def factor_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One factor's settings as the report shows them: the choice, test mean and interval, validation, the original."""
    def interval(r):
        return "" if math.isnan(r["ci95_low"]) else f"{r['ci95_low']:.1f} to {r['ci95_high']:.1f}"

    return pd.DataFrame({
        "setting": rows["setting"],
        "chosen": rows["chosen"].map({True: "yes", False: ""}),
        "val acc %": rows["val_accuracy"].map(pct),
        "test acc %": [pct(v) + (" (survivors only)" if s else "") for v, s in zip(rows["test_accuracy"], rows["survivors_only"])],
        "95% CI, seeds (these test images)": [interval(r) for _, r in rows.iterrows()],
        "95% CI, new images": ["" if math.isnan(lo) else f"{lo:.1f} to {hi:.1f}" for lo, hi in zip(rows["new_low"], rows["new_high"])],
        "n": rows["n"],
        "pruned": rows["pruned"],
        "failed": rows["failed"],
        "original %": [note if math.isnan(v) else f"{v:g}" + (f" ({note})" if note else "") + _beside(p, h)
                       for v, note, p, h in zip(rows["original_test_accuracy"], rows["original_note"], rows["original_p"],
                                                rows["original_half_width"])],
        "trainable": rows["trainable_params"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}"),
        "total": rows["total_params"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}"),
        "train s": rows["train_seconds"].map(lambda v: "" if math.isnan(v) else f"{v:.0f}"),
        "base": rows["base"],
    }).loc[:, lambda t: [c for c in t.columns if c not in ("base", "pruned", "original %") or t[c].astype(bool).any()]]


def _beside(p, half) -> str:
    """The original's number against our runs' spread (`beanlib.stats.original_p`, Holm-adjusted), in words."""
    if pd.isna(p):
        return ""
    return (f"; beyond one run of ours, p = {p:.3f}" if p < ALPHA else
            f"; not contradicted by our runs (p = {min(p, 1):.3f}; only a difference over {half:.1f} points could have been seen)")


def beside_original(summary: pd.DataFrame) -> str:
    """How the original's numbers stand against ours, and how that is judged (Markdown)."""
    compared = summary[summary["original_p"].notna()]
    compared = compared[~pd.Series(comparisons(compared), index=compared.index).duplicated()]  # as against_original counts
    if compared.empty:
        return ("The original reported one run per setting; with one run per setting here too, whether a difference "
                "from it is beyond the noise cannot be told (rerun with --repeats 3).") if summary["original_test_accuracy"].notna().any() else ""
    beyond = compared[compared["original_p"] < ALPHA]
    listed = ", ".join(f"{r['setting']} ({r['test_accuracy']:.1f} here, {r['original_test_accuracy']:g} there)"
                       for _, r in beyond.iterrows())
    return (f"**Beside the original**: its numbers are one run each, so each is judged against the spread of one run "
            f"of ours: a t prediction interval from our runs, two-sided, Holm-adjusted over the {len(compared)} "
            f"setting{'s' if len(compared) > 1 else ''} compared (5% level). "
            + (f"Beyond our runs' noise: {listed}." if listed else "None is contradicted by our runs.")
            + f" With {int(compared['n'].min())} runs, the prediction interval's half-width is "
              f"{compared['original_half_width'].min():.1f} to {compared['original_half_width'].max():.1f} points: a "
              "difference smaller than that could not have been seen, so 'not contradicted' is not 'the same'."
            + " The original's code, preprocessing and (for Inception-v3) base are not ours, so a difference beyond "
              "the noise says that something differs between the two studies, not which one is right.")


def pct(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.1f}"


def family_choices(trials: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """model -> the runs of its setting chosen on validation, for each family that has one."""
    chosen = {model: family_choice(trials, model) for model in FAMILIES}
    return {model: runs for model, runs in chosen.items() if not runs.empty}


def family_table(chosen: dict[str, pd.DataFrame], epochs: pd.DataFrame) -> pd.DataFrame:
    """Each family's setting chosen on validation (`family_choices`), with its test figures averaged over its repeats.
    Epochs to converge count within the trial's last phase; images/s is given per phase (a cheap head phase on cached
    features and a fine-tune are not one pace)."""
    rows = []
    for model, t in chosen.items():
        converged, gap = zip(*(convergence(epochs, trial_id, CONVERGED_WITHIN) for trial_id in t["trial_id"]))
        per_class = np.mean([list(a) for a in t["per_class_accuracy"]], axis=0)
        rows.append({"model": model, "setting": t["setting"].iloc[0], "n": len(t),
                     "val acc %": f"{100 * t['val_accuracy'].mean():.1f}", "test acc %": f"{100 * t['test_accuracy'].mean():.1f}",
                     "epochs to converge (last phase)": _mean_text(converged, "{:.1f}"),
                     "train-val gap (points)": _mean_text(gap, "{:.1f}", 100),
                     "train s": f"{t['train_seconds'].mean():.0f}", "images/s by phase": phase_pace(t, epochs),
                     "per-class %": ", ".join(f"{c}: {100 * a:.0f}" for c, a in zip(class_names(t), per_class))})
    return pd.DataFrame(rows)


def phase_pace(runs: pd.DataFrame, epochs: pd.DataFrame) -> str:
    """Training images per second of each phase, over the runs' epochs of that phase (epoch seconds only)."""
    paces = []
    for phase, e in epochs[epochs["trial_id"].isin(runs["trial_id"])].groupby("phase", sort=False):
        per_epoch = runs.set_index("trial_id").loc[e["trial_id"], ["images_per_second", "train_seconds", "epochs_run"]]
        images = (per_epoch["images_per_second"] * per_epoch["train_seconds"] / per_epoch["epochs_run"]).to_numpy()
        if e["seconds"].sum() > 0:
            paces.append(f"{phase} {images.sum() / e['seconds'].sum():.1f}")
    return ", ".join(paces)


def convergence(epochs: pd.DataFrame, trial_id: str, within: float) -> tuple[int | None, float | None]:
    """(epochs into the trial's last phase until validation accuracy is first within `within` of that phase's best,
    final train - validation accuracy gap)."""
    e = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
    if e.empty:
        return None, None
    last = e[e["phase"] == e["phase"].iloc[-1]]
    reached = last[last["val_accuracy"] >= last["val_accuracy"].max() - within]
    return int(reached["epoch"].iloc[0] - last["epoch"].iloc[0] + 1), float(e["accuracy"].iloc[-1] - e["val_accuracy"].iloc[-1])


def _mean_text(values, fmt: str, scale: float = 1.0) -> str:
    known = [scale * v for v in values if v is not None]
    return fmt.format(sum(known) / len(known)) if known else ""


def backends(trials: pd.DataFrame) -> list[str]:
    """The Keras backends the rows ran on, with their precisions; rows from before the `backend` column ran on
    TensorFlow (the only backend beanlib had), in float32."""
    ran = trials["backend"].fillna("tensorflow") + " " + trials["precision"].fillna("float32")
    return sorted(ran.unique()) or ["none"]


def runtime_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One line per trial: where it ran, its training and wall seconds, speed, epochs and peak memory."""
    t = trials.sort_values("start_time")
    duration = (t["end_time"] - t["start_time"]).dt.total_seconds()
    return pd.DataFrame({"trial": t["trial_id"], "setting": t["setting"], "repeat": t["repeat"], "status": t["status"],
                         "device": t["device"] + ", " + t["backend"].fillna("tensorflow"), "node": t["node"],
                         "train s": t["train_seconds"].map(_number("{:.1f}")),
                         "wall s": [_number("{:.1f}")(d) + ("" if pd.isna(r) else f" (resumed at epoch {r:.0f})")
                                    for d, r in zip(duration, t["resumed_from_epoch"])],
                         "images/s": t["images_per_second"].map(_number("{:.0f}")),
                         "epochs run/planned": [f"{r:.0f}/{p:.0f}" if pd.notna(r) and pd.notna(p) else ""
                                                for r, p in zip(t["epochs_run"], t["epochs_planned"])],
                         "peak MiB": (t["peak_rss_bytes"] / 2**20).map(_number("{:.0f}"))})


def _number(fmt: str):
    return lambda v: "" if pd.isna(v) else fmt.format(v)


def shared_features(trials: pd.DataFrame) -> str:
    """The shared pretrained base features' time, said once (it is in no trial's train seconds)."""
    shared = trials[trials["feature_source"] == "shared"]
    if shared.empty:
        return ""
    seconds = shared.groupby(["model", "weights_sha256", "weights", "image_size"], dropna=False)["shared_feature_seconds"].max().sum()
    titles = " and ".join(FAMILIES[m].title for m in sorted(shared["model"].unique()))
    return (f"{titles} base features were computed once by the sweep ({seconds:.0f}s, 0 where read from the cache) "
            f"and shared by {len(shared)} trials; that time is in none of their train seconds, which cover their own "
            "fitting and, when fine-tuning, the frozen blocks' output.")


def early_stopping(trials: pd.DataFrame) -> str:
    """How many trials early stopping ended, and the share of planned epochs it saved."""
    t = trials[(trials["early_stop"].fillna(0) > 0) & trials["epochs_planned"].notna()]
    run, planned = int(t["epochs_run"].sum()), int(t["epochs_planned"].sum())
    patience = ", ".join(str(int(p)) for p in sorted(t["early_stop"].unique()))
    return (f"Early stopping (patience {patience} epochs on validation loss, best weights kept): "
            f"{int((t['stop_reason'] == 'early_stop').sum())} of {len(t)} trials stopped early; they ran {run} of "
            f"{planned} planned epochs, {100 * (1 - run / planned):.0f}% of the epoch compute saved.")


PAUSE_SECONDS = 600  # this long with no trial running: the run was stopped and resumed (trials start within seconds)


def speedup(trials: pd.DataFrame) -> str:
    """The sweep's wall time against its trials' summed time; for a run that was stopped and resumed, why neither
    is the cost of one sitting."""
    t = trials.dropna(subset=["start_time", "end_time"])
    if t.empty:
        return ""
    wall = (t["end_time"].max() - t["start_time"].min()).total_seconds()
    total = (t["end_time"] - t["start_time"]).dt.total_seconds().sum()
    head = f"Sweep wall time {wall:.0f}s (first trial start to last trial end)"
    resumed, idle = int(t["resumed_from_epoch"].notna().sum()), idle_seconds(t)
    if not resumed and not idle:
        return f"{head} against {total:.0f}s of trial time summed: a parallel speed-up of {total / wall:.2f}x."
    parts = [f"{idle:.0f}s of it with no trial running (pauses of {PAUSE_SECONDS // 60} minutes or more)"] if idle else []
    parts += [f"{resumed} trial{'' if resumed == 1 else 's'} resumed from a checkpoint, whose wall above is the last "
              "sitting's only"] if resumed else []
    return (f"{head}, in more than one sitting: {', and '.join(parts)}. So neither the wall time nor a parallel "
            "speed-up is the cost of one sitting; each trial's train seconds cover all its epochs.")


def idle_seconds(trials: pd.DataFrame) -> float:
    """Seconds between the first start and the last end with no trial running, in gaps of PAUSE_SECONDS or more."""
    idle, running_until = 0.0, None
    for start, end in sorted(zip(trials["start_time"], trials["end_time"])):
        if running_until is not None and (gap := (start - running_until).total_seconds()) >= PAUSE_SECONDS:
            idle += gap
        running_until = end if running_until is None else max(running_until, end)
    return idle
