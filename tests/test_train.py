"""One trial end to end: history, metrics, determinism, the Inception phases, cached features, divergence, the hook."""

import math

import numpy as np
import pytest

from beanlib.data import load_beans
from beanlib.features import _MEMO as FEATURE_MEMO
from beanlib.train import run_trial

HISTORY_KEYS = {"phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}


def lenet_config(**values):
    return {"model": "lenet", "image_size": 32, "epochs": 2, "batch_size": 8, **values}


def inception_config(**values):
    return {"model": "inception", "weights": "none", "image_size": 75, "epochs": 2, "batch_size": 8, **values}


@pytest.fixture(scope="session")
def small75():
    return load_beans("synthetic", 75, per_class=4)


def test_lenet_trial_returns_a_consistent_result(tiny_synthetic):
    result = run_trial(lenet_config(), tiny_synthetic)
    assert result.status == "ok"
    assert [r["epoch"] for r in result.history] == [1, 2] and all(set(r) == HISTORY_KEYS for r in result.history)
    assert all(r["phase"] == "train" and math.isfinite(r["loss"]) and r["seconds"] > 0 for r in result.history)
    confusion = np.array(result.confusion_matrix)
    assert confusion.shape == (3, 3) and confusion.sum() == len(tiny_synthetic.test)
    assert result.test_accuracy == pytest.approx(np.trace(confusion) / confusion.sum())
    assert result.per_class_accuracy == pytest.approx(list(np.diag(confusion) / confusion.sum(1)))
    assert result.best_val_accuracy == max(r["val_accuracy"] for r in result.history)
    assert result.train_accuracy == result.history[-1]["accuracy"]
    assert result.trainable_params == result.total_params > 0
    assert result.images_per_second == pytest.approx(2 * len(tiny_synthetic.train) / result.train_seconds)
    assert result.data_fingerprint == tiny_synthetic.fingerprint


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_history(tiny_synthetic):
    def losses(seed):
        result = run_trial(lenet_config(seed=seed, regularizer="dropout"), tiny_synthetic)
        return [(r["loss"], r["val_loss"]) for r in result.history], result.confusion_matrix

    first = losses(7)
    assert losses(7) == first
    assert losses(8) != first


def _graphs_alive() -> int:
    import gc

    gc.collect()
    return sum(type(o).__name__ == "FuncGraph" for o in gc.get_objects())


@pytest.mark.slow
def test_tensorflow_keeps_a_trained_models_graph_and_a_trial_leaves_none_behind(tiny_synthetic):
    """What beanlib.backend's TensorFlow trial scope is for: plain Keras `fit` leaves its traced graph (and through it
    the model's variables) alive after the model is gone, held by a custom gradient in TensorFlow's registry; a
    trial drops those, so a warm worker's memory does not grow from trial to trial."""
    import keras
    from tensorflow.python.framework import ops

    from beanlib import backend

    if backend.current() != "tensorflow":
        pytest.skip("the leak and its fix are TensorFlow's")
    registry = ops._gradient_registry._registry
    keras.backend.clear_session()
    before, graphs = set(registry), _graphs_alive()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("adam", "mse")
    model.fit(np.zeros((8, 4)), np.zeros((8, 3)), verbose=0)
    del model
    leaked = [name for name in registry if name.startswith("CustomGradient-") and name not in before]
    assert leaked and _graphs_alive() > graphs  # TensorFlow's behaviour: the day this fails, the workaround can go
    for name in leaked:
        del registry[name]
    assert _graphs_alive() == graphs

    before = set(registry)
    for _ in range(2):
        run_trial(lenet_config(), tiny_synthetic)
    assert not [name for name in registry if name.startswith("CustomGradient-") and name not in before]
    assert _graphs_alive() == graphs


def test_a_trials_phase_traces_its_train_step_once_where_plain_keras_traces_it_twice(tiny_synthetic, monkeypatch):
    """What beanlib.backend.build_for_fit is for: Keras on TensorFlow creates a new model's optimizer and metric
    variables inside the first trace of its train step, so TensorFlow traces the step twice; a trial's fit, once."""
    import keras
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from beanlib import backend

    if backend.current() != "tensorflow":
        pytest.skip("the second trace is TensorFlow's")
    traced = []
    step = TensorFlowTrainer.train_step
    monkeypatch.setattr(TensorFlowTrainer, "train_step", lambda self, data: traced.append(self) or step(self, data))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("adam", "mse", metrics=["mae"])
    model.fit(np.zeros((8, 4)), np.zeros((8, 3)), epochs=2, verbose=0)
    assert len(traced) == 2  # TensorFlow's behaviour: the day this fails, build_for_fit can go
    traced.clear()
    result = run_trial(lenet_config(), tiny_synthetic)
    assert result.status == "ok" and len(result.history) == 2 and len(traced) == 1


def test_each_trial_measures_its_own_peak_memory(tiny_synthetic):
    from beanlib.train import peak_rss_bytes, reset_peak_rss

    if not reset_peak_rss():
        pytest.skip("this system cannot reset a process's peak memory (/proc/self/clear_refs): rows give the process's")
    ballast = np.ones(512 * 2**20, np.uint8)  # 512 MiB, touched: the process's peak before the trial
    with_ballast = peak_rss_bytes()
    del ballast
    result = run_trial(lenet_config(), tiny_synthetic)
    assert 0 < result.peak_rss_bytes < with_ballast - 256 * 2**20  # the trial's own peak, not the process's


@pytest.mark.slow
def test_a_trial_resumed_in_process_trains_as_if_never_stopped_and_lets_go_of_the_checkpoint(tiny_synthetic):
    from beanlib import checkpoint

    config = lenet_config(epochs=4, regularizer="dropout", reg_strength=0.3)
    saved = {}

    def keep(record, directory):
        saved[record["epoch"]] = checkpoint.load(directory)

    whole = run_trial(config, tiny_synthetic, on_checkpoint=keep, checkpoint_seconds=0)
    state = saved[2]
    resumed = run_trial(config, tiny_synthetic, resume=state)
    assert resumed.resumed_from_epoch == 2 and [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    metrics = ("loss", "accuracy", "val_loss", "val_accuracy")
    assert [[r[m] for m in metrics] for r in resumed.history] == [[r[m] for m in metrics] for r in whole.history]
    assert resumed.test_accuracy == whole.test_accuracy
    assert state.variables == [] and state.optimizer == []  # assigned, then not held for the rest of the trial


def test_a_checkpoint_copies_one_variable_to_host_at_a_time(tmp_path):
    """checkpoint.save streams: a trial's peak grows by one variable's copy, not by its model's and optimizer's."""
    import tracemalloc

    from beanlib import checkpoint

    class Variable:  # what save needs of a Keras variable: .numpy() hands back a new host copy of its value
        def __init__(self, value: int):
            self.value, self.shape = value, (2**20,)

        def numpy(self):
            return np.full(self.shape, self.value, np.float64)  # 8 MiB

    variables, optimizer = [Variable(i) for i in range(8)], [Variable(-i) for i in range(4)]
    tracemalloc.start()
    try:
        checkpoint.save(str(tmp_path), checkpoint.TrialState("train", 3, [], {}, variables, optimizer))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * 8 * 2**20  # 96 MiB copied in all; at a time, one variable (and NumPy's bytes of it as written)
    state = checkpoint.load(str(tmp_path))
    assert [a.tolist() == [i] * 2**20 for i, a in enumerate(state.variables)] == [True] * 8
    with np.load(tmp_path / checkpoint.OPTIMIZER) as npz:  # np.savez's layout: plain NumPy reads it
        assert [float(npz[f"arr_{i}"][0]) for i in range(4)] == [0.0, -1.0, -2.0, -3.0]


# A trial's threads are fixed once per process, so each thread count gets its own process.
THREADED_TRIAL = """
import json, sys
from beanlib.data import load_beans
from beanlib.train import run_trial
data = load_beans("synthetic", 128, per_class=16)
result = run_trial({"model": "lenet", "image_size": 128, "epochs": 1, "seed": 3}, data, cpus=int(sys.argv[1]))
print(json.dumps(result.history[0]["loss"]))
"""


@pytest.mark.slow
def test_the_same_config_gives_the_same_history_at_the_same_cpus_per_trial():
    """What the README says about determinism: the same config, seed and thread count give the same history, here at
    two threads, where TensorFlow splits its sums between threads (one thread: the pinned history in
    tests/test_semantics.py, and a warm worker against a fresh one in tests/test_sweep.py). Another thread count may
    change how the sums are split (the last digits differ on some machines, not on others): nothing is asserted
    across thread counts."""
    import json
    import subprocess
    import sys

    # Both processes at once: each fixes its own threads, so running beside each other changes no sum's order.
    running = [subprocess.Popen([sys.executable, "-c", THREADED_TRIAL, "2"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in running]
    assert [p.returncode for p in running] == [0] * 2, [err[-2000:] for _, err in outputs]
    two, two_again = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert two_again == two


def test_regularized_test_loss_includes_the_penalty_like_keras_val_loss(tiny_synthetic):
    # evaluate the test split as validation too: our test_loss must equal Keras's val_loss
    data = type(tiny_synthetic)(tiny_synthetic.train, tiny_synthetic.test, tiny_synthetic.test, 32, "synthetic", "x")
    result = run_trial(lenet_config(regularizer="l2", reg_strength=0.01, epochs=1), data)
    assert result.test_loss == pytest.approx(result.history[-1]["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_baseline_lenet_learns_the_synthetic_beans():
    data = load_beans("synthetic", 64)
    result = run_trial({"model": "lenet", "image_size": 64, "epochs": 5}, data)
    assert result.test_accuracy >= 0.90, result.history


def test_non_finite_loss_ends_the_trial_as_diverged(tiny_synthetic):
    result = run_trial(lenet_config(epochs=5, optimizer="sgd", learning_rate=1e12), tiny_synthetic)
    assert result.status == "diverged"
    assert len(result.history) < 5 and not math.isfinite(result.history[-1]["loss"])
    assert result.test_accuracy is None  # no metrics from NaN weights


def test_epoch_hook_sees_every_epoch_and_can_stop(tiny_synthetic):
    seen = []
    result = run_trial(lenet_config(epochs=4), tiny_synthetic, on_epoch=lambda r: seen.append(r) or r["epoch"] == 2)
    assert result.status == "stopped" and [r["epoch"] for r in seen] == [1, 2] and len(result.history) == 2


def test_early_stopping_stops_and_ends_with_the_best_weights(tiny_synthetic):
    # validate on the test split: the test loss of the weights the trial ends with must be the best val_loss seen
    data = type(tiny_synthetic)(tiny_synthetic.train, tiny_synthetic.test, tiny_synthetic.test, 32, "synthetic", "x")
    result = run_trial(lenet_config(epochs=40, learning_rate=1e-2, early_stop=2), data)
    assert result.status == "ok" and result.stop_reason == "early_stop" and result.epochs_planned == 40
    assert len(result.history) < 40
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.history[-1]["epoch"] == best["epoch"] + 2  # two epochs without a better validation loss
    assert result.test_loss == pytest.approx(best["val_loss"], rel=1e-4)  # the best epoch's weights, not the last
    assert result.val_loss == best["val_loss"] and result.train_loss == best["loss"]


@pytest.mark.slow
def test_inception_early_stops_each_phase_and_counts_epochs_on(small75):
    result = run_trial(inception_config(epochs=30, learning_rate=1e-2, unfreeze_from=249, fine_tune_epochs=1, early_stop=1), small75)
    phases = [r["phase"] for r in result.history]
    assert result.stop_reason == "early_stop" and phases.count("head") < 30 and phases[-1] == "fine_tune"
    assert [r["epoch"] for r in result.history] == list(range(1, len(result.history) + 1))
    assert result.epochs_planned == 31


def test_without_early_stopping_every_planned_epoch_runs(tiny_synthetic):
    result = run_trial(lenet_config(epochs=3), tiny_synthetic)
    assert (result.stop_reason, result.epochs_planned, len(result.history)) == ("completed", 3, 3)


def test_config_and_data_size_must_agree(tiny_synthetic):
    with pytest.raises(ValueError, match="prepared at 32px but the config asks for 64px"):
        run_trial(lenet_config(image_size=64), tiny_synthetic)


@pytest.fixture
def fresh_feature_cache(tmp_path, monkeypatch):
    """No features memoized or on disk: the next Inception trial computes its own (tests share the cache)."""
    monkeypatch.setenv("BEANLIB_CACHE", str(tmp_path))
    FEATURE_MEMO.clear()


@pytest.mark.slow
def test_inception_runs_head_then_fine_tune_from_the_head_weights(small75, fresh_feature_cache):
    result = run_trial(inception_config(unfreeze_from=249, fine_tune_epochs=1), small75)
    assert result.status == "ok"
    assert [(r["phase"], r["epoch"]) for r in result.history] == [("head", 1), ("head", 2), ("fine_tune", 3)]
    assert result.trainable_params == 13_216_131 and result.total_params == 23_904_035
    assert result.feature_seconds > 0 and result.train_seconds >= result.feature_seconds
    assert np.array(result.confusion_matrix).sum() == len(small75.test)


@pytest.mark.slow
def test_cached_features_phase1_matches_whole_model_phase1(small75):
    """Same head, same seed, same batches: training the head on cached features reproduces the whole-model fit."""
    cached = run_trial(inception_config(seed=3, epochs=3), small75)
    whole = run_trial(inception_config(seed=3, epochs=3, feature_cache=False), small75)
    assert len(cached.history) == len(whole.history) == 3
    for a, b in zip(cached.history, whole.history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), key
    assert cached.test_loss == pytest.approx(whole.test_loss, rel=1e-3)
    assert cached.confusion_matrix == whole.confusion_matrix
    assert cached.trainable_params == whole.trainable_params == 2_101_251


@pytest.mark.slow
@pytest.mark.parametrize("model", ["inception", "convnext_tiny"])  # ConvNeXt: residual sums are plain ops, not layers
def test_fine_tuning_on_the_frozen_blocks_cached_output_matches_fine_tuning_the_whole_model(small75, model):
    """Same seed, same batches: the open blocks trained on cached activations of the frozen ones reproduce the
    whole model's fine-tuning, epoch by epoch, and its test predictions."""
    from beanlib.config import TrialConfig
    from beanlib.families.transfer import BASES
    from beanlib.models import parameter_counts

    config = dict(model=model, seed=4, epochs=1, unfreeze_from=BASES[model].block_starts[-2], fine_tune_epochs=2,
                  fine_tune_learning_rate=1e-4)
    cached = run_trial(inception_config(**config), small75)
    whole = run_trial(inception_config(**config, feature_cache=False), small75)
    assert [r["phase"] for r in cached.history] == ["head", "fine_tune", "fine_tune"]
    for a, b in zip(cached.history, whole.history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), (a["epoch"], key)
    assert cached.history[1]["loss"] != pytest.approx(cached.history[2]["loss"], rel=1e-6)  # it did train
    assert cached.test_loss == pytest.approx(whole.test_loss, rel=1e-3) and cached.confusion_matrix == whole.confusion_matrix
    expected = parameter_counts(TrialConfig.from_dict(inception_config(**config)))[0]
    assert cached.trainable_params == whole.trainable_params == expected == {"inception": 13_216_131}.get(model, expected)


@pytest.mark.slow
def test_features_are_computed_once_per_weights_size_and_data(small75, fresh_feature_cache):
    first = run_trial(inception_config(seed=5, epochs=1), small75)
    again = run_trial(inception_config(seed=5, epochs=1, learning_rate=1e-2), small75)
    assert first.feature_seconds > 0 and again.feature_seconds == 0  # reused, not recomputed
    assert len(FEATURE_MEMO) == 1
    other_seed = run_trial(inception_config(seed=6, epochs=1), small75)  # random-init weights differ per seed
    assert other_seed.feature_seconds > 0 and len(FEATURE_MEMO) == 2


def test_features_handed_in_must_match_the_trial(small75):
    from beanlib.features import Features

    stale = Features("not-this-key", {}, 0.0)
    with pytest.raises(ValueError, match="features handed in were computed for other"):
        run_trial(inception_config(), small75, features=stale)


def test_predict_in_place_gives_exactly_what_predict_gives():
    """beanlib.features.predict_in_place's claim: the numbers of Keras's `predict`, batch for batch, without its copy."""
    import keras
    import numpy as np

    from beanlib.features import predict_in_place

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                              keras.layers.GlobalAveragePooling2D()])
    images = np.random.default_rng(0).integers(0, 255, (150, 6, 6, 3)).astype(np.float32)  # 150: a short last batch
    ours = predict_in_place(model, images, batch_size=64)
    assert ours.shape == (150, 4) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, model.predict(images, batch_size=64, verbose=0))
