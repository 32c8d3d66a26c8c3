import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.data import BackTranslation
from keras_transfer.data import TextAugmentation
from tests.testing import TestCase


@keras.saving.register_keras_serializable(package="keras_transfer_tests")
def _bracket(texts):
    return [f"[{t}]" for t in texts]


class CountingTranslator:
    def __init__(self):
        self.seen = []

    def __call__(self, texts):
        self.seen.extend(texts)
        return [f"<{t}>" for t in texts]


class BackTranslationTest(TestCase):
    def test_each_text_is_translated_once(self):
        translator = CountingTranslator()
        bt = BackTranslation(translator, batch_size=2)
        self.assertEqual(bt(["a", "b", "a", "c"]), ["<a>", "<b>", "<a>", "<c>"])
        self.assertEqual(bt(["c", "d", "a"]), ["<c>", "<d>", "<a>"])
        self.assertEqual(translator.seen, ["a", "b", "c", "d"])

    @parameterized.named_parameters(
        ("too_few", lambda texts: texts[:-1], "given 2 texts. Received: 1 strings"),
        ("too_many", lambda texts: texts + ["x"], "given 2 texts. Received: 3 strings"),
        ("one_string", lambda texts: "x", "must return a list of strings"),
        ("empty_output", lambda texts: ["x", ""], "non-empty strings"),
        ("not_str", lambda texts: ["x", None], "non-empty strings"),
    )
    def test_bad_translator_output_raises(self, translator, message):
        with self.assertRaisesRegex(ValueError, message):
            BackTranslation(translator)(["first text", "second text"])

    def test_bad_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, "translator=3"):
            BackTranslation(3)
        with self.assertRaisesRegex(ValueError, "batch_size=0"):
            BackTranslation(str.upper, batch_size=0)
        with self.assertRaisesRegex(ValueError, r"texts\[0\]=''"):
            BackTranslation(CountingTranslator())([""])

    def test_dataset_mixes_translations_at_the_rate(self):
        translator = CountingTranslator()
        texts = [f"text {i}" for i in range(200)]
        aug = TextAugmentation(synonym_rate=0.0, seed=0)
        ds = aug.dataset(
            texts, np.arange(200), batch_size=50, shuffle=False,
            back_translation=translator, back_translation_rate=0.25,
        )
        out = [t.decode() for x, _ in ds for t in x.numpy()]
        translated = [o.startswith("<") for o in out]
        self.assertAllClose(np.mean(translated), 0.25, atol=0.08)
        for i, o in enumerate(out):
            self.assertIn(o, (texts[i], f"<{texts[i]}>"))
        # Cached: a second epoch and a second dataset call translate nothing.
        list(ds)
        aug.dataset(texts, np.arange(200), back_translation=BackTranslation(translator))
        self.assertEqual(len(translator.seen), 400)

    def test_config_round_trip(self):
        bt = BackTranslation(_bracket, batch_size=8)
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(bt)
        )
        self.assertEqual(restored.batch_size, 8)
        self.assertEqual(restored(["ab"]), ["[ab]"])
        with self.assertRaisesRegex(ValueError, "register_keras_serializable"):
            BackTranslation(CountingTranslator()).get_config()
