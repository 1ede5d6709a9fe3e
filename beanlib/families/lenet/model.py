"""LeNet's Keras code: the model, its one training phase, and the model as saved."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
from keras import layers

from beanlib.models import Built

if TYPE_CHECKING:
    from beanlib.config import TrialConfig

# Regularizers on the conv layers, picked by name: kernel regularizer, and whether a Dropout(rate) follows each conv.
# Dropout placement is ours (the original says only "Dropout(0.2) on the conv layers").
KERNEL_REGULARIZERS = {
    "none": lambda strength: None,
    "l1": lambda strength: keras.regularizers.L1(strength),
    "l2": lambda strength: keras.regularizers.L2(strength),
    "dropout": lambda strength: None,
}


def build(config: "TrialConfig", num_classes: int) -> Built:
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


def train(trial, features) -> None:
    """One phase: the whole model on the images (`trial`: beanlib.train's running trial)."""
    c = trial.config
    trial.fit(trial.built.model, "train", trial.images, c.epochs, c.learning_rate)


def as_in_last_phase(built: Built, config: "TrialConfig") -> None:
    """Set what trains as in the trial's last phase: one phase, the whole model, so nothing to set."""


def for_inference(built: Built) -> keras.Model:
    """The trained model, uncompiled (no optimizer state), as users load it."""
    return keras.Model(built.model.inputs, built.model.outputs, name=built.model.name)
