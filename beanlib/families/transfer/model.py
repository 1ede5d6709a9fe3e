"""Transfer learning's Keras code, for any base in BASES: the model (its preprocessing, the pretrained base with the
trial's BatchNorm mode, the head), opening the top blocks, cutting the model at a block for cached fine-tuning, the
two training phases, and the model as saved."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import keras
from keras import layers

from beanlib.data import SPLITS
from beanlib.features import compute_features, features_key, predict_in_place
from beanlib.families.transfer import BASES, Base
from beanlib.models import Built
from beanlib.weights import load_base

if TYPE_CHECKING:
    from beanlib.config import TrialConfig


class PretrainedBase(layers.Layer):
    """Calls the pretrained base with the BatchNorm mode the trial chose, whatever `training` the outer model gets.

    A functional model passes its own call's `training` to every layer it wraps, overriding the
    `base(x, training=False)` recorded when the graph was built (Keras 3.15, keras/src/models/functional.py,
    operation_fn). So during `fit` an unfrozen BatchNorm would normalise with the batch's statistics and
    overwrite its moving ones. This layer takes no `training` from outside: it decides it, per BATCHNORM_MODES.
    tests/test_weights.py checks that after unfreezing, training and inference outputs are equal.
    """

    def __init__(self, base: keras.Model, batchnorm: str = "inference", **kwargs):
        super().__init__(**kwargs)
        self.base, self.batchnorm = base, batchnorm

    def call(self, images, training=None):
        return self.base(images, training=BATCHNORM_MODES[self.batchnorm](training))

    def compute_output_shape(self, input_shape):
        return self.base.compute_output_shape(input_shape)


# How the unfrozen BatchNorm layers run while fine-tuning. "inference" is the original's protocol (the
# keras-io transfer-learning guide): moving statistics, never updated. "batch" is the alternative: batch
# statistics in training, moving ones updated. Frozen layers always use their moving statistics.
BATCHNORM_MODES = {
    "inference": lambda training: False,
    "batch": lambda training: training,
}


def build(config: "TrialConfig", num_classes: int) -> Built:
    """The transfer model: the base's own preprocessing, the base (BatchNorm per `config.batchnorm`), GAP,
    Dense(1024, relu), one logit per class.

    The base is built frozen (head-only phase); `set_unfrozen` opens it for fine-tuning.
    """
    size, spec = config.image_size, BASES[config.model]
    # "imagenet", "none" (random init) or a checked weights file
    base = load_base(config.weights, size, spec.application, spec.title, **dict(spec.options))
    base.trainable = False

    pooled_in = keras.Input((base.output_shape[-1],), name="pooled")
    hidden = layers.Dense(1024, activation="relu", name="head_dense")(pooled_in)  # activation not stated (ours)
    head = keras.Model(pooled_in, layers.Dense(num_classes, name="logits", dtype="float32")(hidden), name="head")

    inputs = keras.Input((size, size, 3), name="image")
    x = preprocessing(spec)(inputs)
    pooled = layers.GlobalAveragePooling2D(name="pool")(PretrainedBase(base, config.batchnorm, name="base")(x))
    model = keras.Model(inputs, head(pooled), name=f"{config.model}_transfer")
    return Built(model, base=base, head=head, features=keras.Model(inputs, pooled, name="features"))


def for_inference(built: Built) -> keras.Model:
    """The trained model as users load it (`keras.saving.load_model`, any backend, without beanlib): built-in
    layers only. PretrainedBase (which only decides BatchNorm's mode in training) gives way to the base itself,
    called as a plain nested model, with the same layers and weights; in inference its BatchNorm uses the moving
    statistics either way."""
    inputs = keras.Input(built.model.input_shape[1:], name="image")
    pooled = layers.GlobalAveragePooling2D(name="pool")(built.base(built.model.get_layer(PREPROCESS)(inputs)))
    return keras.Model(inputs, built.head(pooled), name=built.model.name)


PREPROCESS = "preprocess"  # the layer that takes uint8-range pixels to what the base was trained on
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, "caffe" mode


def preprocessing(spec: Base) -> layers.Layer:
    """One built-in layer doing what `keras.applications.<base>.preprocess_input` does (tests compare them), so a
    saved model needs no custom code: Inception's [-1, 1]; "caffe" (ResNet50) as a fixed Dense over the channels
    that reverses them to BGR and subtracts ImageNet's mean; nothing where the base preprocesses itself."""
    if spec.preprocessing == "inception":
        return layers.Rescaling(1 / 127.5, offset=-1, name=PREPROCESS)
    if spec.preprocessing == "caffe":
        flip = keras.initializers.Constant([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        bias = keras.initializers.Constant([-m for m in IMAGENET_MEAN_BGR])
        return layers.Dense(3, kernel_initializer=flip, bias_initializer=bias, trainable=False, dtype="float32", name=PREPROCESS)
    return layers.Identity(name=PREPROCESS)


def split_at_block(built: Built, block_start: int, batchnorm: str) -> tuple[keras.Model, keras.Model]:
    """The transfer model cut where the block beginning at operation `block_start` of the base begins: (below, above).

    `below` maps images to the activations entering that block (the frozen part, run in inference mode);
    `above` maps those activations to logits through the open blocks and the head, sharing their layers (and
    weights) with `built.model`, BatchNorm per `batchnorm` as in the whole model. A block's layers take their
    inputs only from the previous block's output, so the cut is clean at every block start (tests/test_models.py).
    """
    base = built.base
    boundary = base.operations[block_start - 1].output
    images = keras.Input(built.model.input_shape[1:], name="image")
    preprocess = built.model.get_layer(PREPROCESS)
    below = keras.Model(images, keras.Model(base.input, boundary)(preprocess(images), training=False), name="below")
    top = keras.Model(boundary, base.output, name="open_blocks")  # an intermediate input: Keras reuses the layers
    entering = keras.Input(boundary.shape[1:], name="block_input")
    pooled = layers.GlobalAveragePooling2D(name="pool")(PretrainedBase(top, batchnorm, name="open")(entering))
    return below, keras.Model(entering, built.head(pooled), name="above")


def set_unfrozen(built: Built, unfreeze_from: int | None) -> None:
    """Make the base's layers from operation `unfreeze_from` on trainable (None: freeze the whole base). Operations
    are the base's layers and its plain ops (a residual `+`), which hold no weights; Inception-v3 has only layers.

    Every layer's flag is set explicitly: in Keras 3, flipping `base.trainable`
    does not reset flags left on individual layers by an earlier call, so a
    second call would otherwise keep a stale trainable set. Recompile after.
    """
    built.base.trainable = unfreeze_from is not None
    for index, operation in enumerate(built.base.operations):
        if isinstance(operation, layers.Layer):
            operation.trainable = unfreeze_from is not None and index >= unfreeze_from


def as_in_last_phase(built: Built, config: "TrialConfig") -> None:
    """Set what trains as in the trial's last phase: the open blocks when it fine-tunes, else the head alone."""
    set_unfrozen(built, config.unfreeze_from if "fine_tune" in config.phases else None)


def train(trial, features) -> None:
    """Phase 1 (frozen base, head only), then phase 2 (fine-tune from `unfreeze_from`) when set (`trial`: beanlib.train's
    running trial; `features`: the sweep's shared base features, or None)."""
    c, built = trial.config, trial.built
    if trial.resumes_in("fine_tune"):
        pass  # the head phase is done: its weights are in the checkpoint's
    elif c.feature_cache:
        if features is None:
            features = compute_features(built.features, c, trial.data)
            trial.feature_seconds = features.seconds
            trial.feature_source = "computed" if features.seconds else "cache"
        elif features.key != features_key(c, trial.data):
            raise ValueError("the features handed in were computed for other weights, image size or data")
        else:
            trial.feature_source, trial.shared_feature_seconds = "shared", features.seconds
        trial.fit(built.head, "head", features.splits, c.epochs, c.learning_rate)
    else:
        trial.fit(built.model, "head", trial.images, c.epochs, c.learning_rate)
    if "fine_tune" in c.phases and trial.go_on:
        set_unfrozen(built, c.unfreeze_from)
        model, inputs = built.model, trial.images
        if c.feature_cache and c.batchnorm == "inference":
            # The frozen blocks map each image to the same activations every epoch (BatchNorm on moving statistics,
            # no dropout, no augmentation): compute them once, and fine-tune the open blocks and the head on them.
            start = time.perf_counter()
            below, model = split_at_block(built, c.unfreeze_from, c.batchnorm)
            inputs = {s: predict_in_place(below, trial.images[s]) for s in SPLITS}
            trial.feature_seconds += time.perf_counter() - start
        done = sum(1 for r in trial.recorder.history if r["phase"] == "head")  # fewer than c.epochs after early stopping
        trial.fit(model, "fine_tune", inputs, done + c.fine_tune_epochs, c.fine_tune_learning_rate, initial_epoch=done)
