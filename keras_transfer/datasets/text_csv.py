"""Texts and labels from a CSV file."""

import csv

import numpy as np

from keras_transfer.datasets import _common


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
):
    """Loads texts and labels from a CSV file with a stratified split.

    The first row is the header. Labels are read as strings; class names
    are the distinct labels, sorted (numerically if they all look like
    integers, so `"2"` comes before `"10"`), and label `i` is
    `class_names[i]`. Rows with an empty text or label are errors, not
    skipped.

    Args:
        path: str, the CSV file.
        text_column: str, header of the text column.
        label_column: str, header of the label column.
        test_fraction: float in [0, 1), share of each class held out; 0
            gives an empty test set.
        seed: int, seeds the split.
        delimiter: str, the CSV field separator (`"\\t"` for TSV).
        encoding: str, the file's text encoding.

    Returns:
        `(x_train, y_train), (x_test, y_test), class_names`:
        - `x_*`: NumPy object arrays `(N,)` of Python `str`.
        - `y_*`: int64 `(N,)`, indices into `class_names`.
        - `class_names`: tuple of str.
        Train and test come in shuffled order.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: a named column is missing (the message lists the
            columns the file has), no data rows, an empty text or label, or
            fewer than two classes.
    """
    path = _common.check_path(
        "load_text_csv", "path", path,
        hint="Pass a CSV file with a header row and text and label columns",
    )
    test_fraction = _common.check_fraction(
        "test_fraction", test_fraction, allow_zero=True
    )
    seed = _common.check_seed(seed)
    with open(path, newline="", encoding=encoding) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        for name, column in (("text_column", text_column),
                             ("label_column", label_column)):
            if column not in columns:
                raise ValueError(
                    f"`{name}` must name a column of the CSV file, which has "
                    f"{columns}. Received: {name}={column!r}"
                )
        texts, labels = [], []
        for line, row in enumerate(reader, start=2):
            text, label = row[text_column], row[label_column]
            if text is None or label is None or not label.strip() or not text.strip():
                raise ValueError(
                    f"`load_text_csv` found an empty {text_column!r} or "
                    f"{label_column!r} on line {line} of {path!r}."
                )
            texts.append(text)
            labels.append(label.strip())
    if not texts:
        raise ValueError(
            f"`path` must be a CSV file with data rows below the header; "
            f"it has none. Received: path={path!r}"
        )
    class_names = tuple(sorted(set(labels), key=_label_key))
    if len(class_names) < 2:
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
