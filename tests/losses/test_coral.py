import numpy as np
from absl.testing import parameterized

from keras_transfer.losses import CORAL
from keras_transfer.losses import coral
from tests.testing import TestCase


def _np_coral(x, y):
    d = x.shape[1]
    cs = np.cov(x.astype(np.float64), rowvar=False)
    ct = np.cov(y.astype(np.float64), rowvar=False)
    return ((cs - ct) ** 2).sum() / (4 * d * d)


class CORALTest(TestCase, parameterized.TestCase):
    def test_matches_numpy_reference(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(10, 4)).astype("float32")
        y = (rng.normal(size=(7, 4)) @ rng.normal(size=(4, 4))).astype("float32")
        self.assertAllClose(coral(x, y), _np_coral(x, y), rtol=1e-5)
        self.assertAllClose(CORAL()(x, y), _np_coral(x, y), rtol=1e-5)

    def test_known_value(self):
        # 1-D: var(x)=1 (x = [-1, 1] / sqrt(2) * sqrt(2)), var(y)=4.
        x = np.array([[-1.0], [1.0]], "float32") / np.sqrt(2.0)
        y = 2.0 * x
        # (1 - 4)^2 / 4 with C = sum(x^2) / (n - 1) = 1 and 4.
        self.assertAllClose(coral(x, y), 9.0 / 4.0)

    def test_identical_and_shifted_give_zero(self):
        x = np.random.default_rng(1).normal(size=(16, 3)).astype("float32")
        self.assertAllClose(coral(x, x), 0.0)
        self.assertAllClose(coral(x, x + 3.0), 0.0, atol=1e-6)

    @parameterized.named_parameters(
        ("width", np.zeros((4, 3)), np.zeros((4, 2)), "same feature width"),
        ("single", np.zeros((1, 3)), np.zeros((4, 3)), "at least 2 samples"),
    )
    def test_bad_inputs_raise(self, x, y, message):
        with self.assertRaisesRegex(ValueError, message):
            coral(x.astype("float32"), y.astype("float32"))

    def test_sample_weight_raises(self):
        x = np.zeros((4, 2), "float32")
        with self.assertRaisesRegex(ValueError, "sample_weight"):
            CORAL()(x, x, sample_weight=np.ones(4))

    def test_loss_serialization(self):
        self.run_class_serialization_test(CORAL(name="c"))
