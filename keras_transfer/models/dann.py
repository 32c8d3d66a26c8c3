"""Domain-adversarial neural network (DANN) as a Keras model."""

import keras
from keras import ops

from keras_transfer._validation import check_nonnegative
from keras_transfer.layers.gradient_reversal import GradientReversal
from keras_transfer.models._domain import DomainModelBase
from keras_transfer.models._domain import _check_submodel
from keras_transfer.models._reporting import loss_mean


@keras.saving.register_keras_serializable(package="keras_transfer")
class DomainAdversarialModel(DomainModelBase):
    """DANN: a task head and an adversarial domain head on shared features.

    `feature_extractor -> task_head` classifies labelled source data;
    `feature_extractor -> GradientReversal -> domain_head` tells source
    (label 0) from target (label 1). The reversal layer makes one ordinary
    gradient step minimise

    `L = L_task(source) + domain_loss_weight * L_domain`

    for both heads while pushing the features to *maximise* `L_domain`, so
    no custom train step or second optimizer is needed. Source and target go
    through the feature extractor as one concatenated batch, so BatchNorm sees
    both domains.

    Train with `fit({"source": x_s, "target": x_t}, y_s)` or a dataset of
    `({"source": x_s, "target": x_t}, y_s)` (e.g. two `tf.data` pipelines
    zipped, the target one repeated). Validate on labelled target data with
    `validation_data=({"target": x_t}, {"target": y_t})`. A plain tensor input
    gives the task head's outputs, so `predict(x)` / `evaluate(x, y)` work as
    for any classifier.

    When the two domains differ in size, `fit({"source": x_s, "target":
    x_t}, y_s)` pairs them by cycling the smaller side: both become
    `max(n_s, n_t)` examples long, the smaller repeated in whole passes plus
    a random subset for the last, partial pass (NumPy's global generator, so
    `keras.utils.set_random_seed` fixes it); `fit` then shuffles the pairs
    each epoch. `validation_split` is refused then (it would validate on
    copies); pass `validation_data`.

    Metrics: `loss`, `task_loss`, `source_accuracy`, `domain_loss`,
    `domain_accuracy`, and `target_accuracy` when target labels are given
    (never in training: target labels for training raise an error); extra
    `compile(metrics=[...])` are reported as `source_<name>` /
    `target_<name>`. Every epoch figure equals the figure on all the epoch's
    data at once (trackers weighted by example counts), whatever the batch
    size. `EarlyStopping` / `ModelCheckpoint` infer the direction of the
    accuracies and task losses without `mode=`; `domain_loss` and
    `domain_accuracy` have no better side in the adversarial game and need
    an explicit `mode=`. `compile(loss=...)` replaces the task loss; a task
    head ending in a softmax with a loss on logits, `loss_weights` and
    `weighted_metrics` are refused with an error.

    Args:
        feature_extractor: a Keras model or layer, inputs -> features.
        task_head: features -> class logits (or what `task_loss` expects).
        domain_head: features -> one domain logit per sample, shape `(n, 1)`.
        factor: float >= 0, initial `lambda` of the reversal layer; drive it
            with `keras_transfer.callbacks.GradientReversalScheduler` or
            `set_factor`. `get_config` reports the current value.
        domain_loss_weight: float >= 0, weight of the domain loss.
        task_loss: a Keras loss; default sparse categorical cross-entropy on
            logits. Accuracy metrics assume integer labels and class scores.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    model = keras_transfer.models.DomainAdversarialModel(
        feature_extractor, task_head, domain_head)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.fit({"source": xs, "target": xt}, ys, epochs=30, callbacks=[
        keras_transfer.callbacks.GradientReversalScheduler("dann")])
    ```

    Reference:
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html).
    """

    def __init__(
        self,
        feature_extractor,
        task_head,
        domain_head,
        factor=1.0,
        domain_loss_weight=1.0,
        task_loss=None,
        **kwargs,
    ):
        super().__init__(feature_extractor, task_head, task_loss, **kwargs)
        self.domain_head = _check_submodel(domain_head, "domain_head")
        self.factor = check_nonnegative(factor, "factor")
        self.domain_loss_weight = check_nonnegative(
            domain_loss_weight, "domain_loss_weight"
        )
        self.gradient_reversal = GradientReversal(
            factor=self.factor, name="gradient_reversal"
        )
        # No direction: in the adversarial game neither a low nor a high
        # domain loss (accuracy) means a better model; `EarlyStopping` on
        # them needs an explicit `mode=`.
        self.domain_loss_tracker = loss_mean("domain_loss", direction=None)
        self.domain_accuracy = keras.metrics.BinaryAccuracy(
            name="domain_accuracy", threshold=0.0
        )
        del self.domain_accuracy._direction

    def _alignment_outputs(self, features, n_source, source, target, training):
        if source is None or target is None:
            return {}
        domain = self.domain_head(
            self.gradient_reversal(features, training=training),
            training=training,
        )
        return {"domain": domain, "domain_labels": self._domain_labels(
            ops.shape(source)[0], ops.shape(target)[0])}

    def _domain_labels(self, n_source, n_target):
        return ops.concatenate(
            [
                ops.zeros((n_source, 1), "float32"),
                ops.ones((n_target, 1), "float32"),
            ],
            axis=0,
        )

    def _alignment_loss(self, y_pred):
        logits = ops.cast(y_pred["domain"], "float32")
        if len(logits.shape) != 2 or logits.shape[-1] != 1:
            raise ValueError(
                "`domain_head` must return one logit per sample, shape "
                f"(batch, 1). Received shape: {tuple(logits.shape)}"
            )
        loss = ops.mean(
            keras.losses.binary_crossentropy(
                y_pred["domain_labels"], logits, from_logits=True
            )
        )
        self.domain_loss_tracker.update_state(
            loss, sample_weight=self._pair_count(y_pred)
        )
        return self.domain_loss_weight * loss

    def _alignment_trackers(self):
        return [self.domain_loss_tracker, self.domain_accuracy]

    def set_factor(self, factor):
        """Sets the reversal factor `lambda` (float >= 0), also mid-`fit`.

        Stops any schedule of the reversal layer. On JAX the training
        loop's state is synced first, so the next step uses the new value.
        """
        if hasattr(self, "jax_state_sync"):
            self.jax_state_sync()
        if not self.gradient_reversal.built:
            self.gradient_reversal.build(None)
        self.gradient_reversal.set_factor(factor)
        self.factor = self.gradient_reversal.factor

    def _alignment_metrics(self, y_pred):
        self.domain_accuracy.update_state(
            y_pred["domain_labels"], ops.cast(y_pred["domain"], "float32")
        )
        return {
            "domain_loss": self.domain_loss_tracker.result(),
            "domain_accuracy": self.domain_accuracy.result(),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "domain_head": keras.saving.serialize_keras_object(
                    self.domain_head
                ),
                # The current factor, also after a schedule or `set_factor`.
                "factor": self.gradient_reversal.factor,
                "domain_loss_weight": self.domain_loss_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(
            **cls._deserialize(
                config,
                ("feature_extractor", "task_head", "domain_head", "task_loss"),
            )
        )
