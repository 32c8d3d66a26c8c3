import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.losses import CORAL
from keras_transfer.losses import MMD
from keras_transfer.losses import coral
from keras_transfer.models import DiscrepancyAlignmentModel
from tests.models.reference import BATCH_SIZES
from tests.models.reference import accuracy
from tests.models.reference import sparse_ce
from tests.testing import TestCase


def _parts():
    fe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu")])
    th = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    return fe, th


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 4)).astype("float32")
    xt = (rng.normal(size=(8, 4)) * 2 + 1.0).astype("float32")
    return xs, rng.integers(0, 3, 8), xt, rng.integers(0, 3, 8)


class DiscrepancyAlignmentModelTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("mmd", "mmd"), ("coral", "coral")
    )
    def test_fit_save_load(self, discrepancy):
        xs, ys, xt, yt = _data()
        model = DiscrepancyAlignmentModel(*_parts(), discrepancy=discrepancy, alignment_weight=2.0)
        model.compile(optimizer="adam")
        history = model.fit(
            {"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0,
            validation_data=({"target": xt}, {"target": yt}),
        )
        for key in ("loss", "task_loss", "alignment_loss", "source_accuracy", "val_target_accuracy"):
            self.assertIn(key, history.history)
        pred = model.predict(xt, verbose=0)
        path = os.path.join(self.get_temp_dir(), "align.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded.predict(xt, verbose=0), pred, atol=1e-6)
        self.assertEqual(type(loaded.discrepancy), type(model.discrepancy))
        loaded.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)

    def test_loss_is_task_plus_weighted_coral(self):
        xs, ys, xt, _ = _data()
        fe, th = _parts()
        model = DiscrepancyAlignmentModel(fe, th, discrepancy=CORAL(), alignment_weight=3.0)
        out = model({"source": xs, "target": xt})
        task = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(ys, out["source"])
        d = coral(fe(xs), fe(xt))
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        self.assertAllClose(loss, float(task) + 3.0 * float(d), atol=1e-5)
        model.set_alignment_weight(0.0)
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        self.assertAllClose(loss, task, atol=1e-6)

    def test_alignment_reduces_discrepancy(self):
        # A few steps with a large weight shrink the feature MMD.
        xs, ys, xt, _ = _data()
        keras.utils.set_random_seed(1)
        fe, th = _parts()
        model = DiscrepancyAlignmentModel(fe, th, discrepancy=MMD(bandwidth=2.0), alignment_weight=10.0)
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        before = float(MMD(bandwidth=2.0)(fe(xs), fe(xt)))
        model.fit({"source": xs, "target": xt}, ys, batch_size=8, epochs=30, verbose=0)
        after = float(MMD(bandwidth=2.0)(fe(xs), fe(xt)))
        self.assertLess(after, before / 2)

    @parameterized.named_parameters(
        ("name", {"discrepancy": "kl"}, "`discrepancy` must be one of"),
        ("weight", {"alignment_weight": float("nan")}, "`alignment_weight` must be"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            DiscrepancyAlignmentModel(*_parts(), **kwargs)

    def test_missing_target_raises(self):
        xs, ys, _, _ = _data()
        model = DiscrepancyAlignmentModel(*_parts())
        model.compile(optimizer="sgd")
        with self.assertRaisesRegex(ValueError, "target batches never arrived"):
            model.fit({"source": xs}, ys, epochs=1, verbose=0)


def _coral_np(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    cov = lambda x: np.cov(x, rowvar=False)  # noqa: E731  (unbiased)
    return np.sum((cov(a) - cov(b)) ** 2) / (4 * a.shape[1] ** 2)


class _SetWeight(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 2:
            self.model.set_alignment_weight(0.0)


class DiscrepancyAlignmentFiguresTest(TestCase, parameterized.TestCase):
    def _figures(self, model, xs, ys, xt, batch_size, weights):
        feats = lambda x: keras.ops.convert_to_numpy(model.feature_extractor(x))  # noqa: E731
        fs, ft = feats(xs), feats(xt)
        total = count = weighted = 0.0
        for b, start in enumerate(range(0, len(xs), batch_size)):
            sl = slice(start, start + batch_size)
            n = len(xs[sl])
            if n < 2:  # undefined on a batch of one: left out
                continue
            value = _coral_np(fs[sl], ft[sl])
            total += 2 * n * value
            weighted += 2 * n * weights(b) * value
            count += 2 * n
        logits = keras.ops.convert_to_numpy(model.predict(xs, verbose=0))
        task = sparse_ce(ys, logits).mean()
        return task, total / count, task + weighted / count, accuracy(ys, logits)

    @parameterized.parameters(*BATCH_SIZES)
    def test_fit_figures_at_batch_size(self, batch_size):
        xs, ys, xt, _ = _data()
        xs, xt, ys = np.r_[xs, xs[:5]], np.r_[xt, xt[:5]], np.r_[ys, ys[:5]]  # 13
        model = DiscrepancyAlignmentModel(*_parts(), discrepancy="coral", alignment_weight=0.5)
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        history = model.fit({"source": xs, "target": xt}, ys, batch_size=batch_size,
                            epochs=1, shuffle=False, verbose=0)
        task, alignment, loss, acc = self._figures(model, xs, ys, xt, batch_size, lambda b: 0.5)
        self.assertAllClose(history.history["task_loss"][0], task, atol=1e-5)
        self.assertAllClose(history.history["alignment_loss"][0], alignment, atol=1e-5)
        self.assertAllClose(history.history["loss"][0], loss, atol=1e-5)
        self.assertAllClose(history.history["source_accuracy"][0], acc)

    def test_weight_set_mid_epoch_reaches_the_step(self):
        # Regression (JAX): a value set from a callback inside an epoch was
        # overwritten by the training loop's own copy of the variables.
        xs, ys, xt, _ = _data()
        model = DiscrepancyAlignmentModel(*_parts(), discrepancy="coral", alignment_weight=1.0)
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        history = model.fit({"source": xs, "target": xt}, ys, batch_size=2, epochs=1,
                            shuffle=False, verbose=0, callbacks=[_SetWeight()])
        _, _, loss, _ = self._figures(model, xs, ys, xt, 2, lambda b: 1.0 if b < 2 else 0.0)
        self.assertAllClose(history.history["loss"][0], loss, atol=1e-5)
        self.assertEqual(model.get_config()["alignment_weight"], 0.0)

    def test_batch_of_one_gives_finite_weights(self):
        xs, ys, xt, _ = _data()
        for discrepancy in ("mmd", "coral"):
            model = DiscrepancyAlignmentModel(*_parts(), discrepancy=discrepancy)
            model.compile(optimizer="sgd", metrics=["accuracy"])
            history = model.fit({"source": xs[:5], "target": xt[:5]}, ys[:5], batch_size=4, verbose=0)
            self.assertTrue(np.isfinite(history.history["loss"][0]))
            for weight in model.weights:
                self.assertTrue(np.isfinite(keras.ops.convert_to_numpy(weight)).all())
