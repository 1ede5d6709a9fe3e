"""The report's figures (matplotlib, drawn off-screen): learning curves per factor, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on batch machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from beanlib.config import CLASS_NAMES  # noqa: E402
from beanlib.results import RAN_IN_FULL  # noqa: E402


def learning_curves(epochs: pd.DataFrame, rows: pd.DataFrame, factor: str, labels: list[str], out: Path) -> Path:
    """Train vs validation accuracy and loss per epoch for each setting (`labels`, in order) of `factor`, mean over repeats.

    Inception-v3's switch from the head phase to fine-tuning is marked with a vertical line.
    """
    settings = rows[(rows["factor"] == factor) & rows["status"].isin(RAN_IN_FULL)].drop_duplicates("trial_id")
    fig, axes = plt.subplots(len(labels), 2, figsize=(10, 2.4 * len(labels) + 0.6), squeeze=False, sharex=True)
    for (acc_ax, loss_ax), label in zip(axes, labels):
        ids = settings[settings["label"] == label]["trial_id"]
        e = epochs[epochs["trial_id"].isin(ids)].groupby("epoch").agg(
            {"accuracy": "mean", "val_accuracy": "mean", "loss": "mean", "val_loss": "mean", "phase": "first"})
        for ax, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
            ax.plot(e.index, e[metric], "o-", ms=3, color="tab:blue", label="train")
            ax.plot(e.index, e[f"val_{metric}"], "s--", ms=3, color="tab:orange", label="validation")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fine_tune = e.index[e["phase"] == "fine_tune"]
        if len(fine_tune):
            for ax in (acc_ax, loss_ax):
                ax.axvline(fine_tune[0] - 0.5, color="grey", lw=1, ls=":")
            acc_ax.text(fine_tune[0] - 0.4, 0.03, "fine-tune", fontsize=7, color="grey")
        acc_ax.set_ylabel(f"{label}\n(n={len(ids)})", fontsize=8)
        acc_ax.set_ylim(0, 1.02)
    axes[0][0].set_title("accuracy")
    axes[0][1].set_title("loss")
    axes[0][0].legend(fontsize=7, loc="lower right")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    return _save(fig, out / f"curves_{factor}.png")


def confusion(runs: pd.DataFrame, out: Path) -> Path:
    """The test confusion matrix of a setting's runs, summed, as a labelled heat map (rows: true, columns: predicted)."""
    matrix = np.sum([np.array([list(row) for row in m]) for m in runs["confusion_matrix"]], axis=0)
    first = runs.iloc[0]
    fig, ax = plt.subplots(figsize=(max(4.6, 0.9 * len(matrix) + 2), max(4, 0.8 * len(matrix) + 1.6)))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, int(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    known = runs["class_names"].dropna() if "class_names" in runs else []
    short = [name.replace("_", " ") for name in (known.iloc[0] if len(known) else CLASS_NAMES)]
    ax.set_xticks(range(len(short)), short, rotation=20, fontsize=8)
    ax.set_yticks(range(len(short)), short, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{first['model']} {first['setting']}: test {100 * runs['test_accuracy'].mean():.1f}% "
                 f"(n={len(runs)})", fontsize=9)
    return _save(fig, out / f"confusion_{first['model']}.png")


def mistakes(row: pd.Series, images: np.ndarray, labels: np.ndarray, out: Path, limit: int = 24) -> Path | None:
    """The test images trial `row` got wrong (the first `limit`, in the test split's order), each with its true and
    predicted class and the model's confidence in its prediction; None when it got none wrong."""
    predicted = np.asarray(row["test_predicted"])
    wrong = np.flatnonzero(predicted != labels)
    if not len(wrong):
        return None
    names = list(row["class_names"]) if row.get("class_names") is not None else list(CLASS_NAMES)
    shown = wrong[:limit]
    columns = min(6, len(shown))
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.5 * rows + 0.3), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), shown):
        ax.imshow(images[i])
        ax.set_title(f"true {names[labels[i]]}\npred {names[predicted[i]]} {100 * row['test_confidence'][i]:.0f}%",
                     fontsize=7, color="tab:red")
    return _save(fig, out / f"mistakes_{row['model']}.png")


def answer(summary: pd.DataFrame, out: Path) -> Path:
    """The report's opening figure: per factor, each setting's mean test accuracy with its two 95% intervals (over
    seeds on these test images; for new images) and its single runs, the original study's number as a marker beside it, and the setting chosen on validation marked."""
    factors = list(summary["factor"].drop_duplicates())
    heights = [int((summary["factor"] == f).sum()) for f in factors]
    fig, axes = plt.subplots(len(factors), 1, figsize=(8.5, 0.38 * sum(heights) + 0.75 * len(factors) + 0.6),
                             gridspec_kw={"height_ratios": heights}, sharex=True, squeeze=False)
    for ax, factor in zip(axes[:, 0], factors):
        rows = summary[summary["factor"] == factor].reset_index(drop=True)
        y = np.arange(len(rows))[::-1]
        best = rows.index[rows["chosen"]][0] if rows["chosen"].any() else None  # chosen on validation (beanlib.stats)
        for i, row in rows.iterrows():
            color = "tab:green" if i == best else "tab:blue"
            ax.plot(row["accuracies"], [y[i]] * len(row["accuracies"]), "|", color="grey", ms=8, alpha=0.8)
            if row["n"] >= 2 and not np.isnan(row.get("new_low", np.nan)):  # for new images: wider, behind
                ax.plot([row["new_low"], row["new_high"]], [y[i]] * 2, "-", color=color, lw=6, alpha=0.2, solid_capstyle="butt")
            if row["n"] >= 2:
                ax.errorbar(row["test_accuracy"], y[i], xerr=[[row["test_accuracy"] - row["ci95_low"]], [row["ci95_high"] - row["test_accuracy"]]],
                            fmt="o", color=color, capsize=3, ms=6)
            elif row["n"] == 1:
                ax.plot(row["test_accuracy"], y[i], "o", color=color, ms=6)
            if not np.isnan(row["original_test_accuracy"]):
                ax.plot(row["original_test_accuracy"], y[i], "D", color="tab:red", mfc="none", ms=7, mew=1.5)
        labels = [f"{s} ({n})" for s, n in zip(rows["setting"], rows["n"])]
        ax.set_yticks(y, labels, fontsize=8)
        if best is not None:
            ax.get_yticklabels()[best].set_fontweight("bold")
            ax.get_yticklabels()[best].set_color("tab:green")
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(factor.replace("_", " "), loc="left", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("test accuracy (%)")
    handles = [
        plt.Line2D([], [], marker="o", color="tab:blue", ls="", label="mean, 95% CI over seeds (these test images)"),
        plt.Line2D([], [], color="tab:blue", lw=6, alpha=0.2, label="95% CI for new images"),
        plt.Line2D([], [], marker="o", color="tab:green", ls="", label="chosen on validation"),
        plt.Line2D([], [], marker="|", color="grey", ls="", ms=8, label="single runs"),
        plt.Line2D([], [], marker="D", color="tab:red", mfc="none", ls="", label="original study"),
    ]
    axes[0, 0].legend(handles=handles, fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.12), ncol=3, frameon=False)
    return _save(fig, out / "answer.png", dpi=100)


def search_scatter(points: pd.DataFrame, dimensions, best: int | None, out: Path) -> Path:
    """A search's points: mean validation accuracy against each searched parameter's value (log axis for a log
    range), the point chosen on validation in green."""
    fig, axes = plt.subplots(1, len(dimensions), figsize=(3.6 * len(dimensions), 3.2), squeeze=False, sharey=True)
    for ax, d in zip(axes[0], dimensions):
        values = points[d.field].astype(str) if d.kind == "choice" else points[d.field]
        ax.scatter(values, points["val_accuracy"], c=["tab:green" if p == best else "tab:blue" for p in points["point"]], s=24)
        if d.kind == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(d.field)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("mean validation accuracy (%)")
    return _save(fig, out / "search_parameters.png")


def best_so_far(curve: pd.DataFrame, out: Path) -> Path:
    """A search's (or a grid's) best mean validation accuracy so far, and that setting's test mean, against the
    trials finished and the compute they spent."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, x, label in ((axes[0], curve["trial"], "trials finished"),
                         (axes[1], curve["compute_seconds"] / 3600, "compute spent (hours of training)")):
        ax.step(x, curve["best_val"], where="post", color="tab:orange", label="best so far: validation")
        ax.step(x, curve["best_test"], where="post", color="tab:blue", ls="--", label="its test accuracy")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    return _save(fig, out / "best_so_far.png")


def _save(fig, path: Path, dpi: int = 90) -> Path:
    """Lay out, write and close a figure; returns its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
