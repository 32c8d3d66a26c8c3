import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer.layers import LoRADense
from tests.testing import TestCase


def _lora(d=6, k=4, rank=2, **kwargs):
    dense = keras.layers.Dense(k, activation=kwargs.pop("activation", None))
    dense.build((None, d))
    return dense, LoRADense.from_layer(dense, lora_rank=rank, **kwargs)


class LoRADenseTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            LoRADense,
            init_kwargs={"units": 4, "lora_rank": 2, "lora_alpha": 4.0},
            input_shape=(2, 3),
            expected_output_shape=(2, 4),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=2,
        )

    def test_formula_matches_numpy(self):
        rng = np.random.default_rng(0)
        dense, lora = _lora(rank=2, lora_alpha=3.0, activation="relu")
        a = rng.normal(size=(6, 2)).astype("float32")
        b = rng.normal(size=(2, 4)).astype("float32")
        lora.lora_kernel_a.assign(a)
        lora.lora_kernel_b.assign(b)
        x = rng.normal(size=(5, 6)).astype("float32")
        w = keras.ops.convert_to_numpy(dense.kernel)
        bias = keras.ops.convert_to_numpy(dense.bias)
        expected = np.maximum(x @ w + bias + 1.5 * (x @ a) @ b, 0)
        self.assertAllClose(lora(x), expected, atol=1e-5)

    def test_rank_stabilized_scale(self):
        _, lora = _lora(rank=4, lora_alpha=8.0, rank_stabilized=True)
        self.assertAllClose(lora.scale, 4.0)
        _, plain = _lora(rank=4, lora_alpha=8.0)
        self.assertAllClose(plain.scale, 2.0)
        # lora_alpha=None means alpha = rank, as in Keras's Dense.
        _, default = _lora(rank=4)
        self.assertEqual(default.scale, 1.0)

    def test_identity_at_init_and_exact_trainable_count(self):
        dense, lora = _lora(d=6, k=4, rank=3, activation="tanh")
        x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
        self.assertAllClose(lora(x), dense(x), atol=0)
        count = sum(int(np.prod(w.shape)) for w in lora.trainable_weights)
        self.assertEqual(count, 3 * (6 + 4))
        _, with_bias = _lora(d=6, k=4, rank=3, train_bias=True)
        count = sum(int(np.prod(w.shape)) for w in with_bias.trainable_weights)
        self.assertEqual(count, 3 * (6 + 4) + 4)

    def test_training_moves_only_low_rank_weights(self):
        dense, lora = _lora()
        model = keras.Sequential([keras.Input((6,)), lora])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        kernel = keras.ops.convert_to_numpy(lora.base_layer.kernel).copy()
        x = np.random.default_rng(2).normal(size=(8, 6)).astype("float32")
        y = np.random.default_rng(3).normal(size=(8, 4)).astype("float32")
        model.fit(x, y, epochs=2, verbose=0)
        self.assertAllClose(lora.base_layer.kernel, kernel, atol=0)
        self.assertGreater(np.abs(keras.ops.convert_to_numpy(lora.lora_kernel_b)).max(), 0)

    def test_setting_trainable_keeps_the_kernel_frozen(self):
        dense = keras.layers.Dense(3)
        dense.build((None, 4))
        layer = LoRADense.from_layer(dense, lora_rank=2, train_bias=False)
        layer.trainable = False
        self.assertEqual(layer.trainable_weights, [])
        # `Layer.trainable = True` would unfreeze every weight; ours keeps
        # the pretrained kernel (and, here, the bias) frozen.
        layer.trainable = True
        self.assertEqual(
            sorted(v.name for v in layer.trainable_weights),
            ["lora_kernel_a", "lora_kernel_b"],
        )
        model = keras.Sequential([keras.Input((4,)), layer])
        model.trainable = True
        self.assertLen(model.trainable_weights, 2)

    def test_dropout_only_in_training(self):
        _, lora = _lora(lora_dropout=0.5)
        lora.lora_kernel_b.assign(np.ones((2, 4), "float32"))
        x = np.ones((2, 6), "float32")
        self.assertAllClose(lora(x, training=False), lora(x), atol=0)
        self.assertNotAllClose(lora(x, training=True), lora(x, training=False))

    def test_merge_gives_plain_dense(self):
        rng = np.random.default_rng(4)
        _, lora = _lora(activation="relu", lora_alpha=5.0)
        lora.lora_kernel_b.assign(rng.normal(size=(2, 4)))
        merged = lora.merge()
        self.assertIs(type(merged), keras.layers.Dense)
        self.assertNotIn("lora", str(merged.get_config()).replace("'lora_rank': None", ""))
        x = rng.normal(size=(3, 6)).astype("float32")
        self.assertAllClose(merged(x), lora(x), atol=1e-5)

    def test_save_load_continue(self):
        rng = np.random.default_rng(5)
        x = rng.normal(size=(8, 6)).astype("float32")
        y = rng.normal(size=(8, 4)).astype("float32")
        _, lora = _lora()
        model = keras.Sequential([keras.Input((6,)), lora])
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.fit(x, y, epochs=2, verbose=0)
        path = os.path.join(self.get_temp_dir(), "lora.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded.layers[0], LoRADense)
        self.assertAllClose(loaded(x), model(x), atol=1e-6)
        for name in ("lora_kernel_a", "lora_kernel_b"):
            self.assertAllClose(
                getattr(loaded.layers[0], name), getattr(lora, name), atol=0
            )
        self.assertLen(loaded.trainable_weights, 2)
        before = model.evaluate(x, y, verbose=0)
        loaded.fit(x, y, epochs=3, verbose=0)
        self.assertLess(loaded.evaluate(x, y, verbose=0), before)

    def test_keras_enable_lora_loses_factors_ours_keeps_them(self):
        rng = np.random.default_rng(6)
        path = os.path.join(self.get_temp_dir(), "m.keras")
        keras_dense = keras.layers.Dense(4)
        keras_dense.build((None, 6))
        keras_dense.enable_lora(2)
        b = rng.normal(size=(2, 4)).astype("float32")
        keras_dense.lora_kernel_b.assign(b)
        keras.Sequential([keras.Input((6,)), keras_dense]).save(path)
        reloaded = keras.models.load_model(path).layers[0]
        # Keras folds A B into the kernel on save: B comes back as zeros.
        self.assertAllClose(reloaded.lora_kernel_b, np.zeros((2, 4)), atol=0)

        _, ours = _lora()
        ours.lora_kernel_b.assign(b)
        keras.Sequential([keras.Input((6,)), ours]).save(path)
        reloaded = keras.models.load_model(path).layers[0]
        self.assertAllClose(reloaded.lora_kernel_b, b, atol=0)
        self.assertAllClose(reloaded.lora_kernel_a, ours.lora_kernel_a, atol=0)

    @parameterized.named_parameters(
        ("mixed_float16", "mixed_float16", "float16", "float32"),
        ("mixed_bfloat16", "mixed_bfloat16", "bfloat16", "float32"),
        ("bfloat16", "bfloat16", "bfloat16", "bfloat16"),
    )
    def test_low_rank_weights_stay_float32(self, policy, compute, kernel):
        lora = LoRADense(4, lora_rank=2, dtype=policy)
        out = lora(np.ones((2, 6), "float32"))
        self.assertEqual(keras.backend.standardize_dtype(out.dtype), compute)
        self.assertEqual(lora.lora_kernel_a.dtype, "float32")
        self.assertEqual(lora.lora_kernel_b.dtype, "float32")
        self.assertEqual(lora.base_layer.kernel.dtype, kernel)

    @parameterized.named_parameters(
        ("rank_zero", {"lora_rank": 0}, "lora_rank=0"),
        ("rank_negative", {"lora_rank": -2}, "lora_rank=-2"),
        ("rank_float", {"lora_rank": 2.5}, "lora_rank=2.5"),
        ("rank_bool", {"lora_rank": True}, "lora_rank=True"),
        ("alpha_negative", {"lora_alpha": -1.0}, "lora_alpha=-1.0"),
        ("dropout_one", {"lora_dropout": 1.0}, "lora_dropout=1.0"),
        ("dropout_negative", {"lora_dropout": -0.1}, "lora_dropout=-0.1"),
        ("units", {"units": 0}, "units=0"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        kwargs = {"units": 4, **kwargs}
        with self.assertRaisesRegex(ValueError, message):
            LoRADense(**kwargs)

    def test_rank_larger_than_layer_raises(self):
        with self.assertRaisesRegex(ValueError, "min\\(6, 4\\).*lora_rank=5"):
            _lora(rank=5)

    def test_from_layer_rejects_wrong_or_unbuilt_layer(self):
        with self.assertRaisesRegex(ValueError, "expects a `keras.layers.Dense`"):
            LoRADense.from_layer(keras.layers.Conv2D(2, 1))
        with self.assertRaisesRegex(ValueError, "not built"):
            LoRADense.from_layer(keras.layers.Dense(2, name="fresh"))
        dense = keras.layers.Dense(4, name="kl")
        dense.build((None, 6))
        dense.enable_lora(2)
        with self.assertRaisesRegex(ValueError, "'kl'.*enable_lora"):
            LoRADense.from_layer(dense)

    @parameterized.named_parameters(("float", None), ("int8", "int8"))
    def test_copies_survive_training_of_the_source(self, mode):
        # On JAX, assigning a variable to another shared the array, and a
        # training step of either model deleted it under the other
        # ("Array has been deleted").
        x = np.ones((4, 6), "float32")
        y = np.zeros((4, 4), "float32")
        dense = keras.layers.Dense(4)
        dense.build((None, 6))
        if mode:
            dense.quantize(mode)
        source = keras.Sequential([keras.Input((6,)), dense])
        source.compile("sgd", "mse")
        lora = LoRADense.from_layer(dense, lora_rank=2)
        model = keras.Sequential([keras.Input((6,)), lora])
        model.compile("sgd", "mse")
        source.train_on_batch(x, y)
        model.train_on_batch(x, y)
        merged = keras.Sequential([keras.Input((6,)), lora.merge()])
        model.train_on_batch(x, y)
        self.assertEqual(merged.predict_on_batch(x).shape, (4, 4))
        self.assertEqual(model.predict_on_batch(x).shape, (4, 4))
