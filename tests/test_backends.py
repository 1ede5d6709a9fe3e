"""Trials on each Keras backend, and what beanlib.backend sets up: pipelines, precision, the compilation cache.

A process has one Keras backend, fixed when Keras loads; this one runs TensorFlow, so the other backends' trials
run in subprocesses.
"""

import importlib.util
import json
import re
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# One LeNet and one fine-tuned Inception-v3 trial at 75px on synthetic beans, on a backend other than TensorFlow, which
# cannot be imported at all: as on a GPU machine that has only keras, a backend and numpy.
TRIALS = r"""
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("TensorFlow is not installed here")
sys.meta_path.insert(0, Block())
from beanlib import backend
backend.choose(sys.argv[1])
from beanlib.data import load_beans
from beanlib.train import run_trial
data = load_beans("synthetic", 75, per_class=4)
out = {"backend": backend.current(), "tensorflow_loaded": "tensorflow" in sys.modules}
for name, config in (("lenet", {"model": "lenet", "image_size": 75, "epochs": 2, "batch_size": 8}),
                     ("inception", {"model": "inception", "image_size": 75, "epochs": 1, "batch_size": 8, "weights": "none",
                                    "unfreeze_from": 249, "fine_tune_epochs": 1})):
    r = run_trial(config, data, cpus=1)
    out[name] = {"status": r.status, "history": r.history, "test_loss": r.test_loss, "test_accuracy": r.test_accuracy,
                 "trainable": r.trainable_params, "total": r.total_params}
print("RESULT " + json.dumps(out))
"""


def _trials_on(backend: str, tmp_path) -> dict:
    env = {**os.environ, "BEANLIB_COMPILE_CACHE": str(tmp_path / "compiled")}
    env.pop("KERAS_BACKEND", None)
    done = subprocess.run([sys.executable, "-c", TRIALS, backend], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return _result(done)


def _result(done: subprocess.CompletedProcess) -> dict:
    """What a script above printed on its RESULT line."""
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax"])  # TensorFlow's: the same trials in this process, tests/test_train.py
def test_the_same_trials_run_on_each_backend(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[test]' brings jax[cpu])")
    out = _trials_on(backend, tmp_path)
    assert out["backend"] == backend
    assert not out["tensorflow_loaded"]  # trials on another backend need no TensorFlow at all
    lenet, inception = out["lenet"], out["inception"]
    assert [(r["phase"], r["epoch"]) for r in lenet["history"]] == [("train", 1), ("train", 2)]
    assert [(r["phase"], r["epoch"]) for r in inception["history"]] == [("head", 1), ("fine_tune", 2)]
    for trial in (lenet, inception):
        assert trial["status"] == "ok" and math.isfinite(trial["test_loss"]) and 0 <= trial["test_accuracy"] <= 1
        assert all(math.isfinite(r[k]) for r in trial["history"] for k in ("loss", "val_loss"))
    # The same architecture on every backend: the parameter counts the original reported, for Inception-v3.
    from beanlib.config import TrialConfig
    from beanlib.models import parameter_counts

    assert (lenet["trainable"], lenet["total"]) == parameter_counts(TrialConfig.from_dict({"model": "lenet", "image_size": 75}))
    assert (inception["trainable"], inception["total"]) == (13_216_131, 23_904_035)


def _job(*argv: str, **extra: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}, **extra}
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name, message", [
    ("nosuch", "error: unknown backend 'nosuch': use one of tensorflow, jax, torch"),
    ("torch", "error: backend torch is not installed: pip install 'torch', or pass --backend tensorflow"),
])
def test_a_backend_that_is_unknown_or_not_installed_is_one_line_and_exit_2(name, message):
    if name == "torch" and importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here: nothing to refuse")
    done = _job("jobs.trial", "--model", "lenet", "--data", "synthetic", "--backend", name)
    assert done.returncode == 2 and done.stderr.strip() == message, done.stderr


@pytest.mark.slow
def test_the_jax_backend_reaches_every_ray_worker_and_the_run_records_it(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install -e '.[test]' brings jax[cpu])")
    import pandas as pd

    # One LeNet: its training step takes XLA about 2 s to compile on an AVX2 EPYC, past the 0.5 s from which the
    # compiled code is kept (an Inception-v3 trial here took more than twice as long for the same checks).
    run = ["jobs.sweep", "--study", "smoke", "--only", "baseline", "--data", "synthetic", "--per-class", "3",
           "--epochs", "1", "--results", str(tmp_path), "--name", "on-jax"]
    done = _job(*run, "--backend", "jax", BEANLIB_COMPILE_CACHE=str(tmp_path / "compiled"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # The workers' compiled code went to the node-local cache, for the next trial of the same shapes.
    assert any((tmp_path / "compiled").iterdir())
    trials = pd.read_parquet(tmp_path / "on-jax" / "trials")
    assert list(trials["backend"]) == ["jax"] and trials["backend_version"].iloc[0] != "not installed"
    assert json.loads((tmp_path / "on-jax" / "run.json").read_text())["backend"] == "jax"
    # The same run on another backend would mix two backends' numbers in one report: refused.
    again = _job(*run, "--backend", "tensorflow", "--repeats", "2")
    assert again.returncode == 2 and "different backend" in again.stderr, again.stderr


def test_both_pipelines_give_each_epoch_the_order_of_its_seed_and_number_and_start_at_any_epoch():
    """The claim in beanlib.backend.batches: an epoch's order depends only on (seed, epoch), on TensorFlow's pipeline
    and the PyDataset alike, so a pipeline started at epoch k (a resumed trial) reads what a running one reads there."""
    from beanlib.backend import _pydataset_batches, _tf_batches, epoch_order

    x, y = np.arange(103)[:, None, None].repeat(2, 1).astype(np.float32), np.arange(103)
    stream = iter(_tf_batches(x, y, 8, shuffle_seed=3, endless=True))
    tf_epochs = [np.concatenate([next(stream)[1].numpy() for _ in range(13)]) for _ in range(4)]  # 13 batches an epoch
    late = iter(_tf_batches(x, y, 8, shuffle_seed=3, start_epoch=2, endless=True))
    assert (np.concatenate([next(late)[1].numpy() for _ in range(26)]) == np.concatenate(tf_epochs[2:])).all()
    py = _pydataset_batches(x, y, 8, shuffle_seed=3)
    for epoch, order in enumerate(tf_epochs):
        assert (order == epoch_order(103, 3, epoch)).all() and sorted(order) == list(range(103))
        assert (np.concatenate([py[i][1] for i in range(len(py))]) == order).all()
        py.on_epoch_end()
    assert len({tuple(order) for order in tf_epochs}) == 4  # reshuffled every epoch
    images, labels = next(iter(_tf_batches(x, y, 8, shuffle_seed=3)))
    assert images.shape == (8, 2, 1) and (images.numpy()[:, 0, 0] == labels.numpy()).all()  # images stay with labels
    assert [b[1].numpy().tolist() for b in _tf_batches(x, y, 50, None)] == [list(range(50)), list(range(50, 100)), [100, 101, 102]]


def test_tensorflows_pipeline_runs_without_autotunings_threads():
    """The claim in beanlib.backend._tf_batches: tf.data's autotuning starts threads of its own with an iterator
    (which deleting the iterator must join), and the training pipeline starts none of them."""
    import tensorflow as tf

    from beanlib.backend import _tf_batches

    def threads_of(dataset, until=lambda count: False, wait: float = 1.0) -> int:
        """Threads the process gained once the dataset's iterator runs, counted after `wait` seconds or as soon as
        `until(count)` holds (threads start as the iterator runs: later on a loaded machine)."""
        def gained() -> int:
            return len(os.listdir("/proc/self/task")) - before

        before = len(os.listdir("/proc/self/task"))
        iterator = iter(dataset)
        next(iterator)
        deadline = time.monotonic() + wait
        while not until(gained()) and time.monotonic() < deadline:
            time.sleep(0.05)
        count = gained()
        del iterator
        return count

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("counting a process's threads needs Linux's /proc")
    x, y = np.zeros((64, 2), np.float32), np.arange(64)
    threads_of(_tf_batches(x, y, 8, shuffle_seed=1, endless=True))  # TensorFlow's own pools start with its first one
    ours = threads_of(_tf_batches(x, y, 8, shuffle_seed=1, endless=True))
    options = tf.data.Options()
    options.autotune.enabled = True  # a later with_options overrides the pipeline's own
    autotuned = _tf_batches(x, y, 8, shuffle_seed=1, endless=True).with_options(options)
    assert threads_of(autotuned, until=lambda count: count > ours, wait=10.0) > ours


def test_pydataset_batches_cover_every_image_each_epoch_reshuffled_from_the_seed():
    from beanlib.backend import _pydataset_batches

    x, y = np.arange(10)[:, None].repeat(2, 1), np.arange(10)
    batches = _pydataset_batches(x, y, 4, shuffle_seed=3)
    assert len(batches) == 3 and [len(batches[i][1]) for i in range(3)] == [4, 4, 2]

    def epoch(ds):
        order = np.concatenate([ds[i][1] for i in range(len(ds))])
        assert (ds[0][0][:, 0] == ds[0][1]).all()  # images stay with their labels
        ds.on_epoch_end()
        return order

    first, second = epoch(batches), epoch(batches)
    assert sorted(first) == sorted(second) == list(range(10)) and list(first) != list(second)
    again = _pydataset_batches(x, y, 4, shuffle_seed=3)
    assert list(epoch(again)) == list(first) and list(epoch(again)) == list(second)  # the seed fixes every epoch
    assert list(epoch(_pydataset_batches(x, y, 4, shuffle_seed=None))) == list(range(10))  # validation: in order


@pytest.mark.parametrize("precision, compute", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
def test_mixed_precision_computes_in_16_bits_with_float32_logits_weights_and_loss_scaling(precision, compute, tiny_synthetic):
    import keras

    from beanlib.config import TrialConfig
    from beanlib.models import build
    from beanlib.train import run_trial

    config = TrialConfig.from_dict({"model": "lenet", "image_size": 32, "precision": precision})
    model = build(config).model
    assert keras.config.dtype_policy().name == "float32"  # the process-wide policy is back for the next trial
    conv, logits = model.get_layer("conv1"), model.get_layer("logits")
    assert conv.compute_dtype == compute and conv.kernel.dtype == "float32"
    assert model(np.zeros((1, 32, 32, 3), "uint8")).dtype == "float32"
    model.compile(optimizer="adam", loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "mixed_float16")
    assert logits.compute_dtype == "float32"
    result = run_trial(config.to_dict() | {"epochs": 1}, tiny_synthetic)
    assert result.status == "ok" and math.isfinite(result.test_loss)


@pytest.mark.slow
def test_gpu_study_benchmark_runs_a_study_in_a_row_and_packed_on_cpu(tmp_path):
    """benchmarks/gpu_study.py at a tiny size: per-trial compile and steady seconds, then both modes' wall time."""
    backend = "jax" if importlib.util.find_spec("jax") else "tensorflow"
    env = {**os.environ, "KERAS_BACKEND": backend, "BEANLIB_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_study", "--study", "smoke", "--image-size", "75",
                           "--per-class", "2", "--epochs", "2", "--packed", "2", "--only", "baseline,kernel_size=3"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"smoke at 75px, 1 repeat(s), backend {backend}")
    for mode, processes in (("row", 1), ("packed", 2)):
        start = lines.index(next(line for line in lines if line.startswith(f"{mode}: {processes} process(es), wall ")))
        rows = [line.split() for line in lines[start + 2:start + 4]]
        assert sorted(r[0] for r in rows) == ["baseline", "kernel_size=3"]
        assert all(float(r[2]) > 0 and float(r[3]) > 0 and float(r[4]) > 0 for r in rows)  # first, steady, images/s
    assert re.fullmatch(r"wall: row \d+\.\ds, packed \d+\.\ds", lines[-1])


def test_a_shared_gpu_trial_is_capped_at_its_share_of_the_memory_nvidia_smi_reports(tmp_path, monkeypatch, caplog):
    from beanlib import backend

    # A stand-in nvidia-smi (no GPU here): it answers only the query beanlib must make, for the GPU Ray assigned.
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\n[ "$*" = "--query-gpu=memory.total --format=csv,noheader,nounits -i 3" ] '
                    '&& echo 143771 || exit 9\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert backend.gpu_memory_limit_mib(0.125) == int(143771 * 0.125 * 0.9)

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")  # the tool fails for this GPU: no cap, and a warning says why
    assert backend.gpu_memory_limit_mib(0.125) is None
    assert "no GPU memory cap" in caplog.text


DECODE_THEN_TRAIN = r"""
import json, sys
from beanlib import backend
backend.choose("jax")
from beanlib.data import load_beans
from beanlib.train import run_trial
data = load_beans(sys.argv[1], 32)  # JPEGs: decoded by TensorFlow, which gets no GPU on the JAX backend
result = run_trial({"model": "lenet", "image_size": 32, "epochs": 1, "batch_size": 4}, data, cpus=1)
print("RESULT " + json.dumps({"status": result.status, "configured": backend._CONFIGURED}))
"""


@pytest.mark.slow
def test_decoding_jpegs_first_does_not_stop_the_jax_backend_being_set_up(jpeg_folder, tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install -e '.[test]' brings jax[cpu])")
    env = {**{k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}, "BEANLIB_CACHE": str(tmp_path / "cache"),
           "BEANLIB_COMPILE_CACHE": "off"}
    done = subprocess.run([sys.executable, "-c", DECODE_THEN_TRAIN, str(jpeg_folder)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = _result(done)
    assert out["status"] == "ok" and out["configured"] == {"backend": "jax", "cpus": 1, "use_gpu": True}
