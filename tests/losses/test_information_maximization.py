import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.losses import InformationMaximization
from keras_transfer.losses import information_maximization
from tests.testing import TestCase


def _np_im(logits, diversity_weight=1.0):
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    entropy = np.mean(-np.sum(p * np.log(p), axis=1))
    mean = p.mean(0)
    return entropy - diversity_weight * (-np.sum(mean * np.log(mean)))


class InformationMaximizationTest(TestCase, parameterized.TestCase):
    def test_matches_numpy_reference(self):
        logits = np.random.default_rng(0).normal(size=(9, 4)).astype("float32") * 3
        for w in (0.0, 0.5, 1.0):
            self.assertAllClose(information_maximization(logits, w), _np_im(logits, w), atol=1e-5)
        self.assertAllClose(
            InformationMaximization(0.5)(np.zeros(9), logits), _np_im(logits, 0.5), atol=1e-5
        )

    def test_known_values(self):
        # Confident and balanced over K = 4 classes: 0 - log 4 (the minimum).
        logits = 50.0 * np.eye(4, dtype="float32")
        self.assertAllClose(information_maximization(logits), -np.log(4.0), atol=1e-5)
        # All examples sent to one class: entropy 0, diversity 0.
        self.assertAllClose(information_maximization(np.tile(logits[:1], (4, 1))), 0.0, atol=1e-5)
        # Uniform predictions: log 4 - log 4.
        self.assertAllClose(information_maximization(np.zeros((3, 4), "float32")), 0.0, atol=1e-6)

    def test_serialization(self):
        loss = InformationMaximization(diversity_weight=0.25, name="im")
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        self.assertIsInstance(revived, InformationMaximization)
        self.assertEqual(revived.diversity_weight, 0.25)
        self.assertEqual(revived.name, "im")

    @parameterized.named_parameters(
        ("weight", lambda: information_maximization(np.zeros((2, 3)), -1.0), "`diversity_weight` must be"),
        ("rank", lambda: information_maximization(np.zeros((2, 3, 1))), r"\(batch, classes\)"),
        ("reduction", lambda: InformationMaximization(reduction="sum"), "reduces only by the batch"),
        ("weights", lambda: InformationMaximization()(np.zeros(2), np.zeros((2, 3)), sample_weight=np.ones(2)),
         "takes no `sample_weight`"),
    )
    def test_bad_inputs_raise(self, fn, message):
        with self.assertRaisesRegex(ValueError, message):
            fn()
