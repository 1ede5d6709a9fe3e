"""Run one training trial locally (no Ray) and print its result as JSON.

    python -m jobs.trial --model lenet --data PATH --image-size 128 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from jobs.common import default_data, main_guard


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from beanlib.families import FAMILIES

    p = argparse.ArgumentParser(prog="python -m jobs.trial", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, choices=list(FAMILIES))
    p.add_argument("--data", default=default_data(), help="tfds (beans) | tfds:NAME | synthetic | PATH (default: $BEANLIB_DATA or tfds)")
    p.add_argument("--per-class", type=int, help="keep only the first N images of each class in each split")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any config field, e.g. --set kernel_size=3 --set regularizer=l2 (repeatable)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--cpus", type=int, help="CPU threads for the trial (default: all)")
    p.add_argument("--backend", help="Keras backend: tensorflow (default) | jax | torch (default: $KERAS_BACKEND, else tensorflow)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from beanlib.console import hide_native_logs

    hide_native_logs()  # before anything imports TensorFlow
    args = parse(argv)
    from beanlib import backend
    from beanlib.config import TrialConfig
    from beanlib.errors import BeanlibError

    backend.choose(args.backend)  # before anything imports Keras

    values = {"model": args.model, "image_size": args.image_size, "epochs": args.epochs, "seed": args.seed}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise BeanlibError(f"--set {item!r} is not FIELD=VALUE: write e.g. --set kernel_size=3")
        values[name] = None if value.lower() == "none" and name == "unfreeze_from" else value
    config = TrialConfig.from_dict(values)  # refuse bad input before loading any data
    from beanlib.families import family

    backend.configure(args.cpus)  # before checking weights or decoding: backends fix their threads when they start
    if family(config.model).pretrained_base:
        family(config.model).check_weights(config.weights)  # a file that is not a trained base of this family, too
    from beanlib.data import load_beans
    from beanlib.train import run_trial

    data = load_beans(args.data, config.image_size, args.per_class)
    print(f"data: {args.data} {data.counts()} fingerprint {data.fingerprint}", file=sys.stderr)

    def progress(record: dict) -> None:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}), file=sys.stderr)

    result = run_trial(config, data, on_epoch=progress, cpus=args.cpus)
    print(json.dumps({"config": config.to_dict(), "backend": backend.current(), **result.to_dict()}, indent=1))
    return 0 if result.status in ("ok", "stopped") else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main_guard(main)
