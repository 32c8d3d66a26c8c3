"""LoRA on int8 / int4 quantized `Dense` and `EinsumDense` (QLoRA-style)."""

import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.layers import LoRADense
from keras_transfer.layers import LoRAEinsumDense
from tests.testing import TestCase

D, K, RANK, ALPHA = 6, 4, 2, 4.0  # scale s = ALPHA / RANK = 2


def _float_base(kind, seed=0):
    """A built float layer with random weights, and an input for it."""
    rng = np.random.default_rng(seed)
    if kind == "dense":
        layer = keras.layers.Dense(K)
        layer.build((None, D))
        x = rng.normal(size=(5, D))
    else:
        # A transformer query projection: 6 -> 2 heads x 2.
        layer = keras.layers.EinsumDense(
            "abc,cde->abde", (None, 2, 2), bias_axes="de"
        )
        layer.build((None, 3, D))
        x = rng.normal(size=(5, 3, D))
    for weight in layer.weights:
        weight.assign(rng.normal(size=tuple(weight.shape)))
    return layer, x.astype("float32")


def _keras_quantized(kind, mode, seed=0):
    """Keras's own quantized layer, built from the same float weights."""
    layer, x = _float_base(kind, seed)
    layer.quantize(mode)
    return layer, x


def _lora_class(kind):
    return LoRADense if kind == "dense" else LoRAEinsumDense


def _low_rank_update(kind, x, a, b):
    # NumPy: s * x A B on the flattened (d x k) kernel.
    if kind == "dense":
        return (ALPHA / RANK) * x @ a @ b
    return (ALPHA / RANK) * np.einsum("abc,cr,rde->abde", x, a, b)


def _set_random_factors(lora, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=tuple(lora.lora_kernel_a.shape)).astype("float32")
    b = rng.normal(size=tuple(lora.lora_kernel_b.shape)).astype("float32")
    lora.lora_kernel_a.assign(a)
    lora.lora_kernel_b.assign(b)
    return a, b


def _lora_quantized(kind, mode, order):
    """A LoRA layer on a `mode` base, in the given order, with its input."""
    if order == "quantize_then_lora":
        base, x = _keras_quantized(kind, mode)
        lora = _lora_class(kind).from_layer(
            base, lora_rank=RANK, lora_alpha=ALPHA
        )
    else:
        base, x = _float_base(kind)
        lora = _lora_class(kind).from_layer(
            base, lora_rank=RANK, lora_alpha=ALPHA
        )
        model = keras.Sequential([keras.Input(x.shape[1:]), lora])
        model.quantize(mode)
    return lora, x


CASES = [
    (f"{kind}_{mode}_{order}", kind, mode, order)
    for kind in ("dense", "einsum")
    for mode in ("int8", "int4")
    for order in ("quantize_then_lora", "lora_then_quantize")
]

# Each kind, mode and order once (for the slower tests).
SOME_CASES = [
    case
    for case in CASES
    if case[0]
    in (
        "dense_int8_quantize_then_lora",
        "dense_int4_lora_then_quantize",
        "einsum_int8_lora_then_quantize",
        "einsum_int4_quantize_then_lora",
    )
]


class LoRAQuantizedTest(TestCase):
    @parameterized.named_parameters(*CASES)
    def test_output_is_keras_quantized_layer_plus_update(
        self, kind, mode, order
    ):
        lora, x = _lora_quantized(kind, mode, order)
        self.assertEqual(lora.base_layer.quantization_mode, mode)
        reference, _ = _keras_quantized(kind, mode)
        # Identity at start (B = 0): exactly Keras's quantized layer.
        self.assertAllClose(lora(x), reference(x), atol=0)
        a, b = _set_random_factors(lora)
        expected = keras.ops.convert_to_numpy(reference(x))
        expected = expected + _low_rank_update(kind, x, a, b)
        self.assertAllClose(lora(x), expected, atol=1e-4)

    @parameterized.named_parameters(*SOME_CASES)
    def test_training_updates_only_low_rank_weights(self, kind, mode, order):
        lora, x = _lora_quantized(kind, mode, order)
        self.assertEqual(
            sorted(w.name for w in lora.trainable_weights),
            ["lora_kernel_a", "lora_kernel_b"],
        )
        frozen = {
            w.name: keras.ops.convert_to_numpy(w).copy()
            for w in lora.base_layer.weights
        }
        model = keras.Sequential([keras.Input(x.shape[1:]), lora])
        model.compile(keras.optimizers.Adam(0.01), "mse")
        y = np.ones(keras.ops.shape(model(x)), "float32")
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=5, verbose=0)
        self.assertLess(model.evaluate(x, y, verbose=0), before)
        for w in lora.base_layer.weights:
            self.assertAllClose(w, frozen[w.name], atol=0)
        self.assertGreater(
            np.abs(keras.ops.convert_to_numpy(lora.lora_kernel_b)).max(), 0
        )

    @parameterized.named_parameters(*SOME_CASES)
    def test_save_load_and_continue(self, kind, mode, order):
        lora, x = _lora_quantized(kind, mode, order)
        _set_random_factors(lora)
        model = keras.Sequential([keras.Input(x.shape[1:]), lora])
        path = os.path.join(self.get_temp_dir(), "qlora.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        layer = loaded.layers[0]
        self.assertIsInstance(layer, _lora_class(kind))
        self.assertEqual(layer.base_layer.quantization_mode, mode)
        self.assertAllClose(loaded(x), model(x), atol=0)
        self.assertAllClose(layer.lora_kernel_b, lora.lora_kernel_b, atol=0)
        loaded.compile(keras.optimizers.SGD(0.01), "mse")
        loaded.fit(x, keras.ops.zeros_like(loaded(x)), epochs=1, verbose=0)
        self.assertNotAllClose(layer.lora_kernel_b, lora.lora_kernel_b)

    @parameterized.named_parameters(*SOME_CASES)
    def test_merge_requantizes_in_the_same_mode(self, kind, mode, order):
        lora, x = _lora_quantized(kind, mode, order)
        base_output = keras.ops.convert_to_numpy(lora(x))
        _set_random_factors(lora)
        lora_output = keras.ops.convert_to_numpy(lora(x))
        merged = lora.merge()
        self.assertIs(type(merged), lora._keras_class)
        self.assertEqual(merged.quantization_mode, mode)
        self.assertEqual(merged.name, lora.name)
        self.assertFalse(getattr(merged, "lora_enabled", False))
        # Requantizing W + s A B costs a quantization error, small next to
        # the update itself (which is of the size of the outputs here).
        error = np.abs(keras.ops.convert_to_numpy(merged(x)) - lora_output)
        update = np.abs(lora_output - base_output)
        self.assertLess(error.max(), 0.15 * update.max())

    def test_mixed_precision_quantized_base(self):
        base, x = _float_base("dense")
        base = keras.layers.Dense(K, dtype="mixed_bfloat16")
        base.build((None, D))
        base.quantize("int8")
        lora = LoRADense.from_layer(base, lora_rank=RANK)
        self.assertEqual(lora.dtype_policy.name, "mixed_bfloat16")
        self.assertEqual(lora.lora_kernel_a.dtype, "float32")
        out = lora(x)
        dtype = keras.backend.standardize_dtype(out.dtype)
        self.assertEqual(dtype, "bfloat16")
        self.assertAllClose(out, base(x), atol=0)

    def test_quantized_dtype_argument_goes_to_the_base(self):
        lora = LoRADense(K, lora_rank=RANK, dtype="int8_from_float32")
        lora.build((None, D))
        self.assertEqual(lora.dtype_policy.name, "float32")
        self.assertEqual(lora.base_layer.quantization_mode, "int8")
        restored = LoRADense.from_config(lora.get_config())
        restored.build((None, D))
        self.assertEqual(restored.base_layer.quantization_mode, "int8")

    def test_explicit_float_dtype_on_quantized_layer_raises(self):
        # Before: the int8 codes were copied as float weights (output off by
        # ~900x the scale).
        base, _ = _keras_quantized("dense", "int8")
        with self.assertRaisesRegex(ValueError, "quantization mode 'int8'"):
            LoRADense.from_layer(base, lora_rank=RANK, dtype="float32")

    @parameterized.named_parameters(
        ("float8", "float8_from_float32", "'float8'"),
        ("gptq", "gptq/4/-1_from_float32", "'gptq'"),
        ("awq", "awq/4/-1_from_float32", "'awq'"),
    )
    def test_modes_that_cannot_carry_lora_raise(self, policy, message):
        pattern = f"mode={message}.*allowed modes are \\('int8', 'int4'\\)"
        with self.assertRaisesRegex(ValueError, pattern):
            LoRADense(K, lora_rank=RANK, dtype=policy)
        if policy.startswith("float8"):
            base = keras.layers.Dense(K)
            base.build((None, D))
            base.quantize("float8")
            with self.assertRaisesRegex(ValueError, pattern):
                LoRADense.from_layer(base, lora_rank=RANK)
            fresh = LoRADense(K, lora_rank=RANK)
            model = keras.Sequential([keras.Input((D,)), fresh])
            with self.assertRaisesRegex(ValueError, pattern):
                model.quantize("float8")

    def test_dora_on_quantized_base_raises(self):
        base, _ = _keras_quantized("dense", "int8")
        with self.assertRaisesRegex(ValueError, "use_dora=True.*'int8'"):
            LoRADense.from_layer(base, lora_rank=RANK, use_dora=True)
        base, _ = _float_base("dense")
        dora = LoRADense.from_layer(base, lora_rank=RANK, use_dora=True)
        model = keras.Sequential([keras.Input((D,)), dora])
        with self.assertRaisesRegex(ValueError, "use_dora=True.*'int4'"):
            model.quantize("int4")
