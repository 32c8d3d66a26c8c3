"""Every model of the package is built before `fit` runs its callbacks.

Keras's TensorFlow trainer builds a subclassed model inside its first step,
after `on_train_begin`, so `BackupAndRestore` refused every package model
there ("model must be built before you call `fit()`"), while JAX worked.
"""

import shutil
import tempfile

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer import models
from tests.testing import TestCase


def _dense(inputs, units, name):
    return keras.Sequential(
        [keras.Input((inputs,)), keras.layers.Dense(units)], name=name
    )


def _case(name):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(16, 6)).astype("float32")
    xt = rng.normal(size=(12, 6)).astype("float32")
    ys = rng.integers(0, 3, 16)
    domains = {"source": xs, "target": xt}
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if name == "dann":
        model = models.DomainAdversarialModel(
            _dense(6, 8, "f"), _dense(8, 3, "t"), _dense(8, 1, "d")
        )
    elif name == "discrepancy":
        model = models.DiscrepancyAlignmentModel(
            _dense(6, 8, "f"), _dense(8, 3, "t"), "mmd", 1.0
        )
    elif name == "cdan":
        model = models.CDANModel(
            _dense(6, 8, "f"), _dense(8, 3, "t"), _dense(24, 1, "d")
        )
    elif name == "mcd":
        model = models.MCDModel(
            _dense(6, 8, "f"), _dense(8, 3, "t"), _dense(8, 3, "t2")
        )
    elif name == "information_maximization":
        model = models.InformationMaximizationModel(
            _dense(6, 8, "f"), _dense(8, 3, "t")
        )
    elif name == "distiller":
        return models.Distiller(_dense(6, 3, "te"), _dense(6, 3, "st")), xs, ys, {}
    else:
        model = models.MultiTaskModel(
            _dense(6, 8, "f"), {"a": _dense(8, 3, "ha"), "b": _dense(8, 2, "hb")}
        )
        return model, xs, {"a": ys, "b": ys % 2}, {"loss": ce}
    return model, domains, ys, {}


NAMES = (
    "dann", "discrepancy", "cdan", "mcd", "information_maximization",
    "distiller", "multi_task",
)


class BuildBeforeFitTest(TestCase):
    @parameterized.named_parameters((n, n) for n in NAMES)
    def test_backup_and_restore_trains_as_without_it(self, name):
        weights = []
        for with_backup in (False, True):
            keras.utils.set_random_seed(0)
            model, x, y, compile_kwargs = _case(name)
            model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_kwargs)
            folder = tempfile.mkdtemp()
            self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
            callbacks = [keras.callbacks.BackupAndRestore(folder)] if with_backup else []
            model.fit(
                x, y, epochs=2, batch_size=4, shuffle=False, verbose=0,
                callbacks=callbacks,
            )
            weights.append([keras.ops.convert_to_numpy(w) for w in model.weights])
        self.assertEqual(len(weights[0]), len(weights[1]))
        for a, b in zip(*weights):
            np.testing.assert_allclose(a, b, atol=1e-6)

    def test_tf_data_input_is_built_from_its_first_batch(self):
        import tensorflow as tf

        keras.utils.set_random_seed(0)
        model, x, y, _ = _case("dann")
        model.compile(optimizer="sgd")
        pairs = {k: v[:12] for k, v in x.items()}
        data = tf.data.Dataset.from_tensor_slices((pairs, y[:12])).batch(4)
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        model.fit(
            data, epochs=1, verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(folder)],
        )
        self.assertEqual(int(model.optimizer.iterations.numpy()), 3)
