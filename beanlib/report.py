"""The study's report from a run's Parquet alone: tables beside the original's numbers, curves, confusion, runtime.

`build_report(run_dir, out_dir)` reads RESULTS/RUN (as `jobs.sweep` wrote it,
local or copied from a cluster) and writes `report.md`, a self-contained
`report.html`, `figures/*.png` and `summary.parquet` into `out_dir`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from beanlib.config import CLASS_NAMES
from beanlib.errors import BeanlibError
from beanlib.results import RAN_IN_FULL, RunStore

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
# The shared baseline trial's label within each one-factor-at-a-time factor.
BASELINE_LABEL = {
    "kernel_size": lambda row: f"kernel_size={int(row['kernel_size'])}",
    "kernel_counts": lambda row: f"kernel_counts={row['kernel_counts']}",
    "regularizer": lambda row: f"regularizer={row['regularizer']}",
}
# What a reader must know about each kind of Inception-v3 base, keyed by the first word of weights.describe().
BASE_NOTES = {
    "ImageNet": "The original's base: its numbers compare directly.",
    "random": "Its numbers check the pipeline, not transfer learning, and do not compare with the original's; "
              "run with `--weights imagenet` (the default) where Keras can download the weights.",
    "file": "Its rows stand beside the original's ImageNet numbers for orientation, not as a replication.",
}
CONVERGED_WITHIN = 0.02  # "converged": first epoch within 2 accuracy points of the trial's best validation accuracy (ours)


@dataclass
class Report:
    """What build_report produced: where, the summary table, and what was missing or failed."""

    out_dir: Path
    summary: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    failed: pd.DataFrame | None = None


def build_report(run_dir: str, out_dir: str | None = None) -> Report:
    """Read RESULTS/RUN and write the report into `out_dir` (default RUN/report), atomically."""
    trials, epochs, manifest, store = _load(run_dir)
    out = Path(out_dir) if out_dir else _default_out(store)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent if out.parent.exists() else None))
    try:
        doc, summary, missing, failed = _compose(trials, epochs, manifest, store, staging)
        (staging / "report.md").write_text(doc.to_markdown())
        (staging / "report.html").write_text(doc.to_html(staging))
        summary.to_parquet(staging / "summary.parquet", index=False)
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Report(out, summary, missing, failed)


# --- reading -----------------------------------------------------------------------------------


def _load(run_dir: str):
    parent, _, name = run_dir.rstrip("/").rpartition("/")
    store = RunStore(parent or ".", name)
    info = store.fs.get_file_info(store.path)
    if info.type.name == "NotFound":
        raise BeanlibError(f"results folder {run_dir} does not exist: pass the RESULTS/RUN folder that jobs.sweep wrote")
    manifest_path = f"{store.path}/run.json"
    if store.fs.get_file_info(manifest_path).type.name != "File":
        runs = [i.base_name for i in store.fs.get_file_info(_selector(store.path))
                if store.fs.get_file_info(f"{i.path}/run.json").type.name == "File"]
        hint = f"it holds runs {', '.join(sorted(runs))}: pass one, e.g. {run_dir.rstrip('/')}/{sorted(runs)[0]}" if runs else \
            "pass the RESULTS/RUN folder that jobs.sweep wrote"
        raise BeanlibError(f"{run_dir} is not a beanlib run (no run.json): {hint}")
    with store.fs.open_input_stream(manifest_path) as f:
        manifest = json.loads(f.read())
    trials = store.read_table("trials").to_pandas()
    if trials.empty:
        raise BeanlibError(f"{run_dir} has no finished trial yet: wait for the sweep to finish one, then re-run the report")
    epochs = store.read_table("epochs").to_pandas()
    return trials, epochs, manifest, store


def _selector(path: str):
    import pyarrow.fs as pafs

    return pafs.FileSelector(path, allow_not_found=True)


def _default_out(store: RunStore) -> Path:
    if "://" in store.uri:
        raise BeanlibError(f"{store.uri} is remote: pass --out DIR for the report")
    return Path(store.path) / "report"


def _replace_dir(staging: Path, out: Path) -> None:
    """Move the finished report into place; an older report is replaced only once the new one is whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        shutil.move(str(staging), out)


# --- statistics --------------------------------------------------------------------------------


def by_factor(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, factor it counts for), with the setting's label within that factor."""
    rows = trials.assign(factor=trials["factor"].str.split(",")).explode("factor")
    labels = [
        BASELINE_LABEL[row["factor"]](row) if row["setting"] == "baseline" and row["factor"] in BASELINE_LABEL else row["setting"]
        for _, row in rows.iterrows()
    ]
    return rows.assign(label=labels).reset_index(drop=True)


def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """Per factor and setting: n runs with a test accuracy, mean (%) with a 95% t interval, failed runs, parameters,
    seconds, and the original's number. Diverged or failed runs have no accuracy: they count in `failed`, not in n."""
    from scipy import stats

    groups = []
    for (factor, label), g in by_factor(trials).groupby(["factor", "label"], sort=False):
        ok = g[g["status"].isin(RAN_IN_FULL) & g["test_accuracy"].notna()]
        acc = 100 * ok["test_accuracy"].to_numpy(dtype=float)
        n = len(acc)
        mean = float(acc.mean()) if n else math.nan
        half = float(stats.t.ppf(0.975, n - 1) * acc.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
        original, note = ORIGINAL.get(factor, {}).get(label, (None, ""))
        groups.append({
            "factor": factor, "setting": label, "model": g["model"].iloc[0], "n": n, "pruned": int((g["status"] == "pruned").sum()),
            "failed": int(len(g) - n - (g["status"] == "pruned").sum()),
            "test_accuracy": mean, "ci95_low": mean - half, "ci95_high": mean + half,
            "std": float(acc.std(ddof=1)) if n >= 2 else math.nan, "accuracies": acc.tolist(),
            "best_val_accuracy": float(100 * ok["best_val_accuracy"].mean()) if n else math.nan,
            "original_test_accuracy": original if original is not None else math.nan, "original_note": note,
            "trainable_params": _first(g["trainable_params"]), "total_params": _first(g["total_params"]),
            "train_seconds": float(ok["train_seconds"].mean()) if n else math.nan,
            "base": "; ".join(sorted(set(_bases(g)))),
        })
    frame = pd.DataFrame(groups, columns=SUMMARY_COLUMNS).astype({"trainable_params": "Int64", "total_params": "Int64"})
    if frame.empty:
        return frame
    order = {name: i for i, name in enumerate(dict.fromkeys([*ORIGINAL, *frame["factor"]]))}
    settings = {label: i for i, label in enumerate(label for f in ORIGINAL.values() for label in f)}
    key = frame["factor"].map(order) * 10_000 + frame["setting"].map(lambda s: settings.get(s, 9_999))
    return frame.assign(_key=key).sort_values(["_key", "setting"]).drop(columns="_key").reset_index(drop=True)


SUMMARY_COLUMNS = ["factor", "setting", "model", "n", "pruned", "failed", "test_accuracy", "ci95_low", "ci95_high", "std", "accuracies",
                   "best_val_accuracy", "original_test_accuracy", "original_note", "trainable_params", "total_params",
                   "train_seconds", "base"]


def _bases(trials: pd.DataFrame) -> list[str]:
    """Each Inception-v3 row's base, named by beanlib.weights.describe ("" for LeNet rows)."""
    from beanlib.weights import describe

    sha = trials["weights_sha256"] if "weights_sha256" in trials else pd.Series(None, index=trials.index)
    return [describe(w, h if isinstance(h, str) else None) if m == "inception" else ""
            for m, w, h in zip(trials["model"], trials["weights"], sha)]


def _first(values: pd.Series) -> int | None:
    """The first known value (failed trials have no parameter counts), else None."""
    known = values.dropna()
    return int(known.iloc[0]) if len(known) else None


def verdict(summary: pd.DataFrame, factor: str) -> str:
    """The factor's best setting and whether its lead over the runner-up exceeds run-to-run noise (Welch's t-test)."""
    from scipy import stats

    rows = summary[(summary["factor"] == factor) & (summary["n"] > 0)].sort_values("test_accuracy", ascending=False)
    if len(rows) < 2:
        return f"only {len(rows)} setting has a test accuracy: no comparison"
    best, second = rows.iloc[0], rows.iloc[1]
    lead = best["test_accuracy"] - second["test_accuracy"]
    text = f"best: **{best['setting']}** ({best['test_accuracy']:.1f}%), {lead:.1f} points ahead of {second['setting']}"
    if min(best["n"], second["n"]) < 2:
        return text + "; one run per setting, so run-to-run noise is unknown: rerun with --repeats 3 or more to tell"
    p = float(stats.ttest_ind(best["accuracies"], second["accuracies"], equal_var=False).pvalue)
    if not math.isfinite(p):
        return text + "; cannot be tested: neither setting varied between its runs"
    return text + (f"; larger than the noise (Welch t-test p = {p:.3f})" if p < 0.05 else
                   f"; not larger than the noise (Welch t-test p = {p:.3f}, n = {best['n']} and {second['n']})")


def convergence(epochs: pd.DataFrame, trial_id: str) -> tuple[int | None, float | None]:
    """(first epoch within CONVERGED_WITHIN of the best validation accuracy, final train - validation accuracy gap)."""
    e = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
    if e.empty:
        return None, None
    reached = e[e["val_accuracy"] >= e["val_accuracy"].max() - CONVERGED_WITHIN]
    return int(reached["epoch"].iloc[0]), float(e["accuracy"].iloc[-1] - e["val_accuracy"].iloc[-1])


# --- composing ---------------------------------------------------------------------------------


def _compose(trials, epochs, manifest, store, out: Path):
    from beanlib import figures

    (out / "figures").mkdir(parents=True, exist_ok=True)
    doc = _Doc()
    planned = _planned(manifest)
    extra = trials[~trials["trial_id"].isin(planned)] if planned is not None else trials.iloc[:0]
    trials = trials.drop(extra.index)  # rows from an older plan (changed defaults) would mix two experiments
    summary = summarize(trials)
    missing = [label for trial_id, label in (planned or {}).items() if trial_id not in set(trials["trial_id"])]
    failed = trials[~trials["status"].isin(("ok", "pruned"))]
    pruned = trials[trials["status"] == "pruned"]
    tested = int(trials["confusion_matrix"].dropna().map(lambda m: sum(map(sum, m))).max() or 0) if trials["confusion_matrix"].notna().any() else 0
    doc.h(1, f"beanlib report: run `{store.run}` (study `{manifest.get('study')}`)")
    doc.p(f"Data `{manifest.get('data')}`; {len(trials)} trial rows, "
          f"{int(trials['status'].isin(RAN_IN_FULL).sum())} ran in full, {len(pruned)} pruned, {len(failed)} failed or diverged; "
          f"options {json.dumps(manifest.get('overrides', {}))}, repeats {manifest.get('repeats')}, "
          f"images per class {manifest.get('per_class') or 'all'}; Keras backend {', '.join(_backends(trials))}. "
          "Accuracies are test-split percentages"
          + (f"; one test image is {100 / tested:.2f} points." if tested else "."))
    for base in sorted(set(_bases(trials)) - {""}):
        doc.p(f"**Inception-v3 base**: {base}. " + BASE_NOTES[base.split(" ")[0]])
    if not extra.empty:
        doc.p(f"**Left out**: {len(extra)} trial rows are not in the run's current plan (written by an older beanlib "
              f"or other defaults): {', '.join(extra['trial_id'])}.")
    if trials["data_fingerprint"].nunique() > 1:
        doc.p(f"**Warning**: the trials saw different data (fingerprints {', '.join(sorted(trials['data_fingerprint'].dropna().unique()))}): "
              "the data changed under this run name; compare with care or re-run under a new --name.")
    if missing:
        doc.p(f"**Partial report**: {len(missing)} planned trials have no row yet: " + "; ".join(missing[:40])
              + (" ..." if len(missing) > 40 else ""))

    doc.h(2, "The answer")
    doc.figure(figures.answer(summary, out / "figures"),
               "Test accuracy per setting (number of runs in brackets): mean and 95% t interval, single runs, "
               "the original study's reported number, and each factor's best setting in green")
    doc.p(" ".join(f"{factor.replace('_', ' ')}: {verdict(summary, factor)}." for factor in summary["factor"].drop_duplicates()))

    doc.h(2, "Factors, beside the original study")
    for factor in summary["factor"].drop_duplicates():
        rows = summary[summary["factor"] == factor]
        doc.h(3, factor)
        doc.table(_factor_table(rows))
        doc.p(verdict(summary, factor))
        doc.figure(figures.learning_curves(epochs, by_factor(trials), factor, list(rows["setting"]), out / "figures"),
                   f"Learning curves per setting of {factor}: train (solid) and validation (dashed)")

    doc.h(2, "Best LeNet against best Inception-v3")
    best = _best_per_family(trials, epochs)
    if not best.empty:
        doc.table(best)
        doc.p("Each family's best setting by mean test accuracy; figures are means over its repeats, "
              "its confusion matrix the sum of theirs.")
        for model in best["model"]:
            runs = best_setting(trials, model)
            doc.figure(figures.confusion(runs, out / "figures"),
                       f"Test confusion matrix of the best {model} setting ({runs['setting'].iloc[0]}, {len(runs)} runs summed)")

    doc.h(2, "Runtime")
    doc.table(_runtime_table(trials))
    doc.p(_speedup(trials))
    if (trials["early_stop"].fillna(0) > 0).any():
        doc.p(_early_stopping(trials))

    if not pruned.empty:
        doc.h(2, "Pruned trials")
        doc.p(f"ASHA stopped {len(pruned)} trials part-way for trailing validation accuracy. They are listed here and "
              "left out of every mean, interval and verdict above, which come only from trials that ran in full.")
        doc.table(pd.DataFrame({"trial": pruned["trial_id"], "setting": pruned["setting"], "repeat": pruned["repeat"],
                                "epochs run/planned": [f"{r:.0f}/{p:.0f}" for r, p in zip(pruned["epochs_run"], pruned["epochs_planned"])],
                                "val acc % at the stop": (100 * pruned["val_accuracy"]).map(_pct)}))

    doc.h(2, "Failed and diverged trials")
    if failed.empty:
        doc.p("None.")
    else:
        doc.table(failed[["trial_id", "setting", "repeat", "status", "attempts", "error"]].fillna(""))
    return doc, summary, missing, failed


def _factor_table(rows: pd.DataFrame) -> pd.DataFrame:
    def interval(r):
        return "" if math.isnan(r["ci95_low"]) else f"{r['ci95_low']:.1f} to {r['ci95_high']:.1f}"

    return pd.DataFrame({
        "setting": rows["setting"],
        "test acc %": rows["test_accuracy"].map(_pct),
        "95% CI": [interval(r) for _, r in rows.iterrows()],
        "n": rows["n"],
        "pruned": rows["pruned"],
        "failed": rows["failed"],
        "original %": [note if math.isnan(v) else f"{v:g}" + (f" ({note})" if note else "")
                       for v, note in zip(rows["original_test_accuracy"], rows["original_note"])],
        "best val %": rows["best_val_accuracy"].map(_pct),
        "trainable": rows["trainable_params"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}"),
        "total": rows["total_params"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}"),
        "train s": rows["train_seconds"].map(lambda v: "" if math.isnan(v) else f"{v:.0f}"),
        "base": rows["base"],
    }).loc[:, lambda t: [c for c in t.columns if c not in ("base", "pruned") or t[c].astype(bool).any()]]


def _pct(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.1f}"


def _with_accuracy(trials: pd.DataFrame, model: str) -> pd.DataFrame:
    return trials[(trials["model"] == model) & trials["status"].isin(RAN_IN_FULL) & trials["test_accuracy"].notna()]


def best_setting(trials: pd.DataFrame, model: str) -> pd.DataFrame:
    """The trials (all repeats) with a test accuracy of the `model` setting with the highest mean test accuracy."""
    ok = _with_accuracy(trials, model)
    best = ok.groupby("setting")["test_accuracy"].mean().idxmax()
    return ok[ok["setting"] == best]


def _best_per_family(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Best LeNet setting against best Inception-v3 setting, averaged over their repeats."""
    rows = []
    for model in ("lenet", "inception"):
        if _with_accuracy(trials, model).empty:
            continue
        t = best_setting(trials, model)
        converged, gap = zip(*(convergence(epochs, trial_id) for trial_id in t["trial_id"]))
        per_class = np.mean([list(a) for a in t["per_class_accuracy"]], axis=0)
        rows.append({"model": model, "setting": t["setting"].iloc[0], "n": len(t),
                     "test acc %": f"{100 * t['test_accuracy'].mean():.1f}", "best val %": f"{100 * t['best_val_accuracy'].mean():.1f}",
                     "epochs to converge": _mean_text(converged, "{:.1f}"), "train-val gap (points)": _mean_text(gap, "{:.1f}", 100),
                     "train s": f"{t['train_seconds'].mean():.0f}", "images/s": f"{t['images_per_second'].mean():.0f}",
                     "per-class %": ", ".join(f"{c}: {100 * a:.0f}" for c, a in zip(CLASS_NAMES, per_class))})
    return pd.DataFrame(rows)


def _mean_text(values, fmt: str, scale: float = 1.0) -> str:
    known = [scale * v for v in values if v is not None]
    return fmt.format(sum(known) / len(known)) if known else ""


def _backends(trials: pd.DataFrame) -> list[str]:
    """The Keras backends the rows ran on, with their precisions; rows from before the `backend` column ran on
    TensorFlow (the only backend beanlib had), in float32."""
    ran = trials["backend"].fillna("tensorflow") + " " + trials["precision"].fillna("float32")
    return sorted(ran.unique()) or ["none"]


def _runtime_table(trials: pd.DataFrame) -> pd.DataFrame:
    t = trials.sort_values("start_time")
    duration = (t["end_time"] - t["start_time"]).dt.total_seconds()
    return pd.DataFrame({"trial": t["trial_id"], "setting": t["setting"], "repeat": t["repeat"], "status": t["status"],
                         "device": t["device"] + ", " + t["backend"].fillna("tensorflow"), "node": t["node"], "train s": t["train_seconds"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}"),
                         "wall s": duration.map(lambda v: "" if pd.isna(v) else f"{v:.1f}"),
                         "images/s": t["images_per_second"].map(lambda v: "" if pd.isna(v) else f"{v:.0f}"),
                         "epochs run/planned": [f"{r:.0f}/{p:.0f}" if pd.notna(r) and pd.notna(p) else ""
                                                for r, p in zip(t["epochs_run"], t["epochs_planned"])]})


def _early_stopping(trials: pd.DataFrame) -> str:
    """How many trials early stopping ended, and the share of planned epochs it saved."""
    t = trials[(trials["early_stop"].fillna(0) > 0) & trials["epochs_planned"].notna()]
    run, planned = int(t["epochs_run"].sum()), int(t["epochs_planned"].sum())
    patience = ", ".join(str(int(p)) for p in sorted(t["early_stop"].unique()))
    return (f"Early stopping (patience {patience} epochs on validation loss, best weights kept): "
            f"{int((t['stop_reason'] == 'early_stop').sum())} of {len(t)} trials stopped early; they ran {run} of "
            f"{planned} planned epochs, {100 * (1 - run / planned):.0f}% of the epoch compute saved.")


def _speedup(trials: pd.DataFrame) -> str:
    t = trials.dropna(subset=["start_time", "end_time"])
    if t.empty:
        return ""
    wall = (t["end_time"].max() - t["start_time"].min()).total_seconds()
    total = (t["end_time"] - t["start_time"]).dt.total_seconds().sum()
    return (f"Sweep wall time {wall:.0f}s (first trial start to last trial end) against {total:.0f}s of trial time "
            f"summed: a parallel speed-up of {total / wall:.2f}x. A resumed sweep's wall time includes the pause.")


def _planned(manifest: dict) -> dict[str, str] | None:
    """trial_id -> "setting (repeat r)" of the run's plan, re-planned from run.json; None for a study beanlib does not know."""
    from beanlib.studies import STUDIES, plan

    if manifest.get("study") not in STUDIES:
        return None
    specs = plan(manifest["study"], repeats=manifest.get("repeats", 1), overrides=manifest.get("overrides"))
    return {s.trial_id: f"{s.setting} (repeat {s.repeat})" for s in specs}


# --- the document: one structure, written as Markdown and as self-contained HTML -----------------


class _Doc:
    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, frame: pd.DataFrame) -> None:
        self.blocks.append(("table", frame))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("figure", path, caption))

    def to_markdown(self) -> str:
        out = []
        for kind, *rest in self.blocks:
            if kind == "h":
                out.append("#" * rest[0] + " " + rest[1])
            elif kind == "p":
                out.append(rest[0])
            elif kind == "table":
                frame = rest[0].astype(str).replace({"nan": "", "None": ""})
                cells = lambda values: "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"  # noqa: E731
                out.append("\n".join([cells(frame.columns), cells(["---"] * len(frame.columns)), *map(cells, frame.to_numpy())]))
            else:
                out.append(f"![{rest[1]}](figures/{rest[0].name})\n\n*{rest[1]}*")
        return "\n\n".join(out) + "\n"

    def to_html(self, root: Path) -> str:
        import re

        body = []
        for kind, *rest in self.blocks:
            if kind == "h":
                body.append(f"<h{rest[0]}>{_inline(rest[1])}</h{rest[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(rest[0])}</p>")
            elif kind == "table":
                body.append(rest[0].astype(str).replace({"nan": "", "None": ""}).to_html(index=False, border=0, escape=True))
            else:
                data = base64.b64encode((root / "figures" / rest[0].name).read_bytes()).decode()
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(rest[1])}">'
                            f"<figcaption>{html.escape(rest[1])}</figcaption></figure>")
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:left}"
                 "img{max-width:100%}figcaption{color:#555;font-style:italic}")
        title = re.sub("<[^>]+>", "", _inline(self.blocks[0][2])) if self.blocks else "beanlib report"
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
                f"<body>{''.join(body)}</body></html>\n")


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` in HTML, everything else escaped."""
    import re

    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)
