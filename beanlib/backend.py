"""The Keras backend trials run on: chosen once per process before Keras loads, and set up for the trial's share.

TensorFlow is the default (the design card's, and the fastest here on CPU); JAX is how trials reach a GPU where
TensorFlow cannot go. Everything backend-specific lives in BACKENDS: thread pools from the trial's CPUs, GPU
memory sharing from its GPU share, determinism on CPU, the input pipeline, and JAX's compilation cache.
TensorFlow itself is imported only where it is needed: the TensorFlow backend, and decoding JPEGs or TFDS.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import numpy as np

from beanlib.errors import BeanlibError

log = logging.getLogger(__name__)

DEFAULT = "tensorflow"
_CONFIGURED: dict[str, Any] = {}  # what the first configure() in this process fixed
_DEFERRED: dict[str, Any] = {}  # what configure_when_needed() asked for, until needed() applies it
_DECODER_WITHOUT_GPUS: list[bool] = []  # whether decoder_tensorflow() has hidden GPUs from TensorFlow here


def choose(name: str | None = None) -> str:
    """Make `name` (else $KERAS_BACKEND, else tensorflow) this process's Keras backend; returns it.

    Call it before anything imports Keras. The choice travels to child processes (Ray workers) in
    $KERAS_BACKEND. A backend that is unknown, not installed, or not the one Keras already loaded is refused.
    """
    name = name or os.environ.get("KERAS_BACKEND") or DEFAULT
    if name not in BACKENDS:
        raise BeanlibError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    spec = BACKENDS[name]
    if importlib.util.find_spec(spec.module) is None:
        raise BeanlibError(f"backend {name} is not installed: pip install '{spec.install}', or pass --backend {DEFAULT}")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != name:
        raise BeanlibError(f"Keras is already loaded with backend {sys.modules['keras'].backend.backend()} in this process: "
                           f"set KERAS_BACKEND={name} before starting it")
    os.environ["KERAS_BACKEND"] = name
    return name


def current() -> str:
    """The Keras backend of this process: read from $KERAS_BACKEND without importing Keras while it names a known
    backend and Keras is not loaded (a sweep's driver need not start TensorFlow at all), as Keras takes
    $KERAS_BACKEND over its config file; else Keras's own answer. choose() sets it, and refuses once Keras is loaded
    with another."""
    if "keras" not in sys.modules and os.environ.get("KERAS_BACKEND") in BACKENDS:
        return os.environ["KERAS_BACKEND"]
    import keras

    return keras.backend.backend()


def configure(cpus: int | None = None, gpu_share: float = 1.0, use_gpu: bool = True) -> None:
    """Confine this process's backend to a trial's share: `cpus` threads, a `gpu_share` of one GPU's memory, no GPU
    at all when `use_gpu` is False (a CPU trial on a GPU node must not take the node's GPU).

    Backends fix these when their runtime starts, so only the first call in a process takes effect. A sweep's worker
    runs only trials that ask for the same resources (Tune reuses a worker for those only), so its first holds.
    """
    name = current()
    if _CONFIGURED:
        if (cpus, use_gpu) != (_CONFIGURED["cpus"], _CONFIGURED["use_gpu"]) and cpus is not None:
            log.info("%s already set up for %s CPUs in this process", name, _CONFIGURED["cpus"])
        return
    BACKENDS[name].configure(cpus, gpu_share, use_gpu)
    _CONFIGURED.update(backend=name, cpus=cpus, use_gpu=use_gpu)


def configure_when_needed(cpus: int | None = None, gpu_share: float = 1.0, use_gpu: bool = True) -> None:
    """configure() with these settings, put off until this process first needs its backend's runtime (`needed()`:
    decoding images, checking a weights file). A sweep's driver whose data and weights check are cached then never
    starts TensorFlow, which takes seconds and hundreds of MB (benchmarks/sweep_overhead.py)."""
    _DEFERRED.update(cpus=cpus, gpu_share=gpu_share, use_gpu=use_gpu)


def needed() -> None:
    """Apply the settings configure_when_needed() put off, unless this process is set up already."""
    if _DEFERRED and not _CONFIGURED:
        configure(**_DEFERRED)


def trial_scope() -> ContextManager:
    """One trial's span in this process: it starts from Keras's blank state, and what the backend would keep of it
    afterwards is released, so that a worker that runs trial after trial (the sweep reuses them) runs each as a fresh
    process would: the same history, and memory that does not grow."""
    import keras

    keras.backend.clear_session()
    return BACKENDS[current()].trial_scope()


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None, start_epoch: int = 0,
            endless: bool = False):
    """What `fit` reads from epoch `start_epoch` on: batches of (x, y) in order, or in `epoch_order(seed, epoch)`.
    `endless` (training data): epoch after epoch, for a `fit` given `steps_per_epoch=steps(len(y), batch_size)`;
    else one epoch (validation data, read anew each epoch). Each epoch's order
    depends on nothing but the seed and the epoch, on every backend: a trial resumed at epoch k sees what an
    uninterrupted one saw, and the backends see the same data order."""
    return BACKENDS[current()].batches(x, y, batch_size, shuffle_seed, start_epoch, endless)


def build_for_fit(model, x: np.ndarray, y: np.ndarray) -> None:
    """Create a compiled model's optimizer, loss and metric variables from one batch's shapes, before `fit`. Keras on
    TensorFlow otherwise creates them inside the first trace of its train step, and TensorFlow then traces the step a
    second time (tests/test_train.py counts both). What exists already is left as it is."""
    model._symbolic_build(data_batch=(x[:1], y[:1]))  # Keras's own pre-fit step: private, none is public (keras 3.15)


def steps(count: int, batch_size: int) -> int:
    """Batches in one epoch of `count` items (the last one may be short)."""
    return -(-count // batch_size)


def epoch_order(count: int, seed: int | None, epoch: int) -> np.ndarray:
    """The order of `count` items in `epoch`: 0..count-1 without a seed, else a permutation fixed by (seed, epoch)."""
    if seed is None:
        return np.arange(count)
    return np.random.default_rng([seed, epoch]).permutation(count)


def decoder_tensorflow():
    """TensorFlow for decoding images (JPEG, TFDS). On another backend it only decodes: it gets no GPU."""
    needed()  # a sweep's driver set itself up without GPUs, for when it decodes
    import tensorflow as tf

    if os.environ.get("KERAS_BACKEND", DEFAULT) != "tensorflow" and not _DECODER_WITHOUT_GPUS:
        try:
            _tf_hide_gpus(tf)
        except RuntimeError:  # its runtime already started: too late to hide them
            pass
        _DECODER_WITHOUT_GPUS.append(True)
    return tf


def _tf_hide_gpus(tf) -> None:
    """No GPU for TensorFlow in this process (RuntimeError when its runtime has already started)."""
    tf.config.set_visible_devices([], "GPU")


# --- TensorFlow -----------------------------------------------------------------------------------


def _tf_configure(cpus: int | None, gpu_share: float, use_gpu: bool) -> None:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    try:
        if not use_gpu and gpus:
            _tf_hide_gpus(tf)
            gpus = []
        limit = gpu_memory_limit_mib(gpu_share) if gpus and gpu_share < 1 else None
        for gpu in gpus:
            if limit:  # a hard cap, so that packed trials cannot starve each other (growth alone does not stop one)
                tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
            else:  # memory as the trial needs it, not all of it up front
                tf.config.experimental.set_memory_growth(gpu, True)
        if cpus:
            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(min(cpus, 2))
    except RuntimeError as error:  # the runtime was already started by someone else in this process
        log.info("TensorFlow already initialised, keeping its settings: %s", error)
    if not gpus:
        tf.config.experimental.enable_op_determinism()  # free on CPU (measured: 202 against 203 images/s)


@contextlib.contextmanager
def _tf_trial_scope():
    """TensorFlow never frees a trained model: Keras's optimizer calls `all_reduce` in each traced train step, which
    registers a custom gradient in TensorFlow's process-wide gradient registry, never emptied, and that gradient
    holds the traced graph and through it every model and optimizer variable (measured: +60 MiB per LeNet trial at
    128px, with clear_session and gc). Drop the ones this trial registered once it is over: its graphs are traced."""
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):  # a TensorFlow whose registry moved: leak rather than fail
        log.warning("TensorFlow's gradient registry was not found: a reused worker keeps each trial's model in memory")
        yield
        return
    before = set(registry)
    try:
        yield
    finally:
        for name in [n for n in registry if n.startswith("CustomGradient-") and n not in before]:
            del registry[name]


def _tf_batches(x, y, batch_size: int, shuffle_seed: int | None, start_epoch: int = 0, endless: bool = False):
    """tf.data batches gathered from the arrays by index; `endless`: epoch after epoch in one stream (`fit` takes
    steps_per_epoch and keeps one iterator; a stream that ended with the last epoch would make prefetching
    report it as data run out). Memory holds the arrays once (`from_tensor_slices` would copy them
    into the graph, a shuffle buffer again: three copies of 1.2 GB of cached fine-tune activations at 299px).
    An epoch's order is `epoch_order`: not the state of a shuffle op, which Keras advances in ways of its own."""
    import tensorflow as tf

    count = len(y)

    def gather(index):
        return x[index], y[index]

    def batch(index):
        images, labels = tf.numpy_function(gather, [index], (tf.as_dtype(x.dtype), tf.as_dtype(y.dtype)), stateful=False)
        return tf.ensure_shape(images, (None, *x.shape[1:])), tf.ensure_shape(labels, (None,))

    def one_epoch(epoch):
        order = tf.numpy_function(lambda e: epoch_order(count, shuffle_seed, int(e)).astype(np.int64), [epoch], tf.int64, stateful=False)
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, (count,))).batch(batch_size)

    stream = tf.data.Dataset.range(start_epoch, 2**62 if endless else start_epoch + 1).flat_map(one_epoch)  # lazily
    if not endless:  # flat_map hides the length, and Keras warns of data run out where it does not know it
        stream = stream.apply(tf.data.experimental.assert_cardinality(steps(count, batch_size)))
    # No autotuning: it runs threads of its own (tests/test_backends.py counts them), which deleting the iterator
    # joins, at the end of `fit`; in Ray workers that wait took 5-35 s at the end of about one phase in three (py-spy:
    # ~RootDataset::Iterator waiting in ~LogicalThreadWrapper). Two batches ready ahead are enough: one is
    # gathered in milliseconds, a training step takes far longer.
    options = tf.data.Options()
    options.autotune.enabled = False
    return stream.map(batch).prefetch(2).with_options(options)


# Of a trial's GPU share, what its allocator may hold: the CUDA context and XLA's scratch space live outside it.
GPU_MEMORY_HEADROOM = 0.9


def gpu_memory_limit_mib(gpu_share: float) -> int | None:
    """A trial's GPU memory cap in MiB: its share (less headroom) of this process's first visible GPU, as
    nvidia-smi reports it. None (and a warning) where nvidia-smi cannot tell: the trial then only grows."""
    import subprocess

    device = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"  # Ray sets it to the trial's GPUs
    try:
        shown = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", device],
                               capture_output=True, text=True, timeout=30, check=True).stdout
        total_mib = int(shown.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
        log.warning("no GPU memory cap for this trial (nvidia-smi could not tell GPU %s's memory: %s)", device, error)
        return None
    return int(total_mib * gpu_share * GPU_MEMORY_HEADROOM)


# --- JAX ------------------------------------------------------------------------------------------


def _jax_configure(cpus: int | None, gpu_share: float, use_gpu: bool) -> None:
    # XLA reads these when its runtime starts (the first array op), which is after Keras has imported jax.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # take memory as needed, not 75% up front
    if use_gpu and gpu_share < 1:
        # A hard cap, so that packed trials cannot starve each other: each gets its share of the memory.
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{gpu_share * GPU_MEMORY_HEADROOM:.3f}")
    # No thread count: JAX documents no setting for it, and XLA_FLAGS' eigen switches are reported not to hold
    # (jax-ml/jax#1539). JAX is for GPUs here: on these CPUs TensorFlow trains LeNet 4-6x faster.
    import jax

    if not use_gpu:
        jax.config.update("jax_platforms", "cpu")
    # Compile once per shape: a trial whose model and input shapes an earlier trial on this node compiled reads
    # the compiled code from node-local disk instead of compiling it again ($BEANLIB_COMPILE_CACHE=off: never).
    folder = compile_cache_dir()
    if folder is not None:
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)  # what costs to compile; not tiny ops
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def compile_cache_dir():
    """Where compiled code is kept between processes: $BEANLIB_COMPILE_CACHE, else the beanlib cache's
    `jax-compile` folder (node-local: ~/.cache/beanlib); None when $BEANLIB_COMPILE_CACHE is "off"."""
    from pathlib import Path

    from beanlib.cache import default_cache_dir

    value = os.environ.get("BEANLIB_COMPILE_CACHE")
    if value == "off":
        return None
    return Path(value) if value else default_cache_dir() / "jax-compile"


def _pydataset_batches(x, y, batch_size: int, shuffle_seed: int | None, start_epoch: int = 0, endless: bool = False):
    """A keras.utils.PyDataset over in-memory arrays, each epoch in `epoch_order` (Keras calls on_epoch_end; one
    object serves every epoch, so `endless` changes nothing)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = start_epoch
            self.order = epoch_order(len(y), shuffle_seed, start_epoch)

        def __len__(self):
            return steps(len(y), batch_size)

        def __getitem__(self, index):
            chosen = self.order[index * batch_size:(index + 1) * batch_size]
            return x[chosen], y[chosen]

        def on_epoch_end(self):
            self.epoch += 1
            self.order = epoch_order(len(y), shuffle_seed, self.epoch)

    return Batches()


# --- torch ----------------------------------------------------------------------------------------


def _torch_configure(cpus: int | None, gpu_share: float, use_gpu: bool) -> None:
    import torch

    if cpus:
        torch.set_num_threads(cpus)
    if not use_gpu or not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True)
    elif gpu_share < 1:
        torch.cuda.set_per_process_memory_fraction(gpu_share)  # packed trials cannot starve each other


@dataclass(frozen=True)
class Backend:
    """One Keras backend: its module, how to install it, its setup, its input pipeline, and what frees a trial."""

    module: str
    install: str
    configure: Callable[[int | None, float, bool], None]
    batches: Callable[..., Any]
    trial_scope: Callable[[], ContextManager] = contextlib.nullcontext  # JAX and torch free a model with its objects


BACKENDS: dict[str, Backend] = {
    "tensorflow": Backend("tensorflow", "tensorflow", _tf_configure, _tf_batches, _tf_trial_scope),
    "jax": Backend("jax", "jax[cpu]", _jax_configure, _pydataset_batches),  # GPU: jax[cuda12]
    "torch": Backend("torch", "torch", _torch_configure, _pydataset_batches),  # not in the tested set: see README
}
