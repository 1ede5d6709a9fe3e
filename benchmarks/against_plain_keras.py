"""beanlib's sweep against the same protocol written as a plain sequential Keras script, timed in one run.

Both legs start cold (no cached images or features), read the same beans folder at the same size, and run the
`seed` study's 12 settings with one seed: LeNet (Adam 1e-3, batch 32, `--epochs`) and Inception-v3 (head for
`--epochs` at 1e-3, then the top 2 / 3 / 6 blocks for `--fine-tune-epochs` at 1e-5, BatchNorm on its moving
statistics). The plain script is what a careful user writes without beanlib: decode every image once, then
one model after another in one process with all cores, phase 1 through the whole Inception model.

    python -m benchmarks.against_plain_keras --data PATH --weights PATH [--image-size 128]
        [--epochs 20] [--fine-tune-epochs 10] [--early-stop 3] [--per-class N]

Prints each leg's wall time, the speed-ups (whole study, and each family's share of the wall), and every
setting's test accuracy side by side. `--early-stop P` adds a third leg, beanlib with `--early-stop P`,
compared with the same plain script (the fixed-epoch protocol) and checked for the same best setting per factor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# The seed study, written out as a plain script's author would: (setting, model, options).
LENET = {"kernel_size": 5, "kernel_counts": (6, 16, 120), "regularizer": "none"}
PLAIN_SETTINGS = [
    ("baseline", "lenet", {}),
    ("kernel_size=3", "lenet", {"kernel_size": 3}),
    ("kernel_size=7", "lenet", {"kernel_size": 7}),
    ("kernel_counts=3-8-60", "lenet", {"kernel_counts": (3, 8, 60)}),
    ("kernel_counts=12-32-240", "lenet", {"kernel_counts": (12, 32, 240)}),
    ("regularizer=l1", "lenet", {"regularizer": "l1"}),
    ("regularizer=l2", "lenet", {"regularizer": "l2"}),
    ("regularizer=dropout", "lenet", {"regularizer": "dropout"}),
    ("head-only", "inception", {"unfreeze_from": None}),
    ("top-2-blocks", "inception", {"unfreeze_from": 249}),
    ("top-3-blocks", "inception", {"unfreeze_from": 229}),
    ("top-6-blocks", "inception", {"unfreeze_from": 133}),
]
FACTORS = {  # setting -> the factors it counts for (the baseline counts for all three LeNet factors)
    "baseline": ("kernel_size", "kernel_counts", "regularizer"),
    **{s: (s.split("=")[0],) for s, model, _ in PLAIN_SETTINGS if "=" in s},
    **{s: ("inception",) for s, model, _ in PLAIN_SETTINGS if model == "inception"},
}


def plain_script(data: str, size: int, epochs: int, fine_tune_epochs: int, weights: str, per_class: int | None) -> None:
    """The plain leg: one process, TensorFlow's default threads; prints one JSON line per setting."""
    import numpy as np
    import tensorflow as tf
    import keras
    from keras import layers

    def load(split: str):
        classes = sorted(os.listdir(os.path.join(data, split)))
        paths, labels = [], []
        for label, name in enumerate(classes):
            files = sorted(os.listdir(os.path.join(data, split, name)))[:per_class]
            paths += [os.path.join(data, split, name, f) for f in files]
            labels += [label] * len(files)

        def decode(path):
            image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
            return tf.cast(tf.round(tf.image.resize(image, (size, size), antialias=True)), tf.uint8)

        images = tf.data.Dataset.from_tensor_slices(paths).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        return np.stack(list(images.as_numpy_iterator())), np.array(labels)

    start = time.perf_counter()
    splits = {s: load(s) for s in ("train", "validation", "test")}
    print(json.dumps({"decoded_seconds": time.perf_counter() - start}), flush=True)

    def batches(split, shuffle):
        ds = tf.data.Dataset.from_tensor_slices(splits[split])
        return (ds.shuffle(len(splits[split][1]), seed=0) if shuffle else ds).batch(32).prefetch(tf.data.AUTOTUNE)

    def fit(model, lr, n, initial=0):
        model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.fit(batches("train", True), validation_data=batches("validation", False), epochs=initial + n,
                  initial_epoch=initial, verbose=0)

    def lenet(kernel_size, kernel_counts, regularizer):
        reg = {"l1": keras.regularizers.L1(1e-4), "l2": keras.regularizers.L2(1e-3)}.get(regularizer)
        inputs = keras.Input((size, size, 3))
        x = layers.Rescaling(1 / 255)(inputs)
        for i, filters in enumerate(kernel_counts):
            x = layers.Conv2D(filters, kernel_size, activation="relu", kernel_regularizer=reg)(x)
            x = layers.Dropout(0.2)(x) if regularizer == "dropout" else x
            x = layers.MaxPooling2D(2)(x) if i < 2 else x
        x = layers.Dense(50, activation="relu")(layers.Flatten()(x))
        return keras.Model(inputs, layers.Dense(3)(x))

    class Inference(layers.Layer):  # the base's BatchNorm on moving statistics, whatever fit's `training` says
        def __init__(self, base):
            super().__init__()
            self.base = base

        def call(self, x):
            return self.base(x, training=False)

    for setting, model_name, options in PLAIN_SETTINGS:
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        if model_name == "lenet":
            model = lenet(**{**LENET, **options})
            fit(model, 1e-3, epochs)
        else:
            base = keras.applications.InceptionV3(include_top=False, weights=None if weights == "none" else weights,
                                                  input_shape=(size, size, 3))
            base.trainable = False
            inputs = keras.Input((size, size, 3))
            x = layers.GlobalAveragePooling2D()(Inference(base)(layers.Rescaling(1 / 127.5, offset=-1)(inputs)))
            model = keras.Model(inputs, layers.Dense(3)(layers.Dense(1024, activation="relu")(x)))
            fit(model, 1e-3, epochs)
            if options["unfreeze_from"] is not None:
                base.trainable = True
                for index, layer in enumerate(base.layers):
                    layer.trainable = index >= options["unfreeze_from"]
                fit(model, 1e-5, fine_tune_epochs, initial=epochs)
        _, accuracy = model.evaluate(batches("test", False), verbose=0)
        print(json.dumps({"setting": setting, "model": model_name, "test_accuracy": accuracy,
                          "seconds": time.perf_counter() - start}), flush=True)
        keras.backend.clear_session()


def timed(command: list[str], env: dict) -> tuple[float, str]:
    """Run `command` to completion; its wall seconds and stdout. A failure stops the benchmark with its output."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmark leg failed (exit {done.returncode}): {' '.join(command)}\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return time.perf_counter() - start, done.stdout


def beanlib_leg(args, results: str, name: str, early_stop: int) -> tuple[float, dict]:
    """A cold beanlib sweep of `seed` with one seed; its wall seconds and per-setting rows."""
    import pandas as pd

    command = [sys.executable, "-m", "jobs.sweep", "--study", "seed", "--data", args.data, "--image-size", str(args.image_size),
               "--epochs", str(args.epochs), "--fine-tune-epochs", str(args.fine_tune_epochs), "--weights", args.weights,
               "--results", results, "--name", name] + (["--early-stop", str(early_stop)] if early_stop else []) + \
              (["--per-class", str(args.per_class)] if args.per_class else [])
    env = {**os.environ, "BEANLIB_CACHE": tempfile.mkdtemp(prefix="beanlib-bench-")}  # start cold, as the script does
    seconds, _ = timed(command, env)
    trials = pd.read_parquet(os.path.join(results, name, "trials"))
    rows = {r["setting"]: {"model": r["model"], "test_accuracy": r["test_accuracy"], "seconds": r["train_seconds"],
                           "epochs_run": r["epochs_run"]} for r in trials.to_dict("records")}
    return seconds, rows


def family_share(wall: float, rows: dict, model: str) -> float:
    """The part of `wall` that one family's trials account for, in proportion to their summed trial seconds."""
    total = sum(r["seconds"] for r in rows.values())
    return wall * sum(r["seconds"] for r in rows.values() if r["model"] == model) / total


def best_per_factor(rows: dict) -> dict[str, str]:
    """Each factor's best setting by test accuracy."""
    best: dict[str, tuple[float, str]] = {}
    for setting, row in rows.items():
        for factor in FACTORS[setting]:
            best[factor] = max(best.get(factor, (-1.0, "")), (row["test_accuracy"], setting))
    return {factor: setting for factor, (_, setting) in best.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a beans folder (split/class/*.jpg)")
    p.add_argument("--weights", required=True, help="Inception-v3 base: a weights file, imagenet, or none")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--fine-tune-epochs", type=int, default=10)
    p.add_argument("--early-stop", type=int, default=0, help="add a beanlib leg with --early-stop PATIENCE")
    p.add_argument("--per-class", type=int, help="images per class per split (default: all)")
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # the plain leg's own process
    args = p.parse_args()
    if args.plain:
        return plain_script(args.data, args.image_size, args.epochs, args.fine_tune_epochs, args.weights, args.per_class)

    results = tempfile.mkdtemp(prefix="beanlib-bench-results-")
    print(f"seed study, 1 seed, {args.image_size}px, {args.epochs}+{args.fine_tune_epochs} epochs, data {args.data}, "
          f"weights {args.weights}, {os.cpu_count()} CPUs", flush=True)
    legs = {"beanlib": beanlib_leg(args, results, "fixed", 0)}
    print(f"beanlib: {legs['beanlib'][0]:.0f}s", flush=True)
    if args.early_stop:
        legs[f"beanlib --early-stop {args.early_stop}"] = beanlib_leg(args, results, "early", args.early_stop)
    plain_command = [sys.executable, "-m", "benchmarks.against_plain_keras", "--plain", "--data", args.data,
                     "--weights", args.weights, "--image-size", str(args.image_size), "--epochs", str(args.epochs),
                     "--fine-tune-epochs", str(args.fine_tune_epochs)] + (["--per-class", str(args.per_class)] if args.per_class else [])
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")}
    plain_wall, stdout = timed(plain_command, {**env, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    plain = {r["setting"]: r for r in lines if "setting" in r}
    print(f"plain script: {plain_wall:.0f}s (decoding {lines[0]['decoded_seconds']:.0f}s)\n")

    plain_share = {m: sum(r["seconds"] for r in plain.values() if r["model"] == m) for m in ("lenet", "inception")}
    print(f"{'leg':28s} {'wall s':>8s} {'speed-up':>9s} {'LeNet s':>8s} {'x':>6s} {'Inception s':>12s} {'x':>6s}")
    print(f"{'plain script':28s} {plain_wall:8.0f} {1:9.2f} {plain_share['lenet']:8.0f} {1:6.2f} {plain_share['inception']:12.0f} {1:6.2f}")
    for leg, (wall, rows) in legs.items():
        shares = {m: family_share(wall, rows, m) for m in ("lenet", "inception")}
        print(f"{leg:28s} {wall:8.0f} {plain_wall / wall:9.2f} {shares['lenet']:8.0f} {plain_share['lenet'] / shares['lenet']:6.2f} "
              f"{shares['inception']:12.0f} {plain_share['inception'] / shares['inception']:6.2f}")
    print("(a beanlib family's seconds: its share of the sweep's wall, in proportion to its trials' summed seconds; "
          "the script's: its trials' own seconds)\n")

    print(f"{'setting':26s} {'plain %':>8s} " + " ".join(f"{leg + ' %':>28s}" for leg in legs))
    for setting, _, _ in PLAIN_SETTINGS:
        cells = " ".join(f"{100 * rows[setting]['test_accuracy']:22.1f} ({rows[setting]['epochs_run']:.0f} ep)" for _, rows in legs.values())
        print(f"{setting:26s} {100 * plain[setting]['test_accuracy']:8.1f} {cells}")
    print()
    reference = best_per_factor(plain)
    for leg, (_, rows) in legs.items():
        mine = best_per_factor(rows)
        same = [f for f in reference if mine[f] == reference[f]]
        print(f"best setting per factor, {leg} vs plain: {len(same)}/{len(reference)} the same; "
              + "; ".join(f"{f}: {mine[f]} vs {reference[f]}" for f in reference))


if __name__ == "__main__":
    main()
