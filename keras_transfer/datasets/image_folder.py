"""Images from a folder with one sub-folder per class."""

import os

import numpy as np

from keras_transfer.datasets import _common

_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_image_folder(path, image_size=(224, 224), test_fraction=0.2, seed=0):
    """Loads a folder of images, one sub-folder per class, with a stratified split.

    ```
    path/
      cat/001.jpg, 002.png, ...
      dog/...
    ```

    Class names are the sub-folder names, sorted; label `i` is
    `class_names[i]`. Files with an image extension (`.jpg`, `.jpeg`, `.png`,
    `.bmp`, `.gif`, `.tif`, `.tiff`, `.webp`, any case) are decoded with
    Pillow, converted to RGB and resized to `image_size` (bilinear, aspect
    ratio not kept); other files are skipped, hidden ones too. Everything is
    decoded up front into memory; wrap the arrays with `to_dataset` for a
    `tf.data` pipeline.

    Args:
        path: str, the folder.
        image_size: tuple of two positive ints, `(height, width)`.
        test_fraction: float in [0, 1), share of each class held out; 0
            gives an empty test set.
        seed: int, seeds the split.

    Returns:
        `(x_train, y_train), (x_test, y_test), class_names`:
        - `x_*`: uint8 `(N, height, width, 3)`, RGB values in [0, 255]
          (what `keras_transfer.backbones.efficientnet_lite0` takes).
        - `y_*`: int64 `(N,)`, indices into `class_names`.
        - `class_names`: tuple of str, sorted sub-folder names.
        Train and test come in shuffled order.

    Raises:
        FileNotFoundError: `path` is not a folder.
        ValueError: fewer than two class sub-folders, a class without
            images, or a file that cannot be decoded (named in the message).
        ImportError: Pillow is not installed (`pip install pillow`).
    """
    path = _common.check_path(
        "load_image_folder", "path", path, kind="folder",
        hint="Pass a folder with one sub-folder of images per class",
    )
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
            for s in image_size
        )
    ):
        raise ValueError(
            "`image_size` must be a tuple of two positive ints (height, "
            f"width). Received: image_size={image_size!r}"
        )
    test_fraction = _common.check_fraction(
        "test_fraction", test_fraction, allow_zero=True
    )
    seed = _common.check_seed(seed)
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            "`load_image_folder` needs Pillow to decode images. Install it "
            "with `pip install pillow`."
        ) from error

    class_names = tuple(
        sorted(
            name for name in os.listdir(path)
            if not name.startswith(".") and os.path.isdir(os.path.join(path, name))
        )
    )
    if len(class_names) < 2:
        raise ValueError(
            "`path` must hold at least two class sub-folders (one per "
            f"class). Found {len(class_names)}: {list(class_names)}. "
            f"Received: path={path!r}"
        )
    files, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(path, name)
        images = sorted(
            f for f in os.listdir(folder)
            if not f.startswith(".") and f.lower().endswith(_EXTENSIONS)
        )
        if not images:
            raise ValueError(
                f"`path` has a class sub-folder {name!r} with no images "
                f"(allowed extensions: {', '.join(_EXTENSIONS)}). "
                f"Received: path={path!r}"
            )
        files += [os.path.join(folder, f) for f in images]
        labels += [label] * len(images)

    height, width = (int(s) for s in image_size)
    x = np.empty((len(files), height, width, 3), dtype=np.uint8)
    for row, filename in enumerate(files):
        try:
            with Image.open(filename) as image:
                image = image.convert("RGB")
                if image.size != (width, height):
                    image = image.resize((width, height), Image.BILINEAR)
                x[row] = np.asarray(image)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise ValueError(
                f"`load_image_folder` cannot decode the image {filename!r} "
                f"({type(error).__name__}: {error}). Remove or replace it. "
                f"Received: path={path!r}"
            ) from None
    y = np.array(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train, test = _common.stratified_split(y, round(test_fraction * len(y)), rng)
    return (x[train], y[train]), (x[test], y[test]), class_names
