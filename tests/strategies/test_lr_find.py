
import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer.strategies import lr_find
from keras_transfer.strategies.lr_find import range_test_rates
from keras_transfer.strategies.lr_find import smooth_losses
from keras_transfer.strategies.lr_find import valley
from tests.testing import TestCase


def _square_model(optimizer):
    # loss = mean((w * 1 - 0)^2) = w^2 with a single weight w.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")]
    )
    model.compile(optimizer, "mse", jit_compile=False)
    return model


def _mlp(optimizer, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer, "sparse_categorical_crossentropy", jit_compile=False)
    return model


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype("float32"), digits.target.astype("int32")


def _state(model):
    return (
        [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables],
        [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables],
    )


class LRFindTest(TestCase, parameterized.TestCase):
    def test_ramp_losses_and_smoothing_follow_their_definitions(self):
        # SGD on loss w^2 (gradient 2w) from w = 1: step i records
        # loss w_i^2, then w_{i+1} = w_i (1 - 2 lr_i); all in NumPy.
        model = _square_model(keras.optimizers.SGD(0.5))
        x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
        found = lr_find(model, (x, y), 1e-4, 1.0, num_steps=20, beta=0.9, stop_factor=None, batch_size=4)
        rates = 1e-4 * (1.0 / 1e-4) ** (np.arange(20) / 20)
        self.assertAllClose(found.learning_rates, rates, rtol=1e-12)
        self.assertAllClose(range_test_rates(1e-4, 1.0, 20), rates, rtol=1e-12)
        w, expected = 1.0, []
        for rate in rates.astype("float32"):
            expected.append(w * w)
            w = w * (1 - 2 * rate)
        self.assertAllClose(found.raw_losses, expected, rtol=1e-4)
        average, smoothed = 0.0, []
        for i, loss in enumerate(found.raw_losses):
            average = 0.9 * average + 0.1 * loss
            smoothed.append(average / (1 - 0.9 ** (i + 1)))
        self.assertAllClose(found.losses, smoothed, rtol=1e-12)
        self.assertAllClose(smooth_losses(found.raw_losses, 0.9), smoothed, rtol=1e-12)
        # ... and the model is as before: w = 1, SGD at 0.5, step 0.
        self.assertAllClose(model.weights[0], [[1.0]])
        self.assertAllClose(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), 0.5)
        self.assertEqual(int(keras.ops.convert_to_numpy(model.optimizer.iterations)), 0)

    def test_stops_when_the_loss_diverges(self):
        # From lr = 1 on, |1 - 2 lr| > 1: the loss grows, the test stops.
        model = _square_model(keras.optimizers.SGD(0.1))
        x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
        found = lr_find(model, (x, y), 1e-3, 100.0, num_steps=50, batch_size=4)
        self.assertLess(len(found.learning_rates), 50)
        self.assertGreater(found.losses[-1], 4 * found.losses.min())
        self.assertLessEqual(found.losses[-2], 4 * found.losses.min())

    def test_no_signal_gives_no_suggestion_and_says_why(self):
        # Regression: on labels unrelated to the inputs fastai's valley is a
        # stretch of noise, and its rate (1e-7 to 1e-2 by chance) was
        # returned as the suggestion. Now: None, with the reason, warned.
        x, _ = _digits()
        y = np.random.default_rng(0).integers(0, 10, len(x))
        # Output weights 0: the model starts at the uniform prediction
        # (loss ln 10), so there is nothing left to learn, not even the
        # label frequencies.
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros"),
        ])
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                      jit_compile=False)
        with self.assertWarnsRegex(UserWarning, "`lr_find` suggests no learning rate") as w:
            found = lr_find(model, (x, y), num_steps=60, batch_size=32)
        self.assertIsNone(found.suggestion)
        self.assertIsNone(found.suggestion_index)
        self.assertEqual(str(w.warning), found.reason)
        # What was seen: steps, rates, the loss range; why; what to do.
        losses = found.losses
        self.assertIn(f"ran {len(losses)} of 60 steps, rates 1.00e-07", found.reason)
        self.assertIn(f"From step 6 on, the smoothed loss went from {losses[6]:.4g} to a "
                      f"lowest {losses[6:].min():.4g}", found.reason)
        self.assertIn("never fell clearly", found.reason)
        self.assertIn("pass a learning rate yourself", found.reason)
        # The smoothed loss never fell 5 % below its start (ln 10 = 2.3).
        self.assertGreater(losses[6:].min(), 0.95 * losses[6])
        # fastai's valley is still there to read, and is what min_drop=0 gives.
        self.assertIsNotNone(found.valley)
        again = lr_find(model, (x, y), num_steps=60, batch_size=32, min_drop=0.0)
        self.assertEqual(again.suggestion, found.valley)
        self.assertIsNone(again.reason)
        self.assertIn("reason=", repr(found))

    def test_too_few_steps_says_the_test_was_too_short(self):
        # SGD on w^2 (w <- w (1 - 2 lr)) over 10 steps from 1e-4 to 1: the
        # loss falls only at steps 5-9 (rates 1e-2 to 0.4), outside the
        # window fastai takes the valley from (steps 1-4, rates < 4e-3).
        model = _square_model(keras.optimizers.SGD(0.1))
        x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
        with self.assertWarnsRegex(UserWarning, "suggests no learning rate"):
            found = lr_find(model, (x, y), 1e-4, 1.0, num_steps=10, batch_size=4)
        self.assertIsNone(found.suggestion)
        # The window's losses (smoothed) fall by well under 5 %; all of them
        # by far more.
        self.assertLess(1 - found.losses[4] / found.losses[1], 0.05)
        self.assertGreater(1 - found.losses.min() / found.losses[1], 0.1)
        self.assertIn("steps 1 to 4, rates 2.51e-04 to 3.98e-03", found.reason)
        self.assertIn("test was too short", found.reason)
        self.assertIn("`num_steps`, now 10", found.reason)
        # With enough steps the same curve has a supported valley.
        found = lr_find(model, (x, y), 1e-4, 1.0, num_steps=40, batch_size=4)
        self.assertIsNotNone(found.suggestion)
        self.assertIsNone(found.reason)

    def test_valley_is_fastai_definition(self):
        # Worked by hand with fastai's code: losses fall 0..6 (lds[6] = 7),
        # so end = 6, start = 6 - 7 = -1, L = 7, index = -1 + 2 + 1 = 2.
        losses = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 3.5, 4.0, 6.0]
        rates = [10.0 ** (i - 9) for i in range(10)]
        self.assertEqual(valley(rates, losses), (1e-7, 2))
        # A bump inside the fall: the longest *subsequence* skips it.
        losses = [5.0, 4.0, 4.5, 3.0, 2.0, 1.0, 0.5, 2.0, 3.0]
        # lds[6] = 6: end = 6, start = 0, L = 6, index = 0 + 2 + 1.
        self.assertEqual(valley(list(range(9)), losses)[1], 3)

    def test_model_and_optimizer_state_bit_identical_afterwards(self):
        x, y = _digits()
        model = _mlp(keras.optimizers.Adam(1e-3))
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
        before = _state(model)
        expected = model.predict(x[:8], verbose=0)
        lr_find(model, (x[:256], y[:256]), num_steps=12, batch_size=32)
        after = _state(model)
        for got, value in zip(after[0] + after[1], before[0] + before[1]):
            self.assertTrue(np.array_equal(got, value))
        self.assertTrue(np.array_equal(model.predict(x[:8], verbose=0), expected))
        # Training goes on as if nothing happened.
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)

    def test_scheduled_optimizer_runs_on_a_clone_and_is_given_back(self):
        x, y = _digits()
        schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
        model = _mlp(keras.optimizers.Adam(schedule))
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
        optimizer = model.optimizer
        before = _state(model)
        found = lr_find(model, (x[:128], y[:128]), num_steps=8, batch_size=32)
        self.assertIs(model.optimizer, optimizer)
        for got, value in zip(sum(_state(model), []), sum(before, [])):
            self.assertTrue(np.array_equal(got, value))
        # The schedule goes on from its step (2), untouched.
        self.assertAllClose(float(keras.ops.convert_to_numpy(optimizer.learning_rate)), float(schedule(2)))
        self.assertEqual(len(found.learning_rates), 8)
        self.assertAllClose(found.learning_rates[0], 1e-7)

    def test_iterable_of_batches(self):
        # Any iterable of (x, y) batches, re-iterated when exhausted.
        model = _square_model(keras.optimizers.SGD(0.1))
        batches = [(np.ones((2, 1), "float32"), np.zeros((2, 1), "float32"))] * 3
        found = lr_find(model, batches, 1e-4, 1e-1, num_steps=8, stop_factor=None)
        self.assertEqual(len(found.raw_losses), 8)
        # A one-shot iterator ends the test when it runs out.
        found = lr_find(model, iter(batches), 1e-4, 1e-1, num_steps=8, stop_factor=None)
        self.assertEqual(len(found.raw_losses), 3)
        with self.assertRaisesRegex(ValueError, "got no batch"):
            lr_find(model, [], 1e-4, 1e-1)

    def test_tf_dataset_and_dict_inputs_give_the_array_losses(self):
        # Regression: a tf.data.Dataset fed tf.Tensors to a JAX model, and a
        # (dict x, y) tuple was taken for an iterable of batches.
        tf = pytest.importorskip("tensorflow")
        x = np.linspace(-1, 1, 16, dtype="float32")[:, None]
        y = np.zeros((16, 1), "float32")

        def losses(data, dict_input=False):
            keras.utils.set_random_seed(0)
            if dict_input:
                inputs = {"a": keras.Input((1,), name="a")}
                outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")(
                    inputs["a"]
                )
                model = keras.Model(inputs, outputs)
                model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=False)
            else:
                model = _square_model(keras.optimizers.SGD(0.1))
            found = lr_find(model, data, 1e-3, 1e-1, num_steps=6, batch_size=16,
                            stop_factor=None)
            return np.asarray(found.raw_losses)

        expected = losses((x, y))
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        self.assertAllClose(losses(dataset), expected)
        self.assertAllClose(losses(({"a": x}, y), dict_input=True), expected)

    def test_plot(self):
        import matplotlib

        matplotlib.use("Agg")
        model = _square_model(keras.optimizers.SGD(0.1))
        x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
        found = lr_find(model, (x, y), 1e-4, 1.0, num_steps=30, batch_size=4)
        ax = found.plot()
        self.assertEqual(ax.get_xscale(), "log")
        self.assertEqual(len(ax.lines), 2)

    @parameterized.named_parameters(
        ("wrong_order", {"start_learning_rate": 1.0, "end_learning_rate": 1e-3}, "must be larger"),
        ("equal", {"start_learning_rate": 1e-3, "end_learning_rate": 1e-3}, "end_learning_rate=0.001"),
        ("zero_start", {"start_learning_rate": 0.0}, "start_learning_rate=0.0"),
        ("negative_end", {"end_learning_rate": -1.0}, "end_learning_rate=-1.0"),
        ("few_steps", {"num_steps": 3}, "num_steps=3"),
        ("beta", {"beta": 1.0}, "beta=1.0"),
        ("stop_factor", {"stop_factor": 0.5}, "stop_factor=0.5"),
        ("min_drop", {"min_drop": 1.0}, "min_drop=1.0"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        model = _square_model(keras.optimizers.SGD(0.1))
        x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
        with self.assertRaisesRegex(ValueError, message):
            lr_find(model, (x, y), **kwargs)

    def test_uncompiled_model_raises(self):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        with self.assertRaisesRegex(ValueError, "needs a compiled model"):
            lr_find(model, (np.ones((4, 1)), np.ones((4, 1))))

    @pytest.mark.large
    def test_suggestion_on_digits_is_in_the_steep_descent(self):
        # Real task (8x8 digits, MLP, Adam): the valley suggestion must sit
        # where the loss is falling fast: before the smoothed minimum, where
        # the smoothed slope (per decade of rate) is clearly negative, and
        # where the batch losses are already well below their flat start.
        x, y = _digits()
        model = _mlp(keras.optimizers.Adam(1e-3), seed=1)
        found = lr_find(model, (x, y), num_steps=100, batch_size=64)
        losses, rates = found.losses, found.learning_rates
        i = found.suggestion_index
        low = int(np.argmin(losses))
        self.assertLess(i, low)
        self.assertLess(found.raw_losses[i - 2 : i + 3].mean(), 0.8 * found.raw_losses[:20].mean())
        self.assertGreater(losses[i], losses[low])
        slope = np.gradient(losses, np.log10(rates))
        self.assertLess(slope[i], 0.25 * slope[: low + 1].min())
        self.assertTrue(1e-4 <= found.suggestion <= 1e-1, found.suggestion)
