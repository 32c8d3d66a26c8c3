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
        # ... unless asked for data to evaluate on (one class is enough).
        (x, y), (x_test, y_test), names = datasets.load_text_csv(
            path, min_classes=1, test_fraction=0.5
        )
        self.assertEqual(names, ("x",))
        self.assertEqual(sorted(list(x) + list(x_test)), ["a", "b"])
        self.assertEqual(list(y) + list(y_test), [0, 0])
        with self.assertRaisesRegex(ValueError, "Received: min_classes=3"):
            datasets.load_text_csv(path, min_classes=3)

    def test_empty_label_raises(self):
        path = _write_csv(
            os.path.join(self.get_temp_dir(), "d.csv"), ["text", "label"], [("a", "x"), ("b", "")]
        )
        with self.assertRaisesRegex(ValueError, "line 3"):
            datasets.load_text_csv(path)


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


class FilesAsUsersHaveThemTest(TestCase):
    """Encodings, byte-order marks, quoted newlines, empty and ragged rows."""

    def test_cp1252_file_needs_its_encoding_and_the_error_names_line_and_byte(self):
        data = "text,label\nfine,pos\n\"caf\u00e9 au lait\",neg\nok,pos\nno,neg\n".encode("cp1252")
        path = _write_bytes(os.path.join(self.get_temp_dir(), "w.csv"), data)
        offset = data.index(b"\xe9")
        in_line = offset - data.rindex(b"\n", 0, offset)  # 1-based
        self.assertEqual((offset, in_line), (24, 5))  # counted by hand
        with self.assertRaisesRegex(
            ValueError,
            r"cannot decode line 3 of .* as 'utf-8': byte\(s\) 0xe9 at byte 5 of the line "
            r"\(byte 24 of the file.*encoding='cp1252'.*Received: encoding='utf-8'",
        ):
            datasets.load_text_csv(path)
        (x, y), _, names = datasets.load_text_csv(path, encoding="cp1252", test_fraction=0)
        self.assertIn("caf\u00e9 au lait", set(x))
        self.assertEqual(names, ("neg", "pos"))

    def test_utf8_byte_order_mark_does_not_hide_the_first_column(self):
        data = "text,label\na,x\nb,y\n".encode("utf-8-sig")
        path = _write_bytes(os.path.join(self.get_temp_dir(), "bom.csv"), data)
        (x, y), _, names = datasets.load_text_csv(path, test_fraction=0)  # encoding="utf-8"
        self.assertEqual(sorted(zip(x.tolist(), y.tolist())), [("a", 0), ("b", 1)])
        # And in UTF-16 (its BOM is the codec's).
        path = _write_bytes(
            os.path.join(self.get_temp_dir(), "u16.csv"), "text,label\na,x\nb,y\n".encode("utf-16")
        )
        (x, _), _, _ = datasets.load_text_csv(path, encoding="utf-16", test_fraction=0)
        self.assertEqual(sorted(x.tolist()), ["a", "b"])

    def test_utf8_byte_order_mark_with_another_encoding_is_refused(self):
        # Read as cp1252 the mark became 'ï»¿' in the first column's name and
        # the texts were garbled silently (regression).
        data = "id,text,label\n1,caf\u00e9 good,x\n2,bad,y\n".encode("utf-8-sig")
        path = _write_bytes(os.path.join(self.get_temp_dir(), "bom_id.csv"), data)
        for encoding in ("cp1252", "latin-1"):
            with self.assertRaisesRegex(ValueError, "byte-order mark.*encoding='utf-8'"):
                datasets.load_text_csv(path, encoding=encoding, test_fraction=0)
        (x, _), _, _ = datasets.load_text_csv(path, encoding="utf-8-sig", test_fraction=0)
        self.assertIn("caf\u00e9 good", set(x))

    def test_bad_row_is_named_by_its_physical_line_across_quoted_newlines(self):
        content = (
            "text,label\n"                    # line 1
            '"first review\nsecond line\n\nfourth line",pos\n'  # lines 2-5
            "plain,neg\n"                     # line 6
            '"  ",pos\n'                      # line 7: empty text
            "last,neg\n"
        )
        path = _write_bytes(os.path.join(self.get_temp_dir(), "q.csv"), content.encode())
        with self.assertRaisesRegex(ValueError, r"an empty 'text' on line 7 of .*on_bad_lines='warn'"):
            datasets.load_text_csv(path)
        # A bad row that itself spans lines is named by its first line and its span.
        content = 'text,label\nok,pos\n"multi\nline"\nok2,neg\n'
        path = _write_bytes(os.path.join(self.get_temp_dir(), "q2.csv"), content.encode())
        with self.assertRaisesRegex(
            ValueError, r"1 fields where the header has 2 on line 3 \(a row spanning lines 3-4\)"
        ):
            datasets.load_text_csv(path)

    def test_rows_with_extra_fields_are_rejected(self):
        path = _write_bytes(
            os.path.join(self.get_temp_dir(), "extra.csv"),
            b"text,label\na,pos\nb, with a comma not quoted,neg\nc,neg\n",
        )
        with self.assertRaisesRegex(ValueError, r"3 fields where the header has 2 on line 3 "):
            datasets.load_text_csv(path)

    def test_warn_skips_bad_rows_with_a_count(self):
        content = (
            "id,text,label\n"
            "1,good one,pos\n"
            "2,,neg\n"                # 3: empty text
            "\n"                      # 4: blank line, ignored (not a row)
            '3,"two\nlines",neg\n'    # 5-6: fine
            "4,extra,pos,!\n"         # 7: extra field
            "5,no label,\n"           # 8: empty label
            "6,fine,neg\n"
        )
        path = _write_bytes(os.path.join(self.get_temp_dir(), "w.csv"), content.encode())
        # One warning, not logged as well (it was printed twice).
        with self.assertNoLogs("keras_transfer"), self.assertWarnsRegex(
            UserWarning,
            r"skipped 3 bad row\(s\) .*\(kept 3\): lines 3 \(an empty 'text'\), "
            r"7 \(4 fields where the header has 3\), 8 \(an empty 'label'\)\.",
        ):
            (x, y), _, names = datasets.load_text_csv(path, on_bad_lines="warn", test_fraction=0)
        self.assertEqual(
            sorted(zip(x.tolist(), (names[i] for i in y))),
            [("fine", "neg"), ("good one", "pos"), ("two\nlines", "neg")],
        )

    def test_invalid_options_raise(self):
        path = _write_csv(
            os.path.join(self.get_temp_dir(), "d.csv"), ["text", "label"], [("a", "x"), ("b", "y")]
        )
        for kwargs, received in (
            ({"encoding": "utf-9"}, "encoding='utf-9'"),
            ({"on_bad_lines": "skip"}, "on_bad_lines='skip'"),
            ({"delimiter": ";;"}, "delimiter=';;'"),
        ):
            with self.assertRaisesRegex(ValueError, "Received: " + received):
                datasets.load_text_csv(path, **kwargs)
        path = _write_csv(
            os.path.join(self.get_temp_dir(), "dup.csv"), ["text", "text", "label"], [("a", "b", "x")]
        )
        with self.assertRaisesRegex(ValueError, r"appears 2 times .*Received: text_column='text'"):
            datasets.load_text_csv(path)
