import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.losses import CORAL
from keras_transfer.losses import MMD
from keras_transfer.losses import coral
from keras_transfer.models import DiscrepancyAlignmentModel
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
