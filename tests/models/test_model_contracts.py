"""Contracts every domain model keeps, found broken by a new-user pass.

- The gradient-reversal schedule advances across epochs on every backend
  (CDAN called its reversal layer without `training`, so on JAX the step
  counter never moved and the factor restarted each epoch).
- A model whose extra terms apply a softmax to the task head's outputs
  (CDAN's conditioning, information maximization, self-training, MCD's
  discrepancy) refuses a head that returns probabilities, also when
  `compile(loss=...)` names a loss on probabilities (the self-training
  pseudo-labels were softmaxed twice without a word).
"""

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer import models
from keras_transfer.callbacks import GradientReversalScheduler
from keras_transfer.callbacks.gradient_reversal_scheduler import dann_factor
from tests.testing import TestCase


def _dense(inputs, units, name, activation=None):
    return keras.Sequential(
        [keras.Input((inputs,)), keras.layers.Dense(units, activation=activation)],
        name=name,
    )


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 4)).astype("float32")
    xt = (rng.normal(size=(8, 4)) + 1.0).astype("float32")
    return xs, rng.integers(0, 3, 8), xt


def _model(name, head_activation=None):
    head = _dense(6, 3, "head", head_activation)
    if name == "dann":
        return models.DomainAdversarialModel(
            _dense(4, 6, "f"), head, _dense(6, 1, "d")
        )
    if name == "cdan":
        return models.CDANModel(_dense(4, 6, "f"), head, _dense(18, 1, "d"))
    if name == "cdan_self_training":
        return models.CDANModel(
            _dense(4, 6, "f"), head, _dense(18, 1, "d"),
            consistency_weight=1.0,
            target_augmentation=keras.layers.GaussianNoise(0.1),
        )
    if name == "information_maximization":
        return models.InformationMaximizationModel(_dense(4, 6, "f"), head)
    return models.MCDModel(_dense(4, 6, "f"), head, _dense(6, 3, "head_2"))


class ReversalScheduleTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("dann", "dann"), ("cdan", "cdan"), ("cdan_self_training", "cdan_self_training")
    )
    def test_schedule_advances_across_epochs(self, name):
        xs, ys, xt = _data()
        model = _model(name)
        model.compile(optimizer="sgd")
        history = model.fit(
            {"source": xs, "target": xt}, ys, batch_size=4, epochs=3, verbose=0,
            callbacks=[GradientReversalScheduler("dann")],
        )
        # 2 steps per epoch, 6 in all: the factor of each epoch's last step.
        expected = [dann_factor(p / 6) for p in (1, 3, 5)]
        self.assertAllClose(history.history["grl_factor"], expected, atol=1e-6)
        step = keras.ops.convert_to_numpy(model.gradient_reversal.schedule_step)
        self.assertEqual(float(step), 6.0)


class LogitsHeadTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("cdan", "cdan"),
        ("cdan_self_training", "cdan_self_training"),
        ("information_maximization", "information_maximization"),
        ("mcd", "mcd"),
    )
    def test_probability_heads_are_refused(self, name):
        with self.assertRaisesRegex(ValueError, "returns logits.*softmaxed twice"):
            _model(name, head_activation="softmax").compile(
                optimizer="sgd", loss="sparse_categorical_crossentropy"
            )
        # A loss on probabilities is refused even where the head's ending is
        # not visible (here a linear head would give logits: also refused by
        # the task-loss check, with its own message).
        with self.assertRaisesRegex(ValueError, "from_logits"):
            _model(name).compile(
                optimizer="sgd",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
            )
        _model(name).compile(optimizer="sgd")  # logits: accepted

    def test_dann_keeps_accepting_a_probability_head(self):
        # DANN's only term on the head is the task loss: probabilities with a
        # loss on probabilities are consistent there.
        xs, ys, xt = _data()
        model = _model("dann", head_activation="softmax")
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit({"source": xs, "target": xt}, ys, batch_size=4, verbose=0)


class SelfTrainingLossTest(TestCase):
    def test_threshold_outside_zero_one_is_refused(self):
        logits = np.zeros((4, 3), "float32")
        for bad in (0.0, -1.0, 1.5, float("nan"), True):
            with self.assertRaisesRegex(ValueError, "confidence_threshold"):
                models.self_training_loss(logits, logits, logits, bad)
