"""Tiny models for the fine-tuning callback tests."""

import keras
import numpy as np

from keras_transfer.strategies import InferenceMode
from keras_transfer.strategies import layer_groups


def tiny_model(
    seed=0,
    learning_rate=1e-2,
    optimizer=None,
    frozen=True,
    eager=False,
    inference_mode=False,
    jit_compile=False,
):
    """`base` (Dense d0 -> BatchNorm bn -> Dense d1 -> Dense d2) + Dense head.

    Returns `(model, base)`, compiled, base frozen (the usual start).
    `eager=True` skips tracing (seconds per model on a loaded CPU) where
    graph-mode retracing is not what a test checks. `inference_mode=True`
    wraps the base in `InferenceMode`, as `build_classifier` does."""
    keras.utils.set_random_seed(seed)
    base = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="d0"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(8, activation="relu", name="d1"),
            keras.layers.Dense(4, name="d2"),
        ],
        name="base",
    )
    bn = base.get_layer("bn")
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    inputs = keras.Input((6,))
    features = InferenceMode(base)(inputs) if inference_mode else base(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(features)
    model = keras.Model(inputs, outputs, name="model")
    base.trainable = not frozen
    model.compile(
        optimizer or keras.optimizers.Adam(learning_rate),
        "sparse_categorical_crossentropy",
        # XLA compilation costs far more than these tiny steps.
        jit_compile=jit_compile,
        run_eagerly=eager,
    )
    return model, base


def tiny_groups(base):
    """[[d0, bn], [d1], [d2]]: input -> output."""
    return layer_groups(base, names=[["d0", "bn"], ["d1"], ["d2"]])


def tiny_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.integers(0, 3, n)
    return x, y


def fit(model, callbacks, epochs=1, initial_epoch=0, batch_size=16):
    """`model.fit` on `tiny_data()`, unshuffled and silent."""
    x, y = tiny_data()
    return model.fit(
        x,
        y,
        epochs=epochs,
        initial_epoch=initial_epoch,
        batch_size=batch_size,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


def snapshot(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


class EpochSnapshots(keras.callbacks.Callback):
    """Weights at every epoch end, and (optionally) optimizer variables."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(snapshot(self.model))

