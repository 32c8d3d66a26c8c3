import os
import warnings

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.callbacks import DiscriminativeLR
from keras_transfer.callbacks import GradualUnfreezer
from tests.callbacks.tiny import EpochSnapshots
from tests.callbacks.tiny import fit
from tests.callbacks.tiny import snapshot
from tests.callbacks.tiny import tiny_groups
from tests.callbacks.tiny import tiny_model
from tests.testing import TestCase

GROUP_PATHS = [
    ["base/d0/kernel", "base/d0/bias"],
    ["base/d1/kernel", "base/d1/bias"],
    ["base/d2/kernel", "base/d2/bias"],
]
BN_PATHS = ["base/bn/gamma", "base/bn/beta", "base/bn/moving_mean", "base/bn/moving_variance"]
HEAD_PATHS = ["head/kernel", "head/bias"]


def _slots(optimizer, name):
    """Slots of variable `name` ('d2_kernel'), keyed by slot ('momentum').

    (Slot names carry the variable path, which a loaded model changes.)"""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return {
        v.name.split(name + "_")[-1]: keras.ops.convert_to_numpy(v).copy()
        for opt in inner.group_optimizers
        for v in opt.variables
        if name + "_" in v.name
    }


class _OptimizerAtEpochBegin(keras.callbacks.Callback):
    """Optimizer slots right after the stage change of each epoch (this
    callback runs after `GradualUnfreezer.on_epoch_begin`)."""

    def __init__(self):
        super().__init__()
        self.at_begin, self.at_end = [], []

    def _read(self):
        inner = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        return {
            opt.name: (
                int(keras.ops.convert_to_numpy(opt.iterations)),
                {v.name: keras.ops.convert_to_numpy(v).copy() for v in opt.variables},
            )
            for opt in inner.group_optimizers
        }

    def on_epoch_begin(self, epoch, logs=None):
        self.at_begin.append(self._read())

    def on_epoch_end(self, epoch, logs=None):
        self.at_end.append(self._read())


class GradualUnfreezerTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("plain", False), ("base_in_inference_mode", True)
    )
    def test_stages_unfreeze_top_group_first_frozen_bit_identical(
        self, inference_mode
    ):
        # `InferenceMode(base)` (as `build_classifier` builds) hides the base
        # from `Model.layers`; the groups must still be found through it.
        model, base = tiny_model(inference_mode=inference_mode)
        initial = snapshot(model)
        record = EpochSnapshots()
        history = fit(model, [GradualUnfreezer(tiny_groups(base)), record], epochs=4)
        self.assertEqual(history.history["unfreeze_stage"], [0, 1, 2, 3])
        # head 8*... : head 4*3+3=15, +d2 8*4+4=36, +d1 8*8+8=72, +d0 6*8+8=56
        self.assertEqual(history.history["trainable_params"], [15, 51, 123, 179])
        for epoch, weights in enumerate(record.weights):
            for path in HEAD_PATHS:
                self.assertFalse(np.array_equal(weights[path], initial[path]))
            for i, paths in enumerate(GROUP_PATHS):
                unfrozen = i >= 3 - epoch
                for path in paths:
                    self.assertEqual(
                        not np.array_equal(weights[path], initial[path]),
                        unfrozen,
                        f"{path} after epoch {epoch}",
                    )
            # BatchNormalization stays frozen and in inference mode.
            for path in BN_PATHS:
                self.assertTrue(np.array_equal(weights[path], initial[path]), path)

    def test_moments_kept_and_unfrozen_group_starts_fresh(self):
        model, base = tiny_model(learning_rate=1e-2, eager=True)
        probe = _OptimizerAtEpochBegin()
        record = EpochSnapshots()
        fit(model, [GradualUnfreezer(tiny_groups(base)), probe, record], epochs=2)
        head_end_0 = probe.at_end[0]["adam_head"]
        head_begin_1 = probe.at_begin[1]["adam_head"]
        # The stage change keeps the head's Adam state exactly.
        self.assertEqual(head_end_0[0], 1)
        self.assertEqual(head_begin_1[0], 1)
        for name, value in head_end_0[1].items():
            self.assertTrue(np.array_equal(value, head_begin_1[1][name]), name)
        self.assertGreater(np.abs(head_begin_1[1]["head_kernel_momentum"]).sum(), 0)
        # ... and keeps updating it in stage 1.
        self.assertEqual(probe.at_end[1]["adam_head"][0], 2)
        # The newly unfrozen top group starts with zero moments and step 0.
        top_begin = probe.at_begin[1]["adam_group_2"]
        self.assertEqual(top_begin[0], 0)
        self.assertTrue(all(not v.any() for n, v in top_begin[1].items() if "mentum" in n or "velocity" in n))
        # Its first update is a first Adam step (bias correction from step 1):
        # lr * g / (|g| + eps / sqrt(1 - beta_2)), i.e. lr in size.
        delta = record.weights[1]["base/d2/kernel"] - record.weights[0]["base/d2/kernel"]
        self.assertAllClose(np.median(np.abs(delta)), 1e-2, rtol=1e-3)
        self.assertLessEqual(np.abs(delta).max(), 1e-2 * (1 + 1e-6))

    def test_schedule_list_and_lowest_group_left_frozen(self):
        model, base = tiny_model(eager=True)
        initial = snapshot(model)
        history = fit(
            model, [GradualUnfreezer(tiny_groups(base), schedule=[1, 3])], epochs=5
        )
        self.assertEqual(history.history["unfreeze_stage"], [0, 1, 1, 2, 2])
        final = snapshot(model)
        for path in GROUP_PATHS[0]:
            self.assertTrue(np.array_equal(final[path], initial[path]))
        for path in GROUP_PATHS[1] + GROUP_PATHS[2]:
            self.assertFalse(np.array_equal(final[path], initial[path]))

    def test_epochs_per_stage(self):
        model, base = tiny_model(eager=True)
        cb = GradualUnfreezer(tiny_groups(base), epochs_per_stage=2)
        self.assertEqual([cb.stage_at(e) for e in range(9)], [0, 0, 1, 1, 2, 2, 3, 3, 3])
        history = fit(model, [cb], epochs=3)
        self.assertEqual(history.history["unfreeze_stage"], [0, 0, 1])

    def test_train_batchnorm(self):
        model, base = tiny_model(eager=True)
        initial = snapshot(model)
        fit(model, [GradualUnfreezer(tiny_groups(base), train_batchnorm=True)], epochs=3)
        middle = snapshot(model)
        for path in BN_PATHS:  # group 0 not reached yet
            self.assertTrue(np.array_equal(middle[path], initial[path]))
        fit(
            model,
            [GradualUnfreezer(tiny_groups(base), train_batchnorm=True)],
            epochs=4,
            initial_epoch=3,
        )
        final = snapshot(model)
        for path in BN_PATHS:  # trained, and batch statistics used
            self.assertFalse(np.array_equal(final[path], initial[path]), path)

    def test_backup_and_restore_resumes_like_uninterrupted_run(self):
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=8, warmup_target=1e-2, warmup_steps=2
        )
        callbacks = lambda base: [  # noqa: E731
            GradualUnfreezer(tiny_groups(base)),
            DiscriminativeLR(tiny_groups(base), factor=0.5),
        ]
        model, base = tiny_model(optimizer=keras.optimizers.Adam(schedule))
        uninterrupted = fit(model, callbacks(base), epochs=4, batch_size=8)
        expected = snapshot(model)

        class Interrupt(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 2:
                    raise RuntimeError("interrupted")

        backup = os.path.join(self.get_temp_dir(), "backup")
        model, base = tiny_model(optimizer=keras.optimizers.Adam(schedule))
        with self.assertRaisesRegex(RuntimeError, "interrupted"):
            fit(
                model,
                callbacks(base) + [keras.callbacks.BackupAndRestore(backup), Interrupt()],
                epochs=4,
                batch_size=8,
            )
        model, base = tiny_model(optimizer=keras.optimizers.Adam(schedule))
        # BackupAndRestore first: restoring works in any order.
        history = fit(
            model,
            [keras.callbacks.BackupAndRestore(backup)] + callbacks(base),
            epochs=4,
            batch_size=8,
        )
        self.assertEqual(history.epoch, [2, 3])
        self.assertEqual(history.history["unfreeze_stage"], [2, 3])
        # The group rates go on too (the rate follows the restored step).
        for key in ("lr_head", "lr_group_2", "lr_group_1", "lr_group_0"):
            self.assertAllClose(history.history[key], uninterrupted.history[key][2:], msg=key)
        resumed = snapshot(model)
        for path, value in expected.items():
            self.assertAllClose(resumed[path], value, atol=1e-6, msg=path)

    def test_save_load_mid_schedule_and_continue_with_the_callback(self):
        model, base = tiny_model(eager=True)
        fit(model, [GradualUnfreezer(tiny_groups(base))], epochs=2)
        moments = _slots(model.optimizer, "d2_kernel")
        self.assertEqual(sorted(moments), ["momentum", "velocity"])
        self.assertGreater(np.abs(moments["momentum"]).sum(), 0)
        path = os.path.join(self.get_temp_dir(), "mid.keras")
        model.save(path)
        reference_model, reference_base = tiny_model(eager=True)
        fit(reference_model, [GradualUnfreezer(tiny_groups(reference_base))], epochs=4)

        loaded = keras.models.load_model(path)
        unfreezer = GradualUnfreezer(tiny_groups(loaded.get_layer("base")))
        unfreezer.set_model(loaded)
        self.assertEqual(_slots(loaded.optimizer, "d2_kernel").keys(), moments.keys())
        for name, value in _slots(loaded.optimizer, "d2_kernel").items():
            self.assertTrue(np.array_equal(value, moments[name]), name)
        history = fit(loaded, [unfreezer], epochs=4, initial_epoch=2)
        self.assertEqual(history.history["unfreeze_stage"], [2, 3])
        # (A loaded model's variable paths differ; its weights' order does not.)
        for variable, expected in zip(loaded.weights, reference_model.weights):
            self.assertAllClose(variable, expected, atol=1e-6, msg=variable.path)

    @parameterized.named_parameters(
        ("plain", False), ("base_in_inference_mode", True)
    )
    def test_plain_fit_after_load_continues_stage_and_rates(self, inference_mode):
        # Regression: a plain `fit` after `load_model` was refused ("was
        # loaded with a model trained with GradualUnfreezer"). Now the saved
        # stage (trainable flags), learning rate schedule, group factors and
        # slots are in force, and the run equals an uninterrupted one; then
        # the callbacks, given again, go on to the next stage.
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=8, warmup_target=1e-2, warmup_steps=2
        )
        # (Layer names: the base of a loaded `InferenceMode` model is not
        # `get_layer("base")`.)
        names = [["d0", "bn"], ["d1"], ["d2"]]
        callbacks = lambda: [  # noqa: E731
            GradualUnfreezer(names, schedule=[1, 3]),
            DiscriminativeLR(names, factor=0.5),
        ]
        make = lambda: tiny_model(  # noqa: E731
            optimizer=keras.optimizers.Adam(schedule), eager=True, inference_mode=inference_mode
        )
        reference, _ = make()
        record = EpochSnapshots()
        fit(reference, callbacks() + [record], epochs=4, batch_size=8)
        expected = [list(w.values()) for w in record.weights]

        model, _ = make()
        initial = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
        fit(model, callbacks(), epochs=2, batch_size=8)
        path = os.path.join(self.get_temp_dir(), "mid.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        history = fit(loaded, [], epochs=3, initial_epoch=2, batch_size=8)
        self.assertEqual(len(history.history["loss"]), 1)
        self.assertEqual(int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)), 6)
        for variable, value in zip(loaded.weights, expected[2]):
            self.assertAllClose(variable, value, atol=1e-6, msg=variable.path)
        # d0 (never unfrozen yet) stayed bit-identical.
        for got, value in zip(loaded.weights[:2], initial[:2]):
            self.assertTrue(np.array_equal(keras.ops.convert_to_numpy(got), value))
        history = fit(loaded, callbacks(), epochs=4, initial_epoch=3, batch_size=8)
        self.assertEqual(history.history["unfreeze_stage"], [2])
        self.assertAllClose(history.history["lr_group_1"], [0.25 * float(schedule(8))])
        for variable, value in zip(loaded.weights, expected[3]):
            self.assertAllClose(variable, value, atol=1e-6, msg=variable.path)

    def test_mixed_precision(self):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")
        try:
            model, base = tiny_model(eager=True)
            self.assertIsInstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            history = fit(
                model,
                [GradualUnfreezer(tiny_groups(base)), DiscriminativeLR(tiny_groups(base))],
                epochs=4,
            )
        finally:
            keras.config.set_dtype_policy(previous)
        self.assertTrue(np.isfinite(history.history["loss"]).all())
        self.assertEqual(history.history["unfreeze_stage"], [0, 1, 2, 3])
        self.assertIsInstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        path = os.path.join(self.get_temp_dir(), "mixed.keras")
        model.save(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = keras.models.load_model(path)
        # Every optimizer variable saved once and loaded in place.
        self.assertFalse([str(w.message) for w in caught if "variable" in str(w.message)])
        history = fit(loaded, [], epochs=5, initial_epoch=4)
        self.assertTrue(np.isfinite(history.history["loss"]).all())
        history = fit(
            loaded,
            [GradualUnfreezer(tiny_groups(loaded.get_layer("base")))],
            epochs=6,
            initial_epoch=5,
        )
        self.assertTrue(np.isfinite(history.history["loss"]).all())

    def test_tensorboard_one_name_per_quantity(self):
        # Regression: the rates were written under three names (one showing
        # the head's rate for frozen groups), the stage twice. Now each
        # quantity has one tag, written by Keras's TensorBoard from the logs;
        # read back with TensorBoard's own event reader.
        from tensorboard.backend.event_processing import event_accumulator
        from tensorboard.util import tensor_util

        log_dir = os.path.join(self.get_temp_dir(), "tb")
        model, base = tiny_model(eager=True)
        fit(
            model,
            [
                GradualUnfreezer(tiny_groups(base), log_dir=log_dir),
                DiscriminativeLR(tiny_groups(base), factor=0.5),
                keras.callbacks.TensorBoard(log_dir, write_graph=False),
            ],
            epochs=3,
        )
        reader = event_accumulator.EventAccumulator(
            os.path.join(log_dir, "train"), size_guidance={"tensors": 0}
        )
        reader.Reload()
        tags = set(reader.Tags()["tensors"])
        values = {
            tag: [
                float(np.asarray(tensor_util.make_ndarray(e.tensor_proto)))
                for e in reader.Tensors(tag)
            ]
            for tag in tags
            if tag.startswith("epoch_")
        }
        quantities = {t for t in tags if "stage" in t or "lr" in t or "param" in t or "rate" in t}
        self.assertEqual(
            quantities,
            {
                "epoch_unfreeze_stage", "epoch_trainable_params", "epoch_learning_rate",
                "epoch_lr_head", "epoch_lr_group_0", "epoch_lr_group_1", "epoch_lr_group_2",
                "unfreezing/stage_change",
            },
        )
        self.assertEqual(values["epoch_unfreeze_stage"], [0.0, 1.0, 2.0])
        self.assertEqual(values["epoch_trainable_params"], [15.0, 51.0, 123.0])
        self.assertAllClose(values["epoch_learning_rate"], [1e-2] * 3)
        self.assertAllClose(values["epoch_lr_head"], [1e-2] * 3)
        # A frozen group's effective rate is 0.
        self.assertAllClose(values["epoch_lr_group_2"], [0.0, 5e-3, 5e-3])
        self.assertAllClose(values["epoch_lr_group_1"], [0.0, 0.0, 2.5e-3])
        self.assertAllClose(values["epoch_lr_group_0"], [0.0, 0.0, 0.0])
        texts = [
            tensor_util.make_ndarray(e.tensor_proto).item().decode()
            for e in reader.Tensors("unfreezing/stage_change")
        ]
        self.assertEqual(len(texts), 3)
        self.assertIn("unfroze groups [['d2']]", texts[1])

    def test_config_round_trip_with_layer_names(self):
        model, base = tiny_model(eager=True)
        unfreezer = GradualUnfreezer([["d0", "bn"], ["d1"], ["d2"]], schedule=[1, 2])
        config = unfreezer.get_config()
        self.assertEqual(config["groups"], [["d0", "bn"], ["d1"], ["d2"]])
        restored = GradualUnfreezer.from_config(config)
        self.assertEqual(restored.get_config(), config)
        history = fit(model, [restored], epochs=3)
        self.assertEqual(history.history["unfreeze_stage"], [0, 1, 2])

    @parameterized.named_parameters(
        ("empty_groups", {"groups": []}, "non-empty list of lists"),
        ("empty_group", {"groups": [["d0"], []]}, r"groups\[1\]=\[\]"),
        ("overlap", {"groups": [["d0", "d1"], ["d1"]]}, "must not overlap"),
        ("not_layers", {"groups": [[3]]}, "neither a Keras layer"),
        ("zero_epochs", {"epochs_per_stage": 0}, "epochs_per_stage=0"),
        ("long_schedule", {"schedule": [1, 2, 3, 4]}, "only 3 groups"),
        ("unsorted_schedule", {"schedule": [2, 1]}, "strictly increasing"),
        ("negative_schedule", {"schedule": [-1]}, "schedule=-1"),
        ("int_schedule", {"schedule": 2}, "schedule=2"),
        ("batchnorm_flag", {"train_batchnorm": "yes"}, "train_batchnorm='yes'"),
        ("log_dir", {"log_dir": 3}, "log_dir=3"),
        ("head", {"head": ["d0"]}, "head="),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        kwargs = {"groups": [["d0", "bn"], ["d1"], ["d2"]], **kwargs}
        with self.assertRaisesRegex(ValueError, message):
            GradualUnfreezer(**kwargs)

    def test_invalid_setups_raise_infit(self):
        model, base = tiny_model(eager=True)
        other, other_base = tiny_model(eager=True)
        with self.assertRaisesRegex(ValueError, "not part of model"):
            fit(model, [GradualUnfreezer(tiny_groups(other_base))], epochs=1)
        with self.assertRaisesRegex(ValueError, "which model 'model' has 0 times"):
            fit(model, [GradualUnfreezer([["conv"]])], epochs=1)
        with self.assertRaisesRegex(ValueError, "nothing to unfreeze.*train_batchnorm=True"):
            fit(model, [GradualUnfreezer([["bn"], ["d1"]])], epochs=1)
        multi = keras.optimizers.MultiOptimizer(
            keras.optimizers.OptimizerMap(keras.optimizers.Adam())
        )
        model, base = tiny_model(optimizer=multi, eager=True)
        with self.assertRaisesRegex(ValueError, "cannot drive this one"):
            fit(model, [GradualUnfreezer(tiny_groups(base))], epochs=1)
        model, base = tiny_model(eager=True)
        model.get_layer("head").trainable = False
        with self.assertRaisesRegex(ValueError, "no head to train in stage 0"):
            fit(model, [GradualUnfreezer(tiny_groups(base))], epochs=1)
        # Starting at stage 1 needs no head.
        history = fit(model, [GradualUnfreezer(tiny_groups(base), schedule=[0])], epochs=1)
        self.assertEqual(history.history["unfreeze_stage"], [1])
