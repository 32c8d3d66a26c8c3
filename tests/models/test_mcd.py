import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.models import MCDModel
from keras_transfer.models.mcd import classifier_discrepancy
from tests.testing import TestCase


def _parts():
    fe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"), keras.layers.BatchNormalization()])
    h1 = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    h2 = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    return fe, h1, h2


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 4)).astype("float32")
    xt = (rng.normal(size=(8, 4)) + 1.0).astype("float32")
    return xs, rng.integers(0, 3, 8), xt, rng.integers(0, 3, 8)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _ce(labels, logits):
    return -np.mean(np.log(_softmax(logits)[np.arange(len(labels)), labels]))


class MCDModelTest(TestCase, parameterized.TestCase):
    def test_fit_predict_metrics_save_load(self):
        xs, ys, xt, yt = _data()
        model = MCDModel(*_parts(), factor=2.0)
        model.compile(optimizer="adam")
        history = model.fit(
            {"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0,
            validation_data=({"target": xt}, {"target": yt}),
        )
        for key in ("loss", "task_loss", "task_loss_2", "source_accuracy", "discrepancy", "val_target_accuracy"):
            self.assertIn(key, history.history)
        pred = model.predict(xt, verbose=0)
        self.assertEqual(pred.shape, (8, 3))
        val = model.evaluate({"target": xt}, {"target": yt}, return_dict=True, verbose=0)
        self.assertAllClose(val["target_accuracy"], np.mean(pred.argmax(-1) == yt))

        revived = MCDModel.from_config(model.get_config())
        self.assertEqual(revived.factor, 2.0)
        path = os.path.join(self.get_temp_dir(), "mcd.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, MCDModel)
        self.assertAllClose(loaded.predict(xt, verbose=0), pred, atol=1e-6)
        self.assertAllClose(loaded.task_head_2(np.ones((1, 6))), model.task_head_2(np.ones((1, 6))))
        loaded.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)

    def test_discrepancy_is_mean_l1_of_softmax(self):
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
        self.assertAllClose(classifier_discrepancy(a, b), np.mean(np.abs(_softmax(a) - _softmax(b))))
        self.assertAllClose(classifier_discrepancy(a, a), 0.0)

    def test_loss_matches_numpy(self):
        xs, ys, xt, _ = _data()
        fe, h1, h2 = _parts()
        model = MCDModel(fe, h1, h2, discrepancy_weight=0.5)
        out = model({"source": xs, "target": xt})
        fs = keras.ops.convert_to_numpy(fe(xs))
        ft = keras.ops.convert_to_numpy(fe(xt))
        l1s, l2s = (keras.ops.convert_to_numpy(h(fs)) for h in (h1, h2))
        l1t, l2t = (keras.ops.convert_to_numpy(h(ft)) for h in (h1, h2))
        expected = _ce(ys, l1s) + _ce(ys, l2s) - 0.5 * np.mean(np.abs(_softmax(l1t) - _softmax(l2t)))
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        self.assertAllClose(loss, expected, atol=1e-5)

    def test_gradients_of_the_three_steps(self):
        # Heads: gradient of CE - w d (steps A + B); features: of CE +
        # factor * w d (steps A + C), checked term by term.
        import tensorflow as tf

        if keras.backend.backend() != "tensorflow":
            self.skipTest("gradient check uses tf.GradientTape")
        xs, ys, xt, _ = _data()
        fe, h1, h2 = _parts()
        model = MCDModel(fe, h1, h2, factor=3.0, discrepancy_weight=0.5)
        model({"source": xs, "target": xt})
        with tf.GradientTape() as tape:
            out = model({"source": xs, "target": xt}, training=False)
            loss = model._alignment_loss(out)
        grads = tape.gradient(loss, [h1.trainable_weights[0], fe.trainable_weights[0]])
        with tf.GradientTape(persistent=True) as tape:
            ft = fe(xt, training=False)
            d = classifier_discrepancy(h1(ft), h2(ft))
        ref_head = tape.gradient(d, h1.trainable_weights[0])
        ref_feat = tape.gradient(d, fe.trainable_weights[0])
        self.assertAllClose(grads[0], -0.5 * ref_head.numpy(), atol=1e-6)
        self.assertAllClose(grads[1], 3.0 * 0.5 * ref_feat.numpy(), atol=1e-6)

    def test_mixed_precision_fit(self):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            xs, ys, xt, _ = _data()
            model = MCDModel(*_parts())
            model.compile(optimizer="sgd")
            history = model.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)
            self.assertTrue(np.isfinite(history.history["loss"][0]))
        finally:
            keras.mixed_precision.set_dtype_policy("float32")

    @parameterized.named_parameters(
        ("factor", {"factor": -1.0}, "`factor` must be"),
        ("weight", {"discrepancy_weight": float("nan")}, "`discrepancy_weight` must be"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            MCDModel(*_parts(), **kwargs)

    def test_same_head_twice_raises(self):
        fe, h1, _ = _parts()
        with self.assertRaisesRegex(ValueError, "second head with its own weights"):
            MCDModel(fe, h1, h1)

    def test_missing_target_batches_raise(self):
        xs, ys, _, _ = _data()
        model = MCDModel(*_parts())
        model.compile(optimizer="sgd")
        with self.assertRaisesRegex(ValueError, "target batches never arrived"):
            model.fit({"source": xs}, ys, epochs=1, verbose=0)
