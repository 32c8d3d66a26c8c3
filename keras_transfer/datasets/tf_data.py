"""NumPy arrays to `tf.data.Dataset`."""

import numpy as np

from keras_transfer._validation import check_int


def to_dataset(x, y=None, batch_size=32, shuffle=False, seed=0):
    """Wraps arrays returned by the loaders in a batched `tf.data.Dataset`.

    TensorFlow is imported only when this is called.

    Args:
        x: array (any shape, first axis is examples), a list of equal-length
            arrays, or an array / list of str (texts become `tf.string`).
        y: array `(N, ...)` or None (the dataset then yields `x` only).
        batch_size: positive int; the last batch may be smaller.
        shuffle: bool, reshuffle every epoch with `seed`: a permutation drawn
            statelessly from `(seed, epoch)`, so every call gives the same
            order whatever TensorFlow's global seed and whatever ran before.
        seed: int, the shuffle seed.

    Returns:
        `tf.data.Dataset` of `(x_batch, y_batch)` (or `x_batch`), prefetched.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.datasets import to_dataset
    >>> ds = to_dataset(np.zeros((5, 2)), np.arange(5), batch_size=2)
    >>> [int(y.shape[0]) for _, y in ds]
    [2, 2, 1]
    """
    check_int(batch_size, "batch_size")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"`seed` must be an integer. Received: seed={seed!r}")
    x = _as_array(x, "x")
    if y is not None:
        y = _as_array(y, "y")
        if len(y) != len(x):
            raise ValueError(
                "`x` and `y` must have the same number of examples. "
                f"Received: len(x)={len(x)}, len(y)={len(y)}"
            )
    if len(x) == 0:
        raise ValueError("`x` must not be empty. Received: len(x)=0")
    import tensorflow as tf

    elements = x if y is None else (x, y)
    if shuffle:
        from keras_transfer.data import _seeding

        dataset = _seeding.seeded_examples(elements, int(seed), shuffle=True)
        dataset = dataset.map(lambda _, element: element)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(elements)
    return dataset.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


def from_slices(elements):
    """Unbatched `tf.data.Dataset` over the first axis of `elements`.

    `elements` is any nested structure (tuple, dict) of equal-length arrays.
    TensorFlow is imported only when this is called, so backend-agnostic
    code (e.g. `Distiller.cache_teacher_outputs`) can hand arrays back as a
    dataset without importing it at module level.
    """
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(elements)


def _as_array(value, name):
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        lengths = {v.shape for v in value}
        if len(lengths) > 1:
            raise ValueError(
                f"`{name}` is a list of arrays with different shapes "
                f"({len(lengths)} distinct); pad them first (e.g. "
                "`load_spoken_digits(..., length=8000)`). "
                f"Received: {name}[0].shape={value[0].shape}"
            )
    return np.asarray(value)
