"""Models, whatever their family: what a built model holds, building one under the config's precision, the model
as saved for users, and parameter counts. Each family's own Keras code is in its package (beanlib.families).

Every family's model takes uint8-range images (resized in the data pipeline) and rescales inside, and outputs
logits for the data's classes (3 for beans).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import keras

from beanlib.config import NUM_CLASSES, TrialConfig  # NUM_CLASSES: beans', the default
from beanlib.families import family, keras_code


@dataclass
class Built:
    """A built model and the parts a trial needs to reach.

    For a transfer family, `base` is the pretrained network and `head` the small model on its pooled features,
    shared with `model` (training one trains the other); `features` maps images to those pooled features.
    """

    model: keras.Model
    base: keras.Model | None = None
    head: keras.Model | None = None
    features: keras.Model | None = None


def build(config: TrialConfig, num_classes: int = NUM_CLASSES) -> Built:
    """The model of `config`'s family with `num_classes` logits, built under the config's precision (a Keras dtype
    policy: mixed ones compute in 16 bits and keep float32 weights; Keras adds loss scaling to mixed_float16 at
    compile)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        return keras_code(config.model).build(config, num_classes)
    finally:
        keras.config.set_dtype_policy(previous)


def for_inference(config: TrialConfig, built: Built) -> keras.Model:
    """The trained model as users load it (`keras.saving.load_model`, any backend, without beanlib), uncompiled."""
    return keras_code(config.model).for_inference(built)


def count_params(weights) -> int:
    """Number of scalars in a list of Keras variables."""
    return int(sum(math.prod(w.shape) for w in weights))


_COUNTS: dict[tuple, tuple[int, int]] = {}


def parameter_counts(config: TrialConfig, num_classes: int = NUM_CLASSES) -> tuple[int, int]:
    """(trainable in the trial's last phase, total) parameters of the model `config` builds for `num_classes`
    classes; memoised per architecture."""
    # Training settings and weights do not change the counts: key and build without them (random init, no download).
    training_only = {"seed": 0, "epochs": 1, "batch_size": 1, "optimizer": "adam", "learning_rate": 1.0, "precision": "float32"}
    arch = dataclasses.replace(config, **training_only, **family(config.model).arch_neutral)
    key = (arch, config.phases, num_classes)  # the phases decide what trains last
    if key not in _COUNTS:
        built = build(arch, num_classes)
        keras_code(config.model).as_in_last_phase(built, config)
        _COUNTS[key] = (count_params(built.model.trainable_weights), built.model.count_params())
        keras.backend.clear_session()
    return _COUNTS[key]
