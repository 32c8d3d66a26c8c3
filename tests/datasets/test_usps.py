import os

import numpy as np

from keras_transfer import datasets
from tests.testing import USPS_PATH
from tests.testing import TestCase
from tests.testing import require_data


class LoadUSPSTest(TestCase):
    def test_official_split(self):
        require_data("usps")
        (x, y), (x_test, y_test) = datasets.load_usps(USPS_PATH)
        self.assertEqual((x.shape, x_test.shape), ((7291, 16, 16), (2007, 16, 16)))
        self.assertEqual((x.dtype, y.dtype), (np.float32, np.int64))
        self.assertEqual((float(x.min()), float(x.max())), (0.0, 1.0))
        np.testing.assert_array_equal(y[:5], [6, 5, 4, 7, 3])
        np.testing.assert_array_equal(y_test[:5], [9, 6, 3, 6, 6])
        np.testing.assert_array_equal(
            np.bincount(y), [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]
        )
        np.testing.assert_array_equal(
            np.bincount(y_test), [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]
        )
        self.assertAllClose(float(x.sum()), 474987.125, rtol=1e-5)

    def test_missing_file_raises(self):
        with self.assertRaisesRegex(
            FileNotFoundError, r"`load_usps`.*Received: path='/no/usps.h5'"
        ):
            datasets.load_usps("/no/usps.h5")

    def test_wrong_layout_raises(self):
        import h5py

        path = os.path.join(self.get_temp_dir(), "bad.h5")
        with h5py.File(path, "w") as f:
            f["train/data"] = np.zeros((2, 256), "float32")
        with self.assertRaisesRegex(ValueError, "train/target is missing"):
            datasets.load_usps(path)
