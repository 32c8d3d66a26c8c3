"""Text augmentation in `tf.data`: WordNet synonyms, insertion, swap, deletion.

WordNet comes from the Debian package `wordnet-base`
(`sudo apt-get install wordnet-base`, files under `/usr/share/wordnet`), or from
any WordNet 3.0 `dict/` folder (e.g. the one in NLTK's `wordnet` corpus zip),
passed as `wordnet_path`. The dictionary is parsed here; NLTK is not needed.
"""

import functools
import os

import keras
import numpy as np

from keras_transfer.data import _seeding

WORDNET_PATH = "/usr/share/wordnet"

NEGATIONS = (
    "not", "no", "never", "nor", "neither", "none", "nobody", "nothing",
    "nowhere", "without", "n't", "cannot", "hardly", "barely",
)

# EDA's stop words: never replaced by a synonym nor used for insertion
# (WordNet would turn "a" into "angstrom" and "at" into "astatine").
STOPWORDS = (
    "i", "me", "my", "myself", "we", "our", "ours", "ourselves", "you", "your",
    "yours", "yourself", "yourselves", "he", "him", "his", "himself", "she",
    "her", "hers", "herself", "it", "its", "itself", "they", "them", "their",
    "theirs", "themselves", "what", "which", "who", "whom", "this", "that",
    "these", "those", "am", "is", "are", "was", "were", "be", "been", "being",
    "have", "has", "had", "having", "do", "does", "did", "doing", "a", "an",
    "the", "and", "but", "if", "or", "because", "as", "until", "while", "of",
    "at", "by", "for", "with", "about", "against", "between", "into",
    "through", "during", "before", "after", "above", "below", "to", "from",
    "up", "down", "in", "out", "on", "off", "over", "under", "again",
    "further", "then", "once", "here", "there", "when", "where", "why", "how",
    "all", "any", "both", "each", "few", "more", "most", "other", "some",
    "such", "only", "own", "same", "so", "than", "too", "very", "s", "t",
    "can", "will", "just", "don", "should", "now", "ar", "re",
)

_POS = ("noun", "verb", "adj", "adv")


@functools.lru_cache(maxsize=4)
def load_wordnet_synonyms(path=WORDNET_PATH, max_senses=3):
    """Reads WordNet 3.0 and maps each single-word lemma to its synonyms.

    Synonyms are the other lemmas of the word's first `max_senses` synsets
    (WordNet lists senses most frequent first) in every part of speech,
    lower-cased, multi-word lemmas written with spaces.

    Args:
        path: a folder with WordNet's `index.*` and `data.*` files.
        max_senses: senses used per part of speech (None for all).

    Returns:
        A dict `{word: tuple of synonyms}`; words without synonyms are left out.
    """
    missing = [
        f for pos in _POS for f in (f"index.{pos}", f"data.{pos}")
        if not os.path.exists(os.path.join(path, f))
    ]
    if missing:
        raise FileNotFoundError(
            f"WordNet files {missing} not found in `wordnet_path={path!r}`. "
            "Install them with `sudo apt-get install wordnet-base` (Debian/"
            "Ubuntu; files go to /usr/share/wordnet) or pass the `dict/` folder "
            "of any WordNet 3.0 copy."
        )
    synonyms = {}
    for pos in _POS:
        words_of = {}
        with open(os.path.join(path, f"data.{pos}"), encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                fields = line.split(" ")
                count = int(fields[3], 16)
                words = []
                for i in range(count):
                    word = fields[4 + 2 * i].lower().split("(")[0]
                    words.append(word.replace("_", " "))
                words_of[fields[0]] = words
        with open(os.path.join(path, f"index.{pos}"), encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                fields = line.split()
                lemma = fields[0]
                if "_" in lemma:
                    continue
                synset_count = int(fields[2])
                offsets = fields[-synset_count:]
                if max_senses is not None:
                    offsets = offsets[:max_senses]
                found = synonyms.setdefault(lemma, [])
                for offset in offsets:
                    for word in words_of.get(offset, ()):
                        if word != lemma and word not in found:
                            found.append(word)
    return {k: tuple(v) for k, v in synonyms.items() if v}


def _check_rate(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(
            f"`{name}` must be a probability in [0, 1]. Received: {name}={value!r}"
        )
    return float(value)


def _check_texts(texts, name="texts"):
    if isinstance(texts, str):
        raise ValueError(
            f"`{name}` must be a list of strings, not one string. "
            f"Received: {name}={texts!r}"
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"`{name}` must contain strings. Received: {name}[{i}]={text!r}"
            )
        if not text.strip():
            raise ValueError(
                f"`{name}` must not contain empty texts. Received: {name}[{i}]={text!r}"
            )
    return texts


@keras.saving.register_keras_serializable(package="keras_transfer")
class TextAugmentation:
    """EDA-style word-level augmentation as TensorFlow graph ops.

    Four operations, each with its own rate (the probability for each word):

    - synonym replacement: a word with WordNet synonyms is replaced by one;
    - random insertion: a synonym of the word is inserted at a random place;
    - random swap: the chosen words are shuffled among their positions;
    - random deletion: the word is dropped (at least one word always stays).

    Protected tokens (negations by default) are never replaced, moved or
    deleted, so "not good" cannot become "good". Matching ignores case and
    punctuation around the word. Labels are never touched. All randomness
    comes from a per-example stateless seed, so `dataset()` is reproducible
    for a fixed `seed` with a parallel map, with new draws each epoch; the
    shuffle and the seeds are stateless draws from `seed` alone, whatever
    TensorFlow's global seed and whatever ran before.
    Back-translation (`keras_transfer.data.BackTranslation`) can be mixed in
    through `dataset(back_translation=...)`.

    Args:
        synonym_rate, insertion_rate, swap_rate, deletion_rate: probabilities
            in [0, 1].
        protected_tokens: words never changed (compared lower-case).
        stopwords: words never replaced by synonyms nor used for insertion
            (they can still be swapped or deleted).
        wordnet_path: folder with WordNet 3.0 `index.*` / `data.*` files.
        max_senses: WordNet senses per part of speech used for synonyms.
        seed: int or None.

    Example:

    >>> import keras_transfer
    >>> aug = keras_transfer.data.TextAugmentation(synonym_rate=1.0, seed=0)
    >>> out = aug(["the film is not good"])
    >>> out[0].startswith("the "), " not " in out[0]
    (True, True)

    Reference:
        Wei & Zou, "EDA: Easy Data Augmentation Techniques for Boosting
        Performance on Text Classification Tasks", EMNLP 2019.
        https://arxiv.org/abs/1901.11196
    """

    def __init__(
        self,
        synonym_rate=0.1,
        insertion_rate=0.0,
        swap_rate=0.0,
        deletion_rate=0.0,
        protected_tokens=NEGATIONS,
        stopwords=STOPWORDS,
        wordnet_path=WORDNET_PATH,
        max_senses=3,
        seed=None,
    ):
        self.synonym_rate = _check_rate("synonym_rate", synonym_rate)
        self.insertion_rate = _check_rate("insertion_rate", insertion_rate)
        self.swap_rate = _check_rate("swap_rate", swap_rate)
        self.deletion_rate = _check_rate("deletion_rate", deletion_rate)
        if isinstance(protected_tokens, str) or not all(
            isinstance(t, str) for t in protected_tokens
        ):
            raise ValueError(
                "`protected_tokens` must be a list of strings. "
                f"Received: protected_tokens={protected_tokens!r}"
            )
        self.protected_tokens = tuple(t.lower() for t in protected_tokens)
        if isinstance(stopwords, str) or not all(isinstance(t, str) for t in stopwords):
            raise ValueError(
                "`stopwords` must be a list of strings. "
                f"Received: stopwords={stopwords!r}"
            )
        self.stopwords = tuple(t.lower() for t in stopwords)
        self.wordnet_path = wordnet_path
        if max_senses is not None and (
            not isinstance(max_senses, int) or max_senses <= 0
        ):
            raise ValueError(
                "`max_senses` must be a positive int or None. "
                f"Received: max_senses={max_senses!r}"
            )
        self.max_senses = max_senses
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self._tables = None
        if self.synonym_rate or self.insertion_rate:
            # Fail early, with install instructions, if WordNet is missing.
            load_wordnet_synonyms(self.wordnet_path, self.max_senses)

    def synonyms(self, word):
        """The WordNet synonyms used for `word` (a tuple, maybe empty)."""
        if word.lower() in self.stopwords:
            return ()
        table = load_wordnet_synonyms(self.wordnet_path, self.max_senses)
        return table.get(word.lower(), ())

    def _build_tables(self):
        import tensorflow as tf

        if self._tables is not None:
            return self._tables
        if self.synonym_rate or self.insertion_rate:
            table = load_wordnet_synonyms(self.wordnet_path, self.max_senses)
        else:
            table = {}
        stop = set(self.stopwords)
        keys = sorted(k for k in table if k not in stop)
        lengths = [len(table[k]) for k in keys]
        values = [s for k in keys for s in table[k]]
        splits = np.concatenate([[0], np.cumsum(lengths)]).astype("int64")
        lookup = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys or [""], tf.string),
                tf.range(max(len(keys), 1), dtype=tf.int64),
            ),
            default_value=-1,
        )
        protected = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(self.protected_tokens) or [""], tf.string),
                tf.zeros([max(len(self.protected_tokens), 1)], tf.int64),
            ),
            default_value=-1,
        )
        self._tables = (
            lookup,
            tf.constant(values or [""], tf.string),
            tf.constant(splits if keys else [0, 0], tf.int64),
            protected,
        )
        return self._tables

    def _augment_one(self, text, seed):
        import tensorflow as tf

        lookup, values, splits, protected_table = self._build_tables()

        def uniform(index, shape):
            sub = tf.cast(tf.random.experimental.stateless_fold_in(seed, index), "int32")
            return tf.random.stateless_uniform(shape, sub)

        def pick(rows, u):
            rows = tf.maximum(rows, 0)
            start = tf.gather(splits, rows)
            count = tf.gather(splits, rows + 1) - start
            offset = tf.cast(tf.floor(u * tf.cast(count, "float32")), "int64")
            return tf.gather(values, start + tf.minimum(offset, tf.maximum(count - 1, 0)))

        with tf.control_dependencies(
            [
                tf.debugging.assert_greater(
                    tf.strings.length(tf.strings.strip(text)),
                    0,
                    message="`TextAugmentation` received an empty text",
                )
            ]
        ):
            tokens = tf.strings.split(tf.identity(text))
        key = tf.strings.regex_replace(
            tf.strings.lower(tokens), r"^[^\w']+|[^\w']+$", ""
        )
        protected = protected_table.lookup(key) >= 0
        rows = lookup.lookup(key)
        has_synonyms = rows >= 0
        n = tf.size(tokens)

        if self.synonym_rate:
            replace = (uniform(1, [n]) < self.synonym_rate) & has_synonyms & ~protected
            tokens = tf.where(replace, pick(rows, uniform(2, [n])), tokens)
        if self.insertion_rate:
            chosen = (uniform(3, [n]) < self.insertion_rate) & has_synonyms & ~protected
            new = pick(tf.boolean_mask(rows, chosen), tf.boolean_mask(uniform(4, [n]), chosen))
            m = tf.size(new)
            # Inserted words sort between the originals at a random gap.
            gaps = tf.floor(uniform(5, [m]) * tf.cast(n + 1, "float32")) - 0.5
            order = tf.argsort(
                tf.concat([tf.cast(tf.range(n), "float32"), gaps], 0), stable=True
            )
            tokens = tf.gather(tf.concat([tokens, new], 0), order)
            protected = tf.gather(
                tf.concat([protected, tf.zeros([m], "bool")], 0), order
            )
            n = tf.size(tokens)
        if self.swap_rate:
            chosen = (uniform(6, [n]) < self.swap_rate) & ~protected
            index = tf.where(chosen)
            shuffled = tf.gather(index, tf.argsort(uniform(7, [tf.shape(index)[0]])))
            tokens = tf.tensor_scatter_nd_update(
                tokens, index, tf.gather_nd(tokens, shuffled)
            )
        if self.deletion_rate:
            keep = ~(uniform(8, [n]) < self.deletion_rate) | protected
            fallback = tf.one_hot(
                tf.cast(uniform(9, []) * tf.cast(n, "float32"), "int32"),
                n,
                on_value=True,
                off_value=False,
            )
            keep = tf.cond(tf.reduce_any(keep), lambda: keep, lambda: fallback)
            tokens = tf.boolean_mask(tokens, keep)
        return tf.strings.reduce_join(tokens, separator=" ")

    def __call__(self, texts, seed=None):
        """Augments a list of strings eagerly; returns a list of strings.

        Inside `tf.data`, use `dataset()` (or `augment_tensor`) instead.
        """
        import tensorflow as tf

        texts = _check_texts(texts)
        seed = self.seed if seed is None else seed
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        base = tf.constant([seed, 0], "int64")
        out = []
        for i, text in enumerate(texts):
            s = tf.random.experimental.stateless_fold_in(base, i)
            out.append(self._augment_one(tf.constant(text), s).numpy().decode("utf-8"))
        return out

    def augment_tensor(self, text, seed):
        """Graph op: one scalar string and a `(2,)` int seed -> a scalar string."""
        import tensorflow as tf

        return self._augment_one(text, tf.cast(seed, "int64"))

    def dataset(
        self,
        texts,
        labels,
        batch_size=32,
        shuffle=True,
        back_translation=None,
        back_translation_rate=0.5,
        num_parallel_calls=None,
    ):
        """A batched, augmented, prefetched `tf.data.Dataset` of texts.

        Args:
            texts: list of non-empty strings.
            labels: array `(N,)` or `(N, ...)`; passed through unchanged.
            batch_size: positive int.
            shuffle: reshuffle each epoch (seeded by `seed`).
            back_translation: None, a `BackTranslation`, or any callable from
                a list of strings to a list of strings (wrapped in a cached
                `BackTranslation`). Every text is translated once, up front.
            back_translation_rate: probability in [0, 1] that an example uses
                its back-translation (before the word-level ops).
            num_parallel_calls: for `Dataset.map`; `tf.data.AUTOTUNE` if None.

        Returns:
            A `tf.data.Dataset` of `(texts tf.string (batch,), labels)`.
        """
        import tensorflow as tf

        from keras_transfer.data.back_translation import BackTranslation

        texts = _check_texts(texts)
        labels = np.asarray(labels)
        if len(texts) != len(labels):
            raise ValueError(
                "`texts` and `labels` must have the same length. "
                f"Received: len(texts)={len(texts)}, len(labels)={len(labels)}"
            )
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(
                f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
            )
        rate = _check_rate("back_translation_rate", back_translation_rate)
        if back_translation is not None:
            if not isinstance(back_translation, BackTranslation):
                back_translation = BackTranslation(back_translation)
            translated = back_translation(texts)
        else:
            translated, rate = texts, 0.0
        self._build_tables()

        def augment(seed, text, alternative, label):
            if rate:
                u = tf.random.stateless_uniform(
                    (), tf.cast(tf.random.experimental.stateless_fold_in(seed, 10), "int32")
                )
                text = tf.where(u < rate, alternative, text)
            return self._augment_one(text, seed), label

        calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
        ds = _seeding.seeded_examples(
            (np.asarray(texts), np.asarray(translated), labels),
            _seeding.resolve_seed(self.seed), shuffle,
        ).map(lambda s, x: augment(s, *x), num_parallel_calls=calls, deterministic=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def get_config(self):
        return {
            "synonym_rate": self.synonym_rate,
            "insertion_rate": self.insertion_rate,
            "swap_rate": self.swap_rate,
            "deletion_rate": self.deletion_rate,
            "protected_tokens": list(self.protected_tokens),
            "stopwords": list(self.stopwords),
            "wordnet_path": self.wordnet_path,
            "max_senses": self.max_senses,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
