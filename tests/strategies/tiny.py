"""Tiny stand-in bases and heads for the strategy tests."""

import keras
import numpy as np


def tiny_base(name="base", features=4, seed=0):
    """`Dense -> BatchNormalization -> Dropout -> Dense`: all the layers whose
    training/inference behaviour a transfer strategy must get right."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((6,), name="pixels")
    x = keras.layers.Dense(8, activation="relu", kernel_initializer=init)(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dropout(0.5, seed=seed)(x)
    outputs = keras.layers.Dense(features, kernel_initializer=init)(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_head(num_classes=3, features=4, dropout=0.3, seed=1):
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dropout(dropout, seed=seed),
            keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=init),
        ],
        name="head",
    )


def tiny_data(n=40, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.integers(0, num_classes, n)
    return x, y


def set_bn_statistics(base):
    """Non-trivial moving statistics, so that "unchanged" means something."""
    bn = base.get_layer("bn")
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    return bn
