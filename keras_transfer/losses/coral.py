"""CORAL: correlation alignment loss (Sun & Saenko, 2016)."""

import keras
from keras import ops

from keras_transfer.losses.mmd import _check_pair


def _covariance(x):
    n = ops.cast(ops.shape(x)[0], x.dtype)
    centred = x - ops.mean(x, axis=0, keepdims=True)
    return ops.matmul(ops.transpose(centred), centred) / (n - 1.0)


def coral(source, target):
    """CORAL distance between the feature covariances of two samples.

    `L = ||C_s - C_t||_F^2 / (4 d^2)` with `C` the unbiased sample covariance
    `(X - mean)^T (X - mean) / (n - 1)` of each `(n, d)` sample, as in Sun &
    Saenko (2016), eq. 1-3; the code computes exactly this formula.

    Args:
        source: `(m, d)` tensor of source features, `m >= 2`.
        target: `(n, d)` tensor of target features, `n >= 2`.

    Returns:
        A float32 scalar `>= 0`, 0 when the covariances match.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    >>> round(float(coral(x, x + 5.0)), 6)  # a shift keeps the covariance
    0.0

    Reference:
        [Sun & Saenko, 2016](https://arxiv.org/abs/1607.01719).
    """
    x = ops.convert_to_tensor(source)
    y = ops.convert_to_tensor(target)
    _check_pair(x, y)
    # float32 even under mixed precision: covariance entries underflow in fp16.
    x = ops.cast(x, "float32")
    y = ops.cast(y, "float32")
    d = ops.cast(ops.shape(x)[1], "float32")
    diff = _covariance(x) - _covariance(y)
    return ops.sum(ops.square(diff)) / (4.0 * d * d)


@keras.saving.register_keras_serializable(package="keras_transfer")
class CORAL(keras.losses.Loss):
    """CORAL distance as a Keras loss: `y_true` source, `y_pred` target features.

    The value is `coral(y_true, y_pred)`, `||C_s - C_t||_F^2 / (4 d^2)`, one
    scalar for the batch, so `sample_weight` is not supported.

    Args:
        name: loss name.
        dtype: loss dtype.

    Reference:
        [Sun & Saenko, 2016](https://arxiv.org/abs/1607.01719).
    """

    def __init__(self, name="coral", dtype=None):
        super().__init__(name=name, reduction="none", dtype=dtype)

    def call(self, y_true, y_pred):
        return coral(y_true, y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                "`CORAL` compares two whole samples and has no per-sample "
                f"value to weight. Received: sample_weight={sample_weight!r}"
            )
        return super().__call__(y_true, y_pred)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
