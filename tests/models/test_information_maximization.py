import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.models import InformationMaximizationModel
from keras_transfer.models.information_maximization import cluster_pseudo_labels
from tests.testing import TestCase


def _parts():
    fe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu")])
    head = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    return fe, head


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


def _np_pseudo_labels(f, logits):
    # SHOT's obtain_label: features with a 1 appended, L2-normalised, a
    # probability-weighted centroid pass, then one hard k-means pass.
    f = np.concatenate([f, np.ones((len(f), 1))], 1).astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    p = _softmax(logits.astype(np.float64))

    def nearest(w, present):
        c = (w.T @ f) / np.maximum(w.sum(0)[:, None], 1e-12)
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        sim = f @ c.T
        sim[:, ~present] = -2.0
        return sim.argmax(1)

    labels = nearest(p, np.ones(p.shape[1], bool))
    onehot = np.eye(p.shape[1])[labels]
    return nearest(onehot, onehot.sum(0) > 0)


class InformationMaximizationModelTest(TestCase, parameterized.TestCase):
    def test_pseudo_labels_match_numpy(self):
        rng = np.random.default_rng(1)
        f = np.abs(rng.normal(size=(12, 5))).astype("float32")
        logits = rng.normal(size=(12, 4)).astype("float32") * 2
        got = keras.ops.convert_to_numpy(cluster_pseudo_labels(f, logits))
        self.assertAllEqual(got, _np_pseudo_labels(f, logits))
        # Two feature clusters; the head is wrong on one example (index 2),
        # which the clustering moves back to its cluster's class.
        f = np.array([[1, 0], [0.9, 0.1], [0.95, 0.05], [0, 1], [0.1, 0.9], [0.05, 0.95]], "float32")
        logits = np.array([[4, 0], [4, 0], [0, 1], [0, 4], [0, 4], [0, 4]], "float32")
        labels = keras.ops.convert_to_numpy(cluster_pseudo_labels(f, logits))
        self.assertAllEqual(labels, [0, 0, 0, 1, 1, 1])

    @parameterized.named_parameters(("im", 0.0), ("shot", 0.3))
    def test_loss_matches_numpy(self, pseudo_label_weight):
        xs, ys, xt, _ = _data()
        fe, head = _parts()
        model = InformationMaximizationModel(
            fe, head, information_weight=0.7, diversity_weight=0.5,
            pseudo_label_weight=pseudo_label_weight)
        out = model({"source": xs, "target": xt})
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        ft = keras.ops.convert_to_numpy(fe(xt)).astype(np.float64)
        ls = keras.ops.convert_to_numpy(head(fe(xs))).astype(np.float64)
        lt = keras.ops.convert_to_numpy(head(fe(xt))).astype(np.float64)
        p = _softmax(lt)
        im = np.mean(-np.sum(p * np.log(p), 1)) - 0.5 * -np.sum(p.mean(0) * np.log(p.mean(0)))
        expected = _ce(ys, ls) + 0.7 * im
        if pseudo_label_weight:
            expected += 0.3 * _ce(_np_pseudo_labels(ft, lt), lt)
        self.assertAllClose(loss, expected, atol=1e-5)
        self.assertAllClose(model.information_loss_tracker.result(), im, atol=1e-5)

    def test_fit_metrics_save_load_continue(self):
        xs, ys, xt, yt = _data()
        model = InformationMaximizationModel(*_parts(), pseudo_label_weight=0.3)
        model.compile(optimizer="adam", metrics=["accuracy"])
        history = model.fit(
            {"source": xs, "target": xt[:6]}, ys, batch_size=4, epochs=1, verbose=0,
            validation_data=({"target": xt}, {"target": yt}),
        )
        for key in ("loss", "task_loss", "source_accuracy", "information_loss",
                    "pseudo_label_loss", "val_target_accuracy"):
            self.assertIn(key, history.history)
        pred = model.predict(xt, verbose=0)
        model.set_information_weight(0.25)
        path = os.path.join(self.get_temp_dir(), "im.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, InformationMaximizationModel)
        self.assertEqual(loaded.information_weight, 0.25)
        self.assertEqual(loaded.pseudo_label_weight, 0.3)
        self.assertAllClose(loaded.predict(xt, verbose=0), pred, atol=1e-6)
        loaded.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)

    def test_information_weight_set_during_fit_is_used(self):
        # Weight 0 mid-training: the loss is the task loss alone.
        xs, ys, xt, _ = _data()
        model = InformationMaximizationModel(*_parts(), information_weight=2.0)
        model.compile(optimizer="sgd")
        model.fit({"source": xs, "target": xt}, ys, batch_size=8, epochs=1, verbose=0)
        model.set_information_weight(0.0)
        history = model.fit({"source": xs, "target": xt}, ys, batch_size=8, epochs=1, verbose=0)
        self.assertAllClose(history.history["loss"][0], history.history["task_loss"][0], atol=1e-6)

    def test_mixed_precision_fit(self):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            xs, ys, xt, _ = _data()
            model = InformationMaximizationModel(*_parts(), pseudo_label_weight=0.3)
            model.compile(optimizer="sgd")
            history = model.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)
            self.assertTrue(np.isfinite(history.history["loss"][0]))
        finally:
            keras.mixed_precision.set_dtype_policy("float32")

    @parameterized.named_parameters(
        ("information", {"information_weight": -1.0}, "`information_weight` must be"),
        ("diversity", {"diversity_weight": float("nan")}, "`diversity_weight` must be"),
        ("pseudo", {"pseudo_label_weight": "0.3"}, "`pseudo_label_weight` must be"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            InformationMaximizationModel(*_parts(), **kwargs)

    def test_target_labels_in_training_raise(self):
        xs, ys, xt, yt = _data()
        model = InformationMaximizationModel(*_parts())
        model.compile(optimizer="sgd")
        with self.assertRaisesRegex(ValueError, "Target labels must not be used"):
            model.fit({"source": xs, "target": xt}, {"source": ys, "target": yt}, epochs=1, verbose=0)
