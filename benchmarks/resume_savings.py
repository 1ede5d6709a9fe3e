"""What mid-trial checkpoints save: one long LeNet trial killed at epoch K, resumed from its checkpoint or from zero.

    python -m benchmarks.resume_savings --data PATH [--image-size 128] [--epochs 20] [--kill-at 10]

Three sweeps of the same one-trial study (the baseline LeNet), each on an embedded Ray with one CPU:
  uninterrupted      no fault;
  resumed            its worker killed once epoch K is reported, checkpoints after every epoch: the restart
                     continues from epoch K;
  from zero          the same kill, checkpoints off (what beanlib did before): the restart trains from epoch 0.
Prints each sweep's wall, the trial's epochs trained in all, and the checkpoint's size on disk (one per running
trial: Tune keeps the last only, and a finished trial's is deleted). Also checks that the resumed trial's history
equals the uninterrupted one's, epoch by epoch.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.resume_savings", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--kill-at", type=int, default=10)
    args = p.parse_args(argv)

    import pandas as pd
    import ray

    from beanlib import studies
    from beanlib.studies import Factor, Study
    from beanlib.sweep import SweepOptions, run_sweep

    studies.STUDIES["long"] = Study("long", "the baseline LeNet alone", {"model": "lenet", "image_size": args.image_size,
                                                                         "epochs": args.epochs}, (Factor("lenet", (("baseline", {}),)),))
    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
    root = tempfile.mkdtemp(prefix="resume-savings-")
    sizes: list[int] = []
    cases = {"uninterrupted": (0, ()), "resumed": (0, (f"baseline:crash@{args.kill_at}",)),
             "from zero": (1e9, (f"baseline:crash@{args.kill_at}",))}
    rows = {}
    for name, (every, fault) in cases.items():
        results = os.path.join(root, name.replace(" ", "-"))
        watcher = _CheckpointWatcher(results, sizes) if name == "resumed" else None
        started = time.perf_counter()
        run_sweep(SweepOptions(study="long", data=args.data, results=results, checkpoint_seconds=every, inject_fault=fault,
                               keep_models="none"), out=lambda line: None)
        wall = time.perf_counter() - started
        if watcher:
            watcher.stop()
        trial = pd.read_parquet(os.path.join(results, "long", "trials")).iloc[0]
        epochs = pd.read_parquet(os.path.join(results, "long", "epochs")).sort_values("epoch")
        rows[name] = (wall, trial, epochs)
        trained = args.epochs + (args.kill_at if name == "from zero" else 0)
        print(f"{name:14s} wall {wall:7.1f}s  epochs trained {trained:3d}  resumed_from_epoch "
              f"{trial['resumed_from_epoch'] if pd.notna(trial['resumed_from_epoch']) else '-'}  "
              f"train_seconds {trial['train_seconds']:.1f}  test_acc {trial['test_accuracy']:.4f}")
    metrics = ["loss", "accuracy", "val_loss", "val_accuracy"]
    same = (rows["resumed"][2][metrics].to_numpy() == rows["uninterrupted"][2][metrics].to_numpy()).all()
    print(f"resumed history equals the uninterrupted one, epoch by epoch: {bool(same)}")
    saved = rows["from zero"][0] - rows["resumed"][0]
    print(f"recomputation saved by resuming: {saved:.1f}s of wall ({100 * saved / rows['from zero'][0]:.0f}% of the "
          f"from-zero sweep); {args.kill_at} epochs not trained again")
    if sizes:
        print(f"checkpoint on disk: {max(sizes) / 2**20:.2f} MiB (largest seen; one per running trial)")


class _CheckpointWatcher:
    """Samples the size of the run's checkpoint folders every 0.2 s in a thread (they are deleted at the trial's end)."""

    def __init__(self, results: str, sizes: list[int]):
        import threading

        self.results, self.sizes, self.running = results, sizes, True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while self.running:
            total = 0
            for folder, _, files in os.walk(self.results):
                if "checkpoint_" in folder:
                    total += sum(os.path.getsize(os.path.join(folder, f)) for f in files if os.path.exists(os.path.join(folder, f)))
            if total:
                self.sizes.append(total)
            time.sleep(0.2)

    def stop(self) -> None:
        self.running = False
        self.thread.join()


if __name__ == "__main__":
    main()
