"""How far apart two domains are, measured before any transfer is tried."""

import numpy as np

from keras_transfer._validation import check_int
from keras_transfer.losses.mmd import mmd as _mmd
from keras_transfer.strategies.transferability import _as_matrix
from keras_transfer.strategies.transferability import transferability


def _as_features(x, model, batch_size, name):
    if model is not None:
        x = model.predict(x, batch_size=batch_size, verbose=0)
    # Checked as every feature matrix is; kept float32 as the model gives it.
    return _as_matrix(x, name).astype("float32")


def _subsample_index(n, max_samples, rng):
    if n <= max_samples:
        return np.arange(n)
    return np.sort(rng.choice(n, max_samples, replace=False))


_L2_GRID = tuple(10.0 ** np.arange(-4, 4))


def _ridge_fit(a, y, l2):
    """Centred ridge on rows `a`: returns (weights, x mean, x std, y mean)."""
    mean, std = a.mean(0), a.std(0) + 1e-6
    z = (a - mean) / std
    y_mean = y.mean()
    gram = z.T @ z + l2 * len(z) * np.eye(z.shape[1]) if z.shape[1] <= len(z) else None
    if gram is not None:
        w = np.linalg.solve(gram, z.T @ (y - y_mean))
    else:  # dual form when features outnumber samples
        k = z @ z.T + l2 * len(z) * np.eye(len(z))
        w = z.T @ np.linalg.solve(k, y - y_mean)
    return w, mean, std, y_mean


def _ridge_predict(fit, b):
    w, mean, std, y_mean = fit
    return ((b - mean) / std) @ w + y_mean


def _loo_l2(a, y, grid):
    """The ridge penalty with the smallest leave-one-out squared error.

    Exact LOO from one eigendecomposition of the centred training rows' Gram: for a centred ridge
    fit with intercept, the hat matrix is `1/m + U diag(s^2 / (s^2 + l2 m))
    U^T` and the LOO residual is `e_i / (1 - h_ii)`.
    """
    mean, std = a.mean(0), a.std(0) + 1e-6
    z = (a - mean) / std
    m = len(z)
    if m <= z.shape[1]:
        s2, u = np.linalg.eigh(z @ z.T)
    else:
        s2, v = np.linalg.eigh(z.T @ z)
        keep = s2 > 1e-10 * s2.max()
        s2, u = s2[keep], z @ v[:, keep] / np.sqrt(s2[keep])
    s2 = np.maximum(s2, 0.0)
    yc = y - y.mean()
    proj = u.T @ yc
    best, best_loss = None, np.inf
    for l2 in grid:
        shrink = s2 / (s2 + l2 * m)
        fitted = u @ (shrink * proj)
        hat = 1.0 / m + (u**2) @ shrink
        loo = (yc - fitted) / np.maximum(1.0 - hat, 1e-12)
        loss = float(np.mean(loo**2))
        if loss < best_loss:
            best, best_loss = l2, loss
    return best


def _linear_domain_error(xs, xt, folds, rng, l2):
    """Balanced cross-validated error of a ridge linear domain classifier.

    With `l2=None` the penalty is chosen inside each training fold by exact
    leave-one-out from `_L2_GRID` (nested: the held-out fold never picks it).
    Returns the error and the penalties used.
    """
    x = np.concatenate([xs, xt]).astype("float64")
    y = np.r_[-np.ones(len(xs)), np.ones(len(xt))]
    order = rng.permutation(len(x))
    wrong = np.zeros(len(x), bool)
    chosen = []
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        penalty = _loo_l2(x[train], y[train], _L2_GRID) if l2 is None else l2
        chosen.append(penalty)
        fit = _ridge_fit(x[train], y[train], penalty)
        wrong[fold] = np.sign(_ridge_predict(fit, x[fold])) != y[fold]
    # Balanced: the mean of the two domains' error rates, so unequal sample
    # sizes do not let a constant rule look better than chance.
    error = 0.5 * (wrong[y < 0].mean() + wrong[y > 0].mean())
    return float(error), chosen


def domain_similarity(
    source,
    target,
    model=None,
    max_samples=1000,
    folds=5,
    l2=None,
    bandwidth_multipliers=(0.25, 0.5, 1.0, 2.0, 4.0),
    batch_size=256,
    seed=0,
    target_labels=None,
):
    """How far apart two domains are: PAD, MMD and domain LogME, as a dict.

    No target labels are needed. Features are `model.predict(x)` when `model`
    is given (a pretrained base's pooled output is the intended use: raw
    pixels of two image datasets are almost always linearly separable, so
    every pair looks maximally far), otherwise the inputs themselves; either
    way they are flattened to `(n, width)`. At most `max_samples` of each
    domain are used (a seeded random subset), so the cost stays bounded.

    - `proxy_a_distance`: `PAD = 2 (1 - 2 err)` with `err` the `folds`-fold
      cross-validated, class-balanced error (mean of the two domains' error
      rates) of a linear domain classifier: ridge regression on standardized
      features with targets -1 (source) / +1 (target), sign as the decision.
      With `l2=None` the ridge penalty is chosen inside each training fold
      by exact leave-one-out squared error over `1e-4 ... 1e3` (nested, so
      the held-out fold never chooses it); without that choice a fixed weak
      penalty on wide features memorises the training folds and a fixed
      strong one underfits. Near 0 when the domains can't be told apart, 2
      when a linear rule separates them; it is not clipped, so a value
      slightly below 0 is sampling noise. It saturates: two clearly
      different domains (MNIST vs USPS, MNIST vs Fashion-MNIST on ImageNet
      features) both sit near 1.9-2.0, so rank far pairs with the next two.
    - `mmd`: the unbiased estimate of the squared MMD
      (`keras_transfer.losses.mmd`, Gretton et al. 2012, eq. 3) with a
      multi-bandwidth Gaussian kernel around the median heuristic of the
      pooled features. The squared MMD itself is >= 0 (0 = the two
      distributions are the same); its unbiased estimate is not: for
      indistinguishable domains it scatters around 0 and can be slightly
      negative (sampling noise, not clipped: clipping would bias it).
      Not bounded above, grows with the distance.
    - `domain_logme`: LogME (`transferability(..., method="logme")`) of the
      domain label (source / target) given the pooled features: the log
      evidence per example of a Bayesian linear model predicting the
      domain. Higher = more separable = farther apart; it keeps growing
      where PAD saturates.
    - `target_logme` (only with `target_labels`): LogME of the target
      labels given the target features, i.e. how well the features suit
      the target task (see `transferability`).

    Which depth to transfer: with `model=truncate_model(base, num_blocks=k)`
    and `target_labels`, `target_logme` scores the first `k` blocks of the
    base for the target task; compute it for each `k` and cut at the
    highest (the source samples only feed the PAD/MMD entries). In
    tutorial 07 (EfficientNet-Lite0, 500 labelled images at 64 px, 8 cut
    depths, 3 seeds) the LogME curve ranked the depths as the test accuracy
    of a head on the frozen features did, Spearman rho 0.88 on
    Fashion-MNIST and 0.76 on USPS, and its pick (block 5 on both) was the
    best depth or 0.3 points from it; it misranks the widest features (the
    5120-d `top` above block 7). The PAD between Fashion-MNIST and USPS on
    the whole base's features was 1.99: saturated, as said above.

    Args:
        source: array of source inputs (or features), first axis = samples.
        target: array of target inputs (or features), same trailing shape
            (after `model`, the same feature width). Unlabelled.
        model: optional Keras model mapping inputs to features.
        max_samples: int >= 2, per-domain subsample size.
        folds: int >= 2, cross-validation folds for the domain classifier.
        l2: None (cross-validated, the default) or a float > 0, a fixed ridge
            penalty per sample of the domain classifier.
        bandwidth_multipliers: kernel bandwidths relative to the median.
        batch_size: batch size for `model.predict`.
        seed: seed of the subsampling and fold split (a local NumPy
            generator; global RNGs are left alone).
        target_labels: optional integer labels of the `target` samples
            (all of them, in order) for `target_logme`.

    Returns:
        A dict `{"mmd", "proxy_a_distance", "domain_classifier_error",
        "domain_classifier_l2", "domain_logme", "n_source", "n_target",
        "feature_dim"}` plus `"target_logme"` when `target_labels` is given
        (sizes are the full sizes passed in; the statistics use the
        subsample; `domain_classifier_l2` is the median penalty used).
        `recommend_strategy` consumes it.

    Raises:
        ValueError: fewer than 2 samples in a domain, different feature
            widths, NaN/inf features, bad `folds`, `max_samples` or `l2`, or
            `target_labels` that are not one per target sample.

    Example:

    ```python
    base = keras_transfer.backbones.efficientnet_lite0(
        include_top=False, pooling="avg", input_shape=(64, 64, 3))
    report = keras_transfer.strategies.domain_similarity(
        x_mnist, x_usps, model=base)
    report["proxy_a_distance"], report["mmd"], report["domain_logme"]
    ```

    Reference:
        [Ben-David et al., 2007](https://papers.nips.cc/paper/2983),
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html) (PAD),
        [Gretton et al., 2012](https://jmlr.org/papers/v13/gretton12a.html)
        (MMD), [You et al., 2021](https://arxiv.org/abs/2102.11005) (LogME).
    """
    max_samples = check_int(max_samples, "max_samples", minimum=2)
    folds = check_int(folds, "folds", minimum=2)
    if l2 is not None and (
        isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 > 0
    ):
        raise ValueError(
            "`l2` must be None (cross-validated) or a positive number. "
            f"Received: l2={l2!r}"
        )
    for name, value in (("source", source), ("target", target)):
        if isinstance(value, (tuple, list, dict)):
            raise ValueError(
                f"`{name}` takes inputs only (one array); pass target labels, "
                "if any, as `target_labels=`. Received: a "
                f"{type(value).__name__}"
            )
    rng = np.random.default_rng(seed)
    source, target = np.asarray(source), np.asarray(target)
    n_source, n_target = len(source), len(target)
    if target_labels is not None:
        target_labels = np.asarray(target_labels)
        if len(target_labels) != n_target:
            raise ValueError(
                "`target_labels` must hold one label per `target` sample. "
                f"Received: {len(target_labels)} labels for {n_target} "
                "target samples"
            )
    pick_s = _subsample_index(n_source, max_samples, rng)
    pick_t = _subsample_index(n_target, max_samples, rng)
    xs = _as_features(source[pick_s], model, batch_size, "source")
    xt = _as_features(target[pick_t], model, batch_size, "target")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(
            "`source` and `target` must have the same feature width. "
            f"Received: source features {xs.shape}, target features {xt.shape}"
        )
    if folds > min(len(xs), len(xt)):
        raise ValueError(
            "`folds` cannot exceed the number of samples of either domain. "
            f"Received: folds={folds}, samples={len(xs)} (source), "
            f"{len(xt)} (target)"
        )
    value = float(
        _mmd(xs, xt, bandwidth_multipliers=tuple(bandwidth_multipliers))
    )
    error, chosen = _linear_domain_error(xs, xt, folds, rng, l2)
    domain = np.r_[np.zeros(len(xs), "int64"), np.ones(len(xt), "int64")]
    report = {
        "mmd": value,
        "proxy_a_distance": 2.0 * (1.0 - 2.0 * error),
        "domain_classifier_error": error,
        "domain_classifier_l2": float(np.median(chosen)),
        "domain_logme": transferability(np.concatenate([xs, xt]), domain),
        "n_source": int(n_source),
        "n_target": int(n_target),
        "feature_dim": int(xs.shape[1]),
    }
    if target_labels is not None:
        report["target_logme"] = transferability(xt, target_labels[pick_t])
    return report
