"""scikit-learn's 8x8 handwritten digits."""

import numpy as np

from keras_transfer.datasets import _common


def load_digits(test_fraction=0.2, seed=0):
    """Loads scikit-learn's 8x8 digits (1,797 images) with a stratified split.

    The UCI optical-recognition digits bundled with scikit-learn
    (`sklearn.datasets.load_digits`; no download). Each pixel counts the set
    cells in a 4x4 block of the original 32x32 bitmap.

    Args:
        test_fraction: float in (0, 1), share of each class held out.
        seed: int, seeds the split. The same seed gives the same split.

    Returns:
        `(x_train, y_train), (x_test, y_test)`:
        - `x_*`: float32 `(N, 8, 8)`, integer values in [0, 16] (dark digit
          ink is high).
        - `y_*`: int64 `(N,)`, digit labels 0-9.
        With the defaults, N is 1,438 (train) and 359 (test), shuffled.

    Raises:
        ImportError: scikit-learn is not installed
            (`pip install scikit-learn`).

    Example:

    >>> from keras_transfer import datasets
    >>> (x, y), (x_test, y_test) = datasets.load_digits()
    >>> x.shape, x_test.shape, float(x.max())
    ((1438, 8, 8), (359, 8, 8), 16.0)
    """
    test_fraction = _common.check_fraction("test_fraction", test_fraction)
    seed = _common.check_seed(seed)
    try:
        from sklearn import datasets as sklearn_datasets
    except ImportError as error:
        raise ImportError(
            "`load_digits` needs scikit-learn. Install it with "
            "`pip install scikit-learn`."
        ) from error
    bunch = sklearn_datasets.load_digits()
    x = bunch.images.astype(np.float32)
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train, test = _common.stratified_split(y, round(test_fraction * len(y)), rng)
    return (x[train], y[train]), (x[test], y[test])
