"""Shared plumbing of the domain adaptation models (private)."""

import keras
from keras import ops

_DOMAINS = ("source", "target")


def _check_submodel(value, name):
    if not isinstance(value, keras.layers.Layer):
        raise ValueError(
            f"`{name}` must be a Keras model or layer. "
            f"Received: {name}={value!r}"
        )
    return value


class DomainModelBase(keras.Model):
    """feature_extractor -> task_head, trained on source + target batches.

    Subclasses add the alignment term in `_alignment_outputs` and
    `_alignment_loss`.
    """

    def __init__(self, feature_extractor, task_head, task_loss=None, **kwargs):
        super().__init__(**kwargs)
        self.feature_extractor = _check_submodel(
            feature_extractor, "feature_extractor"
        )
        self.task_head = _check_submodel(task_head, "task_head")
        if task_loss is None:
            task_loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            )
        self.task_loss = keras.losses.get(task_loss)
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.source_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="source_accuracy"
        )
        self.target_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="target_accuracy"
        )
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

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

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if not isinstance(x, dict):
            task = ops.cast(self.task_loss(y, y_pred, sample_weight), "float32")
            self.task_loss_tracker.update_state(task)
            return task
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
            task = ops.cast(
                self.task_loss(y_source, y_pred["source"], sample_weight),
                "float32",
            )
            self.task_loss_tracker.update_state(task)
            total = total + task
        if y_target is not None:
            if not has_target:
                raise ValueError(
                    "Target labels were given without target inputs. "
                    f"Received input keys: {sorted(x)}"
                )
            target_task = ops.cast(
                self.task_loss(y_target, y_pred["target"]), "float32"
            )
            if y_source is None:
                self.task_loss_tracker.update_state(target_task)
            total = total + target_task
        if has_source and has_target:
            total = total + self._alignment_loss(y_pred)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        results = {"loss": self._loss_tracker.result()}
        if not isinstance(x, dict):
            self.accuracy.update_state(y, y_pred)
            results["task_loss"] = self.task_loss_tracker.result()
            results["accuracy"] = self.accuracy.result()
            return results
        y_source, y_target = self._split_labels(y)
        if y_source is not None or y_target is not None:
            results["task_loss"] = self.task_loss_tracker.result()
        if y_source is not None:
            self.source_accuracy.update_state(y_source, y_pred["source"])
            results["source_accuracy"] = self.source_accuracy.result()
        if y_target is not None:
            self.target_accuracy.update_state(y_target, y_pred["target"])
            results["target_accuracy"] = self.target_accuracy.result()
        if "source" in y_pred and "target" in y_pred:
            results.update(self._alignment_metrics(y_pred))
        return results

    def reset_metrics(self):
        super().reset_metrics()
        for metric in self.metrics:
            metric.reset_state()

    # -- hooks -------------------------------------------------------------

    def _alignment_outputs(self, features, n_source, source, target, training):
        return {}

    def _alignment_loss(self, y_pred):
        return ops.zeros((), "float32")

    def _alignment_metrics(self, y_pred):
        return {}

    # -- serialization -----------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "feature_extractor": keras.saving.serialize_keras_object(
                    self.feature_extractor
                ),
                "task_head": keras.saving.serialize_keras_object(self.task_head),
                "task_loss": keras.saving.serialize_keras_object(self.task_loss),
            }
        )
        return config

    @classmethod
    def _deserialize(cls, config, keys):
        config = dict(config)
        for key in keys:
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return config
