import keras
import numpy as np
from keras import ops

from keras_transfer.distribution import check_tf_distribute
from keras_transfer.models._domain import check_from_logits
from keras_transfer.models._domain import reject_compile_kwargs
from keras_transfer.models._reporting import TotalLoss
from keras_transfer.models._reporting import loss_mean
from keras_transfer.models._reporting import reported_metrics
from keras_transfer.models._fit import build_before_fit

_UNCERTAINTY = "uncertainty"


def _is_tf_dataset(x):
    # Checked by class name so that TensorFlow is never imported here.
    return any(
        cls.__name__ in ("DatasetV2", "DatasetV1") for cls in type(x).__mro__
    )


def _resolve_metric(identifier, loss):
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        loss_name = (
            loss if isinstance(loss, str) else getattr(loss, "name", "") or ""
        ).lower()
        if "binary" in loss_name:
            return keras.metrics.BinaryAccuracy(name="accuracy")
        if "categorical" in loss_name and "sparse" not in loss_name:
            return keras.metrics.CategoricalAccuracy(name="accuracy")
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    return keras.metrics.get(identifier)


@keras.saving.register_keras_serializable(package="keras_transfer")
class MultiTaskModel(keras.Model):
    """A shared encoder with named task heads, trained with one `fit`.

    `call` returns a dict `{task: head(encoder(inputs))}`. Labels are given to
    `fit` as a dict with one entry per head. An example whose label for a task
    equals `missing_label` (or is NaN) is masked out of that task's loss and
    metrics, so datasets where each example is labelled for only some tasks
    train as they are. Each task's loss is the mean over its labelled examples
    in the batch (0 when the batch has none), and the total is

        fixed weights:   sum_i w_i * L_i
        "uncertainty":   sum_i exp(-s_i) * L_i + s_i / 2

    where `s_i = log(sigma_i^2)` is a learned, per-task log-variance
    (homoscedastic uncertainty weighting, Kendall et al. 2018, the
    classification form `L_i / sigma_i^2 + log sigma_i`). Learned
    weights settle where `exp(-s_i) = 1 / (2 L_i)`: tasks with a larger loss
    get less weight. `fit` reports `<task>_loss` and `<task>_weight` for every
    task, plus each task's metrics as `<task>_<metric>`. Each epoch figure
    equals the figure on all the data at once whatever the batch size (a
    task's loss is weighted by its count of labelled examples, batches where
    a task has none included), and `EarlyStopping` / `ModelCheckpoint` know
    the direction of the losses and metrics without `mode=` (a
    `<task>_weight` has none). `sample_weight` weights the losses;
    `weighted_metrics` and `loss_weights` are refused.

    Args:
        encoder: the shared `keras.Model` or layer, inputs -> features.
        heads: dict mapping task names to layers or models, features ->
            outputs.
        task_weights: `None` (every task weighted 1), a dict of non-negative
            fixed weights with one entry per head, or `"uncertainty"` for
            learned weights. Defaults to `None`.
        missing_label: label value meaning "no label for this task".
            Defaults to `-1`.
        name: model name. Defaults to `"multi_task"`.

    Example:

    ```python
    model = keras_transfer.models.MultiTaskModel(
        encoder,
        heads={"digit": keras.layers.Dense(10), "speaker": keras.layers.Dense(6)},
        task_weights="uncertainty",
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics={"digit": ["accuracy"], "speaker": ["accuracy"]},
    )
    model.fit(x, {"digit": y_digit, "speaker": y_speaker})  # -1 = missing
    ```

    Reference:
        [Kendall et al., 2018](https://arxiv.org/abs/1705.07115)
    """

    def __init__(
        self,
        encoder,
        heads,
        task_weights=None,
        missing_label=-1,
        name="multi_task",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not isinstance(encoder, keras.layers.Layer):
            raise ValueError(
                "`encoder` must be a Keras layer or model. "
                f"Received: encoder={encoder!r}"
            )
        if (
            not isinstance(heads, dict)
            or not heads
            or not all(isinstance(k, str) for k in heads)
            or not all(isinstance(h, keras.layers.Layer) for h in heads.values())
        ):
            raise ValueError(
                "`heads` must be a non-empty dict mapping task names (str) to "
                f"Keras layers or models. Received: heads={heads!r}"
            )
        names = sorted(heads)
        if task_weights is None:
            task_weights = {task: 1.0 for task in names}
        if task_weights != _UNCERTAINTY:
            if (
                not isinstance(task_weights, dict)
                or sorted(task_weights) != names
                or not all(
                    isinstance(w, (int, float))
                    and not isinstance(w, bool)
                    and w >= 0
                    for w in task_weights.values()
                )
            ):
                raise ValueError(
                    "`task_weights` must be None, 'uncertainty', or a dict "
                    f"of non-negative numbers with one entry per head {names}. "
                    f"Received: task_weights={task_weights!r}"
                )
            task_weights = {k: float(v) for k, v in task_weights.items()}
        if isinstance(missing_label, bool) or not isinstance(
            missing_label, (int, float)
        ):
            raise ValueError(
                "`missing_label` must be a number. "
                f"Received: missing_label={missing_label!r}"
            )
        self.encoder = encoder
        self.heads = dict(heads)
        self.task_names = names
        self.task_weights = task_weights
        self.missing_label = missing_label
        if task_weights == _UNCERTAINTY:
            # Trainable, in float32 even under mixed precision.
            self.log_variances = self.add_weight(
                name="log_variances",
                shape=(len(names),),
                initializer="zeros",
                dtype="float32",
            )
        # Epoch figures are exact: each task's loss is weighted by its
        # count of labelled examples, `loss` is the sum of exact terms.
        self.task_loss_trackers = {
            task: loss_mean(f"{task}_loss") for task in names
        }
        # A weight has no better side for `EarlyStopping`.
        self.task_weight_trackers = {
            task: loss_mean(f"{task}_weight", direction=None) for task in names
        }
        self._total_loss = TotalLoss(
            [f"task_{i}" for i in range(len(names))]
            + [f"log_variance_{i}" for i in range(len(names))]
            + ["regularization"]
        )
        self.task_metrics = {task: [] for task in names}

    def call(self, inputs, training=None):
        features = self.encoder(inputs, training=training)
        return {
            task: self.heads[task](features, training=training)
            for task in self.task_names
        }

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training with one loss (and optional metrics) per task.

        Args:
            optimizer: the optimizer. Defaults to `"rmsprop"`, as Keras.
            loss: a dict of losses, one per head, or one loss for all
                heads. Required.
            metrics: optional dict of metric lists keyed by task name.
            **kwargs: passed to `keras.Model.compile` (`jit_compile`,
                `run_eagerly`, `steps_per_execution`, ...); not
                `loss_weights` (use `task_weights`) or `weighted_metrics`.
        """
        if loss is None:
            raise ValueError(
                "`MultiTaskModel.compile` needs a `loss`: one loss or a dict "
                f"with one per head {self.task_names}. Received: loss=None"
            )
        kwargs = reject_compile_kwargs(
            self, kwargs, "`task_weights=` in its constructor"
        )
        losses = loss if isinstance(loss, dict) else {t: loss for t in self.task_names}
        if sorted(losses) != self.task_names:
            raise ValueError(
                f"`loss` must have one entry per head {self.task_names}. "
                f"Received: loss keys={sorted(losses)}"
            )
        metrics = metrics or {}
        if not isinstance(metrics, dict) or not set(metrics) <= set(self.task_names):
            raise ValueError(
                "`metrics` must be a dict keyed by task names "
                f"{self.task_names}. Received: metrics={metrics!r}"
            )
        self.task_losses = {t: keras.losses.get(l) for t, l in losses.items()}
        for task, task_loss in self.task_losses.items():
            check_from_logits(
                task_loss, self.heads[task], f"loss[{task!r}]", f"heads[{task!r}]"
            )
        self.task_metrics = {}
        for task in self.task_names:
            task_metrics = []
            for identifier in metrics.get(task, []):
                metric = _resolve_metric(identifier, losses[task])
                metric.name = f"{task}_{metric.name}"
                task_metrics.append(metric)
            self.task_metrics[task] = task_metrics
        super().compile(optimizer=optimizer, loss=None, **kwargs)
        self._compile_config.config["loss"] = loss
        self._compile_config.config["metrics"] = metrics or None

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            # Created now so that `load_model` restores the optimizer state.
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        own = list(self.task_loss_trackers.values())
        own += list(self.task_weight_trackers.values())
        for task_metrics in self.task_metrics.values():
            own += task_metrics
        return reported_metrics(super().metrics, own, self._total_loss)

    def _check_label_names(self, y):
        if not isinstance(y, dict) or sorted(y) != self.task_names:
            got = sorted(y) if isinstance(y, dict) else type(y).__name__
            raise ValueError(
                "`MultiTaskModel` needs labels as a dict with one entry per "
                f"head {self.task_names} (use missing_label="
                f"{self.missing_label!r} for unlabelled examples). Received: "
                f"label names={got}"
            )

    def _mask(self, y):
        y = ops.convert_to_tensor(y)
        missing = ops.equal(y, ops.cast(self.missing_label, y.dtype))
        if "float" in str(y.dtype):
            missing = ops.logical_or(missing, ops.isnan(y))
        if len(y.shape) > 1:
            missing = ops.any(ops.reshape(missing, (ops.shape(y)[0], -1)), axis=1)
        mask = ops.logical_not(missing)
        safe_y = ops.where(
            ops.reshape(mask, (-1,) + (1,) * (len(y.shape) - 1)),
            y,
            ops.zeros_like(y),
        )
        return ops.cast(mask, "float32"), safe_y

    def _per_example_loss(self, task, y, y_pred):
        loss_fn = self.task_losses[task]
        if isinstance(loss_fn, keras.losses.Loss):
            values = loss_fn.call(y, y_pred)
        else:
            values = loss_fn(y, y_pred)
        values = ops.cast(values, "float32")
        if len(values.shape) > 1:
            values = ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)
        return values

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        check_tf_distribute(self)
        self._check_label_names(y)
        if y_pred is None:
            y_pred = self(x, training=training)
        total = ops.zeros((), "float32")
        for index, task in enumerate(self.task_names):
            mask, safe_y = self._mask(y[task])
            if sample_weight is not None:
                weights = sample_weight[task] if isinstance(sample_weight, dict) else sample_weight
                mask = mask * ops.reshape(ops.cast(weights, "float32"), ops.shape(mask))
            values = self._per_example_loss(task, safe_y, y_pred[task])
            count = ops.sum(mask)
            # The weighted mean over the labelled examples; a batch without
            # any (count 0) adds 0 with weight 0. Weights below 1 in all are
            # valid counts: `maximum(count, 1)` shrank their loss.
            task_loss = ops.sum(values * mask) / ops.where(count > 0, count, 1.0)
            if self.task_weights == _UNCERTAINTY:
                log_var = ops.convert_to_tensor(self.log_variances)[index]
                weight = ops.exp(-log_var)
                total = total + weight * task_loss + 0.5 * log_var
                self._total_loss.add(f"log_variance_{index}", 0.5 * log_var, 1.0)
            else:
                weight = ops.convert_to_tensor(self.task_weights[task], "float32")
                total = total + weight * task_loss
            self._total_loss.add(f"task_{index}", weight * task_loss, count)
            self.task_loss_trackers[task].update_state(
                task_loss, sample_weight=count
            )
            self.task_weight_trackers[task].update_state(weight)
        if self.losses:
            value = sum(ops.cast(loss, "float32") for loss in self.losses)
            self._total_loss.add("regularization", value, 1.0)
            total = total + value
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for task in self.task_names:
            mask, safe_y = self._mask(y[task])
            for metric in self.task_metrics[task]:
                metric.update_state(safe_y, y_pred[task], sample_weight=mask)
        return self.get_metrics_result()

    def _check_data(self, x, y):
        if _is_tf_dataset(x):
            spec = x.element_spec
            if isinstance(spec, tuple) and len(spec) >= 2:
                self._check_label_names(spec[1])
            return
        if y is None:
            return
        self._check_label_names(y)
        for task in self.task_names:
            labels = np.asarray(y[task])
            missing = labels == self.missing_label
            if labels.dtype.kind == "f":
                missing |= np.isnan(labels)
            if labels.ndim > 1:
                missing = missing.reshape(len(labels), -1).any(axis=1)
            if missing.all():
                raise ValueError(
                    f"Task {task!r} has no labelled example in the data: "
                    f"every label equals missing_label={self.missing_label!r}. "
                    "Drop the head or give it some labels. Received: "
                    f"{len(labels)} examples"
                )

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_data(x, y)
        if not args:
            build_before_fit(
                self, x, y, kwargs.get("sample_weight"), kwargs.get("batch_size")
            )
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_data(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def task_weight_values(self):
        """Current task weights as a dict of floats.

        Returns:
            `{task: weight}`: the fixed weights, or `exp(-s_i)` for learned
            (`"uncertainty"`) weights.
        """
        if self.task_weights == _UNCERTAINTY:
            values = np.exp(-keras.ops.convert_to_numpy(self.log_variances))
            return {t: float(v) for t, v in zip(self.task_names, values)}
        return dict(self.task_weights)

    def get_config(self):
        config = keras.Model.get_config(self)
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "heads": {
                    task: keras.saving.serialize_keras_object(self.heads[task])
                    for task in self.task_names
                },
                "task_weights": self.task_weights,
                "missing_label": self.missing_label,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["heads"] = {
            task: keras.saving.deserialize_keras_object(head)
            for task, head in config["heads"].items()
        }
        return cls(**config)
