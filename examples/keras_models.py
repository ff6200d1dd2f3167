"""Keras 3 models for examples/backends.toml and examples/frameworks.toml.

Import this module only in a process whose Keras backend is chosen (calipers runs it in a
worker process with ``KERAS_BACKEND`` set; see calipers.learners.keras).
"""

import keras
from keras import layers


def cnn(input_shape, n_outputs, channels=16, dropout=0.25, batch_norm=False):
    """A small CNN for (C, H, W) images such as digits' (1, 8, 8); returns logits.

    The images come channels-first (as calipers' own networks take them); the first layer
    moves the channels last, which every backend's convolutions support on the CPU.
    """
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Permute((2, 3, 1))(inputs)
    x = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
    if batch_norm:
        x = layers.BatchNormalization()(x)
    x = layers.Conv2D(2 * channels, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(4 * channels, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_outputs)(x)
    return keras.Model(inputs, outputs)


def mlp(input_shape, n_outputs, hidden=32, dropout=0.1, softmax=False):
    """A one-hidden-layer MLP on flattened inputs; returns logits (or means), or with
    ``softmax=True`` probabilities (then say ``output = "probabilities"``)."""
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Flatten()(inputs)
    x = layers.Dense(hidden, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_outputs, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, outputs)


def not_a_model(input_shape, n_outputs):
    """A broken builder (for the tests): returns a layer, not a model."""
    return layers.Dense(n_outputs)


def seven_outputs(input_shape, n_outputs):
    """A broken builder (for the tests): ignores n_outputs and returns 7 logits."""
    return mlp(input_shape, 7)
