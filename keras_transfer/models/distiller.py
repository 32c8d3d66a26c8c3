import keras
import numpy as np
from keras import ops

from keras_transfer._validation import check_int
from keras_transfer.datasets.tf_data import from_slices
from keras_transfer.distribution import check_tf_distribute
from keras_transfer.losses.distillation import KLDistillation
from keras_transfer.losses.distillation import _check_bool
from keras_transfer.losses.distillation import _check_temperature
from keras_transfer.models._domain import check_from_logits
from keras_transfer.models._domain import check_output_kind
from keras_transfer.models._fit import build_before_fit
from keras_transfer.models._reporting import batch_size
from keras_transfer.models._reporting import loss_mean
from keras_transfer.models._reporting import reported_metrics

INPUTS_KEY = "inputs"
TEACHER_OUTPUTS_KEY = "teacher_outputs"
_FINAL = "final_output"


def _is_tf_dataset(x):
    # Checked by class name so that TensorFlow is never imported here.
    return any(
        cls.__name__ in ("DatasetV2", "DatasetV1") for cls in type(x).__mro__
    )


def _single_symbolic(model, attr):
    tensors = getattr(model, attr, None)
    if not tensors or len(tensors) != 1:
        return None
    return tensors[0]


def _check_models(teacher, student):
    for name, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`{name}` must be a `keras.Model`. "
                f"Received: {name}={model!r}"
            )
    t_in = _single_symbolic(teacher, "inputs")
    s_in = _single_symbolic(student, "inputs")
    if t_in is not None and s_in is not None:
        if tuple(t_in.shape[1:]) != tuple(s_in.shape[1:]):
            raise ValueError(
                "`teacher` and `student` must take inputs of the same shape. "
                f"Received: teacher input shape={tuple(t_in.shape)}, student "
                f"input shape={tuple(s_in.shape)}"
            )
    t_out = _single_symbolic(teacher, "outputs")
    s_out = _single_symbolic(student, "outputs")
    if t_out is not None and s_out is not None:
        if t_out.shape[-1] != s_out.shape[-1]:
            raise ValueError(
                "`teacher` and `student` must have the same output width "
                "(one score per class). Received: teacher output shape="
                f"{tuple(t_out.shape)}, student output shape="
                f"{tuple(s_out.shape)}"
            )


def _check_hints(hints, teacher, student):
    if hints is None:
        return []
    if isinstance(hints, dict):
        hints = list(hints.items())
    if not isinstance(hints, (list, tuple)) or not all(
        isinstance(h, (list, tuple))
        and len(h) == 2
        and all(isinstance(n, str) for n in h)
        for h in hints
    ):
        raise ValueError(
            "`hints` must be a dict or a list of (teacher_layer_name, "
            f"student_layer_name) string pairs. Received: hints={hints!r}"
        )
    hints = [tuple(h) for h in hints]
    for model, role, index in ((teacher, "teacher", 0), (student, "student", 1)):
        if getattr(model, "inputs", None) is None:
            raise ValueError(
                f"`hints` need a Functional or Sequential `{role}` (symbolic "
                f"layer outputs). Received: {role}={model.name!r}, a "
                "subclassed model"
            )
        names = [layer.name for layer in model.layers]
        for pair in hints:
            if pair[index] not in names:
                raise ValueError(
                    f"`hints` name a {role} layer that does not exist. "
                    f"Received: hints={hints!r}, missing {pair[index]!r}. "
                    f"Available {role} layers: {names}"
                )
    for t_name, s_name in hints:
        t_shape = tuple(teacher.get_layer(t_name).output.shape[1:])
        s_shape = tuple(student.get_layer(s_name).output.shape[1:])
        if t_shape != s_shape:
            raise ValueError(
                "Each hint pair needs layer outputs of the same shape. "
                f"Received: hint ({t_name!r}, {s_name!r}) with teacher shape "
                f"{t_shape} and student shape {s_shape}. Add a projection "
                "layer (e.g. `Dense`) to the student so its hint layer "
                "matches the teacher's."
            )
    return hints


def _without_compile(config):
    # The frozen teacher never trains in the distiller: restoring its own
    # compile settings on load would rebuild its optimizer on no trainable
    # variables, and Keras would warn on every load that it skips the saved
    # optimizer state.
    config = dict(config)
    config.pop("compile_config", None)
    return config


def _model_inputs(model):
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _feature_model(model, layer_names, name):
    outputs = {_FINAL: model.outputs[0]}
    for layer_name in layer_names:
        outputs[layer_name] = model.get_layer(layer_name).output
    return keras.Model(_model_inputs(model), outputs, name=name)


@keras.saving.register_keras_serializable(package="keras_transfer")
class Distiller(keras.distillation.Distiller):
    """Knowledge distillation with the Hinton loss, hints and a teacher cache.

    A `keras.distillation.Distiller` (so it is accepted wherever Keras's is)
    configured by `alpha` and `temperature`, trained with ordinary `compile` /
    `fit` / `evaluate`. Its loss is

        alpha * (T^2 * KL(softmax(t / T) || softmax(s / T))
                 + hint_weight * sum_hints MSE(f_t, f_s))
        + (1 - alpha) * CE(labels, s)

    where `t` and `s` are the teacher's and student's outputs, `T` is
    `temperature` and `f_t`, `f_s` are the outputs of the named intermediate
    layers in `hints` (FitNets). The `T^2` factor keeps gradient magnitudes
    comparable across temperatures. `CE` is the loss given to `compile`
    (default: sparse categorical cross-entropy matching `from_logits`).

    The teacher is frozen (`trainable = False`) and always runs with
    `training=False`, so its Dropout is off and its BatchNormalization uses
    moving statistics. `call`, `predict` and the compiled metrics are the
    student's; `distiller.student` is the trained student, ready to save on
    its own.

    `fit`'s `sample_weight` weights the label term `CE` only (the teacher's
    soft targets exist for every example). Every epoch figure
    (`student_loss`, `distillation_loss`, `hint_loss`, `total_loss`, `loss`,
    compiled metrics; in logs, validation and `evaluate`) equals the figure on
    all the data at once, whatever the batch size, and `EarlyStopping` /
    `ModelCheckpoint` know each loss is minimised without `mode=`.

    When the input pipeline has no random augmentation, the teacher's outputs
    are the same every epoch: `cache_teacher_outputs(x)` computes them once
    and stores them next to each example, as `{"inputs": x,
    "teacher_outputs": ...}`. Passing that to `fit` skips the teacher's
    forward pass, and since the outputs travel with their examples, shuffling
    keeps them matched.

    Args:
        teacher: a trained `keras.Model`. Frozen by the distiller.
        student: the `keras.Model` to train. Same input shape and output
            width as `teacher`.
        alpha: weight in `[0, 1]` of the distillation term; `1 - alpha`
            weights the label loss. Defaults to `0.9`.
        temperature: softmax temperature `T > 0`. Defaults to `4.0`.
        teacher_from_logits: whether the teacher returns logits (`True`,
            default) or probabilities (ends in a softmax).
        from_logits: whether the student returns logits (`True`, default) or
            probabilities. Also sets the default label loss.
        hints: optional dict or list of `(teacher_layer_name,
            student_layer_name)` pairs whose outputs (of equal shape) are
            matched with a mean squared error.
        hint_weight: weight of the summed hint losses. Defaults to `1.0`.
        name: model name. Defaults to `"distiller"`.

    Example:

    ```python
    distiller = keras_transfer.models.Distiller(
        teacher, student, alpha=0.9, temperature=4.0
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(distiller.cache_teacher_outputs(x_train), y_train)
    distiller.evaluate(x_test, y_test)  # the student's accuracy
    distiller.student.save("student.keras")
    ```

    Reference:
        [Hinton et al., 2015](https://arxiv.org/abs/1503.02531),
        [Romero et al., 2015 (FitNets)](https://arxiv.org/abs/1412.6550)
    """

    def __init__(
        self,
        teacher,
        student,
        alpha=0.9,
        temperature=4.0,
        teacher_from_logits=True,
        from_logits=True,
        hints=None,
        hint_weight=1.0,
        name="distiller",
        **kwargs,
    ):
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not 0.0 <= alpha <= 1.0
        ):
            raise ValueError(
                f"`alpha` must be a number in [0, 1]. Received: alpha={alpha!r}"
            )
        temperature = _check_temperature(temperature)
        _check_bool("teacher_from_logits", teacher_from_logits)
        _check_bool("from_logits", from_logits)
        if (
            isinstance(hint_weight, bool)
            or not isinstance(hint_weight, (int, float))
            or hint_weight < 0
        ):
            raise ValueError(
                "`hint_weight` must be a non-negative number. "
                f"Received: hint_weight={hint_weight!r}"
            )
        _check_models(teacher, student)
        check_output_kind(teacher, teacher_from_logits, "teacher_from_logits", "teacher")
        check_output_kind(student, from_logits, "from_logits", "student")
        hints = _check_hints(hints, teacher, student)

        losses = [KLDistillation(temperature, teacher_from_logits, from_logits)]
        losses += [
            keras.distillation.FeatureDistillation("mse", t_name, s_name)
            for t_name, s_name in hints
        ]
        super().__init__(
            teacher=teacher,
            student=student,
            distillation_losses=losses,
            distillation_loss_weights=[1.0] + [float(hint_weight)] * len(hints),
            student_loss_weight=1.0 - float(alpha),
            name=name,
            **kwargs,
        )
        self.alpha = float(alpha)
        self.temperature = temperature
        self.teacher_from_logits = teacher_from_logits
        self.from_logits = from_logits
        self.hints = hints
        self.hint_weight = float(hint_weight)
        self.hint_loss_tracker = loss_mean("hint_loss")
        # Keras's own trackers, minimised, updated with batch counts.
        for tracker in (
            self.student_loss_tracker,
            self.distillation_loss_tracker,
            self.total_loss_tracker,
        ):
            tracker._direction = "down"
        teacher_layers = [t for t, _ in hints]
        student_layers = [s for _, s in hints]
        self._teacher_features = (
            _feature_model(teacher, teacher_layers, f"{teacher.name}_features")
            if hints
            else None
        )
        self._student_features = (
            _feature_model(student, student_layers, f"{student.name}_features")
            if hints
            else None
        )

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training; `loss` is the label loss (`CE` above).

        Args:
            optimizer: the student's optimizer. Defaults to `"adam"`.
            loss: the supervised loss on labels. Defaults to
                `keras.losses.SparseCategoricalCrossentropy(from_logits=...)`
                matching the distiller's `from_logits`.
            metrics: list of metrics, computed on the student's outputs.
            **kwargs: passed to `keras.Model.compile`.
        """
        if kwargs.get("loss_weights") is not None:
            raise ValueError(
                "`Distiller` weights its terms through `alpha` and "
                "`hint_weight`, not `compile(loss_weights=...)`. Received: "
                f"loss_weights={kwargs['loss_weights']!r}"
            )
        kwargs.pop("loss_weights", None)
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=self.from_logits
            )
        check_from_logits(keras.losses.get(loss), self.student, "loss", "student")
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        # Keras's Distiller compiles its parent with `loss=None`; keep the
        # real label loss in the saved compile config so that `load_model`
        # recompiles the same way.
        self._compile_config.config["loss"] = loss

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            # Created now so that `load_model` restores the optimizer state.
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, **kwargs):
        if not args:
            build_before_fit(
                self, x, y, kwargs.get("sample_weight"), kwargs.get("batch_size")
            )
        return super().fit(x, y, *args, **kwargs)

    @property
    def metrics(self):
        own = [
            self.student_loss_tracker,
            self.distillation_loss_tracker,
            self.total_loss_tracker,
        ]
        if self.hints:
            own.append(self.hint_loss_tracker)
        # Keras's `loss` tracker is kept: every term is a mean over the
        # batch's examples, so its batch-size weighting is exact here.
        skip = {id(self.hint_loss_tracker)}
        return reported_metrics(
            [m for m in super().metrics if id(m) not in skip], own, None
        )

    def _split_inputs(self, inputs):
        if isinstance(inputs, dict) and TEACHER_OUTPUTS_KEY in inputs:
            return inputs[INPUTS_KEY], inputs[TEACHER_OUTPUTS_KEY]
        return inputs, None

    def call(self, inputs, training=None, **kwargs):
        inputs, _ = self._split_inputs(inputs)
        return self.student(inputs, training=training, **kwargs)

    def _teacher_forward(self, x):
        if self._teacher_features is not None:
            return self._teacher_features(x, training=False)
        return {_FINAL: self.teacher(x, training=False)}

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        check_tf_distribute(self)
        inputs, teacher_outputs = self._split_inputs(x)
        if teacher_outputs is None:
            teacher_outputs = self._teacher_forward(inputs)
        elif not isinstance(teacher_outputs, dict):
            teacher_outputs = {_FINAL: teacher_outputs}
        teacher_outputs = {
            key: ops.stop_gradient(value)
            for key, value in teacher_outputs.items()
        }
        if self.hints:
            # A second student pass to reach the hint layers (FitNets).
            student_outputs = self._student_features(inputs, training=training)
            y_pred = student_outputs[_FINAL]
        elif y_pred is None:
            y_pred = self(inputs, training=training)

        student_loss = ops.zeros((), "float32")
        if y is not None and self.alpha < 1.0:
            student_loss = self._label_loss(y, y_pred, sample_weight)
        kd_loss = self.distillation_losses[0].compute_loss(
            teacher_outputs[_FINAL], y_pred
        )
        hint_loss = ops.zeros((), "float32")
        for t_name, s_name in self.hints:
            hint_loss = hint_loss + ops.mean(
                ops.square(
                    ops.cast(teacher_outputs[t_name], "float32")
                    - ops.cast(student_outputs[s_name], "float32")
                )
            )
        distillation_loss = kd_loss + self.hint_weight * hint_loss
        total_loss = (
            self.alpha * distillation_loss + (1.0 - self.alpha) * student_loss
        )
        # Each term is a mean over the batch's examples: weighted by the
        # batch size, the epoch figure is the mean over all examples.
        count = batch_size(y_pred)
        self.student_loss_tracker.update_state(student_loss, sample_weight=count)
        self.distillation_loss_tracker.update_state(kd_loss, sample_weight=count)
        self.hint_loss_tracker.update_state(hint_loss, sample_weight=count)
        self.total_loss_tracker.update_state(total_loss, sample_weight=count)
        if self.student.losses:
            total_loss = total_loss + ops.cast(
                ops.sum(self.student.losses), "float32"
            )
        return total_loss

    def _label_loss(self, y, y_pred, sample_weight):
        loss_fn = self._student_loss
        if isinstance(loss_fn, keras.losses.Loss):
            value = loss_fn(y, y_pred, sample_weight=sample_weight)
        else:
            value = ops.cast(loss_fn(y, y_pred), "float32")
            if sample_weight is not None:
                value = value * ops.reshape(
                    ops.cast(sample_weight, "float32"), ops.shape(value)
                )
            value = ops.mean(value)
        return ops.cast(value, "float32")

    def reset_metrics(self):
        super().reset_metrics()
        self.hint_loss_tracker.reset_state()

    def cache_teacher_outputs(self, x, batch_size=256):
        """Runs the teacher once and attaches its outputs to each example.

        Use only when `x` has no random augmentation: the cached outputs are
        those of the examples as given here, reused every epoch.

        Args:
            x: NumPy array (or dict/list of arrays) of inputs, or a
                `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)`
                elements, batched or not. A dataset is read once, in order,
                so it must be finite and deterministic; shuffle, repeat and
                batch the returned one instead.
            batch_size: batch size of the teacher pass over arrays. Defaults
                to `256`.

        Returns:
            For arrays: `{"inputs": x, "teacher_outputs": outputs}`, to pass
            to `fit` as `x` (with the labels as `y`, shuffled by `fit` as
            usual). For a dataset: an unbatched `tf.data.Dataset` of
            `({"inputs": x, "teacher_outputs": outputs}, y, ...)`.
        """
        batch_size = check_int(batch_size, "batch_size")
        if _is_tf_dataset(x):
            return self._cache_dataset(x)
        extractor = self._teacher_features
        if extractor is None:
            extractor = (
                _feature_model(self.teacher, [], "teacher_outputs")
                if getattr(self.teacher, "inputs", None)
                else None
            )
        if extractor is not None:
            outputs = extractor.predict(x, batch_size=batch_size, verbose=0)
        else:
            outputs = {
                _FINAL: self.teacher.predict(x, batch_size=batch_size, verbose=0)
            }
        return {INPUTS_KEY: x, TEACHER_OUTPUTS_KEY: outputs}

    def _cache_dataset(self, dataset):
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or not 2 <= len(spec) <= 3:
            raise ValueError(
                "`cache_teacher_outputs` needs a dataset of `(x, y)` or "
                "`(x, y, sample_weight)` elements. Received: element_spec="
                f"{spec!r}"
            )
        first = spec[0]
        batched = (
            hasattr(first, "shape")
            and self.teacher.inputs is not None
            and len(first.shape) == len(self.teacher.inputs[0].shape)
        )
        if not batched:
            dataset = dataset.batch(256)
        parts = None
        for element in dataset:
            x = element[0]
            outputs = self._teacher_forward(x)
            outputs = {k: ops.convert_to_numpy(v) for k, v in outputs.items()}
            rest = [keras.tree.map_structure(np.asarray, e) for e in element]
            if parts is None:
                parts = [[r] for r in rest] + [[outputs]]
            else:
                for store, value in zip(parts, rest + [outputs]):
                    store.append(value)
        if parts is None:
            raise ValueError(
                "`cache_teacher_outputs` received an empty dataset."
            )

        def concat(values):
            return keras.tree.map_structure(
                lambda *arrays: np.concatenate(arrays), *values
            )

        columns = [concat(store) for store in parts]
        x, rest, outputs = columns[0], columns[1:-1], columns[-1]
        features = {INPUTS_KEY: x, TEACHER_OUTPUTS_KEY: outputs}
        return from_slices((features, *rest))

    def get_config(self):
        config = keras.Model.get_config(self)
        config.update(
            {
                "teacher": _without_compile(
                    keras.saving.serialize_keras_object(self.teacher)
                ),
                "student": keras.saving.serialize_keras_object(self.student),
                "alpha": self.alpha,
                "temperature": self.temperature,
                "teacher_from_logits": self.teacher_from_logits,
                "from_logits": self.from_logits,
                "hints": [list(pair) for pair in self.hints] or None,
                "hint_weight": self.hint_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(
            config["teacher"]
        )
        config["student"] = keras.saving.deserialize_keras_object(
            config["student"]
        )
        return cls(**config)
