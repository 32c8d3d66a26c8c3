"""`add_adapters`: bottleneck adapters after chosen layers."""

import keras

from keras_transfer.layers._named_adapters import DEFAULT_ADAPTER
from keras_transfer.layers.adapter import Adapter
from keras_transfer.strategies.peft import named
from keras_transfer.strategies.peft import owner
from keras_transfer.strategies.peft import surgery
from keras_transfer.strategies.peft.lora import _finish

PLACEMENTS = {
    # keras-hub `TransformerEncoder`: after the attention output projection
    # and after the feed-forward block (Houlsby), or the latter only
    # (Pfeiffer). Both sit before the residual add and layer norm.
    "houlsby": [r"attention_output$", r"feedforward_output_dense$"],
    "pfeiffer": [r"feedforward_output_dense$"],
}


def make_adapter(
    layer, bottleneck, reduction_factor, activation, named_adapters=None
):
    """`keras.Sequential([layer, Adapter(...)])`, built like `layer`."""
    adapter = Adapter(
        bottleneck=bottleneck,
        reduction_factor=reduction_factor,
        activation=activation,
        named_adapters=named_adapters,
        dtype=layer.dtype_policy,
        name=f"{layer.name}_adapter",
    )
    block = keras.Sequential([layer, adapter], name=f"{layer.name}_with_adapter")
    block.build(layer.get_build_config()["input_shape"])
    return block


def add_adapters(
    model,
    targets=None,
    placement=None,
    bottleneck=None,
    reduction_factor=None,
    activation="relu",
    freeze_others=True,
    trainable_layers=None,
    adapter_name=None,
):
    """Inserts an `Adapter` after each targeted layer, or a named one.

    With `adapter_name` (a new name) on a model that has bottleneck
    adapters already, adds adapter `adapter_name` to every `Adapter` layer
    of the model instead (PEFT's `add_adapter`): its own down/up weights
    (bottleneck from `bottleneck` / `reduction_factor`, or each layer's
    default adapter's), `up = 0`, the layer's activation. It becomes the
    only active adapter of those layers and the only one that trains
    there; `set_adapter`, `disable_adapters`, `train_adapter`,
    `delete_adapter` and `save_peft_weights(..., adapter_name=...)` then
    work as for LoRA adapters (see `add_lora_adapter`).

    Args:
        model: a built Keras model.
        targets: patterns or classes as in `apply_lora`; or `None` with
            `placement`.
        placement: `"houlsby"` (after the attention output projection and
            the feed-forward block of each keras-hub `TransformerEncoder`)
            or `"pfeiffer"` (after the feed-forward block only).
        bottleneck, reduction_factor, activation: see `Adapter`.
        freeze_others: bool, freeze all weights outside the adapters and
            `trainable_layers`.
        trainable_layers: layers that stay fully trainable (a new
            classifier head), as in `apply_lora`.
        adapter_name: `None` or `"default"` (insert adapters), or a new
            adapter name (a Python identifier) for a model that has
            adapters: then `targets`, `placement` and `trainable_layers`
            must be `None`, `freeze_others` `True`, and `activation` the
            adapters' own.

    Returns:
        `(model, changed)` as in `apply_lora`. Each targeted layer is
        replaced by `keras.Sequential([layer, Adapter(...)])` (with
        `adapter_name`: the model is changed in place, `changed` lists the
        `Adapter` layers that got the new adapter). Saving and readiness
        (compiled models) work as for `apply_lora`.

    Raises:
        ValueError: bad `targets` / `placement` / bottleneck arguments; an
            `adapter_name` that is taken or not an identifier, or given for
            a model without adapters or with `targets` / `placement`.

    Reference:
        [Houlsby et al., 2019](https://arxiv.org/abs/1902.00751);
        [Pfeiffer et al., 2021](https://arxiv.org/abs/2005.00247).
    """
    if adapter_name is not None and adapter_name != DEFAULT_ADAPTER:
        return _add_named(
            model, adapter_name, targets, placement, bottleneck,
            reduction_factor, activation, freeze_others, trainable_layers,
        )
    if (targets is None) == (placement is None):
        raise ValueError(
            "Pass exactly one of `targets` and `placement`. Received: "
            f"targets={targets!r}, placement={placement!r}"
        )
    if placement is not None:
        if placement not in PLACEMENTS:
            raise ValueError(
                f"`placement` must be one of {sorted(PLACEMENTS)}. "
                f"Received: placement={placement!r}"
            )
        targets = PLACEMENTS[placement]
    # Validate the adapter arguments before any surgery.
    Adapter(bottleneck=bottleneck, reduction_factor=reduction_factor)
    chosen = surgery.select(model, targets, None, "adapter")
    keep = surgery.select_trainable(model, trainable_layers)
    activation = keras.activations.serialize(keras.activations.get(activation))
    settings = dict(
        bottleneck=bottleneck,
        reduction_factor=reduction_factor,
        activation=activation,
    )
    return _finish(
        model,
        chosen,
        lambda layer: make_adapter(layer, **settings),
        owner.record_new(lambda new: {"kind": "adapter", **settings}),
        freeze_others,
        keep,
        "add_adapters",
    )


def _add_named(
    model, adapter_name, targets, placement, bottleneck, reduction_factor,
    activation, freeze_others, trainable_layers,
):
    """`add_adapters` with a new `adapter_name` (see there)."""
    sites = [
        s for s in surgery.sites(model) if isinstance(s.layer, Adapter)
    ]
    if not sites:
        raise ValueError(
            f"`add_adapters`: model '{model.name}' has no bottleneck "
            "adapter to add a named adapter to. Insert the adapters first "
            "with `add_adapters(model, targets=... or placement=...)` "
            "(their first adapter is named 'default'). Received: "
            f"adapter_name={adapter_name!r}"
        )
    given = {
        "targets": targets,
        "placement": placement,
        "trainable_layers": trainable_layers,
    }
    for argument, value in given.items():
        if value is not None:
            raise ValueError(
                f"`{argument}` cannot be given with `adapter_name`: a named "
                "adapter goes into every existing `Adapter` layer. "
                f"Received: {argument}={value!r}, "
                f"adapter_name={adapter_name!r}"
            )
    if freeze_others is not True:
        raise ValueError(
            "`freeze_others` must be True with `adapter_name` (the new "
            "adapter trains alone; the rest keeps its state). Received: "
            f"freeze_others={freeze_others!r}"
        )
    # Validate the bottleneck arguments.
    Adapter(bottleneck=bottleneck, reduction_factor=reduction_factor)
    layers = [site.layer for site in sites]
    named._check_new_name(
        [s.layer for s in named._sites(model, "add_adapters")], adapter_name
    )
    wanted = keras.activations.serialize(keras.activations.get(activation))
    for layer in layers:
        own = keras.activations.serialize(layer.activation)
        if own != wanted:
            raise ValueError(
                f"`activation` must be the adapters' own ({own!r} in "
                f"'{layer.name}') with `adapter_name`: every adapter of a "
                f"layer uses its activation. Received: activation={activation!r}"
            )
    for layer in layers:
        size = bottleneck
        if reduction_factor is not None:
            d = layer.down.kernel.shape[0]
            size = max(1, int(d // reduction_factor))
        layer.add_named_adapter(adapter_name, size)
    named.start_new_adapter(model, layers, adapter_name)
    return model, [site.path for site in sites]
