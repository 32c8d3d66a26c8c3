import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.strategies import check_negative_transfer
from tests.testing import TestCase


def _fixed(logits):
    """A model that returns `logits` whatever the input (bias only)."""
    logits = np.asarray(logits, "float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(logits.shape[-1], kernel_initializer="zeros")])
    model.layers[0].bias.assign(logits)
    return model


class NegativeTransferTest(TestCase, parameterized.TestCase):
    def test_reports_hurt_and_not_hurt(self):
        x = np.zeros((4, 1), "float32")
        y = np.array([0, 0, 0, 1])
        always_0, always_1 = _fixed([1.0, 0.0]), _fixed([0.0, 1.0])
        hurt = check_negative_transfer(always_1, always_0, x, y)
        self.assertEqual((hurt["transferred"], hurt["baseline"]), (0.25, 0.75))
        self.assertAllClose(hurt["difference"], -0.5)
        self.assertTrue(hurt["negative_transfer"])
        self.assertIn("Negative transfer", hurt["message"])
        fine = check_negative_transfer(always_0, always_1, x, y)
        self.assertFalse(fine["negative_transfer"])
        self.assertIn("No negative transfer", fine["message"])
        # Within the margin it is not called negative transfer.
        tolerated = check_negative_transfer(always_1, always_0, x, y, margin=0.6)
        self.assertFalse(tolerated["negative_transfer"])

    def test_custom_metric(self):
        x = np.zeros((2, 1), "float32")
        report = check_negative_transfer(
            _fixed([2.0]), _fixed([1.0]), x, np.zeros(2),
            metric=lambda y, p: -float(np.mean(np.abs(p[:, 0] - y))),
        )
        self.assertAllClose(report["difference"], -1.0)
        self.assertTrue(report["negative_transfer"])

    @parameterized.named_parameters(
        ("metric", {"metric": "f1"}, "`metric` must be"),
        ("margin", {"margin": -0.1}, "`margin` must be"),
        ("lengths", {"y_val": np.zeros(3)}, "same length"),
    )
    def test_bad_arguments_raise(self, kwargs, message):
        args = {"x_val": np.zeros((2, 1), "float32"), "y_val": np.zeros(2)}
        args.update(kwargs)
        with self.assertRaisesRegex(ValueError, message):
            check_negative_transfer(_fixed([1.0, 0.0]), _fixed([1.0, 0.0]), **args)
