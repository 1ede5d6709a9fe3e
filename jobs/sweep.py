"""Run a study on Ray Tune: every trial's config, history and metrics land in Parquet; re-running resumes.

    python -m jobs.sweep --study NAME|FILE.yaml [--data tfds|tfds:NAME|PATH|synthetic] [--image-size N]
        [--epochs N] [--fine-tune-epochs N] [--repeats N] [--weights imagenet|none|PATH]
        [--results DIR] [--name RUN] [--address ADDR] [--cpus-per-trial N]
        [--gpus-per-trial F] [--max-concurrent N] [--retries N] [--per-class N] [--early-stop PATIENCE]
        [--scheduler fifo|asha] [--precision float32|mixed_bfloat16|mixed_float16|auto] [--backend tensorflow|jax|torch] [--checkpoint-seconds S]
        [--keep-models best|all|none] [--fresh-workers] [--only SETTING ...] [--retrain-stale] [--force] [--dry-run] [--verbose]
"""

from __future__ import annotations

import argparse

from jobs.common import default_data, main_guard


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from beanlib.studies import STUDIES

    p = argparse.ArgumentParser(prog="python -m jobs.sweep", description=__doc__.splitlines()[0],
                                epilog="built-in studies: " + "; ".join(f"{s.name}: {s.description}" for s in STUDIES.values()))
    p.add_argument("--study", required=True, metavar="NAME|FILE.yaml",
                   help=f"a built-in study ({', '.join(STUDIES)}) or a study file (README: Your own study)")
    p.add_argument("--data", default=default_data(), help="tfds (beans) | tfds:NAME | synthetic | PATH to split/class/* or class/* images (default: $BEANLIB_DATA or tfds)")
    p.add_argument("--image-size", type=int, help="override the study's image size")
    p.add_argument("--epochs", type=int, help="override the study's epochs (Inception: head phase)")
    p.add_argument("--fine-tune-epochs", type=int, help="override Inception's fine-tune epochs")
    p.add_argument("--repeats", type=int, help="run every setting with N seeds (default: the study's, else 1)")
    p.add_argument("--weights", help="Inception-v3 base weights: imagenet | none | PATH (default: the study's)")
    p.add_argument("--per-class", type=int, help="keep only N images per class per split (default: the study's)")
    p.add_argument("--results", default="results", help="results root: a path or an s3:// / gs:// URI (default: results)")
    p.add_argument("--name", help="run name, a folder under --results (default: the study name)")
    p.add_argument("--address", help="Ray cluster to join ('auto' for a local `ray start --head`; default: $RAY_ADDRESS, else a new local Ray)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, help="GPU share per trial (default on GPU clusters: LeNet 0.125, Inception 1)")
    p.add_argument("--max-concurrent", type=int, help="at most N trials at once (default: as resources allow)")
    p.add_argument("--early-stop", type=int, metavar="PATIENCE",
                   help="stop a trial's phase after PATIENCE epochs without a better validation loss, keeping its best "
                        "weights (default: off, the study's fixed epochs)")
    p.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16", "auto"],
                   help="every trial's precision (default: the study's, float32); auto: mixed_bfloat16 where the "
                        "trials' CPU (avx512_bf16, amx_bf16) or GPU (compute capability 8.0+) computes bf16 natively")
    p.add_argument("--scheduler", choices=["fifo", "asha"], default="fifo",
                   help="asha: Ray Tune's ASHA stops trials whose validation accuracy trails at epochs 2, 6, 18, ... "
                        "(recorded as pruned); fifo (default): every trial runs in full")
    p.add_argument("--backend", help="Keras backend of every trial: tensorflow | jax | torch "
                                      "(default: $KERAS_BACKEND, else tensorflow; the driver decodes JPEGs with TensorFlow either way)")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed trial before it is recorded as failed (default 1)")
    p.add_argument("--checkpoint-seconds", type=float, default=60.0, metavar="S",
                   help="a running trial saves a checkpoint after an epoch at most every S seconds (default 60; 0: every "
                        "epoch); a restarted trial, or the next sweep, resumes from its last one")
    p.add_argument("--keep-models", choices=["best", "all", "none"], default="best",
                   help="trained models kept under RESULTS/RUN/models as .keras files: best (default: each factor's and "
                        "family's choice on validation, once the run is complete) | all | none")
    p.add_argument("--fresh-workers", action="store_true",
                   help="a new worker process for every trial (default: a worker runs trial after trial, warm; fresh "
                        "workers cost a few seconds per trial, and give each trial's peak memory alone)")
    p.add_argument("--only", nargs="+", default=(), type=str, metavar="SETTING",
                   help="run only these settings now (names as --dry-run lists them, e.g. baseline kernel_size=3); the run "
                        "keeps its whole plan, and a later run without --only runs the rest")
    p.add_argument("--retrain-stale", action="store_true",
                   help="train again the finished trials whose rows older code computed differently (their semantics "
                        "version, which a resume names); the old rows are set aside in RESULTS/RUN/superseded/")
    p.add_argument("--force", action="store_true",
                   help="sweep the run even while another driver holds it (its lease, RESULTS/RUN/.lease.json): for a "
                        "driver known to be gone; one that died is taken over anyway once its heartbeat is 60 s old")
    p.add_argument("--dry-run", action="store_true", help="print the trial table and exit without training")
    p.add_argument("--verbose", action="store_true", help="also show Ray Tune's status tables and the workers' output")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from beanlib.console import SweepConsole, hide_native_logs

    hide_native_logs()  # before anything imports TensorFlow
    args = parse(argv)
    from beanlib.errors import BeanlibError
    from beanlib.sweep import SweepOptions, run_sweep

    for flag in ("repeats", "cpus_per_trial", "max_concurrent", "per_class"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise BeanlibError(f"--{flag.replace('_', '-')} must be positive, got {value}")
    if args.early_stop is not None and args.early_stop < 0:
        raise BeanlibError(f"--early-stop must be a number of epochs >= 0, got {args.early_stop}")
    if args.retries < 0 or args.checkpoint_seconds < 0 or (args.gpus_per_trial is not None and args.gpus_per_trial < 0):
        raise BeanlibError("--retries, --checkpoint-seconds and --gpus-per-trial must not be negative")
    console = SweepConsole()
    try:
        summary = run_sweep(SweepOptions(**{**vars(args), "only": tuple(args.only)}), out=console.line, progress=console)
    finally:
        console.stop()
    return 130 if summary.missing else 1 if summary.failed else 0  # 130: stopped (Ctrl+C), as a shell reports it


if __name__ == "__main__":
    main_guard(main)
