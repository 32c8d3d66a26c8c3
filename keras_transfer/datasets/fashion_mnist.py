"""Fashion-MNIST from the idx `.gz` files of Debian's `dataset-fashion-mnist`."""

import functools
import gzip
import os

import numpy as np

from keras_transfer.datasets import _common

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_DEFAULT_PATH = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path, magic):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw[:4], dtype=">u4")[0]
    if header != magic:
        raise ValueError(
            f"`load_fashion_mnist` expected an idx file with magic number "
            f"{magic}, got {header}. Received: {path!r}"
        )
    ndim = magic & 0xFF
    shape = tuple(np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4").astype(int))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=2)
def _read_fashion_mnist(path):
    arrays = []
    for split in ("train", "test"):
        images, labels = (os.path.join(path, name) for name in _FILES[split])
        x = _read_idx(images, 2051)
        y = _read_idx(labels, 2049).astype(np.int64)
        y.setflags(write=False)
        arrays.append((x, y))
    return tuple(arrays)


def load_fashion_mnist(
    path=_DEFAULT_PATH, n_train=None, n_test=None, seed=0
):
    """Loads Fashion-MNIST (Zalando, 60,000 train / 10,000 test, 28x28).

    Reads the four idx `.gz` files of the official split, as installed by
    Debian's `dataset-fashion-mnist` package; nothing is downloaded.
    `n_train`/`n_test` draw seeded, class-stratified subsets (of the official
    train and test set respectively), so small experiments stay balanced.
    Class names, in label order, are in `FASHION_MNIST_CLASSES`.

    Args:
        path: str, folder with `train-images-idx3-ubyte.gz`,
            `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz` and
            `t10k-labels-idx1-ubyte.gz`.
        n_train: int in [1, 60000] or None (all 60,000, in file order).
        n_test: int in [1, 10000] or None (all 10,000, in file order).
        seed: int, seeds the subsets. The same seed gives the same subsets;
            the test subset does not depend on `n_train`.

    Returns:
        `(x_train, y_train), (x_test, y_test)`:
        - `x_*`: uint8 `(N, 28, 28)`, values in [0, 255] (bright object on
          a black background).
        - `y_*`: int64 `(N,)`, labels 0-9 indexing `FASHION_MNIST_CLASSES`.
        Subsets come in shuffled order.

    Raises:
        FileNotFoundError: a file is missing (install the Debian package
            `dataset-fashion-mnist` or pass `path=`).

    Example:

    >>> from keras_transfer import datasets
    >>> (x, y), (x_test, y_test) = datasets.load_fashion_mnist(
    ...     n_train=1000, n_test=500
    ... )
    >>> x.shape, x.dtype.name, int((y == 0).sum())
    ((1000, 28, 28), 'uint8', 100)
    """
    _common.check_path(
        "load_fashion_mnist", "path", path, kind="folder",
        hint=_install_hint(path),
    )
    for names in _FILES.values():
        for name in names:
            if not os.path.isfile(os.path.join(path, name)):
                raise FileNotFoundError(
                    f"`load_fashion_mnist` needs {name} in {path}: "
                    + _install_hint(path)
                    + f". Received: path={path!r}"
                )
    seed = _common.check_seed(seed)
    n_train = _common.check_count("n_train", n_train)
    n_test = _common.check_count("n_test", n_test)
    (x, y), (x_test, y_test) = _read_fashion_mnist(os.path.abspath(path))
    n_train = _common.check_count("n_train", n_train, len(y))
    n_test = _common.check_count("n_test", n_test, len(y_test))
    # Separate streams: the test subset does not depend on `n_train`.
    if n_train is not None:
        rng = np.random.default_rng([seed, 1])
        chosen = _common.stratified_subset(y, n_train, rng)
        x, y = x[chosen], y[chosen]
    else:
        x, y = x.copy(), y.copy()
    if n_test is not None:
        rng = np.random.default_rng([seed, 2])
        chosen = _common.stratified_subset(y_test, n_test, rng)
        x_test, y_test = x_test[chosen], y_test[chosen]
    else:
        x_test, y_test = x_test.copy(), y_test.copy()
    return (x, y), (x_test, y_test)


def _install_hint(path):
    return (
        "Install the files with `apt-get install dataset-fashion-mnist` "
        f"(they go to {_DEFAULT_PATH}) or pass `path=` to the folder that "
        "holds the four idx .gz files"
    )
