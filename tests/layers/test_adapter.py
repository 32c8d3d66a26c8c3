import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.layers import Adapter
from tests.testing import TestCase


class AdapterTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            Adapter,
            init_kwargs={"bottleneck": 2},
            input_shape=(2, 3, 8),
            expected_output_shape=(2, 3, 8),
            expected_num_trainable_weights=4,
            supports_masking=True,
        )

    def test_identity_at_init_and_counts(self):
        adapter = Adapter(reduction_factor=4)
        x = np.random.default_rng(0).normal(size=(2, 16)).astype("float32")
        self.assertAllClose(adapter(x), x, atol=0)
        # m = 16 // 4 = 4: 2 d m + m + d.
        count = sum(int(np.prod(w.shape)) for w in adapter.trainable_weights)
        self.assertEqual(count, 2 * 16 * 4 + 4 + 16)

    def test_formula_matches_numpy(self):
        rng = np.random.default_rng(1)
        adapter = Adapter(bottleneck=3, activation="tanh")
        adapter.build((None, 5))
        weights = [rng.normal(size=tuple(w.shape)).astype("float32") for w in adapter.weights]
        for w, value in zip(adapter.weights, weights):
            w.assign(value)
        wd, bd, wu, bu = (
            keras.ops.convert_to_numpy(v)
            for v in (adapter.down.kernel, adapter.down.bias, adapter.up.kernel, adapter.up.bias)
        )
        x = rng.normal(size=(4, 5)).astype("float32")
        expected = x + np.tanh(x @ wd + bd) @ wu + bu
        self.assertAllClose(adapter(x), expected, atol=1e-5)

    def test_save_load(self):
        adapter = Adapter(bottleneck=2)
        model = keras.Sequential([keras.Input((6,)), adapter])
        adapter.up.kernel.assign(np.ones((2, 6), "float32"))
        path = os.path.join(self.get_temp_dir(), "a.keras")
        model.save(path)
        x = np.random.default_rng(2).normal(size=(3, 6)).astype("float32")
        self.assertAllClose(keras.models.load_model(path)(x), model(x), atol=1e-6)

    @parameterized.named_parameters(
        ("zero", {"bottleneck": 0}, "bottleneck=0"),
        ("float", {"bottleneck": 2.5}, "bottleneck=2.5"),
        ("factor", {"reduction_factor": -1}, "reduction_factor=-1"),
        ("both", {"bottleneck": 2, "reduction_factor": 2}, "only one"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            Adapter(**kwargs)
