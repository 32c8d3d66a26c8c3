"""Information maximization (entropy minus diversity) on unlabelled data."""

import keras
from keras import ops

from keras_transfer._validation import check_nonnegative


def information_maximization(logits, diversity_weight=1.0):
    """SHOT's information-maximization loss on a batch of logits.

    `L = 1/n sum_i H(p_i) - diversity_weight * H(mean_i p_i)`

    with `p_i = softmax(logits_i)` and `H(p) = -sum_k p_k log p_k` (nats).
    The first term (conditional entropy) makes each prediction confident;
    the second (the entropy of the batch's mean prediction, SHOT's
    diversity term `L_div = sum_k pbar_k log pbar_k` with the sign folded
    in) keeps the predictions spread over the classes, so the first cannot
    be met by sending every example to one class. Its minimum,
    `-diversity_weight * log K`, is reached by one-hot predictions that
    use all `K` classes equally.

    Args:
        logits: `(n, K)` class logits (any float dtype; computed in float32).
        diversity_weight: float >= 0; 1 in SHOT, 0 gives plain entropy
            minimisation (Grandvalet & Bengio, 2004).

    Returns:
        A float32 scalar.

    Reference:
        [Liang et al., 2020, Do We Really Need to Access the Source Data?
        (SHOT)](https://arxiv.org/abs/2002.08546), Eq. (2)-(3).
    """
    diversity_weight = check_nonnegative(diversity_weight, "diversity_weight")
    logits = ops.cast(logits, "float32")
    if len(logits.shape) != 2:
        raise ValueError(
            "`information_maximization` takes `(batch, classes)` logits. "
            f"Received shape: {tuple(logits.shape)}"
        )
    log_p = ops.log_softmax(logits, axis=-1)
    p = ops.exp(log_p)
    entropy = ops.mean(-ops.sum(p * log_p, axis=-1))
    p_mean = ops.mean(p, axis=0)
    diversity = -ops.sum(p_mean * ops.log(ops.maximum(p_mean, 1e-12)))
    return entropy - diversity_weight * diversity


@keras.saving.register_keras_serializable(package="keras_transfer")
class InformationMaximization(keras.losses.Loss):
    """`information_maximization` as a Keras loss on `(y_true, y_pred)`.

    `y_true` is ignored (the loss needs no labels; pass anything of batch
    size, e.g. zeros), `y_pred` holds `(n, K)` logits. The value is a batch
    statistic (the diversity term is not a sum over examples), so it takes
    no `sample_weight` and reduces only by Keras's default
    `"sum_over_batch_size"`.

    Args:
        diversity_weight: float >= 0, see `information_maximization`.
        name: the loss's name.
    """

    def __init__(self, diversity_weight=1.0, name="information_maximization",
                 **kwargs):
        reduction = kwargs.pop("reduction", "sum_over_batch_size")
        if reduction != "sum_over_batch_size":
            raise ValueError(
                "`InformationMaximization` is a batch statistic and reduces "
                "only by the batch (reduction='sum_over_batch_size'). "
                f"Received: reduction={reduction!r}"
            )
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.diversity_weight = check_nonnegative(
            diversity_weight, "diversity_weight"
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                "`InformationMaximization` is a batch statistic and takes "
                "no `sample_weight`. Received a sample_weight."
            )
        return super().__call__(y_true, y_pred)

    def call(self, y_true, y_pred):
        value = information_maximization(y_pred, self.diversity_weight)
        # One value per example whose batch mean is the statistic.
        return ops.broadcast_to(value, ops.shape(y_pred)[:1])

    def get_config(self):
        return {"name": self.name, "diversity_weight": self.diversity_weight}
