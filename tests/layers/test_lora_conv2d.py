import os

import keras
import numpy as np

from keras_transfer.layers import LoRAConv2D
from tests.testing import TestCase


def _conv(rank=2, **kwargs):
    base = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    base.build((None, 5, 5, 3))
    return base, LoRAConv2D.from_layer(base, lora_rank=rank, **kwargs)


class LoRAConv2DTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            LoRAConv2D,
            init_kwargs={"filters": 4, "kernel_size": 2, "lora_rank": 2},
            input_shape=(2, 4, 4, 3),
            expected_output_shape=(2, 3, 3, 4),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=2,
        )

    def test_formula_matches_full_rank_kernel(self):
        rng = np.random.default_rng(0)
        base, lora = _conv(rank=2, lora_alpha=4.0)
        a = rng.normal(size=(3, 3, 3, 2)).astype("float32")
        b = rng.normal(size=(2, 4)).astype("float32")
        lora.lora_kernel_a.assign(a)
        lora.lora_kernel_b.assign(b)
        # Reference: one convolution with W + s * (A B) formed in NumPy.
        reference = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
        reference.build((None, 5, 5, 3))
        w = keras.ops.convert_to_numpy(base.kernel)
        reference.kernel.assign(w + 2.0 * np.einsum("hwcr,rf->hwcf", a, b))
        reference.bias.assign(base.bias)
        x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
        self.assertAllClose(lora(x), reference(x), atol=1e-4)
        self.assertAllClose(lora.merge()(x), reference(x), atol=1e-4)

    def test_identity_at_init_and_exact_trainable_count(self):
        base, lora = _conv(rank=2)
        x = np.random.default_rng(1).normal(size=(2, 5, 5, 3)).astype("float32")
        self.assertAllClose(lora(x), base(x), atol=0)
        count = sum(int(np.prod(w.shape)) for w in lora.trainable_weights)
        self.assertEqual(count, 2 * (3 * 3 * 3 + 4))

    def test_save_load(self):
        _, lora = _conv()
        lora.lora_kernel_b.assign(np.ones((2, 4), "float32"))
        model = keras.Sequential([keras.Input((5, 5, 3)), lora])
        path = os.path.join(self.get_temp_dir(), "c.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        x = np.ones((1, 5, 5, 3), "float32")
        self.assertAllClose(loaded(x), model(x), atol=1e-6)
        self.assertAllClose(loaded.layers[0].lora_kernel_b, np.ones((2, 4)))

    def test_mixed_precision_keeps_float32(self):
        lora = LoRAConv2D(2, 1, lora_rank=1, dtype="mixed_bfloat16")
        out = lora(np.ones((1, 2, 2, 3), "float32"))
        self.assertEqual(keras.backend.standardize_dtype(out.dtype), "bfloat16")
        self.assertEqual(lora.lora_kernel_a.dtype, "float32")

    def test_grouped_and_wrong_layers_raise(self):
        grouped = keras.layers.Conv2D(4, 1, groups=2, name="g")
        grouped.build((None, 3, 3, 4))
        with self.assertRaisesRegex(ValueError, "groups=2.*'g'"):
            LoRAConv2D.from_layer(grouped)
        with self.assertRaisesRegex(ValueError, "lora_rank=0"):
            LoRAConv2D(2, 1, lora_rank=0)
