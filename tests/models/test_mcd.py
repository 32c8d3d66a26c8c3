import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.models import MCDModel
from keras_transfer.models.mcd import classifier_discrepancy
from tests.testing import TestCase


def _parts():
    fe = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"), keras.layers.BatchNormalization()])
    h1 = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    h2 = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    return fe, h1, h2


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, 4)).astype("float32")
    xt = (rng.normal(size=(8, 4)) + 1.0).astype("float32")
    return xs, rng.integers(0, 3, 8), xt, rng.integers(0, 3, 8)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _ce(labels, logits):
    return -np.mean(np.log(_softmax(logits)[np.arange(len(labels)), labels]))


class MCDModelTest(TestCase, parameterized.TestCase):
    def test_fit_predict_metrics_save_load(self):
        xs, ys, xt, yt = _data()
        model = MCDModel(*_parts(), n_generator_steps=2)
        model.compile(optimizer="adam")
        history = model.fit(
            {"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0,
            validation_data=({"target": xt}, {"target": yt}),
        )
        for key in ("loss", "task_loss", "task_loss_2", "source_accuracy", "discrepancy", "val_target_accuracy"):
            self.assertIn(key, history.history)
        pred = model.predict(xt, verbose=0)
        self.assertEqual(pred.shape, (8, 3))
        val = model.evaluate({"target": xt}, {"target": yt}, return_dict=True, verbose=0)
        self.assertAllClose(val["target_accuracy"], np.mean(pred.argmax(-1) == yt))

        revived = MCDModel.from_config(model.get_config())
        self.assertEqual(revived.n_generator_steps, 2)
        path = os.path.join(self.get_temp_dir(), "mcd.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, MCDModel)
        self.assertAllClose(loaded.predict(xt, verbose=0), pred, atol=1e-6)
        self.assertAllClose(loaded.task_head_2(np.ones((1, 6))), model.task_head_2(np.ones((1, 6))))
        loaded.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)

    def test_discrepancy_is_mean_l1_of_softmax(self):
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
        self.assertAllClose(classifier_discrepancy(a, b), np.mean(np.abs(_softmax(a) - _softmax(b))))
        self.assertAllClose(classifier_discrepancy(a, a), 0.0)

    def test_loss_matches_numpy(self):
        xs, ys, xt, _ = _data()
        fe, h1, h2 = _parts()
        model = MCDModel(fe, h1, h2, discrepancy_weight=0.5)
        out = model({"source": xs, "target": xt})
        fs = keras.ops.convert_to_numpy(fe(xs))
        ft = keras.ops.convert_to_numpy(fe(xt))
        l1s, l2s = (keras.ops.convert_to_numpy(h(fs)) for h in (h1, h2))
        l1t, l2t = (keras.ops.convert_to_numpy(h(ft)) for h in (h1, h2))
        d = np.mean(np.abs(_softmax(l1t) - _softmax(l2t)))
        # Step A (Keras's step): both source cross-entropies, no d.
        loss = model.compute_loss({"source": xs, "target": xt}, ys, out, training=True)
        self.assertAllClose(loss, _ce(ys, l1s) + _ce(ys, l2s), atol=1e-5)
        self.assertAllClose(model.discrepancy_tracker.result(), d, atol=1e-6)
        # Step B: CE1 + CE2 - w d; step C: w d.
        self.assertAllClose(model._step_loss("B", ys, out, None, []), _ce(ys, l1s) + _ce(ys, l2s) - 0.5 * d, atol=1e-5)
        self.assertAllClose(model._step_loss("C", ys, out, None, []), 0.5 * d, atol=1e-6)

    def test_steps_a_b_c_match_a_hand_computation(self):
        # Two batches of the paper's schedule with SGD + momentum, against a
        # float64 NumPy re-implementation (finite-difference gradients): step
        # A updates all weights, B only the heads, C (n times) only G, each
        # on the weights the previous step left; the fixed side's momentum
        # does not move it.
        keras.utils.set_random_seed(1)
        rng = np.random.default_rng(3)
        xs = rng.normal(size=(8, 2)).astype("float32")
        xt = (rng.normal(size=(8, 2)) + 0.5).astype("float32")
        ys = rng.integers(0, 2, 8)
        fe = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="tanh")])
        h1 = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        h2 = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model = MCDModel(fe, h1, h2, n_generator_steps=2, discrepancy_weight=0.7)
        model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
        params = [keras.ops.convert_to_numpy(v).astype("float64") for v in
                  fe.weights + h1.weights + h2.weights]
        model.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1,
                  shuffle=False, verbose=0)

        def forward(p, x):
            f = np.tanh(x @ p[0] + p[1])
            return f @ p[2] + p[3], f @ p[4] + p[5]

        def loss(p, step, s, t, y):
            (a, b), (c, d) = forward(p, s), forward(p, t)
            disc = 0.7 * np.mean(np.abs(_softmax(c) - _softmax(d)))
            if step == "C":
                return disc
            return _ce(y, a) + _ce(y, b) - (disc if step == "B" else 0.0)

        def grad(p, *args):
            out = []
            for i, w in enumerate(p):
                g = np.zeros_like(w)
                for j in np.ndindex(w.shape):
                    hi = [q.copy() for q in p]
                    lo = [q.copy() for q in p]
                    hi[i][j] += 1e-6
                    lo[i][j] -= 1e-6
                    g[j] = (loss(hi, *args) - loss(lo, *args)) / 2e-6
                out.append(g)
            return out

        velocity = [np.zeros_like(w) for w in params]
        for batch in (slice(0, 4), slice(4, 8)):
            for step, which in (("A", range(6)), ("B", range(2, 6)), ("C", range(2)), ("C", range(2))):
                g = grad(params, step, xs[batch], xt[batch], ys[batch])
                for i in which:
                    velocity[i] = 0.9 * velocity[i] - 0.5 * g[i]
                    params[i] = params[i] + velocity[i]
        got = [keras.ops.convert_to_numpy(v) for v in fe.weights + h1.weights + h2.weights]
        for expected, actual in zip(params, got):
            self.assertAllClose(actual, expected, atol=2e-5)
        # The optimizer's step counts batches (a schedule sees batches).
        self.assertEqual(int(keras.ops.convert_to_numpy(model.optimizer.iterations)), 2)

    def test_steps_b_and_c_update_their_own_variables(self):
        # (That the fixed side does not move, momentum included, is checked
        # numerically by the hand computation above.)
        xs, ys, xt, _ = _data()
        fe, h1, h2 = _parts()
        model = MCDModel(fe, h1, h2, n_generator_steps=3)
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        model.fit({"source": xs, "target": xt}, ys, batch_size=8, epochs=1, verbose=0)
        steps = dict(model._steps()[:2])
        self.assertEqual(len(model._steps()), 4)
        self.assertEqual({id(v) for v in steps["B"]},
                         {id(v) for v in h1.trainable_variables + h2.trainable_variables})
        self.assertEqual({id(v) for v in steps["C"]},
                         {id(v) for v in fe.trainable_variables})

    def test_mixed_precision_fit(self):
        keras.mixed_precision.set_dtype_policy("mixed_float16")
        try:
            xs, ys, xt, _ = _data()
            model = MCDModel(*_parts())
            model.compile(optimizer="sgd")
            history = model.fit({"source": xs, "target": xt}, ys, batch_size=4, epochs=1, verbose=0)
            self.assertTrue(np.isfinite(history.history["loss"][0]))
        finally:
            keras.mixed_precision.set_dtype_policy("float32")

    @parameterized.named_parameters(
        ("steps", {"n_generator_steps": 0}, "`n_generator_steps` must be"),
        ("steps_float", {"n_generator_steps": 2.5}, "`n_generator_steps` must be"),
        ("weight", {"discrepancy_weight": float("nan")}, "`discrepancy_weight` must be"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            MCDModel(*_parts(), **kwargs)

    def test_same_head_twice_raises(self):
        fe, h1, _ = _parts()
        with self.assertRaisesRegex(ValueError, "second head with its own weights"):
            MCDModel(fe, h1, h1)

    def test_missing_target_batches_raise(self):
        xs, ys, _, _ = _data()
        model = MCDModel(*_parts())
        model.compile(optimizer="sgd")
        with self.assertRaisesRegex(ValueError, "target batches never arrived"):
            model.fit({"source": xs}, ys, epochs=1, verbose=0)
