import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.callbacks import GradientReversalScheduler
from keras_transfer.models import CDANModel
from keras_transfer.models import InformationMaximizationModel
from keras_transfer.models import self_training_loss
from tests.testing import TestCase


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _np_self_training(ls, lt, lst, tau, relative, alignment):
    # AdaMatch (Berthelot et al. 2022), Algorithm 1, without its random
    # logit interpolation: distribution alignment, relative threshold.
    ps, pt = _softmax(ls.astype(np.float64)), _softmax(lt.astype(np.float64))
    if alignment:
        pt = pt * ps.mean(0) / pt.mean(0)
        pt /= pt.sum(1, keepdims=True)
    c = tau * ps.max(1).mean() if relative else tau
    mask = pt.max(1) >= c
    ce = -np.log(_softmax(lst.astype(np.float64))[np.arange(len(lst)), pt.argmax(1)])
    return np.sum(ce * mask) / len(lst), mask.mean()


def _parts():
    fe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu")])
    head = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    return fe, head


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 4)).astype("float32")
    xt = (rng.normal(size=(8, 4)) + 1.0).astype("float32")
    return xs, rng.integers(0, 3, 8), xt, rng.integers(0, 3, 8)


def _image_parts():
    fe = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(6, activation="relu"),
    ])
    head = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    return fe, head


def _strong():
    return keras.Sequential([
        keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant"),
        keras.layers.RandomRotation(0.05, fill_mode="constant"),
    ], name="strong")


def _image_data():
    rng = np.random.default_rng(0)
    xs = rng.uniform(size=(12, 8, 8, 1)).astype("float32")
    xt = rng.uniform(size=(7, 8, 8, 1)).astype("float32")
    return xs, rng.integers(0, 3, 12), xt, rng.integers(0, 3, 7)


class SelfTrainingLossTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("adamatch", 0.9, True, True),
        ("fixmatch", 0.5, False, False),
        ("relative_only", 0.8, True, False),
        ("alignment_only", 0.6, False, True),
    )
    def test_matches_numpy(self, tau, relative, alignment):
        rng = np.random.default_rng(3)
        ls = (rng.normal(size=(10, 4)) * 3).astype("float32")
        lt = (rng.normal(size=(9, 4)) * 2).astype("float32")
        lst = rng.normal(size=(9, 4)).astype("float32")
        loss, kept = self_training_loss(ls, lt, lst, tau, relative, alignment)
        expected, expected_kept = _np_self_training(ls, lt, lst, tau, relative, alignment)
        # The case must keep some pseudo-labels and drop others.
        self.assertGreater(expected_kept, 0.0)
        self.assertLess(expected_kept, 1.0)
        self.assertAllClose(loss, expected, atol=1e-5)
        self.assertAllClose(kept, expected_kept, atol=1e-6)

    def test_alignment_changes_the_pseudo_label(self):
        # Source marginal all on class 1: alignment moves a target example
        # undecided between classes 0 and 1 to class 1.
        ls = np.array([[0.0, 5.0], [0.0, 5.0]], "float32")
        lt = np.array([[0.2, 0.0], [3.0, 0.0]], "float32")
        lst = np.array([[0.0, 0.0], [0.0, 0.0]], "float32")
        for alignment, label in ((False, 0), (True, 1)):
            ps, pt = _softmax(ls), _softmax(lt)
            if alignment:
                pt = pt * ps.mean(0) / pt.mean(0)
                pt /= pt.sum(1, keepdims=True)
            self.assertEqual(pt[0].argmax(), label)
        loss, kept = self_training_loss(ls, lt, lst, 0.1, False, True)
        self.assertAllClose(kept, 1.0)
        self.assertAllClose(loss, np.log(2.0), atol=1e-6)


class SelfTrainingModelTest(TestCase, parameterized.TestCase):
    def test_model_loss_matches_numpy(self):
        # A deterministic "augmentation" (x / 2) gives a known strong view.
        xs, ys, xt, _ = _data()
        fe, head = _parts()
        model = InformationMaximizationModel(
            fe, head, information_weight=0.0, consistency_weight=0.7,
            confidence_threshold=0.5, target_augmentation=keras.layers.Rescaling(0.5))
        out = model({"source": xs, "target": xt}, training=True)
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        ls = keras.ops.convert_to_numpy(head(fe(xs)))
        lt = keras.ops.convert_to_numpy(head(fe(xt)))
        lst = keras.ops.convert_to_numpy(head(fe(xt / 2)))
        st, kept = _np_self_training(ls, lt, lst, 0.5, True, True)
        task = -np.mean(np.log(_softmax(ls.astype(np.float64))[np.arange(8), ys]))
        self.assertAllClose(loss, task + 0.7 * st, atol=1e-5)
        self.assertAllClose(model.consistency_loss_tracker.result(), st, atol=1e-5)
        self.assertAllClose(model.pseudo_label_fraction.result(), kept, atol=1e-6)

    def test_cdan_adds_the_term(self):
        xs, ys, xt, _ = _data()
        fe, head = _parts()
        dh = keras.Sequential([keras.Input((18,)), keras.layers.Dense(1)])
        model = CDANModel(fe, head, dh, information_weight=0.5, consistency_weight=2.0,
                          confidence_threshold=0.4, relative_threshold=False,
                          target_augmentation=keras.layers.Rescaling(0.5))
        x = {"source": xs, "target": xt}
        with_term = model.compute_loss(x, ys, model(x), training=True)
        model.set_consistency_weight(0.0)
        without = model.compute_loss(x, ys, model(x), training=True)
        ls, lt = (keras.ops.convert_to_numpy(head(fe(v))) for v in (xs, xt))
        st, _ = _np_self_training(ls, lt, keras.ops.convert_to_numpy(head(fe(xt / 2))), 0.4, False, True)
        self.assertGreater(st, 0.0)
        self.assertAllClose(with_term - without, 2.0 * st, atol=1e-5)

    @parameterized.named_parameters(("im", "im"), ("cdan", "cdan"))
    def test_fit_metrics_save_load_continue(self, kind):
        xs, ys, xt, yt = _image_data()
        fe, head = _image_parts()
        if kind == "im":
            model = InformationMaximizationModel(fe, head, consistency_weight=1.0,
                                                 target_augmentation=_strong())
            callbacks = []
        else:
            dh = keras.Sequential([keras.Input((18,)), keras.layers.Dense(1)])
            model = CDANModel(fe, head, dh, information_weight=1.0, consistency_weight=1.0,
                              target_augmentation=_strong())
            callbacks = [GradientReversalScheduler("dann")]
        model.compile(optimizer="adam", metrics=["accuracy"])
        # Domains of different sizes (12 source, 7 target): the target is cycled.
        history = model.fit(
            {"source": xs, "target": xt}, ys, batch_size=4, epochs=2, verbose=0,
            validation_data=({"target": xt}, {"target": yt}), callbacks=callbacks,
        )
        for key in ("loss", "source_accuracy", "consistency_loss",
                    "pseudo_label_fraction", "val_target_accuracy"):
            self.assertIn(key, history.history)
        fraction = history.history["pseudo_label_fraction"]
        self.assertTrue(all(0.0 <= f <= 1.0 for f in fraction))
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        model.evaluate({"target": xt}, {"target": yt}, verbose=0)
        pred = model.predict(xt, verbose=0)
        model.set_consistency_weight(0.25)
        path = os.path.join(self.get_temp_dir(), "st.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, type(model))
        self.assertEqual(loaded.consistency_weight, 0.25)
        self.assertEqual(loaded.confidence_threshold, 0.9)
        self.assertIsInstance(loaded.target_augmentation, keras.Sequential)
        self.assertAllClose(loaded.predict(xt, verbose=0), pred, atol=1e-6)
        loaded.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)

    def test_weight_set_during_fit_is_used(self):
        # Weight 0 from epoch 2 on (a Variable read in the step): the loss is
        # the task loss alone.
        xs, ys, xt, _ = _data()
        model = InformationMaximizationModel(
            *_parts(), information_weight=0.0, consistency_weight=3.0,
            confidence_threshold=0.1, target_augmentation=keras.layers.Rescaling(0.5))
        model.compile(optimizer="sgd")
        history = model.fit({"source": xs, "target": xt}, ys, batch_size=8, epochs=1, verbose=0)
        self.assertGreater(history.history["loss"][0] - history.history["task_loss"][0], 1e-3)
        model.set_consistency_weight(0.0)
        history = model.fit({"source": xs, "target": xt}, ys, batch_size=8, epochs=1, verbose=0)
        self.assertAllClose(history.history["loss"][0], history.history["task_loss"][0], atol=1e-6)

    def test_mixed_precision_fit(self):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            xs, ys, xt, _ = _image_data()
            fe, head = _image_parts()
            model = InformationMaximizationModel(fe, head, consistency_weight=1.0,
                                                 target_augmentation=_strong())
            model.compile(optimizer="sgd")
            history = model.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)
            self.assertTrue(np.isfinite(history.history["consistency_loss"][0]))
        finally:
            keras.mixed_precision.set_dtype_policy("float32")

    @parameterized.named_parameters(
        ("weight", {"consistency_weight": -1.0}, "`consistency_weight` must be"),
        ("no_augmentation", {"consistency_weight": 1.0}, "needs `target_augmentation`"),
        ("threshold_zero", {"confidence_threshold": 0.0}, r"`confidence_threshold` must be a number in \(0, 1\]"),
        ("threshold_big", {"confidence_threshold": 1.5}, "`confidence_threshold` must be"),
        ("relative", {"relative_threshold": 1}, "`relative_threshold` must be True or False"),
        ("alignment", {"distribution_alignment": "yes"}, "`distribution_alignment` must be"),
        ("augmentation", {"target_augmentation": lambda x: x}, "`target_augmentation` must be a Keras layer"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            InformationMaximizationModel(*_parts(), **kwargs)

    def test_setting_weight_without_augmentation_raises(self):
        model = InformationMaximizationModel(*_parts())
        with self.assertRaisesRegex(ValueError, "needs the model to be built with `target_augmentation`"):
            model.set_consistency_weight(1.0)
