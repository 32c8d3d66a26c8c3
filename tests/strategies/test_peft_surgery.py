"""PEFT surgery on real Keras models: compiled and used models, layers at
any depth, default targets, layers that stay trainable, JAX buffers."""

import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer import _walk
from keras_transfer.layers import Adapter
from keras_transfer.layers import LoRAConv2D
from keras_transfer.layers import LoRADense
from keras_transfer.layers import LoRAEinsumDense
from keras_transfer.strategies import InferenceMode
from keras_transfer.strategies import add_adapters
from keras_transfer.strategies import apply_lora
from keras_transfer.strategies import build_classifier
from keras_transfer.strategies import load_peft_weights
from keras_transfer.strategies import merge_lora
from keras_transfer.strategies import save_peft_weights
from tests.testing import TestCase

numpy = keras.ops.convert_to_numpy


@keras.saving.register_keras_serializable(package="keras_transfer_tests")
class _SurgeryBlock(keras.layers.Layer):
    """A subclassed block: surgery inside it happens in place."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(5, name="inner")

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, x):
        return self.inner(x)


def _functional(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, activation="relu", name="d1")(inputs)
    outputs = keras.layers.Dense(3, name="d2")(h)
    return keras.Model(inputs, outputs, name="plain")


def _block_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = _SurgeryBlock(name="block")(inputs)
    outputs = keras.layers.Dense(3, name="out")(h)
    return keras.Model(inputs, outputs, name="blocky")


def _data(n=8):
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(n, 6)).astype("float32"),
        rng.normal(size=(n, 3)).astype("float32"),
    )


def _set_lora_b(model, value=0.3):
    for v in model.weights:
        if "lora_kernel_b" in v.path:
            v.assign(np.full(tuple(v.shape), value, "float32"))


def _lora_values(model):
    return [numpy(v).copy() for v in model.weights if "lora_kernel" in v.path]


BUILDERS = {"graph": _functional, "in_place": _block_model}
TARGETS = {"graph": "d1", "in_place": "inner"}


class ReadyAfterSurgeryTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("graph", "graph"), ("in_place", "in_place"))
    def test_compiled_used_model_predicts_and_trains_like_a_fresh_one(self, how):
        x, y = _data()
        model = BUILDERS[how]()
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        model.predict(x, verbose=0)
        trained = model.get_weights()

        keras.utils.set_random_seed(5)
        model, _ = apply_lora(model, lora_rank=2, targets=TARGETS[how])
        _set_lora_b(model)
        # predict sees the new layers (not a cached function of the old ones).
        self.assertAllClose(model.predict(x, verbose=0), model(x), atol=1e-5)
        # fit without a new compile trains the LoRA weights, as a fresh model
        # with the same weights, surgery and compile arguments does.
        self.assertTrue(model.compiled)
        self.assertEqual(int(model.optimizer.iterations), 2)
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)

        fresh = BUILDERS[how]()
        fresh.set_weights(trained)
        keras.utils.set_random_seed(5)
        fresh, _ = apply_lora(fresh, lora_rank=2, targets=TARGETS[how])
        _set_lora_b(fresh)
        fresh.compile(keras.optimizers.SGD(0.1), "mse")
        before = _lora_values(fresh)
        fresh.fit(x, y, epochs=1, batch_size=4, verbose=0)
        after = _lora_values(model)
        self.assertNotAllClose(after[0], before[0])
        for a, b in zip(after, _lora_values(fresh)):
            self.assertAllClose(a, b, atol=1e-6)
        self.assertAllClose(model.predict(x, verbose=0), fresh(x), atol=1e-5)

    def test_mixed_precision_schedule_and_step_count_carry_over(self):
        x, y = _data()
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6,))
        h = keras.layers.Dense(5, name="d1", dtype="mixed_float16")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, name="d2")(h))
        schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
        model.compile(
            keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(schedule)),
            "mse",
            metrics=["mae"],
        )
        model.fit(x, y, batch_size=4, verbose=0)
        new, _ = apply_lora(model, lora_rank=2, targets="d1", trainable_layers="d2")
        self.assertIsInstance(new.optimizer, keras.optimizers.LossScaleOptimizer)
        # The schedule continues from step 2, not from 0.
        self.assertEqual(int(new.optimizer.iterations), 2)
        history = new.fit(x, y, batch_size=4, epochs=2, verbose=0)
        self.assertEqual(int(new.optimizer.iterations), 6)
        self.assertIn("mae", history.history)
        self.assertEqual(
            sorted(v.path for v in new.trainable_weights),
            ["d1/lora_kernel_a", "d1/lora_kernel_b", "d2/bias", "d2/kernel"],
        )

    def test_adapters_on_used_model_and_merge_on_used_model(self):
        x, y = _data()
        model = _block_model()
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.fit(x, y, verbose=0)
        model.predict(x, verbose=0)
        model, _ = add_adapters(model, targets="inner", bottleneck=2)
        adapter = model.get_layer("block").inner.layers[1]
        adapter.weights[2].assign(np.ones(tuple(adapter.weights[2].shape)))
        self.assertAllClose(model.predict(x, verbose=0), model(x), atol=1e-5)
        up = numpy(adapter.weights[2]).copy()
        model.fit(x, y, verbose=0)
        self.assertNotAllClose(numpy(adapter.weights[2]), up)

        lora, _ = apply_lora(_functional(), lora_rank=2, targets="d1")
        lora.compile(keras.optimizers.SGD(0.1), "mse")
        _set_lora_b(lora)
        lora.fit(x, y, verbose=0)
        expected = lora.predict(x, verbose=0)
        merged, _ = merge_lora(lora)
        self.assertAllClose(merged.predict(x, verbose=0), expected, atol=1e-5)
        # Ready to train: the merged model is compiled like the LoRA one.
        merged.fit(x, y, verbose=0)

    def test_original_model_keeps_working_after_the_new_one_trains(self):
        # On JAX the LoRA base kernel shared its array with the original
        # Dense, and the jitted step donates (deletes) the arrays it trains:
        # "RuntimeError: Array has been deleted" on the original.
        x, y = _data()
        original = _functional()
        expected = numpy(original(x))
        lora, _ = apply_lora(original, lora_rank=2, targets=["d1", "d2"])
        lora.compile(keras.optimizers.SGD(0.1), "mse")
        lora.fit(x, y, verbose=0)
        self.assertAllClose(original.predict(x, verbose=0), expected, atol=1e-5)
        merged, _ = merge_lora(lora)
        merged.compile(keras.optimizers.SGD(0.1), "mse")
        merged.fit(x, y, verbose=0)
        # The LoRA model still runs (its base bias was shared with `merged`).
        lora.predict(x, verbose=0)
        self.assertAllClose(original.predict(x, verbose=0), expected, atol=1e-5)


class DefaultTargetsTest(TestCase):
    def test_dense_only_model(self):
        # Used to fail: "No layer ... matches target EinsumDense".
        model, changed = apply_lora(_functional(), lora_rank=2)
        self.assertEqual(changed, ["d1", "d2"])
        self.assertIsInstance(model.get_layer("d2"), LoRADense)

    def test_nothing_matched_raises(self):
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.LayerNormalization(name="norm")]
        )
        with self.assertRaisesRegex(ValueError, "No layer of model .* matches"):
            apply_lora(model, lora_rank=2)
        with self.assertRaisesRegex(ValueError, "matches target 'd9'"):
            apply_lora(_functional(), lora_rank=2, targets=[keras.layers.Dense, "d9"])


def _nested_sequential():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, name="s1"), keras.layers.Dense(4, name="s2")],
        name="inner_seq",
    )
    inputs = keras.Input((6,))
    wrapped = InferenceMode(inner, name="frozen_base")(inputs)
    outputs = keras.layers.Dense(3, name="top")(wrapped)
    return keras.Model(inputs, outputs)


class NestedTest(TestCase):
    def test_sequential_inside_inference_mode_inside_functional(self):
        model = _nested_sequential()
        x, _ = _data()
        expected = numpy(model(x))
        new, changed = apply_lora(model, lora_rank=2, targets=keras.layers.Dense)
        self.assertEqual(changed, ["frozen_base/inner_seq/s1", "frozen_base/inner_seq/s2", "top"])
        wrapper = new.get_layer("frozen_base")
        self.assertIsInstance(wrapper.layer.get_layer("s2"), LoRADense)
        self.assertAllClose(new(x), expected, atol=1e-6)
        self.assertLen(new.trainable_weights, 6)
        path = os.path.join(self.get_temp_dir(), "nested.keras")
        _set_lora_b(new)
        new.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded(x), new(x), atol=1e-6)
        self.assertLen(loaded.trainable_weights, 6)
        merged, changed = merge_lora(loaded)
        self.assertLen(changed, 3)
        self.assertFalse(
            [s for s in _walk.walk(merged) if isinstance(s.layer, LoRADense)]
        )
        self.assertAllClose(merged(x), new(x), atol=1e-5)

    def test_adapters_inside_nested_sequential(self):
        model = _nested_sequential()
        x, _ = _data()
        expected = numpy(model(x))
        new, changed = add_adapters(
            model, targets="s1$", bottleneck=2, trainable_layers="^top$"
        )
        self.assertEqual(changed, ["frozen_base/inner_seq/s1"])
        block = new.get_layer("frozen_base").layer.layers[0]
        self.assertIsInstance(block.layers[1], Adapter)
        self.assertAllClose(new(x), expected, atol=1e-6)
        # The adapter (4 weights) and the head (2) train.
        self.assertLen(new.trainable_weights, 6)

    def test_build_classifier_efficientnet_lite0(self):
        from keras_transfer.backbones import efficientnet_lite0

        base = efficientnet_lite0(
            weights=None, include_top=False, pooling="avg", input_shape=(32, 32, 3)
        )
        model = build_classifier(base, num_classes=3)
        x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        expected = numpy(model(x))
        new, changed = apply_lora(
            model, lora_rank=2, trainable_layers=["^head$"]
        )
        convs = [p for p in changed if "conv" in p]
        self.assertGreater(len(convs), 10)
        self.assertFalse([p for p in changed if p.startswith("head")])
        # Eager calls: compiling these graphs would cost more than the test.
        self.assertAllClose(new(x), expected, atol=1e-4)
        lora_weights = [v for v in new.trainable_weights if "lora_kernel" in v.path]
        self.assertLen(lora_weights, 2 * len(changed))
        # The head's Dense trains whole: kernel and bias.
        self.assertLen(new.trainable_weights, 2 * len(changed) + 2)


class KerasHubTest(TestCase):
    def test_default_targets_inside_backbone_in_a_classifier(self):
        import keras_hub

        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8,
            intermediate_dim=16, max_sequence_length=8, dropout=0.0,
        )
        inputs = {
            k: keras.Input((8,), dtype="int32", name=k)
            for k in ("token_ids", "segment_ids", "padding_mask")
        }
        outputs = keras.layers.Dense(2, name="head")(backbone(inputs)["pooled_output"])
        model = keras.Model(inputs, outputs)
        rng = np.random.default_rng(0)
        x = {
            "token_ids": rng.integers(0, 30, (2, 8)).astype("int32"),
            "segment_ids": np.zeros((2, 8), "int32"),
            "padding_mask": np.ones((2, 8), "int32"),
        }
        expected = numpy(model(x))
        new, changed = apply_lora(model, lora_rank=2, trainable_layers="^head$")
        # q, k, v, attention output, two feed-forward Dense, the pooler
        # (a node of the backbone's own graph); not the head, which trains
        # whole.
        self.assertIn(f"{backbone.name}/pooled_dense", changed)
        self.assertLen(changed, 6 + 1)
        self.assertIsInstance(backbone.get_layer("pooled_dense"), LoRADense)
        self.assertIsInstance(
            backbone.get_layer("transformer_layer_0")._self_attention_layer._key_dense,
            LoRAEinsumDense,
        )
        self.assertAllClose(new(x), expected, atol=1e-5)
        head = new.get_layer("head")
        self.assertIs(type(head), keras.layers.Dense)
        self.assertTrue(head.kernel.trainable)
        _set_lora_b(new, 0.05)
        path = os.path.join(self.get_temp_dir(), "hub.keras")
        new.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded(x), new(x), atol=1e-5)
        self.assertEqual(
            sorted(v.path for v in loaded.trainable_weights),
            sorted(v.path for v in new.trainable_weights),
        )


class TrainableLayersTest(TestCase):
    def test_adapters_keep_the_head_trainable_and_save_it(self):
        model = _functional()
        new, _ = add_adapters(model, targets="^d1$", bottleneck=2, trainable_layers=["^d2$"])
        head = new.get_layer("d2")
        self.assertTrue(head.trainable)
        trainable = sorted(v.path for v in new.trainable_weights)
        self.assertEqual(len(trainable), 4 + 2)
        self.assertIn(head.kernel.path, trainable)
        # Saved and loaded with the adapter weights.
        rng = np.random.default_rng(2)
        for v in new.trainable_weights:
            v.assign(rng.normal(size=tuple(v.shape)).astype("float32"))
        path = os.path.join(self.get_temp_dir(), "peft.npz")
        save_peft_weights(new, path)
        with np.load(path) as data:
            self.assertLen(data.files, 6)
        x, _ = _data()
        fresh, _ = add_adapters(_functional(seed=3), targets="^d1$", bottleneck=2, trainable_layers=["^d2$"])
        fresh.get_layer("d1_with_adapter").layers[0].set_weights(
            new.get_layer("d1_with_adapter").layers[0].get_weights()
        )
        load_peft_weights(fresh, path)
        self.assertAllClose(fresh(x), new(x), atol=1e-6)
        # Without the same `trainable_layers`, the file does not fit.
        other, _ = add_adapters(_functional(), targets="^d1$", bottleneck=2)
        with self.assertRaisesRegex(ValueError, "do not fit"):
            load_peft_weights(other, path)

    def test_freezing_a_trainable_head_warns(self):
        with self.assertWarnsRegex(
            UserWarning, r"froze the output layers \['d2'\].*trainable_layers=\['\^d2\$'\]"
        ):
            add_adapters(_functional(), targets="^d1$", bottleneck=2)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            add_adapters(_functional(), targets="^d1$", bottleneck=2, trainable_layers="^d2$")
            apply_lora(_functional(), lora_rank=2)

    def test_merge_restores_trainable_state(self):
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(5, name="a"),
                keras.layers.BatchNormalization(name="bn"),
                keras.layers.Dense(3, name="b"),
            ]
        )
        model.get_layer("bn").trainable = False
        before = {v.path: v.trainable for v in model.weights}
        lora, _ = apply_lora(model, lora_rank=2, targets="^a$")
        self.assertFalse(lora.get_layer("b").trainable)
        merged, _ = merge_lora(lora)
        self.assertEqual({v.path: v.trainable for v in merged.weights}, before)
        self.assertEqual(sorted(before), sorted(v.path for v in merged.weights))
        self.assertTrue(merged.get_layer("a").trainable)
        self.assertFalse(merged.get_layer("bn").trainable)
        # A frozen base stays frozen after merging.
        frozen = _functional()
        frozen.get_layer("d1").trainable = False
        lora, _ = apply_lora(frozen, lora_rank=2)
        merged, _ = merge_lora(lora)
        self.assertFalse(merged.get_layer("d1").trainable)
        self.assertTrue(merged.get_layer("d2").trainable)

    def test_bad_trainable_layers_and_rank_raise_before_any_change(self):
        model = _functional()
        with self.assertRaisesRegex(
            ValueError, "`trainable_layers` entry 'nohead' matches no layer"
        ):
            apply_lora(model, lora_rank=2, trainable_layers=["nohead"])
        with self.assertRaisesRegex(ValueError, "trainable_layers=3"):
            add_adapters(model, targets="d1", bottleneck=2, trainable_layers=3)
        # d2 allows rank <= 3: the error names the layer, d1 is untouched.
        with self.assertRaisesRegex(ValueError, "At layer 'd2'.*lora_rank=4"):
            apply_lora(model, lora_rank=4)
        self.assertIs(type(model.get_layer("d1")), keras.layers.Dense)
        self.assertTrue(model.get_layer("d1").trainable)


# Small inputs: build + one eager call each, LoRA on every Conv2D/Dense.
APPLICATIONS = [
    ("resnet50", "ResNet50"),
    ("mobilenet_v3_small", "MobileNetV3Small"),
    ("efficientnet_v2_b0", "EfficientNetV2B0"),
    ("convnext_tiny", "ConvNeXtTiny"),
]


@pytest.mark.large
class KerasApplicationsTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*APPLICATIONS)
    def test_apply_lora_everywhere(self, name):
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, name)(
            weights=None, input_shape=(32, 32, 3), classes=4
        )
        supported = (keras.layers.Dense, keras.layers.Conv2D)
        # ConvNeXt's depthwise convolutions are grouped Conv2D: skipped.
        # ConvNeXt's downsampling blocks are nested Sequential models.
        layers = [site.layer for site in _walk.walk(model)]
        expected_count = sum(
            type(l) in supported and getattr(l, "groups", 1) == 1
            for l in layers
        )
        x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
        expected = numpy(model(x))
        new, changed = apply_lora(model, lora_rank=1)
        self.assertLen(changed, expected_count)
        lora = [
            site.layer
            for site in _walk.walk(new)
            if isinstance(site.layer, (LoRADense, LoRAConv2D))
        ]
        self.assertLen(lora, expected_count)
        # Eager calls: compiling these graphs would cost more than the test.
        self.assertAllClose(new(x), expected, atol=1e-4)
