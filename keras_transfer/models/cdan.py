"""Conditional domain adversarial network (CDAN, CDAN+E) as a Keras model."""

import math

import keras
from keras import ops

from keras_transfer._validation import check_int
from keras_transfer._validation import check_nonnegative
from keras_transfer.losses.information_maximization import (
    information_maximization,
)
from keras_transfer.models._reporting import batch_size
from keras_transfer.models._reporting import loss_mean
from keras_transfer.models.self_training import SelfTrainingMixin
from keras_transfer.models.dann import DomainAdversarialModel


class _RandomizedMultilinear(keras.layers.Layer):
    """`(f R_f) * (g R_g) / sqrt(units)` with fixed Gaussian `R_f`, `R_g`."""

    def __init__(self, units, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.seed = seed

    def build(self, features_shape, predictions_shape):
        self.feature_projection = self.add_weight(
            name="feature_projection",
            shape=(features_shape[-1], self.units),
            initializer=keras.initializers.RandomNormal(seed=self.seed),
            trainable=False,
        )
        self.prediction_projection = self.add_weight(
            name="prediction_projection",
            shape=(predictions_shape[-1], self.units),
            initializer=keras.initializers.RandomNormal(
                seed=None if self.seed is None else self.seed + 1
            ),
            trainable=False,
        )

    def call(self, features, predictions):
        f = ops.matmul(features, ops.cast(self.feature_projection, features.dtype))
        g = ops.matmul(
            predictions, ops.cast(self.prediction_projection, predictions.dtype)
        )
        return f * g / math.sqrt(self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_transfer")
class CDANModel(SelfTrainingMixin, DomainAdversarialModel):
    """CDAN / CDAN+E: a domain head conditioned on the class predictions.

    As `DomainAdversarialModel` (DANN), but the domain head sees the
    multilinear map `T(f, g) = f (x) g` (the flattened outer product, width
    `features * classes`) of the features `f` and the task head's softmax
    `g`, so the features are aligned per class rather than as a whole. With
    `randomized_dim=r` it sees the randomized map
    `(f R_f) * (g R_g) / sqrt(r)` with fixed Gaussian `R_f`, `R_g` (width
    `r`) instead, for wide features. As in the paper's code, `g` is treated
    as a constant (no gradient flows into the task head through the
    conditioning) and `GradientReversal` sits between the features and the
    domain head, driven by `GradientReversalScheduler` as for DANN.

    With `entropy_conditioning=True` (CDAN+E) each example's domain loss is
    weighted by `w = 1 + exp(-H(g))`, `H(g) = -sum_c g_c log g_c`, so
    confident (easy-to-transfer) examples count more; the weights are
    constants for the gradient and normalised within each domain:

    `L_domain = 1/2 (sum_s w_i l_i / sum_s w_i + sum_t w_j l_j / sum_t w_j)`

    with `l` the binary cross-entropy of the domain logit (source 0,
    target 1). Without it, `L_domain` is the plain mean. The model
    minimises `L_task(source) + domain_loss_weight * L_domain`; the
    reversal makes the features maximise `L_domain`.

    With `information_weight > 0` the model also minimises
    `information_weight * IM(target logits)`, SHOT's information
    maximization (`losses.information_maximization`: mean entropy of the
    target predictions minus the entropy of their batch mean, diversity
    weight 1), reported as `information_loss`.

    With `consistency_weight > 0` the model also minimises
    `consistency_weight * L_st`, AdaMatch's self-training term
    (`models.self_training_loss`): the task head's predictions on the
    target batch, distribution-aligned to the source, give pseudo-labels
    where confident enough, and the predictions on `target_augmentation` of
    the same images are trained towards them (reported as
    `consistency_loss`, and the kept fraction as `pseudo_label_fraction`).

    `g` comes from applying `task_head` to the features once more inside
    the alignment branch (the task logits themselves are computed as in
    `DomainAdversarialModel`); a head with dropout draws a separate mask
    there.

    Args:
        feature_extractor: a Keras model or layer, inputs -> features `(n, d)`.
        task_head: features -> class logits `(n, classes)`.
        domain_head: `(n, d * classes)` (or `(n, randomized_dim)`) -> one
            domain logit per sample `(n, 1)`.
        factor: float >= 0, initial reversal factor (`lambda`).
        domain_loss_weight: float >= 0.
        entropy_conditioning: bool, CDAN+E (True, the default) or CDAN.
        randomized_dim: None (the exact multilinear map) or an int > 0.
        seed: optional int, seed of the randomized projections.
        information_weight: float >= 0, weight of the target information
            maximization term (0, the default, is plain CDAN / CDAN+E).
        consistency_weight: float >= 0, weight of the self-training term
            (0, the default, turns it off); a non-trainable variable (change
            it during `fit` with `set_consistency_weight`).
        confidence_threshold: float in `(0, 1]`, pseudo-label threshold
            (AdaMatch: 0.9; FixMatch: 0.95).
        relative_threshold: bool, scale the threshold by the mean source
            confidence of the batch (AdaMatch, the default) or not
            (FixMatch).
        distribution_alignment: bool, align the target predictions' class
            marginal to the source one before thresholding (default True).
        target_augmentation: a Keras layer or model, inputs -> inputs, the
            strong augmentation of the target images (active in training);
            required when `consistency_weight > 0`.
        task_loss: a Keras loss; default sparse categorical cross-entropy on
            logits.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    model = keras_transfer.models.CDANModel(
        feature_extractor, task_head, domain_head)  # domain head: d*K -> 1
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.fit({"source": xs, "target": xt}, ys, epochs=30, callbacks=[
        keras_transfer.callbacks.GradientReversalScheduler("dann")])
    ```

    References:
        [Long et al., 2018, Conditional Adversarial Domain
        Adaptation](https://arxiv.org/abs/1705.10667);
        [Berthelot et al., 2022, AdaMatch](https://arxiv.org/abs/2106.04732).
    """

    _logit_terms = (
        "conditioning map `f (x) softmax(g)` (and information-maximization "
        "and self-training terms)"
    )

    def __init__(
        self,
        feature_extractor,
        task_head,
        domain_head,
        factor=1.0,
        domain_loss_weight=1.0,
        entropy_conditioning=True,
        randomized_dim=None,
        seed=None,
        information_weight=0.0,
        consistency_weight=0.0,
        confidence_threshold=0.9,
        relative_threshold=True,
        distribution_alignment=True,
        target_augmentation=None,
        task_loss=None,
        **kwargs,
    ):
        super().__init__(
            feature_extractor,
            task_head,
            domain_head,
            factor=factor,
            domain_loss_weight=domain_loss_weight,
            task_loss=task_loss,
            **kwargs,
        )
        if not isinstance(entropy_conditioning, bool):
            raise ValueError(
                "`entropy_conditioning` must be True or False. "
                f"Received: entropy_conditioning={entropy_conditioning!r}"
            )
        if randomized_dim is not None:
            randomized_dim = check_int(randomized_dim, "randomized_dim")
        if seed is not None:
            seed = check_int(seed, "seed", minimum=0)
        self.entropy_conditioning = entropy_conditioning
        self.information_weight = check_nonnegative(
            information_weight, "information_weight"
        )
        self.information_loss_tracker = loss_mean("information_loss")
        self._init_self_training(
            consistency_weight,
            confidence_threshold,
            relative_threshold,
            distribution_alignment,
            target_augmentation,
        )
        self.randomized_dim = randomized_dim
        self.seed = seed
        self.randomized_map = (
            None
            if randomized_dim is None
            else _RandomizedMultilinear(
                randomized_dim, seed=seed, name="randomized_multilinear"
            )
        )

    def _conditioning(self, features, training):
        logits = ops.cast(self.task_head(features, training=training), "float32")
        g = ops.stop_gradient(ops.softmax(logits, axis=-1))
        f = ops.cast(features, "float32")
        if len(f.shape) != 2:
            raise ValueError(
                "`CDANModel` needs flat features `(batch, d)` from "
                f"`feature_extractor`. Received shape: {tuple(features.shape)}"
            )
        return f, g

    def _alignment_outputs(self, features, n_source, source, target, training):
        if source is None or target is None:
            return {}
        f, g = self._conditioning(features, training)
        # g is a constant, so reversing f reverses the map's gradient.
        f = ops.cast(self.gradient_reversal(f, training=training), "float32")
        if self.randomized_map is None:
            joint = ops.reshape(
                ops.expand_dims(g, 2) * ops.expand_dims(f, 1),
                (-1, g.shape[-1] * f.shape[-1]),
            )
        else:
            joint = self.randomized_map(f, g)
        domain = self.domain_head(
            ops.cast(joint, self.compute_dtype), training=training
        )
        entropy = -ops.sum(g * ops.log(ops.maximum(g, 1e-12)), axis=-1)
        return {
            "domain": domain,
            "domain_labels": self._domain_labels(
                ops.shape(source)[0], ops.shape(target)[0]
            ),
            "domain_weights": ops.stop_gradient(1.0 + ops.exp(-entropy)),
            **self._self_training_outputs(target, training),
        }

    def _alignment_loss(self, y_pred):
        logits = ops.cast(y_pred["domain"], "float32")
        if len(logits.shape) != 2 or logits.shape[-1] != 1:
            raise ValueError(
                "`domain_head` must return one logit per sample, shape "
                f"(batch, 1). Received shape: {tuple(logits.shape)}"
            )
        labels = y_pred["domain_labels"]
        per_example = keras.losses.binary_crossentropy(
            labels, logits, from_logits=True
        )
        is_target = labels[:, 0]
        if self.entropy_conditioning:
            w = y_pred["domain_weights"]
        else:
            w = ops.ones_like(per_example)
        w_source, w_target = w * (1.0 - is_target), w * is_target
        loss = 0.5 * (
            ops.sum(w_source * per_example) / ops.sum(w_source)
            + ops.sum(w_target * per_example) / ops.sum(w_target)
        )
        self.domain_loss_tracker.update_state(loss)
        total = self.domain_loss_weight * loss
        if self.information_weight > 0:
            value = information_maximization(y_pred["target"])
            self.information_loss_tracker.update_state(
                value, sample_weight=batch_size(y_pred["target"])
            )
            total = total + self.information_weight * value
        return total + self._self_training_term(y_pred)

    def _alignment_trackers(self):
        trackers = super()._alignment_trackers()
        if self.information_weight > 0:
            trackers = trackers + [self.information_loss_tracker]
        return trackers + self._self_training_trackers()

    def _alignment_metrics(self, y_pred):
        results = super()._alignment_metrics(y_pred)
        if self.information_weight > 0:
            results["information_loss"] = self.information_loss_tracker.result()
        results.update(self._self_training_metrics())
        return results

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "entropy_conditioning": self.entropy_conditioning,
                "randomized_dim": self.randomized_dim,
                "seed": self.seed,
                "information_weight": self.information_weight,
                **self._self_training_config(),
            }
        )
        return config
