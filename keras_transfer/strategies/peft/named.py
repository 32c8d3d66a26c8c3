"""Several named adapters on one model: add, activate, mix, delete.

The adapter `apply_lora` (or `add_adapters`) makes is named `"default"`.
`add_lora_adapter` gives every LoRA layer of the model another pair of
low-rank factors under a new name (PEFT's `add_adapter`), and
`add_adapters(..., adapter_name=...)` gives every bottleneck `Adapter`
layer another bottleneck; `set_adapter` chooses which adapters act
and with what weights (PEFT's `set_adapter`, plus weights); with
`disable_adapters` the model computes exactly its base (PEFT's
`disable_adapter`); `delete_adapter` removes one; `add_weighted_adapter`
makes a new adapter equal to a weighted sum of others. `save_peft_weights`
/ `load_peft_weights` with `adapter_name=` write and read one adapter.

Each adapter of each LoRA or `Adapter` layer has a non-trainable scalar
weight `g` (a `keras.Variable`) read inside the layer's `call` (see
`keras_transfer.layers._named_adapters`): switching adapters, mixing them and
disabling them assign these values, so a compiled `predict`, `evaluate` or
`fit` step is not traced again. Adding or deleting an adapter, or changing
which one trains, changes the model's variables: the model is then made
ready again (recompiled if it was compiled, as `apply_lora` does). The
first `set_adapter` / `disable_adapters` on a model that has only its
default adapter creates the weights `g` (once).

A model may hold LoRA layers and bottleneck adapters together: an adapter
name then means the adapters of that name in every layer that has one
(`"default"`: the first adapter of each layer).
"""

import json
import math
import re

import keras
import numpy as np

from keras_transfer.layers._lora_base import DEFAULT_ADAPTER
from keras_transfer.layers._lora_base import LoRABase
from keras_transfer.layers._lora_base import check_lora_args
from keras_transfer.layers._named_adapters import NamedAdaptersMixin
from keras_transfer.strategies.peft import surgery

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _sites(model, caller, kind=NamedAdaptersMixin):
    """The sites of `model`'s layers holding adapters (of class `kind`:
    LoRA layers, bottleneck `Adapter` layers, or both)."""
    found = [s for s in surgery.sites(model) if isinstance(s.layer, kind)]
    if not found:
        what = {
            LoRABase: "no LoRA layer. Apply LoRA with `apply_lora` first "
            "(named LoRA adapters live in LoRA layers).",
        }.get(
            kind,
            "no LoRA layer or bottleneck adapter. Apply `apply_lora` or "
            "`add_adapters` first (named adapters live in those layers).",
        )
        raise ValueError(f"`{caller}`: model '{model.name}' has {what}")
    return found


def _layers(model, caller, kind=NamedAdaptersMixin):
    return [site.layer for site in _sites(model, caller, kind)]


def _names(layers):
    """The adapter names of `layers`, in order of creation (`"default"`
    first)."""
    return list(dict.fromkeys(n for layer in layers for n in layer.adapter_names))


def list_adapters(model):
    """The names of `model`'s adapters, `"default"` (from `apply_lora` /
    `add_adapters`) first."""
    return _names(_layers(model, "list_adapters"))


def active_adapters(model):
    """`{name: weight}` of every adapter of `model` (weight 0: inactive).

    The weights are float32 variables: `0.3` reads back as `0.30000001`.
    """
    weights = {}
    for layer in _layers(model, "active_adapters"):
        for name, weight in layer.adapter_weights().items():
            weights.setdefault(name, weight)
    return weights


def _check_new_name(layers, adapter_name):
    if not isinstance(adapter_name, str) or not _NAME.match(adapter_name):
        raise ValueError(
            "`adapter_name` must be a Python identifier (letters, digits "
            f"and underscores). Received: adapter_name={adapter_name!r}"
        )
    names = _names(layers)
    if adapter_name in names:
        raise ValueError(
            f"The model already has an adapter named {adapter_name!r} "
            f"(adapters: {names}). Pick another name, or delete it first "
            f"with `delete_adapter`. Received: adapter_name={adapter_name!r}"
        )


def _check_known(layers, name, argument, value):
    names = _names(layers)
    if not isinstance(name, str) or name not in names:
        raise ValueError(
            f"Unknown adapter {name!r} in `{argument}`: the model has "
            f"{names}. Received: {argument}={value!r}"
        )


def _ready(model):
    surgery.make_ready(model)


def _gate(model, layers):
    """Creates the weights `g` where missing; True if any was created.

    They are non-trainable: the trainable set and the optimizer (its
    moments) stay as they are; only the compiled steps, which do not read
    the new variables yet, are dropped (Keras traces them again on use).
    """
    created = False
    for layer in layers:
        if not layer._named.gates:
            layer.gate_adapters()
            created = True
    if created and isinstance(model, keras.Model):
        model.train_function = None
        model.test_function = None
        model.predict_function = None
    return created


def _activate(layers, weights):
    """Sets each layer's adapter weights `g` from `weights` (0 for the
    adapters it does not name)."""
    for layer in layers:
        layer.set_adapter_weights(
            {name: weights.get(name, 0.0) for name in layer.adapter_names}
        )


def add_lora_adapter(
    model, adapter_name, lora_rank=None, lora_alpha=None, rank_stabilized=None
):
    """Adds a new LoRA adapter `adapter_name` to every LoRA layer of `model`.

    Each LoRA layer (`LoRADense`, `LoRAEinsumDense`, `LoRAConv2D`, at any
    depth) gets new factors `A` (initialised like its default adapter's) and
    `B = 0`. The new adapter becomes the only active one (weight 1, every
    other adapter 0: the model computes its base, as a new adapter should
    start) and the only one that trains: ready to `fit` on a new task. Use
    `set_adapter` to activate others besides it (e.g. stack it on a trained
    one) and `train_adapter` to train another one. (For bottleneck
    adapters: `add_adapters(model, adapter_name=...)`.)

    Args:
        model: a model holding LoRA layers (after `apply_lora`).
        adapter_name: str, a Python identifier not used by the model yet.
        lora_rank: positive int, at most min(input size, output size) of
            every LoRA layer; `None`: each layer's default adapter's rank.
        lora_alpha: non-negative number; `None`: each layer's default
            adapter's alpha when `lora_rank` is `None`, else `lora_rank`.
        rank_stabilized: bool (rsLoRA scaling); `None`: the default
            adapter's setting.

    Returns:
        `model`, changed in place and ready to use (recompiled if it was
        compiled, as after `apply_lora`).

    Raises:
        ValueError: `model` has no LoRA layer, `adapter_name` is taken or
            not an identifier, or `lora_rank` / `lora_alpha` is invalid for
            a layer. Nothing is changed then.
    """
    layers = _layers(model, "add_lora_adapter", LoRABase)
    _check_new_name(_layers(model, "add_lora_adapter"), adapter_name)
    if lora_rank is not None or lora_alpha is not None:
        check_lora_args(
            lora_rank if lora_rank is not None else 1, lora_alpha, 0.0
        )
    specs = []
    for layer in layers:
        default = layer.adapter_spec(DEFAULT_ADAPTER)
        rank = default["lora_rank"] if lora_rank is None else lora_rank
        if lora_alpha is not None:
            alpha = lora_alpha
        else:
            alpha = default["lora_alpha"] if lora_rank is None else rank
        stabilized = (
            default["rank_stabilized"]
            if rank_stabilized is None
            else bool(rank_stabilized)
        )
        layer._check_rank(rank)
        specs.append((rank, alpha, stabilized))
    for layer, (rank, alpha, stabilized) in zip(layers, specs):
        layer.add_named_adapter(adapter_name, rank, alpha, stabilized)
    return start_new_adapter(model, layers, adapter_name)


def start_new_adapter(model, layers, adapter_name):
    """The end of adding adapter `adapter_name` to `layers`: it alone acts
    (among `layers`) and trains there; the model is made ready."""
    for layer in layers:
        layer.set_training_adapter(adapter_name)
    _activate(layers, {adapter_name: 1.0})
    _ready(model)
    return model


def _check_choice(layers, adapters, weights):
    """Checks `adapters` (a name or list of known names, each once) and
    `weights` (`None` or one finite number each); returns both as lists.
    """
    given = adapters
    if isinstance(adapters, str):
        adapters = [adapters]
    if not isinstance(adapters, (list, tuple)) or not adapters:
        raise ValueError(
            "`adapters` must be an adapter name or a non-empty list of "
            f"names. Received: adapters={given!r}"
        )
    for name in adapters:
        _check_known(layers, name, "adapters", given)
    if len(set(adapters)) != len(adapters):
        raise ValueError(
            f"Each adapter may be given once. Received: adapters={given!r}"
        )
    if weights is None:
        weights = [1.0] * len(adapters)
    if isinstance(weights, np.ndarray):
        weights = weights.tolist()
    if not isinstance(weights, (list, tuple)) or len(weights) != len(
        adapters
    ):
        raise ValueError(
            f"`weights` must be a list with one number per adapter "
            f"({len(adapters)} for adapters={list(adapters)!r}). "
            f"Received: weights={weights!r}"
        )
    for w in weights:
        if (
            isinstance(w, bool)
            or not isinstance(w, (int, float))
            or not math.isfinite(w)
        ):
            raise ValueError(
                "`weights` must be finite numbers. Received: "
                f"weights={weights!r}"
            )
    return list(adapters), [float(w) for w in weights]


def set_adapter(model, adapters, weights=None):
    """Chooses the active adapter(s) and their weights.

    The output of each LoRA layer is its base plus `sum_i w_i delta_i(x)`
    over the adapters given (every other adapter gets weight 0), where
    `delta_i` is adapter `i`'s own update (`s_i B_i A_i x`, or DoRA's for
    the default adapter); each bottleneck `Adapter` layer returns
    `x + sum_i w_i up_i(act(down_i(x)))`. Only the weights `g` change,
    which are variables read in the step: a compiled `predict` /
    `evaluate` / `fit` step is not traced again. Which adapter trains does
    not change (see `train_adapter`).

    Args:
        model: a model holding LoRA layers or bottleneck adapters.
        adapters: an adapter name or a list of names (each once), e.g.
            `"default"` or `["default", "sst2"]`.
        weights: `None` (1 for each) or a list of finite numbers, one per
            adapter (negative values subtract an adapter).

    Returns:
        `model`.

    Raises:
        ValueError: an unknown or repeated adapter name, or `weights` not
            of the same length as `adapters` or not finite numbers.
    """
    layers = _layers(model, "set_adapter")
    adapters, weights = _check_choice(layers, adapters, weights)
    _gate(model, layers)
    _activate(layers, dict(zip(adapters, weights)))
    return model


class disable_adapters:
    """Makes `model` compute exactly its base model: every adapter weight 0.

    Acts at once, on every LoRA layer and bottleneck `Adapter` layer. Used
    as a context manager, it restores the adapter weights of before on
    exit:

    ```python
    with keras_transfer.strategies.disable_adapters(model):
        base_outputs = model.predict(x)  # exactly the pretrained model
    ```

    Without `with`, the adapters stay off until `set_adapter`. No compiled
    step is traced again (the first call on a model that has only its
    default adapters creates the adapter weights, once).

    Raises:
        ValueError: if `model` has no LoRA layer or bottleneck adapter.
    """

    def __init__(self, model):
        self._layers = _layers(model, "disable_adapters")
        _gate(model, self._layers)
        self._before = [layer.adapter_weights() for layer in self._layers]
        _activate(self._layers, {})

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for layer, weights in zip(self._layers, self._before):
            layer.set_adapter_weights(weights)
        return False


def train_adapter(model, adapter_name):
    """Makes adapter `adapter_name` the one whose weights train.

    Every other adapter's weights are frozen (the bias with
    `train_bias=True` and the layers kept by `trainable_layers` train as
    before); a layer without an adapter of that name trains none. `None`
    freezes every adapter. The trainable set changes, so a compiled model
    is recompiled (as after `apply_lora`).

    Raises:
        ValueError: an unknown adapter name.
    """
    layers = _layers(model, "train_adapter")
    if adapter_name is not None:
        _check_known(layers, adapter_name, "adapter_name", adapter_name)
    for layer in layers:
        layer.set_training_adapter(
            adapter_name if adapter_name in layer.adapter_names else None
        )
    _ready(model)
    return model


def delete_adapter(model, adapter_name):
    """Deletes adapter `adapter_name` and its weights from every layer.

    The default adapter (from `apply_lora` / `add_adapters`) cannot be
    deleted (set its weight to 0 with `set_adapter`, or fold a LoRA one in
    with `merge_lora`). If the deleted adapter was the one training, no
    adapter trains until `train_adapter`. The model is made ready again
    (recompiled if it was compiled).

    Raises:
        ValueError: an unknown adapter name, or `"default"`.
    """
    layers = _layers(model, "delete_adapter")
    _check_known(layers, adapter_name, "adapter_name", adapter_name)
    if adapter_name == DEFAULT_ADAPTER:
        raise ValueError(
            "The default adapter (made by `apply_lora` / `add_adapters`) "
            "cannot be deleted: set its weight to 0 with `set_adapter`, or "
            "fold a LoRA one into the kernels with `merge_lora`. Received: "
            f"adapter_name={adapter_name!r}"
        )
    for layer in layers:
        if adapter_name in layer.adapter_names:
            layer.delete_named_adapter(adapter_name)
    _ready(model)
    return model


def add_weighted_adapter(model, adapters, weights, adapter_name):
    """Adds adapter `adapter_name` equal to `sum_i w_i delta_i` exactly.

    Per LoRA layer, the new adapter concatenates the given adapters' factors
    (PEFT's `combination_type="cat"`): `A = [A_1 ... A_n]` (rank
    `r_1 + ... + r_n`) and `B = [w_1 s_1 B_1; ...; w_n s_n B_n]` with scale
    1, so `A B = sum_i w_i s_i A_i B_i`. Per bottleneck `Adapter` layer it
    concatenates the bottlenecks: `down = [down_1 ... down_n]` (kernels and
    biases), `up = [w_1 up_1; ...; w_n up_n]` and the up bias
    `sum_i w_i b_i`, so (the activation acting unit by unit) its output is
    `sum_i w_i up_i(act(down_i(x)))`. It becomes the only active adapter
    of those layers; which adapter trains does not change. The default
    adapter of a LoRA layer can take part unless it is DoRA (its update is
    not low-rank).

    Args:
        model: a model holding LoRA layers or bottleneck adapters.
        adapters: list of existing adapter names (each once), all held by
            each layer that holds any of them.
        weights: list of finite numbers, one per adapter (`None`: 1 each).
        adapter_name: str, a new name.

    Returns:
        `model` (recompiled if it was compiled).

    Raises:
        ValueError: unknown, repeated or DoRA adapters, a layer holding
            only some of `adapters`, a taken name, or `weights` not one
            finite number per adapter.
    """
    all_layers = _layers(model, "add_weighted_adapter")
    _check_new_name(all_layers, adapter_name)
    if isinstance(adapters, str):
        raise ValueError(
            "`adapters` must be a non-empty list of adapter names. "
            f"Received: adapters={adapters!r}"
        )
    adapters, weights = _check_choice(all_layers, adapters, weights)
    layers = []
    for layer in all_layers:
        held = [name for name in adapters if name in layer.adapter_names]
        if held and len(held) < len(adapters):
            raise ValueError(
                f"Layer '{layer.name}' holds adapters {held} but not all of "
                f"{adapters}: a weighted adapter combines adapters that "
                f"every layer holding one of them holds. Received: "
                f"adapters={adapters!r}"
            )
        if held:
            layers.append(layer)
    combined = [layer.weighted_adapter(adapters, weights) for layer in layers]
    for layer, (spec, arrays) in zip(layers, combined):
        layer._add_named(adapter_name, spec, check=False)
        for variable, array in zip(layer.adapter_variables(adapter_name), arrays):
            variable.assign(array)
    _activate(layers, {adapter_name: 1.0})
    _ready(model)
    return model


# --- One adapter's weights alone (used by `weights_io`) -------------------

META_KEY = "__adapter__"
# Settings the weights' shapes already check.
_SHAPE_SETTINGS = ("lora_rank", "bottleneck")


def _weight_keys(layer):
    """The file keys of one adapter's weights in `layer`, in order."""
    if isinstance(layer, LoRABase):
        return ("lora_kernel_a", "lora_kernel_b", "lora_magnitude")
    return ("down_kernel", "down_bias", "up_kernel", "up_bias")


def adapter_arrays(model, adapter_name):
    """`{key: array}` of one adapter, plus its settings under `META_KEY`."""
    sites = _sites(model, "save_peft_weights")
    _check_known(
        [s.layer for s in sites], adapter_name, "adapter_name", adapter_name
    )
    sites = [s for s in sites if adapter_name in s.layer.adapter_names]
    arrays, specs = {}, {}
    for site in sites:
        layer = site.layer
        specs[site.key] = layer.adapter_spec(adapter_name)
        keys = _weight_keys(layer)
        for j, v in enumerate(layer.adapter_variables(adapter_name)):
            arrays[f"{site.key}/{keys[j]}"] = keras.ops.convert_to_numpy(v)
    meta = {
        "adapter_name": adapter_name,
        "use_dora": adapter_name == DEFAULT_ADAPTER
        and any(getattr(s.layer, "use_dora", False) for s in sites),
        "specs": specs,
    }
    arrays[META_KEY] = np.array(json.dumps(meta))
    return arrays


def load_adapter_arrays(model, stored, adapter_name, filepath):
    """Loads one adapter saved by `adapter_arrays` as `adapter_name`,
    creating it (inactive, frozen) if `model` has no adapter of that name."""
    all_sites = _sites(model, "load_peft_weights")
    if META_KEY not in stored:
        raise ValueError(
            f"{filepath!r} holds no single adapter: it was saved without "
            "`adapter_name`. Load it with `load_peft_weights(model, "
            "filepath)`."
        )
    meta = json.loads(str(stored.pop(META_KEY)))
    exists = isinstance(adapter_name, str) and adapter_name in _names(
        [s.layer for s in all_sites]
    )
    # The layers the adapter is in (or goes into): those of the file.
    sites = [
        s
        for s in all_sites
        if (adapter_name in s.layer.adapter_names if exists else s.key in meta["specs"])
    ]
    keys = {site.key for site in sites}
    if set(meta["specs"]) != keys:
        raise ValueError(
            f"The adapter in {filepath!r} was saved from layers "
            f"{sorted(meta['specs'])[:10]}, but model '{model.name}' has "
            f"{'adapter ' + repr(adapter_name) + ' in ' if exists else ''}"
            f"layers {sorted(keys)[:10]}. Apply the same `apply_lora` / "
            "`add_adapters` call first."
        )
    if not exists:
        if meta["use_dora"]:
            raise ValueError(
                f"The adapter in {filepath!r} is a DoRA default adapter; it "
                "loads only as `adapter_name='default'` onto a model made "
                "with `apply_lora(..., use_dora=True)`. Received: "
                f"adapter_name={adapter_name!r}"
            )
        _check_new_name([s.layer for s in all_sites], adapter_name)
        for site in sites:
            site.layer._add_named(
                adapter_name, dict(meta["specs"][site.key]), check=False
            )
        _ready(model)
    targets = {}
    for site in sites:
        variables = site.layer.adapter_variables(adapter_name)
        spec = site.layer.adapter_spec(adapter_name)
        saved = meta["specs"][site.key]
        if any(
            spec.get(k) != saved.get(k)
            for k in set(spec) | set(saved)
            if k not in _SHAPE_SETTINGS
        ):
            raise ValueError(
                f"Adapter {adapter_name!r} of layer '{site.path}' has "
                f"settings {spec}, but the adapter in {filepath!r} was saved "
                f"with {saved}."
            )
        keys = _weight_keys(site.layer)
        for j, v in enumerate(variables):
            targets[f"{site.key}/{keys[j]}"] = v
    missing = sorted(set(targets) - set(stored))
    extra = sorted(set(stored) - set(targets))
    if missing or extra:
        raise ValueError(
            f"The adapter in {filepath!r} does not fit adapter "
            f"{adapter_name!r} of model '{model.name}'. Missing in the "
            f"file: {missing[:10]}; not in the model: {extra[:10]}."
        )
    for key, v in targets.items():
        if tuple(stored[key].shape) != tuple(v.shape):
            raise ValueError(
                f"Weight {key!r} has shape {tuple(stored[key].shape)} in "
                f"{filepath!r} but {tuple(v.shape)} in adapter "
                f"{adapter_name!r} of the model."
            )
    for key, v in targets.items():
        v.assign(stored[key])
