import numpy as np
from absl.testing import parameterized

from keras_transfer import datasets
from tests.testing import TestCase


class ResizeImagesTest(TestCase):
    def test_grey_and_rgb_shapes(self):
        grey = np.random.default_rng(0).random((3, 16, 16)).astype("float32")
        out = datasets.resize_images(grey, (28, 28))
        self.assertEqual((out.shape, out.dtype), ((3, 28, 28), np.float32))
        self.assertBetween(float(out.min()), 0.0, 1.0)
        self.assertBetween(float(out.max()), 0.0, 1.0)
        rgb = datasets.resize_images(np.zeros((2, 4, 4, 3), "uint8"), (8, 6))
        self.assertEqual(rgb.shape, (2, 8, 6, 3))

    def test_values(self):
        # Constant images stay constant; nearest 2x upsampling repeats pixels.
        self.assertAllClose(
            datasets.resize_images(np.full((1, 16, 16), 0.25), (28, 28)),
            np.full((1, 28, 28), 0.25),
        )
        x = np.arange(4, dtype="float32").reshape(1, 2, 2)
        self.assertAllClose(
            datasets.resize_images(x, (4, 4), interpolation="nearest")[0],
            np.kron(x[0], np.ones((2, 2))),
        )

    @parameterized.named_parameters(
        ("rank", np.zeros((16, 16)), (28, 28), r"x.shape=\(16, 16\)"),
        ("size", np.zeros((1, 16, 16)), (28,), r"size=\(28,\)"),
        ("negative", np.zeros((1, 16, 16)), (28, -1), r"size=\(28, -1\)"),
    )
    def test_invalid_arguments_raise(self, x, size, received):
        with self.assertRaisesRegex(ValueError, "Received: " + received):
            datasets.resize_images(x, size)
