"""Maximum classifier discrepancy (MCD) as a Keras model."""

import keras
from keras import ops

from keras_transfer._validation import check_nonnegative
from keras_transfer.layers.gradient_reversal import GradientReversal
from keras_transfer.models._domain import DomainModelBase
from keras_transfer.models._domain import _check_submodel


def classifier_discrepancy(logits_1, logits_2):
    """MCD's discrepancy: mean absolute difference of two softmax outputs.

    `d(p1, p2) = 1/(n K) sum_i sum_k |p1_ik - p2_ik|` for `(n, K)` logits.
    """
    p1 = ops.softmax(ops.cast(logits_1, "float32"), axis=-1)
    p2 = ops.softmax(ops.cast(logits_2, "float32"), axis=-1)
    return ops.mean(ops.abs(p1 - p2))


@keras.saving.register_keras_serializable(package="keras_transfer")
class MCDModel(DomainModelBase):
    """MCD: two classifiers disagree on target data; the features stop them.

    A feature extractor `G` and two task heads `F1` (`task_head`) and `F2`
    (`task_head_2`), with the discrepancy `d = mean |softmax F1 -
    softmax F2|` on target data (mean over examples and classes). Saito et
    al. alternate three steps per batch: (A) `G, F1, F2` minimise the source
    cross-entropy `CE1 + CE2`; (B) with `G` fixed, `F1, F2` minimise
    `CE1 + CE2 - d`; (C) with `F1, F2` fixed, `G` minimises `d` (`num_k = 4`
    times). Here the three steps are taken *simultaneously*, as one
    gradient step per batch on

    `L = CE1(source) + CE2(source) - discrepancy_weight * d(F1(R(f_t)), F2(R(f_t)))`

    where `R` is a `GradientReversal` layer (factor `lambda`) between the
    target features and the two heads: the heads get the gradient of
    `CE - discrepancy_weight * d` (step A + B), the features the gradient of
    `CE + lambda * discrepancy_weight * d` (step A + C, with `lambda` in the
    role of C's repetitions). This keeps one loss and one optimizer, like
    `DomainAdversarialModel`; it is not the paper's alternating schedule,
    whose updates see the other player's *new* weights.

    Train with `fit({"source": x_s, "target": x_t}, y_s)`. A plain tensor
    input gives `F1`'s logits (`predict`, `evaluate`), and so do the
    `source`/`target` outputs and accuracies; `task_head_2` is available
    for the paper's ensemble. Metrics: `task_loss` (F1), `task_loss_2`,
    `source_accuracy`, `discrepancy`.

    Args:
        feature_extractor: a Keras model or layer, inputs -> features.
        task_head: features -> class logits (`F1`).
        task_head_2: features -> class logits (`F2`), same shape, with its
            own weights (a second instance, differently initialised).
        factor: float >= 0, the reversal factor `lambda`; drive it with
            `GradientReversalScheduler` if wanted.
        discrepancy_weight: float >= 0.
        task_loss: a Keras loss for both heads; default sparse categorical
            cross-entropy on logits.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    model = keras_transfer.models.MCDModel(
        feature_extractor, head_1, head_2, factor=4.0)
    model.compile(optimizer=keras.optimizers.Adam(2e-4))
    model.fit({"source": xs, "target": xt}, ys, epochs=30)
    ```

    Reference:
        [Saito et al., 2018, Maximum Classifier Discrepancy for Unsupervised
        Domain Adaptation](https://arxiv.org/abs/1712.02560).
    """

    def __init__(
        self,
        feature_extractor,
        task_head,
        task_head_2,
        factor=1.0,
        discrepancy_weight=1.0,
        task_loss=None,
        **kwargs,
    ):
        super().__init__(feature_extractor, task_head, task_loss, **kwargs)
        self.task_head_2 = _check_submodel(task_head_2, "task_head_2")
        if task_head_2 is task_head:
            raise ValueError(
                "`task_head_2` must be a second head with its own weights, "
                "not the same object as `task_head`."
            )
        self.factor = check_nonnegative(factor, "factor")
        self.discrepancy_weight = check_nonnegative(
            discrepancy_weight, "discrepancy_weight"
        )
        self.gradient_reversal = GradientReversal(
            factor=self.factor, name="gradient_reversal"
        )
        self.task_loss_2_tracker = keras.metrics.Mean(name="task_loss_2")
        self.discrepancy_tracker = keras.metrics.Mean(name="discrepancy")

    def _alignment_outputs(self, features, n_source, source, target, training):
        outputs = {}
        if source is not None:
            outputs["source_2"] = self.task_head_2(
                features[:n_source], training=training
            )
        if source is not None and target is not None:
            reversed_target = self.gradient_reversal(features[n_source:])
            outputs["target_1_reversed"] = self.task_head(
                reversed_target, training=training
            )
            outputs["target_2_reversed"] = self.task_head_2(
                reversed_target, training=training
            )
        return outputs

    def _alignment_loss(self, y_pred):
        d = classifier_discrepancy(
            y_pred["target_1_reversed"], y_pred["target_2_reversed"]
        )
        self.discrepancy_tracker.update_state(d)
        return -self.discrepancy_weight * d

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        total = super().compute_loss(
            x, y, y_pred, sample_weight=sample_weight, training=training
        )
        if isinstance(x, dict) and "source_2" in y_pred:
            y_source, _ = self._split_labels(y)
            if y_source is not None:
                second = ops.cast(
                    self.task_loss(y_source, y_pred["source_2"], sample_weight),
                    "float32",
                )
                self.task_loss_2_tracker.update_state(second)
                total = total + second
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        results = super().compute_metrics(x, y, y_pred, sample_weight)
        if isinstance(x, dict) and "source_2" in y_pred:
            y_source, _ = self._split_labels(y)
            if y_source is not None:
                results["task_loss_2"] = self.task_loss_2_tracker.result()
        return results

    def _alignment_metrics(self, y_pred):
        return {"discrepancy": self.discrepancy_tracker.result()}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "task_head_2": keras.saving.serialize_keras_object(
                    self.task_head_2
                ),
                "factor": self.factor,
                "discrepancy_weight": self.discrepancy_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(
            **cls._deserialize(
                config,
                ("feature_extractor", "task_head", "task_head_2", "task_loss"),
            )
        )
