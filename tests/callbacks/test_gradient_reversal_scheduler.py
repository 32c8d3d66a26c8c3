import math
import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.callbacks import GradientReversalScheduler
from keras_transfer.callbacks import dann_factor
from keras_transfer.layers import GradientReversal
from tests.testing import TestCase


class _Record(keras.callbacks.Callback):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.values = []
        self.logged = []

    def on_train_batch_end(self, batch, logs=None):
        # On JAX the loop holds the variables' values: sync to read them.
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()
        self.values.append(float(keras.ops.convert_to_numpy(self.layer.factor_variable)))
        self.logged.append(logs["grl_factor"])


def _model():
    layer = GradientReversal(factor=0.0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    return model, layer


class GradientReversalSchedulerTest(TestCase, parameterized.TestCase):
    def test_dann_formula(self):
        self.assertEqual(dann_factor(0.0), 0.0)
        self.assertAllClose(dann_factor(0.5, gamma=10.0), 2 / (1 + math.exp(-5)) - 1)
        self.assertAllClose(dann_factor(1.0, gamma=10.0, max_factor=0.5), 0.5 * (2 / (1 + math.exp(-10)) - 1))

    def test_dann_schedule_updates_every_batch(self):
        model, layer = _model()
        record = _Record(layer)
        x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
        scheduler = GradientReversalScheduler("dann", gamma=10.0)
        history = model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[scheduler, record])
        # 4 steps x 2 epochs: progress p = step / 8 at each batch start.
        expected = [2 / (1 + math.exp(-10 * s / 8)) - 1 for s in range(8)]
        self.assertAllClose(record.values, expected, atol=1e-6)
        self.assertAllClose(record.logged, expected, atol=1e-6)
        self.assertAllClose(history.history["grl_factor"], [expected[3], expected[7]])

    def test_constant_and_callable(self):
        model, layer = _model()
        record = _Record(layer)
        x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[GradientReversalScheduler("constant", max_factor=0.3), record])
        self.assertAllClose(record.values, [0.3, 0.3])
        model, layer = _model()
        record = _Record(layer)
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[GradientReversalScheduler(lambda p: 1.0 + p), record])
        self.assertAllClose(record.values, [1.0, 1.5])

    def test_callable_returning_nan_raises(self):
        model, _ = _model()
        x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
        with self.assertRaisesRegex(ValueError, "must return a finite, non-negative"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[GradientReversalScheduler(lambda p: float("nan"))])

    def test_model_without_reversal_raises(self):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        with self.assertRaisesRegex(ValueError, "found no `GradientReversal`"):
            model.fit(np.ones((2, 2)), np.ones((2, 1)), verbose=0, callbacks=[GradientReversalScheduler()])

    @parameterized.named_parameters(
        ("schedule", {"schedule": "linear"}, "`schedule` must be one of"),
        ("gamma", {"gamma": 0.0}, "`gamma` must be a positive"),
        ("max_factor", {"max_factor": -1.0}, "`max_factor` must be"),
        ("max_factor_nan", {"max_factor": float("nan")}, "`max_factor` must be"),
        ("total_steps", {"total_steps": 0}, "`total_steps` must be"),
        ("layers", {"layers": [keras.layers.Dense(1)]}, "`layers` must be"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            GradientReversalScheduler(**kwargs)

    def test_reversed_gradient_follows_schedule_inside_one_epoch(self):
        # Regression (JAX): the factor used to stay at its epoch-start value
        # inside the compiled step while the logs showed the schedule.
        # loss = mean(w * x), x = 1: each SGD step adds lr * factor_s to w.
        inputs = keras.Input((1,))
        dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")
        model = keras.Model(inputs, GradientReversal(0.0)(dense(inputs)))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=lambda t, p: keras.ops.mean(p))
        x, y = np.ones((6, 1), "float32"), np.zeros((6, 1), "float32")
        history = model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
                            callbacks=[GradientReversalScheduler("dann", gamma=10.0)])
        factors = [dann_factor(s / 6) for s in range(6)]
        self.assertAllClose(dense.kernel, [[sum(factors)]], atol=1e-5)
        self.assertAllClose(history.history["grl_factor"], [factors[-1]])

    def test_steps_per_execution(self):
        inputs = keras.Input((1,))
        dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")
        model = keras.Model(inputs, GradientReversal(0.0)(dense(inputs)))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=lambda t, p: keras.ops.mean(p),
                      steps_per_execution=3)
        x, y = np.ones((6, 1), "float32"), np.zeros((6, 1), "float32")
        model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0,
                  callbacks=[GradientReversalScheduler("dann")])
        self.assertAllClose(dense.kernel, [[sum(dann_factor(s / 6) for s in range(6))]], atol=1e-5)

    def test_schedule_continues_after_load_model(self):
        model, layer = _model()
        x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
        model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[GradientReversalScheduler("dann")])
        path = os.path.join(self.get_temp_dir(), "grl.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        loaded_layer = [l for l in loaded.layers if isinstance(l, GradientReversal)][0]
        self.assertAllClose(loaded_layer.schedule_step, 8.0)
        record = _Record(loaded_layer)
        # The run planned for 4 epochs continues at epoch 2: p = 8/16 ... 15/16.
        loaded.fit(x, y, batch_size=2, epochs=4, initial_epoch=2, verbose=0,
                   callbacks=[GradientReversalScheduler("dann"), record])
        self.assertAllClose(record.values, [dann_factor(s / 16) for s in range(8, 16)], atol=1e-6)
        self.assertAllClose(record.logged, record.values, atol=1e-6)

    def test_schedule_continues_after_backup_and_restore(self):
        x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
        backup = os.path.join(self.get_temp_dir(), "backup")

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    raise RuntimeError("interrupted")

        model, layer = _model()
        with self.assertRaisesRegex(RuntimeError, "interrupted"):
            model.fit(x, y, batch_size=2, epochs=4, verbose=0, callbacks=[
                GradientReversalScheduler("dann"),
                keras.callbacks.BackupAndRestore(backup), Interrupt()])
        model, layer = _model()
        model(x)
        record = _Record(layer)
        model.fit(x, y, batch_size=2, epochs=4, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(backup), GradientReversalScheduler("dann"), record])
        self.assertAllClose(record.values, [dann_factor(s / 16) for s in range(8, 16)], atol=1e-6)
