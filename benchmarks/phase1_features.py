"""Inception-v3 phase 1 (frozen base, head only): cached base features vs fitting the whole model.

Both runs use the same config, seed and epochs; the cached run's time includes
extracting the features (once per weights, size and data). Prints seconds for
each and the speed-up, and the final metrics to show the results agree.

    python -m benchmarks.phase1_features --data PATH [--image-size 128] [--epochs 3] [--weights none]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from jobs.common import default_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=default_data())
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--weights", default="none", help="none (offline), imagenet, or a weights file")
    p.add_argument("--per-class", type=int)
    args = p.parse_args()
    os.environ["BEANLIB_CACHE"] = tempfile.mkdtemp(prefix="beanlib-bench-")  # features computed fresh, not from disk

    from beanlib.data import load_beans
    from beanlib.train import run_trial

    start = time.perf_counter()
    data = load_beans(args.data, args.image_size, args.per_class)
    print(f"data {args.data} at {args.image_size}px: {data.counts()} prepared in {time.perf_counter() - start:.1f}s")
    config = {"model": "inception", "weights": args.weights, "image_size": args.image_size, "epochs": args.epochs}
    runs = {}
    for label, cached in (("cached features", True), ("whole model", False)):
        start = time.perf_counter()
        result = run_trial({**config, "feature_cache": cached}, data)
        runs[label] = (time.perf_counter() - start, result)
        epochs = [round(r["seconds"], 2) for r in result.history]
        print(f"{label:16s} wall {runs[label][0]:7.1f}s  train {result.train_seconds:7.1f}s  "
              f"(features {result.feature_seconds:.1f}s, epochs {epochs})  "
              f"val_acc {result.val_accuracy:.4f}  test_acc {result.test_accuracy:.4f}  test_loss {result.test_loss:.4f}")
    cached_s, whole_s = runs["cached features"][1].train_seconds, runs["whole model"][1].train_seconds
    print(f"speed-up of phase 1 with cached features: {whole_s / cached_s:.1f}x over {args.epochs} epochs "
          f"({whole_s:.1f}s -> {cached_s:.1f}s)")


if __name__ == "__main__":
    main()
