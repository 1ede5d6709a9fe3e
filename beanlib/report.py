"""The study's report from a run's Parquet alone: tables beside the original's numbers, curves, confusion, runtime.

`build_report(run_dir, out_dir)` reads RESULTS/RUN (as `jobs.sweep` wrote it,
local or copied from a cluster) and writes `report.md`, a self-contained
`report.html`, `figures/*.png` and `summary.parquet` into `out_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from beanlib import searchreport, tables
from beanlib.errors import BeanlibError
from beanlib.families import FAMILIES
from beanlib.page import Doc
from beanlib.results import RAN_IN_FULL, RunStore
from beanlib import semantics
from beanlib.stats import by_factor, factorial, study_verdicts, winners
from beanlib.studies import study_of_run, trial_id_of_row

# What a reader must know about each kind of pretrained base, keyed by the first word of weights.describe().
BASE_NOTES = {
    "ImageNet": "The original's base: its numbers compare directly.",
    "random": "Its numbers check the pipeline, not transfer learning, and do not compare with the original's; "
              "run with `--weights imagenet` (the default) where Keras can download the weights.",
    "file": "Its rows stand beside the original's ImageNet numbers for orientation, not as a replication.",
}


@dataclass
class Report:
    """What build_report produced: where, the summary table, and what was missing or failed."""

    out_dir: Path
    summary: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    failed: pd.DataFrame | None = None


def build_report(run_dir: str, out_dir: str | None = None, data: str | None = None) -> Report:
    """Read RESULTS/RUN and write the report into `out_dir` (default RUN/report), atomically. `data` names where
    the run's data lies now (default: where run.json says it was read), for the gallery of mistakes."""
    trials, epochs, manifest, store = load_run(run_dir)
    out = Path(out_dir) if out_dir else _default_out(store)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent if out.parent.exists() else None))
    try:
        doc, summary, missing, failed = _compose(trials, epochs, manifest, store, staging, data)
        (staging / "report.md").write_text(doc.to_markdown())
        (staging / "report.html").write_text(doc.to_html(staging))
        summary.to_parquet(staging / "summary.parquet", index=False)
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Report(out, summary, missing, failed)


# --- reading -----------------------------------------------------------------------------------


def load_run(run_dir: str):
    """A run's (trials, epochs, run.json, RunStore), brought to the current schema; one clear error when it is none."""
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
    store.set_aside_damaged()  # unreadable files: kept in RUN/damaged/, named in the report, their trials run again
    store.upgrade(trial_id_of_row)  # a run from an older beanlib: the current schema and content ids, in place
    manifest = store.manifest()
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


# --- composing ---------------------------------------------------------------------------------


def _compose(trials, epochs, manifest, store, out: Path, data: str | None = None):
    (out / "figures").mkdir(parents=True, exist_ok=True)
    doc = Doc()
    study = study_of_run(manifest)  # read once: the plan and the verdicts' questions both come from it
    planned = _planned(study, manifest)
    extra = trials[~trials["trial_id"].isin(planned)] if planned is not None else trials.iloc[:0]
    trials = trials.drop(extra.index)  # rows from an older plan (changed defaults) would mix two experiments
    trials, labelled = _with_labels(trials, manifest, data)
    summary = tables.summarize(trials)
    missing = [label for trial_id, label in (planned or {}).items() if trial_id not in set(trials["trial_id"])]
    if study is not None and study.search:  # its trials are sampled: what is missing is the rest of its budget
        done = int(trials["point"].notna().sum())
        missing = [f"trial {k} of the search's {study.search.trials}" for k in range(done + 1, study.search.trials + 1)]
    failed = trials[~trials["status"].isin(("ok", "pruned"))]
    _header(doc, trials, manifest, store, extra, missing, failed, labelled)
    verdicts, families, chosen = _verdicts(summary, trials, study)
    _factors(doc, summary, trials, epochs, verdicts, out)
    if study is not None and study.search:
        _search(doc, trials, summary, study, manifest, out)
    present = [FAMILIES[m].title for m in FAMILIES if m in set(trials["model"])]
    doc.h(2, f"{' against '.join(present) or 'Model families'}: each family's setting chosen on validation")
    if chosen:
        _families(doc, chosen, families, epochs, out)
        _mistakes(doc, trials, manifest, data, out)
    _runtime(doc, trials, failed)
    return doc, summary, missing, failed


def _header(doc: Doc, trials, manifest, store, extra, missing, failed, labelled: int) -> None:
    """The report's title, what the run is, how it is analysed, and what a reader must know before the numbers."""
    pruned = trials[trials["status"] == "pruned"]
    tested = int(trials["confusion_matrix"].dropna().map(lambda m: sum(map(sum, m))).max() or 0) if trials["confusion_matrix"].notna().any() else 0
    doc.h(1, f"beanlib report: run `{store.run}` (study `{manifest.get('study')}`)")
    doc.p(f"Data `{manifest.get('data')}` ({len(tables.class_names(trials))} classes: {', '.join(tables.class_names(trials))}); "
          f"{len(trials)} trial rows, "
          f"{int(trials['status'].isin(RAN_IN_FULL).sum())} ran in full, {len(pruned)} pruned, {len(failed)} failed or diverged; "
          f"options {json.dumps(manifest.get('overrides', {}))}, repeats {manifest.get('repeats')}, "
          f"images per class {manifest.get('per_class') or 'all'}; Keras backend {', '.join(tables.backends(trials))}. "
          "Accuracies are percentages"
          + (f"; one test image is {100 / tested:.2f} points." if tested else "."))
    doc.p(SELECTION)
    for model, base in sorted({(m, b) for m, b in zip(trials["model"], tables.bases(trials)) if b}):
        doc.p(f"**{FAMILIES[model].title} base**: {base}. " + BASE_NOTES[base.split(" ")[0]])
    if not extra.empty:
        doc.p(f"**Left out**: {len(extra)} trial rows are not in the run's current plan (written by an older beanlib "
              f"or other defaults): {', '.join(extra['trial_id'])}.")
    if trials["data_fingerprint"].nunique() > 1:
        doc.p(f"**Warning**: the trials saw different data (fingerprints {', '.join(sorted(trials['data_fingerprint'].dropna().unique()))}): "
              "the data changed under this run name; compare with care or re-run under a new --name.")
    if missing:
        doc.p(f"**Partial report**: {len(missing)} planned trials have no row yet: " + "; ".join(missing[:40])
              + (" ..." if len(missing) > 40 else ""))
    if damaged := store.damaged():
        doc.p(f"**Damaged files**: the files of {len(damaged)} trial(s) could not be read and were set aside in "
              f"RUN/damaged/ (kept, not deleted): {', '.join(damaged)}. They are not in this report; the sweep's "
              "same command runs them again.")
    if labelled:
        doc.p(f"**Test labels**: {labelled} rows from before the column were given their test split's labels, read "
              "from the run's data here (its fingerprint matches run.json), for the per-image verdicts.")
    _semantics(doc, trials)


def _verdicts(summary, trials, study) -> tuple[dict[str, str], object, dict]:
    """(factor -> its verdict in words, the families' contrast, model -> its chosen setting's runs)."""
    declared = {f.name: f for f in study.factors} if study else {}
    planned = {name: f.planned() for name, f in declared.items()}
    if study is not None and study.search:  # its questions are named on validation (beanlib.searchreport.questions)
        planned |= {f: searchreport.questions(rows) for f, rows in summary.groupby("factor")}
    chosen = tables.family_choices(trials)
    found, families = study_verdicts(summary, trials, planned, chosen)
    runs = by_factor(trials)
    verdicts = {}
    for factor, verdict in found.items():
        verdicts[factor] = verdict.text()
        if factor in declared and declared[factor].factorial:
            verdicts[factor] += "; " + factorial.text(factorial.effects(runs[runs["factor"] == factor], declared[factor].factorial))
    return verdicts, families, chosen


def _factors(doc: Doc, summary, trials, epochs, verdicts: dict[str, str], out: Path) -> None:
    """The answer at a glance, then each factor: its table beside the original, its verdict, its curves."""
    from beanlib import figures

    factors = list(summary["factor"].drop_duplicates())
    beside = summary["original_test_accuracy"].notna().any()  # beanlib's own studies, on beans
    doc.h(2, "The answer")
    doc.figure(figures.answer(summary, out / "figures"),
               "Test accuracy per setting (number of runs in brackets): mean with its 95% interval over seeds on these "
               "test images (bars) and for new images by a new seed (wide shaded band), single runs, "
               + ("the original study's reported number, " if beside else "") + "and each factor's setting chosen on "
               "validation in green")
    doc.p(" ".join(f"{factor.replace('_', ' ')}: {verdicts[factor]}." for factor in factors))
    doc.h(2, "Factors, beside the original study" if beside else "Factors")
    if line := tables.beside_original(summary):
        doc.p(line)
    for factor in factors:
        rows = summary[summary["factor"] == factor]
        doc.h(3, factor)
        doc.table(tables.factor_table(rows))
        doc.p(verdicts[factor])
        shown = list(rows.sort_values("val_accuracy", ascending=False)["setting"])[:CURVES]
        doc.figure(figures.learning_curves(epochs, by_factor(trials), factor, [s for s in rows["setting"] if s in shown],
                                           out / "figures"),
                   f"Learning curves per setting of {factor}: train (solid) and validation (dashed)"
                   + (f"; the {CURVES} settings best on validation of {len(rows)}" if len(rows) > CURVES else ""))


CURVES = 12  # a factor's learning curves: at most this many settings (a search's best on validation), one row each


def _search(doc: Doc, trials, summary, study, manifest: dict, out: Path) -> None:
    """A search: its points, each parameter against validation accuracy, parameter importance, how fast it got there."""
    from beanlib import figures

    search, repeats = study.search, manifest.get("repeats", 1)
    points = searchreport.points_table(trials, study)
    ranked = points[points["n"] == repeats]
    chosen = summary.loc[summary["chosen"] & summary["setting"].isin(trials["setting"][trials["point"].notna()]), "setting"]
    best = next((int(p) for p in trials.loc[trials["setting"].isin(chosen), "point"]), None)
    sampler = {"tpe": "Optuna's TPE sampler", "random": "Optuna's random sampler"}[search.algorithm]
    doc.h(2, "The search")
    doc.p(f"{sampler} through Ray Tune's OptunaSearch, seed {search.seed}: {search.points(repeats)} points x {repeats} "
          f"seed(s), a budget of {search.trials} trials, {len(ranked)} points complete. The searcher was told each point's "
          "mean validation accuracy over its seeds. **A searched best is optimistic on validation**: it is the highest of "
          f"{len(ranked)} noisy means and was chosen on them, so its validation number flatters it; only its test number, "
          "read once after the choice, is unbiased. The verdict above tests the best point against the runner-up and "
          "against the worst, both named on validation.")
    table = points.assign(val_accuracy=points["val_accuracy"].map(tables.pct), test_accuracy=points["test_accuracy"].map(tables.pct),
                          **{d.field: points[d.field].map(lambda v: f"{v:.3g}") for d in search.space if d.kind in ("uniform", "loguniform")})
    doc.table(table.rename(columns={"val_accuracy": "val acc %", "test_accuracy": "test acc %"}))
    doc.figure(figures.search_scatter(points, search.space, best, out / "figures"),
               "Each point's mean validation accuracy against each searched parameter; the point chosen on validation in green")
    if (weights := searchreport.importance(points, study)) is not None:
        doc.table(weights.assign(**{c: weights[c].map(lambda v: f"{v:.2f}") for c in ("importance", "lowest", "highest")}))
        doc.p(f"Parameter importance: Optuna's fANOVA over the {len(points)} points' mean validation accuracy, the mean and "
              f"range over {searchreport.IMPORTANCE_SEEDS} random forests. A description of these points, not a test: with "
              "few points it moves with the forest's seed, as the range shows.")
    curve = searchreport.best_so_far(trials)
    doc.figure(figures.best_so_far(curve, out / "figures"), "The best point so far by mean validation accuracy, and its "
               "test accuracy, against the trials finished and the training compute spent")
    if (reached := searchreport.within(curve)) is not None:
        doc.p(f"The search came within 1 point of its final best validation accuracy ({curve['best_val'].iloc[-1]:.1f}%) "
              f"after {int(reached['trial'])} of {len(curve)} trials and {reached['compute_seconds'] / 3600:.2f} of "
              f"{curve['compute_seconds'].iloc[-1] / 3600:.2f} hours of training.")


def _families(doc: Doc, chosen: dict, families, epochs, out: Path) -> None:
    """Each family's chosen setting, their contrast, and their confusion matrices."""
    from beanlib import figures

    doc.table(tables.family_table(chosen, epochs))
    doc.p("Each family's setting with the highest mean validation accuracy over all its settings; figures are "
          "means over its repeats, its confusion matrix the sum of theirs."
          + (f" The families' chosen settings: {families.text()}; in the same Holm family as the factors' contrasts."
             if families else ""))
    for model, runs in chosen.items():
        doc.figure(figures.confusion(runs, out / "figures"),
                   f"Test confusion matrix of the {model} setting chosen on validation ({runs['setting'].iloc[0]}, "
                   f"{len(runs)} runs summed)")


def _runtime(doc: Doc, trials, failed) -> None:
    """Runtime, pruned trials, and failed or diverged ones."""
    doc.h(2, "Runtime")
    doc.table(tables.runtime_table(trials))
    doc.p(tables.speedup(trials))
    for line in (tables.shared_features(trials), tables.early_stopping(trials) if (trials["early_stop"].fillna(0) > 0).any() else ""):
        if line:
            doc.p(line)
    pruned = trials[trials["status"] == "pruned"]
    if not pruned.empty:
        doc.h(2, "Pruned trials")
        doc.p(f"ASHA stopped {len(pruned)} trials part-way for trailing validation accuracy. They are listed here and "
              "left out of every mean, interval and verdict above, which come only from trials that ran in full; a "
              "setting that lost runs to pruning keeps a survivors-only mean, marked, and is neither chosen nor tested.")
        doc.table(pd.DataFrame({"trial": pruned["trial_id"], "setting": pruned["setting"], "repeat": pruned["repeat"],
                                "epochs run/planned": [f"{r:.0f}/{p:.0f}" for r, p in zip(pruned["epochs_run"], pruned["epochs_planned"])],
                                "val acc % at the stop": (100 * pruned["val_accuracy"]).map(tables.pct)}))
    doc.h(2, "Failed and diverged trials")
    if failed.empty:
        doc.p("None.")
    else:
        doc.table(failed[["trial_id", "setting", "repeat", "status", "attempts", "error"]].fillna(""))
        if (environment := int((failed["status"] == "environment").sum())):
            doc.p(f"{environment} of them (status environment) were stopped by their surroundings, not by an error of "
                  "their own: a full or read-only disk, a permission, a lost connection or node. The same sweep command "
                  "trains them again.")


def _with_labels(trials: pd.DataFrame, manifest: dict, data: str | None) -> tuple[pd.DataFrame, int]:
    """Rows with per-image predictions but no test labels (written before the column) get their test split's labels
    where the run's data can be read here and is the run's; returns (rows, how many were given labels)."""
    if "test_labels" not in trials:
        trials = trials.assign(test_labels=None)
    wanting = trials["test_predicted"].notna() & trials["test_labels"].isna()
    if not wanting.any():
        return trials, 0
    trials = trials.copy()
    given = 0
    for size in sorted(trials.loc[wanting, "image_size"].unique()):
        test, _ = _test_split(manifest, int(size), data)
        rows = wanting & (trials["image_size"] == size)
        if test is not None and (trials.loc[rows, "test_predicted"].map(len) == len(test.labels)).all():
            trials.loc[rows, "test_labels"] = pd.Series([list(test.labels)] * int(rows.sum()), index=trials.index[rows])
            given += int(rows.sum())
    return trials, given


def _semantics(doc: Doc, trials: pd.DataFrame) -> None:
    """Say which settings mix runs of code that computes differently (beanlib.semantics), and which are stale."""
    known = trials["semantics"].map(lambda v: -1 if pd.isna(v) else int(v))
    mixed = sorted(s for s, v in known.groupby(trials["setting"]) if v.nunique() > 1)
    stale = sorted(set(trials.loc[known != semantics.SEMANTICS, "setting"]))
    if not stale:
        return
    counts = ", ".join(f"{n} rows {semantics.describe(None if v < 0 else v)}" for v, n in known.value_counts().sort_index().items())
    doc.p(f"**Training semantics**: {counts}; this beanlib computes {semantics.describe(semantics.SEMANTICS)}. "
          + (f"Settings whose runs mix versions: {', '.join(mixed)}; their seeds are not repeats of one computation. "
             if mixed else f"Settings trained by other code than this beanlib's: {', '.join(stale)}. ")
          + "`jobs.sweep ... --retrain-stale` (the run's own command) trains the stale rows again.")


def _mistakes(doc: Doc, trials: pd.DataFrame, manifest: dict, data: str | None, out: Path) -> None:
    """A gallery per family: the test images its best model (the run `--keep-models best` keeps) got wrong."""
    from beanlib import figures

    best = {model: trial for model, trial in winners(trials).items() if model in FAMILIES}
    doc.h(2, "What each family's best model gets wrong")
    for model, trial_id in best.items():
        row = trials[trials["trial_id"] == trial_id].iloc[0]
        if row["test_predicted"] is None:
            doc.p(f"{model}: run {trial_id} predates per-image predictions in the rows: no gallery (re-run it to get one).")
            continue
        test, why = _test_split(manifest, int(row["image_size"]), data)
        if test is None:
            doc.p(f"{model}: no gallery, {why}.")
            continue
        path = figures.mistakes(row, test.images, test.labels, out / "figures")
        wrong = int((np.asarray(row["test_predicted"]) != test.labels).sum())
        if path is None:
            doc.p(f"{model}: run {trial_id} ({row['setting']}) classified every test image correctly.")
        else:
            doc.figure(path, f"{model}: the test images run {trial_id} ({row['setting']}, repeat {row['repeat']}, its "
                             f"setting's best run on validation) got wrong, {wrong} of {len(test.labels)}"
                             + (", the first 24 shown" if wrong > 24 else "") + "; its confidence is the probability it gave "
                             "its prediction")


def _test_split(manifest: dict, image_size: int, data: str | None):
    """(the run's test split at `image_size`, None) when the data can be read here and is the run's (its fingerprint
    matches run.json's), else (None, why)."""
    from beanlib.data import load_beans

    source = data or manifest.get("data")
    try:
        loaded = load_beans(source, image_size, manifest.get("per_class"))
    except Exception as error:  # moved, not downloaded here, unreadable: the gallery is left out, the report is not
        return None, f"the run's data {source!r} cannot be read here ({type(error).__name__}): pass --data where it lies now"
    expected = manifest.get("data_fingerprints", {}).get(str(image_size))
    if expected and loaded.fingerprint != expected:
        return None, f"the data at {source!r} is not the run's (fingerprint {loaded.fingerprint}, the run's {expected})"
    return loaded.test, ""


SELECTION = ("**How the answer is chosen and tested**: every best setting (each factor's, each family's) is chosen on "
             "the validation split, by the mean validation accuracy of the weights each run reports (its last epoch, or "
             "the epoch early stopping kept), and reported on the test split. The verdicts answer the study's own "
             "questions: the contrasts its declaration plans (in beanlib's studies each one-at-a-time change against "
             "the baseline, each fine-tune against head-only, then the fine-tunes with each other; a factor that plans "
             "none: every pair of its settings; a factorial: its main effects and two-way interactions). Seeds are blocks and the test images one fixed sample: "
             "each contrast is a difference taken within each seed and each test image, its variance from that seeds x "
             "images table (crossed random effects: seeds, images, their interaction), with its own variance per "
             "contrast and Satterthwaite's degrees of freedom, a t-test; every contrast of the report and the families' "
             "comparison are Holm-adjusted together (5% family-wise). Rows without per-image predictions fall back to a "
             "paired t-test over seeds, which holds for these test images only. Two intervals are shown per setting: "
             "over seeds on these test images (how much another seed moves the number here), and for new images from "
             "the same source by a new seed (what the accuracy is), the second from the same seeds x images table, or "
             "the seeds' spread plus the binomial variance of the test images where there are no per-image "
             "predictions; where seeds dominate it can be the narrower of the two, since it pools the seeds' few "
             "degrees of freedom with the images' many (Satterthwaite). Each verdict says how large a difference its "
             "design finds 80% of the time.")


def _planned(study, manifest: dict) -> dict[str, str] | None:
    """trial_id -> "setting (repeat r)" of the run's plan, re-planned from its study and run.json; None for a study
    beanlib does not know."""
    from beanlib.studies import plan

    if study is None or study.search:  # a search's trials are sampled: its budget says what is missing
        return None
    specs = plan(study, repeats=manifest.get("repeats", 1), overrides=manifest.get("overrides"))
    return {s.trial_id: f"{s.setting} (repeat {s.repeat})" for s in specs}


