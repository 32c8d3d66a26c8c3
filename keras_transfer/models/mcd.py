"""Maximum classifier discrepancy (MCD) as a Keras model."""

import keras
from keras import ops

from keras_transfer._validation import check_int
from keras_transfer._validation import check_nonnegative
from keras_transfer.models._domain import DomainModelBase
from keras_transfer.models._domain import _check_submodel
from keras_transfer.models._reporting import TotalLoss
from keras_transfer.models._reporting import batch_size
from keras_transfer.models._reporting import loss_mean


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
    softmax F2|` on target data (mean over examples and classes). Each
    training step takes Saito et al.'s three steps in order on the batch,
    each on the weights the previous one left:

    - **A**: `G, F1, F2` minimise `CE1 + CE2` on the source batch;
    - **B**: `F1, F2` (with `G` fixed) minimise
      `CE1 + CE2 - discrepancy_weight * d(target)`;
    - **C**: `G` (with `F1, F2` fixed) minimises
      `discrepancy_weight * d(target)`, `n_generator_steps` times (the
      paper's `num_k`, 4).

    Each step is one update of the compiled optimizer on *its* variables
    only, so the fixed side keeps its weights and its optimizer slots
    (momentum, Adam moments) untouched; each variable has one set of slots,
    as with the paper's two optimizers (one for `G`, one for `F1, F2`).
    `optimizer.iterations` counts batches (a learning-rate schedule sees
    the batch count; every update of a batch uses the same step). A forward
    pass runs for every update (so BatchNorm's moving statistics and
    dropout masks are refreshed `2 + n_generator_steps` times per batch, as
    in the paper's code). Regularization losses (`model.losses`) are added
    in every step. The reported figures (`loss`, `task_loss`,
    `task_loss_2`, `source_accuracy`, `discrepancy`) are those of step A,
    i.e. of the weights at the start of the batch.

    Train with `fit({"source": x_s, "target": x_t}, y_s)`. A plain tensor
    input gives `F1`'s logits (`predict`, `evaluate`), and so do the
    `source`/`target` outputs and accuracies; `task_head_2` is available
    for the paper's ensemble. The custom `train_step` exists for the
    TensorFlow and JAX backends.

    Args:
        feature_extractor: a Keras model or layer, inputs -> features.
        task_head: features -> class logits (`F1`).
        task_head_2: features -> class logits (`F2`), same shape, with its
            own weights (a second instance, differently initialised).
        n_generator_steps: int >= 1, updates of `G` in step C (paper: 4).
        discrepancy_weight: float >= 0, weight of `d` in steps B and C
            (paper: 1).
        task_loss: a Keras loss for both heads; default sparse categorical
            cross-entropy on logits.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    model = keras_transfer.models.MCDModel(
        feature_extractor, head_1, head_2, n_generator_steps=4)
    model.compile(optimizer=keras.optimizers.Adam(2e-4))
    model.fit({"source": xs, "target": xt}, ys, epochs=30)
    ```

    Reference:
        [Saito et al., 2018, Maximum Classifier Discrepancy for Unsupervised
        Domain Adaptation](https://arxiv.org/abs/1712.02560).
    """

    _logit_terms = "classifier discrepancy `|softmax F1 - softmax F2|`"

    def __init__(
        self,
        feature_extractor,
        task_head,
        task_head_2,
        n_generator_steps=4,
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
        self.n_generator_steps = check_int(
            n_generator_steps, "n_generator_steps"
        )
        self.discrepancy_weight = check_nonnegative(
            discrepancy_weight, "discrepancy_weight"
        )
        self.task_loss_2_tracker = loss_mean("task_loss_2")
        # `loss` = CE1 + CE2 (+ regularization): a total with F2's term.
        self._retired_ids = tuple(self._retired_ids) + (id(self._total_loss),)
        self._total_loss = TotalLoss(
            ("task", "task_2", "target_task", "alignment", "regularization")
        )
        self.discrepancy_tracker = keras.metrics.Mean(name="discrepancy")

    # -- forward -------------------------------------------------------------

    def _alignment_outputs(self, features, n_source, source, target, training):
        outputs = {}
        if source is not None:
            outputs["source_2"] = self.task_head_2(
                features[:n_source], training=training
            )
        if source is not None and target is not None:
            # F1's target logits are `y_pred["target"]`.
            outputs["target_2"] = self.task_head_2(
                features[n_source:], training=training
            )
        return outputs

    # -- step A (Keras's own train step, over every variable) --------------

    def _alignment_loss(self, y_pred):
        # Step A's loss has no discrepancy term; d is reported as it stands
        # at the start of the batch.
        d = classifier_discrepancy(y_pred["target"], y_pred["target_2"])
        self.discrepancy_tracker.update_state(d)
        return ops.zeros((), "float32")

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
                count = batch_size(y_pred["source_2"])
                self.task_loss_2_tracker.update_state(second, sample_weight=count)
                self._total_loss.add("task_2", second, count)
                total = total + second
        return total

    # -- steps B and C -----------------------------------------------------

    def _step_loss(self, step, y, y_pred, sample_weight, losses):
        """Loss of step "B" (heads) or "C" (features); no trackers."""
        d = classifier_discrepancy(y_pred["target"], y_pred["target_2"])
        if step == "C":
            loss = self.discrepancy_weight * d
        else:
            y_source, _ = self._split_labels(y)
            loss = (
                ops.cast(
                    self.task_loss(y_source, y_pred["source"], sample_weight),
                    "float32",
                )
                + ops.cast(
                    self.task_loss(y_source, y_pred["source_2"], sample_weight),
                    "float32",
                )
                - self.discrepancy_weight * d
            )
        for value in losses:
            loss = loss + ops.cast(value, "float32")
        return loss

    def _steps(self):
        heads = (
            self.task_head.trainable_variables
            + self.task_head_2.trainable_variables
        )
        return [("B", heads)] + [
            ("C", self.feature_extractor.trainable_variables)
        ] * self.n_generator_steps

    def _check_train_inputs(self, x):
        if not (isinstance(x, dict) and "source" in x and "target" in x):
            raise ValueError(
                "`MCDModel` trains on batches that carry both labelled source "
                "data and unlabelled target data; the target batches never "
                "arrived. Pass `fit({'source': x_source, 'target': x_target}, "
                f"y_source)`. Received: {type(x).__name__} inputs"
                + (f" with keys {sorted(x)}" if isinstance(x, dict) else "")
            )

    def train_step(self, *args):
        backend = keras.backend.backend()
        if backend == "jax":
            state, data = args
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            self._check_train_inputs(x)
            logs, state = super().train_step(state, data)
            from keras_transfer.backend import jax as backend_steps

            return logs, backend_steps.extra_train_steps(
                self, state, data, self._steps(), self._step_loss
            )
        if backend == "tensorflow":
            (data,) = args
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            self._check_train_inputs(x)
            logs = super().train_step(data)
            from keras_transfer.backend import tensorflow as backend_steps

            backend_steps.extra_train_steps(self, data, self._steps(), self._step_loss)
            return logs
        raise NotImplementedError(
            "`MCDModel`'s three-step train step exists for the TensorFlow "
            f"and JAX backends. Received backend: {backend!r}"
        )

    # -- metrics and config ------------------------------------------------

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        results = super().compute_metrics(x, y, y_pred, sample_weight)
        if isinstance(x, dict) and "source_2" in y_pred:
            y_source, _ = self._split_labels(y)
            if y_source is not None:
                results["task_loss_2"] = self.task_loss_2_tracker.result()
        return results

    def _alignment_metrics(self, y_pred):
        return {"discrepancy": self.discrepancy_tracker.result()}

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """As `DomainAdversarialModel.compile`; one optimizer, applied in
        each of the three steps to that step's variables. Not with
        `gradient_accumulation_steps` (the steps are not one gradient)."""
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        if getattr(self.optimizer, "gradient_accumulation_steps", None):
            raise ValueError(
                "`MCDModel` updates its parts in three steps per batch, "
                "which gradient accumulation would merge. Received an "
                "optimizer with gradient_accumulation_steps="
                f"{self.optimizer.gradient_accumulation_steps!r}"
            )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "task_head_2": keras.saving.serialize_keras_object(
                    self.task_head_2
                ),
                "n_generator_steps": self.n_generator_steps,
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
