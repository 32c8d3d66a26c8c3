import os

import keras
import keras_hub
import numpy as np

from keras_transfer.backbones import efficientnet_lite0
from keras_transfer.strategies import FeatureCache
from keras_transfer.strategies import truncate_model
from tests.testing import TestCase

# EfficientNet-B0 / Lite0 block outputs: (channels, stride w.r.t. the input).
_EFFICIENTNET_BLOCKS = [(32, 2), (16, 2), (24, 4), (40, 8), (80, 16),
                        (112, 16), (192, 32), (320, 32)]


def _blocky(seed=0):
    """stem -> block1 (two units with a residual add) -> block2 -> top."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((6,), name="pixels")
    stem = keras.layers.Dense(5, activation="relu", kernel_initializer=init,
                              name="stem_dense")(inputs)
    a = keras.layers.Dense(5, activation="relu", kernel_initializer=init,
                           name="block1a_dense")(stem)
    b = keras.layers.Dense(5, kernel_initializer=init, name="block1b_dense")(a)
    b = keras.layers.Add(name="block1b_add")([a, b])
    c = keras.layers.Dense(3, activation="tanh", kernel_initializer=init,
                           name="block2a_dense")(b)
    outputs = keras.layers.Dense(2, kernel_initializer=init, name="top_dense")(c)
    return keras.Model(inputs, outputs, name="blocky")


def _reference(model, x, num_blocks):
    """The block outputs computed in NumPy from the model's weights."""
    def dense(name, h):
        w, b = model.get_layer(name).get_weights()
        return h @ w + b

    relu = lambda h: np.maximum(h, 0.0)  # noqa: E731
    stem = relu(dense("stem_dense", x))
    a = relu(dense("block1a_dense", stem))
    block1 = a + dense("block1b_dense", a)
    block2 = np.tanh(dense("block2a_dense", block1))
    return [stem, block1, block2][num_blocks]


class TruncateModelTest(TestCase):
    def test_block_outputs_match_numpy(self):
        model = _blocky()
        x = np.random.default_rng(0).normal(size=(7, 6)).astype("float32")
        for k in range(3):
            sub = truncate_model(model, num_blocks=k)
            self.assertAllClose(sub.predict(x, verbose=0), _reference(model, x, k),
                                atol=1e-5)
        self.assertEqual(truncate_model(model, num_blocks=1).name,
                         "blocky_to_block1b_add")
        sub = truncate_model(model, layer_name="block1a_dense", name="cut")
        self.assertEqual(sub.name, "cut")
        self.assertEqual(sub.output.shape, (None, 5))

    def test_shares_weights_with_the_model(self):
        model = _blocky()
        sub = truncate_model(model, num_blocks=1)
        self.assertIs(sub.get_layer("block1a_dense"), model.get_layer("block1a_dense"))
        x = np.ones((4, 6), "float32")
        before = model.get_layer("stem_dense").get_weights()[0].copy()
        sub.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        sub.fit(x, np.ones((4, 5), "float32"), epochs=1, verbose=0)
        after = model.get_layer("stem_dense").get_weights()[0]
        self.assertGreater(np.abs(after - before).max(), 0.0)

    def test_efficientnet_lite0_block_shapes(self):
        base = efficientnet_lite0(weights=None, include_top=False, input_shape=(64, 64, 3))
        for k, (channels, stride) in enumerate(_EFFICIENTNET_BLOCKS):
            sub = truncate_model(base, num_blocks=k)
            self.assertEqual(sub.output.shape, (None, 64 // stride, 64 // stride, channels))
        # The cut of a residual block is its add; of a block without one, its
        # project_bn.
        self.assertEqual(truncate_model(base, num_blocks=2).layers[-1].name, "block2b_add")
        self.assertEqual(truncate_model(base, num_blocks=1).layers[-1].name, "block1a_project_bn")
        self.assertEqual(truncate_model(base, num_blocks=0).layers[-1].name, "stem_activation")

    def test_keras_applications_efficientnet(self):
        base = keras.applications.EfficientNetB0(
            weights=None, include_top=False, input_shape=(32, 32, 3)
        )
        for k, (channels, stride) in enumerate(_EFFICIENTNET_BLOCKS):
            if k == 0:
                continue
            sub = truncate_model(base, num_blocks=k)
            size = -(-32 // stride)
            self.assertEqual(sub.output.shape, (None, size, size, channels))

    def test_keras_hub_backbone_all_blocks_is_the_sequence_output(self):
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=20, num_layers=2, num_heads=2, hidden_dim=4,
            intermediate_dim=8, max_sequence_length=8,
        )
        inputs = {
            "token_ids": np.array([[1, 5, 7, 2, 0, 0]] * 2, "int32"),
            "segment_ids": np.zeros((2, 6), "int32"),
            "padding_mask": np.array([[1, 1, 1, 1, 0, 0]] * 2, "int32"),
        }
        sub = truncate_model(backbone, num_blocks=2)
        self.assertAllClose(
            sub.predict(inputs, verbose=0),
            backbone.predict(inputs, verbose=0)["sequence_output"],
            atol=1e-5,
        )
        one = truncate_model(backbone, num_blocks=1)
        self.assertEqual(one.layers[-1].name, "transformer_layer_0")

    def test_feature_cache_and_save_load_then_train(self):
        model = _blocky()
        x = np.random.default_rng(1).normal(size=(8, 6)).astype("float32")
        sub = truncate_model(model, num_blocks=1)
        features = FeatureCache(sub).transform(x)
        self.assertAllClose(features, _reference(model, x, 1), atol=1e-5)
        inputs = keras.Input((6,))
        clf = keras.Model(inputs, keras.layers.Dense(2)(sub(inputs)))
        clf.compile(optimizer="adam", loss="mse")
        clf.fit(x, np.zeros((8, 2), "float32"), epochs=1, verbose=0)
        path = os.path.join(self.get_temp_dir(), "truncated.keras")
        clf.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded.predict(x, verbose=0), clf.predict(x, verbose=0), atol=1e-6)
        history = loaded.fit(x, np.zeros((8, 2), "float32"), epochs=2, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"]).all())

    def test_bad_arguments(self):
        model = _blocky()
        with self.assertRaisesRegex(ValueError, "exactly one of `num_blocks`"):
            truncate_model(model)
        with self.assertRaisesRegex(ValueError, "exactly one of `num_blocks`"):
            truncate_model(model, num_blocks=1, layer_name="stem_dense")
        with self.assertRaisesRegex(ValueError, r"at most 2.*num_blocks=3"):
            truncate_model(model, num_blocks=3)
        with self.assertRaisesRegex(ValueError, "non-negative integer.*num_blocks=1.0"):
            truncate_model(model, num_blocks=1.0)
        with self.assertRaisesRegex(ValueError, "no top-level layer named 'nope'"):
            truncate_model(model, layer_name="nope")
        seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        with self.assertRaisesRegex(ValueError, "Functional.*Sequential"):
            truncate_model(seq, num_blocks=1)
        plain = keras.Model(*(lambda i: (i, keras.layers.Dense(2, name="d")(i)))(keras.Input((3,))))
        with self.assertRaisesRegex(ValueError, "found no blocks"):
            truncate_model(plain, num_blocks=1)
        headless = keras.Model(
            *(lambda i: (i, keras.layers.Dense(2, name="block1a_d")(i)))(keras.Input((3,)))
        )
        with self.assertRaisesRegex(ValueError, "nothing to keep"):
            truncate_model(headless, num_blocks=0)
