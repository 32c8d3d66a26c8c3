import numpy as np
from absl.testing import parameterized

from keras_transfer.losses import MMD
from keras_transfer.losses import mmd
from tests.testing import TestCase


def _np_kernel(d, sigmas2):
    return np.mean([np.exp(-d / (2 * s2)) for s2 in sigmas2], axis=0)


def _np_sqdist(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _np_mmd(x, y, sigmas=None, multipliers=(1.0,), estimator="unbiased"):
    x, y = x.astype(np.float64), y.astype(np.float64)
    m, n = len(x), len(y)
    if estimator == "linear":
        p = min(m, n) // 2
        x1, x2, y1, y2 = x[0 : 2 * p : 2], x[1 : 2 * p : 2], y[0 : 2 * p : 2], y[1 : 2 * p : 2]
        dd = [((a - b) ** 2).sum(-1) for a, b in ((x1, x2), (y1, y2), (x1, y2), (x2, y1))]
        if sigmas is None:
            med = np.median(np.concatenate(dd))
            s2 = [med / 2 * k * k for k in multipliers]
        else:
            s2 = [s * s for s in sigmas]
        k = [_np_kernel(d, s2) for d in dd]
        return np.mean(k[0] + k[1] - k[2] - k[3])
    z = np.concatenate([x, y])
    dz = _np_sqdist(z, z)
    if sigmas is None:
        med = np.median(dz[~np.eye(m + n, dtype=bool)])
        s2 = [med / 2 * k * k for k in multipliers]
    else:
        s2 = [s * s for s in sigmas]
    kz = _np_kernel(dz, s2)
    kxx, kyy, kxy = kz[:m, :m], kz[m:, m:], kz[:m, m:]
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    txx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    tyy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    if m == n:
        cross = (kxy.sum() - np.trace(kxy)) / (m * (m - 1))
    else:
        cross = kxy.mean()
    return txx + tyy - 2 * cross


class MMDTest(TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(12, 3)).astype("float32")
        self.y = (rng.normal(size=(9, 3)) * 1.5 + 0.5).astype("float32")
        self.y12 = (rng.normal(size=(12, 3)) + 0.7).astype("float32")

    @parameterized.named_parameters(
        ("unbiased_median", None, (1.0,), "unbiased"),
        ("unbiased_multi", None, (0.25, 0.5, 1.0, 2.0, 4.0), "unbiased"),
        ("unbiased_fixed", [0.5, 2.0], (1.0,), "unbiased"),
        ("biased_median", None, (1.0,), "biased"),
        ("biased_fixed", [1.3], (1.0,), "biased"),
        ("linear_median", None, (1.0,), "linear"),
        ("linear_multi", None, (0.5, 1.0, 2.0), "linear"),
        ("linear_fixed", [0.8], (1.0,), "linear"),
    )
    def test_matches_numpy_reference(self, sigmas, multipliers, estimator):
        for y in (self.y, self.y12):
            expected = _np_mmd(self.x, y, sigmas, multipliers, estimator)
            actual = mmd(
                self.x,
                y,
                bandwidth=sigmas,
                bandwidth_multipliers=multipliers,
                estimator=estimator,
            )
            self.assertAllClose(actual, expected, atol=1e-5)

    def test_known_value_single_points(self):
        # Two points each, sigma=1, biased: k(a, a)=1, and
        # MMD^2 = 1/4 (2 + 2 exp(-1/2)) * 2 - 2 * mean(k_xy).
        x = np.array([[0.0], [1.0]], "float32")
        y = np.array([[3.0], [4.0]], "float32")
        kxx = (2 + 2 * np.exp(-0.5)) / 4
        kxy = (np.exp(-9 / 2) + np.exp(-16 / 2) + np.exp(-4 / 2) + np.exp(-9 / 2)) / 4
        self.assertAllClose(
            mmd(x, y, bandwidth=1.0, estimator="biased"), 2 * kxx - 2 * kxy
        )

    @parameterized.named_parameters(
        ("unbiased", "unbiased"), ("biased", "biased"), ("linear", "linear")
    )
    def test_identical_samples_give_zero(self, estimator):
        for bw, mult in ((None, (1.0,)), (None, (0.5, 1.0, 2.0)), (2.0, (1.0,))):
            value = float(
                mmd(
                    self.x,
                    self.x,
                    bandwidth=bw,
                    bandwidth_multipliers=mult,
                    estimator=estimator,
                )
            )
            self.assertAllClose(value, 0.0, atol=1e-6)

    def test_constant_sample_is_not_nan(self):
        x = np.zeros((4, 3), "float32")
        for estimator in ("unbiased", "biased", "linear"):
            value = float(mmd(x, x, estimator=estimator))
            self.assertFalse(np.isnan(value))
            self.assertAllClose(value, 0.0, atol=1e-6)
        value = float(mmd(x, x + 1.0))
        self.assertFalse(np.isnan(value))
        self.assertGreater(value, 0.5)

    def test_shift_increases_mmd(self):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(200, 2)).astype("float32")
        near = rng.normal(size=(200, 2)).astype("float32") + 0.2
        far = rng.normal(size=(200, 2)).astype("float32") + 2.0
        for estimator in ("unbiased", "linear"):
            self.assertLess(
                float(mmd(x, near, estimator=estimator)),
                float(mmd(x, far, estimator=estimator)),
            )

    def test_gradient_is_finite(self):
        import keras

        x = keras.Variable(self.x)
        if keras.backend.backend() != "tensorflow":
            self.skipTest("gradient check written with tf.GradientTape")
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = mmd(x, self.y, bandwidth_multipliers=(0.5, 1.0, 2.0))
        grad = tape.gradient(value, x.value)
        self.assertTrue(np.isfinite(grad.numpy()).all())
        self.assertGreater(np.abs(grad.numpy()).sum(), 0.0)

    @parameterized.named_parameters(
        ("width", np.zeros((4, 3)), np.zeros((4, 2)), "same feature width"),
        ("single", np.zeros((1, 3)), np.zeros((4, 3)), "at least 2 samples"),
        ("empty", np.zeros((4, 3)), np.zeros((0, 3)), "at least 2 samples"),
        ("rank", np.zeros((4,)), np.zeros((4,)), "must be 2-D"),
    )
    def test_bad_inputs_raise(self, x, y, message):
        with self.assertRaisesRegex(ValueError, message):
            mmd(x.astype("float32"), y.astype("float32"))

    @parameterized.named_parameters(
        ("zero_bandwidth", {"bandwidth": 0.0}, "`bandwidth` must be"),
        ("negative_bandwidth", {"bandwidth": [1.0, -2.0]}, "`bandwidth` must be"),
        ("nan_bandwidth", {"bandwidth": float("nan")}, "`bandwidth` must be"),
        ("empty_bandwidth", {"bandwidth": []}, "`bandwidth` must be"),
        ("bad_multiplier", {"bandwidth_multipliers": (1.0, 0.0)}, "`bandwidth_multipliers`"),
        ("both", {"bandwidth": 1.0, "bandwidth_multipliers": (1.0, 2.0)}, "cannot be combined"),
        ("estimator", {"estimator": "fast"}, "`estimator` must be one of"),
    )
    def test_bad_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            mmd(self.x, self.y, **kwargs)
        with self.assertRaisesRegex(ValueError, message):
            MMD(**kwargs)

    def test_loss_class_matches_function(self):
        loss = MMD(bandwidth_multipliers=(0.5, 1.0, 2.0), estimator="linear")
        self.assertAllClose(
            loss(self.x, self.y12),
            mmd(self.x, self.y12, bandwidth_multipliers=(0.5, 1.0, 2.0), estimator="linear"),
        )
        with self.assertRaisesRegex(ValueError, "sample_weight"):
            loss(self.x, self.y12, sample_weight=np.ones(12))

    def test_loss_serialization(self):
        self.run_class_serialization_test(
            MMD(bandwidth=[0.5, 2.0], estimator="biased")
        )
        self.run_class_serialization_test(
            MMD(bandwidth_multipliers=(0.5, 1.0, 2.0), estimator="linear")
        )
