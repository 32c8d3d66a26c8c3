"""`fine_tune(model_or_base, data, epochs=...)`: fastai's recipe in one call."""

import glob
import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer.optimizers.schedules import OneCycle
from keras_transfer.strategies import build_classifier
from keras_transfer.strategies import fine_tune
from tests.strategies.tiny import set_bn_statistics
from tests.strategies.tiny import tiny_base
from tests.strategies.tiny import tiny_data
from tests.strategies.tiny import tiny_head
from tests.testing import TestCase


# Adam with beta_1 = beta_2 = 0 steps every weight whose gradient is well
# above epsilon by exactly its learning rate (m = g, v = g^2, bias
# corrections 1): the median |change| of a group's moved weights in one step
# *is* that step's rate. (The median, not the max: Keras's float32
# `v += g^2 - v` cancels to 0 for a weight whose gradient drops a
# thousandfold, and that weight then jumps.)
def _sign_adam():
    return keras.optimizers.Adam(beta_1=0.0, beta_2=0.0, epsilon=1e-10)


class _StepRecorder(keras.callbacks.Callback):
    """Every variable's value after each batch (and before the first)."""

    def on_train_begin(self, logs=None):
        self._record()

    def on_train_batch_end(self, batch, logs=None):
        self._record()

    def _record(self):
        values = {v.path: np.array(v) for v in self.model.weights}
        self.values = getattr(self, "values", []) + [values]


def _model(dropout=0.0):
    base = tiny_base()
    set_bn_statistics(base)
    model = build_classifier(base, head=tiny_head(dropout=dropout))
    return base, model


def _learnable_data(base, n=64, num_classes=3, seed=0):
    """Inputs like `tiny_data`'s, labels a fixed linear rule of the frozen
    `base`'s features (so a head on it can learn them)."""
    x, _ = tiny_data(n=n, num_classes=num_classes, seed=seed)
    features = keras.ops.convert_to_numpy(base(x, training=False))
    w = np.random.default_rng(seed + 1).normal(size=(features.shape[-1], num_classes))
    return x, np.argmax(features @ w, axis=-1)


def _step_sizes(values, paths):
    """Median |change| of the moved weights of `paths`, for each step."""
    steps = []
    for before, after in zip(values[:-1], values[1:]):
        moved = np.concatenate(
            [np.abs(after[p] - before[p]).ravel() for p in paths]
        )
        steps.append(float(np.median(moved[moved > 0])))
    return np.array(steps)


class FineTuneRecipeTest(TestCase):
    def test_phases_base_frozen_then_grouped_one_cycle_rates(self):
        base, model = _model()
        x, y = tiny_data(n=32)
        base_paths = [v.path for v in base.weights]
        initial = {v.path: np.array(v) for v in model.weights}
        recorder = _StepRecorder()
        history = fine_tune(
            model, (x, y), epochs=3, freeze_epochs=1, base_lr=0.02,
            batch_size=8, shuffle=False, optimizer=_sign_adam(),
            callbacks=[recorder], verbose=0,
        )
        self.assertEqual(history.epoch, [0, 1, 2, 3])
        self.assertIs(history.model, model)
        self.assertIsNone(history.lr_finder)
        self.assertEqual(history.base_lr, 0.02)
        # Groups of the tiny base (no blocks): [dense, bn], [dense_1];
        # factors head 1, top 100 ** -1/2, bottom 100 ** -1.
        self.assertEqual(
            [[l.name for l in g] for g in history.groups],
            [["dense", "bn"], ["dense_1"]],
        )
        self.assertAllClose(history.factors, [1.0, 0.1, 0.01])

        # The recorder ran in both phases: phase 1 (4 steps), then phase 2
        # (12 steps), each starting with a snapshot.
        phase_1, phase_2 = recorder.values[:5], recorder.values[5:]
        self.assertLen(phase_2, 13)
        # Phase 1: the base is bit-identical; the head steps follow the
        # frozen one-cycle (peak base_lr, warm-up min(round(.99 * 4), 3)).
        for path in base_paths:
            self.assertAllEqual(initial[path], phase_1[-1][path], msg=path)
        head_paths = [p for p in initial if p.startswith("head/")]
        self.assertLen(head_paths, 2)
        schedule = OneCycle(0.02, 4, warmup_steps=3, div_factor=25.0)
        expected = [float(schedule(t)) for t in range(4)]
        self.assertAllClose(
            _step_sizes(phase_1, head_paths), expected, rtol=2e-3
        )
        # Phase 2: each group follows the one-cycle of peak base_lr / 2,
        # warm-up round(0.3 * 12) = 4, div 5, times its factor.
        schedule = OneCycle(0.01, 12, warmup_steps=4, div_factor=5.0)
        rates = np.array([float(schedule(t)) for t in range(12)])
        recorded = phase_2
        for paths, factor in (
            (head_paths, 1.0),
            (["dense_1/kernel", "dense_1/bias"], 0.1),
            (["dense/kernel", "dense/bias"], 0.01),
        ):
            self.assertAllClose(
                _step_sizes(recorded, paths), rates * factor, rtol=2e-3,
                msg=str(paths),
            )
        # BatchNorm: statistics, gamma and beta never moved.
        final = {v.path: np.array(v) for v in model.weights}
        for path in base_paths:
            if path.startswith("bn/"):
                self.assertAllEqual(initial[path], final[path], msg=path)
        # The logged rates: phase 1 head only, then each group's effective
        # rate at the epoch's end (step 4, 8, 12 of phase 2's cycle).
        self.assertEqual(history.history["lr_group_0"][0], 0.0)
        self.assertEqual(history.history["lr_group_1"][0], 0.0)
        for epoch, step in ((1, 4), (2, 8), (3, 12)):
            rate = float(schedule(step))
            self.assertAllClose(history.history["lr_head"][epoch], rate, rtol=1e-5)
            self.assertAllClose(
                history.history["lr_group_0"][epoch], rate * 0.01, rtol=1e-5
            )

    def test_lr_find_when_no_rate_given_and_dataset_input(self):
        tf = pytest.importorskip("tensorflow")
        base, model = _model()
        x, y = _learnable_data(base, n=64)
        initial = [np.array(w) for w in model.get_weights()]
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        history = fine_tune(
            model, data, epochs=1, freeze_epochs=0, lr_find_steps=60,
            validation_data=data, verbose=0,
        )
        finder = history.lr_finder
        self.assertIsNotNone(finder)
        self.assertIsNotNone(finder.suggestion)
        self.assertEqual(history.base_lr, finder.suggestion)
        self.assertLen(finder.learning_rates, 60)
        self.assertEqual(history.epoch, [0])
        self.assertIn("val_loss", history.history)
        self.assertIsNone(history.phases[0])
        # Weights moved: lr_find gave its weights back and phase 2 trained.
        self.assertTrue(
            any(
                not np.allclose(a, b)
                for a, b in zip(initial, model.get_weights())
            )
        )

    def test_lr_find_without_a_supported_rate_raises_its_reason(self):
        # Regression: labels unrelated to the inputs (tiny_data) and 8 steps
        # gave fastai's valley on noise (about 1e-6), used as `base_lr`.
        _, model = _model()
        x, y = tiny_data(n=32)
        before = [np.array(w) for w in model.get_weights()]
        with self.assertRaises(ValueError) as raised:
            fine_tune(model, (x, y), epochs=1, freeze_epochs=0, lr_find_steps=8,
                      batch_size=8, verbose=0)
        message = str(raised.exception)
        self.assertIn("`fine_tune` has no `base_lr` to use: `lr_find` suggests no "
                      "learning rate: The range test ran 8 of 8 steps", message)
        self.assertIn("Pass `base_lr`", message)
        self.assertIn("lr_find_steps=8", message)
        # Nothing trained.
        for a, b in zip(before, model.get_weights()):
            self.assertTrue(np.array_equal(a, b))

    def test_base_with_num_classes_and_keras_callbacks(self):
        base = tiny_base()
        set_bn_statistics(base)
        x, y = tiny_data(n=16)
        folder = self.get_temp_dir()
        checkpoint = os.path.join(folder, "model.keras")
        history = fine_tune(
            base, (x, y), num_classes=3, epochs=3, base_lr=0.01,
            batch_size=8, verbose=0,
            callbacks=[
                # Never improves by 10: each phase stops after 2 epochs.
                keras.callbacks.EarlyStopping("loss", min_delta=10.0, patience=1),
                keras.callbacks.ModelCheckpoint(checkpoint),
                keras.callbacks.TensorBoard(os.path.join(folder, "logs")),
            ],
        )
        model = history.model
        self.assertEqual(model.layers[-1].name, "head")
        # Phase 1 has one epoch; phase 2 stopped at its second.
        self.assertEqual(history.epoch, [0, 1, 2])
        # The checkpoint is the whole model after the last epoch, and it
        # trains on with a plain `fit` at the saved rates and schedule.
        loaded = keras.models.load_model(checkpoint)
        self.assertAllClose(
            loaded.predict(x, verbose=0), model.predict(x, verbose=0)
        )
        loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
        events = glob.glob(os.path.join(folder, "logs", "train", "events*"))
        self.assertNotEmpty(events)

    def test_backup_and_restore_resumes_in_phase_2(self):
        x, y = tiny_data(n=16)
        kwargs = dict(
            epochs=3, freeze_epochs=1, base_lr=0.02, batch_size=8,
            shuffle=False, verbose=0,
        )
        _, model = _model()
        fine_tune(model, (x, y), **kwargs)
        uninterrupted = [np.array(w) for w in model.weights]

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 2:
                    raise RuntimeError("interrupted")

        backup = keras.callbacks.BackupAndRestore(
            os.path.join(self.get_temp_dir(), "backup")
        )
        _, model = _model()
        with self.assertRaisesRegex(RuntimeError, "interrupted"):
            fine_tune(model, (x, y), callbacks=[backup, Interrupt()], **kwargs)
        _, model = _model()
        history = fine_tune(model, (x, y), callbacks=[backup], **kwargs)
        # Phase 1 was done: skipped; phase 2 resumed at epoch 2.
        self.assertIsNone(history.phases[0])
        self.assertEqual(history.epoch, [2, 3])
        for a, b in zip(uninterrupted, model.weights):
            self.assertAllClose(a, np.array(b), atol=1e-6, msg=b.path)

    def test_mixed_precision(self):
        keras.config.set_dtype_policy("mixed_float16")
        try:
            _, model = _model()
        finally:
            keras.config.set_dtype_policy("float32")
        x, y = tiny_data(n=16)
        before = [np.array(w) for w in model.trainable_weights]
        history = fine_tune(
            model, (x, y), epochs=1, base_lr=0.01, batch_size=8, verbose=0
        )
        self.assertIsInstance(
            model.optimizer, keras.optimizers.LossScaleOptimizer
        )
        after = [np.array(w) for w in model.trainable_weights]
        self.assertTrue(all(np.isfinite(w).all() for w in after))
        self.assertTrue(
            any(not np.allclose(a, b) for a, b in zip(before, after))
        )
        self.assertGreater(history.history["lr_head"][1], 0.0)

    def test_old_form_still_accepted(self):
        x, y = tiny_data(n=16)
        base = tiny_base()
        head = tiny_head()
        build_classifier(base, head=head)
        warmup, history = fine_tune(
            base, head, x, y, warmup_epochs=1, epochs=1, batch_size=8,
            verbose=0,
        )
        self.assertEqual(history.epoch, [1])
        with self.assertRaisesRegex(TypeError, r"old form `fine_tune\(base, head"):
            fine_tune(base, x, y)

    @parameterized.named_parameters(
        ("lr_mult_zero", {"lr_mult": 0}, "`lr_mult` must be a positive.*lr_mult=0"),
        ("lr_mult_negative", {"lr_mult": -10.0}, "lr_mult=-10.0"),
        ("base_lr", {"base_lr": 0.0}, "`base_lr` must be a positive.*base_lr=0.0"),
        ("pct_start", {"pct_start": 1.0}, r"`pct_start` must be a number in \[0, 1\)"),
        ("epochs", {"epochs": 0}, "`epochs` must be a positive integer"),
        ("freeze", {"freeze_epochs": -1}, "freeze_epochs=-1"),
        ("div", {"div": 0}, "`div` must be a positive"),
        ("lr_find_steps", {"lr_find_steps": 3}, "lr_find_steps=3"),
        (
            "multi_optimizer",
            {"optimizer": "multi"},
            "cannot drive this one",
        ),
        (
            "global_clipnorm",
            {"optimizer": keras.optimizers.Adam(global_clipnorm=1.0)},
            "`global_clipnorm` would act per group",
        ),
        ("batch_size", {"batch_size": 0}, "batch_size=0"),
        ("no_base", {"base": "nope"}, "base='nope'"),
        (
            "lr_callback",
            {"callbacks": [keras.callbacks.ReduceLROnPlateau()]},
            "sets the learning rates itself.*ReduceLROnPlateau",
        ),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        if kwargs.get("optimizer") == "multi":
            kwargs["optimizer"] = keras.optimizers.MultiOptimizer(
                keras.optimizers.OptimizerMap(keras.optimizers.SGD(), {})
            )
        _, model = _model()
        x, y = tiny_data(n=8)
        with self.assertRaisesRegex(ValueError, message):
            fine_tune(model, (x, y), base_lr=kwargs.pop("base_lr", 1e-3), **kwargs)

    def test_mistyped_keyword_names_fine_tune_and_its_keywords(self):
        # Regression: the TypeError named the private `_fine_tune_recipe`.
        _, model = _model()
        x, y = tiny_data(n=8)
        with self.assertRaises(TypeError) as raised:
            fine_tune(model, (x, y), epoch=2, base_lr=1e-3)
        message = str(raised.exception)
        self.assertIn("`fine_tune` got unexpected keyword argument(s) 'epoch' "
                      "(did you mean `epochs`?)", message)
        self.assertIn("`fine_tune(model_or_base, data, ...)` takes: y, epochs, "
                      "freeze_epochs, base_lr,", message)
        self.assertIn("lr_find_steps", message)
        self.assertNotIn("_fine_tune", message)
        # The old form lists its own keywords.
        base, head = tiny_base(), tiny_head()
        with self.assertRaises(TypeError) as raised:
            fine_tune(base, head, x, y, learning_rte=1e-4)
        message = str(raised.exception)
        self.assertIn("'learning_rte' (did you mean `learning_rate`?)", message)
        self.assertIn("head_learning_rate", message)
        self.assertNotIn("_fine_tune", message)
        with self.assertRaisesRegex(TypeError, "multiple values for argument.*'y'"):
            fine_tune(base, head, x, y, y=y)

    def test_model_without_inference_mode_needs_base(self):
        base = tiny_base()
        inputs = keras.Input((6,))
        model = keras.Model(inputs, tiny_head()(base(inputs)))
        x, y = tiny_data(n=8)
        with self.assertRaisesRegex(ValueError, "Pass `base=`"):
            fine_tune(model, (x, y), base_lr=1e-3)

    def test_unknown_length_dataset_needs_steps_per_epoch(self):
        tf = pytest.importorskip("tensorflow")
        _, model = _model()
        x, y = tiny_data(n=8)
        data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(4)
        with self.assertRaisesRegex(ValueError, "Pass `steps_per_epoch=`"):
            fine_tune(model, data, base_lr=1e-3)

    def test_backup_and_restore_needs_base_lr(self):
        _, model = _model()
        backup = keras.callbacks.BackupAndRestore(self.get_temp_dir())
        with self.assertRaisesRegex(ValueError, "needs an explicit `base_lr`"):
            fine_tune(model, tiny_data(n=8), callbacks=[backup])
