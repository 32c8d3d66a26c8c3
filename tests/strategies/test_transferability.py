import doctest

import numpy as np
from absl.testing import parameterized
from scipy import optimize
from scipy import stats

from keras_transfer.strategies import transferability
from tests.testing import TestCase


def _log_evidence(f, y, log_alpha, log_beta):
    # The definition, independently of the fixed point: y ~ N(0, F F^T /
    # alpha + I / beta) once w ~ N(0, I / alpha) is integrated out.
    alpha, beta = np.exp(log_alpha), np.exp(log_beta)
    cov = f @ f.T / alpha + np.eye(len(f)) / beta
    return stats.multivariate_normal(np.zeros(len(f)), cov).logpdf(y)


def _max_log_evidence(f, y):
    result = optimize.minimize(
        lambda p: -_log_evidence(f, y, *p), x0=[0.0, 0.0], method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 5000},
    )
    return -result.fun / len(f)


class TransferabilityTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("tall", 30, 4),  # n > D
        ("wide", 12, 20),  # D > n: F F^T full rank, F^T F singular
    )
    def test_logme_matches_maximised_evidence(self, n, d):
        rng = np.random.default_rng(0)
        labels = np.arange(n) % 3
        f = rng.normal(size=(n, d)) + 0.8 * np.eye(3, d)[labels]
        expected = np.mean(
            [_max_log_evidence(f, (labels == c).astype(float)) for c in range(3)]
        )
        self.assertAllClose(transferability(f, labels), expected, atol=1e-5)

    def test_logme_regression_targets(self):
        rng = np.random.default_rng(1)
        f = rng.normal(size=(25, 3))
        targets = f @ rng.normal(size=(3, 2)) + 0.3 * rng.normal(size=(25, 2))
        expected = np.mean([_max_log_evidence(f, targets[:, j]) for j in range(2)])
        self.assertAllClose(transferability(f, targets), expected, atol=1e-5)

    def test_logme_ranks_informative_features_first(self):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 5, 2000)
        signal = np.eye(5)[labels] @ rng.normal(size=(5, 64))
        noise = rng.normal(size=(2000, 64))
        scores = [
            transferability(noise + w * signal, labels) for w in (0.0, 0.3, 1.0)
        ]
        self.assertLess(scores[0], scores[1])
        self.assertLess(scores[1], scores[2])

    def test_leep_matches_explicit_loops(self):
        rng = np.random.default_rng(0)
        n, z = 40, 4
        logits = rng.normal(size=(n, z))
        theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        labels = rng.integers(0, 3, n)
        joint = np.zeros((3, z))
        for i in range(n):
            for zz in range(z):
                joint[labels[i], zz] += theta[i, zz] / n
        total = 0.0
        for i in range(n):
            eeg = 0.0
            for zz in range(z):
                p_z = sum(joint[y, zz] for y in range(3))
                eeg += joint[labels[i], zz] / p_z * theta[i, zz]
            total += np.log(eeg)
        self.assertAllClose(
            transferability(theta, labels, method="leep"), total / n, atol=1e-10
        )

    def test_leep_of_a_perfect_source_is_zero(self):
        # Source classes identical to the target classes, predicted with
        # certainty: P(y | z) is the identity, so LEEP = log 1 = 0.
        labels = np.arange(30) % 3
        self.assertAllClose(
            transferability(np.eye(3)[labels], labels, method="leep"), 0.0
        )

    def test_h_score_matches_definition(self):
        rng = np.random.default_rng(0)
        labels = np.arange(50) % 4
        f = rng.normal(size=(50, 6)) + np.eye(4, 6)[labels]
        cov_f = np.cov(f, rowvar=False, bias=True)
        class_mean = np.stack([f[labels == c].mean(0) for c in range(4)])
        g = class_mean[labels]
        cov_g = np.cov(g, rowvar=False, bias=True)
        expected = np.trace(np.linalg.inv(cov_f) @ cov_g)
        self.assertAllClose(
            transferability(f, labels, method="h_score"), expected, atol=1e-8
        )
        # Features that are the labels' one-hot code (plus tiny noise) reach
        # the maximum, number of classes - 1.
        onehot = np.eye(4)[labels] + 1e-4 * rng.normal(size=(50, 4))
        self.assertAllClose(
            transferability(onehot, labels, method="h_score"), 3.0, atol=1e-3
        )

    def test_thousands_of_examples(self):
        # One thin SVD: 5,000 x 512 features and 10 classes run in well under
        # a second here (no timing asserted).
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 10, 5000)
        f = rng.normal(size=(5000, 512)).astype("float32")
        for method in ("logme", "h_score"):
            self.assertTrue(np.isfinite(transferability(f, labels, method=method)))

    @parameterized.named_parameters(
        ("method", {"method": "nce"}, "`method` must be one of"),
        ("length", {"labels": np.zeros(5, int)}, "one per row"),
        ("one_class", {"labels": np.zeros(10, int)}, "at least 2 classes"),
        ("float_labels", {"labels": np.linspace(0, 1, 10)}, "integer class ids"),
        ("negative", {"labels": -np.arange(10)}, "non-negative"),
        ("nan", {"features": np.full((10, 3), np.nan)}, "NaN or inf"),
        ("one_sample", {"features": np.zeros((1, 3)), "labels": [0]}, "at least 2 samples"),
        ("leep_not_probs", {"method": "leep"}, "class probabilities"),
        ("tol", {"tol": 0}, "`tol` must be"),
        ("max_iter", {"max_iter": 0}, "`max_iter` must be"),
    )
    def test_bad_inputs_raise(self, kwargs, message):
        rng = np.random.default_rng(0)
        args = {"features": rng.normal(size=(10, 3)), "labels": np.arange(10) % 2}
        args.update(kwargs)
        with self.assertRaisesRegex(ValueError, message):
            transferability(**args)

    def test_docstring_example(self):
        import importlib

        module = importlib.import_module("keras_transfer.strategies.transferability")
        result = doctest.testmod(module, verbose=False)
        self.assertGreater(result.attempted, 0)
        self.assertEqual(result.failed, 0)
