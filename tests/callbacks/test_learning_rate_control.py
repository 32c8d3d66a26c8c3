"""Keras's own learning-rate machinery drives every group (issue 15, part 1)."""

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

WARMUP = keras.optimizers.schedules.CosineDecay(
    0.0, decay_steps=6, warmup_target=1e-2, warmup_steps=2
)


def _step(before, after, path):
    return float(np.median(np.abs(after[path] - before[path])))


def _lr_callbacks(kind):
    if kind == "scheduler":
        return [keras.callbacks.LearningRateScheduler(lambda epoch, lr: 1e-2 * 0.5**epoch)]
    if kind == "plateau":
        # Every epoch counts as "no improvement": the rate drops each epoch.
        return [keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=100.0)]
    return []


class LearningRateControlTest(TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("discriminative", "discriminative"), ("gradual", "gradual")
    )
    def test_learning_rate_scheduler_moves_every_group(self, which):
        # Regression: `LearningRateScheduler` printed the new rate, but the
        # next Adam step still used the old one (head 1e-2 where 1e-3 was
        # set). Adam's first step moves each weight by its rate.
        model, base = tiny_model(frozen=which == "gradual", learning_rate=1e-2, eager=True)
        if which == "discriminative":
            ours = DiscriminativeLR(tiny_groups(base), factor=0.1)
            expected = {"head/kernel": 1e-3, "base/d2/kernel": 1e-4, "base/d1/kernel": 1e-5}
        else:
            ours = GradualUnfreezer(tiny_groups(base), schedule=[0])
            expected = {"head/kernel": 1e-3, "base/d2/kernel": 1e-3}
        before = snapshot(model)
        history = fit(model, [ours, keras.callbacks.LearningRateScheduler(lambda epoch: 1e-3)])
        after = snapshot(model)
        for path, rate in expected.items():
            self.assertAllClose(_step(before, after, path), rate, rtol=1e-3, msg=path)
        self.assertAllClose(history.history["learning_rate"], [1e-3])
        self.assertAllClose(history.history["lr_head"], [1e-3])

    @parameterized.named_parameters(
        ("scheduler", "scheduler"), ("plateau", "plateau"), ("warmup_schedule", "schedule")
    )
    def test_unit_factors_equal_plain_keras(self, kind):
        # With every factor 1 the grouped run is plain Keras: same weights
        # after 6 Adam steps whose rate the Keras callback or schedule moves.
        def make():
            optimizer = keras.optimizers.Adam(WARMUP if kind == "schedule" else 1e-2)
            return tiny_model(frozen=False, optimizer=optimizer, eager=True)

        reference, _ = make()
        expected = fit(reference, _lr_callbacks(kind), epochs=3, batch_size=8)
        model, base = make()
        history = fit(
            model,
            [DiscriminativeLR(tiny_groups(base), factors=[1.0] * 4)] + _lr_callbacks(kind),
            epochs=3,
            batch_size=8,
        )
        for variable, value in zip(model.weights, reference.weights):
            self.assertAllClose(variable, value, atol=1e-6, msg=variable.path)
        if kind == "schedule":
            rates = [float(WARMUP(s)) for s in (2, 4, 6)]
        else:
            rates = expected.history["learning_rate"]
            self.assertAllClose(history.history["learning_rate"], rates)
            self.assertLess(rates[-1], rates[0])
        self.assertAllClose(history.history["lr_group_0"], history.history["lr_head"])
        self.assertAllClose(history.history["lr_head"][1:], rates[1:])

    def test_reduce_lr_on_plateau_keeps_the_factors(self):
        model, base = tiny_model(frozen=False, learning_rate=1e-2, eager=True)
        history = fit(
            model,
            [DiscriminativeLR(tiny_groups(base), factor=0.5)] + _lr_callbacks("plateau"),
            epochs=3,
        )
        # The rates logged at epoch end were applied in that epoch (the
        # first epoch is an improvement over `inf`: no reduction after it).
        self.assertAllClose(history.history["lr_head"], [1e-2, 1e-2, 5e-3])
        for i, scale in [(2, 0.5), (1, 0.25), (0, 0.125)]:
            self.assertAllClose(
                history.history[f"lr_group_{i}"],
                [scale * r for r in history.history["lr_head"]],
            )
        # ... and really used: the inner optimizers' rates of the last step.
        optimizer = model.optimizer
        applied = [float(keras.ops.convert_to_numpy(o.learning_rate)) for o in optimizer.group_optimizers]
        self.assertAllClose(applied, [5e-3 * s for s in (0.125, 0.25, 0.5, 1.0)])
        self.assertAllClose(float(keras.ops.convert_to_numpy(optimizer.learning_rate)), 2.5e-3)

    def test_warmup_schedule_moves_every_group(self):
        # Warm-up from 0: the first step moves nothing in any group.
        model, base = tiny_model(frozen=False, optimizer=keras.optimizers.Adam(WARMUP), eager=True)
        before = snapshot(model)
        fit(model, [DiscriminativeLR(tiny_groups(base), factor=0.1)])
        after = snapshot(model)
        for path in ["head/kernel", "base/d2/kernel", "base/d0/kernel"]:
            self.assertTrue(np.array_equal(before[path], after[path]), path)
        # The second step runs at WARMUP(1) = 5e-3 times each factor; the
        # second Adam step of a fresh optimizer is not lr-sized, so compare
        # with plain Adam at each group's scaled schedule.
        fit(model, [DiscriminativeLR(tiny_groups(base), factor=0.1)])
        got = snapshot(model)
        for scale, path in [(1.0, "head/kernel"), (0.1, "base/d2/kernel")]:
            scaled = keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps=6, warmup_target=1e-2 * scale, warmup_steps=2
            )
            reference, _ = tiny_model(frozen=False, optimizer=keras.optimizers.Adam(scaled), eager=True)
            fit(reference, [], epochs=2)
            self.assertAllClose(got[path], snapshot(reference)[path], atol=1e-7, msg=path)

    def test_one_cycle_drives_every_group_times_its_factor(self):
        from keras_transfer.optimizers.schedules import OneCycle

        schedule = OneCycle(1e-2, total_steps=8, warmup_steps=2)
        model, base = tiny_model(frozen=False, optimizer=keras.optimizers.Adam(schedule), eager=True)
        rates = []

        class AppliedRates(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                optimizer = self.model.optimizer
                rates.append([float(keras.ops.convert_to_numpy(o.learning_rate)) for o in optimizer.group_optimizers])

        history = fit(
            model,
            [DiscriminativeLR(tiny_groups(base), factor=0.5), AppliedRates()],
            epochs=4,
            batch_size=8,
        )
        # Step s runs every group at OneCycle(s) times its factor
        # (inner order: d0, d1, d2, head).
        for step, applied in enumerate(rates):
            expected = [float(schedule(step)) * f for f in (0.125, 0.25, 0.5, 1.0)]
            self.assertAllClose(applied, expected, rtol=1e-5, msg=step)
        self.assertAllClose(history.history["lr_group_1"], [0.25 * float(schedule(s)) for s in (2, 4, 6, 8)])

    def test_lr_find_on_a_grouped_model_ramps_every_group_and_restores_it(self):
        from keras_transfer.strategies import lr_find
        from tests.callbacks.tiny import tiny_data

        model, base = tiny_model(frozen=False, eager=True)
        fit(model, [DiscriminativeLR(tiny_groups(base), factor=0.5)])
        optimizer = model.optimizer
        before = [keras.ops.convert_to_numpy(v).copy() for v in model.variables + optimizer.variables]
        x, y = tiny_data()
        found = lr_find(model, (x, y), 1e-4, 1e-1, num_steps=6, batch_size=8, stop_factor=None)
        self.assertEqual(len(found.learning_rates), 6)
        after = [keras.ops.convert_to_numpy(v) for v in model.variables + optimizer.variables]
        for got, value in zip(after, before):
            self.assertTrue(np.array_equal(got, value))
        self.assertIs(model.optimizer, optimizer)
        self.assertAllClose(optimizer.factors, [0.125, 0.25, 0.5, 1.0])
        # (Its inner rates were restored too: they are optimizer variables.)
