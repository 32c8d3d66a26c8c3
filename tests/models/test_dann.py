import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.callbacks import GradientReversalScheduler
from keras_transfer.models import DomainAdversarialModel
from tests.testing import TestCase


def _parts():
    fe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"), keras.layers.BatchNormalization()])
    th = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    dh = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    return fe, th, dh


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 4)).astype("float32")
    xt = (rng.normal(size=(8, 4)) + 1.0).astype("float32")
    return xs, rng.integers(0, 3, 8), xt, rng.integers(0, 3, 8)


class DomainAdversarialModelTest(TestCase, parameterized.TestCase):
    def test_fit_predict_metrics_save_load(self):
        xs, ys, xt, yt = _data()
        model = DomainAdversarialModel(*_parts(), factor=0.5)
        model.compile(optimizer="sgd")
        history = model.fit(
            {"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0,
            validation_data=({"target": xt}, {"target": yt}),
            callbacks=[GradientReversalScheduler("dann")],
        )
        for key in ("loss", "task_loss", "source_accuracy", "domain_loss", "domain_accuracy", "val_target_accuracy", "grl_factor"):
            self.assertIn(key, history.history)
        self.assertNotIn("target_accuracy", history.history)
        pred = model.predict(xt, verbose=0)
        self.assertEqual(pred.shape, (8, 3))
        val = model.evaluate({"target": xt}, {"target": yt}, return_dict=True, verbose=0)
        self.assertAllClose(val["target_accuracy"], np.mean(pred.argmax(-1) == yt))
        plain = model.evaluate(xt, yt, return_dict=True, verbose=0)
        self.assertAllClose(plain["accuracy"], val["target_accuracy"])

        revived = DomainAdversarialModel.from_config(model.get_config())
        self.assertEqual(revived.domain_loss_weight, 1.0)
        path = os.path.join(self.get_temp_dir(), "dann.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded.predict(xt, verbose=0), pred, atol=1e-6)
        self.assertAllClose(
            loaded.gradient_reversal.factor_variable,
            model.gradient_reversal.factor_variable,
        )
        loaded.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)

    def test_loss_is_task_plus_weighted_domain_loss(self):
        xs, ys, xt, _ = _data()
        model = DomainAdversarialModel(*_parts(), domain_loss_weight=0.5)
        out = model({"source": xs, "target": xt})
        task = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(ys, out["source"])
        logits = keras.ops.convert_to_numpy(out["domain"])[:, 0]
        labels = np.r_[np.zeros(8), np.ones(8)]
        p = 1 / (1 + np.exp(-logits))
        bce = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        self.assertAllClose(loss, float(task) + 0.5 * bce, atol=1e-5)

    def test_feature_gradient_is_reversed(self):
        # With task loss weight 0 (no source labels in eval) the domain loss
        # alone: the domain head descends it, the features ascend it.
        import tensorflow as tf

        if keras.backend.backend() != "tensorflow":
            self.skipTest("gradient check uses tf.GradientTape")
        xs, ys, xt, _ = _data()
        fe, th, dh = _parts()
        model = DomainAdversarialModel(fe, th, dh, factor=2.0)
        model({"source": xs, "target": xt})
        inputs = {"source": xs, "target": xt}
        with tf.GradientTape() as tape:
            out = model(inputs, training=False)
            loss = model._alignment_loss(out)
        g_rev = tape.gradient(loss, fe.trainable_weights[0])
        model.gradient_reversal.set_factor(0.0)
        model.gradient_reversal.set_factor(2.0)
        # Reference: the same loss without the reversal layer.
        with tf.GradientTape() as tape:
            feats = fe(np.concatenate([xs, xt]), training=False)
            logits = dh(feats)
            labels = np.r_[np.zeros((8, 1)), np.ones((8, 1))].astype("float32")
            ref = keras.ops.mean(keras.losses.binary_crossentropy(labels, logits, from_logits=True))
        g_ref = tape.gradient(ref, fe.trainable_weights[0])
        self.assertAllClose(g_rev, -2.0 * g_ref.numpy(), atol=1e-6)

    def test_missing_target_batches_raise(self):
        xs, ys, _, _ = _data()
        model = DomainAdversarialModel(*_parts())
        model.compile(optimizer="sgd")
        with self.assertRaisesRegex(ValueError, "target batches never arrived"):
            model.fit({"source": xs}, ys, epochs=1, verbose=0)

    def test_target_labels_in_training_raise(self):
        xs, ys, xt, yt = _data()
        model = DomainAdversarialModel(*_parts())
        model.compile(optimizer="sgd")
        with self.assertRaisesRegex(ValueError, "Target labels must not be used"):
            model.fit({"source": xs, "target": xt}, {"source": ys, "target": yt}, epochs=1, verbose=0)

    @parameterized.named_parameters(
        ("negative_factor", {"factor": -1.0}, "`factor` must be"),
        ("nan_factor", {"factor": float("nan")}, "`factor` must be"),
        ("weight", {"domain_loss_weight": -0.1}, "`domain_loss_weight` must be"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            DomainAdversarialModel(*_parts(), **kwargs)

    def test_not_a_model_raises(self):
        fe, th, _ = _parts()
        with self.assertRaisesRegex(ValueError, "`domain_head` must be a Keras"):
            DomainAdversarialModel(fe, th, "dense")

    def test_mixed_precision_fit(self):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            xs, ys, xt, _ = _data()
            model = DomainAdversarialModel(*_parts())
            model.compile(optimizer="sgd")
            history = model.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)
            self.assertTrue(np.isfinite(history.history["loss"][0]))
        finally:
            keras.mixed_precision.set_dtype_policy("float32")
