"""Copy the first k pretrained layers into a target model, re-initialise the rest."""

import keras

from keras_transfer._keras_private import all_layers
from keras_transfer._keras_private import own_variables
from keras_transfer._validation import check_int

# Variable name -> the layer attribute holding its initializer, where the
# attribute is not simply f"{name}_initializer".
_INITIALIZER_ATTRS = {
    "depthwise_kernel": ("depthwise_initializer",),
    "pointwise_kernel": ("pointwise_initializer",),
    "recurrent_kernel": ("recurrent_initializer",),
}


def _leaf_layers(model):
    """Layers that own variables, input -> output, nested models flattened."""
    leaves = []
    for layer in all_layers(model, include_self=False):
        if own_variables(layer):
            leaves.append(layer)
    return leaves


def _initializer_for(layer, variable):
    name = variable.name.split("/")[-1]
    candidates = _INITIALIZER_ATTRS.get(name, ()) + (
        f"{name}_initializer",
        "initializer",
    )
    for attr in candidates:
        initializer = getattr(layer, attr, None)
        if initializer is not None:
            return keras.initializers.get(initializer)
    raise ValueError(
        f"Cannot re-initialise variable '{variable.path}' of layer "
        f"'{layer.name}' ({type(layer).__name__}): the layer has no "
        f"`{name}_initializer` attribute. Pass `reinitialize_rest=False` and "
        "re-initialise it yourself, or transfer this layer too."
    )


def _check_model(name, value):
    if not isinstance(value, keras.Model):
        raise ValueError(
            f"`{name}` must be a `keras.Model`. "
            f"Received: {name}={type(value).__name__}"
        )
    if not value.built:
        raise ValueError(
            f"`{name}` must be built (its weights created). "
            f"Received: {name}='{value.name}', not built"
        )


def _check_shapes(source_layer, target_layer):
    source_shapes = [tuple(v.shape) for v in own_variables(source_layer)]
    target_shapes = [tuple(v.shape) for v in own_variables(target_layer)]
    if source_shapes != target_shapes:
        raise ValueError(
            f"Cannot transfer layer '{source_layer.name}' into target layer "
            f"'{target_layer.name}': their weight shapes differ. "
            f"Received: source shapes {source_shapes}, "
            f"target shapes {target_shapes}"
        )


def _copy(source_layer, target_layer):
    for s, t in zip(own_variables(source_layer), own_variables(target_layer)):
        t.assign(keras.ops.convert_to_numpy(s))


def transfer_layers(
    source,
    target,
    num_layers=None,
    layer_names=None,
    reinitialize_rest=True,
    seed=None,
):
    """Copies pretrained layers from `source` into `target`; resets the rest.

    The selective transfer of Yosinski et al. (2014): the first `k` layers of
    a network trained on the source task are copied into a network for the
    target task, and the layers above them start from a fresh random
    initialisation. Lower layers are general (edges, textures) and transfer
    well; the top layers are specific to the source task and, on a distant
    target, can hurt more than they help (negative transfer).

    Layers are the weight-bearing layers of each model, nested models
    flattened, in input -> output order (a `Conv2D` and its
    `BatchNormalization` count as two); `num_layers=k` matches source and
    target layers by position, `layer_names` matches them by name. Every
    variable of a copied layer is copied, BatchNormalization's moving
    statistics included. The rest of `target`'s layers are re-initialised
    from their own initializers (`kernel_initializer`, `bias_initializer`,
    `gamma_initializer`, `moving_mean_initializer`, ...).

    Args:
        source: built `keras.Model` holding the pretrained weights.
        target: built `keras.Model` with the same layers (at least the
            transferred ones; its top may differ, e.g. a new head).
        num_layers: int in `[0, number of weight-bearing layers of source]`,
            copy the first `num_layers` layers. Exactly one of `num_layers`
            and `layer_names` must be given.
        layer_names: list of layer names present in both models; copy
            those.
        reinitialize_rest: bool, whether the target layers that are not
            copied are re-initialised (`True`) or left as they are.
        seed: optional int, makes the re-initialisation reproducible (each
            variable gets its own seed derived from it). With `None` the
            initializers draw fresh random values.

    Returns:
        A dict `{"transferred": [names], "reinitialized": [names]}` of target
        layer names.

    Example:

    ```python
    source = make_net(); source.load_weights("pretrained.weights.h5")
    target = make_net()
    keras_transfer.strategies.transfer_layers(source, target, num_layers=4)
    ```

    Reference:
        [Yosinski et al., 2014, "How transferable are features in deep neural
        networks?"](https://arxiv.org/abs/1411.1792)
    """
    _check_model("source", source)
    _check_model("target", target)
    if (num_layers is None) == (layer_names is None):
        raise ValueError(
            "Pass exactly one of `num_layers` and `layer_names`. "
            f"Received: num_layers={num_layers!r}, layer_names={layer_names!r}"
        )
    if not isinstance(reinitialize_rest, bool):
        raise ValueError(
            "`reinitialize_rest` must be a bool. "
            f"Received: reinitialize_rest={reinitialize_rest!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
    source_layers = _leaf_layers(source)
    target_layers = _leaf_layers(target)
    pairs = []
    if num_layers is not None:
        num_layers = check_int(num_layers, "num_layers", minimum=0)
        limit = min(len(source_layers), len(target_layers))
        if num_layers > limit:
            raise ValueError(
                f"`num_layers` can be at most {limit}, the number of "
                f"weight-bearing layers (source '{source.name}' has "
                f"{len(source_layers)}, target '{target.name}' has "
                f"{len(target_layers)}). Received: num_layers={num_layers}"
            )
        pairs = list(zip(source_layers[:num_layers], target_layers[:num_layers]))
    else:
        if isinstance(layer_names, str) or not all(
            isinstance(n, str) for n in layer_names
        ):
            raise ValueError(
                "`layer_names` must be a list of layer names. "
                f"Received: layer_names={layer_names!r}"
            )
        source_by_name = {layer.name: layer for layer in source_layers}
        target_by_name = {layer.name: layer for layer in target_layers}
        for name in layer_names:
            for model, by_name in ((source, source_by_name), (target, target_by_name)):
                if name not in by_name:
                    raise ValueError(
                        f"`layer_names` holds {name!r}, which is not a "
                        f"weight-bearing layer of '{model.name}'. Available: "
                        f"{sorted(by_name)[:20]}. Received: "
                        f"layer_names={list(layer_names)!r}"
                    )
            pairs.append((source_by_name[name], target_by_name[name]))
    # Check every pair before copying anything: a half-transferred model
    # would be worse than an error.
    for s, t in pairs:
        _check_shapes(s, t)
    copied_ids = {id(t) for _, t in pairs}
    rest = [layer for layer in target_layers if id(layer) not in copied_ids]
    if reinitialize_rest:
        plan = [
            (variable, _initializer_for(layer, variable))
            for layer in rest
            for variable in own_variables(layer)
        ]
    for s, t in pairs:
        _copy(s, t)
    if reinitialize_rest:
        for k, (variable, initializer) in enumerate(plan):
            config = initializer.get_config()
            if "seed" in config:
                # A layer's initializer keeps the seed it drew at creation,
                # so calling it again would return the same values; a copy
                # with a new seed draws fresh ones.
                initializer = initializer.__class__.from_config(
                    {**config, "seed": None if seed is None else seed + k}
                )
            value = initializer(tuple(variable.shape), dtype=variable.dtype)
            variable.assign(value)
    return {
        "transferred": [t.name for _, t in pairs],
        "reinitialized": [layer.name for layer in rest] if reinitialize_rest else [],
    }
