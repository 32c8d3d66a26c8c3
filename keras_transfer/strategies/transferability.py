"""How well a model's features (or predictions) suit a target task, before training."""

import numpy as np

_METHODS = ("logme", "leep", "h_score")


def _as_matrix(x, name, min_samples=2):
    x = np.asarray(x)
    if x.dtype == object or not (
        np.issubdtype(x.dtype, np.number) or x.dtype == bool
    ):
        raise ValueError(
            f"`{name}` must be a numeric array. Received: {name} of dtype "
            f"{x.dtype}"
        )
    if x.ndim < 2 or len(x) < min_samples:
        raise ValueError(
            f"`{name}` must have shape (n_samples, ...) with at least "
            f"{min_samples} samples. Received: {name}.shape={x.shape}"
        )
    x = x.reshape(len(x), -1).astype("float64")
    if not np.isfinite(x).all():
        raise ValueError(
            f"`{name}` contains NaN or inf values. Received: {name} with "
            f"{int((~np.isfinite(x)).sum())} such values"
        )
    return x


def _as_class_labels(labels, n, name="labels"):
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"`{name}` must be integer class labels of shape ({n},), one per "
            f"row of `features`. Received: {name}.shape={y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(
            np.isfinite(y) & (y == np.round(y))
        ):
            raise ValueError(
                f"`{name}` must hold integer class ids (one-hot labels: pass "
                f"`argmax(-1)`). Received: {name} of dtype {y.dtype}"
            )
        y = y.astype("int64")
    if (y < 0).any():
        raise ValueError(
            f"`{name}` must be non-negative class ids. Received: min "
            f"{int(y.min())}"
        )
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(
            f"`{name}` must contain at least 2 classes. Received: only class "
            f"{classes.tolist()}"
        )
    return classes, index


def _logme_evidence(s2, projections, residual, n, d, tol, max_iter):
    """Maximised log evidence per sample, one value per target column.

    `s2` are the squared singular values of F (length r), `projections` the
    coordinates `U^T y` of each target in F's left singular basis (r, k),
    `residual` the squared norm of each target outside F's column space (k,).
    """
    k = projections.shape[1]
    x2 = projections**2
    alpha = np.ones(k)
    beta = np.ones(k)
    for _ in range(max_iter):
        denom = alpha[None] + beta[None] * s2[:, None]  # (r, k)
        gamma = (beta[None] * s2[:, None] / denom).sum(0)
        m2 = (beta[None] ** 2 * s2[:, None] * x2 / denom**2).sum(0)
        res = (alpha[None] ** 2 * x2 / denom**2).sum(0) + residual
        # Tiny floors keep a target that F fits exactly (or not at all)
        # finite; they never bind on real data.
        new_alpha = gamma / np.maximum(m2, 1e-300)
        new_beta = (n - gamma) / np.maximum(res, 1e-300)
        done = np.all(
            np.abs(new_alpha / new_beta - alpha / beta)
            <= tol * np.abs(alpha / beta)
        )
        alpha, beta = new_alpha, new_beta
        if done:
            break
    denom = alpha[None] + beta[None] * s2[:, None]
    m2 = (beta[None] ** 2 * s2[:, None] * x2 / denom**2).sum(0)
    res = (alpha[None] ** 2 * x2 / denom**2).sum(0) + residual
    log_det = np.log(denom).sum(0) + (d - len(s2)) * np.log(alpha)
    evidence = (
        0.5 * n * np.log(beta)
        + 0.5 * d * np.log(alpha)
        - 0.5 * n * np.log(2 * np.pi)
        - 0.5 * beta * res
        - 0.5 * alpha * m2
        - 0.5 * log_det
    )
    return evidence / n


def _logme(features, labels, tol, max_iter):
    n, d = features.shape
    if np.ndim(labels) == 2 and np.shape(labels)[1] > 1 and np.issubdtype(
        np.asarray(labels).dtype, np.floating
    ):
        targets = np.asarray(labels, "float64")
        if len(targets) != n or not np.isfinite(targets).all():
            raise ValueError(
                "Regression `labels` must be finite, shape (n_samples, "
                f"n_targets) with n_samples={n}. Received: "
                f"labels.shape={targets.shape}"
            )
    else:
        classes, index = _as_class_labels(labels, n)
        targets = np.zeros((n, len(classes)))
        targets[np.arange(n), index] = 1.0
    # One eigendecomposition of the smaller Gram matrix (F F^T or F^T F,
    # i.e. F's thin SVD) serves every target column and every iteration.
    if n <= d:
        s2, u = np.linalg.eigh(features @ features.T)
        keep = s2 > s2.max() * max(n, d) * np.finfo("float64").eps
        s2, projections = s2[keep], u[:, keep].T @ targets
    else:
        s2, v = np.linalg.eigh(features.T @ features)
        keep = s2 > s2.max() * max(n, d) * np.finfo("float64").eps
        s2 = s2[keep]
        # U^T y = S^-1 V^T F^T y for the left singular vectors U = F V S^-1.
        projections = (v[:, keep].T @ (features.T @ targets)) / np.sqrt(s2)[:, None]
    residual = np.maximum(
        (targets**2).sum(0) - (projections**2).sum(0), 0.0
    )
    evidence = _logme_evidence(s2, projections, residual, n, d, tol, max_iter)
    return float(evidence.mean())


def _leep(probabilities, labels):
    n, z = probabilities.shape
    if (probabilities < 0).any() or not np.allclose(
        probabilities.sum(1), 1.0, atol=1e-3
    ):
        raise ValueError(
            "`method='leep'` takes the source model's class probabilities as "
            "`features` (non-negative rows summing to 1, e.g. "
            "`keras.ops.softmax(logits)`). Received rows summing to "
            f"{probabilities.sum(1).min():.4g}..{probabilities.sum(1).max():.4g}"
            f" with minimum entry {probabilities.min():.4g}"
        )
    _, index = _as_class_labels(labels, n)
    k = index.max() + 1
    joint = np.zeros((k, z))
    np.add.at(joint, index, probabilities)
    joint /= n
    marginal = joint.sum(0)
    conditional = joint / np.maximum(marginal, 1e-300)[None]  # P(y | z)
    eeg = (probabilities * conditional[index]).sum(1)
    return float(np.mean(np.log(eeg)))


def _h_score(features, labels):
    n, _ = features.shape
    _, index = _as_class_labels(labels, n)
    centred = features - features.mean(0)
    cov_f = centred.T @ centred / n
    means = np.zeros((index.max() + 1, features.shape[1]))
    np.add.at(means, index, centred)
    means /= np.bincount(index)[:, None]
    g = means[index]
    cov_g = g.T @ g / n
    return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))


def transferability(features, labels, method="logme", tol=1e-7, max_iter=1000):
    """Scores how well `features` predict `labels` without training a model.

    Higher is better for every method; compare scores of several candidate
    models (or layers) on the *same* target data, not across datasets.

    - `"logme"` (You et al., 2021): the maximum, over the prior precision
      `alpha` and noise precision `beta`, of the log marginal likelihood
      (evidence) of a Bayesian linear model `y = F w + noise`,
      `w ~ N(0, alpha^-1 I)`, noise `~ N(0, beta^-1)`, divided by `n`:

      `L = n/2 log beta + D/2 log alpha - n/2 log 2 pi - beta/2 |F m - y|^2
      - alpha/2 |m|^2 - 1/2 log det(alpha I + beta F^T F)`,
      with `m = beta (alpha I + beta F^T F)^-1 F^T y`.

      It is maximised with the paper's fixed-point updates
      `gamma = sum_i beta s_i / (alpha + beta s_i)`, `alpha = gamma / |m|^2`,
      `beta = (n - gamma) / |F m - y|^2` (`s_i` the eigenvalues of
      `F^T F`), iterated until `alpha / beta` changes by less than `tol`
      relative (the paper's code stops at 1% or 11 steps). For class labels
      `y` runs over the one-hot columns and the scores are averaged; for
      float labels of shape `(n, k)` over the `k` regression targets. The
      features are used as given (no centring, no bias column), as in the
      paper. One eigendecomposition of the smaller Gram matrix
      (`O(n D min(n, D))`) serves all columns and iterations; each iteration costs `O(min(n, D) k)`.
    - `"leep"` (Nguyen et al., 2020): `features` are the *source* model's
      class probabilities `theta(x)` over its `Z` source classes (rows sum
      to 1). With the empirical joint `P(y, z) = 1/n sum_i theta(x_i)_z
      [y_i = y]` and `P(y | z) = P(y, z) / P(z)`,
      `LEEP = 1/n sum_i log sum_z P(y_i | z) theta(x_i)_z` (<= 0).
    - `"h_score"` (Bao et al., 2019):
      `H = tr(cov(f)^+ cov(E[f | y]))` with population covariances
      (divided by `n`) and the pseudo-inverse `^+`, so singular feature
      covariances (e.g. `D > n`) are allowed; it is noisy then.

    Args:
        features: array `(n, ...)` (flattened to `(n, D)`): the features of
            the `n` target examples from the candidate model, or for
            `"leep"` its source-class probabilities `(n, Z)`.
        labels: integer target class ids, shape `(n,)`, at least 2 classes;
            for `"logme"` also float regression targets `(n, k)`, `k >= 2`.
        method: `"logme"`, `"leep"` or `"h_score"`.
        tol: float > 0, relative tolerance of LogME's fixed point.
        max_iter: int > 0, cap on LogME's fixed-point iterations.

    Returns:
        A Python float (LogME: log evidence per example, nats; LEEP: mean log
        likelihood, nats, <= 0; H-score: a non-negative number at most the
        number of classes minus one).

    Raises:
        ValueError: unknown `method`, fewer than 2 samples or classes,
            `labels` not one per row, non-integer class labels, NaN/inf, or
            (LEEP) rows that are not probabilities.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.strategies import transferability
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, 300)
    >>> good = np.eye(3)[labels] + 0.1 * rng.normal(size=(300, 3))
    >>> bad = rng.normal(size=(300, 3))
    >>> transferability(good, labels) > transferability(bad, labels)
    True

    Reference:
        [You et al., 2021, LogME](https://arxiv.org/abs/2102.11005),
        [Nguyen et al., 2020, LEEP](https://arxiv.org/abs/2002.12462),
        [Bao et al., 2019, H-score](https://ieeexplore.ieee.org/document/8803726).
    """
    if method not in _METHODS:
        raise ValueError(
            f"`method` must be one of {_METHODS}. Received: method={method!r}"
        )
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"`tol` must be a positive number. Received: tol={tol!r}")
    if (
        isinstance(max_iter, bool)
        or not isinstance(max_iter, (int, np.integer))
        or max_iter < 1
    ):
        raise ValueError(
            "`max_iter` must be a positive integer. "
            f"Received: max_iter={max_iter!r}"
        )
    features = _as_matrix(features, "features")
    if method == "logme":
        return _logme(features, labels, float(tol), int(max_iter))
    if method == "leep":
        return _leep(features, labels)
    return _h_score(features, labels)
