"""Feature alignment by a discrepancy penalty (MMD, CORAL) as a Keras model."""

import keras
from keras import ops

from keras_transfer._validation import check_nonnegative
from keras_transfer.losses.coral import CORAL
from keras_transfer.losses.mmd import MMD
from keras_transfer.models._domain import DomainModelBase
from keras_transfer.models._reporting import loss_mean

_NAMED = {
    "mmd": lambda: MMD(bandwidth_multipliers=(0.25, 0.5, 1.0, 2.0, 4.0)),
    "coral": CORAL,
}


@keras.saving.register_keras_serializable(package="keras_transfer")
class DiscrepancyAlignmentModel(DomainModelBase):
    """Task model whose source and target features are pulled together.

    `L = L_task(source) + alignment_weight * D(f(x_source), f(x_target))`

    with `f` the feature extractor and `D` a two-sample discrepancy: a
    `keras_transfer.losses.MMD` or `CORAL` instance (or any loss taking
    `(source_features, target_features)`), or the names `"mmd"`
    (multi-bandwidth MMD, median heuristic times 0.25 ... 4, unbiased
    estimator; as in DAN) and `"coral"` (Deep CORAL). Features must be 2-D
    `(batch, width)`. Inputs, labels and metrics follow
    `DomainAdversarialModel` (domains of different sizes are cycled, figures
    exact, compile arguments as there); the discrepancy is reported as
    `alignment_loss`, the count-weighted mean of the minibatch values (not
    the discrepancy of the full sets), and a batch with fewer than 2
    examples of a domain (where the estimate is undefined) adds no alignment
    term.
    `alignment_weight` is a non-trainable variable that can be changed during
    `fit` with `set_alignment_weight`.

    Args:
        feature_extractor: a Keras model or layer, inputs -> `(batch, width)`.
        task_head: features -> class logits.
        discrepancy: `"mmd"`, `"coral"` or a Keras loss instance.
        alignment_weight: float >= 0, the `lambda` above.
        task_loss: a Keras loss; default sparse categorical cross-entropy on
            logits.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    model = keras_transfer.models.DiscrepancyAlignmentModel(
        feature_extractor, task_head, discrepancy="mmd", alignment_weight=1.0)
    model.compile(optimizer="adam")
    model.fit({"source": xs, "target": xt}, ys, epochs=30)
    ```

    Reference:
        [Long et al., 2015 (DAN)](https://arxiv.org/abs/1502.02791),
        [Sun & Saenko, 2016 (Deep CORAL)](https://arxiv.org/abs/1607.01719).
    """

    def __init__(
        self,
        feature_extractor,
        task_head,
        discrepancy="mmd",
        alignment_weight=1.0,
        task_loss=None,
        **kwargs,
    ):
        super().__init__(feature_extractor, task_head, task_loss, **kwargs)
        if isinstance(discrepancy, str):
            if discrepancy not in _NAMED:
                raise ValueError(
                    f"`discrepancy` must be one of {sorted(_NAMED)} or a Keras "
                    f"loss instance. Received: discrepancy={discrepancy!r}"
                )
            discrepancy = _NAMED[discrepancy]()
        elif not isinstance(discrepancy, keras.losses.Loss):
            raise ValueError(
                f"`discrepancy` must be one of {sorted(_NAMED)} or a Keras "
                f"loss instance. Received: discrepancy={discrepancy!r}"
            )
        self.discrepancy = discrepancy
        self.alignment_weight = check_nonnegative(
            alignment_weight, "alignment_weight"
        )
        self.alignment_weight_variable = keras.Variable(
            self.alignment_weight,
            dtype="float32",
            trainable=False,
            name="alignment_weight",
        )
        self.alignment_loss_tracker = loss_mean("alignment_loss")

    def set_alignment_weight(self, value):
        """Changes `lambda` (float >= 0), also during `fit` (no retracing).

        On JAX the training loop's state is synced first, so the next step
        uses the new value.
        """
        value = check_nonnegative(value, "alignment_weight")
        if hasattr(self, "jax_state_sync"):
            self.jax_state_sync()
        self.alignment_weight_variable.assign(value)
        self.alignment_weight = value

    def _alignment_trackers(self):
        return [self.alignment_loss_tracker]

    def _alignment_outputs(self, features, n_source, source, target, training):
        if source is None or target is None:
            return {}
        if len(features.shape) != 2:
            raise ValueError(
                "`feature_extractor` must return 2-D (batch, width) features "
                "for the discrepancy; add a Flatten or pooling layer. "
                f"Received shape: {tuple(features.shape)}"
            )
        return {
            "source_features": features[:n_source],
            "target_features": features[n_source:],
        }

    def _alignment_loss(self, y_pred):
        # Undefined on a batch with fewer than 2 examples of a domain (a
        # covariance, an unbiased MMD): such a batch (a last, short one) adds
        # no alignment term and does not count in the figure. `cond`, not
        # `where`: the NaN of the untaken branch would reach the gradients.
        def discrepancy():
            return ops.cast(
                self.discrepancy(
                    y_pred["source_features"], y_pred["target_features"]
                ),
                "float32",
            )

        defined = self._defined(y_pred)
        if isinstance(defined, bool):  # static batch sizes (JAX)
            value = discrepancy() if defined else ops.zeros((), "float32")
        else:
            value = ops.cond(
                defined, discrepancy, lambda: ops.zeros((), "float32")
            )
        # A minibatch statistic: the epoch figure is the count-weighted mean
        # of the batches' values, not the discrepancy of the full sets.
        self.alignment_loss_tracker.update_state(
            value, sample_weight=self._alignment_count(y_pred)
        )
        return ops.convert_to_tensor(self.alignment_weight_variable) * value

    def _defined(self, y_pred):
        n_source = y_pred["source_features"].shape[0]
        n_target = y_pred["target_features"].shape[0]
        if n_source is not None and n_target is not None:
            return n_source >= 2 and n_target >= 2
        return ops.logical_and(
            ops.greater_equal(ops.shape(y_pred["source_features"])[0], 2),
            ops.greater_equal(ops.shape(y_pred["target_features"])[0], 2),
        )

    def _alignment_count(self, y_pred):
        return ops.where(self._defined(y_pred), self._pair_count(y_pred), 0.0)

    def _alignment_metrics(self, y_pred):
        return {"alignment_loss": self.alignment_loss_tracker.result()}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "discrepancy": keras.saving.serialize_keras_object(
                    self.discrepancy
                ),
                "alignment_weight": float(
                    ops.convert_to_numpy(self.alignment_weight_variable)
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(
            **cls._deserialize(
                config,
                ("feature_extractor", "task_head", "discrepancy", "task_loss"),
            )
        )
