import os

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.strategies import InferenceMode
from tests.strategies.tiny import set_bn_statistics
from tests.strategies.tiny import tiny_base
from tests.testing import TestCase


class InferenceModeTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            InferenceMode,
            init_kwargs={"layer": keras.layers.Dense(3)},
            input_shape=(2, 4),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=2,
            expected_num_non_trainable_weights=0,
        )

    @parameterized.named_parameters(
        ("string", "dense"),
        ("none", None),
    )
    def test_invalid_layer_raises(self, layer):
        with self.assertRaisesRegex(ValueError, "`layer` must be a Keras layer"):
            InferenceMode(layer)

    def test_plain_training_false_is_overridden_by_fit(self):
        # The Keras 3 behaviour that InferenceMode exists for: a functional
        # node's `training=False` loses to the outer `training=True`.
        base = tiny_base()
        inputs = keras.Input((6,))
        plain = keras.Model(inputs, base(inputs, training=False))
        x = np.ones((4, 6), "float32")
        self.assertNotAllClose(plain(x, training=True), base.predict(x, verbose=0))

    def test_dropout_and_batchnorm_stay_in_inference_mode(self):
        base = tiny_base()
        bn = set_bn_statistics(base)
        inputs = keras.Input((6,))
        model = keras.Model(inputs, InferenceMode(base)(inputs))
        x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
        expected = base.predict(x, verbose=0)
        # Dropout(0.5) would zero about half the units if it were on.
        self.assertAllClose(model(x, training=True), expected, atol=1e-6)
        # Trainable BN in training mode would also update its statistics.
        model.compile("sgd", "mse")
        model.fit(x, np.zeros((16, 4)), epochs=1, batch_size=4, verbose=0)
        self.assertAllClose(bn.moving_mean, np.linspace(-0.5, 0.5, 8))
        self.assertAllClose(bn.moving_variance, np.linspace(0.5, 2.0, 8))

    def test_save_and_load(self):
        base = tiny_base()
        set_bn_statistics(base)
        inputs = keras.Input((6,))
        model = keras.Model(inputs, InferenceMode(base)(inputs))
        x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded.layers[1], InferenceMode)
        self.assertAllClose(loaded(x, training=True), model.predict(x, verbose=0))
