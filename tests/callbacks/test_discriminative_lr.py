import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.callbacks import DiscriminativeLR
from keras_transfer.callbacks import GradualUnfreezer
from tests.callbacks.tiny import fit
from tests.callbacks.tiny import snapshot
from tests.callbacks.tiny import tiny_groups
from tests.callbacks.tiny import tiny_model
from tests.testing import TestCase

SCHEDULE = keras.optimizers.schedules.CosineDecay(
    0.0, decay_steps=8, warmup_target=1e-2, warmup_steps=2
)


def _delta(before, after, path):
    return np.abs(after[path] - before[path])


class DiscriminativeLRTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("plain", False), ("base_in_inference_mode", True)
    )
    def test_update_sizes_follow_rates_with_adam(self, inference_mode):
        # Adam's first step is lr * g / (|g| + eps'): every weight moves by
        # its rate whatever the size of its gradient, so scaling gradients
        # would change nothing; the rates must act on the update.
        model, base = tiny_model(frozen=False, inference_mode=inference_mode)
        before = snapshot(model)
        history = fit(model, [DiscriminativeLR(tiny_groups(base), base_rate=1e-2, factor=0.1)])
        after = snapshot(model)
        head = np.median(_delta(before, after, "head/kernel"))
        self.assertAllClose(head, 1e-2, rtol=1e-3)
        for k, path in enumerate(["base/d2/kernel", "base/d1/kernel", "base/d0/kernel"]):
            ratio = np.median(_delta(before, after, path)) / head
            self.assertAllClose(ratio, 0.1 ** (k + 1), rtol=1e-3, msg=path)
        self.assertAllClose(history.history["lr_head"], [1e-2])
        self.assertAllClose(history.history["lr_group_2"], [1e-3])
        self.assertAllClose(history.history["lr_group_0"], [1e-5])

    def test_same_step_as_plain_adam_per_group(self):
        # With the same gradients, each group's update is exactly what a
        # plain Adam at that group's rate does. Adam's first step is
        # proportional to its rate, so one reference run covers all rates.
        rates = [3e-3, 2e-3, 1e-3, 5e-4]
        model, base = tiny_model(frozen=False, eager=True)
        before = snapshot(model)
        fit(model, [DiscriminativeLR(tiny_groups(base), learning_rates=rates)])
        got = snapshot(model)
        reference, _ = tiny_model(frozen=False, learning_rate=1e-3, eager=True)
        fit(reference, [])
        step = {k: v - before[k] for k, v in snapshot(reference).items()}
        for rate, paths in [
            (rates[0], ["head/kernel", "head/bias"]),
            (rates[1], ["base/d2/kernel", "base/d2/bias"]),
            (rates[2], ["base/d1/kernel", "base/d1/bias"]),
            (rates[3], ["base/d0/kernel", "base/bn/gamma"]),
        ]:
            for path in paths:
                expected = before[path] + step[path] * (rate / 1e-3)
                self.assertAllClose(got[path], expected, atol=1e-7, msg=path)

    def test_schedule_as_base_rate(self):
        model, base = tiny_model(frozen=False, optimizer=keras.optimizers.Adam(SCHEDULE), eager=True)
        history = fit(model, [DiscriminativeLR(tiny_groups(base), factor=0.5)], epochs=3, batch_size=8)
        # Two steps per epoch; rates logged at the step reached.
        expected = [float(SCHEDULE(s)) for s in (2, 4, 6)]
        self.assertAllClose(history.history["lr_head"], expected)
        self.assertAllClose(history.history["lr_group_2"], [0.5 * e for e in expected])
        self.assertAllClose(history.history["lr_group_0"], [0.125 * e for e in expected])
        # A schedule as `base_rate` replaces the compiled float rate; the
        # explicit factors follow it.
        model2, base2 = tiny_model(frozen=False, eager=True)
        history = fit(
            model2,
            [DiscriminativeLR([["d0", "bn"], ["d1"], ["d2"]], base_rate=SCHEDULE, factors=[1.0, 0.5, 0.2, 0.1])],
            epochs=2,
            batch_size=8,
        )
        self.assertAllClose(history.history["lr_head"], [float(SCHEDULE(2)), float(SCHEDULE(4))])
        self.assertAllClose(history.history["lr_group_0"], [0.1 * float(SCHEDULE(2)), 0.1 * float(SCHEDULE(4))])

    def test_the_schedule_really_drives_the_update(self):
        # The warm-up starts at 0: the first step moves nothing, the second
        # runs at 5e-3 for the head and at 5e-4 for the top group.
        model, base = tiny_model(frozen=False, eager=True)
        before = snapshot(model)
        fit(model, [DiscriminativeLR(tiny_groups(base), base_rate=SCHEDULE)], batch_size=16)
        self.assertTrue(np.array_equal(before["head/kernel"], snapshot(model)["head/kernel"]))
        fit(model, [DiscriminativeLR(tiny_groups(base), base_rate=SCHEDULE)], batch_size=16)
        got = snapshot(model)
        # Same two steps with plain Adam on the schedule, and on 0.1 x it.
        tenth = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=8, warmup_target=1e-3, warmup_steps=2
        )
        for schedule, path in [(SCHEDULE, "head/kernel"), (tenth, "base/d2/kernel")]:
            reference, _ = tiny_model(frozen=False, optimizer=keras.optimizers.Adam(schedule), eager=True)
            fit(reference, [], epochs=2)
            self.assertAllClose(got[path], snapshot(reference)[path], atol=1e-7, msg=path)
        self.assertFalse(np.array_equal(before["head/kernel"], got["head/kernel"]))

    def test_with_gradual_unfreezer_in_onefit(self):
        model, base = tiny_model()
        initial = snapshot(model)
        record = []

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                record.append(snapshot(self.model))

        history = fit(
            model,
            [
                DiscriminativeLR(tiny_groups(base), base_rate=1e-2, factor=0.1),
                GradualUnfreezer(tiny_groups(base)),
                Record(),
            ],
            epochs=3,
        )
        self.assertEqual(history.history["unfreeze_stage"], [0, 1, 2])
        # d0 is never unfrozen: bit-identical.
        self.assertTrue(np.array_equal(record[-1]["base/d0/kernel"], initial["base/d0/kernel"]))
        # d1 unfrozen in epoch 2: one fresh Adam step at its rate 1e-4.
        d1 = np.median(_delta(record[1], record[2], "base/d1/kernel"))
        self.assertAllClose(d1, 1e-4, rtol=1e-3)
        d2 = np.median(_delta(record[0], record[1], "base/d2/kernel"))
        self.assertAllClose(d2, 1e-3, rtol=1e-3)

    def test_save_load_keeps_rates_and_continues(self):
        model, base = tiny_model(frozen=False, optimizer=keras.optimizers.Adam(SCHEDULE), eager=True)
        fit(model, [DiscriminativeLR(tiny_groups(base), factor=0.5)], batch_size=8)
        path = os.path.join(self.get_temp_dir(), "dlr.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertEqual(loaded.optimizer.__class__.__name__, "GroupedOptimizer")
        # `base_rate=None`: the loaded optimizer's (scheduled) rates go on.
        history = fit(
            loaded,
            [DiscriminativeLR(tiny_groups(loaded.get_layer("base")), factor=0.5)],
            epochs=2,
            initial_epoch=1,
            batch_size=8,
        )
        self.assertAllClose(history.history["lr_head"], [float(SCHEDULE(4))])
        self.assertAllClose(history.history["lr_group_0"], [0.125 * float(SCHEDULE(4))])

    def test_config_round_trip(self):
        callback = DiscriminativeLR([["d0", "bn"], ["d1"]], base_rate=SCHEDULE, factor=0.3)
        config = callback.get_config()
        restored = DiscriminativeLR.from_config(config)
        self.assertEqual(restored.get_config(), config)
        self.assertIsInstance(restored.base_rate, keras.optimizers.schedules.CosineDecay)

    @parameterized.named_parameters(
        ("zero_rate", {"learning_rates": [1e-3, 0.0, 1e-5, 1e-6]}, "learning_rates=0.0"),
        ("negative_base", {"base_rate": -1e-3}, "base_rate=-0.001"),
        ("wrong_count", {"learning_rates": [1e-3, 1e-4]}, "needs 4 rates"),
        ("both", {"learning_rates": [1e-3] * 4, "base_rate": 1e-3}, "not both"),
        ("factor_zero", {"factor": 0}, "factor=0"),
        ("factor_above_one", {"factor": 1.5}, "factor=1.5"),
        ("string_rate", {"base_rate": "fast"}, "base_rate='fast'"),
        ("empty_groups", {"groups": []}, "non-empty list of lists"),
        ("zero_factor", {"factors": [1.0, 0.0, 0.1, 0.1]}, r"factors=\[1.0, 0.0"),
        ("negative_factor", {"factors": [1.0, -0.5, 0.1, 0.1]}, "positive, finite"),
        ("factors_count", {"factors": [1.0, 0.5]}, "needs 4 values"),
        ("schedule_in_rates", {"learning_rates": [SCHEDULE, 1e-3, 1e-4, 1e-5]}, "floats only"),
        ("rates_and_factors", {"learning_rates": [1e-3] * 4, "factors": [1.0] * 4}, "not both"),
        ("log_dir", {"log_dir": "tb"}, "keras.callbacks.TensorBoard"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        kwargs = {"groups": [["d0", "bn"], ["d1"], ["d2"]], **kwargs}
        with self.assertRaisesRegex(ValueError, message):
            DiscriminativeLR(**kwargs)

    def test_float_base_rate_on_scheduled_optimizer_raises(self):
        model, base = tiny_model(optimizer=keras.optimizers.Adam(SCHEDULE), eager=True)
        with self.assertRaisesRegex(ValueError, "Pass `factors` to share that schedule"):
            fit(model, [DiscriminativeLR(tiny_groups(base), base_rate=1e-3)])

    @parameterized.named_parameters(
        ("global_clipnorm", {"global_clipnorm": 1.0}),
        ("accumulation", {"gradient_accumulation_steps": 2}),
        ("ema", {"use_ema": True}),
    )
    def test_optimizer_options_that_would_act_per_group_raise(self, kwargs):
        model, base = tiny_model(optimizer=keras.optimizers.Adam(1e-3, **kwargs), eager=True)
        with self.assertRaisesRegex(ValueError, "would act per group"):
            fit(model, [DiscriminativeLR(tiny_groups(base))])

    def test_unsupported_optimizer_raises(self):
        multi = keras.optimizers.MultiOptimizer(
            keras.optimizers.OptimizerMap(keras.optimizers.Adam())
        )
        model, base = tiny_model(optimizer=multi)
        with self.assertRaisesRegex(ValueError, "cannot drive this one"):
            fit(model, [DiscriminativeLR(tiny_groups(base))])
