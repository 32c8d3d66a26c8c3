import math

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
