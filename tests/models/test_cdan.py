import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.callbacks import GradientReversalScheduler
from keras_transfer.models import CDANModel
from tests.testing import TestCase


def _parts(domain_in=18):
    fe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"), keras.layers.BatchNormalization()])
    th = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    dh = keras.Sequential([keras.Input((domain_in,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(1)])
    return fe, th, dh


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 4)).astype("float32")
    xt = (rng.normal(size=(6, 4)) + 1.0).astype("float32")
    return xs, rng.integers(0, 3, 8), xt, rng.integers(0, 3, 6)


def _numpy_dense(layer, x):
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    return x @ kernel + bias


def _reference_domain_loss(model, xs, xt, entropy_conditioning):
    x = np.concatenate([xs, xt])
    f = keras.ops.convert_to_numpy(model.feature_extractor(x))
    logits = _numpy_dense(model.task_head.layers[0], f)
    g = np.exp(logits - logits.max(1, keepdims=True))
    g /= g.sum(1, keepdims=True)
    joint = np.einsum("nk,nd->nkd", g, f).reshape(len(x), -1)
    if model.randomized_map is not None:
        rf = keras.ops.convert_to_numpy(model.randomized_map.feature_projection)
        rg = keras.ops.convert_to_numpy(model.randomized_map.prediction_projection)
        joint = (f @ rf) * (g @ rg) / np.sqrt(rf.shape[1])
    hidden = np.maximum(_numpy_dense(model.domain_head.layers[0], joint), 0)
    d = _numpy_dense(model.domain_head.layers[1], hidden)[:, 0]
    labels = np.r_[np.zeros(len(xs)), np.ones(len(xt))]
    p = 1 / (1 + np.exp(-d))
    bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    w = 1 + np.exp(np.sum(g * np.log(g), 1)) if entropy_conditioning else np.ones(len(x))
    s, t = labels == 0, labels == 1
    return 0.5 * (np.sum(w[s] * bce[s]) / w[s].sum() + np.sum(w[t] * bce[t]) / w[t].sum())


class CDANModelTest(TestCase, parameterized.TestCase):
    def test_fit_predict_metrics_save_load(self):
        xs, ys, xt, yt = _data()
        model = CDANModel(*_parts(), factor=0.5)
        model.compile(optimizer="sgd")
        history = model.fit(
            {"source": xs[:4], "target": xt[:4]}, ys[:4], batch_size=2, epochs=1, verbose=0,
            validation_data=({"target": xt}, {"target": yt}),
            callbacks=[GradientReversalScheduler("dann")],
        )
        for key in ("loss", "task_loss", "source_accuracy", "domain_loss", "domain_accuracy", "val_target_accuracy", "grl_factor"):
            self.assertIn(key, history.history)
        pred = model.predict(xt, verbose=0)
        self.assertEqual(pred.shape, (6, 3))
        val = model.evaluate({"target": xt}, {"target": yt}, return_dict=True, verbose=0)
        self.assertAllClose(val["target_accuracy"], np.mean(pred.argmax(-1) == yt))

        revived = CDANModel.from_config(model.get_config())
        self.assertTrue(revived.entropy_conditioning)
        path = os.path.join(self.get_temp_dir(), "cdan.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, CDANModel)
        self.assertAllClose(loaded.predict(xt, verbose=0), pred, atol=1e-6)
        self.assertAllClose(loaded.gradient_reversal.factor_variable, model.gradient_reversal.factor_variable)
        loaded.fit({"source": xs[:4], "target": xt[:4]}, ys[:4], batch_size=2, epochs=1, verbose=0)

    @parameterized.named_parameters(
        ("cdan_e", True, None),
        ("cdan", False, None),
        ("randomized", True, 7),
    )
    def test_loss_matches_numpy(self, entropy_conditioning, randomized_dim):
        xs, ys, xt, _ = _data()
        model = CDANModel(
            *_parts(18 if randomized_dim is None else randomized_dim),
            domain_loss_weight=0.5, entropy_conditioning=entropy_conditioning,
            randomized_dim=randomized_dim, seed=3,
        )
        out = model({"source": xs, "target": xt})
        task = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(ys, out["source"])
        domain = _reference_domain_loss(model, xs, xt, entropy_conditioning)
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        self.assertAllClose(loss, float(task) + 0.5 * domain, atol=1e-5)

    def test_information_weight_adds_target_information_maximization(self):
        xs, ys, xt, _ = _data()
        model = CDANModel(*_parts(), domain_loss_weight=0.5, information_weight=0.8)
        out = model({"source": xs, "target": xt})
        task = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(ys, out["source"])
        domain = _reference_domain_loss(model, xs, xt, True)
        z = keras.ops.convert_to_numpy(out["target"]).astype(np.float64)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        im = np.mean(-np.sum(p * np.log(p), 1)) + np.sum(p.mean(0) * np.log(p.mean(0)))
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        self.assertAllClose(loss, float(task) + 0.5 * domain + 0.8 * im, atol=1e-5)
        self.assertAllClose(model.information_loss_tracker.result(), im, atol=1e-5)
        self.assertEqual(CDANModel.from_config(model.get_config()).information_weight, 0.8)

    def test_entropy_weights(self):
        xs, _, xt, _ = _data()
        model = CDANModel(*_parts())
        out = model({"source": xs, "target": xt})
        g = keras.ops.convert_to_numpy(keras.ops.softmax(model.task_head(model.feature_extractor(np.concatenate([xs, xt])))))
        expected = 1 + np.exp(np.sum(g * np.log(g), 1))
        self.assertAllClose(out["domain_weights"], expected, atol=1e-6)
        # Bounds: 1 + 1/K (uniform prediction) <= w <= 2 (one-hot).
        self.assertTrue(np.all(expected >= 1 + 1 / 3 - 1e-6) and np.all(expected <= 2))

    def test_mixed_precision_fit(self):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            xs, ys, xt, _ = _data()
            model = CDANModel(*_parts())
            model.compile(optimizer="sgd")
            history = model.fit({"source": xs[:4], "target": xt[:4]}, ys[:4], batch_size=2, epochs=1, verbose=0)
            self.assertTrue(np.isfinite(history.history["loss"][0]))
        finally:
            keras.mixed_precision.set_dtype_policy("float32")

    @parameterized.named_parameters(
        ("entropy", {"entropy_conditioning": "yes"}, "`entropy_conditioning` must be"),
        ("randomized", {"randomized_dim": 0}, "`randomized_dim` must be"),
        ("seed", {"seed": -1}, "`seed` must be"),
        ("factor", {"factor": -1.0}, "`factor` must be"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            CDANModel(*_parts(), **kwargs)

    def test_target_labels_in_training_raise(self):
        xs, ys, xt, yt = _data()
        model = CDANModel(*_parts())
        model.compile(optimizer="sgd")
        with self.assertRaisesRegex(ValueError, "Target labels must not be used"):
            model.fit({"source": xs[:6], "target": xt}, {"source": ys[:6], "target": yt}, epochs=1, verbose=0)
