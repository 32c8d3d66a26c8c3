import csv
import os

import numpy as np

from keras_transfer import datasets
from tests.testing import TestCase


def _write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


class LoadTextCSVTest(TestCase):
    def test_texts_labels_and_split(self):
        rows = [(f"text {i}, with comma", ["10", "2"][i % 2], i) for i in range(10)]
        path = _write_csv(
            os.path.join(self.get_temp_dir(), "data.csv"), ["review", "stars", "id"], rows
        )
        (x, y), (x_test, y_test), names = datasets.load_text_csv(
            path, text_column="review", label_column="stars", test_fraction=0.2
        )
        # Integer-looking labels sort numerically.
        self.assertEqual(names, ("2", "10"))
        self.assertEqual((len(x), len(x_test)), (8, 2))
        self.assertEqual((x.dtype, y.dtype), (object, np.int64))
        np.testing.assert_array_equal(np.bincount(y_test), [1, 1])
        for text, label in zip(np.concatenate([x, x_test]), np.concatenate([y, y_test])):
            i = int(text.split()[1].rstrip(","))
            self.assertEqual(names[label], rows[i][1])
        self.assertEqual(len(set(x) & set(x_test)), 0)

    def test_tsv_and_string_labels(self):
        rows = [("a b", "pos"), ("c", "neg"), ("d", "pos"), ("e", "neg")]
        path = _write_csv(
            os.path.join(self.get_temp_dir(), "data.tsv"), ["text", "label"], rows, "\t"
        )
        (x, y), _, names = datasets.load_text_csv(path, delimiter="\t", test_fraction=0)
        self.assertEqual(names, ("neg", "pos"))
        self.assertEqual(sorted(zip(x.tolist(), y.tolist())),
                         [("a b", 1), ("c", 0), ("d", 1), ("e", 0)])

    def test_missing_file_raises(self):
        with self.assertRaisesRegex(
            FileNotFoundError, r"`load_text_csv`.*Received: path='/no/data.csv'"
        ):
            datasets.load_text_csv("/no/data.csv")

    def test_missing_column_lists_columns(self):
        path = _write_csv(os.path.join(self.get_temp_dir(), "d.csv"), ["body", "label"], [])
        with self.assertRaisesRegex(
            ValueError, r"which has \['body', 'label'\]. Received: text_column='text'"
        ):
            datasets.load_text_csv(path)

    def test_empty_data_raises(self):
        path = _write_csv(os.path.join(self.get_temp_dir(), "d.csv"), ["text", "label"], [])
        with self.assertRaisesRegex(ValueError, "has none. Received: path="):
            datasets.load_text_csv(path)

    def test_one_class_raises(self):
        path = _write_csv(
            os.path.join(self.get_temp_dir(), "d.csv"), ["text", "label"], [("a", "x"), ("b", "x")]
        )
        with self.assertRaisesRegex(ValueError, r"at least two classes.*\['x'\]"):
            datasets.load_text_csv(path)

    def test_empty_label_raises(self):
        path = _write_csv(
            os.path.join(self.get_temp_dir(), "d.csv"), ["text", "label"], [("a", "x"), ("b", "")]
        )
        with self.assertRaisesRegex(ValueError, "line 3"):
            datasets.load_text_csv(path)
