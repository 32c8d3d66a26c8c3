import json
import os
import zipfile

import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.datasets import pad_clips
from keras_transfer.datasets import resize_like_files
from keras_transfer.models import RawInputClassifier
from tests.testing import TestCase


def image_classifier(size=8, classes=3):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def audio_classifier(classes=2):
    inputs = keras.Input((None,))
    x = keras.layers.Reshape((-1, 1))(inputs)
    x = keras.layers.Conv1D(4, 16, strides=8, name="conv")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


class RawInputClassifierTest(TestCase):
    def test_images_of_any_size_are_resized_and_grey_made_rgb(self):
        classifier = image_classifier()
        model = RawInputClassifier(classifier, ["a", "b", "c"], "image", image_size=(8, 8))
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (4, 20, 13, 3)).astype("float32")
        expected = classifier.predict(resize_like_files(x, (8, 8)), verbose=0)
        self.assertAllClose(model.predict(x, verbose=0), expected, atol=1e-6)
        grey = x[..., 0]
        rgb = np.repeat(resize_like_files(grey, (8, 8))[..., None], 3, axis=-1)
        self.assertAllClose(
            model.predict(grey, verbose=0), classifier.predict(rgb, verbose=0), atol=1e-6
        )
        labels, probabilities = model.predict_labels(x)
        self.assertEqual(labels, [model.class_names[i] for i in probabilities.argmax(-1)])

    def test_an_image_predicts_the_same_as_array_and_as_file(self):
        # Regression: files were resized by Pillow (antialiased when
        # shrinking), arrays by keras.ops.image.resize (not): one 300 x 300
        # photo gave 0.939 as a path and 0.914 as an array.
        from PIL import Image

        model = RawInputClassifier(image_classifier(), ["a", "b", "c"], "image",
                                   image_size=(8, 8))
        rng = np.random.default_rng(1)
        rgb = rng.integers(0, 256, (30, 23, 3)).astype("uint8")
        grey = rng.integers(0, 256, (17, 40)).astype("uint8")
        for pixels in (rgb, grey):
            path = os.path.join(self.get_temp_dir(), f"image_{pixels.ndim}.png")
            Image.fromarray(pixels).save(path)
            from_file = model.predict([path], verbose=0)
            self.assertAllClose(model.predict(pixels[None], verbose=0), from_file, atol=1e-6)
        # Pillow's float mode on float arrays: within one 8-bit level of it.
        self.assertAllClose(
            resize_like_files(rgb[None].astype("float32"), (8, 8)),
            resize_like_files(rgb[None], (8, 8)), atol=1.0,
        )

    def test_save_load_and_training_continues(self):
        model = RawInputClassifier(image_classifier(), ["a", "b", "c"], "image", image_size=(8, 8))
        rng = np.random.default_rng(1)
        x = rng.uniform(0, 255, (6, 11, 11, 3)).astype("float32")
        y = np.array([0, 1, 2, 0, 1, 2])
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=1, batch_size=3, verbose=0)  # raw images in fit
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, RawInputClassifier)
        self.assertEqual(list(loaded.class_names), ["a", "b", "c"])
        self.assertEqual(loaded.image_size, (8, 8))
        self.assertAllClose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
        # The optimizer state came back: one more step matches on both.
        model.fit(x, y, epochs=1, batch_size=6, verbose=0, shuffle=False)
        loaded.fit(x, y, epochs=1, batch_size=6, verbose=0, shuffle=False)
        self.assertAllClose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
        # The config stays short: the network is an asset, not config.
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode()
            self.assertIn("assets/classifier.json", archive.namelist())
        self.assertLess(len(config), 2000)
        self.assertIn("import keras_transfer", config)
        self.assertIsNone(json.loads(config)["config"]["classifier"])

    def test_clone_model_and_from_config_rebuild_the_classifier(self):
        # Regression: `from_config` gave a shell without its classifier (the
        # architecture lives in a `.keras` file's assets), so
        # `keras.models.clone_model` returned a model that could not predict.
        model = RawInputClassifier(image_classifier(), ["a", "b", "c"], "image",
                                   image_size=(8, 8), name="raw")
        x = np.random.default_rng(4).uniform(0, 255, (3, 10, 10, 3)).astype("float32")
        expected = model.predict(x, verbose=0)
        for copy in (
            keras.models.clone_model(model),
            RawInputClassifier.from_config(model.get_config()),
        ):
            self.assertIsInstance(copy, RawInputClassifier)
            self.assertIsNot(copy.classifier, model.classifier)
            self.assertEqual((copy.class_names, copy.modality, copy.image_size),
                             (["a", "b", "c"], "image", (8, 8)))
            # Same architecture, new weights (as clone_model does for any
            # model): with the original's weights it predicts the same.
            self.assertEqual([v.shape for v in copy.weights],
                             [v.shape for v in model.weights])
            copy.set_weights(model.get_weights())
            self.assertAllClose(copy.predict(x, verbose=0), expected, atol=1e-6)
        # `keras.saving.save_model` (not `model.save`) keeps the classifier in
        # the config too, and the file still loads with its weights.
        path = os.path.join(self.get_temp_dir(), "saved_by_api.keras")
        keras.saving.save_model(model, path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(loaded.predict(x, verbose=0), expected, atol=1e-6)

    def test_audio_clips_are_padded_to_the_clip_length(self):
        classifier = audio_classifier()
        model = RawInputClassifier(
            classifier, ["no", "yes"], "audio", sample_rate=16000, clip_length=400
        )
        rng = np.random.default_rng(2)
        clips = [rng.uniform(-1, 1, n).astype("float32") for n in (100, 400, 250)]
        expected = classifier.predict(pad_clips(clips, 400), verbose=0)
        self.assertAllClose(model.predict(clips, verbose=0), expected, atol=1e-6)
        # A longer clip runs at its own length, the others are unchanged.
        long_clip = rng.uniform(-1, 1, 700).astype("float32")
        out = model.predict([clips[0], long_clip], verbose=0)
        self.assertAllClose(out[0], expected[0], atol=1e-6)
        self.assertAllClose(
            out[1], classifier.predict(long_clip[None], verbose=0)[0], atol=1e-6
        )
        path = os.path.join(self.get_temp_dir(), "audio.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertEqual((loaded.sample_rate, loaded.clip_length), (16000, 400))
        self.assertAllClose(loaded.predict(clips, verbose=0), expected, atol=1e-6)

    def test_mixed_precision(self):
        keras.config.set_dtype_policy("mixed_float16")
        try:
            classifier = image_classifier()
        finally:
            keras.config.set_dtype_policy("float32")
        model = RawInputClassifier(classifier, ["a", "b", "c"], "image", image_size=(8, 8))
        out = model.predict(np.ones((2, 9, 9, 3), "float32"), verbose=0)
        self.assertEqual(out.dtype, np.float32)
        self.assertAllClose(out.sum(-1), [1.0, 1.0], atol=1e-3)

    @parameterized.named_parameters(
        ("one_class", dict(class_names=["a"]), "`class_names`"),
        ("duplicate_classes", dict(class_names=["a", "a", "b"]), "`class_names`"),
        ("modality", dict(modality="video"), "`modality`"),
        ("image_size", dict(image_size=(8,)), "`image_size`"),
        ("classes_vs_outputs", dict(class_names=["a", "b"]), "3 outputs"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        arguments = dict(class_names=["a", "b", "c"], modality="image", image_size=(8, 8))
        arguments.update(kwargs)
        with self.assertRaisesRegex(ValueError, message):
            RawInputClassifier(image_classifier(), **arguments)

    def test_wrong_kind_of_input_raises(self):
        model = RawInputClassifier(image_classifier(), ["a", "b", "c"], "image", image_size=(8, 8))
        with self.assertRaisesRegex(ValueError, "not an image file"):
            model.predict(["a gripping film"], verbose=0)
        with self.assertRaisesRegex(ValueError, r"shape \(2, 5\)"):
            model.predict(np.ones((2, 5)), verbose=0)
        audio = RawInputClassifier(audio_classifier(), ["n", "y"], "audio",
                                   sample_rate=16000, clip_length=64)
        with self.assertRaisesRegex(ValueError, "float waveforms"):
            audio.predict(np.ones((2, 3, 4), "float32"), verbose=0)
