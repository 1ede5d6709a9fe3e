"""One training trial: a validated config and prepared data in, one result record out.

No Ray here: the sweep calls `run_trial` inside Ray Tune trials, tests and
`jobs.trial` call it directly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import keras
import numpy as np

from beanlib import backend, checkpoint, scratch
from beanlib.checkpoint import TrialState
from beanlib.config import TrialConfig
from beanlib.data import SPLITS, BeansData
from beanlib.features import compute_features
from beanlib.families import keras_code
from beanlib.models import build, count_params, for_inference
from beanlib.weights import file_sha256

EpochHook = Callable[[dict], "bool | None"]  # gets each epoch's record; returning True stops the trial
# Gets an epoch's record and a directory holding the trial's state after that epoch (beanlib.checkpoint), which is
# deleted when the hook returns; returning True stops the trial. It replaces EpochHook for the epochs it gets.
CheckpointHook = Callable[[dict, str], "bool | None"]


@dataclass
class TrialResult:
    """What one trial produced: status, per-epoch history and final metrics."""

    status: str  # "ok", "diverged" (non-finite loss) or "stopped" (the epoch hook asked)
    history: list[dict] = field(default_factory=list)
    stop_reason: str = "completed"  # or "early_stop" (some phase ran out of patience), "diverged", "stopped"
    epochs_planned: int = 0
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    per_class_accuracy: list[float] | None = None  # in the order of class_names
    confusion_matrix: list[list[int]] | None = None  # rows: true class, columns: predicted
    test_predicted: list[int] | None = None  # each test image's predicted label, in the test split's order
    test_confidence: list[float] | None = None  # the probability the model gave its predicted label
    test_labels: list[int] | None = None  # each test image's true label: with test_predicted, per-image correctness
    class_names: list[str] | None = None  # the data's classes, in label order
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    trainable_params: int = 0  # in the last phase
    total_params: int = 0
    train_seconds: float = 0.0  # fitting, plus feature_seconds
    feature_seconds: float = 0.0  # computing cached activations: base features (when this trial computed them), and
    # the frozen blocks' output before fine-tuning
    images_per_second: float = 0.0  # training images processed per train second
    # Where an Inception trial's cached base features came from: "computed" by this trial (in feature_seconds and
    # train_seconds), "shared" (computed once by the sweep for every trial of the same base, size and data: in
    # shared_feature_seconds, not in this trial's train_seconds), "cache" (read from disk: nothing computed);
    # None without cached features (LeNet, feature_cache=False).
    feature_source: str | None = None
    shared_feature_seconds: float | None = None
    peak_rss_bytes: int | None = None  # the trial process's peak resident memory while this trial ran (Linux)
    resumed_from_epoch: int | None = None  # the checkpoint's epoch this trial resumed from (None: ran from the start)
    model_bytes: int | None = None  # the .keras file `save_model` wrote (None: none written)
    model_sha256: str | None = None
    data_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The result as a plain dict."""
        return dataclasses.asdict(self)

    def summarize_history(self, final: dict | None = None) -> "TrialResult":
        """Fill the train and validation metrics from the history: those of epoch record `final` (default: the
        last epoch), and the best validation accuracy with its epoch. Returns self."""
        if self.history:
            last = final or self.history[-1]
            best = max(self.history, key=lambda r: r["val_accuracy"])
            self.train_loss, self.train_accuracy = last["loss"], last["accuracy"]
            self.val_loss, self.val_accuracy = last["val_loss"], last["val_accuracy"]
            self.best_val_accuracy, self.best_epoch = best["val_accuracy"], best["epoch"]
        return self


def run_trial(
    config: TrialConfig | Mapping[str, Any],
    data: BeansData,
    *,
    on_epoch: EpochHook | None = None,
    on_checkpoint: CheckpointHook | None = None,
    checkpoint_seconds: float = 0.0,
    resume: TrialState | None = None,
    save_model: str | None = None,
    features=None,
    cpus: int | None = None,
    use_gpu: bool = True,
    gpu_share: float = 1.0,
) -> TrialResult:
    """Train and evaluate one config on prepared data; returns its TrialResult.

    `features` (beanlib.features.Features) lets a caller hand in base features
    computed elsewhere (the sweep shares them through Ray's object store).
    `on_checkpoint` gets the trial's state after an epoch once `checkpoint_seconds` have passed since the last
    one (0: every epoch), except after the last planned epoch and in trials with early stopping (whose patience
    and best weights a checkpoint does not hold). `resume` (beanlib.checkpoint.load) continues a trial from such a
    state: the same epochs, data order and dropout masks as if it had never stopped.
    `save_model` names a `.keras` file to write the trained model to (beanlib.models.for_inference), when the
    trial ends "ok"; its size and sha256 go into the result.
    `cpus`, `use_gpu` and `gpu_share` set up the backend (beanlib.backend.configure) when it is not yet.
    Exceptions other than divergence propagate: the caller records them.
    """
    if not isinstance(config, TrialConfig):
        config = TrialConfig.from_dict(config)
    if data.image_size != config.image_size:
        raise ValueError(f"data prepared at {data.image_size}px but the config asks for {config.image_size}px")
    backend.configure(cpus, gpu_share, use_gpu)
    # A worker may run trial after trial (the sweep reuses them): each starts blank and seeded, leaves nothing
    # behind, and measures its own peak memory.
    with backend.trial_scope():
        reset_peak_rss()
        keras.utils.set_random_seed(config.seed)
        built = build(config, data.num_classes)
        saves = on_checkpoint is not None and not config.early_stop
        recorder = _EpochRecorder(on_epoch, on_checkpoint if saves else None, checkpoint_seconds, config.planned_epochs)
        trial = _Trial(config, data, built, recorder, resume)
        keras_code(config.model).train(trial, features)
        result = trial.finish()
        if save_model and result.status == "ok":
            for_inference(config, built).save(save_model)
            result.model_bytes, result.model_sha256 = os.path.getsize(save_model), file_sha256(save_model)
    return result


def prepare_features(config: TrialConfig | Mapping[str, Any], data: BeansData, *, cpus: int | None = None):
    """The cached base features an Inception trial of `config` would use (for sharing across trials)."""
    if not isinstance(config, TrialConfig):
        config = TrialConfig.from_dict(config)
    backend.configure(cpus)
    keras.utils.set_random_seed(config.seed)  # random-init weights must match the trial's own build
    return compute_features(build(config, data.num_classes).features, config, data)


def reset_peak_rss() -> bool:
    """Restart this process's peak resident memory count from its current size (Linux); returns whether it could.
    Elsewhere the peak stays the process's lifetime peak, which on a reused worker covers its earlier trials too."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak RSS ("high water mark") to the current RSS; getrusage reads the same
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started or since reset_peak_rss(), in bytes."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS counts bytes, Linux KiB


OPTIMIZERS = {  # keys: beanlib.config.OPTIMIZERS
    "adam": keras.optimizers.Adam,
    "sgd": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),  # plain SGD crawls on this problem (ours)
    "rmsprop": keras.optimizers.RMSprop,
}


class _Trial:
    """The state one trial accumulates across its phases."""

    # Running totals a checkpoint carries over to the resumed trial.
    COUNTERS = ("feature_seconds", "feature_source", "shared_feature_seconds")

    def __init__(self, config: TrialConfig, data: BeansData, built, recorder: "_EpochRecorder", resume: TrialState | None = None):
        self.config, self.data, self.built, self.recorder, self.resume = config, data, built, recorder, resume
        self.images = {s: data.split(s).images for s in SPLITS}
        self.evaluator, self.eval_inputs = built.model, self.images  # the model (or head) whose predictions are final
        self.feature_seconds = 0.0
        self.feature_source: str | None = None
        self.shared_feature_seconds: float | None = None
        self.trainable_params = 0
        self.stopped_early = False
        self.restored: dict | None = None  # the epoch record whose weights early stopping restored, last phase
        recorder.save = self.save
        if resume is not None:
            checkpoint.assign(built.model.variables, resume.variables, "model variables")
            resume.variables = []  # assigned: not held for the rest of the trial (0.1 GiB for Inception-v3)
            recorder.history = list(resume.history)
            for name in self.COUNTERS:
                setattr(self, name, resume.counters.get(name, getattr(self, name)))

    def resumes_in(self, phase: str) -> bool:
        """Whether this trial resumes from a checkpoint taken in `phase` (the phases before it are done)."""
        return self.resume is not None and self.resume.phase == phase

    def fit(self, model, phase: str, inputs: dict, epochs: int, learning_rate: float, initial_epoch: int = 0) -> None:
        """Compile `model` (always: `trainable` may have changed) and fit it for one phase."""
        model.compile(
            optimizer=OPTIMIZERS[self.config.optimizer](learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        backend.build_for_fit(model, inputs["train"], self.data.train.labels)  # the optimizer's variables among them
        if self.resumes_in(phase):  # the optimizer's step count and moments as they were after the checkpoint's epoch
            initial_epoch = self.resume.epoch
            checkpoint.assign(model.optimizer.variables, self.resume.optimizer, "optimizer variables")
            self.resume.optimizer = []
        self.trainable_params = count_params(model.trainable_weights)
        self.recorder.phase = phase
        size = self.config.batch_size
        # The data order counts the phase's own epochs: a phase's first epoch is epoch 0 of its order.
        train = backend.batches(inputs["train"], self.data.train.labels, size, shuffle_seed=self.config.seed,
                                start_epoch=initial_epoch - self._epochs_before(phase), endless=True)
        val = backend.batches(inputs["validation"], self.data.validation.labels, size)
        # Early stopping (opt-in) ends the phase after `early_stop` epochs without a better validation loss and
        # leaves the phase's best weights in the model, stopped early or not.
        stopper = [keras.callbacks.EarlyStopping("val_loss", patience=self.config.early_stop, restore_best_weights=True)
                   ] if self.config.early_stop else []
        model.fit(train, validation_data=val, epochs=epochs, initial_epoch=initial_epoch, callbacks=[self.recorder, *stopper],
                  steps_per_epoch=backend.steps(len(self.data.train), size), shuffle=False, verbose=0)  # shuffled in `batches`
        if stopper and self.recorder.status == "ok":
            self.stopped_early |= stopper[0].stopped_epoch > 0
            self.restored = next(r for r in self.recorder.history if r["phase"] == phase and r["epoch"] == stopper[0].best_epoch + 1)
        self.evaluator, self.eval_inputs = model, inputs

    def _epochs_before(self, phase: str) -> int:
        """Epochs of earlier phases (a phase's data order counts its own epochs from 0)."""
        return sum(1 for r in self.recorder.history if r["phase"] != phase)

    def save(self, directory: str) -> None:
        """Write the trial's state after its latest epoch into `directory` (beanlib.checkpoint)."""
        history = self.recorder.history
        state = TrialState(self.recorder.phase, len(history), history, {name: getattr(self, name) for name in self.COUNTERS},
                           self.built.model.variables, self.recorder.model.optimizer.variables)  # copied one at a time
        checkpoint.save(directory, state)

    @property
    def go_on(self) -> bool:
        return self.recorder.status == "ok"

    def finish(self) -> TrialResult:
        history = self.recorder.history
        train_seconds = sum(r["seconds"] for r in history) + self.feature_seconds
        result = TrialResult(
            status=self.recorder.status,
            history=history,
            stop_reason=self.recorder.status if self.recorder.status != "ok" else ("early_stop" if self.stopped_early else "completed"),
            epochs_planned=self.config.planned_epochs,
            trainable_params=self.trainable_params,
            total_params=self.built.model.count_params(),
            train_seconds=train_seconds,
            feature_seconds=self.feature_seconds,
            images_per_second=len(self.data.train) * len(history) / train_seconds if train_seconds else 0.0,  # every epoch: all of train
            resumed_from_epoch=self.resume.epoch if self.resume else None,
            feature_source=self.feature_source,
            shared_feature_seconds=self.shared_feature_seconds,
            data_fingerprint=self.data.fingerprint,
            class_names=list(self.data.class_names),
        ).summarize_history(self.restored)  # restored: the epoch whose weights the trial ends with
        if self.recorder.status != "diverged":  # NaN weights predict nothing worth recording
            self._evaluate(result)
        result.peak_rss_bytes = peak_rss_bytes()
        return result

    def _evaluate(self, result: TrialResult) -> None:
        """Test loss (with regularization, as Keras reports val_loss), accuracy, per-class accuracy, confusion."""
        logits = np.asarray(self.evaluator.predict(self.eval_inputs["test"], batch_size=64, verbose=0), np.float64)
        labels = self.data.test.labels
        log_norm = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        penalty = float(sum(float(loss) for loss in self.evaluator.losses))
        result.test_loss = float(np.mean(log_norm - logits[np.arange(len(labels)), labels])) + penalty
        predicted = logits.argmax(1)
        n = self.data.num_classes
        confusion = np.zeros((n, n), np.int64)
        np.add.at(confusion, (labels, predicted), 1)
        result.test_accuracy = float(np.mean(predicted == labels))
        result.test_predicted = predicted.tolist()
        result.test_labels = np.asarray(labels).tolist()
        result.test_confidence = np.exp(logits.max(1) - log_norm).tolist()  # softmax of the predicted logit
        result.per_class_accuracy = [float(confusion[c, c] / max(confusion[c].sum(), 1)) for c in range(n)]
        result.confusion_matrix = confusion.tolist()


class _EpochRecorder(keras.callbacks.Callback):
    """Records each epoch (phase, metrics, seconds), stops on a non-finite loss, saves checkpoints when due, and
    calls the caller's hooks."""

    def __init__(self, hook: EpochHook | None, checkpoint_hook: CheckpointHook | None = None, checkpoint_seconds: float = 0.0,
                 planned_epochs: int = 0):
        super().__init__()
        self.hook, self.phase, self.history, self.status = hook, "train", [], "ok"
        self.checkpoint_hook, self.checkpoint_seconds, self.planned_epochs = checkpoint_hook, checkpoint_seconds, planned_epochs
        self.save: Callable[[str], None] | None = None  # set by the trial: writes its state into a directory
        self._started = self._saved = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # Divergence is seen here, once per epoch: a per-batch check of the loss would copy it from the device on
        # every step, which costs most where steps are small and fast (GPUs). An epoch that diverged is recorded.
        logs = logs or {}
        record = {
            "phase": self.phase,
            "epoch": epoch + 1,
            **{k: float(logs.get(k, math.nan)) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "seconds": time.perf_counter() - self._started,
        }
        self.history.append(record)
        if not math.isfinite(record["loss"]):
            self.status = "diverged"
        if self.status == "ok" and self._stop_requested(record):
            self.status = "stopped"
        self.model.stop_training = self.model.stop_training or self.status != "ok"

    def _stop_requested(self, record: dict) -> bool:
        """Hand the epoch to the checkpoint hook (with the state saved) when one is due, else to the epoch hook."""
        due = (self.checkpoint_hook is not None and record["epoch"] < self.planned_epochs
               and time.perf_counter() - self._saved >= self.checkpoint_seconds)
        if due:
            with scratch.directory("checkpoint") as directory:
                self.save(directory)
                stop = self.checkpoint_hook(record, directory)
            self._saved = time.perf_counter()
            return bool(stop)
        return bool(self.hook is not None and self.hook(record))
