import numpy as np

from keras_transfer import datasets
from keras_transfer.datasets import rotten_tomatoes
from tests.testing import TestCase


class LoadRottenTomatoesTest(TestCase):
    def test_corpus_counts(self):
        texts, categories = rotten_tomatoes._read_corpus()
        # 13,905 rows, 69 repeated texts dropped.
        self.assertEqual(len(texts), 13836)
        self.assertEqual(len(set(texts)), 13836)
        names, counts = np.unique(categories, return_counts=True)
        self.assertEqual(
            dict(zip(names.tolist(), counts.tolist())),
            {"fresh": 7368, "plot": 1084, "rotten": 5384},
        )

    def test_sentiment_default_split(self):
        (x, y), (x_test, y_test) = datasets.load_rotten_tomatoes()
        self.assertEqual((len(x), len(x_test)), (10202, 2550))
        self.assertEqual((x.dtype, y.dtype), (object, np.int64))
        self.assertIsInstance(x[0], str)
        np.testing.assert_array_equal(np.unique(y), [0, 1])
        # Stratified: fresh share is the same in both sets (7,368 / 12,752).
        self.assertAllClose(y.mean(), 7368 / 12752, atol=1e-3)
        self.assertAllClose(y_test.mean(), 7368 / 12752, atol=1e-3)
        self.assertEqual(len(set(x) & set(x_test)), 0)
        self.assertEqual(
            datasets.ROTTEN_TOMATOES_CLASSES["sentiment"], ("rotten", "fresh")
        )

    def test_labels_follow_the_file(self):
        texts, categories = rotten_tomatoes._read_corpus()
        truth = dict(zip(texts, categories))
        for task in ("sentiment", "category", "review_vs_plot"):
            (x, y), _ = datasets.load_rotten_tomatoes(
                task=task, n_train=300, n_test=10
            )
            names = datasets.ROTTEN_TOMATOES_CLASSES[task]
            for text, label in zip(x, y):
                expected = truth[text]
                if task == "review_vs_plot":
                    expected = "plot" if expected == "plot" else "review"
                self.assertEqual(names[label], expected)

    def test_category_and_review_vs_plot(self):
        (x, y), (x_test, y_test) = datasets.load_rotten_tomatoes(task="category")
        self.assertEqual(len(x) + len(x_test), 13836)
        np.testing.assert_array_equal(
            np.bincount(np.concatenate([y, y_test])), [5384, 7368, 1084]
        )
        _, (_, y_plot) = datasets.load_rotten_tomatoes(task="review_vs_plot")
        self.assertEqual(int(y_plot.sum()), round(0.2 * 1084))

    def test_subsets_seeded_stratified_and_disjoint(self):
        (x, y), (x_test, y_test) = datasets.load_rotten_tomatoes(
            n_train=1000, n_test=1000, seed=0
        )
        self.assertEqual((len(x), len(x_test)), (1000, 1000))
        np.testing.assert_array_equal(np.bincount(y), [422, 578])
        np.testing.assert_array_equal(np.bincount(y_test), [422, 578])
        self.assertEqual(len(set(x) & set(x_test)), 0)
        (x2, _), (x2_test, _) = datasets.load_rotten_tomatoes(
            n_train=1000, n_test=1000, seed=0
        )
        (x3, _), _ = datasets.load_rotten_tomatoes(n_train=1000, n_test=1000, seed=1)
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(x_test, x2_test)
        self.assertFalse(np.array_equal(x, x3))
        # The test pool does not depend on n_train: a larger training set
        # never takes texts from it.
        _, (x4_test, _) = datasets.load_rotten_tomatoes(n_test=1000, seed=0)
        np.testing.assert_array_equal(x_test, x4_test)

    def test_invalid_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, "Received: task='stars'"):
            datasets.load_rotten_tomatoes(task="stars")
        with self.assertRaisesRegex(ValueError, "at most 2550.*n_test=3000"):
            datasets.load_rotten_tomatoes(n_test=3000)
