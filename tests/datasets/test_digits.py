import numpy as np

from keras_transfer import datasets
from tests.testing import TestCase


class LoadDigitsTest(TestCase):
    def test_shapes_dtypes_ranges_and_checksum(self):
        (x, y), (x_test, y_test) = datasets.load_digits()
        self.assertEqual((x.shape, x_test.shape), ((1438, 8, 8), (359, 8, 8)))
        self.assertEqual((x.dtype, y.dtype), (np.float32, np.int64))
        self.assertEqual((float(x.min()), float(x.max())), (0.0, 16.0))
        # All 1,797 images are there: their pixel total is a known constant.
        self.assertEqual(float(x.sum() + x_test.sum()), 561718.0)
        counts = np.bincount(np.concatenate([y, y_test]))
        np.testing.assert_array_equal(
            counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
        )
        # Stratified: every class has 20% (rounded) in the test set.
        np.testing.assert_allclose(np.bincount(y_test) / counts, 0.2, atol=0.01)

    def test_seeded_split(self):
        _, (a, _) = datasets.load_digits(seed=0)
        _, (b, _) = datasets.load_digits(seed=0)
        _, (c, _) = datasets.load_digits(seed=3)
        np.testing.assert_array_equal(a, b)
        self.assertFalse(np.array_equal(a, c))

    def test_invalid_test_fraction_raises(self):
        with self.assertRaisesRegex(ValueError, "Received: test_fraction=-0.1"):
            datasets.load_digits(test_fraction=-0.1)
