"""Classify images with a run's kept model: one line per image (file, predicted class, probabilities).

    python -m jobs.predict --run RESULTS/RUN [--model best|TRIAL_ID] [--out FILE.parquet] IMAGE_OR_FOLDER ...
"""

from __future__ import annotations

import argparse
import sys

from jobs.common import main_guard


def main(argv: list[str] | None = None) -> int:
    from beanlib.console import hide_native_logs

    hide_native_logs()  # before anything imports TensorFlow
    p = argparse.ArgumentParser(prog="python -m jobs.predict", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the run's folder, RESULTS/RUN, as jobs.sweep wrote it (a path or URI)")
    p.add_argument("--model", default="best", help="best (the model chosen on validation, default) or a trial id with a kept model")
    p.add_argument("--out", help="also write the predictions to this Parquet file")
    p.add_argument("--backend", help="Keras backend: tensorflow (default) | jax | torch (default: $KERAS_BACKEND, else tensorflow)")
    p.add_argument("images", nargs="+", help="image files, or folders of them")
    args = p.parse_args(argv)
    from beanlib import backend

    backend.choose(args.backend)  # before anything imports Keras
    from beanlib.predict import choose_model, classify, image_files, write_predictions

    model = choose_model(args.run, args.model)  # a missing run or model fails here, before any image is read
    files = image_files(args.images)
    rows, skipped = classify(model, files)
    print(f"model: trial {model.row['trial_id']} ({model.row['setting']}, test accuracy {model.row['test_accuracy']:.4f}) "
          f"from {model.path}", file=sys.stderr)
    for row in rows:
        shown = " ".join(f"{name}={p:.3f}" for name, p in zip(row["class_names"], row["probabilities"]))
        print(f"{row['file']}\t{row['predicted']}\t{shown}")
    for path in skipped:
        print(f"error: {path} could not be read as an image: skipped (the others were classified)", file=sys.stderr)
    if args.out:
        write_predictions(rows, args.out)
        print(f"predictions: {args.out} ({len(rows)} images)", file=sys.stderr)
    return 1 if skipped else 0


if __name__ == "__main__":
    main_guard(main)
