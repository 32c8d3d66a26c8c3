import warnings

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.strategies import dev_risk
from keras_transfer.strategies import importance_weights
from keras_transfer.strategies import reverse_validation_accuracy
from keras_transfer.strategies import select_model
from keras_transfer.strategies import soft_neighborhood_density
from tests.testing import TestCase


def _snd_loops(logits, t):
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p = p / np.sqrt((p**2).sum(1, keepdims=True))
    n = len(p)
    total = 0.0
    for i in range(n):
        sims = {j: float(p[i] @ p[j]) / t for j in range(n) if j != i}
        z = sum(np.exp(v) for v in sims.values())
        total -= sum(np.exp(v) / z * np.log(np.exp(v) / z) for v in sims.values())
    return total / n


class _Model(keras.Model):
    """A fixed linear classifier with a `feature_extractor`."""

    def __init__(self, kernel):
        super().__init__(name="linear")
        self.feature_extractor = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
        self.head = keras.layers.Dense(kernel.shape[1], use_bias=False)
        self.head.build((None, 2))
        self.head.kernel.assign(kernel)

    def call(self, x):
        return self.head(self.feature_extractor(x))


class ModelSelectionTest(TestCase, parameterized.TestCase):
    def test_snd_matches_loops(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(9, 3)) * 3
        for t in (0.05, 0.5):
            self.assertAllClose(soft_neighborhood_density(logits, t), _snd_loops(logits, t), atol=1e-9)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        self.assertAllClose(
            soft_neighborhood_density(probs, from_logits=False), _snd_loops(logits, 0.05), atol=1e-9
        )
        # Identical predictions: uniform neighbourhoods, entropy log(n - 1).
        self.assertAllClose(soft_neighborhood_density(np.zeros((6, 3))), np.log(5))

    def test_dev_risk_formula(self):
        rng = np.random.default_rng(0)
        losses, weights = rng.random(20), rng.random(20) * 2
        weighted = losses * weights
        cov = np.sum((weighted - weighted.mean()) * (weights - weights.mean())) / 19
        var = np.sum((weights - weights.mean()) ** 2) / 19
        eta = -cov / var
        self.assertAllClose(dev_risk(losses, weights), weighted.mean() + eta * weights.mean() - eta)
        self.assertAllClose(dev_risk(losses, np.ones(20)), losses.mean())

    def test_dev_risk_warns_when_few_weights_carry_it(self):
        losses = np.random.default_rng(0).random(500)
        weights = np.full(500, 1e-6)
        weights[:3] = 1.0  # 3 effective samples of 500
        with self.assertWarnsRegex(UserWarning, r"3\.0 effective samples of 500"):
            value = dev_risk(losses, weights)
        self.assertTrue(np.isfinite(value))  # still computed
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dev_risk(losses, np.random.default_rng(1).random(500) + 0.5)

    def test_importance_weights_recover_gaussian_ratio(self):
        # Source N(0, 1), target N(1, 1): p_t / p_s = exp(x - 1/2), whose log
        # is linear, so a logistic domain classifier is well specified.
        rng = np.random.default_rng(0)
        xs = rng.normal(size=(4000, 1))
        xt = rng.normal(loc=1.0, size=(2000, 1))
        xv = np.linspace(-1.5, 1.5, 7)[:, None]
        w = importance_weights(xs, xt, xv)
        self.assertAllClose(np.log(w), xv[:, 0] - 0.5, atol=0.1)

    def test_reverse_validation_matches_ridge(self):
        rng = np.random.default_rng(0)
        ft = rng.normal(size=(30, 2))
        pred = rng.normal(size=(30, 3))
        fv, yv = rng.normal(size=(10, 2)), rng.integers(0, 3, 10)
        mean, std = ft.mean(0), ft.std(0) + 1e-6
        a = np.c_[(ft - mean) / std, np.ones(30)]
        pen = 1e-3 * 30 * np.diag([1.0, 1.0, 0.0])
        w = np.linalg.solve(a.T @ a + pen, a.T @ np.eye(3)[pred.argmax(1)])
        expected = np.mean((np.c_[(fv - mean) / std, np.ones(10)] @ w).argmax(1) == yv)
        self.assertAllClose(reverse_validation_accuracy(ft, pred, fv, yv), expected)

    def test_select_model_ranks_candidates(self):
        # Two Gaussian classes; the target is the source shifted and wider.
        # The right classifier separates them along x (two confident
        # clusters); the wrong one along y (scattered, unsure predictions).
        rng = np.random.default_rng(0)
        ys = rng.integers(0, 2, 200)
        xs = rng.normal(size=(200, 2)) * 0.3 + np.c_[2 * ys - 1, np.zeros(200)]
        yt = rng.integers(0, 2, 200)
        xt = rng.normal(size=(200, 2)) * 0.4 + np.c_[2 * yt - 0.7, np.zeros(200)]
        good = _Model(np.array([[-3.0, 3.0], [0.0, 0.0]]))
        bad = _Model(np.array([[0.0, 0.0], [-3.0, 3.0]]))
        candidates = {"good": good, "bad": bad}
        sv = (xs[:50], ys[:50])
        for method in ("snd", "reverse_validation", "dev"):
            picked = select_model(candidates, method, target=xt, source_validation=sv, source=xs[50:])
            self.assertEqual(picked["best"], "good", msg=f"{method}: {picked}")
        snd = select_model([good, bad], target=xt)
        self.assertEqual(snd["best"], "0")
        self.assertAllClose(
            snd["scores"]["0"], soft_neighborhood_density(good.predict(xt, verbose=0))
        )

    @parameterized.named_parameters(
        ("method", {"method": "entropy"}, "`method` must be one of"),
        ("no_target", {"target": None}, "needs `target`"),
        ("labelled_target", {"target": (np.zeros((4, 2)), np.zeros(4))}, "unlabelled inputs only"),
        ("dev_needs_source", {"method": "dev", "source_validation": (np.zeros((4, 2)), np.zeros(4, int))}, "needs `source`"),
        ("rv_needs_validation", {"method": "reverse_validation"}, "needs `source_validation`"),
        ("dev_needs_validation", {"method": "dev", "source": np.zeros((4, 2))}, "`method='dev'` needs `source_validation`"),
        ("snd_too_few_targets", {"target": np.zeros((2, 2))}, "at least 3 samples"),
        ("empty", {"candidates": {}}, "empty"),
        ("float_labels", {"method": "dev", "source": np.zeros((4, 2)), "source_validation": (np.zeros((4, 2)), np.zeros(4))}, "integer class"),
        ("negative_labels", {"method": "reverse_validation", "source_validation": (np.zeros((2, 2)), np.array([0, -1]))}, "non-negative integer"),
        ("too_large_labels", {"method": "dev", "source": np.random.rand(4, 2), "source_validation": (np.random.rand(2, 2), np.array([0, 2]))}, r"class ids in \[0, 2\)"),
        ("validation_not_pair", {"method": "reverse_validation", "source_validation": np.zeros((4, 2))}, "must be a pair"),
        # Reverse validation scored labels outside the model's classes as
        # wrong (0.0 for every candidate), where DEV refused them.
        ("rv_too_large_labels", {"method": "reverse_validation", "source_validation": (np.random.rand(2, 2), np.array([0, 2]))}, r"class ids in \[0, 2\)"),
        ("mixed_class_counts", {"candidates": {"a": _Model(np.eye(2)), "b": _Model(np.ones((2, 3)))}}, "same classes"),
    )
    def test_bad_inputs_raise(self, kwargs, message):
        args = {"candidates": {"m": _Model(np.eye(2))}, "method": "snd", "target": np.zeros((4, 2))}
        args.update(kwargs)
        with self.assertRaisesRegex(ValueError, message):
            select_model(**args)

    def test_probabilities_read_as_logits_raise(self):
        probabilities = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(3, activation="softmax")]
        )
        target = np.random.default_rng(0).normal(size=(6, 2))
        with self.assertRaisesRegex(ValueError, "outputs probabilities.*from_logits=False"):
            select_model([probabilities], "snd", target=target)
        picked = select_model([probabilities], "snd", target=target, from_logits=False)
        self.assertAllClose(
            picked["scores"]["0"],
            soft_neighborhood_density(probabilities.predict(target, verbose=0), from_logits=False),
        )

    def test_one_fixed_feature_model(self):
        rng = np.random.default_rng(0)
        model = _Model(rng.normal(size=(2, 2)))
        kwargs = dict(
            target=rng.normal(size=(8, 2)),
            source_validation=(rng.normal(size=(6, 2)), rng.integers(0, 2, 6)),
        )
        fixed = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        by_model = select_model([model], "reverse_validation", features=fixed, **kwargs)
        by_callable = select_model(
            [model], "reverse_validation", features=lambda m: fixed, **kwargs
        )
        self.assertEqual(by_model["scores"], by_callable["scores"])

    def test_missing_feature_extractor_raises(self):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        with self.assertRaisesRegex(ValueError, "no `feature_extractor`"):
            select_model([model], "reverse_validation", target=np.zeros((4, 2)),
                         source_validation=(np.zeros((4, 2)), np.zeros(4, int)))
        picked = select_model([model], "reverse_validation", target=np.random.rand(8, 2),
                              source_validation=(np.zeros((4, 2)), np.zeros(4, int)),
                              features=lambda m: m)
        self.assertIn("0", picked["scores"])

    @parameterized.named_parameters(
        ("dev_lengths", lambda: dev_risk(np.ones(3), np.ones(4)), "same length"),
        ("dev_negative", lambda: dev_risk(np.ones(3), -np.ones(3)), "non-negative"),
        ("snd_temperature", lambda: soft_neighborhood_density(np.zeros((4, 2)), 0), "`temperature`"),
        ("snd_probs", lambda: soft_neighborhood_density(np.ones((4, 2)), from_logits=False), "probabilities"),
        ("iw_width", lambda: importance_weights(np.zeros((4, 2)), np.zeros((4, 3)), np.zeros((1, 2))), "same feature width"),
        ("rv_labels", lambda: reverse_validation_accuracy(np.zeros((4, 2)), np.zeros((4, 2)), np.zeros((3, 2)), np.zeros(2, int)), "one per"),
    )
    def test_function_bad_inputs_raise(self, call, message):
        with self.assertRaisesRegex(ValueError, message):
            call()
