import gzip
import os
import shutil

import numpy as np
from absl.testing import parameterized

from keras_transfer import datasets
from tests.testing import TestCase


class LoadFashionMNISTTest(TestCase):
    def test_official_split(self):
        (x, y), (x_test, y_test) = datasets.load_fashion_mnist()
        self.assertEqual((x.shape, x_test.shape), ((60000, 28, 28), (10000, 28, 28)))
        self.assertEqual((x.dtype, y.dtype), (np.uint8, np.int64))
        self.assertEqual((int(x.min()), int(x.max())), (0, 255))
        np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
        np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
        # File order is kept: the first images are an ankle boot and a
        # T-shirt (train) and an ankle boot and a pullover (test).
        np.testing.assert_array_equal(y[:5], [9, 0, 0, 3, 0])
        np.testing.assert_array_equal(y_test[:5], [9, 2, 1, 1, 6])
        self.assertEqual(int(x[0].astype(np.int64).sum()), 76247)
        self.assertEqual(int(x_test[0].astype(np.int64).sum()), 33456)
        self.assertEqual(len(datasets.FASHION_MNIST_CLASSES), 10)
        self.assertEqual(datasets.FASHION_MNIST_CLASSES[9], "Ankle boot")

    def test_stratified_seeded_subsets(self):
        (x, y), (x_test, y_test) = datasets.load_fashion_mnist(
            n_train=1000, n_test=250, seed=0
        )
        self.assertEqual((x.shape, x_test.shape), ((1000, 28, 28), (250, 28, 28)))
        np.testing.assert_array_equal(np.bincount(y), [100] * 10)
        np.testing.assert_array_equal(np.bincount(y_test), [25] * 10)
        (x2, _), (x2_test, _) = datasets.load_fashion_mnist(
            n_train=1000, n_test=250, seed=0
        )
        (x3, _), _ = datasets.load_fashion_mnist(n_train=1000, n_test=250, seed=1)
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(x_test, x2_test)
        self.assertFalse(np.array_equal(x, x3))
        _, (x4_test, _) = datasets.load_fashion_mnist(n_test=250, seed=0)
        np.testing.assert_array_equal(x_test, x4_test)
        # Subsets are drawn from the official train / test images.
        (full, _), (full_test, _) = datasets.load_fashion_mnist()
        train_keys = {img.tobytes() for img in full}
        self.assertTrue(all(img.tobytes() in train_keys for img in x[:50]))
        test_keys = {img.tobytes() for img in full_test}
        self.assertTrue(all(img.tobytes() in test_keys for img in x_test[:50]))

    def test_missing_folder_says_what_to_install(self):
        with self.assertRaisesRegex(
            FileNotFoundError,
            r"`load_fashion_mnist`.*Received: path='/no/fashion'.*"
            r"apt-get install dataset-fashion-mnist.*pass `path=`",
        ):
            datasets.load_fashion_mnist(path="/no/fashion")

    def test_missing_file_is_named(self):
        folder = self.get_temp_dir()
        shutil.copy(
            "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", folder
        )
        with self.assertRaisesRegex(
            FileNotFoundError, "needs train-images-idx3-ubyte.gz in"
        ):
            datasets.load_fashion_mnist(path=folder)

    def test_wrong_magic_raises(self):
        folder = self.get_temp_dir()
        for name in (
            "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        ):
            with gzip.open(os.path.join(folder, name), "wb") as f:
                f.write(b"\x00\x00\x08\x01" + b"\x00" * 8)
        with self.assertRaisesRegex(ValueError, "magic number 2051"):
            datasets.load_fashion_mnist(path=folder)

    @parameterized.named_parameters(
        ("too_many", {"n_train": 60001}, "n_train=60001"),
        ("zero", {"n_test": 0}, "n_test=0"),
        ("float", {"n_train": 10.0}, "n_train=10.0"),
    )
    def test_invalid_sizes_raise(self, kwargs, received):
        with self.assertRaisesRegex(ValueError, "Received: " + received):
            datasets.load_fashion_mnist(**kwargs)
