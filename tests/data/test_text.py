import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.data import TextAugmentation
from keras_transfer.data import load_wordnet_synonyms
from tests.testing import TestCase

SENTENCE = "the film is not good but the actors are great and the music is lovely"


class WordNetTest(TestCase):
    def test_known_synonyms(self):
        synonyms = load_wordnet_synonyms()
        self.assertIn("movie", synonyms["film"])
        self.assertIn("film", synonyms["movie"])
        self.assertIn("well", synonyms["good"])
        self.assertNotIn("film", synonyms["film"])
        self.assertGreater(len(synonyms), 50000)

    def test_missing_wordnet_says_how_to_install(self):
        with self.assertRaisesRegex(FileNotFoundError, "apt-get install wordnet-base"):
            TextAugmentation(synonym_rate=0.5, wordnet_path="/nonexistent")


class TextAugmentationTest(TestCase):
    def test_zero_rates_are_identity(self):
        aug = TextAugmentation(synonym_rate=0.0, seed=0)
        self.assertEqual(aug([SENTENCE]), [SENTENCE])

    def test_synonym_rate_one_replaces_every_replaceable_word(self):
        aug = TextAugmentation(synonym_rate=1.0, seed=0)
        out = aug(["the film is not good"])[0]
        self.assertTrue(out.startswith("the "))  # stop word
        self.assertIn(" not ", out)  # protected
        film = out[len("the ") : out.index(" is not ")]
        self.assertIn(film, aug.synonyms("film"))
        self.assertIn(out.split(" not ", 1)[1], aug.synonyms("good"))

    def test_protected_tokens_survive_every_operation(self):
        aug = TextAugmentation(
            synonym_rate=1.0, insertion_rate=0.5, swap_rate=1.0,
            deletion_rate=1.0, seed=0,
        )
        for out in aug(["it is not good , never boring"] * 20):
            words = out.split()
            # Deletion 1.0 leaves only the protected words, in order.
            self.assertEqual(words, ["not", "never"])
        custom = TextAugmentation(deletion_rate=1.0, protected_tokens=["Good"], seed=0)
        self.assertEqual(custom(["not GOOD at all"]), ["GOOD"])

    def test_deletion_never_empties_a_text(self):
        aug = TextAugmentation(deletion_rate=1.0, protected_tokens=[], seed=0)
        for original, out in zip([SENTENCE, "one", "two words"], aug([SENTENCE, "one", "two words"])):
            self.assertEqual(len(out.split()), 1)
            self.assertIn(out, original.split())

    def test_deletion_rate_is_respected(self):
        words = [f"w{i}" for i in range(3000)]
        aug = TextAugmentation(deletion_rate=0.3, protected_tokens=[], seed=1)
        kept = aug([" ".join(words)])[0].split()
        self.assertAllClose(1 - len(kept) / len(words), 0.3, atol=0.03)
        # Deletion keeps the order of the words that stay.
        self.assertEqual(kept, sorted(kept, key=lambda w: int(w[1:])))

    def test_swap_permutes_unprotected_words_only(self):
        aug = TextAugmentation(swap_rate=1.0, seed=3)
        text = "a b c not d e f g h"
        out = aug([text])[0].split()
        self.assertEqual(sorted(out), sorted(text.split()))
        self.assertNotEqual(out, text.split())
        self.assertEqual(out[3], "not")

    def test_insertion_adds_synonyms_and_keeps_the_original_order(self):
        aug = TextAugmentation(insertion_rate=1.0, seed=0)
        text = "film good"
        out = aug([text])[0]
        # Both words have synonyms: two insertions; originals in order.
        inserted = out
        for word in ("film", "good"):
            self.assertIn(word, inserted.split())
        allowed = set(aug.synonyms("film")) | set(aug.synonyms("good"))
        rest = out.split()
        rest.remove("film")
        rest.remove("good")
        joined = " ".join(rest)
        for synonym in sorted(allowed, key=len, reverse=True):
            joined = joined.replace(synonym, "", 1) if synonym in joined else joined
        self.assertEqual(joined.strip(), "")
        self.assertLess(out.split().index("film"), out.split().index("good"))

    def test_same_seed_same_output_and_new_draws_each_epoch(self):
        texts = [SENTENCE, "a dull and boring movie", "not bad at all"] * 3
        labels = np.arange(9)

        def run(seed):
            aug = TextAugmentation(
                synonym_rate=0.3, insertion_rate=0.1, swap_rate=0.1,
                deletion_rate=0.1, seed=seed,
            )
            ds = aug.dataset(texts, labels, batch_size=4)
            return [[(x.numpy().tolist(), y.numpy().tolist()) for x, y in ds] for _ in range(2)]

        a, b, c = run(5), run(5), run(6)
        self.assertEqual(a, b)
        self.assertNotEqual(a[0], a[1])
        self.assertNotEqual(a[0], c[0])
        self.assertEqual(
            TextAugmentation(synonym_rate=0.5, seed=1)([SENTENCE] * 3),
            TextAugmentation(synonym_rate=0.5, seed=1)([SENTENCE] * 3),
        )

    def test_dataset_keeps_labels_and_every_example(self):
        texts = [f"movie number id{i} is good" for i in range(7)]
        labels = np.arange(7) % 2
        aug = TextAugmentation(
            synonym_rate=0.5, deletion_rate=0.2,
            protected_tokens=[f"id{i}" for i in range(7)], seed=0,
        )
        ds = aug.dataset(texts, labels, batch_size=3, shuffle=False)
        outputs = [(x.numpy(), y.numpy()) for x, y in ds]
        self.assertEqual([len(x) for x, _ in outputs], [3, 3, 1])
        self.assertAllEqual(np.concatenate([y for _, y in outputs]), labels)
        for i, text in enumerate(t.decode() for x, _ in outputs for t in x):
            self.assertIn(f"id{i}", text.split())

    @parameterized.named_parameters(
        ("synonym", {"synonym_rate": 1.5}, "synonym_rate=1.5"),
        ("deletion", {"deletion_rate": -0.1}, "deletion_rate=-0.1"),
        ("swap_nan", {"swap_rate": float("nan")}, "swap_rate=nan"),
        ("protected", {"protected_tokens": "not"}, "protected_tokens='not'"),
        ("senses", {"max_senses": 0}, "max_senses=0"),
    )
    def test_invalid_argument_raises(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            TextAugmentation(**kwargs)

    @parameterized.named_parameters(
        ("empty", ["good", ""], r"texts\[1\]=''"),
        ("blank", ["  "], r"texts\[0\]='  '"),
        ("not_a_list", "a text", "list of strings"),
        ("not_str", ["ok", 3], r"texts\[1\]=3"),
    )
    def test_invalid_texts_raise(self, texts, message):
        aug = TextAugmentation(synonym_rate=0.1)
        with self.assertRaisesRegex(ValueError, message):
            aug(texts)
        with self.assertRaisesRegex(ValueError, message):
            aug.dataset(texts, np.zeros(len(texts)))

    def test_config_round_trip(self):
        aug = TextAugmentation(synonym_rate=0.2, swap_rate=0.1, protected_tokens=["no"], seed=3)
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(aug)
        )
        self.assertEqual(restored.get_config(), aug.get_config())
        self.assertEqual(restored([SENTENCE]), aug([SENTENCE]))
