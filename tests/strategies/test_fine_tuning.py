import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.strategies import build_classifier
from keras_transfer.strategies import fine_tune
from keras_transfer.strategies import unfreeze_base
from tests.strategies.tiny import set_bn_statistics
from tests.strategies.tiny import tiny_base
from tests.strategies.tiny import tiny_data
from tests.strategies.tiny import tiny_head
from tests.testing import TestCase


class _Snapshots(keras.callbacks.Callback):
    """Copies the base's weights at the end of every epoch."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.base.get_weights()])


class FineTuneTest(TestCase):
    def _run(self, **kwargs):
        base = tiny_base()
        set_bn_statistics(base)
        model = build_classifier(base, head=tiny_head())
        initial = [np.array(w) for w in base.get_weights()]
        snapshots = _Snapshots(base)
        x, y = tiny_data(n=32)
        kwargs = {
            "warmup_epochs": 2, "epochs": 2, "batch_size": 8,
            "learning_rate": 1e-2, "verbose": 0, **kwargs,
        }
        warmup, history = fine_tune(
            base, model.get_layer("head"), x, y, callbacks=[snapshots], **kwargs
        )
        names = [v.path for v in base.weights]
        return base, model, initial, snapshots.weights, names, warmup, history

    def test_recipe(self):
        base, model, initial, snapshots, names, warmup, history = self._run()
        self.assertEqual(len(snapshots), 4)
        # Warm-up: the base is bit-identical after each warm-up epoch.
        for epoch in (0, 1):
            for before, after in zip(initial, snapshots[epoch]):
                self.assertAllEqual(before, after)
        # Phase 2: Dense kernels moved, every BN weight (gamma, beta, moving
        # statistics) is bit-identical.
        final = snapshots[-1]
        checked = []
        for name, before, after in zip(names, initial, final):
            if name.startswith("bn/"):
                self.assertAllEqual(before, after, msg=name)
                checked.append(name)
            elif name.endswith("kernel"):
                self.assertNotAllClose(before, after, msg=name)
                checked.append(name)
        self.assertLen(checked, 6)
        self.assertFalse(base.get_layer("bn").trainable)
        self.assertTrue(base.get_layer("dense").trainable)
        # Two phases, epochs numbered on from the warm-up.
        self.assertLen(warmup.history["loss"], 2)
        self.assertEqual(warmup.epoch, [0, 1])
        self.assertEqual(history.epoch, [2, 3])
        self.assertEqual(history.model.optimizer.learning_rate, 1e-2)
        # The user's model is the one that was fine-tuned (shared weights).
        x = tiny_data(n=4)[0]
        self.assertAllClose(
            model.predict(x, verbose=0), history.model.predict(x, verbose=0)
        )

    def test_train_batchnorm_trains_gamma_but_keeps_statistics(self):
        base, _, initial, snapshots, names, _, _ = self._run(
            train_batchnorm=True, warmup_epochs=1, epochs=1
        )
        final = dict(zip(names, snapshots[-1]))
        initial = dict(zip(names, initial))
        for name in ("bn/moving_mean", "bn/moving_variance"):
            self.assertAllEqual(initial[name], final[name], msg=name)
        for name in ("bn/gamma", "bn/beta"):
            self.assertNotAllClose(initial[name], final[name], msg=name)

    def test_no_warmup(self):
        _, _, _, snapshots, _, warmup, history = self._run(warmup_epochs=0, epochs=1)
        self.assertIsNone(warmup)
        self.assertEqual(history.epoch, [0])

    def test_unfreeze_base_finds_nested_batchnorm(self):
        inner = keras.Sequential(
            [keras.Input((3,)), keras.layers.BatchNormalization(name="inner_bn")],
            name="inner",
        )
        inputs = keras.Input((3,))
        base = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
        base.trainable = False
        found = unfreeze_base(base)
        self.assertEqual([layer.name for layer in found], ["inner_bn"])
        self.assertFalse(inner.get_layer("inner_bn").trainable)
        self.assertLen(base.trainable_weights, 2)

    @parameterized.named_parameters(
        ("learning_rate", {"learning_rate": 0}, "`learning_rate` must be a positive"),
        ("head_lr", {"head_learning_rate": "1e-3"}, "`head_learning_rate` must be a positive"),
        ("warmup", {"warmup_epochs": -1}, "`warmup_epochs` must be a non-negative"),
        ("epochs", {"epochs": 0}, "`epochs` must be a positive"),
        ("augmentation", {"augmentation": keras.layers.GaussianNoise(0.1)}, "`cache=False`"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        x, y = tiny_data()
        with self.assertRaisesRegex(ValueError, message):
            fine_tune(tiny_base(), tiny_head(), x, y, **kwargs)
