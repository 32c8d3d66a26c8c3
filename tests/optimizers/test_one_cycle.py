import math

import keras
from absl.testing import parameterized

from keras_transfer.optimizers.schedules import OneCycle
from tests.testing import TestCase


def _reference(step, peak, total, warmup, div, final_div):
    """The one-cycle formula (fastai's `SchedCos` phases), in plain Python."""

    def cos_ramp(a, b, p):
        return a + (b - a) * (1 + math.cos(math.pi * (1 - p))) / 2

    if step < warmup:
        return cos_ramp(peak / div, peak, step / warmup)
    return cos_ramp(peak, peak / final_div, min((step - warmup) / (total - warmup), 1.0))


class OneCycleTest(TestCase, parameterized.TestCase):
    def test_values_follow_the_formula(self):
        schedule = OneCycle(1e-2, total_steps=40, warmup_steps=10, div_factor=25.0, final_div_factor=1e4)
        for step in range(0, 46):
            expected = _reference(step, 1e-2, 40, 10, 25.0, 1e4)
            self.assertAllClose(float(schedule(step)), expected, rtol=1e-5, atol=2e-9, msg=step)  # float32 near cos(0)
        self.assertAllClose(float(schedule(0)), 1e-2 / 25)
        self.assertAllClose(float(schedule(10)), 1e-2)
        self.assertAllClose(float(schedule(40)), 1e-6)
        # Halfway through each phase, halfway between its ends.
        self.assertAllClose(float(schedule(5)), (1e-2 / 25 + 1e-2) / 2)
        self.assertAllClose(float(schedule(25)), (1e-2 + 1e-6) / 2)

    def test_default_warmup_is_a_quarter_and_no_warmup_works(self):
        self.assertEqual(OneCycle(1e-3, total_steps=100).warmup_steps, 25)
        schedule = OneCycle(1e-3, total_steps=10, warmup_steps=0)
        self.assertAllClose(float(schedule(0)), 1e-3)
        self.assertAllClose(float(schedule(10)), 1e-8)

    def test_drives_an_optimizer_step_by_step(self):
        # SGD moves a weight with gradient 1 by exactly the step's rate.
        schedule = OneCycle(1e-1, total_steps=6, warmup_steps=2)
        optimizer = keras.optimizers.SGD(schedule)
        variable = keras.Variable(0.0)
        optimizer.build([variable])
        previous, moves = 0.0, []
        for _ in range(7):
            optimizer.apply([keras.ops.ones(())], [variable])
            value = float(keras.ops.convert_to_numpy(variable))
            moves.append(previous - value)
            previous = value
        self.assertAllClose(moves, [float(schedule(s)) for s in range(7)], rtol=1e-5)

    def test_serialization_round_trip(self):
        schedule = OneCycle(3e-3, total_steps=20, warmup_steps=4, div_factor=10.0, final_div_factor=100.0)
        config = keras.saving.serialize_keras_object(schedule)
        restored = keras.saving.deserialize_keras_object(config)
        self.assertIsInstance(restored, OneCycle)
        self.assertEqual(restored.get_config(), schedule.get_config())
        optimizer = keras.optimizers.Adam(schedule)
        again = keras.optimizers.Adam.from_config(optimizer.get_config())
        self.assertAllClose(
            [float(again.learning_rate) for _ in range(1)], [float(schedule(0))]
        )

    def test_docstring_example(self):
        import doctest

        import keras_transfer
        from keras_transfer.optimizers.schedules import one_cycle

        result = doctest.testmod(
            one_cycle, globs={"keras_transfer": keras_transfer, "keras": keras}
        )
        self.assertEqual(result.failed, 0)
        self.assertGreater(result.attempted, 1)

    @parameterized.named_parameters(
        ("zero_rate", {"max_learning_rate": 0.0}, "max_learning_rate=0.0"),
        ("negative_div", {"div_factor": -1.0}, "div_factor=-1.0"),
        ("zero_final_div", {"final_div_factor": 0}, "final_div_factor=0"),
        ("shorter_than_warmup", {"total_steps": 5, "warmup_steps": 10}, "must exceed `warmup_steps`"),
        ("equal_to_warmup", {"total_steps": 10, "warmup_steps": 10}, "total_steps=10, warmup_steps=10"),
        ("float_steps", {"total_steps": 10.5}, "total_steps=10.5"),
        ("negative_warmup", {"warmup_steps": -1}, "warmup_steps=-1"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        kwargs = {"max_learning_rate": 1e-3, "total_steps": 100, **kwargs}
        with self.assertRaisesRegex(ValueError, message):
            OneCycle(**kwargs)
