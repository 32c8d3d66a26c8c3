"""Guards the private Keras APIs isolated in `keras_transfer/_keras_private.py`.

If a Keras release changes `_flatten_layers` or the split between
`_trainable_variables` and `_non_trainable_variables`, these fail first, with
the name of the helper that needs mending.
"""

import os

import keras
import numpy as np

from keras_transfer import _keras_private
from tests.testing import TestCase


class Block(keras.layers.Layer):
    """A subclassed block whose sub-layers `Model.layers` does not list."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3, name="inner_dense")
        self.bn = keras.layers.BatchNormalization(name="inner_bn")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.bn.build(input_shape[:-1] + (3,))
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, x):
        return self.bn(self.dense(x)) * self.scale


class _Scale(keras.layers.Layer):
    def build(self, input_shape):
        self.kernel = self.add_weight(shape=input_shape[-1:], name="kernel")

    def call(self, x):
        return x * self.kernel


def nested_model():
    inputs = keras.Input((4,))
    inner = keras.Sequential([keras.Input((4,)), Block(name="block")], name="inner")
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs)))


class KerasPrivateTest(TestCase):
    def test_all_layers_reaches_layers_nested_in_subclassed_blocks(self):
        model = nested_model()
        names = [layer.name for layer in _keras_private.all_layers(model)]
        self.assertEqual(names[0], model.name)
        for name in ("inner", "block", "inner_dense", "inner_bn", "head"):
            self.assertIn(name, names)
        self.assertEqual(len(names), len(set(names)))
        without_self = _keras_private.all_layers(model, include_self=False)
        self.assertEqual(len(without_self), len(names) - 1)
        # The public walk stops at the first level: that is why this exists.
        self.assertNotIn("inner_dense", [layer.name for layer in model.layers])

    def test_own_variables_excludes_sub_layers(self):
        block = nested_model().get_layer("inner").get_layer("block")
        self.assertEqual(
            [v.name for v in _keras_private.own_variables(block)], ["scale"]
        )

    def test_trainable_capable_survives_freezing_and_skips_bn_statistics(self):
        model = nested_model()
        block = model.get_layer("inner").get_layer("block")
        expected = ["kernel", "bias", "gamma", "beta", "scale"]
        self.assertEqual(
            sorted(v.name for v in _keras_private.trainable_capable(block)),
            sorted(expected),
        )
        block.trainable = False
        # Freezing flips `variable.trainable` on all of them ...
        self.assertEqual(block.trainable_weights, [])
        # ... but the trainable-capable set is unchanged, moving stats excluded.
        capable = _keras_private.trainable_capable(block)
        self.assertEqual(sorted(v.name for v in capable), sorted(expected))
        self.assertEqual(len(block.weights) - len(capable), 2)
        # `layer.weights` order, no duplicates.
        order = [id(v) for v in block.weights]
        self.assertEqual(
            [id(v) for v in capable],
            sorted((id(v) for v in capable), key=order.index),
        )

    def test_layer_seed_generator_draws_like_the_layer(self):
        layer = keras.layers.RandomHue(0.5, value_range=(0, 255), seed=3)
        generator = _keras_private.layer_seed_generator(layer)
        self.assertIsInstance(generator, keras.random.SeedGenerator)
        draws = keras.random.uniform((4,), seed=generator)
        self.assertEqual(tuple(draws.shape), (4,))


    def test_replace_sublayer_swaps_attribute_and_tracking(self):
        model = nested_model()
        block = model.get_layer("inner").get_layer("block")
        old = block.dense
        new = keras.layers.Dense(3, name="new_dense")
        new.build((None, 4))
        _keras_private.replace_sublayer(block, "dense", None, old, new)
        self.assertIs(block.dense, new)
        ids = {id(v) for v in model.weights}
        self.assertIn(id(new.kernel), ids)
        self.assertNotIn(id(old.kernel), ids)
        self.assertTrue(block._tracker.locked)
        x = np.ones((2, 4), "float32")
        expected = (x @ keras.ops.convert_to_numpy(new.kernel)) * 1.0
        bn = block.bn
        expected = (expected - 0.0) / np.sqrt(1.0 + bn.epsilon)
        got = keras.ops.convert_to_numpy(block(x))
        self.assertAllClose(got, expected, atol=1e-5)

    def test_replace_graph_node_calls_the_new_layer_in_place(self):
        inputs = keras.Input((4,))
        old = keras.layers.Dense(3, name="d")
        outputs = keras.layers.Dense(2, name="top")(old(inputs))

        class Sub(keras.Model):  # a Functional subclass, like keras-hub's
            pass

        model = Sub(inputs, outputs)
        new = keras.layers.Dense(3, name="d")
        new.build((None, 4))
        n_weights = len(model.weights)
        _keras_private.replace_graph_node(model, old, new)
        self.assertIs(model.layers[1], new)
        self.assertLen(model.weights, n_weights)
        self.assertIs(model.weights[0], new.kernel)
        x = np.ones((2, 4), "float32")
        top = model.get_layer("top")
        expected = keras.ops.convert_to_numpy(top(new(x)))
        self.assertAllClose(model(x), expected, atol=1e-6)
        self.assertAllClose(model.predict(x, verbose=0), expected, atol=1e-6)

    def test_compile_arguments_are_the_objects_given(self):
        model = nested_model()
        optimizer = keras.optimizers.SGD(0.5)
        loss = keras.losses.MeanAbsoluteError()
        model.compile(optimizer, loss, metrics=["mae"], run_eagerly=True)
        arguments = _keras_private.compile_arguments(model)
        self.assertIs(arguments["optimizer"], optimizer)
        self.assertIs(arguments["loss"], loss)
        self.assertEqual(arguments["metrics"], ["mae"])
        self.assertTrue(arguments["run_eagerly"])
        model.compile(**arguments)


    def test_monitorable_group_gives_early_stopping_the_direction(self):
        up = keras.metrics.SparseCategoricalAccuracy(name="target_accuracy")
        down = keras.metrics.Mean(name="task_loss")
        down._direction = "down"
        group = _keras_private.monitorable_group([up, down])
        self.assertEqual(set(group.result()), {"target_accuracy", "task_loss"})

        class Holder(keras.Model):
            @property
            def metrics(self):
                return [group]

        for monitor, op in (("val_target_accuracy", keras.ops.greater), ("task_loss", keras.ops.less)):
            stop = keras.callbacks.EarlyStopping(monitor)
            stop.set_model(Holder())
            stop._set_monitor_op()
            self.assertIs(stop.monitor_op, op)

    def test_unlocked_tracker_and_untrack_variable_on_a_built_layer(self):
        dense = _Scale()
        dense.build((None, 2))
        # Keras refuses new state on a built layer: why the helper exists.
        with self.assertRaises(ValueError):
            dense.add_weight(shape=(2,), name="extra")
        with _keras_private.unlocked_tracker(dense):
            extra = dense.add_weight(shape=(2,), name="extra")
            fixed = dense.add_weight(shape=(), name="fixed", trainable=False)
        self.assertTrue(dense._tracker.locked)
        self.assertEqual(
            [v.name for v in dense.weights], ["kernel", "extra", "fixed"]
        )
        self.assertEqual([v.name for v in dense.non_trainable_weights], ["fixed"])
        # Saved and loaded with the layer's own variables, in that order.
        store = {}
        dense.save_own_variables(store)
        self.assertLen(store, 3)
        _keras_private.untrack_variable(dense, extra)
        self.assertEqual([v.name for v in dense.weights], ["kernel", "fixed"])
        self.assertTrue(dense._tracker.locked)

    def test_backup_files_and_epoch_follow_backup_and_restore(self):
        backup_dir = os.path.join(self.get_temp_dir(), "backup")
        callback = keras.callbacks.BackupAndRestore(backup_dir)
        files = _keras_private.backup_files(callback)
        self.assertLen(files, 4)
        self.assertEqual(_keras_private.backup_epoch(callback), 0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    raise RuntimeError("interrupted")

        with self.assertRaises(RuntimeError):
            model.fit(x, y, epochs=4, verbose=0, callbacks=[callback, Stop()])
        # Keras wrote its backup where the helper says; epochs 0 and 1 ended,
        # so a new `fit` resumes at epoch 2.
        self.assertTrue(os.path.exists(files[0]))
        self.assertTrue(os.path.exists(files[1]))
        self.assertEqual(_keras_private.backup_epoch(callback), 2)



class BuildFromBatchTest(TestCase):
    def test_builds_variables_metrics_and_optimizer_without_a_step(self):
        class Sub(keras.Model):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.dense = keras.layers.Dense(2)

            def call(self, x):
                return self.dense(x)

        model = Sub()
        model.compile("adam", "mse", metrics=["mae"])
        x = np.ones((4, 3), "float32")
        y = np.zeros((4, 2), "float32")
        _keras_private.build_from_batch(model, (x, y, None))
        self.assertTrue(model.built)
        self.assertTrue(model.optimizer.built)
        self.assertEqual(int(model.optimizer.iterations.numpy()), 0)
        self.assertEqual(model.dense.kernel.shape, (3, 2))
