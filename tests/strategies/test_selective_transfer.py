import keras
import numpy as np
from absl.testing import parameterized
from keras import ops

from keras_transfer.strategies import transfer_layers
from tests.testing import TestCase


def _net(seed, head_units=2, name="net"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="d1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.Dense(4, name="d2"),
            keras.layers.Dense(head_units, name="head"),
        ],
        name=name,
    )


def _np(v):
    return ops.convert_to_numpy(v)


def _perturb(model, value):
    for w in model.weights:
        w.assign(np.full(w.shape, value, dtype="float32"))


class TransferLayersTest(TestCase, parameterized.TestCase):
    def test_first_k_copied_rest_reinitialized(self):
        source = _net(0, name="source")
        _perturb(source, 3.0)
        target = _net(1, name="target")
        _perturb(target, 7.0)
        report = transfer_layers(source, target, num_layers=2, seed=5)
        self.assertEqual(report["transferred"], ["d1", "bn1"])
        self.assertEqual(report["reinitialized"], ["d2", "head"])
        # d1 and bn1 (moving statistics included) are the source's exactly.
        for layer in ("d1", "bn1"):
            for w in target.get_layer(layer).weights:
                self.assertAllClose(_np(w), np.full(w.shape, 3.0))
        # The rest come from their initializers: zero biases, Glorot kernels.
        for layer in ("d2", "head"):
            kernel, bias = target.get_layer(layer).weights
            self.assertAllClose(_np(bias), np.zeros(bias.shape))
            limit = np.sqrt(6.0 / sum(kernel.shape))
            self.assertLessEqual(np.abs(_np(kernel)).max(), limit)
            self.assertGreater(np.std(_np(kernel)), 0.1 * limit)
        # The source is untouched.
        for w in source.weights:
            self.assertAllClose(_np(w), np.full(w.shape, 3.0))

    def test_seed_makes_reinitialization_reproducible(self):
        source = _net(0)
        a, b = _net(1), _net(2)
        transfer_layers(source, a, num_layers=1, seed=3)
        transfer_layers(source, b, num_layers=1, seed=3)
        self.assertAllClose(_np(a.get_layer("d2").kernel), _np(b.get_layer("d2").kernel))
        before = _np(b.get_layer("d2").kernel)
        transfer_layers(source, b, num_layers=1)
        self.assertNotAllClose(_np(b.get_layer("d2").kernel), before)

    def test_batchnorm_reinitialized_to_identity(self):
        source, target = _net(0), _net(1)
        _perturb(target, 7.0)
        transfer_layers(source, target, num_layers=1)
        bn = target.get_layer("bn1")
        self.assertAllClose(_np(bn.gamma), np.ones(4))
        self.assertAllClose(_np(bn.beta), np.zeros(4))
        self.assertAllClose(_np(bn.moving_mean), np.zeros(4))
        self.assertAllClose(_np(bn.moving_variance), np.ones(4))

    def test_by_name_and_without_reinitialization(self):
        source = _net(0)
        _perturb(source, 3.0)
        target = _net(1, head_units=5)
        _perturb(target, 7.0)
        report = transfer_layers(
            source, target, layer_names=["d2"], reinitialize_rest=False
        )
        self.assertEqual(report, {"transferred": ["d2"], "reinitialized": []})
        self.assertAllClose(_np(target.get_layer("d2").kernel), np.full((4, 4), 3.0))
        self.assertAllClose(_np(target.get_layer("d1").kernel), np.full((3, 4), 7.0))
        self.assertAllClose(_np(target.get_layer("head").kernel), np.full((4, 5), 7.0))

    def test_new_head_with_other_shape(self):
        source, target = _net(0), _net(1, head_units=5)
        report = transfer_layers(source, target, num_layers=3)
        self.assertEqual(report["reinitialized"], ["head"])
        x = np.ones((2, 3), "float32")
        self.assertEqual(tuple(target(x).shape), (2, 5))

    def test_shape_mismatch_names_layer(self):
        source, target = _net(0), _net(1, head_units=5)
        target_before = [_np(w).copy() for w in target.weights]
        with self.assertRaisesRegex(ValueError, "layer 'head'.*shapes differ"):
            transfer_layers(source, target, num_layers=4)
        # Nothing was copied before the error.
        for w, b in zip(target.weights, target_before):
            self.assertAllClose(_np(w), b)

    @parameterized.named_parameters(
        ("too_many", {"num_layers": 5}, "`num_layers` can be at most 4.*num_layers=5"),
        ("negative", {"num_layers": -1}, "non-negative integer.*num_layers=-1"),
        ("float", {"num_layers": 1.5}, "non-negative integer.*num_layers=1.5"),
        ("both", {"num_layers": 1, "layer_names": ["d1"]}, "exactly one"),
        ("neither", {}, "exactly one"),
        ("unknown_name", {"layer_names": ["nope"]}, "'nope'.*not a weight-bearing layer"),
        ("string_names", {"layer_names": "d1"}, "list of layer names"),
        ("bad_flag", {"num_layers": 1, "reinitialize_rest": "yes"}, "reinitialize_rest"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            transfer_layers(_net(0), _net(1), **kwargs)

    def test_unbuilt_target_raises(self):
        with self.assertRaisesRegex(ValueError, "`target` must be built"):
            transfer_layers(_net(0), keras.Sequential([keras.layers.Dense(2)]), num_layers=1)
