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
from beanlib.results import FINISHED  # noqa: E402


def learning_curves(epochs: pd.DataFrame, rows: pd.DataFrame, factor: str, labels: list[str], out: Path) -> Path:
    """Train vs validation accuracy and loss per epoch for each setting (`labels`, in order) of `factor`, mean over repeats.

    Inception-v3's switch from the head phase to fine-tuning is marked with a vertical line.
    """
    settings = rows[(rows["factor"] == factor) & rows["status"].isin(FINISHED)].drop_duplicates("trial_id")
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
    fig.tight_layout()
    path = out / f"curves_{factor}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def confusion(runs: pd.DataFrame, out: Path) -> Path:
    """The test confusion matrix of a setting's runs, summed, as a labelled heat map (rows: true, columns: predicted)."""
    matrix = np.sum([np.array([list(row) for row in m]) for m in runs["confusion_matrix"]], axis=0)
    first = runs.iloc[0]
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, int(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    short = [name.replace("_", " ") for name in CLASS_NAMES]
    ax.set_xticks(range(len(short)), short, rotation=20, fontsize=8)
    ax.set_yticks(range(len(short)), short, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{first['model']} {first['setting']}: test {100 * runs['test_accuracy'].mean():.1f}% "
                 f"(n={len(runs)})", fontsize=9)
    fig.tight_layout()
    path = out / f"confusion_{first['model']}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
