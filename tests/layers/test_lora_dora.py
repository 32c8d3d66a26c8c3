"""DoRA (`use_dora=True`) on `LoRADense`, `LoRAEinsumDense`, `LoRAConv2D`."""

import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.layers import LoRAConv2D
from keras_transfer.layers import LoRADense
from keras_transfer.layers import LoRAEinsumDense
from tests.testing import TestCase

RANK, ALPHA = 2, 3.0  # scale s = 1.5


def _dense():
    base = keras.layers.Dense(4)
    base.build((None, 6))
    return base, (5, 6), LoRADense


def _einsum():
    # A transformer query projection: 6 -> 2 heads x 3, kernel (6, 2, 3).
    base = keras.layers.EinsumDense(
        "abc,cde->abde", (None, 2, 3), bias_axes="de"
    )
    base.build((None, 4, 6))
    return base, (2, 4, 6), LoRAEinsumDense


def _conv():
    base = keras.layers.Conv2D(4, 3, padding="same")
    base.build((None, 5, 5, 3))
    return base, (2, 5, 5, 3), LoRAConv2D


MAKERS = {"dense": _dense, "einsum": _einsum, "conv": _conv}


def _randomize(layer, rng):
    for weight in layer.weights:
        weight.assign(rng.normal(size=tuple(weight.shape)))


def _numpy_dora_kernel(w, a, b, m, input_axes):
    """m * (W + s A B) / ||W + s A B||_c, A B on the flattened kernel."""
    d = int(np.prod([w.shape[i] for i in input_axes]))
    delta = (a.reshape(d, RANK) @ b.reshape(RANK, -1)).reshape(w.shape)
    v = w + (ALPHA / RANK) * delta
    norm = np.sqrt((v**2).sum(axis=input_axes, keepdims=True))
    return m.reshape(norm.shape) * v / norm


class DoRATest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            LoRADense,
            init_kwargs={"units": 4, "lora_rank": 2, "use_dora": True},
            input_shape=(2, 3),
            expected_output_shape=(2, 4),
            expected_num_trainable_weights=3,
            expected_num_non_trainable_weights=2,
        )

    @parameterized.named_parameters(
        ("dense", "dense", (0,)),
        ("einsum", "einsum", (0,)),
        ("conv", "conv", (0, 1, 2)),
    )
    def test_formula_matches_numpy(self, kind, input_axes):
        rng = np.random.default_rng(0)
        base, x_shape, cls = MAKERS[kind]()
        _randomize(base, rng)
        w = keras.ops.convert_to_numpy(base.kernel)
        bias = keras.ops.convert_to_numpy(base.bias)
        dora = cls.from_layer(
            base, lora_rank=RANK, lora_alpha=ALPHA, use_dora=True
        )
        # Magnitude starts at the column norms of W (over the input axes).
        self.assertAllClose(
            dora.lora_magnitude,
            np.sqrt((w**2).sum(axis=input_axes)),
            atol=1e-5,
        )
        _randomize(dora, rng)  # A, B and m (the base is frozen, not random)
        dora.base_layer.kernel.assign(w)
        dora.base_layer.bias.assign(bias)
        a, b, m = (
            keras.ops.convert_to_numpy(v)
            for v in (
                dora.lora_kernel_a,
                dora.lora_kernel_b,
                dora.lora_magnitude,
            )
        )
        kernel = _numpy_dora_kernel(w, a, b, m, input_axes)
        x = rng.normal(size=x_shape).astype("float32")
        if kind == "dense":
            expected = x @ kernel + bias
        elif kind == "einsum":
            expected = np.einsum("abc,cde->abde", x, kernel) + bias
        else:
            reference = keras.layers.Conv2D(4, 3, padding="same")
            reference.build(x_shape)
            reference.set_weights([kernel, bias])
            expected = reference(x)
        self.assertAllClose(dora(x), expected, atol=1e-4)
        merged = dora.merge()
        self.assertIs(type(merged), type(base))
        self.assertAllClose(merged.kernel, kernel, atol=1e-5)
        self.assertAllClose(merged(x), dora(x), atol=1e-4)

    @parameterized.named_parameters(
        ("dense", "dense"), ("einsum", "einsum"), ("conv", "conv")
    )
    def test_identity_at_start_and_trainable_count(self, kind):
        base, x_shape, cls = MAKERS[kind]()
        dora = cls.from_layer(base, lora_rank=RANK, use_dora=True)
        x = np.random.default_rng(1).normal(size=x_shape).astype("float32")
        self.assertAllClose(dora(x), base(x), atol=0)
        a, b = dora.lora_kernel_a, dora.lora_kernel_b
        count = sum(int(np.prod(w.shape)) for w in dora.trainable_weights)
        units = int(np.prod(dora.lora_magnitude.shape))
        self.assertEqual(
            count, int(np.prod(a.shape)) + int(np.prod(b.shape)) + units
        )
        self.assertEqual(
            [w.name for w in dora.peft_weights],
            ["lora_kernel_a", "lora_kernel_b", "lora_magnitude"],
        )

    def test_norm_is_constant_in_the_backward_pass(self):
        # DoRA section 4.3 / PEFT: the column norm n = ||V||_c of
        # V = W + s A B is a constant in the backward pass, so with
        # f = m / n and y = x W + b + (f - 1) x W + f s x A B:
        #   d y / d m = (x V) / n  and  d y / d B = f s (x A).
        rng = np.random.default_rng(2)
        base, x_shape, _ = _dense()
        dora = LoRADense.from_layer(
            base, lora_rank=RANK, lora_alpha=ALPHA, use_dora=True
        )
        _randomize(dora, rng)
        x = rng.normal(size=x_shape).astype("float32")
        model = keras.Sequential([keras.Input((6,)), dora])
        model.compile(keras.optimizers.SGD(1.0), "mae")
        w, a, b, m = (
            keras.ops.convert_to_numpy(v).copy()
            for v in (
                dora.base_layer.kernel,
                dora.lora_kernel_a,
                dora.lora_kernel_b,
                dora.lora_magnitude,
            )
        )
        s = ALPHA / RANK
        v = w + s * a @ b
        norm = np.sqrt((v**2).sum(axis=0))
        f = m / norm
        # MAE against a target far below: d loss / d y = 1 / (batch k).
        y = np.full((5, 4), -1e3, "float32")
        model.train_on_batch(x, y)
        grad_m = (x @ v).sum(axis=0) / norm / 20
        grad_b = s * (x @ a).sum(axis=0)[:, None] * f[None, :] / 20
        self.assertAllClose(dora.lora_magnitude, m - grad_m, atol=1e-4)
        self.assertAllClose(dora.lora_kernel_b, b - grad_b, atol=1e-4)

    def test_training_moves_magnitude_and_factors_only(self):
        base, x_shape, _ = _dense()
        dora = LoRADense.from_layer(base, lora_rank=RANK, use_dora=True)
        kernel = keras.ops.convert_to_numpy(dora.base_layer.kernel).copy()
        m = keras.ops.convert_to_numpy(dora.lora_magnitude).copy()
        model = keras.Sequential([keras.Input((6,)), dora])
        model.compile(keras.optimizers.Adam(0.05), "mse")
        rng = np.random.default_rng(3)
        x = rng.normal(size=x_shape).astype("float32")
        y = rng.normal(size=(5, 4)).astype("float32")
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=5, verbose=0)
        self.assertLess(model.evaluate(x, y, verbose=0), before)
        self.assertAllClose(dora.base_layer.kernel, kernel, atol=0)
        self.assertNotAllClose(dora.lora_magnitude, m)

    def test_save_load_continue(self):
        base, x_shape, _ = _einsum()
        dora = LoRAEinsumDense.from_layer(base, lora_rank=RANK, use_dora=True)
        _randomize(dora, np.random.default_rng(4))
        model = keras.Sequential([keras.Input(x_shape[1:]), dora])
        path = os.path.join(self.get_temp_dir(), "dora.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        layer = loaded.layers[0]
        self.assertTrue(layer.use_dora)
        self.assertAllClose(layer.lora_magnitude, dora.lora_magnitude, atol=0)
        x = np.random.default_rng(5).normal(size=x_shape).astype("float32")
        self.assertAllClose(loaded(x), model(x), atol=0)
        loaded.compile(keras.optimizers.SGD(0.01), "mse")
        y = keras.ops.convert_to_numpy(loaded(x)) + 1
        loaded.fit(x, y, verbose=0)
        self.assertNotAllClose(layer.lora_magnitude, dora.lora_magnitude)

    def test_mixed_precision(self):
        dora = LoRADense(4, lora_rank=2, use_dora=True, dtype="mixed_bfloat16")
        out = dora(np.ones((2, 6), "float32"))
        dtype = keras.backend.standardize_dtype(out.dtype)
        self.assertEqual(dtype, "bfloat16")
        self.assertEqual(dora.lora_magnitude.dtype, "float32")

    def test_invalid_use_dora_raises(self):
        with self.assertRaisesRegex(ValueError, "use_dora='yes'"):
            LoRADense(4, use_dora="yes")
