"""USPS handwritten digits (16x16) from an HDF5 file."""

import numpy as np

from keras_transfer.datasets import _common


def load_usps(path):
    """Loads USPS handwritten digits with their official train/test split.

    Reads the classic USPS benchmark (Hull, 1994) from an HDF5 file with
    `train/data` `(7291, 256)`, `train/target` `(7291,)`, `test/data`
    `(2007, 256)` and `test/target` `(2007,)` (the layout of
    `Learning-From-Data-A-Short-Course`'s `data/usps.h5`). Images are 16x16,
    row-major, a white digit on black. To feed a 28x28 MNIST model, resize
    them with `keras_transfer.datasets.resize_images(x, (28, 28))`.

    Args:
        path: str, the `usps.h5` file. The project's tests use
            `../shared/data/usps/usps.h5`.

    Returns:
        `(x_train, y_train), (x_test, y_test)`:
        - `x_*`: float32 `(N, 16, 16)`, values in [0, 1]; N is 7,291 (train)
          and 2,007 (test), in file order.
        - `y_*`: int64 `(N,)`, digit labels 0-9.

    Raises:
        FileNotFoundError: `path` is not a file.
        ImportError: h5py is not installed (`pip install h5py`).
        ValueError: the file lacks one of the four datasets above.

    Example:

    ```python
    (x, y), (x_test, y_test) = keras_transfer.datasets.load_usps(
        "../shared/data/usps/usps.h5"
    )
    x28 = keras_transfer.datasets.resize_images(x, (28, 28))
    ```
    """
    path = _common.check_path(
        "load_usps", "path", path,
        hint="Pass the path of a `usps.h5` file (e.g. ../shared/data/usps/usps.h5)",
    )
    try:
        import h5py
    except ImportError as error:
        raise ImportError(
            "`load_usps` needs h5py to read the HDF5 file. Install it with "
            "`pip install h5py`."
        ) from error
    splits = []
    with h5py.File(path, "r") as f:
        for split in ("train", "test"):
            for key in ("data", "target"):
                if f"{split}/{key}" not in f:
                    raise ValueError(
                        f"`load_usps` expects datasets train/data, "
                        "train/target, test/data and test/target in the HDF5 "
                        f"file; {split}/{key} is missing. Received: path={path!r}"
                    )
            x = np.asarray(f[f"{split}/data"], dtype=np.float32)
            y = np.asarray(f[f"{split}/target"]).astype(np.int64)
            splits.append((x.reshape(-1, 16, 16), y))
    return tuple(splits)
