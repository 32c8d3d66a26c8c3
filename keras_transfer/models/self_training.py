"""FixMatch / AdaMatch self-training on target data for the domain models."""

import math

import keras
from keras import ops

from keras_transfer._validation import check_nonnegative
from keras_transfer.models._reporting import batch_size
from keras_transfer.models._reporting import loss_mean


def _check_threshold(confidence_threshold):
    if (
        isinstance(confidence_threshold, bool)
        or not isinstance(confidence_threshold, (int, float))
        or not math.isfinite(confidence_threshold)
        or not 0 < confidence_threshold <= 1
    ):
        raise ValueError(
            "`confidence_threshold` must be a number in (0, 1]. "
            f"Received: confidence_threshold={confidence_threshold!r}"
        )


def self_training_loss(
    source_logits,
    target_logits,
    strong_logits,
    confidence_threshold=0.9,
    relative_threshold=True,
    distribution_alignment=True,
):
    """AdaMatch's pseudo-label consistency loss on one batch.

    With `p_s = softmax(source_logits)` and `p_t = softmax(target_logits)`
    (predictions on the target images as given, the "weak" view), both
    constants for the gradient:

    1. distribution alignment (when `distribution_alignment`):
       `p_t <- normalize(p_t * mean_i p_s,i / mean_j p_t,j)`, which moves
       the target class marginal towards the source one;
    2. threshold `c = confidence_threshold * mean_i max_k p_s,ik` (when
       `relative_threshold`, AdaMatch) or `c = confidence_threshold`
       (FixMatch);
    3. pseudo-labels `yhat_j = argmax_k p_t,jk`, kept where
       `max_k p_t,jk >= c`;
    4. `L = 1/n sum_j [max_k p_t,jk >= c] CE(yhat_j, strong_logits_j)`,
       the cross-entropy of the strongly augmented view of the same target
       images, averaged over all `n` target examples (FixMatch's
       normalization).

    Args:
        source_logits: `(m, K)` class logits of the source batch.
        target_logits: `(n, K)` class logits of the target batch (weak view).
        strong_logits: `(n, K)` class logits of the same target images,
            strongly augmented.
        confidence_threshold: float in `(0, 1]`.
        relative_threshold: bool, scale the threshold by the mean source
            confidence (AdaMatch) or use it as is (FixMatch).
        distribution_alignment: bool.

    Returns:
        `(loss, kept)`: the scalar loss and the fraction of target examples
        that got a pseudo-label.

    References:
        [Sohn et al., 2020, FixMatch](https://arxiv.org/abs/2001.07685);
        [Berthelot et al., 2022, AdaMatch](https://arxiv.org/abs/2106.04732).
    """
    _check_threshold(confidence_threshold)
    p_s = ops.stop_gradient(ops.softmax(ops.cast(source_logits, "float32"), -1))
    p_t = ops.stop_gradient(ops.softmax(ops.cast(target_logits, "float32"), -1))
    if distribution_alignment:
        p_t = p_t * ops.mean(p_s, axis=0) / ops.maximum(
            ops.mean(p_t, axis=0), 1e-12
        )
        p_t = p_t / ops.sum(p_t, axis=-1, keepdims=True)
    threshold = confidence_threshold
    if relative_threshold:
        threshold = threshold * ops.mean(ops.max(p_s, axis=-1))
    mask = ops.cast(ops.max(p_t, axis=-1) >= threshold, "float32")
    labels = ops.argmax(p_t, axis=-1)
    per_example = keras.losses.sparse_categorical_crossentropy(
        labels, ops.cast(strong_logits, "float32"), from_logits=True
    )
    return ops.mean(mask * per_example), ops.mean(mask)


class SelfTrainingMixin:
    """Adds `consistency_weight * self_training_loss(...)` to a domain model.

    The model calls `_init_self_training` in its constructor and merges
    `_self_training_outputs` / `_self_training_term` / `_trackers` /
    `_metrics` into its alignment hooks. The strongly augmented target view
    is one more pass of `target_augmentation` -> feature extractor -> task
    head in `call`.
    """

    def _init_self_training(
        self,
        consistency_weight,
        confidence_threshold,
        relative_threshold,
        distribution_alignment,
        target_augmentation,
    ):
        self.consistency_weight = check_nonnegative(
            consistency_weight, "consistency_weight"
        )
        _check_threshold(confidence_threshold)
        for name, value in (
            ("relative_threshold", relative_threshold),
            ("distribution_alignment", distribution_alignment),
        ):
            if not isinstance(value, bool):
                raise ValueError(
                    f"`{name}` must be True or False. Received: {name}={value!r}"
                )
        if target_augmentation is not None and not isinstance(
            target_augmentation, keras.layers.Layer
        ):
            raise ValueError(
                "`target_augmentation` must be a Keras layer or model (the "
                "strong augmentation of the target images), or None. "
                f"Received: target_augmentation={target_augmentation!r}"
            )
        if self.consistency_weight > 0 and target_augmentation is None:
            raise ValueError(
                "`consistency_weight > 0` needs `target_augmentation`, the "
                "strong augmentation whose predictions are trained towards "
                "the pseudo-labels (e.g. a `keras.Sequential` of "
                "`RandomTranslation`, `RandomRotation`, `RandomZoom`). "
                f"Received: consistency_weight={consistency_weight!r}, "
                "target_augmentation=None"
            )
        self.confidence_threshold = float(confidence_threshold)
        self.relative_threshold = relative_threshold
        self.distribution_alignment = distribution_alignment
        self.target_augmentation = target_augmentation
        self.consistency_weight_variable = keras.Variable(
            self.consistency_weight,
            dtype="float32",
            trainable=False,
            name="consistency_weight",
        )
        self.consistency_loss_tracker = loss_mean("consistency_loss")
        self.pseudo_label_fraction = keras.metrics.Mean(
            name="pseudo_label_fraction"
        )

    @property
    def _self_training(self):
        return getattr(self, "target_augmentation", None) is not None

    def set_consistency_weight(self, value):
        """Changes `consistency_weight` (float >= 0), also during `fit`."""
        value = check_nonnegative(value, "consistency_weight")
        if value > 0 and not self._self_training:
            raise ValueError(
                "`consistency_weight > 0` needs the model to be built with "
                f"`target_augmentation`. Received: consistency_weight={value!r}"
            )
        if hasattr(self, "jax_state_sync"):
            self.jax_state_sync()
        self.consistency_weight_variable.assign(value)
        self.consistency_weight = value

    def _self_training_outputs(self, target, training):
        """`{"target_strong": logits}` of the augmented target, or `{}`."""
        if not self._self_training or target is None:
            return {}
        strong = self.target_augmentation(target, training=training)
        return {
            "target_strong": self.task_head(
                self.feature_extractor(strong, training=training),
                training=training,
            )
        }

    def _self_training_term(self, y_pred):
        """The weighted self-training term of a batch (0 when off)."""
        if not self._self_training:
            return ops.zeros((), "float32")
        value, kept = self_training_loss(
            y_pred["source"],
            y_pred["target"],
            y_pred["target_strong"],
            self.confidence_threshold,
            self.relative_threshold,
            self.distribution_alignment,
        )
        count = batch_size(y_pred["target"])
        self.consistency_loss_tracker.update_state(value, sample_weight=count)
        self.pseudo_label_fraction.update_state(kept, sample_weight=count)
        return ops.convert_to_tensor(self.consistency_weight_variable) * value

    def _self_training_trackers(self):
        if not self._self_training:
            return []
        return [self.consistency_loss_tracker, self.pseudo_label_fraction]

    def _self_training_metrics(self):
        if not self._self_training:
            return {}
        return {
            "consistency_loss": self.consistency_loss_tracker.result(),
            "pseudo_label_fraction": self.pseudo_label_fraction.result(),
        }

    def _self_training_config(self):
        return {
            "consistency_weight": float(
                ops.convert_to_numpy(self.consistency_weight_variable)
            ),
            "confidence_threshold": self.confidence_threshold,
            "relative_threshold": self.relative_threshold,
            "distribution_alignment": self.distribution_alignment,
            "target_augmentation": keras.saving.serialize_keras_object(
                self.target_augmentation
            ),
        }

    @classmethod
    def _deserialize(cls, config, keys):
        return super()._deserialize(config, tuple(keys) + ("target_augmentation",))
