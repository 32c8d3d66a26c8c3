"""Maximum mean discrepancy with Gaussian kernels (Gretton et al., 2012)."""

import math

import keras
from keras import ops

_ESTIMATORS = ("unbiased", "biased", "linear")


def _check_bandwidth(bandwidth):
    if bandwidth is None:
        return None
    values = (
        list(bandwidth) if isinstance(bandwidth, (list, tuple)) else [bandwidth]
    )
    if not values or not all(
        isinstance(b, (int, float))
        and not isinstance(b, bool)
        and math.isfinite(b)
        and b > 0
        for b in values
    ):
        raise ValueError(
            "`bandwidth` must be None (median heuristic), a positive number or "
            f"a non-empty list of positive numbers. Received: bandwidth={bandwidth!r}"
        )
    return [float(b) for b in values]


def _check_multipliers(bandwidth_multipliers):
    values = (
        list(bandwidth_multipliers)
        if isinstance(bandwidth_multipliers, (list, tuple))
        else [bandwidth_multipliers]
    )
    if not values or not all(
        isinstance(b, (int, float))
        and not isinstance(b, bool)
        and math.isfinite(b)
        and b > 0
        for b in values
    ):
        raise ValueError(
            "`bandwidth_multipliers` must be a non-empty list of positive "
            "numbers. Received: "
            f"bandwidth_multipliers={bandwidth_multipliers!r}"
        )
    return [float(b) for b in values]


def _check_estimator(estimator):
    if estimator not in _ESTIMATORS:
        raise ValueError(
            f"`estimator` must be one of {_ESTIMATORS}. "
            f"Received: estimator={estimator!r}"
        )
    return estimator


def _check_pair(x, y, min_samples=2):
    """Static checks on two (batch, features) sample matrices."""
    x_shape, y_shape = tuple(x.shape), tuple(y.shape)
    if len(x_shape) != 2 or len(y_shape) != 2:
        raise ValueError(
            "`source` and `target` must be 2-D (batch, features) matrices; "
            "flatten or pool features first. Received: "
            f"source.shape={x_shape}, target.shape={y_shape}"
        )
    if (
        x_shape[1] is not None
        and y_shape[1] is not None
        and x_shape[1] != y_shape[1]
    ):
        raise ValueError(
            "`source` and `target` must have the same feature width. "
            f"Received: source.shape={x_shape}, target.shape={y_shape}"
        )
    for name, shape in (("source", x_shape), ("target", y_shape)):
        if shape[0] is not None and shape[0] < min_samples:
            raise ValueError(
                f"`{name}` needs at least {min_samples} samples for this "
                f"estimator. Received: {name}.shape={shape}"
            )


def _squared_distances(a, b):
    a2 = ops.sum(ops.square(a), axis=-1)
    b2 = ops.sum(ops.square(b), axis=-1)
    d = ops.expand_dims(a2, 1) + ops.expand_dims(b2, 0) - 2.0 * ops.matmul(
        a, ops.transpose(b)
    )
    # The expansion can go slightly negative through cancellation.
    return ops.maximum(d, 0.0)


def _median(values):
    return ops.stop_gradient(ops.median(ops.reshape(values, (-1,))))


def _sigmas_squared(bandwidth, multipliers, median_sq_distance):
    """List of squared bandwidths sigma^2 for k = exp(-d / (2 sigma^2))."""
    if bandwidth is not None:
        return [b * b for b in bandwidth]
    # Median heuristic: sigma^2 = median(d) / 2, so k = exp(-d / median(d)).
    # The floor keeps k finite when all points coincide (then MMD is 0).
    base = ops.maximum(median_sq_distance / 2.0, 1e-12)
    return [base * (m * m) for m in multipliers]


def _kernel(d, sigmas_squared):
    """Mean of Gaussian kernels over the bandwidths (a multi-kernel MMD)."""
    total = 0.0
    for s2 in sigmas_squared:
        total = total + ops.exp(-d / (2.0 * s2))
    return total / float(len(sigmas_squared))


def mmd(
    source,
    target,
    bandwidth=None,
    bandwidth_multipliers=(1.0,),
    estimator="unbiased",
):
    """Squared maximum mean discrepancy between two samples, Gaussian kernels.

    With `k(a, b) = mean_s exp(-||a - b||^2 / (2 sigma_s^2))` over the
    bandwidths `sigma_s`, and `m = len(source)`, `n = len(target)`:

    - `"unbiased"` (quadratic time, Gretton et al. 2012, eq. 3):
      `sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1))
      - 2 sum_{i,j} k(x_i, y_j) / (m n)`; when `m == n` the cross sum leaves
      out `i == j` and divides by `m (m-1)` (Lemma 6), which is also unbiased
      and is exactly 0 for `source == target`. It can be slightly negative.
    - `"biased"`: the V-statistic, all sums over every pair, `>= 0`.
    - `"linear"` (linear time, Lemma 14): with `h = k(x_{2i-1}, x_{2i}) +
      k(y_{2i-1}, y_{2i}) - k(x_{2i-1}, y_{2i}) - k(x_{2i}, y_{2i-1})`, the
      mean of `h` over the `floor(min(m, n) / 2)` disjoint pairs.

    The bandwidths are `bandwidth` when given; otherwise the median heuristic
    `sigma^2 = median(squared distances) / 2` (computed on the pooled sample,
    or on the paired distances only for `"linear"`, which keeps it linear
    time), times each of `bandwidth_multipliers`: pass e.g.
    `(0.25, 0.5, 1, 2, 4)` for a multi-bandwidth kernel. Gradients do not flow
    through the median.

    Args:
        source: `(m, d)` tensor of source samples or features.
        target: `(n, d)` tensor of target samples or features.
        bandwidth: None for the median heuristic, or a positive float, or a
            list of positive floats (the kernel is then their mean).
        bandwidth_multipliers: positive factors applied to the median
            bandwidth; must stay `(1.0,)` when `bandwidth` is given.
        estimator: `"unbiased"`, `"biased"` or `"linear"`.

    Returns:
        A float32 scalar, the squared MMD estimate.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    >>> float(mmd(x, x, estimator="biased"))
    0.0

    Reference:
        [Gretton et al., 2012](https://jmlr.org/papers/v13/gretton12a.html).
    """
    bandwidth = _check_bandwidth(bandwidth)
    multipliers = _check_multipliers(bandwidth_multipliers)
    if bandwidth is not None and multipliers != [1.0]:
        raise ValueError(
            "`bandwidth_multipliers` scales the median-heuristic bandwidth and "
            "cannot be combined with an explicit `bandwidth`; pass the list of "
            f"bandwidths instead. Received: bandwidth={bandwidth!r}, "
            f"bandwidth_multipliers={bandwidth_multipliers!r}"
        )
    estimator = _check_estimator(estimator)
    x = ops.convert_to_tensor(source)
    y = ops.convert_to_tensor(target)
    _check_pair(x, y)
    # float32 even under mixed precision: exp(-d) and the differences of
    # kernel means lose all precision in float16.
    x = ops.cast(x, "float32")
    y = ops.cast(y, "float32")
    if estimator == "linear":
        return _linear_mmd(x, y, bandwidth, multipliers)
    d_xx = _squared_distances(x, x)
    d_yy = _squared_distances(y, y)
    d_xy = _squared_distances(x, y)
    median = None
    if bandwidth is None:
        pooled = ops.concatenate(
            [
                ops.concatenate([d_xx, d_xy], axis=1),
                ops.concatenate([ops.transpose(d_xy), d_yy], axis=1),
            ],
            axis=0,
        )
        # Off-diagonal entries only: the zeros on the diagonal would bias the
        # median down.
        median = _median_offdiag(pooled)
    s2 = _sigmas_squared(bandwidth, multipliers, median)
    k_xx = _kernel(d_xx, s2)
    k_yy = _kernel(d_yy, s2)
    k_xy = _kernel(d_xy, s2)
    m = ops.cast(ops.shape(x)[0], "float32")
    n = ops.cast(ops.shape(y)[0], "float32")
    if estimator == "biased":
        return ops.mean(k_xx) + ops.mean(k_yy) - 2.0 * ops.mean(k_xy)
    trace_xx = ops.trace(k_xx)
    trace_yy = ops.trace(k_yy)
    term_xx = (ops.sum(k_xx) - trace_xx) / (m * (m - 1.0))
    term_yy = (ops.sum(k_yy) - trace_yy) / (n * (n - 1.0))
    same = ops.cast(ops.equal(m, n), "float32")
    cross = (ops.sum(k_xy) - same * ops.trace(k_xy)) / (m * n - same * m)
    return term_xx + term_yy - 2.0 * cross


def _median_offdiag(d):
    """Median of the off-diagonal entries of a square distance matrix."""
    size = ops.shape(d)[0]
    # Drop the diagonal by taking the strict upper triangle; `d` is symmetric.
    mask = ops.triu(ops.ones((size, size), dtype="bool"), k=1)
    values = ops.reshape(d, (-1,))
    flat_mask = ops.reshape(mask, (-1,))
    # Sort with masked-out entries pushed to +inf, then pick the middle of the
    # `size (size - 1) / 2` valid ones.
    values = ops.sort(ops.where(flat_mask, values, float("inf")))
    count = size * (size - 1) // 2
    lo = ops.take(values, (count - 1) // 2)
    hi = ops.take(values, count // 2)
    return ops.stop_gradient((lo + hi) / 2.0)


def _linear_mmd(x, y, bandwidth, multipliers):
    m = ops.minimum(ops.shape(x)[0], ops.shape(y)[0])
    pairs = m // 2
    x1 = x[: pairs * 2 : 2]
    x2 = x[1 : pairs * 2 : 2]
    y1 = y[: pairs * 2 : 2]
    y2 = y[1 : pairs * 2 : 2]

    def sq(a, b):
        return ops.sum(ops.square(a - b), axis=-1)

    d_xx, d_yy, d_xy, d_yx = sq(x1, x2), sq(y1, y2), sq(x1, y2), sq(x2, y1)
    median = None
    if bandwidth is None:
        median = _median(ops.concatenate([d_xx, d_yy, d_xy, d_yx], axis=0))
    s2 = _sigmas_squared(bandwidth, multipliers, median)
    h = _kernel(d_xx, s2) + _kernel(d_yy, s2) - _kernel(d_xy, s2) - _kernel(d_yx, s2)
    return ops.mean(h)


@keras.saving.register_keras_serializable(package="keras_transfer")
class MMD(keras.losses.Loss):
    """Squared maximum mean discrepancy as a Keras loss.

    `y_true` holds the source samples (or features) and `y_pred` the target
    ones, each `(batch, features)`; the loss is `mmd(y_true, y_pred, ...)`, a
    scalar over the whole batch (there is no per-sample value, so
    `sample_weight` is not supported). See `keras_transfer.losses.mmd` for the
    estimators and the bandwidth rules.

    Args:
        bandwidth: None for the median heuristic, a positive float or a list
            of positive floats.
        bandwidth_multipliers: factors applied to the median bandwidth, e.g.
            `(0.25, 0.5, 1, 2, 4)` for a multi-bandwidth kernel.
        estimator: `"unbiased"`, `"biased"` or `"linear"`.
        name: loss name.
        dtype: loss dtype.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> float(MMD(estimator="linear")(x, x))
    0.0

    Reference:
        [Gretton et al., 2012](https://jmlr.org/papers/v13/gretton12a.html),
        [Long et al., 2015](https://arxiv.org/abs/1502.02791) (multi-kernel).
    """

    def __init__(
        self,
        bandwidth=None,
        bandwidth_multipliers=(1.0,),
        estimator="unbiased",
        name="mmd",
        dtype=None,
    ):
        super().__init__(name=name, reduction="none", dtype=dtype)
        checked = _check_bandwidth(bandwidth)
        multipliers = _check_multipliers(bandwidth_multipliers)
        if checked is not None and multipliers != [1.0]:
            raise ValueError(
                "`bandwidth_multipliers` cannot be combined with an explicit "
                f"`bandwidth`. Received: bandwidth={bandwidth!r}, "
                f"bandwidth_multipliers={bandwidth_multipliers!r}"
            )
        self.bandwidth = (
            None
            if checked is None
            else (checked if isinstance(bandwidth, (list, tuple)) else checked[0])
        )
        self.bandwidth_multipliers = multipliers
        self.estimator = _check_estimator(estimator)

    def call(self, y_true, y_pred):
        return mmd(
            y_true,
            y_pred,
            bandwidth=self.bandwidth,
            bandwidth_multipliers=tuple(self.bandwidth_multipliers),
            estimator=self.estimator,
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                "`MMD` compares two whole samples and has no per-sample value "
                f"to weight. Received: sample_weight={sample_weight!r}"
            )
        return super().__call__(y_true, y_pred)

    def get_config(self):
        return {
            "name": self.name,
            "dtype": self.dtype,
            "bandwidth": self.bandwidth,
            "bandwidth_multipliers": self.bandwidth_multipliers,
            "estimator": self.estimator,
        }
