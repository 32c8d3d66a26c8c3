import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.layers import LoRAEinsumDense
from tests.testing import TestCase


def _query_like(rank=2, **kwargs):
    # The shape of a transformer's query projection: 6 -> 2 heads x 3.
    base = keras.layers.EinsumDense(
        "abc,cde->abde", (None, 2, 3), bias_axes="de"
    )
    base.build((None, 4, 6))
    return base, LoRAEinsumDense.from_layer(base, lora_rank=rank, **kwargs)


class LoRAEinsumDenseTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            LoRAEinsumDense,
            init_kwargs={
                "equation": "ab,bc->ac",
                "output_shape": 4,
                "bias_axes": "c",
                "lora_rank": 2,
            },
            input_shape=(2, 3),
            expected_output_shape=(2, 4),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=2,
        )

    @parameterized.named_parameters(
        ("query", "abc,cde->abde", (None, 2, 3), (2, 4, 6), (6, 2, 3)),
        ("output", "abcd,cde->abe", (None, 5), (2, 4, 2, 3), (2, 3, 5)),
        ("ellipsis", "...b,bc->...c", 5, (2, 4, 6), (6, 5)),
    )
    def test_formula_matches_numpy(self, equation, out_shape, x_shape, k_shape):
        rng = np.random.default_rng(0)
        base = keras.layers.EinsumDense(equation, out_shape)
        base.build(x_shape)
        lora = LoRAEinsumDense.from_layer(base, lora_rank=2, lora_alpha=6.0)
        a_shape = tuple(lora.lora_kernel_a.shape)
        b_shape = tuple(lora.lora_kernel_b.shape)
        a = rng.normal(size=a_shape).astype("float32")
        b = rng.normal(size=b_shape).astype("float32")
        lora.lora_kernel_a.assign(a)
        lora.lora_kernel_b.assign(b)
        # Reference: the einsum with the full kernel W + s * reshape(A B).
        d = int(np.prod(a_shape[:-1]))
        delta = (a.reshape(d, 2) @ b.reshape(2, -1)).reshape(k_shape)
        w = keras.ops.convert_to_numpy(base.kernel) + 3.0 * delta
        x = rng.normal(size=x_shape).astype("float32")
        expected = np.einsum(equation.replace("...", ""), x, w) if "..." not in equation else x @ w
        self.assertAllClose(lora(x), expected, atol=1e-4)

    def test_identity_at_init_and_exact_trainable_count(self):
        base, lora = _query_like(rank=2)
        x = np.random.default_rng(1).normal(size=(2, 4, 6)).astype("float32")
        self.assertAllClose(lora(x), base(x), atol=0)
        # r (d + k) with d = 6 and k = 2 heads x 3.
        count = sum(int(np.prod(w.shape)) for w in lora.trainable_weights)
        self.assertEqual(count, 2 * (6 + 6))

    def test_merge_and_save_load(self):
        rng = np.random.default_rng(2)
        _, lora = _query_like(rank=2)
        lora.lora_kernel_b.assign(rng.normal(size=(2, 2, 3)))
        x = rng.normal(size=(2, 4, 6)).astype("float32")
        merged = lora.merge()
        self.assertIs(type(merged), keras.layers.EinsumDense)
        self.assertAllClose(merged(x), lora(x), atol=1e-5)
        model = keras.Sequential([keras.Input((4, 6)), lora])
        path = os.path.join(self.get_temp_dir(), "e.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded(x), model(x), atol=1e-6)
        self.assertAllClose(loaded.layers[0].lora_kernel_b, lora.lora_kernel_b)

    def test_mixed_precision_keeps_float32(self):
        lora = LoRAEinsumDense("ab,bc->ac", 4, lora_rank=2, dtype="mixed_float16")
        out = lora(np.ones((2, 3), "float32"))
        self.assertEqual(keras.backend.standardize_dtype(out.dtype), "float16")
        self.assertEqual(lora.lora_kernel_a.dtype, "float32")
        self.assertEqual(lora.lora_kernel_b.dtype, "float32")

    def test_unsplittable_equation_raises(self):
        # `b` is in the input, the kernel and the output (per-head kernel).
        layer = LoRAEinsumDense("abc,bcd->abd", (3, 4), lora_rank=1, name="ph")
        with self.assertRaisesRegex(ValueError, "'ph'.*equation='abc,bcd->abd'"):
            layer.build((None, 3, 5))

    def test_rank_too_large_raises(self):
        with self.assertRaisesRegex(ValueError, "lora_rank=7"):
            _query_like(rank=7)

    def test_from_layer_rejects_dense(self):
        dense = keras.layers.Dense(2)
        dense.build((None, 3))
        with self.assertRaisesRegex(ValueError, "EinsumDense.*Dense"):
            LoRAEinsumDense.from_layer(dense)
