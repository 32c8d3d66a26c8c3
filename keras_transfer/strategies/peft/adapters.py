"""`add_adapters`: bottleneck adapters after chosen layers."""

import keras

from keras_transfer.layers.adapter import Adapter
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


def make_adapter(layer, bottleneck, reduction_factor, activation):
    """`keras.Sequential([layer, Adapter(...)])`, built like `layer`."""
    adapter = Adapter(
        bottleneck=bottleneck,
        reduction_factor=reduction_factor,
        activation=activation,
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
):
    """Inserts an `Adapter` after each targeted layer.

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

    Returns:
        `(model, changed)` as in `apply_lora`. Each targeted layer is
        replaced by `keras.Sequential([layer, Adapter(...)])`. Saving and
        readiness (compiled models) work as for `apply_lora`.

    Reference:
        [Houlsby et al., 2019](https://arxiv.org/abs/1902.00751);
        [Pfeiffer et al., 2021](https://arxiv.org/abs/2005.00247).
    """
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
