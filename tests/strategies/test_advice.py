import numpy as np
from absl.testing import parameterized

from keras_transfer.strategies import StrategyAdvice
from keras_transfer.strategies import domain_similarity
from keras_transfer.strategies import recommend_strategy
from tests.testing import TestCase


class RecommendStrategyTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("small_high", 500, 0.8, "feature_extraction"),
        ("small_low", 500, 0.2, "gradual_unfreezing"),
        ("large_high", 50000, 0.8, "fine_tuning"),
        ("large_low", 50000, 0.2, "from_scratch"),
        ("at_size_threshold", 1000, 0.5, "fine_tuning"),
        ("just_below", 999, 0.4999, "gradual_unfreezing"),
    )
    def test_table(self, n_target, similarity, expected):
        advice = recommend_strategy(n_target, similarity)
        self.assertIsInstance(advice, StrategyAdvice)
        self.assertEqual(advice.strategy, expected)
        self.assertIn(str(n_target), advice.reason)
        self.assertEqual(advice.similarity, similarity)

    def test_n_classes_scales_size_threshold(self):
        self.assertEqual(recommend_strategy(1500, 0.9).strategy, "fine_tuning")
        advice = recommend_strategy(1500, 0.9, n_classes=20)
        self.assertEqual(advice.size_threshold, 2000)
        self.assertEqual(advice.strategy, "feature_extraction")
        advice = recommend_strategy(1500, 0.9, size_threshold=100)
        self.assertEqual(advice.size, "large")

    @parameterized.named_parameters(
        ("separable", 2.0, 0.0),
        ("chance", 0.0, 1.0),
        ("halfway", 1.0, 0.5),
        ("noise_below_zero", -0.1, 1.0),
    )
    def test_report_maps_proxy_a_distance(self, pad, expected):
        advice = recommend_strategy(100, {"proxy_a_distance": pad, "mmd": 0.1})
        self.assertAllClose(advice.similarity, expected)

    @parameterized.named_parameters(
        ("near", 0.9, "source_only"),
        ("far", 0.1, "cdan"),
    )
    def test_unlabelled_target(self, similarity, first_alternative):
        advice = recommend_strategy(0, similarity)
        self.assertEqual(advice.strategy, "domain_adaptation")
        self.assertEqual(advice.size, "none")
        self.assertEqual(advice.alternatives[0], first_alternative)
        self.assertIn("select_model", advice.reason)

    def test_unlabelled_target_from_report(self):
        rng = np.random.default_rng(0)
        report = domain_similarity(rng.normal(size=(100, 4)), rng.normal(loc=3.0, size=(80, 4)))
        advice = recommend_strategy(0, report)
        self.assertEqual(advice.strategy, "domain_adaptation")
        self.assertLess(advice.similarity, 0.1)

    def test_real_domain_similarity_report(self):
        rng = np.random.default_rng(0)
        a = rng.normal(size=(200, 8))
        same = rng.normal(size=(200, 8))
        shifted = rng.normal(loc=3.0, size=(200, 8))
        near = recommend_strategy(300, domain_similarity(a, same))
        far = recommend_strategy(300, domain_similarity(a, shifted))
        self.assertGreater(near.similarity, 0.7)
        self.assertEqual(near.strategy, "feature_extraction")
        self.assertLess(far.similarity, 0.1)
        self.assertEqual(far.strategy, "gradual_unfreezing")

    @parameterized.named_parameters(
        ("negative_n_message", {"n_target": -1, "similarity": 0.5}, "`n_target` must be a non-negative integer.*n_target=-1"),
        ("negative_n", {"n_target": -3, "similarity": 0.5}, "n_target=-3"),
        ("float_n", {"n_target": 10.5, "similarity": 0.5}, "n_target=10.5"),
        ("above_one", {"n_target": 10, "similarity": 1.5}, "`similarity` must be in \\[0, 1\\].*similarity=1.5"),
        ("negative_sim", {"n_target": 10, "similarity": -0.1}, "similarity=-0.1"),
        ("nan_sim", {"n_target": 10, "similarity": float("nan")}, "similarity=nan"),
        ("string_sim", {"n_target": 10, "similarity": "high"}, "similarity='high'"),
        ("bad_report", {"n_target": 10, "similarity": {"mmd": 0.1}}, "proxy_a_distance.*keys \\['mmd'\\]"),
        ("bad_threshold", {"n_target": 10, "similarity": 0.5, "similarity_threshold": 1.0}, "similarity_threshold=1.0"),
        ("bad_classes", {"n_target": 10, "similarity": 0.5, "n_classes": 0}, "n_classes=0"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            recommend_strategy(**kwargs)
