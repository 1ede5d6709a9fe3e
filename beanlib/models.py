"""The study's two model families, as Keras 3 functional models built from a TrialConfig.

Both take uint8-range images (resized in the data pipeline) and rescale inside
the model, and both output logits for the data's classes (3 for beans).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers

from beanlib.config import NUM_CLASSES, TrialConfig  # NUM_CLASSES: beans', the default
from beanlib.weights import load_inception_base


@dataclass
class Built:
    """A built model and the parts a trial needs to reach.

    For Inception-v3, `base` is the pretrained network and `head` the small
    model on its pooled features, shared with `model` (training one trains
    the other); `features` maps images to those pooled features.
    """

    model: keras.Model
    base: keras.Model | None = None
    head: keras.Model | None = None
    features: keras.Model | None = None


# Regularizers on the conv layers, picked by name: kernel regularizer, and
# whether a Dropout(rate) follows each conv. Dropout placement is ours (the
# original says only "Dropout(0.2) on the conv layers").
KERNEL_REGULARIZERS = {
    "none": lambda strength: None,
    "l1": lambda strength: keras.regularizers.L1(strength),
    "l2": lambda strength: keras.regularizers.L2(strength),
    "dropout": lambda strength: None,
}


def build_lenet(config: TrialConfig, num_classes: int = NUM_CLASSES) -> Built:
    """The original's LeNet: three valid 'relu' convs with 2x2 max-pooling between, Dense(50), one logit per class."""
    size = config.image_size
    regularizer = KERNEL_REGULARIZERS[config.regularizer](config.reg_strength)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    for i, filters in enumerate(config.kernel_counts):
        x = layers.Conv2D(filters, config.kernel_size, activation="relu", kernel_regularizer=regularizer, name=f"conv{i + 1}")(x)
        if config.regularizer == "dropout":
            x = layers.Dropout(config.reg_strength, name=f"dropout{i + 1}")(x)
        if i < 2:
            x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(50, activation="relu", name="dense")(x)
    outputs = layers.Dense(num_classes, name="logits", dtype="float32")(x)  # float32 logits and loss at any precision
    return Built(keras.Model(inputs, outputs, name="lenet"))


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


def build_inception(config: TrialConfig, num_classes: int = NUM_CLASSES) -> Built:
    """Inception-v3 transfer model: [-1,1] rescale, the base (BatchNorm per `config.batchnorm`), GAP,
    Dense(1024, relu), one logit per class.

    The base is built frozen (head-only phase); `set_unfrozen` opens it for fine-tuning.
    """
    size = config.image_size
    base = load_inception_base(config.weights, size)  # "imagenet", "none" (random init) or a checked weights file
    base.trainable = False

    pooled_in = keras.Input((base.output_shape[-1],), name="pooled")
    hidden = layers.Dense(1024, activation="relu", name="head_dense")(pooled_in)  # activation not stated (ours)
    head = keras.Model(pooled_in, layers.Dense(num_classes, name="logits", dtype="float32")(hidden), name="head")

    inputs = keras.Input((size, size, 3), name="image")
    x = _inception_rescaling()(inputs)
    pooled = layers.GlobalAveragePooling2D(name="pool")(PretrainedBase(base, config.batchnorm, name="base")(x))
    model = keras.Model(inputs, head(pooled), name="inception_v3_transfer")
    return Built(model, base=base, head=head, features=keras.Model(inputs, pooled, name="features"))


def for_inference(built: Built) -> keras.Model:
    """The trained model as users load it (`keras.saving.load_model`, any backend, without beanlib): built-in
    layers only. Inception-v3's PretrainedBase (which only decides BatchNorm's mode in training) gives way to the
    base itself, called as a plain nested model, with the same layers and weights; in inference its BatchNorm uses
    the moving statistics either way."""
    if built.base is None:
        return keras.Model(built.model.inputs, built.model.outputs, name=built.model.name)  # uncompiled: no optimizer state
    inputs = keras.Input(built.model.input_shape[1:], name="image")
    pooled = layers.GlobalAveragePooling2D(name="pool")(built.base(_inception_rescaling()(inputs)))
    return keras.Model(inputs, built.head(pooled), name=built.model.name)


def _inception_rescaling() -> layers.Layer:
    """uint8-range pixels to Inception-v3's [-1, 1]."""
    return layers.Rescaling(1 / 127.5, offset=-1)


def split_at_block(built: Built, block_start: int, batchnorm: str) -> tuple[keras.Model, keras.Model]:
    """The Inception transfer model cut where block `block_start` begins: (below, above).

    `below` maps images to the activations entering that block (the frozen part, run in inference mode);
    `above` maps those activations to logits through the open blocks and the head, sharing their layers (and
    weights) with `built.model`, BatchNorm per `batchnorm` as in the whole model. A block's layers take their
    inputs only from the previous block's output, so the cut is clean at every block start.
    """
    base = built.base
    boundary = base.layers[block_start - 1].output
    images = keras.Input(built.model.input_shape[1:], name="image")
    below = keras.Model(images, keras.Model(base.input, boundary)(_inception_rescaling()(images), training=False),
                        name="below")
    top = keras.Model(boundary, base.output, name="open_blocks")  # an intermediate input: Keras reuses the layers
    entering = keras.Input(boundary.shape[1:], name="block_input")
    pooled = layers.GlobalAveragePooling2D(name="pool")(PretrainedBase(top, batchnorm, name="open")(entering))
    return below, keras.Model(entering, built.head(pooled), name="above")


def set_unfrozen(built: Built, unfreeze_from: int | None) -> None:
    """Make base layers from index `unfreeze_from` on trainable (None: freeze the whole base).

    Every layer's flag is set explicitly: in Keras 3, flipping `base.trainable`
    does not reset flags left on individual layers by an earlier call, so a
    second call would otherwise keep a stale trainable set. Recompile after.
    """
    built.base.trainable = unfreeze_from is not None
    for index, layer in enumerate(built.base.layers):
        layer.trainable = unfreeze_from is not None and index >= unfreeze_from


def count_params(weights) -> int:
    """Number of scalars in a list of Keras variables."""
    return int(sum(math.prod(w.shape) for w in weights))


BUILDERS = {"lenet": build_lenet, "inception": build_inception}


def build(config: TrialConfig, num_classes: int = NUM_CLASSES) -> Built:
    """The model for `config.model` with `num_classes` logits, picked from BUILDERS, built under the config's
    precision (a Keras dtype policy: mixed ones compute in 16 bits and keep float32 weights; Keras adds loss
    scaling to mixed_float16 at compile)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        return BUILDERS[config.model](config, num_classes)
    finally:
        keras.config.set_dtype_policy(previous)


_COUNTS: dict[tuple, tuple[int, int]] = {}


def parameter_counts(config: TrialConfig, num_classes: int = NUM_CLASSES) -> tuple[int, int]:
    """(trainable in the trial's last phase, total) parameters of the model `config` builds for `num_classes`
    classes; memoised per architecture."""
    import dataclasses

    # Training settings and weights do not change the counts: key and build without them (random init, no download).
    training_only = {"seed": 0, "epochs": 1, "batch_size": 1, "optimizer": "adam", "learning_rate": 1.0, "precision": "float32"}
    if config.model == "inception":
        training_only |= {"weights": "none", "batchnorm": "inference", "fine_tune_epochs": 1, "fine_tune_learning_rate": 1.0, "feature_cache": True}
    arch = dataclasses.replace(config, **training_only)
    key = (arch, config.phases, num_classes)  # the phases decide whether the base is opened for fine-tuning
    if key not in _COUNTS:
        built = build(arch, num_classes)
        if "fine_tune" in config.phases:
            set_unfrozen(built, config.unfreeze_from)
        _COUNTS[key] = (count_params(built.model.trainable_weights), built.model.count_params())
        keras.backend.clear_session()
    return _COUNTS[key]
