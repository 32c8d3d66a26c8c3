"""L2-SP: penalise the distance to the pretrained weights, not to zero."""

import math

import keras
import numpy as np
from keras import ops

from keras_transfer._keras_private import all_layers
from keras_transfer._keras_private import trainable_capable
from keras_transfer._validation import check_nonnegative


def _resolve_layers(model, layers, argument):
    """Layer names (unique in `model`) for a list of layers or names."""
    if layers is None:
        return None
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    candidates = all_layers(model, include_self=False)
    by_name = {}
    for layer in candidates:
        by_name.setdefault(layer.name, []).append(layer)
    names = []
    for item in layers:
        if isinstance(item, keras.layers.Layer):
            if not any(item is layer for layer in candidates):
                raise ValueError(
                    f"`{argument}` holds layer '{item.name}', which is not "
                    f"part of model '{model.name}'. Pass layers of the "
                    f"wrapped model. Received: {argument}=[..., {item.name!r}, ...]"
                )
            name = item.name
        elif isinstance(item, str):
            name = item
        else:
            raise ValueError(
                f"`{argument}` must be a list of layers or layer names. "
                f"Received: {argument} item {item!r}"
            )
        if name not in by_name:
            available = sorted(by_name)
            shown = available[:20] + (["..."] if len(available) > 20 else [])
            raise ValueError(
                f"`{argument}` names layer {name!r}, which model "
                f"'{model.name}' does not have. Available layers: {shown}. "
                f"Received: {argument}=[..., {name!r}, ...]"
            )
        if len(by_name[name]) > 1:
            raise ValueError(
                f"Layer name {name!r} in `{argument}` is used by "
                f"{len(by_name[name])} layers of model '{model.name}' (nested "
                "models), so it cannot identify one layer after saving. Give "
                "the layers unique names."
            )
        if name not in names:
            names.append(name)
    return names


def _variable_indices(model, names):
    """Positions in `model.weights` of the trainable-capable variables of the
    layers named `names`."""
    by_name = {layer.name: layer for layer in all_layers(model, include_self=False)}
    ids = set()
    for name in names:
        ids.update(id(v) for v in trainable_capable(by_name[name]))
    return [i for i, v in enumerate(model.weights) if id(v) in ids]


@keras.saving.register_keras_serializable(package="keras_transfer")
class L2SPModel(keras.Model):
    """Wraps a model so that training penalises drift from its current weights.

    L2-SP (Li et al., 2018) regularises fine-tuning towards the pretrained
    starting point `w0` instead of towards zero, which keeps what the
    pretrained layers knew (less forgetting) while letting them adapt:

    `Omega(w) = alpha / 2 * ||w_S - w0_S||^2 + beta / 2 * ||w_H||^2`

    where `S` are the transferred layers' weights and `H` the new head's
    weights (plain weight decay on the head, as in the paper). The gradient
    of the first term is `alpha * (w - w0)`.

    `w0` is snapshotted when the wrapper is created, so wrap the model right
    after loading the pretrained weights (and building the head). The
    snapshot is kept as non-trainable float32 variables of the wrapper, so
    `model.save(".keras")` / `keras.models.load_model` keep it and training
    continues against the same `w0`. The penalty is added in
    `compute_loss` and reported as the `l2sp_penalty` metric.

    Only weights that can train are anchored (kernels, biases,
    BatchNormalization's `gamma`/`beta`; not its moving statistics), whether
    they are frozen right now or not: a frozen weight equals `w0`, so it adds
    nothing until it is unfrozen (e.g. by `GradualUnfreezer`).

    Args:
        model: a built `keras.Model` initialised from pretrained weights.
        alpha: float >= 0, strength of the pull towards `w0`; larger values
            keep the transferred layers closer to `w0`. Li et al. (2018)
            report `alpha=0.1`, `beta=0.01` for ImageNet-pretrained
            ResNets. Defaults to 0.01.
        beta: float >= 0, weight decay of the `head` weights. Defaults to
            0.01.
        layers: the transferred layers (layer objects or names, searched
            recursively through nested models) whose weights are pulled
            towards `w0`. `None` means every layer of `model` not in `head`.
        head: the newly initialised layers (objects or names) that get the
            `beta` decay. `None` means none.
        name: the wrapper's name.

    Example:

    ```python
    base = keras_transfer.backbones.efficientnet_lite0(input_shape=(96, 96, 3))
    classifier = keras_transfer.strategies.build_classifier(base, 10)
    model = keras_transfer.regularizers.apply_l2sp(
        classifier, layers=[base], head=[classifier.layers[-1]],
        alpha=0.01, beta=0.01)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y)
    ```

    Reference:
        [Li et al., 2018, "Explicit Inductive Bias for Transfer Learning with
        Convolutional Networks"](https://arxiv.org/abs/1802.01483)
    """

    def __init__(
        self, model, alpha=0.01, beta=0.01, layers=None, head=None, **kwargs
    ):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise ValueError(
                "`model` must be a `keras.Model`. "
                f"Received: model={type(model).__name__}"
            )
        if not model.built or not model.weights:
            raise ValueError(
                "`model` must be built and hold its pretrained weights before "
                "it is wrapped: `w0` is snapshotted now. Call it on data or "
                f"build it first. Received: model='{model.name}' with "
                f"{len(model.weights)} weights"
            )
        self.alpha = check_nonnegative(alpha, "alpha")
        self.beta = check_nonnegative(beta, "beta")
        self.layers_names = _resolve_layers(model, layers, "layers")
        self.head_names = _resolve_layers(model, head, "head") or []
        if self.layers_names is not None:
            overlap = sorted(set(self.layers_names) & set(self.head_names))
            if overlap:
                raise ValueError(
                    "A layer cannot be both transferred (`layers`) and new "
                    f"(`head`). Received: layers and head both hold {overlap}"
                )
        self.model = model

        head_indices = _variable_indices(model, self.head_names)
        if self.layers_names is None:
            every = _variable_indices(
                model, [layer.name for layer in model.layers]
            )
            anchored = [i for i in every if i not in set(head_indices)]
        else:
            anchored = _variable_indices(model, self.layers_names)
            anchored = [i for i in anchored if i not in set(head_indices)]
        if not anchored:
            raise ValueError(
                "`layers` selects no weight that can train, so L2-SP would "
                f"do nothing. Received: layers={self.layers_names}, "
                f"head={self.head_names}"
            )
        # Plain ints: a list of variables assigned here would be tracked as
        # this wrapper's own variables and saved twice.
        self._anchored_indices = tuple(anchored)
        self._head_indices = tuple(head_indices)
        weights = model.weights
        self.anchors = []
        for k, index in enumerate(anchored):
            variable = weights[index]
            # float32 even under mixed precision: the anchor must match the
            # (float32) variable exactly, or the penalty never reaches 0.
            anchor = self.add_weight(
                name=f"anchor_{k}",
                shape=tuple(variable.shape),
                dtype="float32",
                initializer="zeros",
                trainable=False,
            )
            # A NumPy copy: on JAX a same-dtype cast returns the variable's
            # own buffer, and sharing it breaks buffer donation in `fit`.
            anchor.assign(
                np.array(ops.convert_to_numpy(variable), dtype="float32")
            )
            self.anchors.append(anchor)
        self.penalty_tracker = keras.metrics.Mean(name="l2sp_penalty")
        self.built = True

    @property
    def anchored_weights(self):
        """The wrapped model's variables pulled towards `w0`, in anchor order."""
        weights = self.model.weights
        return [weights[i] for i in self._anchored_indices]

    @property
    def head_weights(self):
        """The wrapped model's variables that get the `beta` decay."""
        weights = self.model.weights
        return [weights[i] for i in self._head_indices]

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def penalty(self):
        """`alpha/2 * sum ||w - w0||^2 + beta/2 * sum ||w_head||^2`, float32."""
        total = ops.zeros((), dtype="float32")
        if self.alpha:
            drift = ops.zeros((), dtype="float32")
            for w, w0 in zip(self.anchored_weights, self.anchors):
                drift = drift + ops.sum(ops.square(ops.cast(w, "float32") - w0))
            total = total + 0.5 * self.alpha * drift
        if self.beta:
            norm = ops.zeros((), dtype="float32")
            for w in self.head_weights:
                norm = norm + ops.sum(ops.square(ops.cast(w, "float32")))
            total = total + 0.5 * self.beta * norm
        return total

    def weight_drift(self):
        """`||w_S - w0_S||` over all anchored weights, as a Python float.

        A measure of forgetting: how far fine-tuning moved the transferred
        weights from their pretrained values.
        """
        total = 0.0
        for w, w0 in zip(self.anchored_weights, self.anchors):
            diff = ops.convert_to_numpy(ops.cast(w, "float32") - w0)
            total += float((diff.astype("float64") ** 2).sum())
        return math.sqrt(total)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
            training=training,
        )
        penalty = self.penalty()
        self.penalty_tracker.update_state(penalty)
        return loss + ops.cast(penalty, loss.dtype)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.model),
            "alpha": self.alpha,
            "beta": self.beta,
            "layers": self.layers_names,
            "head": self.head_names,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


def apply_l2sp(model, layers=None, head=None, alpha=0.01, beta=0.01):
    """Returns `model` wrapped in an `L2SPModel`, with `w0` = its weights now.

    Compile and fit the returned model; the wrapped `model` shares its
    variables, so it holds the fine-tuned weights afterwards too.

    Args:
        model: a built `keras.Model` with pretrained weights.
        layers: transferred layers (objects or names), pulled towards `w0`;
            `None` means every layer not in `head`.
        head: new layers (objects or names) that get plain weight decay.
        alpha: float >= 0, strength of the pull towards `w0`.
        beta: float >= 0, weight decay of the head.

    Returns:
        An `L2SPModel`.

    Example:

    ```python
    model = keras_transfer.regularizers.apply_l2sp(
        classifier, layers=[base], head=["head"], alpha=0.01)
    ```
    """
    return L2SPModel(model, alpha=alpha, beta=beta, layers=layers, head=head)
