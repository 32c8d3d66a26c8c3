"""Did transfer help? Compare with a from-scratch baseline on held-out data."""

import numpy as np

from keras_transfer._validation import check_nonnegative


def _accuracy(y_true, y_pred):
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true).reshape(-1)
    if y_pred.ndim == 2 and y_pred.shape[-1] > 1:
        labels = y_pred.argmax(-1)
    else:
        # One score per sample: a binary classifier, logit or probability.
        scores = y_pred.reshape(-1)
        threshold = 0.5 if scores.min() >= 0 and scores.max() <= 1 else 0.0
        labels = (scores > threshold).astype(y_true.dtype)
    return float((labels == y_true).mean())


def check_negative_transfer(
    transferred, baseline, x_val, y_val, metric="accuracy", margin=0.0,
    batch_size=256,
):
    """Compare a transferred model with a from-scratch baseline.

    Both models predict `x_val`; `metric(y_val, predictions)` (higher is
    better) scores them. Transfer *hurt* when
    `score(transferred) < score(baseline) - margin`; the report says so in
    plain words. Use a validation split of the target task, never the test
    set, if the answer decides what you ship.

    Args:
        transferred: the Keras model built on transferred weights.
        baseline: the same task trained from scratch (same data, budget).
        x_val: validation inputs of the target task.
        y_val: validation labels.
        metric: `"accuracy"` (argmax of class scores, or a 0.5 / 0
            threshold for one probability / logit per sample) or a callable
            `metric(y_true, y_pred) -> float`, higher is better.
        margin: float >= 0, how much worse the transferred model may be
            before it counts as negative transfer (e.g. the noise level of
            the validation estimate).
        batch_size: batch size for `predict`.

    Returns:
        A dict `{"transferred": float, "baseline": float, "difference": float,
        "negative_transfer": bool, "message": str}` with
        `difference = transferred - baseline`.

    Example:

    ```python
    report = keras_transfer.strategies.check_negative_transfer(
        fine_tuned, scratch, x_val, y_val)
    print(report["message"])
    ```

    Reference:
        [Wang et al., 2019](https://arxiv.org/abs/1811.08083),
        "Characterizing and Avoiding Negative Transfer".
    """
    if metric == "accuracy":
        metric_fn = _accuracy
    elif callable(metric):
        metric_fn = metric
    else:
        raise ValueError(
            "`metric` must be 'accuracy' or a callable "
            f"metric(y_true, y_pred). Received: metric={metric!r}"
        )
    margin = check_nonnegative(margin, "margin")
    if len(x_val) != len(y_val) or len(y_val) == 0:
        raise ValueError(
            "`x_val` and `y_val` must be non-empty and of the same length. "
            f"Received: len(x_val)={len(x_val)}, len(y_val)={len(y_val)}"
        )
    scores = {}
    for name, model in (("transferred", transferred), ("baseline", baseline)):
        pred = model.predict(x_val, batch_size=batch_size, verbose=0)
        scores[name] = float(metric_fn(y_val, pred))
    difference = scores["transferred"] - scores["baseline"]
    hurt = difference < -margin
    if hurt:
        message = (
            f"Negative transfer: the transferred model scores "
            f"{scores['transferred']:.4f} against {scores['baseline']:.4f} "
            f"for the from-scratch baseline ({difference:+.4f}). Transfer "
            "hurt; try transferring fewer layers, regularising toward the "
            "pretrained weights, or training from scratch."
        )
    else:
        message = (
            f"No negative transfer: the transferred model scores "
            f"{scores['transferred']:.4f} against {scores['baseline']:.4f} "
            f"for the from-scratch baseline ({difference:+.4f})."
        )
    return {**scores, "difference": difference, "negative_transfer": hurt, "message": message}
