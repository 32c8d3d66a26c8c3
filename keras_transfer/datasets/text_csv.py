"""Texts and labels from a CSV file."""

import codecs
import csv
import io
import warnings

import numpy as np

from keras_transfer.datasets import _common

_ON_BAD_LINES = ("error", "warn")
_SHOWN_LINES = 10


def _label_key(label):
    # Integer-looking labels sort numerically ("2" before "10").
    try:
        return (0, int(label), label)
    except ValueError:
        return (1, 0, label)


def load_text_csv(
    path,
    text_column="text",
    label_column="label",
    test_fraction=0.2,
    seed=0,
    delimiter=",",
    encoding="utf-8",
    on_bad_lines="error",
    min_classes=2,
):
    """Loads texts and labels from a CSV file with a stratified split.

    The first row is the header. Fields may be quoted (`"..."`, with `""`
    for a quote) and a quoted field may span lines. A UTF-8 byte-order mark
    (as Excel writes) is removed, so it never hides the first column's
    name. Blank lines are ignored. Labels are read as strings (surrounding
    spaces removed); class names are the distinct labels, sorted
    (numerically if they all look like integers, so `"2"` comes before
    `"10"`), and label `i` is `class_names[i]`.

    A bad row is one whose text or label is empty (or only spaces), or
    whose number of fields differs from the header's. With
    `on_bad_lines="error"` the first bad row raises, naming the line of
    the file it starts on (counting every physical line, so a quoted field
    spanning lines is counted right); with `"warn"` bad rows are skipped
    and a `UserWarning` gives their count and lines. Rows are never dropped
    silently.

    Args:
        path: str, the CSV file.
        text_column: str, header of the text column.
        label_column: str, header of the label column.
        test_fraction: float in [0, 1), share of each class held out; 0
            gives an empty test set.
        seed: int, seeds the split.
        delimiter: str of length 1, the field separator (`"\\t"` for TSV).
        encoding: str, the file's text encoding, any Python codec name
            (`"utf-8"`, `"cp1252"`, `"latin-1"`, `"utf-16"`, ...).
        on_bad_lines: `"error"` (default) or `"warn"` (skip, with a count),
            as in `pandas.read_csv`.
        min_classes: 2 (default: data to train a classifier on) or 1
            (data of a single class is accepted, e.g. to evaluate a trained
            classifier on it).

    Returns:
        `(x_train, y_train), (x_test, y_test), class_names`:
        - `x_*`: NumPy object arrays `(N,)` of Python `str`.
        - `y_*`: int64 `(N,)`, indices into `class_names`.
        - `class_names`: tuple of str.
        Train and test come in shuffled order.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: a byte that is not valid in `encoding` (the message
            names its line, its byte position in the line and in the file,
            and suggests encodings), an unknown `encoding`, a named column
            missing or duplicated (the message lists the columns the file
            has), a bad row with `on_bad_lines="error"` (with its line), no
            data rows, or fewer than `min_classes` classes.
    """
    path = _common.check_path(
        "load_text_csv", "path", path,
        hint="Pass a CSV file with a header row and text and label columns",
    )
    test_fraction = _common.check_fraction(
        "test_fraction", test_fraction, allow_zero=True
    )
    seed = _common.check_seed(seed)
    min_classes = _common.check_min_classes(min_classes)
    if on_bad_lines not in _ON_BAD_LINES:
        raise ValueError(
            f"`on_bad_lines` must be one of {_ON_BAD_LINES}. "
            f"Received: on_bad_lines={on_bad_lines!r}"
        )
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(
            "`delimiter` must be a single character (e.g. ',' or '\\t'). "
            f"Received: delimiter={delimiter!r}"
        )
    text = read_text(path, encoding, "load_text_csv")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        columns = next(reader)
    except StopIteration:
        columns = []
    for name, column in (("text_column", text_column),
                         ("label_column", label_column)):
        if column not in columns:
            raise ValueError(
                f"`{name}` must name a column of the CSV file, which has "
                f"{columns}. Received: {name}={column!r}"
            )
        if columns.count(column) > 1:
            raise ValueError(
                f"`{name}` names a column that appears {columns.count(column)} "
                f"times in the header of {path!r} ({columns}); rename one. "
                f"Received: {name}={column!r}"
            )
    text_index, label_index = columns.index(text_column), columns.index(label_column)
    texts, labels, bad = [], [], []
    last_line = reader.line_num
    for row in _rows_or_error(reader, path):
        first_line, last_line = last_line + 1, reader.line_num
        if not row:  # a blank line
            continue
        problem = None
        if len(row) != len(columns):
            problem = (
                f"{len(row)} fields where the header has {len(columns)}"
            )
        elif not row[text_index].strip():
            problem = f"an empty {text_column!r}"
        elif not row[label_index].strip():
            problem = f"an empty {label_column!r}"
        if problem is None:
            texts.append(row[text_index])
            labels.append(row[label_index].strip())
            continue
        where = (
            f"line {first_line}" if first_line == last_line
            else f"line {first_line} (a row spanning lines {first_line}-{last_line})"
        )
        if on_bad_lines == "error":
            raise ValueError(
                f"`load_text_csv` found a row with {problem} on {where} of "
                f"{path!r}. Fix the row, or pass `on_bad_lines='warn'` to "
                "skip such rows with a count."
            )
        bad.append((first_line, problem))
    if bad:
        shown = ", ".join(f"{line} ({problem})" for line, problem in bad[:_SHOWN_LINES])
        more = f" and {len(bad) - _SHOWN_LINES} more" if len(bad) > _SHOWN_LINES else ""
        message = (
            f"`load_text_csv` skipped {len(bad)} bad row(s) of {path!r} "
            f"(kept {len(texts)}): lines {shown}{more}."
        )
        # One `UserWarning` (as pandas' `on_bad_lines="warn"`); logging it
        # as well printed it twice on stderr.
        warnings.warn(message, UserWarning, stacklevel=2)
    if not texts:
        raise ValueError(
            f"`path` must be a CSV file with data rows below the header; "
            f"it has none{' that are not bad' if bad else ''}. Received: path={path!r}"
        )
    class_names = tuple(sorted(set(labels), key=_label_key))
    if len(class_names) < min_classes:
        raise ValueError(
            f"`label_column` must hold at least two classes; column "
            f"{label_column!r} of {path!r} has {list(class_names)}. "
            f"Received: label_column={label_column!r}"
        )
    index = {name: i for i, name in enumerate(class_names)}
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    y = np.array([index[label] for label in labels], dtype=np.int64)
    rng = np.random.default_rng(seed)
    train, test = _common.stratified_split(y, round(test_fraction * len(y)), rng)
    return (x[train], y[train]), (x[test], y[test]), class_names


def _rows_or_error(reader, path):
    try:
        yield from reader
    except csv.Error as error:
        raise ValueError(
            f"`load_text_csv` cannot parse line {reader.line_num} of {path!r} "
            f"as CSV ({error})."
        ) from None


def read_text(path, encoding, function):
    """The whole file decoded with `encoding`; a UTF-8 byte-order mark removed.

    A byte that is not valid in `encoding` raises a `ValueError` naming its
    line (1-based), its byte position in that line and in the file.
    """
    if not isinstance(encoding, str):
        raise ValueError(
            f"`encoding` must be a codec name (str). Received: encoding={encoding!r}"
        )
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(
            f"`encoding` must be a text encoding Python knows (e.g. 'utf-8', "
            f"'cp1252', 'latin-1'). Received: encoding={encoding!r}"
        ) from None
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(codecs.BOM_UTF8) and codec not in ("utf-8", "utf-8-sig"):
        # Decoded as cp1252 / latin-1 the mark becomes 'ï»¿' in the first
        # column's name, and every non-ASCII text is garbled without error.
        raise ValueError(
            f"`{function}`: {path!r} starts with a UTF-8 byte-order mark, so it "
            f"is UTF-8, but encoding={encoding!r} was given. Pass "
            "encoding='utf-8' (the default)."
        )
    if codec in ("utf-8", "utf-8-sig") and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
        offset = len(codecs.BOM_UTF8)
        encoding = "utf-8"
    else:
        offset = 0
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        before = data[: error.start].decode(encoding, errors="replace")
        line = before.count("\n") + 1
        # 1-based byte position in the line (after the last newline byte).
        newline = data.rfind(b"\n", 0, error.start)
        column = error.start - (newline + 1) + 1
        bad = data[error.start : error.end].hex(" ")
        hint = (
            "e.g. encoding='cp1252' (Windows, Excel) or 'latin-1'"
            if codec == "utf-8" else "e.g. encoding='utf-8'"
        )
        raise ValueError(
            f"`{function}` cannot decode line {line} of {path!r} as {encoding!r}: "
            f"byte(s) 0x{bad} at byte {column} of the line (byte "
            f"{error.start + offset} of the file, counting from 0) are not "
            f"valid {encoding} ({error.reason}). Pass the file's encoding, "
            f"{hint}. Received: encoding={encoding!r}"
        ) from None
