"""Choosing a model, epoch or weight without target labels."""

import warnings

import numpy as np

from keras_transfer.strategies.transferability import _as_matrix

_METHODS = ("snd", "dev", "reverse_validation")
# The data each score needs besides `target`.
_NEEDS = {
    "dev": ("source_validation", "source"),
    "reverse_validation": ("source_validation",),
    "source_val_accuracy": ("source_validation",),
}


def _softmax(logits):
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def soft_neighborhood_density(predictions, temperature=0.05, from_logits=True):
    """SND: the entropy of each target sample's soft neighbourhood. Higher is better.

    With `p_i` the class probabilities of target sample `i`, L2-normalised,
    `s_ij = p_i . p_j / temperature` for `j != i`, and
    `P_ij = exp(s_ij) / sum_{k != i} exp(s_ik)`:

    `SND = -1/n sum_i sum_{j != i} P_ij log P_ij`.

    A model whose target predictions form dense clusters (each sample has
    many near neighbours in prediction space) scores high. A model that
    puts every target sample into one class also scores high, so SND is
    meant to compare reasonable candidates of one training run (epochs,
    loss weights), as in the paper. The self-similarity is
    excluded exactly (the paper's code sets it to `-1 / temperature`).

    Args:
        predictions: `(n, classes)` target logits (or probabilities with
            `from_logits=False`), `n >= 3`.
        temperature: float > 0; the paper uses 0.05.
        from_logits: whether `predictions` are logits (softmax applied).

    Returns:
        A float, in nats, between 0 and `log(n - 1)`.

    Reference:
        [Saito et al., 2021, Tune it the Right Way](https://arxiv.org/abs/2108.10860).
    """
    if isinstance(temperature, bool) or not isinstance(
        temperature, (int, float)
    ) or not temperature > 0:
        raise ValueError(
            "`temperature` must be a positive number. "
            f"Received: temperature={temperature!r}"
        )
    p = _as_matrix(predictions, "predictions", min_samples=3)
    if from_logits:
        p = _softmax(p)
    elif (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise ValueError(
            "With `from_logits=False`, `predictions` must be probabilities "
            "(non-negative rows summing to 1). Pass logits with "
            "`from_logits=True`."
        )
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    s = p @ p.T / float(temperature)
    np.fill_diagonal(s, -np.inf)
    s = s - s.max(1, keepdims=True)
    e = np.exp(s)
    q = e / e.sum(1, keepdims=True)
    log_q = np.where(q > 0, np.log(np.where(q > 0, q, 1.0)), 0.0)
    return float(-(q * log_q).sum(1).mean())


def dev_risk(losses, weights):
    """Deep Embedded Validation risk with its control variate. Lower is better.

    With per-sample source validation losses `l_i` and importance weights
    `w_i = p_target(x_i) / p_source(x_i)`, `L_i = w_i l_i`:

    `eta = -Cov(L, w) / Var(w)`,
    `R_DEV = mean(L) + eta mean(w) - eta`

    (sample covariance and variance with `ddof=1`, as in the paper's code).
    Since `E[w] = 1`, the control variate `eta (mean(w) - 1)` removes part
    of the variance of the importance-weighted risk `mean(L)`. When all
    weights are equal (`Var(w) = 0`), `eta = 0` and `R_DEV = mean(L)`.

    Args:
        losses: `(n,)` per-sample losses (e.g. cross-entropy or 0-1 error) on
            labelled *source* validation data.
        weights: `(n,)` non-negative importance weights of those samples
            (`importance_weights`).

    Returns:
        A float, the estimated target risk.

    Warns:
        UserWarning: when the weights' effective sample size
            `(sum w)^2 / sum w^2` is below max(min(10, n / 2), 5 % of n):
            the estimate then rests on a few samples (domains nearly
            separable).

    Reference:
        [You et al., 2019, Towards Accurate Model Selection in Deep
        Unsupervised Domain Adaptation](https://proceedings.mlr.press/v97/you19a.html).
    """
    losses = np.asarray(losses, "float64").reshape(-1)
    weights = np.asarray(weights, "float64").reshape(-1)
    if len(losses) != len(weights) or len(losses) < 2:
        raise ValueError(
            "`losses` and `weights` must be 1-D with the same length >= 2. "
            f"Received: losses.shape={losses.shape}, weights.shape={weights.shape}"
        )
    if not (np.isfinite(losses).all() and np.isfinite(weights).all()):
        raise ValueError("`losses` and `weights` must be finite.")
    if (weights < 0).any():
        raise ValueError(
            f"`weights` must be non-negative. Received: min {weights.min()!r}"
        )
    total = weights.sum()
    ess = total**2 / max(float(np.sum(weights**2)), 1e-300)
    n = len(weights)
    if total > 0 and ess < max(min(10.0, n / 2), 0.05 * n):
        warnings.warn(
            f"DEV: the importance weights rest on {ess:.1f} effective samples "
            f"of {len(weights)} (`(sum w)^2 / sum w^2`): the domains are "
            "almost separable in these features, so the risk estimate is "
            "the loss of a handful of images and close to noise. Prefer "
            "reverse validation here, or more source validation data.",
            stacklevel=2,
        )
    weighted = weights * losses
    var_w = np.var(weights, ddof=1)
    if var_w == 0:
        return float(weighted.mean())
    eta = -np.cov(weighted, weights, ddof=1)[0, 1] / var_w
    return float(weighted.mean() + eta * weights.mean() - eta)


def _logistic_fit(x, y, l2, max_iter=50):
    """L2-regularised logistic regression by Newton's method (bias free)."""
    a = np.c_[x, np.ones(len(x))]
    w = np.zeros(a.shape[1])
    penalty = l2 * len(a) * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -50, 50)))
        grad = a.T @ (p - y) + penalty @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a + penalty
        step = np.linalg.solve(hess + 1e-10 * np.eye(len(w)), grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def importance_weights(source_features, target_features, validation_features, l2=1e-3):
    """Density ratios `p_target(x) / p_source(x)` of source validation samples.

    A logistic-regression domain classifier (L2 penalty `l2` per sample,
    standardized features, Newton's method) is trained to tell
    `source_features` (label 0) from `target_features` (label 1); with
    `d(x)` its target probability, the weight of each validation sample is

    `w(x) = (n_source / n_target) d(x) / (1 - d(x))`,

    the density ratio when the classifier is calibrated. DEV (You et al.,
    2019) uses a small MLP discriminator on the model's features; a linear
    one on the same features is used here (exact when the log density ratio
    is linear in the features, e.g. two Gaussians with one covariance).
    `d(x)` is kept within `[1e-6, 1 - 1e-6]` so a weight stays finite.

    Args:
        source_features: `(n_source, ...)` features of source *training* data.
        target_features: `(n_target, ...)` features of unlabelled target data.
        validation_features: `(n_val, ...)` features of the labelled source
            validation data to weight.
        l2: float > 0, ridge penalty per sample.

    Returns:
        `(n_val,)` float64 weights.

    Reference:
        [You et al., 2019](https://proceedings.mlr.press/v97/you19a.html),
        [Sugiyama et al., 2007](https://jmlr.org/papers/v8/sugiyama07a.html).
    """
    xs = _as_matrix(source_features, "source_features")
    xt = _as_matrix(target_features, "target_features")
    xv = _as_matrix(validation_features, "validation_features", min_samples=1)
    if not (xs.shape[1] == xt.shape[1] == xv.shape[1]):
        raise ValueError(
            "`source_features`, `target_features` and `validation_features` "
            "must have the same feature width. Received: "
            f"{xs.shape[1]}, {xt.shape[1]}, {xv.shape[1]}"
        )
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 > 0:
        raise ValueError(f"`l2` must be a positive number. Received: l2={l2!r}")
    x = np.concatenate([xs, xt])
    mean, std = x.mean(0), x.std(0) + 1e-6
    w = _logistic_fit(
        (x - mean) / std, np.r_[np.zeros(len(xs)), np.ones(len(xt))], float(l2)
    )
    logit = np.c_[(xv - mean) / std, np.ones(len(xv))] @ w
    d = np.clip(1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50))), 1e-6, 1 - 1e-6)
    return len(xs) / len(xt) * d / (1.0 - d)


def _ridge_classifier(x, labels, classes, l2):
    mean, std = x.mean(0), x.std(0) + 1e-6
    a = np.c_[(x - mean) / std, np.ones(len(x))]
    targets = np.eye(classes)[labels]
    penalty = l2 * len(a) * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0
    w = np.linalg.solve(a.T @ a + penalty, a.T @ targets)
    return lambda z: (np.c_[(z - mean) / std, np.ones(len(z))] @ w).argmax(1)


def reverse_validation_accuracy(
    target_features, target_predictions, validation_features, validation_labels,
    l2=1e-3,
):
    """Reverse validation: accuracy on source of a classifier fit to target pseudo-labels.

    The candidate's predictions on the unlabelled target data become
    pseudo-labels `argmax target_predictions`; a *reverse* classifier is
    trained on `(target_features, pseudo-labels)` and scored on the labelled
    source validation data. A candidate whose target labelling is
    consistent with the source task scores high. Higher is better.

    The reverse classifier here is one-vs-rest ridge regression on
    standardized features with an unpenalised bias (closed form, penalty
    `l2` per sample), trained on the candidate's own features: cheap, and
    without the reverse *adaptation* of Ganin et al. (2016), who train the
    reverse model with DANN (pass your own reverse model's accuracy to
    `select_model(scores=...)` for that).

    Args:
        target_features: `(n_target, ...)` candidate features of target data.
        target_predictions: `(n_target, classes)` candidate logits or
            probabilities on the same target data.
        validation_features: `(n_val, ...)` candidate features of labelled
            source validation data.
        validation_labels: `(n_val,)` integer source labels.
        l2: float > 0, ridge penalty per sample.

    Returns:
        A float in `[0, 1]`.

    Reference:
        [Zhong et al., 2010](https://link.springer.com/chapter/10.1007/978-3-642-15939-8_35),
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html), sec. 5.1.2.
    """
    xt = _as_matrix(target_features, "target_features")
    pred = _as_matrix(target_predictions, "target_predictions")
    xv = _as_matrix(validation_features, "validation_features", min_samples=1)
    yv = np.asarray(validation_labels).reshape(-1)
    if len(pred) != len(xt):
        raise ValueError(
            "`target_predictions` must have one row per target sample. "
            f"Received: {len(pred)} rows for {len(xt)} samples"
        )
    if len(yv) != len(xv) or not np.issubdtype(yv.dtype, np.integer):
        raise ValueError(
            "`validation_labels` must be integer class ids, one per "
            f"validation sample. Received: shape {yv.shape}, dtype {yv.dtype}"
        )
    if xt.shape[1] != xv.shape[1]:
        raise ValueError(
            "`target_features` and `validation_features` must have the same "
            f"width. Received: {xt.shape[1]} and {xv.shape[1]}"
        )
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 > 0:
        raise ValueError(f"`l2` must be a positive number. Received: l2={l2!r}")
    classes = max(pred.shape[1], int(yv.max()) + 1)
    predict = _ridge_classifier(xt, pred.argmax(1), classes, float(l2))
    return float(np.mean(predict(xv) == yv))


def _features_of(model, features):
    if features is not None:
        if hasattr(features, "predict"):  # one fixed Keras model
            return features
        return features(model) if callable(features) else features
    extractor = getattr(model, "feature_extractor", None)
    if extractor is None:
        raise ValueError(
            f"This score needs the candidate's features, but model "
            f"'{getattr(model, 'name', model)}' has no `feature_extractor`. "
            "Pass `features=lambda model: <a Keras model mapping inputs to "
            "features>`."
        )
    return extractor


def select_model(
    candidates,
    method="snd",
    target=None,
    source_validation=None,
    source=None,
    features=None,
    from_logits=True,
    temperature=0.05,
    batch_size=256,
):
    """Scores candidate models without target labels and picks the best.

    The candidates are models of one task (e.g. checkpoints of one run at
    each epoch, or runs with different alignment weights); each is scored
    with a label-free criterion and the best is returned:

    - `"snd"` (higher is better): `soft_neighborhood_density` of the
      candidate's target predictions. Needs `target`.
    - `"dev"` (lower is better): `dev_risk` of the per-sample cross-entropy
      on labelled source validation data, weighted by `importance_weights`
      from a domain classifier on the candidate's features of `source`
      (training inputs) vs `target`. Needs `target`, `source_validation`
      and `source`.
    - `"reverse_validation"` (higher is better):
      `reverse_validation_accuracy` with the candidate's features and
      target predictions. Needs `target` and `source_validation`.

    Features are `features(model)` (a callable returning a Keras model, or
    one fixed Keras model) or the candidate's `feature_extractor` (the
    package's domain models have one).

    Args:
        candidates: a dict `{name: keras.Model}` or a list of models (named
            by index). Each maps inputs to class logits (or probabilities
            with `from_logits=False`).
        method: `"snd"`, `"dev"` or `"reverse_validation"`.
        target: unlabelled target inputs `(n, ...)`; never labels.
        source_validation: `(x, y)` labelled source data not used to train.
        source: source training inputs (for `"dev"`'s domain classifier).
        features: see above.
        from_logits: whether the candidates output logits.
        temperature: SND temperature.
        batch_size: for `predict`.

    Returns:
        A dict `{"method", "scores": {name: float}, "best": name,
        "higher_is_better": bool}`.

    Raises:
        ValueError: unknown method, no candidates, the data a method needs
            missing, or labels passed as `target` (a tuple).

    Example:

    ```python
    picked = keras_transfer.strategies.select_model(
        {"epoch 5": m5, "epoch 10": m10}, method="snd", target=x_usps)
    picked["best"], picked["scores"]
    ```

    Reference:
        [Saito et al., 2021](https://arxiv.org/abs/2108.10860),
        [You et al., 2019](https://proceedings.mlr.press/v97/you19a.html),
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html).
    """
    if method not in _METHODS:
        raise ValueError(
            f"`method` must be one of {_METHODS}. Received: method={method!r}"
        )
    if isinstance(candidates, dict):
        named = dict(candidates)
    elif isinstance(candidates, (list, tuple)):
        named = {str(i): m for i, m in enumerate(candidates)}
    else:
        raise ValueError(
            "`candidates` must be a dict of name -> model or a list of "
            f"models. Received: candidates={candidates!r}"
        )
    if not named:
        raise ValueError("`candidates` is empty: pass at least one model.")
    validation = _check_selection_data(
        (method,), target, source_validation, source
    )
    scores, classes = {}, {}
    for name, model in named.items():
        scores[name] = _score_model(
            model, (method,), target, validation, source, features,
            from_logits, temperature, batch_size, classes=classes, name=name,
        )[method]
    if len(set(classes.values())) > 1:
        raise ValueError(
            "The candidates must predict the same classes to be compared. "
            f"Received output widths: {classes}"
        )
    higher = method != "dev"
    best = (max if higher else min)(scores, key=scores.get)
    return {"method": method, "scores": scores, "best": best, "higher_is_better": higher}


def _check_selection_data(
    methods, target, source_validation, source, argument="method"
):
    """Checks the data the scores `methods` need; returns `(x_val, y_val)` or None.

    `argument` names the caller's argument that lists `methods` (messages)."""

    def asked(method):
        if argument == "method":
            return f"`method={method!r}`"
        return f"The score {method!r} (in `{argument}`)"

    if target is None:
        raise ValueError(
            f"{asked(methods[0])} needs `target`: unlabelled target inputs."
        )
    if isinstance(target, (tuple, list)):
        raise ValueError(
            "`target` takes unlabelled inputs only (an array); labels must "
            f"not be used for selection. Received: a {type(target).__name__} "
            f"of {len(target)} items"
        )
    given = {"source_validation": source_validation, "source": source}
    for method in methods:
        for name in _NEEDS.get(method, ()):
            if given[name] is None:
                raise ValueError(
                    f"{asked(method)} needs `{name}` "
                    + ("as `(x, y)` labelled source data not used for "
                       "training." if name == "source_validation" else
                       "(source training inputs for the domain classifier).")
                )
    if source_validation is None:
        return None
    if not isinstance(source_validation, (tuple, list)) or len(source_validation) != 2:
        raise ValueError(
            "`source_validation` must be a pair `(x, y)`. Received: "
            f"{type(source_validation).__name__}"
        )
    xv, yv = source_validation
    yv = np.asarray(yv).reshape(-1)
    if (
        len(yv) != len(xv)
        or not np.issubdtype(yv.dtype, np.integer)
        or (len(yv) and yv.min() < 0)
    ):
        raise ValueError(
            "`source_validation` labels must be non-negative integer class "
            f"ids, one per input. Received: {len(xv)} inputs, labels of shape "
            f"{yv.shape}, dtype {yv.dtype}"
            + (f", min {yv.min()}" if len(yv) else "")
        )
    return xv, yv


def _check_output_kind(model, predictions, from_logits):
    """Refuses probabilities read as logits (a softmax applied twice would
    change every score without an error; the reverse already raises)."""
    p = predictions.reshape(len(predictions), -1)
    if from_logits and len(p) and p.shape[1] > 1 and (p >= 0).all() and (
        np.allclose(p.sum(1), 1.0, atol=1e-3)
    ):
        raise ValueError(
            f"Model '{getattr(model, 'name', model)}' outputs probabilities "
            "(non-negative rows summing to 1), but `from_logits=True` would "
            "apply a softmax to them again. Pass `from_logits=False`."
        )


def _score_model(
    model, methods, target, validation, source, features, from_logits,
    temperature, batch_size, classes=None, name=None,
):
    """Scores one model with each of `methods` (data already checked).

    Besides `_METHODS`, `"source_val_accuracy"` is the accuracy on the labelled
    source validation data."""
    scores = {}
    pt = model.predict(target, batch_size=batch_size, verbose=0)
    _check_output_kind(model, np.asarray(pt), from_logits)
    width = int(np.prod(np.shape(pt)[1:]))
    if classes is not None:
        classes[name] = width
    if validation is not None and len(validation[1]) and (
        validation[1].max() >= width
    ):
        raise ValueError(
            "`source_validation` labels must be class ids in "
            f"[0, {width}) for model '{getattr(model, 'name', model)}' with "
            f"{width} outputs. Received: labels in "
            f"[{validation[1].min()}, {validation[1].max()}]"
        )
    if "snd" in methods:
        scores["snd"] = soft_neighborhood_density(
            pt, temperature=temperature, from_logits=from_logits
        )
    if validation is not None:
        xv, yv = validation
    if "source_val_accuracy" in methods or "dev" in methods:
        pv = np.asarray(model.predict(xv, batch_size=batch_size, verbose=0), "float64")
        pv = pv.reshape(len(pv), -1)
        if "source_val_accuracy" in methods:
            scores["source_val_accuracy"] = float(np.mean(pv.argmax(1) == yv))
    if "reverse_validation" in methods or "dev" in methods:
        extractor = _features_of(model, features)
        ft = extractor.predict(target, batch_size=batch_size, verbose=0)
        fv = extractor.predict(xv, batch_size=batch_size, verbose=0)
    if "reverse_validation" in methods:
        scores["reverse_validation"] = reverse_validation_accuracy(ft, pt, fv, yv)
    if "dev" in methods:
        fs = extractor.predict(source, batch_size=batch_size, verbose=0)
        prob = _softmax(pv) if from_logits else pv
        if yv.max() >= prob.shape[1] or yv.min() < 0:
            raise ValueError(
                "`source_validation` labels must be class ids in "
                f"[0, {prob.shape[1]}) for a model with {prob.shape[1]} "
                f"outputs. Received: labels in [{yv.min()}, {yv.max()}]"
            )
        losses = -np.log(np.clip(prob[np.arange(len(yv)), yv], 1e-12, None))
        scores["dev"] = dev_risk(losses, importance_weights(fs, ft, fv))
    return scores
