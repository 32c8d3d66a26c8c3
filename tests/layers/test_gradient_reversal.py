import os

import keras
import numpy as np
from absl.testing import parameterized
from keras import ops

from keras_transfer.layers import GradientReversal
from tests.testing import TestCase


def _grads(model, x, y):
    """Gradient of the MSE wrt the trainable weights, backend-agnostic."""
    loss_fn = keras.losses.MeanSquaredError()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        return [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    if backend == "jax":
        import jax

        def f(trainable):
            out, _ = model.stateless_call(
                trainable, [v.value for v in model.non_trainable_weights], x
            )
            return loss_fn(y, out)

        grads = jax.grad(f)([v.value for v in model.trainable_weights])
        return [np.asarray(g) for g in grads]
    loss = loss_fn(y, model(x))
    model.zero_grad()
    loss.backward()
    return [v.value.grad.cpu().numpy() for v in model.trainable_weights]


class GradientReversalTest(TestCase, parameterized.TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            GradientReversal,
            init_kwargs={"factor": 0.5},
            input_shape=(2, 3),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=5,
            supports_masking=True,
        )

    @parameterized.named_parameters(
        ("negative", -1.0),
        ("nan", float("nan")),
        ("inf", float("inf")),
        ("string", "1.0"),
        ("bool", True),
    )
    def test_invalid_factor_raises(self, factor):
        with self.assertRaisesRegex(ValueError, "`factor` must be a finite"):
            GradientReversal(factor=factor)
        layer = GradientReversal()
        layer.build((None, 2))
        with self.assertRaisesRegex(ValueError, "Received: factor="):
            layer.set_factor(factor)

    def test_forward_is_identity(self):
        x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
        self.assertAllClose(GradientReversal(factor=3.0)(x), x)

    def _pair(self, factor):
        """Two models with equal weights, one with the reversal layer."""
        dense_a = keras.layers.Dense(2, kernel_initializer="glorot_uniform")
        inputs = keras.Input((3,))
        plain = keras.Model(inputs, keras.layers.Dense(1)(dense_a(inputs)))
        inputs = keras.Input((3,))
        dense_b = keras.layers.Dense(2)
        head_b = keras.layers.Dense(1)
        reversed_ = keras.Model(
            inputs, head_b(GradientReversal(factor)(dense_b(inputs)))
        )
        dense_b.set_weights(dense_a.get_weights())
        head_b.set_weights(plain.layers[-1].get_weights())
        return plain, reversed_

    def test_gradients_compared_with_and_without_layer(self):
        plain, reversed_ = self._pair(0.7)
        rng = np.random.default_rng(1)
        x = rng.normal(size=(4, 3)).astype("float32")
        y = rng.normal(size=(4, 1)).astype("float32")
        g_plain = _grads(plain, x, y)
        g_rev = _grads(reversed_, x, y)
        # Layers below the reversal: gradient times -factor.
        self.assertAllClose(g_rev[0], -0.7 * g_plain[0], atol=1e-6)
        self.assertAllClose(g_rev[1], -0.7 * g_plain[1], atol=1e-6)
        # Layers above it are untouched.
        self.assertAllClose(g_rev[2], g_plain[2], atol=1e-6)
        self.assertAllClose(g_rev[3], g_plain[3], atol=1e-6)

    def test_sgd_step_moves_weight_up_the_loss(self):
        # loss = w * x, dloss/dw = x; through the reversal SGD adds
        # lr * factor * x to w.
        inputs = keras.Input((1,))
        dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
        outputs = GradientReversal(factor=0.5)(dense(inputs))
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.1),
            loss=lambda y_true, y_pred: ops.mean(y_pred),
        )
        model.fit(
            np.array([[2.0]], "float32"),
            np.zeros((1, 1), "float32"),
            epochs=1,
            verbose=0,
        )
        self.assertAllClose(dense.kernel, [[1.0 + 0.1 * 0.5 * 2.0]])

    def test_factor_change_is_seen_by_compiled_step(self):
        inputs = keras.Input((1,))
        dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
        layer = GradientReversal(factor=0.0)
        model = keras.Model(inputs, layer(dense(inputs)))
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1.0),
            loss=lambda y_true, y_pred: ops.mean(y_pred),
        )
        x, y = np.array([[1.0]], "float32"), np.zeros((1, 1), "float32")
        model.fit(x, y, epochs=1, verbose=0)
        self.assertAllClose(dense.kernel, [[1.0]])
        layer.set_factor(2.0)
        model.fit(x, y, epochs=1, verbose=0)
        self.assertAllClose(dense.kernel, [[3.0]])

    def test_mixed_precision_gradient(self):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            plain, reversed_ = self._pair(0.5)
            x = np.ones((2, 3), "float32")
            y = np.zeros((2, 1), "float32")
            g_plain = _grads(plain, x, y)
            g_rev = _grads(reversed_, x, y)
            self.assertEqual(reversed_.layers[2].compute_dtype, "float16")
            self.assertEqual(reversed_.layers[2].factor_variable.dtype, "float32")
            self.assertAllClose(g_rev[0], -0.5 * g_plain[0], atol=1e-3)
        finally:
            keras.mixed_precision.set_dtype_policy("float32")

    def test_save_and_load(self):
        inputs = keras.Input((3,))
        outputs = keras.layers.Dense(1)(GradientReversal(0.25)(inputs))
        model = keras.Model(inputs, outputs)
        model.layers[1].set_factor(0.75)
        path = os.path.join(self.get_temp_dir(), "grl.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        x = np.ones((2, 3), "float32")
        self.assertAllClose(loaded(x), model(x))
        self.assertAllClose(loaded.layers[1].factor_variable, 0.75)

    def test_get_config_reflects_factor_set_later(self):
        layer = GradientReversal(0.25)
        layer(np.ones((1, 2), "float32"))
        layer.set_factor(0.75)
        self.assertEqual(layer.get_config()["factor"], 0.75)
        self.assertEqual(GradientReversal.from_config(layer.get_config()).factor, 0.75)

    def test_schedule_is_computed_in_the_train_step(self):
        # loss = mean(w * x) with x = 1: through the reversal each SGD step
        # adds lr * factor_s to w, factor_s = max_factor * (2/(1+e^{-g s/T})-1).
        inputs = keras.Input((1,))
        dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")
        layer = GradientReversal(factor=0.0)
        model = keras.Model(inputs, layer(dense(inputs)))
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1.0),
            loss=lambda y_true, y_pred: ops.mean(y_pred),
        )
        layer.set_schedule(total_steps=4, gamma=10.0, max_factor=2.0)
        x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
        model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
        factors = [2.0 * (2 / (1 + np.exp(-10 * s / 4)) - 1) for s in range(4)]
        self.assertAllClose(dense.kernel, [[sum(factors)]], atol=1e-5)
        self.assertAllClose(layer.schedule_step, 4.0)
        self.assertAllClose(layer.factor, factors[-1], atol=1e-6)
        # Inference does not advance the schedule.
        model.predict(x, verbose=0)
        self.assertAllClose(layer.schedule_step, 4.0)
        layer.set_factor(0.5)
        self.assertAllClose(layer.schedule_steps, 0.0)

    def test_invalid_schedule_raises(self):
        layer = GradientReversal()
        with self.assertRaisesRegex(ValueError, "needs a built layer"):
            layer.set_schedule(10)
        layer.build((2, 3))
        with self.assertRaisesRegex(ValueError, "`total_steps` must be"):
            layer.set_schedule(0)
        with self.assertRaisesRegex(ValueError, "`schedule` must be a callable"):
            layer.set_schedule(4, schedule="dann")

    def test_set_factor_inside_an_epoch(self):
        # loss = mean(w * x), x = 1: each SGD step adds lr * factor to w.
        inputs = keras.Input((1,))
        dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")
        layer = GradientReversal(factor=0.0)
        model = keras.Model(inputs, layer(dense(inputs)))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss=lambda t, p: ops.mean(p))

        class SetFactor(keras.callbacks.Callback):
            def __init__(self, sync):
                super().__init__()
                self.sync = sync

            def on_train_batch_begin(self, batch, logs=None):
                if self.sync and hasattr(self.model, "jax_state_sync"):
                    self.model.jax_state_sync()
                layer.set_factor(float(batch + 1))

        x, y = np.ones((3, 1), "float32"), np.zeros((3, 1), "float32")
        model.fit(x, y, batch_size=1, shuffle=False, verbose=0, callbacks=[SetFactor(True)])
        self.assertAllClose(dense.kernel, [[1.0 + 2.0 + 3.0]])
        if keras.backend.backend() == "jax":
            # Without the sync the write would be lost: a clear error instead.
            with self.assertRaisesRegex(RuntimeError, "jax_state_sync"):
                model.fit(x, y, batch_size=1, shuffle=False, verbose=0, callbacks=[SetFactor(False)])
