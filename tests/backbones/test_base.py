import dataclasses
import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer.backbones import Base
from keras_transfer.backbones import load_base
from keras_transfer.backbones.minilm import minilm_path
from tests.testing import TestCase


class LoadBaseKerasFileTest(TestCase):
    def test_image_keras_file(self):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3)(inputs)
        outputs = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, outputs)
        path = os.path.join(self.get_temp_dir(), "tiny.keras")
        model.save(path)

        base = load_base(path)
        self.assertIsInstance(base, Base)
        self.assertEqual(base.modality, "image")
        self.assertEqual(base.image_size, (8, 8))
        self.assertIsNone(base.preprocessor)
        self.assertEqual(base.output_dim, 4)
        x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3))
        self.assertAllClose(
            base.model.predict(x, verbose=0), model.predict(x, verbose=0)
        )
        with self.assertRaises(dataclasses.FrozenInstanceError):
            base.modality = "text"

    def test_sequential_keras_file(self):
        # Regression: a Sequential (even one starting with keras.Input, saved
        # and loaded) raises on `.input`; load_base failed with AttributeError.
        model = keras.Sequential(
            [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
             keras.layers.GlobalAveragePooling2D()]
        )
        path = os.path.join(self.get_temp_dir(), "sequential.keras")
        model.save(path)

        base = load_base(path)
        self.assertEqual(base.modality, "image")
        self.assertEqual(base.image_size, (8, 8))
        self.assertEqual(base.output_dim, 4)
        x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3))
        self.assertAllClose(
            base.model.predict(x, verbose=0), model.predict(x, verbose=0)
        )

    def test_feature_and_text_keras_files(self):
        inputs = keras.Input((5,))
        path = os.path.join(self.get_temp_dir(), "vec.keras")
        keras.Model(inputs, keras.layers.Dense(3)(inputs)).save(path)
        self.assertEqual(load_base(path).modality, "features")

        text_inputs = {
            k: keras.Input((4,), dtype="int32", name=k)
            for k in ("token_ids", "padding_mask")
        }
        x = keras.layers.Embedding(10, 3)(text_inputs["token_ids"])
        x = keras.layers.GlobalAveragePooling1D()(
            x, mask=text_inputs["padding_mask"]
        )
        path = os.path.join(self.get_temp_dir(), "text.keras")
        keras.Model(text_inputs, x).save(path)
        base = load_base(path)
        self.assertEqual(base.modality, "text")
        self.assertIsNone(base.image_size)

    @parameterized.named_parameters(
        ("unknown_name", "resnet", "base='resnet'"),
        ("missing_file", "/nonexistent/model.keras", "no such file"),
        ("empty", "", "base=''"),
        ("not_a_string", 3, "base=3"),
    )
    def test_bad_spec_raises_listing_allowed(self, spec, message):
        with self.assertRaisesRegex(ValueError, message) as ctx:
            load_base(spec)
        self.assertIn("'minilm', 'efficientnet_lite0'", str(ctx.exception))
        self.assertNotIn("\n", str(ctx.exception))

    def test_wrong_file_type_and_folder_raise(self):
        path = os.path.join(self.get_temp_dir(), "weights.h5")
        with open(path, "w") as f:
            f.write("x")
        with self.assertRaisesRegex(ValueError, r"`\.keras` model file"):
            load_base(path)
        with self.assertRaisesRegex(ValueError, "no `config.json`"):
            load_base(self.get_temp_dir())


@pytest.mark.large
class LoadBaseMiniLMTest(TestCase):
    def test_minilm_by_name_and_as_preset_folder(self):
        sentences = np.array(["a warm, funny film", "dull and far too long"])
        base = load_base("minilm", sequence_length=16)
        self.assertEqual(base.modality, "text")
        self.assertEqual(base.output_dim, 384)
        self.assertIsNone(base.image_size)
        x = base.preprocessor(sentences)
        self.assertEqual(tuple(x["token_ids"].shape), (2, 16))
        named = base.model.predict(x, verbose=0)
        self.assertAllClose(np.linalg.norm(named, axis=1), [1.0, 1.0])

        # The same Hugging Face folder through the generic keras-hub path:
        # mean pooling without normalisation, so equal up to the norm.
        preset = load_base(minilm_path(), sequence_length=16)
        self.assertEqual(preset.modality, "text")
        y = preset.model.predict(preset.preprocessor(sentences), verbose=0)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
        self.assertAllClose(y, named, atol=1e-5)
