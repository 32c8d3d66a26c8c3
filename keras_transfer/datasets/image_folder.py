"""Images from a folder with one sub-folder per class."""

import os

import numpy as np

from keras_transfer.datasets import _common

_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_image_folder(
    path, image_size=(224, 224), test_fraction=0.2, seed=0, min_classes=2
):
    """Loads a folder of images, one sub-folder per class, with a stratified split.

    ```
    path/
      cat/001.jpg, 002.png, ...
      dog/...
    ```

    Class names are the sub-folder names, sorted; label `i` is
    `class_names[i]`. Files with an image extension (`.jpg`, `.jpeg`, `.png`,
    `.bmp`, `.gif`, `.tif`, `.tiff`, `.webp`, any case) are decoded with
    Pillow, turned upright by their EXIF orientation, converted to 8-bit RGB
    by `to_rgb8` (every mode and bit depth: 16-bit greyscale is divided by
    257, not clipped; transparency is composited over white) and resized to
    `image_size` (bilinear, aspect ratio not kept); other files are
    skipped, hidden ones too. Everything is
    decoded up front into memory; wrap the arrays with `to_dataset` for a
    `tf.data` pipeline.

    Args:
        path: str, the folder.
        image_size: tuple of two positive ints, `(height, width)`.
        test_fraction: float in [0, 1), share of each class held out; 0
            gives an empty test set.
        seed: int, seeds the split.
        min_classes: 2 (default: data to train a classifier on) or 1
            (data of a single class is accepted, e.g. to evaluate a trained
            classifier on it).

    Returns:
        `(x_train, y_train), (x_test, y_test), class_names`:
        - `x_*`: uint8 `(N, height, width, 3)`, RGB values in [0, 255]
          (what `keras_transfer.backbones.efficientnet_lite0` takes).
        - `y_*`: int64 `(N,)`, indices into `class_names`.
        - `class_names`: tuple of str, sorted sub-folder names.
        Train and test come in shuffled order.

    Raises:
        FileNotFoundError: `path` is not a folder.
        ValueError: fewer than `min_classes` class sub-folders, a class
            without images, or a file that cannot be decoded or converted (named in
            the message, e.g. a float image outside [0, 1]).
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
    min_classes = _common.check_min_classes(min_classes)
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            "`load_image_folder` needs Pillow to decode images. Install it "
            "with `pip install pillow`."
        ) from error

    class_names = _common.class_folders(path, min_classes)
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
            x[row] = read_image(filename, (height, width))
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


# Modes whose pixels are 8-bit values Pillow converts to RGB exactly.
_EIGHT_BIT = ("1", "L", "P", "RGB", "CMYK", "YCbCr")
_ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")


def read_image(filename, image_size):
    """One image file as `uint8` RGB `(height, width, 3)`: decoded by Pillow,
    made RGB by `to_rgb8` and resized with Pillow's bilinear filter (as
    `datasets.resize_like_files` resizes arrays).

    Raises:
        OSError, ValueError, PIL.Image.DecompressionBombError: the file
            cannot be decoded (callers name the file in their error).
    """
    from PIL import Image

    height, width = (int(s) for s in image_size)
    with Image.open(filename) as image:
        image = Image.fromarray(to_rgb8(image))
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        return np.asarray(image)


def to_rgb8(image):
    """A Pillow image of any mode and bit depth as 8-bit RGB values.

    - `1`, `L`, `P`, `RGB`, `YCbCr`: Pillow's conversion (exact);
      `CMYK`: `R = 255 (1 - C/255)(1 - K/255)`, likewise G (M) and B (Y).
    - Transparency (`LA`, `PA`, `RGBA`, premultiplied `La`/`RGBa`, a PNG or
      GIF transparent colour): composited over white,
      `round((c a + 255 (255 - a)) / 255)`, as viewers show it. (Dropping
      the alpha channel would expose whatever colour hides under it.)
    - 16-bit greyscale (`I;16*`, or `I` from a 16-bit PNG/TIFF):
      `round(v / 257)`, so 65535 -> 255 (Pillow's `convert("RGB")` clips
      every value above 255 to white). 16-bit-per-channel colour PNGs are
      read by Pillow as 8-bit `RGB`/`RGBA` (high byte), within 1 of
      `v / 257`.
    - `F` (32-bit float): values in [0, 1] become `round(255 v)`.
    - Multi-frame files (GIF, TIFF): the first frame.

    The EXIF orientation tag is applied first (photos from phones).

    Args:
        image: a `PIL.Image.Image`.

    Returns:
        uint8 NumPy array `(height, width, 3)`.

    Raises:
        ValueError: values with no standard 8-bit meaning: a float image
            with values outside [0, 1] or not finite, a signed or 32-bit
            integer image, or a mode Pillow cannot convert to RGB. The
            message gives the mode and the value range.
    """
    from PIL import ImageOps

    # The file's bit depth is read before `exif_transpose`, which copies the
    # pixels but not the format or TIFF tags.
    bits = _integer_bits(image) if image.mode == "I" else 16
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in _EIGHT_BIT and "transparency" not in image.info:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mode in _EIGHT_BIT or mode in _ALPHA:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:]
        rgb = (rgba[..., :3] * alpha + 255.0 * (255.0 - alpha)) / 255.0
        return np.rint(rgb).astype(np.uint8)
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if bits not in (8, 16) or (values.size and values.min() < 0):
            raise ValueError(
                f"{bits or 'unknown'}-bit integer pixels (mode {mode!r}, "
                f"values in [{values.min()}, {values.max()}]) have no standard "
                "8-bit RGB meaning. Save the image as 8- or 16-bit first."
            )
        grey = np.rint(values / ((2**bits - 1) / 255.0))
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and (
            not np.isfinite(values).all() or values.min() < 0 or values.max() > 1
        ):
            raise ValueError(
                f"float pixels (mode 'F') must be in [0, 1] to map to 8-bit "
                f"RGB; these are in [{np.nanmin(values)}, {np.nanmax(values)}]. "
                "Scale the image to [0, 1] (or save it as 8/16-bit) first."
            )
        grey = np.rint(values * 255.0)
    else:
        try:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
        except ValueError as error:
            raise ValueError(
                f"Pillow cannot convert mode {mode!r} to RGB ({error})."
            ) from None
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)


def _integer_bits(image):
    """Bits per sample of a mode-`I` image (16 for PNG: Pillow reads 16-bit
    PNGs as `I`; TIFF says it in tag 258), or None if unknown."""
    if image.format == "PNG":
        return 16
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 258 in tags:
        bits = tags[258]
        return int(bits[0] if isinstance(bits, tuple) else bits)
    return None
