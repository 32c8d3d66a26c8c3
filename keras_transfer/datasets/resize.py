"""Resizing a batch of images, e.g. USPS 16x16 to MNIST's 28x28."""

import numpy as np


def _check_images_and_size(x, size):
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(
            "`x` must be a batch of images (N, H, W) or (N, H, W, C). "
            f"Received: x.shape={x.shape}"
        )
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size)
    ):
        raise ValueError(
            "`size` must be a tuple of two positive ints (height, width). "
            f"Received: size={size!r}"
        )
    return x


def resize_images(x, size, interpolation="bilinear", antialias=False):
    """Resizes a batch of images with `keras.ops.image.resize`.

    Args:
        x: array `(N, H, W)` (grey) or `(N, H, W, C)`, any numeric dtype.
        size: tuple of two positive ints, `(height, width)` of the output.
        interpolation: str, one of `keras.ops.image.resize`'s methods
            (`"bilinear"`, `"nearest"`, `"bicubic"`, ...).
        antialias: bool, passed to `keras.ops.image.resize`.

    Returns:
        float32 NumPy array `(N, height, width)` or `(N, height, width, C)`,
        on the same value scale as `x` (bilinear keeps [0, 1] in [0, 1];
        bicubic can overshoot slightly).

    Example:

    >>> import numpy as np
    >>> from keras_transfer.datasets import resize_images
    >>> resize_images(np.ones((2, 16, 16), "float32"), (28, 28)).shape
    (2, 28, 28)
    """
    import keras

    x = _check_images_and_size(x, size)
    grey = x.ndim == 3
    images = x[..., None] if grey else x
    resized = keras.ops.image.resize(
        images.astype(np.float32),
        tuple(int(s) for s in size),
        interpolation=interpolation,
        antialias=antialias,
        data_format="channels_last",
    )
    resized = keras.ops.convert_to_numpy(resized).astype(np.float32)
    return resized[..., 0] if grey else resized


def resize_like_files(x, size):
    """Resizes a batch of images exactly as `load_image_folder` resizes files.

    Pillow's bilinear filter (`Image.BILINEAR`, which widens its support when
    shrinking, i.e. antialiases), image by image. `uint8` RGB or grey images
    go through Pillow's 8-bit modes, so an image passed as an array gets the
    same pixels as the same image read from a file; other dtypes go through
    Pillow's 32-bit float mode, channel by channel (no rounding to 8 bits).

    Args:
        x: array `(N, H, W)` (grey) or `(N, H, W, C)`, pixel values in
            [0, 255].
        size: tuple of two positive ints, `(height, width)` of the output.

    Returns:
        float32 NumPy array `(N, height, width)` or `(N, height, width, C)`.
    """
    from PIL import Image

    x = _check_images_and_size(x, size)
    height, width = (int(s) for s in size)
    grey = x.ndim == 3
    images = x[..., None] if grey else x
    out = np.empty((len(images), height, width, images.shape[-1]), np.float32)
    eight_bit = images.dtype == np.uint8 and images.shape[-1] in (1, 3)
    for row, image in enumerate(images):
        if eight_bit:
            pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            resized = np.asarray(pil.resize((width, height), Image.BILINEAR))
            out[row] = resized.reshape(height, width, -1)
        else:
            for c in range(images.shape[-1]):
                pil = Image.fromarray(image[..., c].astype(np.float32), mode="F")
                out[row, ..., c] = np.asarray(pil.resize((width, height), Image.BILINEAR))
    return out[..., 0] if grey else out
