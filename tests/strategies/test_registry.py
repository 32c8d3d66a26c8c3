from absl.testing import parameterized

from keras_transfer import strategies
from keras_transfer.strategies import registry
from tests.testing import TestCase


class RegistryTest(TestCase):
    def test_built_in_strategies(self):
        self.assertIn("feature_extraction", strategies.available_strategies())
        self.assertIn("fine_tuning", strategies.available_strategies())
        self.assertIs(
            strategies.get_strategy("feature_extraction"),
            strategies.fit_feature_extraction,
        )
        self.assertIs(strategies.get_strategy("fine_tuning"), strategies.fine_tune)

    @parameterized.named_parameters(("unknown", "lora_typo"), ("not_a_string", ["x"]))
    def test_unknown_strategy_raises(self, name):
        with self.assertRaisesRegex(
            ValueError, "Unknown `strategy`.*Available strategies: .*feature_extraction"
        ):
            strategies.get_strategy(name)

    def test_register_and_extend(self):
        try:

            @strategies.register_strategy("probe_for_test")
            def probe(base, head, x, y=None, **kwargs):
                return "ran"

            self.assertIs(strategies.get_strategy("probe_for_test"), probe)
            with self.assertRaisesRegex(ValueError, "already registered"):
                strategies.register_strategy("probe_for_test", lambda *a: None)
        finally:
            registry._STRATEGIES.pop("probe_for_test", None)

    @parameterized.named_parameters(
        ("upper", "LoRA"), ("dash", "gradual-unfreezing"), ("not_a_string", 3)
    )
    def test_invalid_name_raises(self, name):
        with self.assertRaisesRegex(ValueError, "`name` must be a lower-case identifier"):
            strategies.register_strategy(name, lambda *a: None)

    def test_not_callable_raises(self):
        with self.assertRaisesRegex(ValueError, "`strategy` must be callable"):
            strategies.register_strategy("not_callable", 3)
