"""Shared plumbing of the domain adaptation models (private)."""


import keras
import numpy as np
from keras import ops

from keras_transfer.distribution import check_tf_distribute
from keras_transfer.models._reporting import TotalLoss
from keras_transfer.models._reporting import batch_size
from keras_transfer.models._reporting import loss_mean
from keras_transfer.models._reporting import reported_metrics
from keras_transfer.models._fit import build_before_fit

_DOMAINS = ("source", "target")


def _check_submodel(value, name):
    if not isinstance(value, keras.layers.Layer):
        raise ValueError(
            f"`{name}` must be a Keras model or layer. "
            f"Received: {name}={value!r}"
        )
    return value


class _FunctionLoss(keras.losses.Loss):
    """A loss function as a `Loss` (mean reduction, `sample_weight`)."""

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def _loss_kind(loss):
    """`(kind, from_logits)` of a Keras loss: kind is 'sparse', 'categorical',
    'binary' or None (not a classification loss Keras names)."""
    name = loss if isinstance(loss, str) else (
        getattr(loss, "name", None) or getattr(loss, "__name__", "")
    )
    name = str(name).lower()
    from_logits = getattr(loss, "from_logits", False)
    if "sparse_categorical" in name:
        return "sparse", from_logits
    if "categorical" in name:
        return "categorical", from_logits
    if "binary" in name:
        return "binary", from_logits
    return None, from_logits


def accuracy_for(loss, name):
    """The accuracy metric that matches `loss`'s label format, or None."""
    kind, from_logits = _loss_kind(loss)
    if kind == "sparse":
        return keras.metrics.SparseCategoricalAccuracy(name=name)
    if kind == "categorical":
        return keras.metrics.CategoricalAccuracy(name=name)
    if kind == "binary":
        return keras.metrics.BinaryAccuracy(
            name=name, threshold=0.0 if from_logits else 0.5
        )
    return None


def _last_layer(model):
    layer = model
    while getattr(layer, "layers", None):
        layer = layer.layers[-1]
    return layer


def ends_in_linear(model):
    """Whether the last layer of `model` is a projection without activation
    (`Dense`, `EinsumDense`, a convolution), so it returns logits."""
    layer = _last_layer(model)
    if not isinstance(
        layer,
        (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D,
         keras.layers.Conv2D, keras.layers.Conv3D),
    ):
        return False
    activation = getattr(layer, "activation", None)
    return activation is None or activation is keras.activations.linear or (
        getattr(activation, "__name__", None) == "linear"
    )


def check_output_kind(model, from_logits, argument, model_name):
    """Rejects `from_logits` that contradicts how `model` visibly ends.

    A softmax/sigmoid output read as logits, or a linear output read as
    probabilities, gives wrong losses without any error.
    """
    if from_logits and ends_in_softmax(model):
        raise ValueError(
            f"`{model_name}` ends in a softmax/sigmoid, so it returns "
            f"probabilities, but `{argument}=True` reads its outputs as "
            f"logits. Pass `{argument}=False`, or remove the final activation "
            "(e.g. `classifier_activation=None` for `keras.applications`). "
            f"Received: {argument}=True"
        )
    if not from_logits and ends_in_linear(model):
        raise ValueError(
            f"`{model_name}` ends in a layer without activation, so it "
            f"returns logits, but `{argument}=False` reads its outputs as "
            f"probabilities. Pass `{argument}=True`. Received: {argument}=False"
        )


def ends_in_softmax(model):
    """Whether the last layer of `model` applies a softmax (or sigmoid)."""
    layer = _last_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return activation in (
        keras.activations.softmax,
        keras.activations.sigmoid,
    ) or getattr(activation, "__name__", None) in ("softmax", "sigmoid")


def check_from_logits(loss, model, argument, model_name):
    """Rejects a loss on logits applied to a head that ends in a softmax,
    and a loss whose reduction is not a mean over the batch (the models
    report and train on per-example means weighted by counts, so `"sum"` or
    `None` would make figures depend on the batch size, or be ignored)."""
    reduction = getattr(loss, "reduction", "sum_over_batch_size")
    if reduction != "sum_over_batch_size":
        raise ValueError(
            f"`{argument}` must reduce by the batch mean (Keras's default "
            "`reduction='sum_over_batch_size'`): the model averages it over "
            "the examples (weighted by `sample_weight`) itself. Received: "
            f"{argument}={getattr(loss, 'name', loss)!r} with "
            f"reduction={reduction!r}"
        )
    kind, from_logits = _loss_kind(loss)
    if kind is not None and from_logits and ends_in_softmax(model):
        raise ValueError(
            f"`{model_name}` ends in a softmax/sigmoid, but `{argument}` "
            "expects logits (`from_logits=True`), so the loss would treat "
            "probabilities as logits. Remove the final activation, or pass "
            f"`{argument}=keras.losses.{type(loss).__name__}"
            "(from_logits=False)`. Received: "
            f"{argument}={getattr(loss, 'name', loss)!r} with from_logits=True"
        )
    if kind is not None and not from_logits and ends_in_linear(model):
        raise ValueError(
            f"`{model_name}` ends in a layer without activation, so it returns "
            f"logits, but `{argument}` expects probabilities "
            "(`from_logits=False`, as a loss given by name such as "
            "'sparse_categorical_crossentropy' does), so the loss would treat "
            "logits as probabilities. Pass a loss object with "
            "`from_logits=True`, e.g. "
            "`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`. "
            f"Received: {argument}={getattr(loss, 'name', loss)!r} with "
            "from_logits=False"
        )


def copy_metric(identifier, loss, name=None):
    """A fresh metric for `identifier` ('accuracy' resolved from `loss`)."""
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        metric = accuracy_for(loss, "accuracy")
        if metric is None:
            raise ValueError(
                "`metrics=['accuracy']` needs a classification loss (sparse / "
                "categorical / binary cross-entropy) to know the label "
                f"format. Received: loss={loss!r}. Pass a metric object "
                "such as `keras.metrics.SparseCategoricalAccuracy()`."
            )
    elif isinstance(identifier, keras.metrics.Metric):
        metric = type(identifier).from_config(identifier.get_config())
    else:
        metric = keras.metrics.get(identifier)
        if not isinstance(metric, keras.metrics.Metric):
            metric = keras.metrics.MeanMetricWrapper(
                metric, name=getattr(metric, "__name__", str(identifier))
            )
    if name is not None:
        metric.name = name
    return metric


def reject_compile_kwargs(model, kwargs, weights_hint):
    """Compile arguments the package's models cannot honour: clear errors."""
    if kwargs.get("loss_weights") is not None:
        raise ValueError(
            f"`{type(model).__name__}` weights its loss terms through "
            f"{weights_hint}, not `compile(loss_weights=...)`. Received: "
            f"loss_weights={kwargs['loss_weights']!r}"
        )
    if kwargs.get("weighted_metrics"):
        raise ValueError(
            f"`{type(model).__name__}` does not support `weighted_metrics`: "
            "sample weights weight the loss only. Pass the metrics as "
            "`metrics=`. Received: weighted_metrics="
            f"{kwargs['weighted_metrics']!r}"
        )
    kwargs.pop("loss_weights", None)
    kwargs.pop("weighted_metrics", None)
    return kwargs


def _length(value):
    if value is None:
        return None
    lengths = {len(v) for v in keras.tree.flatten(value) if hasattr(v, "__len__")}
    return lengths.pop() if len(lengths) == 1 else None


def _cycle_index(m, n):
    return np.concatenate(
        [np.tile(np.arange(m), n // m), np.random.permutation(m)[: n % m]]
    )


def _take(value, index):
    if value is None:
        return None
    return keras.tree.map_structure(lambda a: np.asarray(a)[index], value)


def pair_domains(x, y, sample_weight):
    """Cycles the smaller domain of `{"source": a, "target": b}` arrays.

    Both domains are brought to `n = max(n_source, n_target)` examples: the
    smaller side is repeated in whole passes, and the last, partial pass takes
    a random subset (NumPy's global generator, so `keras.utils.set_random_seed`
    fixes it). Source labels and sample weights follow their inputs. `fit`
    then shuffles the pairs every epoch as usual; an epoch is `n` pairs.

    Returns:
        `(x, y, sample_weight, resampled)`.
    """
    n_source, n_target = _length(x["source"]), _length(x["target"])
    if n_source is None or n_target is None or n_source == n_target:
        return x, y, sample_weight, False
    n = max(n_source, n_target)
    x = dict(x)
    if n_source < n:
        index = _cycle_index(n_source, n)
        x["source"] = _take(x["source"], index)
        y = _take(y, index)
        sample_weight = _take(sample_weight, index)
    else:
        x["target"] = _take(x["target"], _cycle_index(n_target, n))
    return x, y, sample_weight, True


class DomainModelBase(keras.Model):
    """feature_extractor -> task_head, trained on source + target batches.

    Subclasses add the alignment term in `_alignment_outputs` and
    `_alignment_loss` (which returns the *weighted* term and updates its own
    trackers with `sample_weight=self._pair_count(y_pred)`), list their
    trackers in `_alignment_trackers`, and report them in
    `_alignment_metrics`.

    Epoch figures are exact (see `_reporting`): each tracker is weighted by
    its batch's count of examples, and `loss` is the sum of the terms'
    count-weighted means.
    """

    def __init__(self, feature_extractor, task_head, task_loss=None, **kwargs):
        super().__init__(**kwargs)
        self.feature_extractor = _check_submodel(
            feature_extractor, "feature_extractor"
        )
        self.task_head = _check_submodel(task_head, "task_head")
        self._task_loss_argument = task_loss
        if task_loss is None:
            task_loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            )
        self.task_loss_tracker = loss_mean("task_loss")
        self._total_loss = TotalLoss(
            ("task", "target_task", "alignment", "regularization")
        )
        self._user_metrics = {"": [], "source": [], "target": []}
        self._set_task_loss(keras.losses.get(task_loss))

    def _set_task_loss(self, task_loss):
        # Replaced metrics stay tracked by the model: keep them out of
        # `metrics`.
        self._retired_ids = tuple(getattr(self, "_retired_ids", ())) + tuple(
            id(getattr(self, name, None))
            for name in ("source_accuracy", "target_accuracy", "accuracy")
            if getattr(self, name, None) is not None
        )
        if not isinstance(task_loss, keras.losses.Loss):
            # A loss function (e.g. from a string): reduce it and take
            # `sample_weight` like a `Loss` (its third argument is another).
            task_loss = _FunctionLoss(task_loss)
        self.task_loss = task_loss
        self.source_accuracy = accuracy_for(task_loss, "source_accuracy")
        self.target_accuracy = accuracy_for(task_loss, "target_accuracy")
        self.accuracy = accuracy_for(task_loss, "accuracy")

    # -- compile -----------------------------------------------------------

    # The terms (besides the task loss) that apply a softmax to the task
    # head's outputs; a model with such terms needs a head that returns
    # logits.
    _logit_terms = None

    def _check_logits_head(self):
        if not self._logit_terms:
            return
        kind, from_logits = _loss_kind(self.task_loss)
        if ends_in_softmax(self.task_head) or (kind is not None and not from_logits):
            raise ValueError(
                f"`{type(self).__name__}` needs a task head that returns "
                f"logits: its {self._logit_terms} apply a softmax to the "
                "head's outputs, so probabilities would be softmaxed twice. "
                "Remove the head's final activation and use a loss on "
                "logits, e.g. `keras.losses.SparseCategoricalCrossentropy("
                "from_logits=True)` (the default). Received: task loss "
                f"{getattr(self.task_loss, 'name', self.task_loss)!r} with "
                f"from_logits={from_logits}"
                + (", a head ending in a softmax/sigmoid"
                   if ends_in_softmax(self.task_head) else "")
            )

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training.

        Args:
            optimizer: the optimizer (one, for every part).
            loss: optional task loss, used in place of the constructor's
                `task_loss` (default sparse categorical cross-entropy on
                logits); giving both, different, raises.
            metrics: optional list of extra metrics on the task head's
                outputs, reported as `<name>` (plain inputs),
                `source_<name>` and `target_<name>` (dict inputs).
                `"accuracy"` matches the task loss (and is always reported
                for a classification loss).
            **kwargs: `keras.Model.compile` arguments (`jit_compile`,
                `run_eagerly`, `steps_per_execution`, ...). Not
                `loss_weights` or `weighted_metrics`.
        """
        name = type(self).__name__
        kwargs = reject_compile_kwargs(
            self, kwargs, "its constructor's weight arguments"
        )
        if loss is not None:
            if self._task_loss_argument is not None and (
                keras.saving.serialize_keras_object(keras.losses.get(loss))
                != keras.saving.serialize_keras_object(self.task_loss)
            ):
                raise ValueError(
                    f"`{name}` got a task loss twice: `task_loss=` in the "
                    "constructor and `loss=` in `compile`. Pass one. "
                    f"Received: task_loss={self._task_loss_argument!r}, "
                    f"loss={loss!r}"
                )
            self._set_task_loss(keras.losses.get(loss))
        check_from_logits(self.task_loss, self.task_head, "task_loss", "task_head")
        self._check_logits_head()
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise ValueError(
                f"`{name}.compile(metrics=...)` takes a list of metrics, "
                "applied to the task head on each domain. Received: "
                f"metrics={metrics!r}"
            )
        builtin = {"accuracy"} if self.accuracy is not None else set()
        self._retired_ids = tuple(self._retired_ids) + tuple(
            id(m) for ms in self._user_metrics.values() for m in ms
        )
        self._user_metrics = {"": [], "source": [], "target": []}
        for identifier in metrics or []:
            plain = copy_metric(identifier, self.task_loss)
            if plain.name in builtin:
                continue
            builtin.add(plain.name)
            self._user_metrics[""].append(plain)
            for domain in _DOMAINS:
                self._user_metrics[domain].append(
                    copy_metric(identifier, self.task_loss, f"{domain}_{plain.name}")
                )
        super().compile(optimizer=optimizer, loss=None, metrics=None, **kwargs)
        self._compile_config.config["loss"] = loss
        self._compile_config.config["metrics"] = metrics

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            # Created now so that `load_model` restores the optimizer state.
            self.optimizer.build(self.trainable_variables)

    # -- data --------------------------------------------------------------

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`; `{"source": a, "target": b}` arrays of different
        lengths are paired by cycling the smaller side (see the class
        docstring)."""
        if isinstance(x, dict) and "source" in x and "target" in x and not args:
            x, y, weights, resampled = pair_domains(
                x, y, kwargs.get("sample_weight")
            )
            if resampled:
                if kwargs.get("validation_split"):
                    raise ValueError(
                        "`validation_split` would validate on the repeated "
                        "copies of the smaller domain. Pass "
                        "`validation_data=` instead. Received: "
                        f"validation_split={kwargs['validation_split']!r}"
                    )
                if weights is not None:
                    kwargs["sample_weight"] = weights
        if not args:
            build_before_fit(
                self, x, y, kwargs.get("sample_weight"), kwargs.get("batch_size")
            )
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if isinstance(x, dict) and "source" in x and "target" in x:
            n_source, n_target = _length(x["source"]), _length(x["target"])
            if n_source is not None and n_target is not None and n_source != n_target:
                raise ValueError(
                    f"`{type(self).__name__}.evaluate` on both domains needs "
                    "as many source as target examples (each is counted "
                    "once). Evaluate one domain at a time, e.g. "
                    "`evaluate({'target': x}, {'target': y})`. Received: "
                    f"{n_source} source and {n_target} target examples"
                )
        return super().evaluate(x, y, *args, **kwargs)

    # -- inputs ------------------------------------------------------------

    def _split_inputs(self, inputs):
        unknown = sorted(set(inputs) - set(_DOMAINS))
        if unknown or not inputs:
            raise ValueError(
                f"`{type(self).__name__}` takes a dict with keys 'source' "
                "and/or 'target' (or a plain tensor for prediction). "
                f"Received keys: {sorted(inputs)}"
            )
        return inputs.get("source"), inputs.get("target")

    def _split_labels(self, y):
        if y is None:
            return None, None
        if isinstance(y, dict):
            unknown = sorted(set(y) - set(_DOMAINS))
            if unknown:
                raise ValueError(
                    "Labels given as a dict take keys 'source' and/or "
                    f"'target'. Received keys: {sorted(y)}"
                )
            return y.get("source"), y.get("target")
        return y, None

    def call(self, inputs, training=None):
        if not isinstance(inputs, dict):
            return self.task_head(
                self.feature_extractor(inputs, training=training),
                training=training,
            )
        source, target = self._split_inputs(inputs)
        parts = [t for t in (source, target) if t is not None]
        # One pass over the concatenated batch: BatchNorm sees both domains,
        # as in Ganin et al.'s implementation, so its moving statistics match
        # what the model meets at test time on either domain.
        batch = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)
        features = self.feature_extractor(batch, training=training)
        logits = self.task_head(features, training=training)
        outputs = {}
        n_source = 0 if source is None else ops.shape(source)[0]
        if source is not None:
            outputs["source"] = logits[:n_source]
        if target is not None:
            outputs["target"] = logits[n_source:]
        outputs.update(
            self._alignment_outputs(features, n_source, source, target, training)
        )
        return outputs

    # -- loss and metrics --------------------------------------------------

    def _pair_count(self, y_pred):
        """Examples of both domains in the batch (count of pair terms)."""
        return batch_size(y_pred["source"]) + batch_size(y_pred["target"])

    def _task_term(self, y, y_pred, sample_weight):
        return ops.cast(self.task_loss(y, y_pred, sample_weight), "float32")

    def _regularization(self, total):
        if self.losses:
            value = sum(ops.cast(loss, "float32") for loss in self.losses)
            self._total_loss.add("regularization", value, 1.0)
            total = total + value
        return total

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        check_tf_distribute(self)
        if y_pred is None:
            y_pred = self(x, training=training)
        if not isinstance(x, dict):
            task = self._task_term(y, y_pred, sample_weight)
            count = batch_size(y_pred)
            self.task_loss_tracker.update_state(task, sample_weight=count)
            self._total_loss.add("task", task, count)
            return self._regularization(task)
        y_source, y_target = self._split_labels(y)
        has_source, has_target = "source" in y_pred, "target" in y_pred
        if training:
            if not (has_source and has_target):
                raise ValueError(
                    f"`{type(self).__name__}` trains on batches that carry "
                    "both labelled source data and unlabelled target data; "
                    "the target batches never arrived. Pass "
                    "`fit({'source': x_source, 'target': x_target}, y_source)` "
                    "or a zipped dataset of such pairs. Received input keys: "
                    f"{sorted(x)}"
                )
            if y_source is None:
                raise ValueError(
                    "Training needs source labels: pass them as `y` or as "
                    "`y={'source': ...}`. Received: y=None"
                )
            if y_target is not None:
                raise ValueError(
                    "Target labels must not be used for training. Pass them "
                    "only in `validation_data` or `evaluate`, as "
                    "`({'target': x}, {'target': y})`. Received label keys: "
                    f"{sorted(y)}"
                )
        total = ops.zeros((), "float32")
        if y_source is not None:
            if not has_source:
                raise ValueError(
                    "Source labels were given without source inputs. "
                    f"Received input keys: {sorted(x)}"
                )
            task = self._task_term(y_source, y_pred["source"], sample_weight)
            count = batch_size(y_pred["source"])
            self.task_loss_tracker.update_state(task, sample_weight=count)
            self._total_loss.add("task", task, count)
            total = total + task
        if y_target is not None:
            if not has_target:
                raise ValueError(
                    "Target labels were given without target inputs. "
                    f"Received input keys: {sorted(x)}"
                )
            target_task = self._task_term(y_target, y_pred["target"], None)
            count = batch_size(y_pred["target"])
            if y_source is None:
                self.task_loss_tracker.update_state(
                    target_task, sample_weight=count
                )
            self._total_loss.add("target_task", target_task, count)
            total = total + target_task
        if has_source and has_target:
            alignment = ops.cast(self._alignment_loss(y_pred), "float32")
            self._total_loss.add(
                "alignment", alignment, self._alignment_count(y_pred)
            )
            total = total + alignment
        return self._regularization(total)

    def _update(self, results, metric, y, y_pred):
        if metric is not None:
            metric.update_state(y, y_pred)
            results[metric.name] = metric.result()

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Only the figures this batch updated: a figure that got no data
        # (target accuracy in training) is left out rather than shown as 0.
        results = {"loss": self._total_loss.result()}
        if not isinstance(x, dict):
            results["task_loss"] = self.task_loss_tracker.result()
            self._update(results, self.accuracy, y, y_pred)
            for metric in self._user_metrics[""]:
                self._update(results, metric, y, y_pred)
            return results
        y_source, y_target = self._split_labels(y)
        if y_source is not None or y_target is not None:
            results["task_loss"] = self.task_loss_tracker.result()
        for domain, labels, accuracy in (
            ("source", y_source, self.source_accuracy),
            ("target", y_target, self.target_accuracy),
        ):
            if labels is None:
                continue
            self._update(results, accuracy, labels, y_pred[domain])
            for metric in self._user_metrics[domain]:
                self._update(results, metric, labels, y_pred[domain])
        if "source" in y_pred and "target" in y_pred:
            results.update(self._alignment_metrics(y_pred))
        return results

    @property
    def metrics(self):
        own = [self.task_loss_tracker]
        own += [
            m
            for m in (self.accuracy, self.source_accuracy, self.target_accuracy)
            if m is not None
        ]
        for metrics in self._user_metrics.values():
            own += metrics
        own += self._alignment_trackers()
        retired = set(self._retired_ids)
        return reported_metrics(
            [m for m in super().metrics if id(m) not in retired],
            own,
            self._total_loss,
        )

    # -- hooks -------------------------------------------------------------

    def _alignment_outputs(self, features, n_source, source, target, training):
        return {}

    def _alignment_loss(self, y_pred):
        return ops.zeros((), "float32")

    def _alignment_metrics(self, y_pred):
        return {}

    def _alignment_count(self, y_pred):
        """Weight of this batch's alignment term in the epoch's `loss`."""
        return self._pair_count(y_pred)

    def _alignment_trackers(self):
        return []

    # -- serialization -----------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "feature_extractor": keras.saving.serialize_keras_object(
                    self.feature_extractor
                ),
                "task_head": keras.saving.serialize_keras_object(self.task_head),
                "task_loss": keras.saving.serialize_keras_object(
                    self._task_loss_argument
                ),
            }
        )
        return config

    @classmethod
    def _deserialize(cls, config, keys):
        config = dict(config)
        for key in keys:
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return config
