import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.callbacks import SelectionScores
from keras_transfer.models import DiscrepancyAlignmentModel
from keras_transfer.strategies import dev_risk
from keras_transfer.strategies import importance_weights
from keras_transfer.strategies import reverse_validation_accuracy
from keras_transfer.strategies import select_model
from keras_transfer.strategies import soft_neighborhood_density
from tests.testing import TestCase


def _data(seed=0):
    # Two Gaussian classes; the target is the source shifted and wider.
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, 2, 96).astype("int32")
    xs = (rng.normal(size=(96, 2)) * 0.4 + np.c_[2 * ys - 1, np.zeros(96)]).astype("float32")
    yt = rng.integers(0, 2, 64)
    xt = (rng.normal(size=(64, 2)) * 0.6 + np.c_[2 * yt - 0.5, 0.5 * np.ones(64)]).astype("float32")
    xv, yv = xs[:32], ys[:32]
    return xs[32:], ys[32:], xt, (xv, yv)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    encoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh")], name="encoder")
    head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="head")
    model = DiscrepancyAlignmentModel(encoder, head, "mmd", 1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.2))
    return model


class _Reference(keras.callbacks.Callback):
    """Recomputes each score after `SelectionScores` from the public functions."""

    def __init__(self, xt, validation, xs):
        super().__init__()
        self.xt, self.validation, self.xs = xt, validation, xs
        self.expected, self.logged = [], []

    def on_epoch_end(self, epoch, logs=None):
        xv, yv = self.validation
        model, f = self.model, self.model.feature_extractor
        pt = model.predict(self.xt, verbose=0)
        pv = model.predict(xv, verbose=0).astype("float64")
        p = np.exp(pv - pv.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        losses = -np.log(p[np.arange(len(yv)), yv])
        ft, fv, fs = (f.predict(x, verbose=0) for x in (self.xt, xv, self.xs))
        self.expected.append({
            "snd": soft_neighborhood_density(pt),
            "dev": dev_risk(losses, importance_weights(fs, ft, fv)),
            "reverse_validation": reverse_validation_accuracy(ft, pt, fv, yv),
            "source_val_accuracy": float(np.mean(pv.argmax(1) == yv)),
        })
        self.logged.append({k: logs[k] for k in self.expected[-1]})


class SelectionScoresTest(TestCase, parameterized.TestCase):
    def test_scores_each_epoch_match_the_functions(self):
        xs, ys, xt, validation = _data()
        model = _model()
        scores = SelectionScores(
            xt, validation, xs, scores=["snd", "dev", "reverse_validation", "source_val_accuracy"]
        )
        reference = _Reference(xt, validation, xs)
        history = model.fit(
            {"source": xs, "target": xt}, ys, batch_size=16, epochs=3, verbose=0,
            callbacks=[scores, reference],
        )
        self.assertEqual(scores.epochs, [0, 1, 2])
        self.assertLen(reference.expected, 3)
        for expected, logged in zip(reference.expected, reference.logged):
            for name in expected:
                self.assertAllClose(logged[name], expected[name], atol=1e-6, msg=name)
        for name in reference.expected[0]:
            values = [e[name] for e in reference.expected]
            self.assertAllClose(history.history[name], values, atol=1e-6, msg=name)
            self.assertAllClose(scores.history[name], values, atol=1e-6, msg=name)
        # Training moved the model: the scores are of each epoch's weights.
        self.assertNotAllClose(
            [e["snd"] for e in reference.expected][0], reference.expected[-1]["snd"]
        )
        # The last epoch's score is select_model's score of the final model.
        picked = select_model({"final": model}, "dev", target=xt, source_validation=validation, source=xs)
        self.assertAllClose(picked["scores"]["final"], reference.expected[-1]["dev"], atol=1e-9)
        self.assertEqual(
            scores.higher_is_better,
            {"snd": True, "dev": False, "reverse_validation": True, "source_val_accuracy": True},
        )

    def test_model_checkpoint_keeps_the_best_epoch_by_score(self):
        # A Keras habit: ModelCheckpoint placed after it monitors a score.
        xs, ys, xt, validation = _data(1)
        model = _model(1)
        path = os.path.join(self.get_temp_dir(), "best.weights.h5")
        scores = SelectionScores(xt, validation, xs, scores="dev", prefix="sel_")
        checkpoint = keras.callbacks.ModelCheckpoint(
            path, monitor="sel_dev", mode="min", save_best_only=True, save_weights_only=True
        )
        model.fit({"source": xs, "target": xt}, ys, batch_size=16, epochs=4, verbose=0,
                  callbacks=[scores, checkpoint])
        dev = scores.history["sel_dev"]
        self.assertLen(dev, 4)
        model.load_weights(path)
        picked = select_model([model], "dev", target=xt, source_validation=validation, source=xs)
        self.assertAllClose(picked["scores"]["0"], min(dev), atol=1e-9)

    def test_frequency_scores_every_kth_and_last_epoch(self):
        xs, ys, xt, validation = _data()
        model = _model()
        scores = SelectionScores(xt, frequency=2)
        history = model.fit({"source": xs, "target": xt}, ys, batch_size=32, epochs=3, verbose=0,
                            callbacks=[scores])
        self.assertEqual(scores.epochs, [1, 2])
        self.assertLen(scores.history["snd"], 2)
        # As with `validation_freq`, History holds only the scored epochs.
        self.assertAllClose(history.history["snd"], scores.history["snd"])
        self.assertLen(history.history["loss"], 3)

    def test_model_without_features_raises_before_training(self):
        xs, ys, xt, validation = _data()
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        scores = SelectionScores(xt, validation, scores=["reverse_validation"])
        with self.assertRaisesRegex(ValueError, "no `feature_extractor`"):
            model.fit(xs, ys, epochs=1, verbose=0, callbacks=[scores])
        # An explicit `features` works on any model.
        model.fit(xs, ys, epochs=1, verbose=0, callbacks=[
            SelectionScores(xt, validation, scores=["reverse_validation"], features=lambda m: m)])

    def test_log_name_clash_raises(self):
        xs, ys, xt, validation = _data()
        model = _model()
        earlier = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: logs.update(snd=0.0))
        with self.assertRaisesRegex(ValueError, r"overwrite the logs \['snd'\].*prefix"):
            model.fit({"source": xs, "target": xt}, ys, batch_size=32, epochs=1, verbose=0,
                      callbacks=[earlier, SelectionScores(xt)])
        history = model.fit({"source": xs, "target": xt}, ys, batch_size=32, epochs=1, verbose=0,
                            callbacks=[earlier, SelectionScores(xt, prefix="sel_")])
        self.assertEqual(history.history["snd"], [0.0])
        self.assertIn("sel_snd", history.history)

    @parameterized.named_parameters(
        ("unknown", {"scores": ["entropy"]}, "`scores` must be a non-empty list"),
        ("empty", {"scores": []}, "`scores` must be a non-empty list"),
        ("no_target", {"target": None}, "needs `target`"),
        ("labelled_target", {"target": (np.zeros((4, 2)), np.zeros(4))}, "unlabelled inputs only"),
        ("dev_needs_source", {"scores": ["dev"], "source_validation": (np.zeros((4, 2)), np.zeros(4, "int32"))}, r"score .dev. \(in `scores`\) needs `source`"),
        ("dev_needs_validation", {"scores": ["dev"], "source": np.zeros((4, 2))}, "needs `source_validation`"),
        ("accuracy_needs_validation", {"scores": ["source_val_accuracy"]}, "needs `source_validation`"),
        ("validation_pair", {"scores": ["source_val_accuracy"], "source_validation": np.zeros((4, 2))}, "must be a pair"),
        ("float_labels", {"scores": ["source_val_accuracy"], "source_validation": (np.zeros((4, 2)), np.zeros(4))}, "integer class"),
        ("negative_labels", {"scores": ["source_val_accuracy"], "source_validation": (np.zeros((2, 2)), np.array([0, -1]))}, "non-negative integer"),
        ("temperature", {"temperature": 0.0}, "`temperature` must be a positive"),
        ("frequency", {"frequency": 0}, "`frequency` must be a positive integer"),
        ("prefix", {"prefix": None}, "`prefix` must be a string"),
        ("from_logits", {"from_logits": "no"}, "`from_logits` must be True or False"),
    )
    def test_bad_arguments_raise(self, kwargs, message):
        args = {"target": np.zeros((4, 2))}
        args.update(kwargs)
        with self.assertRaisesRegex(ValueError, message):
            SelectionScores(**args)
