"""How far apart two domains are, measured before any transfer is tried."""

import numpy as np

from keras_transfer._validation import check_int
from keras_transfer.losses.mmd import mmd as _mmd


def _as_features(x, model, batch_size, name):
    if model is not None:
        x = model.predict(x, batch_size=batch_size, verbose=0)
    x = np.asarray(x, dtype="float32")
    if x.ndim < 2 or len(x) < 2:
        raise ValueError(
            f"`{name}` must hold at least 2 samples along the first axis. "
            f"Received: {name}.shape={x.shape}"
        )
    x = x.reshape(len(x), -1)
    if not np.isfinite(x).all():
        raise ValueError(
            f"`{name}` (or its features) contains NaN or inf values. "
            f"Received: {name} with {int((~np.isfinite(x)).sum())} such values"
        )
    return x


def _subsample(x, max_samples, rng):
    if len(x) <= max_samples:
        return x
    return x[np.sort(rng.choice(len(x), max_samples, replace=False))]


def _linear_domain_error(xs, xt, folds, rng, l2):
    """Cross-validated error of a ridge-regression linear domain classifier."""
    x = np.concatenate([xs, xt]).astype("float64")
    y = np.r_[-np.ones(len(xs)), np.ones(len(xt))]
    order = rng.permutation(len(x))
    errors = 0
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        mean = x[train].mean(0)
        std = x[train].std(0) + 1e-6
        a = (x[train] - mean) / std
        a = np.c_[a, np.ones(len(a))]
        gram = a.T @ a + l2 * len(a) * np.eye(a.shape[1])
        w = np.linalg.solve(gram, a.T @ y[train])
        b = np.c_[(x[fold] - mean) / std, np.ones(len(fold))]
        errors += int((np.sign(b @ w) != y[fold]).sum())
    return errors / len(x)


def domain_similarity(
    source,
    target,
    model=None,
    max_samples=1000,
    folds=5,
    l2=1e-2,
    bandwidth_multipliers=(0.25, 0.5, 1.0, 2.0, 4.0),
    batch_size=256,
    seed=0,
):
    """MMD and proxy A-distance between two domains, as a plain dict.

    Features are `model.predict(x)` when `model` is given (e.g. a pretrained
    backbone's pooled output), otherwise the raw inputs; either way they are
    flattened to `(n, width)`. At most `max_samples` of each domain are used
    (a seeded random subset), so the cost stays bounded.

    - `mmd`: the unbiased squared MMD (`keras_transfer.losses.mmd`) with a
      multi-bandwidth Gaussian kernel around the median heuristic.
    - `proxy_a_distance`: `PAD = 2 (1 - 2 err)` with `err` the `folds`-fold
      cross-validated error of a linear domain classifier (ridge regression
      on standardized features, sign as the decision). Near 0 when the
      domains can't be told apart, 2 when a linear rule separates them; it is
      not clipped, so a value slightly below 0 is sampling noise.

    Args:
        source: array of source inputs (or features), first axis = samples.
        target: array of target inputs (or features), same trailing shape
            (after `model`, the same feature width).
        model: optional Keras model mapping inputs to features.
        max_samples: int >= 2, per-domain subsample size.
        folds: int >= 2, cross-validation folds for the domain classifier.
        l2: float > 0, ridge penalty (per sample) of the domain classifier.
        bandwidth_multipliers: kernel bandwidths relative to the median.
        batch_size: batch size for `model.predict`.
        seed: seed of the subsampling and fold split (a local NumPy
            generator; global RNGs are left alone).

    Returns:
        A dict `{"mmd": float, "proxy_a_distance": float,
        "domain_classifier_error": float, "n_source": int, "n_target": int,
        "feature_dim": int}` (sizes are the full sizes passed in; the
        statistics use the subsample). `recommend_strategy` consumes it.

    Example:

    ```python
    report = keras_transfer.strategies.domain_similarity(
        x_mnist, x_usps, model=backbone)
    report["proxy_a_distance"]
    ```

    Reference:
        [Ben-David et al., 2007](https://papers.nips.cc/paper/2983),
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html) (PAD).
    """
    max_samples = check_int(max_samples, "max_samples", minimum=2)
    folds = check_int(folds, "folds", minimum=2)
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 > 0:
        raise ValueError(f"`l2` must be a positive number. Received: l2={l2!r}")
    rng = np.random.default_rng(seed)
    n_source, n_target = len(source), len(target)
    xs = _as_features(_subsample(np.asarray(source), max_samples, rng), model, batch_size, "source")
    xt = _as_features(_subsample(np.asarray(target), max_samples, rng), model, batch_size, "target")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(
            "`source` and `target` must have the same feature width. "
            f"Received: source features {xs.shape}, target features {xt.shape}"
        )
    if folds > len(xs) + len(xt):
        raise ValueError(
            "`folds` cannot exceed the number of samples. "
            f"Received: folds={folds}, samples={len(xs) + len(xt)}"
        )
    value = float(
        _mmd(xs, xt, bandwidth_multipliers=tuple(bandwidth_multipliers))
    )
    error = _linear_domain_error(xs, xt, folds, rng, float(l2))
    return {
        "mmd": value,
        "proxy_a_distance": 2.0 * (1.0 - 2.0 * error),
        "domain_classifier_error": error,
        "n_source": int(n_source),
        "n_target": int(n_target),
        "feature_dim": int(xs.shape[1]),
    }
