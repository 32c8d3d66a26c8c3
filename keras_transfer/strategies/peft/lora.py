"""`apply_lora` and `merge_lora`: LoRA layers in, merged kernels out."""

import keras

from keras_transfer.layers._lora_base import LoRABase
from keras_transfer.layers._lora_base import check_lora_args
from keras_transfer.layers.lora_conv2d import LoRAConv2D
from keras_transfer.layers.lora_dense import LoRADense
from keras_transfer.layers.lora_einsum_dense import LoRAEinsumDense
from keras_transfer.strategies.peft import owner
from keras_transfer.strategies.peft import surgery

LORA_CLASSES = {
    keras.layers.Dense: LoRADense,
    keras.layers.EinsumDense: LoRAEinsumDense,
    keras.layers.Conv2D: LoRAConv2D,
}


def _accepts(layer):
    # LoRA's A B update has no grouped form: ConvNeXt's depthwise Conv2D
    # (groups > 1) is left alone unless named by a pattern (then an error).
    return getattr(layer, "groups", 1) == 1


def make_lora(layer, **settings):
    return LORA_CLASSES[type(layer)].from_layer(layer, **settings)


def _lora_entry(layer):
    return {
        "kind": "lora",
        "lora_rank": layer.lora_rank,
        "lora_alpha": layer.lora_alpha,
        "lora_dropout": layer.lora_dropout,
        "rank_stabilized": layer.rank_stabilized,
        "train_bias": layer.train_bias,
        "use_dora": layer.use_dora,
    }


def apply_lora(
    model,
    lora_rank=8,
    targets=None,
    lora_alpha=None,
    lora_dropout=0.0,
    rank_stabilized=False,
    train_bias=False,
    use_dora=False,
    freeze_others=True,
    trainable_layers=None,
):
    """Replaces the targeted layers of `model` by LoRA (or DoRA) layers.

    `Dense`, `EinsumDense` and `Conv2D` become `LoRADense`,
    `LoRAEinsumDense` and `LoRAConv2D` with the same weights (so outputs are
    unchanged at first), and every other weight is frozen. Layers are
    reached at any depth: inside nested Sequential and Functional models,
    inside `InferenceMode`, inside keras-hub backbones and their blocks.

    Args:
        model: a built Keras model (Sequential, Functional or subclassed,
            e.g. a keras-hub backbone or a classifier around one).
        lora_rank, lora_alpha, lora_dropout, rank_stabilized, train_bias,
            use_dora: see `LoRADense` (`use_dora=True`: DoRA, Liu et al.
            2024; its magnitudes are saved with the model and by
            `save_peft_weights`). `lora_rank` must be at most
            min(input size, output size) of every targeted layer.
        targets: `None` (every `Dense`, `EinsumDense` and `Conv2D` layer;
            class targets skip grouped convolutions, which LoRA cannot wrap),
            a layer class, a string or a list of them. A string is a
            regular expression searched in the layer's path (e.g.
            `r"self_attention_layer/(query|value)$"`) and must match at
            least one layer; classes select every layer of that type.
        freeze_others: bool, freeze all weights outside the LoRA layers
            and `trainable_layers`.
        trainable_layers: layers that stay fully trainable (PEFT's
            `modules_to_save`, e.g. a new classifier head): regular
            expressions searched in the layer paths, or layers. Each must
            match at least one layer. They get no LoRA (they train whole)
            and their weights are saved by `save_peft_weights`.

    Returns:
        `(model, changed)`: the model and the list of changed layer paths.
        The model is the same object, changed in place, unless a node of
        a plain Sequential or Functional model (at any depth) was replaced:
        that model is then rebuilt around the new layers (sharing all other
        layers), and so are the graph models holding it. Either way the
        model is ready to use: if it was compiled it is compiled again with
        the same arguments (a fresh copy of its optimizer, at the same step
        count), and cached predict functions are dropped. A compiled
        model that holds `model` (surgery on a backbone inside a compiled
        classifier) cannot be found from `model`: compile that one again.

    Raises:
        ValueError: no layer matches, a pattern or `trainable_layers` entry
            matches nothing, LoRA is already applied, or `lora_rank` is
            above what a layer allows. Nothing is changed then.

    The result saves whole with `model.save("....keras")` and loads with
    `keras.models.load_model` (after `import keras_transfer`), LoRA weights,
    frozen/trainable state and optimizer state included, also when the
    changed layers sit inside a keras-hub backbone: the backbone then
    saves as `keras_transfer>PEFTModel` (see `owner.py`) and becomes a plain
    keras-hub backbone again after `merge_lora`.

    Example:

    ```python
    encoder = keras_transfer.backbones.minilm(sequence_length=64)
    encoder, changed = keras_transfer.strategies.apply_lora(
        encoder, lora_rank=8, targets=r"self_attention_layer/(query|value)$"
    )
    ```

    Reference:
        [Hu et al., 2021](https://arxiv.org/abs/2106.09685).
    """
    settings = dict(
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        rank_stabilized=rank_stabilized,
        train_bias=train_bias,
        use_dora=use_dora,
    )
    check_lora_args(lora_rank, lora_alpha, lora_dropout)
    if targets is None:
        targets = list(LORA_CLASSES)
    chosen = surgery.select(
        model, targets, set(LORA_CLASSES), "lora", accepts=_accepts
    )
    keep = surgery.select_trainable(model, trainable_layers)
    return _finish(
        model,
        chosen,
        lambda layer: make_lora(layer, **settings),
        owner.record_new(_lora_entry),
        freeze_others,
        keep,
        "apply_lora",
    )


def _finish(model, chosen, make, record, freeze_others, keep, caller):
    """The shared end of `apply_lora` and `add_adapters`."""
    chosen = surgery.without_kept(model, chosen, keep)
    surgery.remember_trainable_state(model)
    new_model = surgery.swap(model, chosen, make, record=record)
    if freeze_others:
        surgery.freeze_others(new_model, keep, caller)
    else:
        for layer in keep:
            layer.trainable = True
    surgery.make_ready(new_model, like=model)
    if new_model is not model:
        # Its trainable state changed too (shared layers).
        surgery.make_ready(model)
    return new_model, [site.path for site in chosen]


def merge_lora(model):
    """Folds every LoRA update into its kernel, back to plain Keras layers.

    Each `LoRADense` / `LoRAEinsumDense` / `LoRAConv2D` becomes a `Dense` /
    `EinsumDense` / `Conv2D` with kernel `W + s A B` (see `LoRABase.merge`),
    so the saved config holds no LoRA and inference costs what the plain
    layer costs. `apply_lora` is the reverse direction. The merge is exact
    (to float rounding) on float kernels; on an int8 / int4 quantized base
    the merged kernel is quantized again, so outputs move by the
    quantization error of the new kernel (of the order of Keras's own
    quantization error, e.g. 0.02 on unit-scale outputs of a small int8
    Dense), not by zero.

    Trainable state: once no LoRA layer or adapter is left, every layer
    gets back the trainable state it had before the first `apply_lora` /
    `add_adapters` on this model object (in this process; a model loaded
    from a file keeps its state, with the merged layers frozen). While
    adapters remain, the merged layers are frozen like the rest of the base.

    Returns:
        `(model, changed)` as in `apply_lora`.

    Raises:
        ValueError: if `model` has no LoRA layer.
    """
    chosen = [
        site
        for site in surgery.sites(model)
        if isinstance(site.layer, LoRABase)
    ]
    if not chosen:
        raise ValueError(
            f"Model '{model.name}' has no LoRA layer to merge. Apply LoRA "
            "with `apply_lora` first."
        )

    def merge(layer):
        merged = layer.merge()
        merged.trainable = False
        return merged

    new_model = surgery.swap(model, chosen, merge, record=owner.record_merge)
    before = surgery.recorded_trainable_state(new_model)
    if before is not None and not surgery.peft_layers(new_model):
        surgery.set_trainable_state(new_model, before)
        delattr(new_model, surgery.TRAINABLE_BEFORE_ATTR)
    surgery.make_ready(new_model, like=model)
    if new_model is not model:
        surgery.make_ready(model)
    return new_model, [site.path for site in chosen]
