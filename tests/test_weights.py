"""Inception-v3 base weights: BatchNorm stays in inference mode while fine-tuning, files are checked and known
by content, and a pretrained base (from $INCEPTION_WEIGHTS) does what transfer learning promises."""

import hashlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from beanlib import train
from beanlib.config import TrialConfig
from beanlib.data import load_beans
from beanlib.errors import BeanlibError
from beanlib.features import features_key
from beanlib.families.transfer.model import set_unfrozen, split_at_block
from beanlib.models import build
from beanlib.weights import check_weights, describe, weights_sha256


def inception(**values):
    return TrialConfig.from_dict({"model": "inception", "weights": "none", "image_size": 75, **values})


def _top2(model: str) -> int:
    from beanlib.families.transfer import BASES

    return BASES[model].block_starts[-2]


@pytest.mark.parametrize("model, unfreeze_from", [
    ("inception", 249), ("inception", 133),
    *(pytest.param(m, _top2(m), marks=pytest.mark.slow) for m in ("resnet50", "efficientnet_b0", "mobilenet_v3_large", "convnext_tiny")),
])
@pytest.mark.slow
def test_unfrozen_batchnorm_runs_in_inference_mode_when_the_model_trains(model, unfreeze_from):
    # Keras passes a functional model's `training` to the layers it wraps: without PretrainedBase the
    # unfrozen BatchNorm layers would normalise with batch statistics here and the outputs would differ.
    built = build(inception(model=model))
    set_unfrozen(built, unfreeze_from)
    x = np.random.default_rng(0).integers(0, 255, (4, 75, 75, 3)).astype(np.float32)
    np.testing.assert_array_equal(built.model(x, training=True), built.model(x, training=False))
    # the same for the model cut at the block (fine-tuning on cached activations), and it computes the same logits
    below, above = split_at_block(built, unfreeze_from, "inference")
    entering = below(x)
    np.testing.assert_array_equal(above(entering, training=True), above(entering, training=False))
    np.testing.assert_allclose(above(entering), built.model(x), rtol=1e-4, atol=1e-5)
    # the alternative mode really is different: this test can tell the two apart (ConvNeXt has no BatchNorm)
    batch = build(inception(model=model, batchnorm="batch"))
    set_unfrozen(batch, unfreeze_from)
    if any(isinstance(op, keras.layers.BatchNormalization) for op in batch.base.operations[unfreeze_from:]):
        assert not np.allclose(batch.model(x, training=True), batch.model(x, training=False), rtol=1e-2, atol=0)


def test_keras_overrides_a_recorded_training_false_which_is_why_pretrained_base_exists():
    # The claim in beanlib/families/transfer/model.py: a functional model passes its call's `training` to the layers it wraps,
    # overriding `base(x, training=False)`. If Keras stops doing so, this fails and PretrainedBase can go.
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    inputs = keras.Input((75, 75, 3))
    plain = keras.Model(inputs, base(inputs, training=False))
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= 249
    x = np.random.default_rng(1).normal(size=(4, 75, 75, 3)).astype(np.float32)
    assert not np.allclose(plain(x, training=True), plain(x, training=False), atol=1e-3)


def test_a_weights_file_is_known_by_its_content_not_its_path(tmp_path):
    data = load_beans("synthetic", 75, per_class=1)
    a, b = tmp_path / "a.weights.h5", tmp_path / "b.weights.h5"
    a.write_bytes(b"one content")
    b.write_bytes(b"one content")
    assert features_key(inception(weights=str(a)), data) == features_key(inception(weights=str(b)), data)
    b.write_bytes(b"another content")
    assert features_key(inception(weights=str(a)), data) != features_key(inception(weights=str(b)), data)
    assert weights_sha256(str(a)) == hashlib.sha256(b"one content").hexdigest()
    assert "a stand-in" in describe(str(a), weights_sha256(str(a))) and describe("none", None).startswith("random init")


def test_files_that_are_not_an_inception_base_are_refused_in_one_line(tmp_path):
    text = tmp_path / "notes.weights.h5"
    text.write_text("not weights")
    other = tmp_path / "small_cnn.weights.h5"
    small = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    small.save_weights(other)
    cases = {str(text): "file signature not found", str(other): "its layers do not match Inception-v3's", str(tmp_path / "missing.weights.h5"): "does not exist"}
    for path, reason in cases.items():
        with pytest.raises(BeanlibError, match=reason) as caught:
            check_weights(path)
        assert "\n" not in str(caught.value) and path in str(caught.value)


def _trained_looking_base():
    """A random-init base whose BatchNorm statistics moved off their initial values, as training moves them."""
    base = build(inception(seed=1)).base
    for variable in base.non_trainable_weights:
        variable.assign(variable + 0.25)
    return base


@pytest.mark.slow
def test_an_untrained_file_is_refused_and_a_renamed_copy_is_checked_again(tmp_path):
    untrained = tmp_path / "untrained.weights.h5"
    build(inception(seed=2)).base.save_weights(untrained)
    with pytest.raises(BeanlibError, match="holds untrained Inception-v3 weights"):
        check_weights(str(untrained))
    trained = tmp_path / "trained.weights.h5"
    _trained_looking_base().save_weights(trained)
    check_weights(str(trained))
    renamed = tmp_path / "trained.bin"  # same content; Keras picks its reader by the suffix and cannot read this one
    renamed.write_bytes(trained.read_bytes())
    with pytest.raises(BeanlibError, match="File format not supported"):
        check_weights(str(renamed))


@pytest.mark.slow
def test_a_weights_file_loaded_again_in_a_process_gives_the_files_values(tmp_path):
    """The second load of a file sets the values the first read from it (not read again: 0.07 s against 1.4 s)."""
    from beanlib import weights as weights_module
    from beanlib.weights import load_base

    path = tmp_path / "trained.weights.h5"
    _trained_looking_base().save_weights(path)
    expected = [np.array(v) for v in load_base(str(path), 75).get_weights()]  # read from the file
    assert list(weights_module._VALUES) == [(*weights_module._file_key(str(path)), "InceptionV3")]
    again = load_base(str(path), 99).get_weights()  # from memory, at another size: the same values
    assert len(again) == len(expected) and all(np.array_equal(a, b) for a, b in zip(again, expected))
    fresh = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    fresh.load_weights(path)  # Keras's own reading of the file
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), expected))
    keras.backend.clear_session()


@pytest.mark.slow
def test_a_truncated_weights_file_stops_the_sweep_before_anything_is_written(tmp_path):
    whole = tmp_path / "whole.weights.h5"
    _trained_looking_base().save_weights(whole)
    check_weights(str(whole))  # the whole file loads
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    run = subprocess.run([sys.executable, "-m", "jobs.sweep", "--study", "smoke", "--data", "synthetic", "--weights", str(cut),
                          "--results", str(tmp_path / "results")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "truncated" in errors[0] and "not a Keras Inception-v3 no-top weights file" in errors[0]
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.parametrize("base", ["random-init", "pretrained"])
def test_fine_tuning_from_249_changes_only_the_top_blocks(base, request, monkeypatch):
    weights = "none" if base == "random-init" else str(request.getfixturevalue("pretrained_weights"))
    built_in_trial = []
    monkeypatch.setattr(train, "build", lambda *args: built_in_trial.append(build(*args)) or built_in_trial[-1])
    config = inception(weights=weights, epochs=1, fine_tune_epochs=1, unfreeze_from=249,
                       batch_size=8, fine_tune_learning_rate=1e-3)  # a large rate, so every trainable weight moves
    result = train.run_trial(config, load_beans("synthetic", 75, per_class=4))
    assert result.status == "ok" and result.trainable_params == 13_216_131
    trained = built_in_trial[0]
    keras.utils.set_random_seed(config.seed)  # run_trial seeds the same way before it builds: the same initial base
    fresh = build(config)
    moved, kept = [], []
    for index, (layer, original) in enumerate(zip(trained.base.layers, fresh.base.layers)):
        for w, w0 in zip(layer.weights, original.weights):
            same = np.array_equal(w.numpy(), w0.numpy())
            trainable = index >= 249 and any(w is t for t in layer.trainable_weights)
            (moved if trainable else kept).append((f"{layer.name}/{w.name}", same))
    assert all(same for _, same in kept), [name for name, same in kept if not same][:5]
    assert sum(1 for name, _ in kept if "moving_" in name) == 2 * 94  # every BatchNorm's moving mean and variance kept
    # The top 2 blocks: 18 conv kernels and 18 BatchNorm betas. At 75px their maps are 1x1 and a few branches'
    # ReLUs are dead for these 24 images (zero gradient), so not every one of them moves; most must.
    assert len(moved) == 2 * 18 and sum(1 for _, same in moved if not same) >= 24, [name for name, same in moved if same]


@pytest.fixture(scope="session")
def beans128(beans_dir):
    """The real photos at 128 px, 80 per class per split: 240 to train on, all 133 to validate and 128 to test. The
    whole train split (1,034) took 174 s in a one-process suite on an AVX2 EPYC, these 40 s run alone; with these,
    pretrained 71.9%, random init 41.4%."""
    return load_beans(str(beans_dir), 128, per_class=80)


# --- with the pretrained base from $INCEPTION_WEIGHTS ------------------------------------------------------------


@pytest.mark.slow
def test_a_pretrained_base_beats_random_init_by_a_wide_margin_on_real_beans(beans128, pretrained_weights):
    head_only = {"model": "inception", "image_size": 128, "epochs": 20}
    pretrained = train.run_trial({**head_only, "weights": str(pretrained_weights)}, beans128)
    random_init = train.run_trial({**head_only, "weights": "none"}, beans128)
    assert pretrained.test_accuracy >= 0.65, pretrained.history[-1]
    assert pretrained.test_accuracy - random_init.test_accuracy >= 0.20, (pretrained.test_accuracy, random_init.test_accuracy)
