import math
import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized
from keras import ops

from keras_transfer.regularizers import L2SPModel
from keras_transfer.regularizers import apply_l2sp
from tests.testing import TestCase


@keras.saving.register_keras_serializable(package="keras_transfer_tests")
def zero_loss(y_true, y_pred):
    # Zero with a zero gradient: one SGD step then moves the weights by the
    # L2-SP penalty's gradient alone.
    return ops.sum(y_pred) * 0.0


def _net(seed=0, name="net"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="base_dense")(inputs)
    x = keras.layers.BatchNormalization(name="base_bn")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 3)).astype("float32"),
        rng.normal(size=(n, 2)).astype("float32"),
    )


def _np(v):
    return ops.convert_to_numpy(v).astype("float64")


class L2SPModelTest(TestCase, parameterized.TestCase):
    def test_penalty_matches_numpy(self):
        net = _net()
        model = apply_l2sp(net, head=["head"], alpha=0.3, beta=0.7)
        w0 = [_np(w) for w in model.anchored_weights]
        rng = np.random.default_rng(1)
        for w in model.anchored_weights + model.head_weights:
            w.assign(rng.normal(size=w.shape).astype("float32"))
        expected = 0.15 * sum(
            ((_np(w) - a) ** 2).sum() for w, a in zip(model.anchored_weights, w0)
        ) + 0.35 * sum((_np(w) ** 2).sum() for w in model.head_weights)
        self.assertAllClose(ops.convert_to_numpy(model.penalty()), expected, rtol=1e-5)
        drift = math.sqrt(sum(((_np(w) - a) ** 2).sum()
                              for w, a in zip(model.anchored_weights, w0)))
        self.assertAllClose(model.weight_drift(), drift, rtol=1e-6)

    def test_anchors_exclude_moving_statistics_and_head(self):
        net = _net()
        model = apply_l2sp(net, head=["head"], beta=0.0)
        paths = [w.path for w in model.anchored_weights]
        self.assertEqual(
            paths,
            ["base_dense/kernel", "base_dense/bias", "base_bn/gamma", "base_bn/beta"],
        )
        self.assertEqual([w.path for w in model.head_weights], ["head/kernel", "head/bias"])
        # Zero drift right after wrapping: w0 is the current weights.
        self.assertEqual(float(ops.convert_to_numpy(model.penalty())), 0.0)

    def test_frozen_layers_are_still_anchored(self):
        net = _net()
        net.get_layer("base_dense").trainable = False
        model = apply_l2sp(net, layers=["base_dense"])
        self.assertEqual(
            [w.path for w in model.anchored_weights],
            ["base_dense/kernel", "base_dense/bias"],
        )

    def test_sgd_step_is_alpha_times_drift(self):
        # d/dw [alpha/2 ||w - w0||^2] = alpha (w - w0); d/dw [beta/2 ||w||^2]
        # = beta w. With a zero data loss, SGD(lr) moves w by exactly
        # -lr * gradient.
        alpha, beta, lr = 0.4, 0.25, 0.5
        net = _net()
        model = apply_l2sp(net, head=["head"], alpha=alpha, beta=beta)
        w0 = [_np(w) for w in model.anchored_weights]
        rng = np.random.default_rng(2)
        for w in model.anchored_weights + model.head_weights:
            w.assign(rng.normal(size=w.shape).astype("float32"))
        before = [_np(w) for w in model.anchored_weights]
        head_before = [_np(w) for w in model.head_weights]
        model.compile(keras.optimizers.SGD(lr), zero_loss)
        x, y = _data()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        for w, b, a in zip(model.anchored_weights, before, w0):
            self.assertAllClose(_np(w), b - lr * alpha * (b - a), atol=1e-6)
        for w, b in zip(model.head_weights, head_before):
            self.assertAllClose(_np(w), b - lr * beta * b, atol=1e-6)

    def test_alpha_pulls_towards_pretrained_weights(self):
        x, y = _data(32)
        drifts = {}
        for alpha in (0.0, 10.0):
            model = apply_l2sp(_net(), head=["head"], alpha=alpha, beta=0.0)
            model.compile(keras.optimizers.SGD(0.05), "mse")
            model.fit(x, y, batch_size=8, epochs=3, verbose=0)
            drifts[alpha] = model.weight_drift()
        self.assertGreater(drifts[0.0], 0.0)
        self.assertLess(drifts[10.0], 0.5 * drifts[0.0])

    def test_penalty_is_reported_and_added_to_loss(self):
        net = _net()
        model = apply_l2sp(net, head=["head"], alpha=1.0, beta=0.0)
        for w in model.anchored_weights:
            w.assign(ops.convert_to_numpy(w) + 1.0)
        model.compile(keras.optimizers.SGD(0.0), "mse")
        x, y = _data()
        logs = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
        penalty = float(ops.convert_to_numpy(model.penalty()))
        mse = float(np.mean((ops.convert_to_numpy(net(x)) - y) ** 2))
        # 12 + 4 + 4 + 4 weights, each 1 away from w0: 0.5 * 24 = 12.
        self.assertAllClose(penalty, 12.0)
        self.assertAllClose(logs["l2sp_penalty"], 12.0)
        self.assertAllClose(logs["loss"], mse + 12.0, rtol=1e-5)

    def test_save_load_keeps_w0_and_training_continues(self):
        net = _net()
        model = apply_l2sp(net, head=["head"], alpha=0.5, beta=0.1)
        w0 = [_np(a) for a in model.anchors]
        model.compile(keras.optimizers.Adam(0.05), "mse")
        x, y = _data(16)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        path = os.path.join(self.get_temp_dir(), "l2sp.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, L2SPModel)
        for a, b in zip(loaded.anchors, w0):
            self.assertAllClose(_np(a), b)
        self.assertAllClose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
        self.assertAllClose(loaded.weight_drift(), model.weight_drift(), rtol=1e-6)
        self.assertGreater(loaded.weight_drift(), 0.0)
        self.assertEqual(loaded.get_config()["head"], ["head"])
        before = [_np(w) for w in loaded.anchored_weights]
        history = loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))
        self.assertFalse(np.allclose(_np(loaded.anchored_weights[0]), before[0]))
        for a, b in zip(loaded.anchors, w0):
            self.assertAllClose(_np(a), b)

    def test_config_round_trip(self):
        model = apply_l2sp(_net(), layers=["base_dense", "base_bn"], head=["head"],
                           alpha=0.2, beta=0.3)
        config = model.get_config()
        clone = L2SPModel.from_config(config)
        self.assertEqual(clone.get_config()["alpha"], 0.2)
        self.assertEqual(clone.get_config()["layers"], ["base_dense", "base_bn"])
        self.assertEqual(len(clone.anchors), 4)

    def test_nested_base(self):
        keras.utils.set_random_seed(0)
        base = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4, name="inner")], name="base"
        )
        inputs = keras.Input((3,))
        outputs = keras.layers.Dense(2, name="head")(base(inputs))
        net = keras.Model(inputs, outputs)
        model = apply_l2sp(net, layers=[base], head=[net.layers[-1]])
        self.assertEqual([w.path for w in model.anchored_weights],
                         ["base/inner/kernel", "base/inner/bias"])

    def test_mixed_precision(self):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            net = _net()
            model = apply_l2sp(net, head=["head"], alpha=0.5, beta=0.1)
            self.assertEqual(model.anchors[0].dtype, "float32")
            model.compile(keras.optimizers.SGD(0.1), "mse")
            x, y = _data(16)
            history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
            self.assertTrue(np.isfinite(history.history["loss"]).all())
            self.assertGreater(history.history["l2sp_penalty"][-1], 0.0)
            self.assertEqual(ops.convert_to_numpy(model.predict(x, verbose=0)).dtype,
                             np.float16)
        finally:
            keras.mixed_precision.set_dtype_policy("float32")

    @parameterized.named_parameters(
        ("negative_alpha", {"alpha": -0.1}, "`alpha` must be a finite, non-negative number.*alpha=-0.1"),
        ("nan_beta", {"beta": float("nan")}, "`beta` must be a finite, non-negative number.*beta=nan"),
        ("string_alpha", {"alpha": "0.1"}, "`alpha`.*Received: alpha='0.1'"),
        ("unknown_layer", {"layers": ["nope"]}, "`layers` names layer 'nope'.*Available layers"),
        ("overlap", {"layers": ["head"], "head": ["head"]}, "both transferred.*\\['head'\\]"),
        ("no_weights", {"layers": []}, "selects no weight"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            L2SPModel(_net(), **kwargs)

    def test_foreign_layer_raises(self):
        with self.assertRaisesRegex(ValueError, "not part of model 'net'"):
            L2SPModel(_net(), layers=[keras.layers.Dense(2, name="stranger")])

    def test_unbuilt_model_raises(self):
        with self.assertRaisesRegex(ValueError, "`model` must be built"):
            L2SPModel(keras.Sequential([keras.layers.Dense(2)]))
        with self.assertRaisesRegex(ValueError, "`model` must be a `keras.Model`"):
            L2SPModel(keras.layers.Dense(2))


@pytest.mark.large
class L2SPForgettingTest(TestCase):
    def test_l2sp_reduces_forgetting_on_digits(self):
        # Source task: sklearn digits 0-4; target task: digits 5-9 with a new
        # head. Fine-tuning the shared base on the target erodes the source
        # task; L2-SP should keep more of it (accuracy of the untouched
        # source head on the fine-tuned base) and move the base less.

        from sklearn.datasets import load_digits as sk_digits

        data = sk_digits()
        x = (data.data / 16.0).astype("float32")
        y = data.target.astype("int32")
        src, tgt = y < 5, y >= 5
        keras.utils.set_random_seed(0)
        base = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(64, activation="relu", name="b1"),
             keras.layers.Dense(32, activation="relu", name="b2")], name="base")
        source_head = keras.layers.Dense(5, activation="softmax", name="source_head")
        source = keras.Sequential([base, source_head])
        source.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                       metrics=["accuracy"])
        source.fit(x[src], y[src], epochs=15, batch_size=64, verbose=0)
        pretrained = base.get_weights()
        source_acc = source.evaluate(x[src], y[src], verbose=0)[1]
        self.assertGreater(source_acc, 0.95)

        results = {}
        for alpha in (0.0, 0.1):
            base.set_weights(pretrained)
            keras.utils.set_random_seed(1)
            head = keras.layers.Dense(5, activation="softmax", name=f"target_head_{int(alpha)}")
            target = keras.Sequential([base, head])
            target.build((None, 64))
            model = apply_l2sp(target, layers=[base], head=[head], alpha=alpha, beta=0.0)
            model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            model.fit(x[tgt], y[tgt] - 5, epochs=15, batch_size=64, verbose=0)
            target_acc = model.evaluate(x[tgt], y[tgt] - 5, verbose=0)[1]
            kept = source.evaluate(x[src], y[src], verbose=0)[1]
            results[alpha] = (model.weight_drift(), kept, target_acc)
        print("drift, source accuracy kept, target accuracy:", results)
        drift_plain, kept_plain, target_plain = results[0.0]
        drift_l2sp, kept_l2sp, target_l2sp = results[0.1]
        self.assertLess(drift_l2sp, 0.5 * drift_plain)
        self.assertGreater(kept_l2sp, kept_plain + 0.05)
        # It still learns the target task.
        self.assertGreater(target_l2sp, 0.9)
