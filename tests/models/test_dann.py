import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.callbacks import GradientReversalScheduler
from keras_transfer.models import DomainAdversarialModel
from tests.models.reference import BATCH_SIZES
from tests.models.reference import accuracy
from tests.models.reference import binary_ce
from tests.models.reference import sparse_ce
from tests.testing import TestCase


def _parts():
    fe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"), keras.layers.BatchNormalization()])
    th = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    dh = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    return fe, th, dh


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 4)).astype("float32")
    xt = (rng.normal(size=(8, 4)) + 1.0).astype("float32")
    return xs, rng.integers(0, 3, 8), xt, rng.integers(0, 3, 8)


class DomainAdversarialModelTest(TestCase, parameterized.TestCase):
    def test_fit_predict_metrics_save_load(self):
        xs, ys, xt, yt = _data()
        model = DomainAdversarialModel(*_parts(), factor=0.5)
        model.compile(optimizer="sgd")
        history = model.fit(
            {"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0,
            validation_data=({"target": xt}, {"target": yt}),
            callbacks=[GradientReversalScheduler("dann")],
        )
        for key in ("loss", "task_loss", "source_accuracy", "domain_loss", "domain_accuracy", "val_target_accuracy", "grl_factor"):
            self.assertIn(key, history.history)
        self.assertNotIn("target_accuracy", history.history)
        pred = model.predict(xt, verbose=0)
        self.assertEqual(pred.shape, (8, 3))
        val = model.evaluate({"target": xt}, {"target": yt}, return_dict=True, verbose=0)
        self.assertAllClose(val["target_accuracy"], np.mean(pred.argmax(-1) == yt))
        plain = model.evaluate(xt, yt, return_dict=True, verbose=0)
        self.assertAllClose(plain["accuracy"], val["target_accuracy"])

        revived = DomainAdversarialModel.from_config(model.get_config())
        self.assertEqual(revived.domain_loss_weight, 1.0)
        path = os.path.join(self.get_temp_dir(), "dann.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded.predict(xt, verbose=0), pred, atol=1e-6)
        self.assertAllClose(
            loaded.gradient_reversal.factor_variable,
            model.gradient_reversal.factor_variable,
        )
        loaded.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)

    def test_loss_is_task_plus_weighted_domain_loss(self):
        xs, ys, xt, _ = _data()
        model = DomainAdversarialModel(*_parts(), domain_loss_weight=0.5)
        out = model({"source": xs, "target": xt})
        task = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(ys, out["source"])
        logits = keras.ops.convert_to_numpy(out["domain"])[:, 0]
        labels = np.r_[np.zeros(8), np.ones(8)]
        p = 1 / (1 + np.exp(-logits))
        bce = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        self.assertAllClose(loss, float(task) + 0.5 * bce, atol=1e-5)

    def test_feature_gradient_is_reversed(self):
        # With task loss weight 0 (no source labels in eval) the domain loss
        # alone: the domain head descends it, the features ascend it.
        import tensorflow as tf

        if keras.backend.backend() != "tensorflow":
            self.skipTest("gradient check uses tf.GradientTape")
        xs, ys, xt, _ = _data()
        fe, th, dh = _parts()
        model = DomainAdversarialModel(fe, th, dh, factor=2.0)
        model({"source": xs, "target": xt})
        inputs = {"source": xs, "target": xt}
        with tf.GradientTape() as tape:
            out = model(inputs, training=False)
            loss = model._alignment_loss(out)
        g_rev = tape.gradient(loss, fe.trainable_weights[0])
        model.gradient_reversal.set_factor(0.0)
        model.gradient_reversal.set_factor(2.0)
        # Reference: the same loss without the reversal layer.
        with tf.GradientTape() as tape:
            feats = fe(np.concatenate([xs, xt]), training=False)
            logits = dh(feats)
            labels = np.r_[np.zeros((8, 1)), np.ones((8, 1))].astype("float32")
            ref = keras.ops.mean(keras.losses.binary_crossentropy(labels, logits, from_logits=True))
        g_ref = tape.gradient(ref, fe.trainable_weights[0])
        self.assertAllClose(g_rev, -2.0 * g_ref.numpy(), atol=1e-6)

    def test_missing_target_batches_raise(self):
        xs, ys, _, _ = _data()
        model = DomainAdversarialModel(*_parts())
        model.compile(optimizer="sgd")
        with self.assertRaisesRegex(ValueError, "target batches never arrived"):
            model.fit({"source": xs}, ys, epochs=1, verbose=0)

    def test_target_labels_in_training_raise(self):
        xs, ys, xt, yt = _data()
        model = DomainAdversarialModel(*_parts())
        model.compile(optimizer="sgd")
        with self.assertRaisesRegex(ValueError, "Target labels must not be used"):
            model.fit({"source": xs, "target": xt}, {"source": ys, "target": yt}, epochs=1, verbose=0)

    @parameterized.named_parameters(
        ("negative_factor", {"factor": -1.0}, "`factor` must be"),
        ("nan_factor", {"factor": float("nan")}, "`factor` must be"),
        ("weight", {"domain_loss_weight": -0.1}, "`domain_loss_weight` must be"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            DomainAdversarialModel(*_parts(), **kwargs)

    def test_not_a_model_raises(self):
        fe, th, _ = _parts()
        with self.assertRaisesRegex(ValueError, "`domain_head` must be a Keras"):
            DomainAdversarialModel(fe, th, "dense")

    def test_mixed_precision_fit(self):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            xs, ys, xt, _ = _data()
            model = DomainAdversarialModel(*_parts())
            model.compile(optimizer="sgd")
            history = model.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)
            self.assertTrue(np.isfinite(history.history["loss"][0]))
        finally:
            keras.mixed_precision.set_dtype_policy("float32")


def _plain_parts(regularizer=None):
    # No BatchNorm/Dropout: the figures must not depend on the batching.
    fe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh", kernel_regularizer=regularizer)])
    th = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    dh = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    return fe, th, dh


def _domain_data(n_source=13, n_target=13, seed=1):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n_source, 4)).astype("float32")
    xt = (rng.normal(size=(n_target, 4)) + 0.5).astype("float32")
    return xs, rng.integers(0, 3, n_source), xt, rng.integers(0, 3, n_target)


class DomainAdversarialFiguresTest(TestCase, parameterized.TestCase):
    """Every epoch figure equals the figure on all the data at once."""

    def _reference(self, model, xs, ys, xt, yt, weight):
        out = model({"source": xs, "target": xt})
        src = keras.ops.convert_to_numpy(out["source"])
        tgt = keras.ops.convert_to_numpy(out["target"])
        dom = keras.ops.convert_to_numpy(out["domain"])
        labels = np.r_[np.zeros(len(xs)), np.ones(len(xt))]
        task = sparse_ce(ys, src).mean()
        domain = binary_ce(labels, dom).mean()
        return {
            "task_loss": task,
            "source_accuracy": accuracy(ys, src),
            "domain_loss": domain,
            "domain_accuracy": np.mean((dom[:, 0] > 0) == labels),
            "loss": task + weight * domain,
            "val_target_accuracy": accuracy(yt, tgt),
            "val_task_loss": sparse_ce(yt, tgt).mean(),
            "val_loss": sparse_ce(yt, tgt).mean(),
        }

    @parameterized.parameters(*BATCH_SIZES)
    def test_fit_and_evaluate_figures_at_batch_size(self, batch_size):
        xs, ys, xt, yt = _domain_data()
        model = DomainAdversarialModel(*_plain_parts(), domain_loss_weight=0.7)
        # Learning rate 0: the weights, hence the exact figures, stay fixed.
        model.compile(optimizer=keras.optimizers.SGD(0.0), metrics=["accuracy"])
        history = model.fit(
            {"source": xs, "target": xt}, ys, batch_size=batch_size, epochs=1, verbose=0,
            validation_data=({"target": xt}, {"target": yt}),
        )
        expected = self._reference(model, xs, ys, xt, yt, 0.7)
        for key, value in expected.items():
            self.assertAllClose(history.history[key][0], value, atol=1e-5, msg=key)
        both = model.evaluate({"source": xs, "target": xt}, {"source": ys, "target": yt},
                              batch_size=batch_size, return_dict=True, verbose=0)
        self.assertAllClose(
            both["loss"],
            expected["task_loss"] + expected["val_task_loss"] + 0.7 * expected["domain_loss"],
            atol=1e-5,
        )
        self.assertAllClose(both["target_accuracy"], expected["val_target_accuracy"])
        plain = model.evaluate(xt, yt, batch_size=batch_size, return_dict=True, verbose=0)
        self.assertAllClose(plain["loss"], expected["val_loss"], atol=1e-5)
        self.assertAllClose(plain["accuracy"], expected["val_target_accuracy"])

    def test_steps_per_execution_and_regularizer(self):
        xs, ys, xt, yt = _domain_data()
        model = DomainAdversarialModel(*_plain_parts(keras.regularizers.L2(0.1)))
        model.compile(optimizer=keras.optimizers.SGD(0.0), steps_per_execution=2, jit_compile=False)
        history = model.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)
        expected = self._reference(model, xs, ys, xt, yt, 1.0)
        kernel = keras.ops.convert_to_numpy(model.feature_extractor.layers[0].kernel)
        penalty = 0.1 * np.sum(kernel**2)
        self.assertAllClose(history.history["loss"][0], expected["loss"] + penalty, atol=1e-5)

    def test_domains_of_different_sizes_are_cycled(self):
        # 10 source, 20 target: the source side is repeated twice.
        xs, ys, xt, yt = _domain_data(10, 20)
        model = DomainAdversarialModel(*_plain_parts())
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        history = model.fit({"source": xs, "target": xt}, ys, batch_size=8, epochs=1, verbose=0)
        out = model({"source": np.r_[xs, xs], "target": xt})
        labels = np.r_[np.zeros(20), np.ones(20)]
        self.assertAllClose(history.history["task_loss"][0],
                            sparse_ce(ys, keras.ops.convert_to_numpy(out["source"])[:10]).mean(), atol=1e-5)
        self.assertAllClose(history.history["domain_loss"][0],
                            binary_ce(labels, keras.ops.convert_to_numpy(out["domain"])).mean(), atol=1e-5)
        # Fewer target examples: the target side is cycled instead.
        model.fit({"source": xt, "target": xs}, yt, batch_size=8, epochs=1, verbose=0)
        with self.assertRaisesRegex(ValueError, "`validation_split`"):
            model.fit({"source": xs, "target": xt}, ys, validation_split=0.2, verbose=0)
        with self.assertRaisesRegex(ValueError, "as many source as target"):
            model.evaluate({"source": xs, "target": xt}, {"source": ys}, verbose=0)

    def test_callbacks_infer_direction(self):
        xs, ys, xt, yt = _domain_data()
        model = DomainAdversarialModel(*_plain_parts())
        model.compile(optimizer="sgd")
        path = os.path.join(self.get_temp_dir(), "best.keras")
        model.fit(
            {"source": xs, "target": xt}, ys, batch_size=4, epochs=2, verbose=0,
            validation_data=({"target": xt}, {"target": yt}),
            callbacks=[
                keras.callbacks.EarlyStopping("val_target_accuracy", patience=5),
                keras.callbacks.EarlyStopping("val_task_loss", patience=5),
                keras.callbacks.ModelCheckpoint(path, monitor="val_target_accuracy", save_best_only=True),
            ],
        )
        stop = keras.callbacks.EarlyStopping("val_target_accuracy")
        stop.set_model(model)
        stop._set_monitor_op()
        self.assertIs(stop.monitor_op, keras.ops.greater)
        stop = keras.callbacks.EarlyStopping("task_loss")
        stop.set_model(model)
        stop._set_monitor_op()
        self.assertIs(stop.monitor_op, keras.ops.less)
        # Adversarial figures have no better side: Keras asks for `mode=`.
        with self.assertRaisesRegex(ValueError, "mode="):
            model.fit({"source": xs, "target": xt}, ys, epochs=1, verbose=0,
                      callbacks=[keras.callbacks.EarlyStopping("domain_accuracy")])

    def test_compile_arguments_honoured_or_rejected(self):
        xs, ys, xt, yt = _domain_data()
        onehot = np.eye(3, dtype="float32")[ys]
        model = DomainAdversarialModel(*_plain_parts())
        model.compile(optimizer=keras.optimizers.SGD(0.0),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(k=2, name="top2")])
        history = model.fit({"source": xs, "target": xt}, onehot, batch_size=4, epochs=1, verbose=0)
        logits = keras.ops.convert_to_numpy(model.predict(xs, verbose=0))
        self.assertAllClose(history.history["task_loss"][0], sparse_ce(ys, logits).mean(), atol=1e-5)
        self.assertAllClose(history.history["source_accuracy"][0], accuracy(ys, logits))
        top2 = np.mean([y in np.argsort(row)[-2:] for y, row in zip(ys, logits)])
        self.assertAllClose(history.history["source_top2"][0], top2)
        path = os.path.join(self.get_temp_dir(), "cce.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded.task_loss, keras.losses.CategoricalCrossentropy)
        loaded.fit({"source": xs, "target": xt}, onehot, batch_size=4, epochs=1, verbose=0)

        twice = DomainAdversarialModel(*_plain_parts(), task_loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        with self.assertRaisesRegex(ValueError, "got a task loss twice"):
            twice.compile(optimizer="sgd", loss="mse")
        for kwargs, message in (({"loss_weights": [1.0]}, "loss_weights"),
                                ({"weighted_metrics": ["accuracy"]}, "weighted_metrics"),
                                ({"metrics": {"source": ["accuracy"]}}, "takes a list")):
            with self.assertRaisesRegex(ValueError, message):
                DomainAdversarialModel(*_plain_parts()).compile(optimizer="sgd", **kwargs)
        fe, _, dh = _plain_parts()
        softmax_head = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
        with self.assertRaisesRegex(ValueError, "ends in a softmax"):
            DomainAdversarialModel(fe, softmax_head, dh).compile(optimizer="sgd")
        ok = DomainAdversarialModel(fe, softmax_head, dh, task_loss=keras.losses.SparseCategoricalCrossentropy())
        ok.compile(optimizer="sgd", run_eagerly=True)
        ok.fit({"source": xs, "target": xt}, ys, epochs=1, verbose=0)

    def test_config_reflects_factor_set_later(self):
        model = DomainAdversarialModel(*_plain_parts(), factor=0.5)
        model.set_factor(0.25)
        self.assertEqual(model.get_config()["factor"], 0.25)

    def test_string_loss_softmax_head_and_sample_weight(self):
        # A loss given by name is a function whose third argument is not
        # `sample_weight`: it must still be reduced and weighted like a Loss.
        xs, ys, _, _ = _domain_data(10, 10)
        fe, _, dh = _plain_parts()
        head = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
        model = DomainAdversarialModel(fe, head, dh)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
        weights = np.r_[np.ones(5), np.zeros(5)].astype("float32")
        history = model.fit({"source": xs, "target": xs}, ys, batch_size=4, verbose=0, sample_weight=weights)
        probs = model.predict(xs, verbose=0)
        expected = np.mean(-np.log(probs[np.arange(10), ys]) * weights)
        self.assertAllClose(history.history["task_loss"][0], expected, atol=1e-5)
