"""Several named LoRA adapters on one model (`strategies/peft/named.py`)."""

import os
from unittest import mock

import keras
import numpy as np

from keras_transfer.layers import Adapter
from keras_transfer.layers import LoRADense
from keras_transfer.layers import LoRAEinsumDense
from keras_transfer.strategies import active_adapters
from keras_transfer.strategies import add_adapters
from keras_transfer.strategies import add_lora_adapter
from keras_transfer.strategies import add_weighted_adapter
from keras_transfer.strategies import apply_lora
from keras_transfer.strategies import delete_adapter
from keras_transfer.strategies import disable_adapters
from keras_transfer.strategies import list_adapters
from keras_transfer.strategies import load_peft_weights
from keras_transfer.strategies import merge_lora
from keras_transfer.strategies import save_peft_weights
from keras_transfer.strategies import set_adapter
from keras_transfer.strategies import train_adapter
from tests.testing import TestCase

X = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
Y = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")


def _nested(seed=0):
    """`Input -> inner Sequential(d1, d2) -> head`: LoRA inside a nested
    model, the head kept trainable without LoRA."""
    keras.utils.set_random_seed(seed)
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, name="d1"),
         keras.layers.Dense(4, name="d2")],
        name="inner",
    )
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, name="head")(inner(inputs))
    return keras.Model(inputs, outputs, name="outer")


def _lora_model(seed=0, compiled=False):
    model, _ = apply_lora(
        _nested(seed), lora_rank=2, lora_alpha=4, trainable_layers=["^head$"]
    )
    if compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _loras(model):
    inner = model.get_layer("inner")
    return [inner.get_layer("d1"), inner.get_layer("d2")]


def _randomize(layer, seed):
    rng = np.random.default_rng(seed)
    for name in layer.adapter_names:
        for v in layer.adapter_variables(name):
            v.assign(rng.normal(size=tuple(v.shape)).astype("float32") * 0.5)


def _np(v):
    return keras.ops.convert_to_numpy(v)


def _reference(model, x, weights):
    """NumPy forward pass: each LoRA layer is
    `x W + b + sum_i g_i s_i x A_i B_i` with `g` from `weights`."""
    h = x
    for layer in _loras(model):
        out = h @ _np(layer.base_layer.kernel) + _np(layer.base_layer.bias)
        for name, g in weights.items():
            a, b = (_np(v) for v in layer.adapter_variables(name))
            spec = layer.adapter_spec(name)
            out = out + g * spec["lora_alpha"] / spec["lora_rank"] * (h @ a @ b)
        h = out
    head = model.get_layer("head")
    return h @ _np(head.kernel) + _np(head.bias)


class NamedAdaptersTest(TestCase):
    def _assert_active(self, model, expected):
        # The weights are float32 variables.
        got = active_adapters(model)
        self.assertEqual(list(got), list(expected))
        self.assertAllClose(list(got.values()), list(expected.values()), atol=1e-7)

    def test_add_activate_mix_disable_delete_against_numpy(self):
        model = _lora_model()
        self.assertEqual(list_adapters(model), ["default"])
        self._assert_active(model, {"default": 1.0})
        add_lora_adapter(model, "b", lora_rank=3, lora_alpha=6)
        self.assertEqual(list_adapters(model), ["default", "b"])
        # The new adapter is the one active (weight 1) and training.
        self._assert_active(model, {"default": 0.0, "b": 1.0})
        for i, layer in enumerate(_loras(model)):
            _randomize(layer, i)
        x = X
        for weights in (
            {"default": 1.0},
            {"b": 1.0},
            {"default": 0.3, "b": -0.7},
        ):
            set_adapter(model, list(weights), list(weights.values()))
            self.assertAllClose(
                model(x), _reference(model, x, weights), atol=1e-5
            )
        base = _reference(model, x, {})
        with disable_adapters(model):
            # Exactly the base model (same float ops as a plain Dense).
            plain = x
            for layer in _loras(model):
                plain = _np(layer.base_layer(plain))
            plain = _np(model.get_layer("head")(plain))
            np.testing.assert_array_equal(_np(model(x)), plain)
            self.assertAllClose(model(x), base, atol=1e-5)
            self._assert_active(model, {"default": 0.0, "b": 0.0})
        # Restored on exit.
        self._assert_active(model, {"default": 0.3, "b": -0.7})
        delete_adapter(model, "b")
        self.assertEqual(list_adapters(model), ["default"])
        self.assertLen(_loras(model)[0].weights, 5)  # A, B, g, W, b
        set_adapter(model, "default", [0.5])
        self.assertAllClose(
            model(x), _reference(model, x, {"default": 0.5}), atol=1e-5
        )

    def test_switching_does_not_retrace_compiled_steps(self):
        model = _lora_model(compiled=True)
        add_lora_adapter(model, "b")
        for i, layer in enumerate(_loras(model)):
            _randomize(layer, i)
        traces = []
        original = LoRADense.call

        def counting(self, *args, **kwargs):
            traces.append(self.name)
            return original(self, *args, **kwargs)

        with mock.patch.object(LoRADense, "call", counting):
            first = model.predict(X, batch_size=8, verbose=0)
            after_predict = len(traces)
            self.assertGreater(after_predict, 0)
            outputs = {}
            for weights in ({"default": 1.0}, {"b": 1.0}, {"default": 0.5, "b": 0.5}):
                set_adapter(model, list(weights), list(weights.values()))
                outputs[tuple(weights.items())] = model.predict(X, batch_size=8, verbose=0)
                # The compiled step reads the new weights...
                self.assertAllClose(
                    outputs[tuple(weights.items())],
                    _reference(model, X, weights),
                    atol=1e-5,
                )
            with disable_adapters(model):
                self.assertAllClose(
                    model.predict(X, batch_size=8, verbose=0),
                    _reference(model, X, {}),
                    atol=1e-5,
                )
            # ...without being traced again.
            self.assertEqual(len(traces), after_predict)
            self.assertAllClose(first, _reference(model, X, {"b": 1.0}), atol=1e-5)

            set_adapter(model, "b")
            model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
            after_fit = len(traces)
            set_adapter(model, ["default", "b"], [1.0, 1.0])
            model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
            with disable_adapters(model):
                model.evaluate(X, Y, batch_size=4, verbose=0)
                after_evaluate = len(traces)
            set_adapter(model, "b")
            model.evaluate(X, Y, batch_size=4, verbose=0)
            self.assertEqual(len(traces), after_evaluate)
            self.assertEqual(after_evaluate - after_fit, len(traces) - after_fit)
        # fit traced once for both calls: the evaluate traces are the rest.
        self.assertGreater(after_fit, after_predict)

    def test_new_adapter_trains_alone_on_a_compiled_model(self):
        model = _lora_model(compiled=True)
        model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
        add_lora_adapter(model, "b")
        d1, d2 = _loras(model)
        trainable = {v.path for v in model.trainable_weights}
        expected = {
            v.path for layer in (d1, d2) for v in layer.adapter_variables("b")
        } | {v.path for v in model.get_layer("head").weights}
        self.assertEqual(trainable, expected)
        default = [_np(v) for v in d1.adapter_variables("default")]
        kernel = _np(d1.base_layer.kernel)
        before_b = _np(d1.adapter_variables("b")[1])
        model.fit(X, Y, batch_size=4, epochs=2, verbose=0)
        for v, old in zip(d1.adapter_variables("default"), default):
            np.testing.assert_array_equal(_np(v), old)
        np.testing.assert_array_equal(_np(d1.base_layer.kernel), kernel)
        self.assertGreater(np.abs(_np(d1.adapter_variables("b")[1]) - before_b).max(), 0)
        # Back to training the default adapter.
        train_adapter(model, "default")
        self.assertIn(d1.lora_kernel_a.path, {v.path for v in model.trainable_weights})
        self.assertNotIn(
            d1.adapter_variables("b")[0].path, {v.path for v in model.trainable_weights}
        )
        model.fit(X, Y, batch_size=4, epochs=1, verbose=0)

    def test_first_disable_keeps_the_optimizer_state(self):
        model = _lora_model()
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
        moments = [_np(v) for v in model.optimizer.variables]
        with disable_adapters(model):  # creates the adapter weights `g`
            self.assertAllClose(
                model.predict(X, batch_size=8, verbose=0),
                _reference(model, X, {}),
                atol=1e-5,
            )
        # Same optimizer, same moments and step count: training continues.
        for v, old in zip(model.optimizer.variables, moments):
            np.testing.assert_array_equal(_np(v), old)
        model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
        self.assertEqual(int(_np(model.optimizer.iterations)), 4)
        self.assertAllClose(model(X), _reference(model, X, {"default": 1.0}), atol=1e-5)

    def test_weighted_adapter_and_merge_are_exact(self):
        model = _lora_model()
        add_lora_adapter(model, "b", lora_rank=1)
        for i, layer in enumerate(_loras(model)):
            _randomize(layer, i + 5)
        set_adapter(model, ["default", "b"], [0.25, 2.0])
        mixed = _np(model(X))
        add_weighted_adapter(model, ["default", "b"], [0.25, 2.0], "mix")
        self._assert_active(model, {"default": 0.0, "b": 0.0, "mix": 1.0})
        self.assertEqual(_loras(model)[0].adapter_spec("mix")["lora_rank"], 3)
        self.assertAllClose(model(X), mixed, atol=1e-5)
        merged, changed = merge_lora(model)
        self.assertLen(changed, 2)
        self.assertAllClose(merged(X), mixed, atol=1e-5)

    def test_whole_model_save_load_keeps_adapters_and_active_one(self):
        model = _lora_model(compiled=True)
        add_lora_adapter(model, "b", lora_rank=3)
        for i, layer in enumerate(_loras(model)):
            _randomize(layer, i)
        set_adapter(model, ["default", "b"], [0.5, 1.5])
        path = os.path.join(self.get_temp_dir(), "named.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertEqual(list_adapters(loaded), ["default", "b"])
        self._assert_active(loaded, {"default": 0.5, "b": 1.5})
        self.assertAllClose(loaded(X), model(X), atol=1e-6)
        # (A nested model's layers load under its name scope: compare the
        # last two parts of the paths.)
        self.assertEqual(
            sorted(v.path.split("/")[-2:] for v in loaded.trainable_weights),
            sorted(v.path.split("/")[-2:] for v in model.trainable_weights),
        )
        # Training continues, switching still works.
        loaded.fit(X, Y, batch_size=4, epochs=1, verbose=0)
        with disable_adapters(loaded):
            self.assertAllClose(loaded(X), _reference(loaded, X, {}), atol=1e-5)

    def test_one_adapter_saved_and_loaded_alone(self):
        model = _lora_model()
        add_lora_adapter(model, "b", lora_rank=3)
        for i, layer in enumerate(_loras(model)):
            _randomize(layer, i)
        path = os.path.join(self.get_temp_dir(), "b.npz")
        save_peft_weights(model, path, adapter_name="b")
        with np.load(path) as data:
            # A and B of two layers, and the settings.
            self.assertLen(data.files, 5)
        other = _lora_model()  # same base weights (same seed), no adapter "b"
        load_peft_weights(other, path, adapter_name="reviews")
        self.assertEqual(list_adapters(other), ["default", "reviews"])
        self._assert_active(other, {"default": 1.0, "reviews": 0.0})
        set_adapter(model, "b")
        set_adapter(other, "reviews")
        self.assertAllClose(other(X), model(X), atol=1e-6)
        # Into an existing adapter; a whole-model file is refused there.
        load_peft_weights(other, path, adapter_name="reviews")
        whole = os.path.join(self.get_temp_dir(), "all.npz")
        save_peft_weights(model, whole)
        with self.assertRaisesRegex(ValueError, "saved without `adapter_name`"):
            load_peft_weights(other, whole, adapter_name="reviews")
        with self.assertRaisesRegex(ValueError, "single adapter"):
            load_peft_weights(other, path)
        # The whole-model file holds every adapter and weight; a fresh copy
        # without adapter "b" is told to add it (not only "apply the same
        # `apply_lora`", which it did).
        copy = _lora_model()
        with self.assertRaisesRegex(ValueError, "add_lora_adapter"):
            load_peft_weights(copy, whole)
        add_lora_adapter(copy, "b", lora_rank=3)
        load_peft_weights(copy, whole)
        self.assertAllClose(copy(X), model(X), atol=1e-6)

    def test_bad_input_names_argument_and_value(self):
        model = _lora_model()
        add_lora_adapter(model, "b")
        with self.assertRaisesRegex(ValueError, r"already has an adapter named 'b'.*adapter_name='b'"):
            add_lora_adapter(model, "b")
        with self.assertRaisesRegex(ValueError, r"adapter_name='default'"):
            add_lora_adapter(model, "default")
        with self.assertRaisesRegex(ValueError, r"identifier.*adapter_name='a b'"):
            add_lora_adapter(model, "a b")
        with self.assertRaisesRegex(ValueError, r"Unknown adapter 'c'.*adapters=\['b', 'c'\]"):
            set_adapter(model, ["b", "c"])
        with self.assertRaisesRegex(ValueError, r"one number per adapter.*weights=\[1.0\]"):
            set_adapter(model, ["default", "b"], [1.0])
        with self.assertRaisesRegex(ValueError, r"finite.*weights=\[1.0, nan\]"):
            set_adapter(model, ["default", "b"], [1.0, float("nan")])
        with self.assertRaisesRegex(ValueError, "once"):
            set_adapter(model, ["b", "b"])
        with self.assertRaisesRegex(ValueError, r"Unknown adapter 'x'.*adapter_name='x'"):
            delete_adapter(model, "x")
        with self.assertRaisesRegex(ValueError, "cannot be deleted"):
            delete_adapter(model, "default")
        with self.assertRaisesRegex(ValueError, r"lora_rank=9"):
            add_lora_adapter(model, "big", lora_rank=9)
        with self.assertRaisesRegex(ValueError, r"weights=\[1.0\]"):
            add_weighted_adapter(model, ["default", "b"], [1.0], "mix")
        with self.assertRaisesRegex(ValueError, "no LoRA layer"):
            set_adapter(_nested(), "default")
        # Nothing changed by the failed calls.
        self.assertEqual(list_adapters(model), ["default", "b"])
        self._assert_active(model, {"default": 0.0, "b": 1.0})

    def test_keras_hub_backbone_save_load_keeps_adapters(self):
        import keras_hub

        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8,
            intermediate_dim=16, max_sequence_length=8,
        )
        backbone, _ = apply_lora(
            backbone, lora_rank=2, targets=r"self_attention_layer/(query|value)$"
        )
        add_lora_adapter(backbone, "b")
        rng = np.random.default_rng(0)
        for v in backbone.weights:
            if "lora_kernel" in v.path:
                v.assign(rng.normal(size=tuple(v.shape)) * 0.3)
        set_adapter(backbone, ["default", "b"], [1.0, -0.5])
        x = {
            "token_ids": rng.integers(0, 30, (2, 8)),
            "segment_ids": np.zeros((2, 8), "int32"),
            "padding_mask": np.ones((2, 8), "bool"),
        }
        path = os.path.join(self.get_temp_dir(), "bert.keras")
        backbone.save(path)
        loaded = keras.models.load_model(path)
        value = loaded.get_layer("transformer_layer_0")._self_attention_layer._value_dense
        self.assertIsInstance(value, LoRAEinsumDense)
        self.assertEqual(list_adapters(loaded), ["default", "b"])
        self._assert_active(loaded, {"default": 1.0, "b": -0.5})
        self.assertAllClose(
            loaded(x)["sequence_output"], backbone(x)["sequence_output"], atol=1e-5
        )
        with disable_adapters(loaded):
            plain = loaded(x)["sequence_output"]
        with disable_adapters(backbone):
            self.assertAllClose(plain, backbone(x)["sequence_output"], atol=1e-6)


class NamedAdaptersOnOtherBasesTest(TestCase):
    def test_dora_default_and_int8_base(self):
        # DoRA default adapter: (1, 0) is the DoRA model, (0, 0) the base.
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d")])
        base_out = _np(model(X))
        model, _ = apply_lora(model, lora_rank=2, use_dora=True)
        layer = model.get_layer("d")
        rng = np.random.default_rng(0)
        for v in layer.adapter_variables("default"):
            v.assign(rng.normal(size=tuple(v.shape)).astype("float32"))
        dora_out = _np(model(X))
        add_lora_adapter(model, "b")
        layer.adapter_variables("b")[1].assign(rng.normal(size=(2, 4)).astype("float32"))
        set_adapter(model, ["default", "b"], [1.0, 0.0])
        self.assertAllClose(model(X), dora_out, atol=1e-5)
        with disable_adapters(model):
            np.testing.assert_array_equal(_np(model(X)), base_out)
        set_adapter(model, ["default", "b"], [0.5, 1.0])
        a, b = (_np(v) for v in layer.adapter_variables("b"))
        expected = base_out + 0.5 * (dora_out - base_out) + X @ a @ b
        self.assertAllClose(model(X), expected, atol=1e-4)
        merged, _ = merge_lora(model)
        self.assertAllClose(merged(X), expected, atol=1e-4)

        # int8 quantized base: the adapters add to Keras's int8 Dense.
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d")])
        model.quantize("int8")
        int8_out = _np(model(X))
        model, _ = apply_lora(model, lora_rank=2)
        add_lora_adapter(model, "b", lora_rank=1)
        layer = model.get_layer("d")
        for v in layer.adapter_variables("b"):
            v.assign(rng.normal(size=tuple(v.shape)).astype("float32"))
        with disable_adapters(model):
            np.testing.assert_array_equal(_np(model(X)), int8_out)
        set_adapter(model, "b", [2.0])
        a, b = (_np(v) for v in layer.adapter_variables("b"))
        self.assertAllClose(model(X), int8_out + 2.0 * X @ a @ b, atol=1e-4)

    def test_mixed_precision(self):
        keras.config.set_dtype_policy("mixed_float16")
        try:
            model = _lora_model()
            add_lora_adapter(model, "b")
            layer = _loras(model)[0]
            self.assertEqual(layer.adapter_variables("b")[0].dtype, "float32")
            set_adapter(model, ["default", "b"], [1.0, 0.5])
            out = model(X)
            self.assertEqual(keras.backend.standardize_dtype(out.dtype), "float16")
            with disable_adapters(model):
                self.assertAllClose(model(X), _reference(model, X, {}), atol=1e-2)
        finally:
            keras.config.set_dtype_policy("float32")

    def test_conv2d_mix_and_merge(self):
        keras.utils.set_random_seed(2)
        model = keras.Sequential(
            [keras.Input((5, 5, 3)), keras.layers.Conv2D(4, 3, name="conv")]
        )
        images = np.random.default_rng(2).normal(size=(2, 5, 5, 3)).astype("float32")
        base_out = _np(model(images))
        model, _ = apply_lora(model, lora_rank=2)
        add_lora_adapter(model, "b", lora_rank=1, lora_alpha=3)
        layer = model.get_layer("conv")
        _randomize(layer, 3)
        set_adapter(model, ["default", "b"], [1.0, 0.0])
        only_default = _np(model(images)) - base_out
        set_adapter(model, ["default", "b"], [0.0, 1.0])
        only_b = _np(model(images)) - base_out
        set_adapter(model, ["default", "b"], [2.0, -1.0])
        mixed = _np(model(images))
        self.assertAllClose(mixed, base_out + 2.0 * only_default - only_b, atol=1e-4)
        merged, _ = merge_lora(model)
        self.assertAllClose(merged(images), mixed, atol=1e-4)


def _adapter_model(compiled=False):
    """`_nested()` with a bottleneck adapter after d1 and d2 (default, m=2)
    and a named one "b" (m=3), the head trainable."""
    model, _ = add_adapters(
        _nested(), targets=["^inner/d[12]$"], bottleneck=2,
        trainable_layers=["^head$"],
    )
    if compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    add_adapters(model, adapter_name="b", bottleneck=3)
    rng = np.random.default_rng(0)
    for layer in _adapters(model):
        for name in layer.adapter_names:
            for v in layer.adapter_variables(name):
                v.assign(rng.normal(size=tuple(v.shape)).astype("float32") * 0.5)
    return model


def _adapters(model):
    inner = model.get_layer("inner")
    return [
        inner.get_layer(f"d{i}_with_adapter").get_layer(f"d{i}_adapter")
        for i in (1, 2)
    ]


def _adapter_reference(model, x, weights):
    """NumPy: each adapter layer is `h + sum_i g_i up_i(relu(down_i(h)))`."""
    inner = model.get_layer("inner")
    h = x
    for i, layer in zip((1, 2), _adapters(model)):
        dense = inner.get_layer(f"d{i}_with_adapter").get_layer(f"d{i}")
        h = h @ _np(dense.kernel) + _np(dense.bias)
        out = h
        for name, g in weights.items():
            wd, bd, wu, bu = (_np(v) for v in layer.adapter_variables(name))
            out = out + g * (np.maximum(h @ wd + bd, 0) @ wu + bu)
        h = out
    head = model.get_layer("head")
    return h @ _np(head.kernel) + _np(head.bias)


class NamedBottleneckAdaptersTest(TestCase):
    def test_add_activate_disable_delete_against_numpy(self):
        base = _np(_nested()(X))  # same seed: the model before surgery
        model = _adapter_model()
        self.assertEqual(list_adapters(model), ["default", "b"])
        self.assertEqual(active_adapters(model), {"default": 0.0, "b": 1.0})
        # Only the new adapter and the head train.
        d1, d2 = _adapters(model)
        self.assertEqual(
            {v.path for v in model.trainable_weights},
            {v.path for l in (d1, d2) for v in l.adapter_variables("b")}
            | {v.path for v in model.get_layer("head").weights},
        )
        self.assertEqual(d1.adapter_spec("b"), {"bottleneck": 3})
        for weights in ({"default": 1.0}, {"b": 1.0}, {"default": 0.3, "b": -0.7}):
            set_adapter(model, list(weights), list(weights.values()))
            self.assertAllClose(
                model(X), _adapter_reference(model, X, weights), atol=1e-5
            )
        with disable_adapters(model):
            # Exactly the model before the surgery.
            np.testing.assert_array_equal(_np(model(X)), base)
        self.assertAllClose(
            model(X), _adapter_reference(model, X, {"default": 0.3, "b": -0.7}),
            atol=1e-5,
        )
        train_adapter(model, "default")
        self.assertIn(d1.down.kernel.path, {v.path for v in model.trainable_weights})
        delete_adapter(model, "b")
        self.assertEqual(list_adapters(model), ["default"])
        self.assertLen(d1.weights, 5)  # down, up (kernel, bias), g
        set_adapter(model, "default", [0.5])
        self.assertAllClose(
            model(X), _adapter_reference(model, X, {"default": 0.5}), atol=1e-5
        )

    def test_weighted_adapter_is_exact(self):
        model = _adapter_model()
        set_adapter(model, ["default", "b"], [0.25, -2.0])
        mixed = _np(model(X))
        add_weighted_adapter(model, ["default", "b"], [0.25, -2.0], "mix")
        self.assertEqual(
            active_adapters(model), {"default": 0.0, "b": 0.0, "mix": 1.0}
        )
        self.assertEqual(_adapters(model)[0].adapter_spec("mix"), {"bottleneck": 5})
        self.assertAllClose(model(X), mixed, atol=1e-5)
        self.assertAllClose(
            mixed, _adapter_reference(model, X, {"default": 0.25, "b": -2.0}),
            atol=1e-5,
        )

    def test_switching_does_not_retrace_and_trains_the_new_one(self):
        model = _adapter_model(compiled=True)
        traces = []
        original = Adapter.call

        def counting(self, *args, **kwargs):
            traces.append(self.name)
            return original(self, *args, **kwargs)

        with mock.patch.object(Adapter, "call", counting):
            model.predict(X, batch_size=8, verbose=0)
            after_predict = len(traces)
            for weights in ({"default": 1.0}, {"b": 1.0}, {"default": 0.5, "b": 2.0}):
                set_adapter(model, list(weights), list(weights.values()))
                self.assertAllClose(
                    model.predict(X, batch_size=8, verbose=0),
                    _adapter_reference(model, X, weights),
                    atol=1e-5,
                )
            with disable_adapters(model):
                self.assertAllClose(
                    model.predict(X, batch_size=8, verbose=0),
                    _adapter_reference(model, X, {}),
                    atol=1e-5,
                )
            self.assertEqual(len(traces), after_predict)
            set_adapter(model, "b")
            d1 = _adapters(model)[0]
            default = [_np(v) for v in d1.adapter_variables("default")]
            before_b = [_np(v) for v in d1.adapter_variables("b")]
            model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
            after_fit = len(traces)
            set_adapter(model, ["default", "b"], [1.0, 1.0])
            model.fit(X, Y, batch_size=4, epochs=1, verbose=0)
            self.assertEqual(len(traces), after_fit)
        # "b" trained, the default adapter did not.
        for v, old in zip(d1.adapter_variables("default"), default):
            np.testing.assert_array_equal(_np(v), old)
        self.assertGreater(
            max(np.abs(_np(v) - old).max() for v, old in zip(d1.adapter_variables("b"), before_b)),
            0,
        )

    def test_save_load_whole_model_and_one_adapter(self):
        model = _adapter_model(compiled=True)
        set_adapter(model, ["default", "b"], [0.5, 1.5])
        path = os.path.join(self.get_temp_dir(), "adapters.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertEqual(list_adapters(loaded), ["default", "b"])
        self.assertEqual(active_adapters(loaded), {"default": 0.5, "b": 1.5})
        self.assertAllClose(loaded(X), model(X), atol=1e-6)
        self.assertEqual(
            sorted(v.path.split("/")[-2:] for v in loaded.trainable_weights),
            sorted(v.path.split("/")[-2:] for v in model.trainable_weights),
        )
        loaded.fit(X, Y, batch_size=4, epochs=1, verbose=0)

        single = os.path.join(self.get_temp_dir(), "b.npz")
        save_peft_weights(model, single, adapter_name="b")
        with np.load(single) as data:
            self.assertLen(data.files, 9)  # 4 weights x 2 layers, settings
        other, _ = add_adapters(
            _nested(), targets=["^inner/d[12]$"], bottleneck=2,
            trainable_layers=["^head$"],
        )
        load_peft_weights(other, single, adapter_name="reviews")
        self.assertEqual(list_adapters(other), ["default", "reviews"])
        self.assertEqual(active_adapters(other), {"default": 1.0, "reviews": 0.0})
        set_adapter(model, "b")
        set_adapter(other, "reviews")
        other.get_layer("head").set_weights(model.get_layer("head").get_weights())
        self.assertAllClose(other(X), model(X), atol=1e-6)

    def test_lora_and_adapters_together(self):
        # `disable_adapters` turns off both kinds: exactly the base model.
        base = _np(_nested()(X))
        model, _ = apply_lora(_nested(), lora_rank=2, targets=["^inner/d1$"])
        model, _ = add_adapters(model, targets=["^inner/d2$"], bottleneck=2)
        rng = np.random.default_rng(3)
        for v in model.trainable_weights:
            v.assign(rng.normal(size=tuple(v.shape)).astype("float32"))
        adapted = _np(model(X))
        self.assertGreater(np.abs(adapted - base).max(), 1e-3)
        with disable_adapters(model):
            np.testing.assert_array_equal(_np(model(X)), base)
        np.testing.assert_array_equal(_np(model(X)), adapted)
        add_lora_adapter(model, "b")
        self.assertEqual(list_adapters(model), ["default", "b"])
        with self.assertRaisesRegex(ValueError, r"already has an adapter named 'b'"):
            add_adapters(model, adapter_name="b")

    def test_bad_input_names_argument_and_value(self):
        with self.assertRaisesRegex(ValueError, r"no bottleneck adapter.*adapter_name='b'"):
            add_adapters(_nested(), adapter_name="b")
        model = _adapter_model()
        with self.assertRaisesRegex(ValueError, r"already has an adapter named 'b'"):
            add_adapters(model, adapter_name="b")
        with self.assertRaisesRegex(ValueError, r"identifier.*adapter_name='a b'"):
            add_adapters(model, adapter_name="a b")
        with self.assertRaisesRegex(ValueError, r"`placement`.*placement='houlsby'"):
            add_adapters(model, placement="houlsby", adapter_name="c")
        with self.assertRaisesRegex(ValueError, r"activation='gelu'"):
            add_adapters(model, adapter_name="c", activation="gelu")
        with self.assertRaisesRegex(ValueError, r"bottleneck=0"):
            add_adapters(model, adapter_name="c", bottleneck=0)
        with self.assertRaisesRegex(ValueError, r"Unknown adapter 'c'.*adapters='c'"):
            set_adapter(model, "c")
        self.assertEqual(list_adapters(model), ["default", "b"])

    def test_keras_hub_backbone_save_load(self):
        import keras_hub

        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8,
            intermediate_dim=16, max_sequence_length=8,
        )
        rng = np.random.default_rng(0)
        x = {
            "token_ids": rng.integers(0, 30, (2, 8)),
            "segment_ids": np.zeros((2, 8), "int32"),
            "padding_mask": np.ones((2, 8), "bool"),
        }
        base = _np(backbone(x)["sequence_output"])
        backbone, _ = add_adapters(backbone, placement="pfeiffer", bottleneck=2)
        add_adapters(backbone, adapter_name="b", bottleneck=3)
        for v in backbone.weights:
            if "adapter" in v.path and "gate" not in v.path:
                v.assign(rng.normal(size=tuple(v.shape)) * 0.3)
        set_adapter(backbone, ["default", "b"], [1.0, -0.5])
        path = os.path.join(self.get_temp_dir(), "bert.keras")
        backbone.save(path)
        loaded = keras.models.load_model(path)
        self.assertEqual(list_adapters(loaded), ["default", "b"])
        self.assertEqual(active_adapters(loaded), {"default": 1.0, "b": -0.5})
        self.assertAllClose(
            loaded(x)["sequence_output"], backbone(x)["sequence_output"], atol=1e-5
        )
        with disable_adapters(loaded):
            np.testing.assert_array_equal(_np(loaded(x)["sequence_output"]), base)
