"""`save_peft_weights` / `load_peft_weights`: the weights that train, alone."""

import keras
import numpy as np

from keras_transfer.layers._lora_base import LoRABase
from keras_transfer.layers.adapter import Adapter
from keras_transfer.strategies.peft import named
from keras_transfer.strategies.peft import surgery


def _peft_variables(model, by_name=False):
    """`{key: variable}` for every LoRA and adapter weight that trains, and
    every weight of the other layers that train (`trainable_layers`, a head
    unfrozen by hand), BatchNormalization statistics included.

    Keys are structural keys (see `keras_transfer._walk`); `by_name=True`
    gives the layer-name paths of files written by earlier versions.
    """
    found = {}
    trains = {id(v) for v in model.trainable_weights}
    for site in surgery.sites(model):
        path = site.path if by_name else site.key
        layer = site.layer
        if isinstance(layer, LoRABase):
            variables = layer.peft_weights
        elif isinstance(layer, Adapter):
            variables = layer.weights
        else:
            own = surgery.own_weights(layer)
            if not any(id(v) in trains for v in own):
                continue
            variables = own
        for i, v in enumerate(variables):
            found[f"{path}/{i}:{v.name}"] = v
    return found


def save_peft_weights(model, filepath, adapter_name=None):
    """Saves only the weights that fine-tuning changed to a `.npz` file.

    That is every LoRA and adapter weight, plus every weight of the layers
    that train besides them (`trainable_layers` of `apply_lora` /
    `add_adapters`, or a head unfrozen by hand), BatchNormalization
    statistics included. Load them onto a fresh copy of the base model
    after the same `apply_lora` / `add_adapters` call with
    `load_peft_weights`. Weights are keyed by their position in the model
    (attribute names and layer indices), not by layer names, so the copy
    may have other auto-generated names (`bert_backbone_1`, ...). The
    named adapters of the LoRA layers (`add_lora_adapter`) and their
    current weights are included.

    With `adapter_name`, only that LoRA adapter's factors are saved (its
    `A`, `B`, and DoRA's `m` for a DoRA default adapter), with its ranks
    and scales, and nothing else: `load_peft_weights(...,
    adapter_name=...)` loads them into a model with the same LoRA layers.

    Raises:
        ValueError: if `model` has nothing to save, `adapter_name` names no
            adapter of `model`, or `filepath` does not end in `.npz`.
    """
    if not str(filepath).endswith(".npz"):
        raise ValueError(
            "`filepath` must end in `.npz`. "
            f"Received: filepath={filepath!r}"
        )
    if adapter_name is not None:
        np.savez(filepath, **named.adapter_arrays(model, adapter_name))
        return
    variables = _peft_variables(model)
    if not variables:
        raise ValueError(
            f"Model '{model.name}' has no LoRA or adapter weights to save."
        )
    np.savez(
        filepath,
        **{k: keras.ops.convert_to_numpy(v) for k, v in variables.items()},
    )


def load_peft_weights(model, filepath, adapter_name=None):
    """Loads weights saved by `save_peft_weights` into `model`.

    `model` must have the same LoRA layers / adapters (same targets, ranks
    and bottlenecks), the same named adapters (re-add them with
    `add_lora_adapter` / `add_adapters(..., adapter_name=)` before loading a
    file saved from a model that had them) and the same layers training
    besides them; any missing, extra or mis-shaped weight is an error and
    nothing is loaded.

    With `adapter_name`, `filepath` must hold one adapter
    (`save_peft_weights(..., adapter_name=...)`); it is loaded as adapter
    `adapter_name` of `model` (any name: an adapter saved as `"sst2"` may
    load as `"reviews"`). If `model` has no adapter of that name, it is
    created first (inactive and frozen: `set_adapter` activates it), with
    the saved ranks and scales.
    """
    with np.load(filepath) as data:
        stored = dict(data.items())
    if adapter_name is not None:
        named.load_adapter_arrays(model, stored, adapter_name, filepath)
        return
    if named.META_KEY in stored:
        raise ValueError(
            f"{filepath!r} holds a single adapter (saved with "
            "`adapter_name`): load it with `load_peft_weights(model, "
            "filepath, adapter_name=...)`."
        )
    variables = _peft_variables(model)
    if set(stored) != set(variables):
        by_name = _peft_variables(model, by_name=True)
        if set(stored) == set(by_name):
            variables = by_name
    missing = sorted(set(variables) - set(stored))
    extra = sorted(set(stored) - set(variables))
    if missing or extra:
        raise ValueError(
            f"The weights in {filepath!r} do not fit model '{model.name}'. "
            f"Missing in the file: {missing[:10]}; not in the model: "
            f"{extra[:10]}. Apply the same `apply_lora`/`add_adapters` "
            "call (same `trainable_layers`) to the base model before "
            "loading, and add the same named adapters "
            "(`add_lora_adapter(model, name)` / `add_adapters(..., "
            "adapter_name=name)`) the saved model had; or load one adapter "
            "with `adapter_name=`."
        )
    for key, v in variables.items():
        if tuple(stored[key].shape) != tuple(v.shape):
            raise ValueError(
                f"Weight {key!r} has shape {tuple(stored[key].shape)} in "
                f"{filepath!r} but {tuple(v.shape)} in the model."
            )
    for key, v in variables.items():
        v.assign(stored[key])
