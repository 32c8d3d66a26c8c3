import glob
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_transfer.strategies import FeatureCache
from tests.strategies.tiny import set_bn_statistics
from tests.strategies.tiny import tiny_base
from tests.strategies.tiny import tiny_data
from tests.testing import TestCase


def _no_extraction(*args, **kwargs):
    raise AssertionError("the base ran although the features were cached")


class FeatureCacheTest(TestCase):
    def setUp(self):
        super().setUp()
        self.base = tiny_base()
        set_bn_statistics(self.base)
        self.x, self.y = tiny_data(n=10)

    def test_features_are_the_base_in_inference_mode(self):
        features = FeatureCache(self.base, batch_size=3).transform(self.x)
        # NumPy reference: Dense -> relu -> BN(moving stats) -> (no dropout) -> Dense.
        w = [np.asarray(v) for v in self.base.weights]
        kernel1, bias1, gamma, beta, mean, var, kernel2, bias2 = w
        h = np.maximum(self.x @ kernel1 + bias1, 0)
        h = gamma * (h - mean) / np.sqrt(var + 1e-3) + beta
        self.assertAllClose(features, h @ kernel2 + bias2, atol=1e-5)
        self.assertEqual(features.shape, (10, 4))

    def test_memory_cache_reuses_features(self):
        cache = FeatureCache(self.base)
        first = cache.transform(self.x)
        self.base.predict = _no_extraction
        second = cache.transform(self.x.copy())
        self.assertIs(first, second)
        self.assertEqual((cache.hits, cache.misses), (1, 1))

    def test_disk_cache_survives_a_new_session(self):
        directory = os.path.join(self.get_temp_dir(), "cache")
        first = FeatureCache(self.base, directory=directory).transform(self.x)
        files = glob.glob(os.path.join(directory, "*"))
        self.assertLen(files, 1)
        self.assertTrue(files[0].endswith(".npz"))
        # A "second run": a freshly built base with the same weights and a
        # different name, a new cache object.
        base = tiny_base(name="another_name")
        base.set_weights(self.base.get_weights())
        base.predict = _no_extraction
        cache = FeatureCache(base, directory=directory)
        second = cache.transform(self.x)
        self.assertEqual((cache.hits, cache.misses), (1, 0))
        self.assertAllEqual(first, second)

    def test_changed_weights_or_data_miss_the_cache(self):
        directory = self.get_temp_dir()
        cache = FeatureCache(self.base, directory=directory)
        before = cache.transform(self.x)
        cache.transform(self.x[:5])
        self.base.get_layer("bn").moving_mean.assign(np.zeros(8, "float32"))
        after = cache.transform(self.x)
        self.assertEqual((cache.hits, cache.misses), (0, 3))
        self.assertNotAllClose(before, after)
        self.assertLen(glob.glob(os.path.join(directory, "*.npz")), 3)
        self.assertEqual(glob.glob(os.path.join(directory, ".*.tmp")), [])

    def test_key_separates_entries(self):
        one = FeatureCache(self.base, key="a").fingerprint(self.x)
        two = FeatureCache(self.base, key="b").fingerprint(self.x)
        self.assertNotEqual(one, two)

    def test_dataset_keeps_features_and_labels_aligned(self):
        labels = np.arange(10)
        dataset = (
            tf.data.Dataset.from_tensor_slices((self.x, labels))
            .shuffle(10, seed=3)
            .batch(4)
        )
        features, y = FeatureCache(self.base).transform(dataset)
        self.assertEqual(sorted(y.tolist()), list(range(10)))
        self.assertNotEqual(y.tolist(), list(range(10)))
        expected = self.base.predict(self.x, verbose=0)[y]
        self.assertAllClose(features, expected, atol=1e-6)

    def test_dict_inputs(self):
        inputs = {
            "a": keras.Input((3,), name="a"),
            "b": keras.Input((3,), name="b"),
        }
        base = keras.Model(inputs, keras.layers.Add()([inputs["a"], inputs["b"]]))
        x = {"a": np.ones((5, 3), "float32"), "b": np.full((5, 3), 2.0, "float32")}
        self.assertAllClose(FeatureCache(base).transform(x), np.full((5, 3), 3.0))

    @parameterized.named_parameters(
        ("base", {"base": "efficientnet"}, "`base` must be a Keras model"),
        ("batch_size", {"batch_size": 0}, "`batch_size` must be a positive"),
        ("directory", {"directory": 3}, "`directory` must be a folder path"),
        ("key", {"key": 1}, "`key` must be a string"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        kwargs = {"base": self.base, **kwargs}
        with self.assertRaisesRegex(ValueError, message):
            FeatureCache(**kwargs)

    def test_directory_that_is_a_file_raises(self):
        path = os.path.join(self.get_temp_dir(), "file")
        open(path, "w").close()
        with self.assertRaisesRegex(ValueError, "Received: directory="):
            FeatureCache(self.base, directory=path)

    def test_mismatched_inputs_raise(self):
        with self.assertRaisesRegex(ValueError, "same number of examples"):
            FeatureCache(self.base).transform({"a": np.ones((3, 6)), "b": np.ones((2, 6))})

    def test_string_inputs_are_hashed_by_value(self):
        cache = FeatureCache(self.base)
        one = np.array(["a good film", "a bad film"], dtype=object)
        # Equal strings that are different Python objects.
        two = np.array([" ".join(["a", w, "film"]) for w in ("good", "bad")], dtype=object)
        other = np.array(["a good film", "a dull film"], dtype=object)
        self.assertEqual(cache.fingerprint(one), cache.fingerprint(two))
        self.assertNotEqual(cache.fingerprint(one), cache.fingerprint(other))
