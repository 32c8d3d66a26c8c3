"""Resizing a batch of images, e.g. USPS 16x16 to MNIST's 28x28."""

import numpy as np


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
