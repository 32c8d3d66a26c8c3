"""Source cross-entropy plus information maximization on target data."""

import keras
from keras import ops

from keras_transfer._validation import check_nonnegative
from keras_transfer.losses.information_maximization import (
    information_maximization,
)
from keras_transfer.models._domain import DomainModelBase
from keras_transfer.models._reporting import batch_size
from keras_transfer.models._reporting import loss_mean
from keras_transfer.models.self_training import SelfTrainingMixin


def cluster_pseudo_labels(features, logits):
    """SHOT's self-supervised pseudo-labels of a batch (two k-means steps).

    With `fh_i = [f_i, 1] / ||[f_i, 1]||` (features with a 1 appended,
    L2-normalised, as in SHOT's code) and `p_i = softmax(logits_i)`:

    1. `c_k = sum_i p_ik fh_i / sum_i p_ik`,
       `y_i = argmax_k cos(fh_i, c_k)`;
    2. `c_k = mean of fh_i over {i : y_i = k}`,
       `y_i = argmax_k cos(fh_i, c_k)` over the classes that got an example
       in step 1.

    Both are constants for the gradient. SHOT runs this over the whole
    target set once per epoch; here it runs on the batch.

    Args:
        features: `(n, d)` features.
        logits: `(n, K)` class logits of the same examples.

    Returns:
        `(n,)` int32 labels.

    Reference:
        [Liang et al., 2020 (SHOT)](https://arxiv.org/abs/2002.08546),
        Eq. (4)-(6).
    """
    f = ops.stop_gradient(ops.cast(features, "float32"))
    if len(f.shape) != 2:
        raise ValueError(
            "`cluster_pseudo_labels` needs flat features `(batch, d)`. "
            f"Received shape: {tuple(features.shape)}"
        )
    f = ops.concatenate([f, ops.ones_like(f[:, :1])], axis=-1)
    f = f / ops.maximum(ops.norm(f, axis=-1, keepdims=True), 1e-12)
    p = ops.stop_gradient(ops.softmax(ops.cast(logits, "float32"), axis=-1))

    def nearest(weights, present):
        centroids = ops.matmul(ops.transpose(weights), f) / ops.maximum(
            ops.sum(weights, axis=0)[:, None], 1e-12
        )
        centroids = centroids / ops.maximum(
            ops.norm(centroids, axis=-1, keepdims=True), 1e-12
        )
        similarity = ops.matmul(f, ops.transpose(centroids))
        similarity = ops.where(present[None, :], similarity, -2.0)
        return ops.cast(ops.argmax(similarity, axis=-1), "int32")

    classes = p.shape[-1]
    labels = nearest(p, ops.ones((classes,), "bool"))
    onehot = ops.one_hot(labels, classes, dtype="float32")
    return nearest(onehot, ops.sum(onehot, axis=0) > 0)


@keras.saving.register_keras_serializable(package="keras_transfer")
class InformationMaximizationModel(SelfTrainingMixin, DomainModelBase):
    """Source cross-entropy + information maximization on target data.

    `L = L_task(source) + information_weight * IM(target)
       + pseudo_label_weight * CE(yhat_target, target)`

    where `IM = mean_i H(p_i) - diversity_weight * H(mean_i p_i)` is SHOT's
    information-maximization loss (`losses.information_maximization`) on the
    target logits: confident target predictions that use all classes. With
    `pseudo_label_weight > 0` the target examples are also trained towards
    SHOT's clustering pseudo-labels `yhat` (`cluster_pseudo_labels`, two
    k-means steps in the cosine geometry of the features, computed on each
    batch). SHOT applies these terms source-free to a source model with a
    frozen head; here they are trained jointly with the source loss (as in
    VADA's conditional entropy, Shu et al. 2018), which needs no second
    stage. Start from a source model, or ramp `information_weight` with
    `set_information_weight`, when the source is far.

    With `consistency_weight > 0` the model also minimises
    `consistency_weight * L_st`, AdaMatch's pseudo-label consistency on a
    strongly augmented target view (`models.self_training_loss`; arguments
    as in `CDANModel`).

    Inputs, labels, metrics and compile arguments follow
    `DiscrepancyAlignmentModel` (domains of different sizes are cycled,
    figures exact). Metrics: `task_loss`, `source_accuracy`,
    `information_loss` (the IM value), `pseudo_label_loss` (when used).

    Args:
        feature_extractor: a Keras model or layer, inputs -> features
            (`(batch, d)` when pseudo-labels are used).
        task_head: features -> class logits.
        information_weight: float >= 0, weight of `IM`; a non-trainable
            variable (change it during `fit` with `set_information_weight`).
        diversity_weight: float >= 0, the diversity term's weight inside
            `IM` (SHOT: 1).
        pseudo_label_weight: float >= 0 (SHOT: 0.3; 0 turns it off).
        consistency_weight, confidence_threshold, relative_threshold,
            distribution_alignment, target_augmentation: the self-training
            term, as in `CDANModel` (off by default).
        task_loss: a Keras loss; default sparse categorical cross-entropy on
            logits.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    model = keras_transfer.models.InformationMaximizationModel(
        feature_extractor, task_head, pseudo_label_weight=0.3)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.fit({"source": xs, "target": xt}, ys, epochs=15)
    ```

    Reference:
        [Liang et al., 2020, Do We Really Need to Access the Source Data?
        (SHOT)](https://arxiv.org/abs/2002.08546).
    """

    _logit_terms = "information-maximization (and self-training) terms"

    def __init__(
        self,
        feature_extractor,
        task_head,
        information_weight=1.0,
        diversity_weight=1.0,
        pseudo_label_weight=0.0,
        consistency_weight=0.0,
        confidence_threshold=0.9,
        relative_threshold=True,
        distribution_alignment=True,
        target_augmentation=None,
        task_loss=None,
        **kwargs,
    ):
        super().__init__(feature_extractor, task_head, task_loss, **kwargs)
        self.information_weight = check_nonnegative(
            information_weight, "information_weight"
        )
        self.diversity_weight = check_nonnegative(
            diversity_weight, "diversity_weight"
        )
        self.pseudo_label_weight = check_nonnegative(
            pseudo_label_weight, "pseudo_label_weight"
        )
        self.information_weight_variable = keras.Variable(
            self.information_weight,
            dtype="float32",
            trainable=False,
            name="information_weight",
        )
        self.information_loss_tracker = loss_mean("information_loss")
        self.pseudo_label_loss_tracker = loss_mean("pseudo_label_loss")
        self._init_self_training(
            consistency_weight,
            confidence_threshold,
            relative_threshold,
            distribution_alignment,
            target_augmentation,
        )

    def set_information_weight(self, value):
        """Changes `information_weight` (float >= 0), also during `fit`."""
        value = check_nonnegative(value, "information_weight")
        if hasattr(self, "jax_state_sync"):
            self.jax_state_sync()
        self.information_weight_variable.assign(value)
        self.information_weight = value

    def _alignment_trackers(self):
        trackers = [self.information_loss_tracker]
        if self.pseudo_label_weight > 0:
            trackers.append(self.pseudo_label_loss_tracker)
        return trackers + self._self_training_trackers()

    def _alignment_outputs(self, features, n_source, source, target, training):
        if source is None or target is None:
            return {}
        outputs = self._self_training_outputs(target, training)
        if self.pseudo_label_weight > 0:
            outputs["target_features"] = features[n_source:]
        return outputs

    def _alignment_count(self, y_pred):
        return batch_size(y_pred["target"])

    def _alignment_loss(self, y_pred):
        logits = ops.cast(y_pred["target"], "float32")
        value = information_maximization(logits, self.diversity_weight)
        count = self._alignment_count(y_pred)
        self.information_loss_tracker.update_state(value, sample_weight=count)
        total = ops.convert_to_tensor(self.information_weight_variable) * value
        if self.pseudo_label_weight > 0:
            labels = cluster_pseudo_labels(y_pred["target_features"], logits)
            pseudo = ops.mean(
                keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True
                )
            )
            self.pseudo_label_loss_tracker.update_state(
                pseudo, sample_weight=count
            )
            total = total + self.pseudo_label_weight * pseudo
        return total + self._self_training_term(y_pred)

    def _alignment_metrics(self, y_pred):
        results = {"information_loss": self.information_loss_tracker.result()}
        if self.pseudo_label_weight > 0:
            results["pseudo_label_loss"] = (
                self.pseudo_label_loss_tracker.result()
            )
        results.update(self._self_training_metrics())
        return results

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "information_weight": float(
                    ops.convert_to_numpy(self.information_weight_variable)
                ),
                "diversity_weight": self.diversity_weight,
                "pseudo_label_weight": self.pseudo_label_weight,
                **self._self_training_config(),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(
            **cls._deserialize(
                config, ("feature_extractor", "task_head", "task_loss")
            )
        )
