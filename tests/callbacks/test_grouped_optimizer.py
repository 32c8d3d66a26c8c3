"""Guards for the private Keras API that `_grouped_optimizer` relies on."""

import os
import warnings

import keras
import numpy as np

from keras_transfer.callbacks import GradualUnfreezer
from keras_transfer.callbacks import _grouped_optimizer as grouped
from tests.callbacks.tiny import tiny_data
from tests.callbacks.tiny import tiny_groups
from tests.callbacks.tiny import tiny_model
from tests.testing import TestCase


class GroupedOptimizerTest(TestCase):
    def test_trainable_capable_sees_through_freezing(self):
        # `Layer._trainable_variables` / `_flatten_layers`: frozen BatchNorm
        # still offers gamma/beta, never its moving statistics.
        model, base = tiny_model(eager=True)
        self.assertEqual(model.get_layer("base").trainable_weights, [])
        names = [v.path for v in grouped.trainable_capable(base.get_layer("bn"))]
        self.assertEqual(names, ["base/bn/gamma", "base/bn/beta"])
        self.assertEqual(len(grouped.trainable_candidates(model)), 10)

    def test_plain_optimizer_state_carries_over(self):
        # Slot variables are matched by the names Keras gives them
        # (`{variable path}_{slot}`): a head trained with plain Adam keeps
        # its moments when the grouped optimizer takes over.
        model, base = tiny_model(eager=True)
        x, y = tiny_data()
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        plain = {v.name: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables}
        self.assertIn("head_kernel_momentum", plain)
        optimizer = grouped.install(model, tiny_groups(base))
        head = optimizer.group_optimizers[-1]
        moved = {v.name: keras.ops.convert_to_numpy(v) for v in head.variables}
        self.assertTrue(np.array_equal(moved["head_kernel_momentum"], plain["head_kernel_momentum"]))
        self.assertEqual(int(keras.ops.convert_to_numpy(head.iterations)), 1)
        self.assertEqual(int(keras.ops.convert_to_numpy(optimizer.group_optimizers[0].iterations)), 0)

    def test_compile_config_follows_the_new_optimizer(self):
        model, base = tiny_model(eager=True)
        grouped.install(model, tiny_groups(base))
        config = model.get_compile_config()["optimizer"]
        self.assertEqual(config["class_name"], "GroupedOptimizer")
        self.assertEqual(config["config"]["group_layers"], [["d0", "bn"], ["d1"], ["d2"]])

    def test_save_stores_inner_state_once_and_loads_every_slot(self):
        # A model saved mid-schedule (d0 still frozen): `load_model` builds
        # the optimizer with a stand-in for each frozen variable, so every
        # saved slot loads in place, none twice, none skipped.
        model, base = tiny_model(eager=True)
        x, y = tiny_data()
        model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[GradualUnfreezer(tiny_groups(base))])
        path = os.path.join(self.get_temp_dir(), "mid.keras")
        model.save(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = keras.models.load_model(path)
        messages = [str(w.message) for w in caught]
        self.assertFalse(any("variable" in m.lower() for m in messages), messages)
        self.assertTrue(loaded.optimizer.built)
        self.assertEqual(len(loaded.optimizer.variables), len(model.optimizer.variables))
        for got, expected in zip(loaded.optimizer.variables, model.optimizer.variables):
            self.assertTrue(np.array_equal(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected)))

    def test_subset_of_variables_is_accepted(self):
        model, base = tiny_model(eager=True)
        optimizer = grouped.install(model, tiny_groups(base))
        head = model.get_layer("head").trainable_weights
        before = [keras.ops.convert_to_numpy(v) for v in head]
        optimizer.apply([keras.ops.ones(v.shape) for v in head], head)
        after = [keras.ops.convert_to_numpy(v) for v in head]
        self.assertAllClose(after[0], before[0] - 1e-2, atol=1e-6)
        self.assertEqual(int(keras.ops.convert_to_numpy(optimizer.iterations)), 1)

    def test_state_survives_load_save_load_without_fit(self):
        model, base = tiny_model(eager=True)
        x, y = tiny_data()
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[GradualUnfreezer(tiny_groups(base))])
        expected = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
        first = os.path.join(self.get_temp_dir(), "first.keras")
        second = os.path.join(self.get_temp_dir(), "second.keras")
        model.save(first)
        keras.models.load_model(first).save(second)
        again = keras.models.load_model(second)
        self.assertEqual(len(again.optimizer.variables), len(expected))
        for got, value in zip(again.optimizer.variables, expected):
            self.assertTrue(np.array_equal(keras.ops.convert_to_numpy(got), value))

    def test_private_keras_api_in_use(self):
        # What this module reads from Keras beyond the public API.
        optimizer = keras.optimizers.Adam(1e-3)
        self.assertIsInstance(optimizer._learning_rate, keras.Variable)
        schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
        self.assertIs(keras.optimizers.Adam(schedule)._learning_rate, schedule)
        self.assertIsInstance(keras.optimizers.Optimizer.learning_rate, property)
        variable = keras.Variable(1.0)
        self.assertEqual(optimizer._var_key(variable), optimizer._var_key(variable))
        multi = keras.optimizers.MultiOptimizer(
            keras.optimizers.OptimizerMap(keras.optimizers.SGD(), {"a": keras.optimizers.Adam()})
        )
        multi.build([variable])
        self.assertEqual(multi._var_to_optimizer_idx, {optimizer._var_key(variable): 1})
        self.assertEqual(multi._trainable_variables, [variable])
        self.assertEqual(multi.variables[0].name, "iteration")
        self.assertEqual(multi._inner_optimizers, multi.optimizers)
        # Keras's LR callbacks branch on `hasattr(optimizer, "optimizers")`.
        optimizer = grouped.install(*(lambda m, b: (m, tiny_groups(b)))(*tiny_model(eager=True)))
        self.assertFalse(hasattr(optimizer, "optimizers"))
