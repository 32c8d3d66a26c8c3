"""Parameter-efficient fine-tuning: LoRA and adapter surgery on any model.

`apply_lora` and `add_adapters` work on Sequential and Functional models
(top-level layers are swapped by cloning the graph with
`keras.models.clone_model`) and on layers nested inside subclassed layers,
such as the `EinsumDense` attention projections inside keras-hub's
`TransformerEncoder` (swapped in place on their parent attribute).

Saving: a Sequential or Functional model serializes each of its layers, so
LoRA layers and adapters at top level round-trip through
`model.save(".keras")` as they are. A subclassed layer or model (a keras-hub
backbone) rebuilds its sublayers from its own constructor arguments, which
know nothing of the surgery. So the surgery is recorded on the outermost
such object that holds the changed layers (the "owner": the backbone itself,
or the backbone inside a Functional classifier): its class becomes a
subclass of its own class whose `get_config` is

    {"base": <the object serialized as its original class>,
     "peft": <the surgery: per changed sublayer, its path and settings;
              which weights train>}

registered under the one name `keras_transfer>PeftModel`. On load,
`from_config` deserializes the base object, redoes the recorded surgery
(the same variable structure again) and returns it; Keras then loads the
LoRA and adapter weights into it as usual. `merge_lora` removes the LoRA
entries, and the owner becomes its plain class again once nothing is left.
"""

import contextlib
import json
import re

import keras
import numpy as np

from keras_transfer.layers.adapter import Adapter
from keras_transfer.layers._lora_base import LoRABase
from keras_transfer.layers.lora_conv2d import LoRAConv2D
from keras_transfer.layers.lora_dense import LoRADense
from keras_transfer.layers.lora_einsum_dense import LoRAEinsumDense

_LORA_CLASSES = {
    keras.layers.Dense: LoRADense,
    keras.layers.EinsumDense: LoRAEinsumDense,
    keras.layers.Conv2D: LoRAConv2D,
}
_PLACEMENTS = {
    # keras-hub `TransformerEncoder`: after the attention output projection
    # and after the feed-forward block (Houlsby), or the latter only
    # (Pfeiffer). Both sit before the residual add and layer norm.
    "houlsby": [r"attention_output$", r"feedforward_output_dense$"],
    "pfeiffer": [r"feedforward_output_dense$"],
}


def _is_graph_model(layer):
    return isinstance(layer, keras.Model) and any(
        cls.__name__ in ("Functional", "Sequential")
        for cls in type(layer).__mro__
    )


def _can_clone(model):
    return type(model) is keras.Sequential or type(model).__name__ == "Functional"


def _children(layer):
    """Direct sublayers as `(attribute name or None, index or None, layer)`."""
    if _is_graph_model(layer):
        return [(None, None, child) for child in layer.layers]
    found, seen = [], set()
    for attr, value in vars(layer).items():
        if attr.startswith("_tracker") or attr in ("_layers",):
            continue
        if isinstance(value, keras.layers.Layer):
            items = [(attr, None, value)]
        elif isinstance(value, (list, tuple)) and attr != "_layers":
            items = [
                (attr, i, v)
                for i, v in enumerate(value)
                if isinstance(v, keras.layers.Layer)
            ]
        else:
            continue
        for item in items:
            if id(item[2]) not in seen:
                seen.add(id(item[2]))
                found.append(item)
    return found


def _walk(layer, prefix=""):
    """Yields `(path, parent, attr, index, child)` for every sublayer.

    The walk does not descend into LoRA layers or adapters.
    """
    for attr, index, child in _children(layer):
        path = f"{prefix}{child.name}"
        yield path, layer, attr, index, child
        if not isinstance(child, (LoRABase, Adapter)):
            yield from _walk(child, prefix=f"{path}/")


def _match(targets, path, layer, supported):
    """Which targets (strings: regex on the path; classes) select `layer`."""
    hits = []
    for target in targets:
        if isinstance(target, str):
            if re.search(target, path):
                hits.append(target)
        elif isinstance(layer, target) and (
            supported is None or type(layer) in supported
        ):
            hits.append(target)
    return hits


def _select(model, targets, supported, kind):
    if isinstance(targets, (str, type)):
        targets = [targets]
    targets = list(targets)
    if not targets:
        raise ValueError(
            f"`targets` must name at least one layer type or pattern. "
            f"Received: targets={targets!r}"
        )
    matched = {id(t) if not isinstance(t, str) else t: 0 for t in targets}
    chosen = []
    for path, parent, attr, index, layer in _walk(model):
        hits = _match(targets, path, layer, supported)
        if not hits:
            continue
        if kind == "lora" and isinstance(layer, LoRABase):
            raise ValueError(
                f"LoRA is already applied to layer '{path}'. Apply it once "
                "per layer (merge it first with `merge_lora`)."
            )
        if kind == "lora" and type(layer) not in supported:
            if any(isinstance(h, str) for h in hits) and not _is_container(
                layer
            ):
                raise ValueError(
                    f"LoRA does not support layer '{path}' of type "
                    f"{type(layer).__name__}. Supported types: "
                    f"{sorted(c.__name__ for c in supported)}. Received: "
                    f"targets={targets!r}"
                )
            continue
        if kind == "lora" and getattr(layer, "lora_enabled", False):
            raise ValueError(
                f"Layer '{path}' already has Keras's own LoRA enabled "
                "(`enable_lora`). Apply LoRA once per layer."
            )
        for hit in hits:
            matched[id(hit) if not isinstance(hit, str) else hit] += 1
        chosen.append((path, parent, attr, index, layer))
    for target in targets:
        key = id(target) if not isinstance(target, str) else target
        if not matched[key]:
            names = [p for p, *_ in _walk(model)][:40]
            raise ValueError(
                f"No layer of model '{model.name}' matches target "
                f"{target!r}. Some layer paths: {names}. Fix the pattern "
                "(a regular expression searched in the path) or the type."
            )
    return chosen


def _is_container(layer):
    return bool(_children(layer))


def _replace(parent, attr, index, layer, make):
    """Puts `make(layer)` where `layer` was on `parent`; returns it.

    The one place that touches Keras's private layer tracker: the old layer
    must leave `parent._tracker` (or its weights would be listed twice) and
    the tracker, locked after `build`, must accept the new one. No public
    API swaps a sublayer of a built layer. `tests/strategies/test_peft.py`
    guards these assumptions.
    """
    # Build under the parent's scope so weight paths stay unique.
    with contextlib.ExitStack() as stack:
        for part in (parent.path or parent.name).split("/"):
            stack.enter_context(keras.name_scope(part))
        new = make(layer)
    tracker = parent._tracker
    was_locked = tracker.locked
    tracker.untrack(layer)
    tracker.unlock()
    try:
        if index is None:
            setattr(parent, attr, new)
        else:
            getattr(parent, attr)[index] = new
            tracker.track(new)
    finally:
        if was_locked:
            tracker.lock()
    return new


def _swap(model, chosen, make, record=None):
    """Replaces each chosen layer by `make(layer)`; returns the model.

    `record(owner, key, old, new)` is called for each layer swapped in place
    (see `_owner_of`) to keep the owner's saved config in step.
    """
    top = {id(layer) for _, parent, _, _, layer in chosen if parent is model}
    nested = [c for c in chosen if c[1] is not model or not _is_graph_model(model)]
    for path, parent, attr, index, layer in nested:
        if attr is None:
            raise ValueError(
                f"Layer '{path}' is a node of the graph of the nested model "
                f"'{parent.name}' ({type(parent).__name__}), which cannot be "
                "changed in place. Apply the surgery to that model itself "
                "(it is cloned) and build the outer model around the result, "
                "or narrow `targets` to layers nested inside its blocks."
            )
    for path, parent, attr, index, layer in nested:
        chain = _owner_of(model, layer)
        new = _replace(parent, attr, index, layer, make)
        if record is not None:
            record(chain, layer, new)
    if top and _is_graph_model(model):
        if not _can_clone(model):
            names = [p for p, parent, *_ in chosen if parent is model]
            raise ValueError(
                f"Layers {names} are nodes of the graph of model "
                f"'{model.name}' ({type(model).__name__}), which cannot be "
                "rebuilt with `clone_model`. Narrow `targets` to layers "
                "nested inside its blocks."
            )
        replaced = {}

        def clone_function(layer):
            if id(layer) in top:
                replaced[id(layer)] = make(layer)
                return replaced[id(layer)]
            return layer

        model = keras.models.clone_model(
            model, clone_function=clone_function
        )
    return model


def _holds_peft(layer):
    if isinstance(layer, (LoRABase, Adapter)):
        return True
    return any(_holds_peft(c) for _, _, c in _children(layer))


def _freeze_all_but_peft(layer):
    """Freezes every weight outside LoRA layers and adapters.

    Leaves get `trainable=False` (which a Sequential or Functional model
    saves in its config). LoRA layers, adapters and the containers that hold
    them get `trainable=True` (even if the model was frozen before, as in
    `base.trainable = False; apply_lora(base)`), with the containers' own
    weights frozen.
    """
    if isinstance(layer, (LoRABase, Adapter)):
        layer.trainable = True
        return True
    if not _holds_peft(layer):
        layer.trainable = False
        return False
    # Setting `trainable` recurses; the children are then set one by one.
    layer.trainable = True
    for _, _, child in _children(layer):
        _freeze_all_but_peft(child)
    for v in _own_weights(layer):
        v.trainable = False
    return True


# Whole-model saving of in-place surgery (see the module docstring).

_SURGERY_ATTR = "_keras_transfer_peft"
_PEFT_CLASSES = {}  # plain class -> its PEFT subclass
_PLAIN_CLASSES = {}  # PEFT subclass -> plain class


def _find(layer, target):
    """`[(ancestor, step), ...]` from `layer` down to `target`, or None."""
    for step, _, _, child in _steps(layer):
        if child is target:
            return [(layer, step)]
        if isinstance(child, (LoRABase, Adapter)):
            continue
        found = _find(child, target)
        if found is not None:
            return [(layer, step)] + found
    return None


def _owner_of(model, layer):
    """`[(ancestor, key), ...]`, top first, for the ancestors of `layer`
    that rebuild their sublayers from their own config (all but plain
    Sequential and Functional models); `key` is `layer`'s structural path
    below that ancestor. The first one is the owner that records surgery.
    """
    trail = _find(model, layer) or []
    steps = [step for _, step in trail]
    return [
        (ancestor, "/".join(steps[i:]))
        for i, (ancestor, _) in enumerate(trail)
        if not _can_clone(ancestor)
    ]


def _surgery(owner):
    return json.loads(getattr(owner, _SURGERY_ATTR, "[]"))


def _set_surgery(owner, entries):
    """Records `entries` on `owner`, switching its class as needed."""
    cls = type(owner)
    if entries:
        if cls not in _PLAIN_CLASSES:
            owner.__class__ = _peft_class(cls)
        # A string: Keras's attribute tracker leaves it alone.
        setattr(owner, _SURGERY_ATTR, json.dumps(entries))
    elif cls in _PLAIN_CLASSES:
        owner.__class__ = _PLAIN_CLASSES[cls]
        delattr(owner, _SURGERY_ATTR)


def _record_new(entry):
    def record(chain, old, new):
        owner, key = chain[0]
        _set_surgery(owner, _surgery(owner) + [{"path": key, **entry(new)}])

    return record


def _record_merge(chain, old, new):
    for ancestor, key in chain:
        if type(ancestor) in _PLAIN_CLASSES:
            _set_surgery(
                ancestor,
                [
                    e
                    for e in _surgery(ancestor)
                    if not (e["kind"] == "lora" and e["path"] == key)
                ],
            )


def _lora_entry(layer):
    return {
        "kind": "lora",
        "lora_rank": layer.lora_rank,
        "lora_alpha": layer.lora_alpha,
        "lora_dropout": layer.lora_dropout,
        "rank_stabilized": layer.rank_stabilized,
        "train_bias": layer.train_bias,
    }


def _own_weights(layer):
    child_ids = {id(v) for _, _, c in _children(layer) for v in c.weights}
    return [v for v in layer.weights if id(v) not in child_ids]


def _trainable_state(owner):
    """Which layers are frozen and which weights train, by structural key.

    Inside the LoRA layers and adapters this is fixed by their `build`.
    """
    frozen, variables = [], {}
    for key, layer in [("", owner)] + list(_structural_walk(owner)):
        if not layer.trainable:
            frozen.append(key)
        if isinstance(layer, (LoRABase, Adapter)):
            continue
        for i, v in enumerate(_own_weights(layer)):
            variables[f"{key}:{i}"] = bool(v.trainable)
    return {"frozen_layers": frozen, "variables": variables}


def _set_trainable_state(owner, state):
    layers = dict([("", owner)] + list(_structural_walk(owner)))
    for key in state["frozen_layers"]:
        layers[key].trainable = False
    for key, flag in state["variables"].items():
        layer_key, i = key.rsplit(":", 1)
        _own_weights(layers[layer_key])[int(i)].trainable = flag


def _make_adapter(layer, bottleneck, reduction_factor, activation):
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


def _redo(owner, peft):
    """Redoes recorded surgery on a freshly deserialized `owner`."""
    for entry in peft["surgery"]:
        settings = {k: v for k, v in entry.items() if k not in ("path", "kind")}
        found = [
            item
            for item in _structural_items(owner)
            if item[0] == entry["path"]
        ]
        if not found:
            raise ValueError(
                f"Cannot redo the saved {entry['kind']} surgery on "
                f"'{owner.name}': it has no sublayer at {entry['path']!r}. "
                "The saved model's structure does not match its class."
            )
        _, parent, attr, index, layer = found[0]
        if entry["kind"] == "lora":
            make = lambda layer: _LORA_CLASSES[type(layer)].from_layer(  # noqa
                layer, **settings
            )
        else:
            make = lambda layer: _make_adapter(layer, **settings)  # noqa
        _replace(parent, attr, index, layer, make)
        _set_surgery(owner, _surgery(owner) + [entry])
    _set_trainable_state(owner, peft["trainable"])


@keras.saving.register_keras_serializable(
    package="keras_transfer", name="PEFTModel"
)
class _PEFTOwner:
    """Mixin of the classes `_peft_class` makes; see the module docstring.

    Every such class is registered under the one name
    `keras_transfer>PEFTModel`, which resolves to this mixin's
    `from_config`.
    """

    def get_config(self):
        peft_cls = type(self)
        self.__class__ = _PLAIN_CLASSES[peft_cls]
        try:
            base = keras.saving.serialize_keras_object(self)
        finally:
            self.__class__ = peft_cls
        # Compiling (which builds the optimizer) waits for the surgery.
        base.pop("compile_config", None)
        return {
            "base": base,
            "peft": {
                "surgery": _surgery(self),
                "trainable": _trainable_state(self),
            },
        }

    @classmethod
    def from_config(cls, config):
        owner = keras.saving.deserialize_keras_object(config["base"])
        _redo(owner, config["peft"])
        return owner


def _peft_class(cls):
    if cls not in _PEFT_CLASSES:
        peft_cls = type(
            f"PEFT{cls.__name__}", (_PEFTOwner, cls), {"__module__": __name__}
        )
        register = keras.saving.register_keras_serializable(
            package="keras_transfer", name="PEFTModel"
        )
        register(peft_cls)
        # Registering also points the name at `peft_cls`; point it back at
        # the mixin so that loading never depends on which class came last.
        register(_PEFTOwner)
        _PEFT_CLASSES[cls] = peft_cls
        _PLAIN_CLASSES[peft_cls] = cls
    return _PEFT_CLASSES[cls]


def apply_lora(
    model,
    lora_rank=8,
    targets=(keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv2D),
    lora_alpha=None,
    lora_dropout=0.0,
    rank_stabilized=False,
    train_bias=False,
    freeze_others=True,
):
    """Replaces the targeted layers of `model` by LoRA layers.

    `Dense`, `EinsumDense` and `Conv2D` become `LoRADense`,
    `LoRAEinsumDense` and `LoRAConv2D` with the same weights (so outputs are
    unchanged at first), and every other weight is frozen.

    Args:
        model: a built Keras model (Sequential, Functional or subclassed,
            e.g. a keras-hub backbone).
        lora_rank, lora_alpha, lora_dropout, rank_stabilized, train_bias:
            see `LoRADense`.
        targets: a layer class, a string or a list of them. A string is a
            regular expression searched in the layer's path (e.g.
            `r"self_attention_layer/(query|value)$"`); a class selects every
            layer of that type. Each target must match at least one layer.
        freeze_others: bool, freeze all weights outside the LoRA layers.

    Returns:
        `(model, changed)`: the model (a new one when top-level layers of a
        Sequential or Functional model were replaced; otherwise the same
        object, modified in place) and the list of changed layer paths.

    The result saves whole with `model.save("....keras")` and loads with
    `keras.models.load_model` (after `import keras_transfer`), LoRA weights,
    frozen/trainable state and optimizer state included, also when the
    changed layers sit inside a keras-hub backbone: the backbone then
    saves as `keras_transfer>PEFTModel` (see the module docstring) and
    becomes a plain keras-hub backbone again after `merge_lora`.

    Example:

    ```python
    encoder = keras_transfer.backbones.minilm(sequence_length=64)
    encoder, changed = keras_transfer.strategies.apply_lora(
        encoder, lora_rank=8, targets=r"self_attention_layer/(query|value)$"
    )
    ```
    """
    kwargs = dict(
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        rank_stabilized=rank_stabilized,
        train_bias=train_bias,
    )
    # Validate once up front so a bad value fails before any surgery.
    from keras_transfer.layers._lora_base import check_lora_args

    check_lora_args(lora_rank, lora_alpha, lora_dropout)
    chosen = _select(model, targets, set(_LORA_CLASSES), "lora")
    model = _swap(
        model,
        chosen,
        lambda layer: _LORA_CLASSES[type(layer)].from_layer(layer, **kwargs),
        record=_record_new(_lora_entry),
    )
    if freeze_others:
        _freeze_all_but_peft(model)
    return model, [path for path, *_ in chosen]


def add_adapters(
    model,
    targets=None,
    placement=None,
    bottleneck=None,
    reduction_factor=None,
    activation="relu",
    freeze_others=True,
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
        freeze_others: bool, freeze all weights outside the adapters.

    Returns:
        `(model, changed)` as in `apply_lora`. Each targeted layer is
        replaced by `keras.Sequential([layer, Adapter(...)])`. Saving works
        as for `apply_lora`.
    """
    if (targets is None) == (placement is None):
        raise ValueError(
            "Pass exactly one of `targets` and `placement`. Received: "
            f"targets={targets!r}, placement={placement!r}"
        )
    if placement is not None:
        if placement not in _PLACEMENTS:
            raise ValueError(
                f"`placement` must be one of {sorted(_PLACEMENTS)}. "
                f"Received: placement={placement!r}"
            )
        targets = _PLACEMENTS[placement]
    # Validate the adapter arguments before any surgery.
    Adapter(bottleneck=bottleneck, reduction_factor=reduction_factor)
    chosen = _select(model, targets, None, "adapter")

    activation = keras.activations.serialize(keras.activations.get(activation))
    settings = dict(
        bottleneck=bottleneck,
        reduction_factor=reduction_factor,
        activation=activation,
    )
    model = _swap(
        model,
        chosen,
        lambda layer: _make_adapter(layer, **settings),
        record=_record_new(lambda new: {"kind": "adapter", **settings}),
    )
    if freeze_others:
        _freeze_all_but_peft(model)
    return model, [path for path, *_ in chosen]


def merge_lora(model):
    """Folds every LoRA update into its kernel, back to plain Keras layers.

    Each `LoRADense` / `LoRAEinsumDense` / `LoRAConv2D` becomes a `Dense` /
    `EinsumDense` / `Conv2D` with kernel `W + s A B` (see `LoRABase.merge`),
    so the saved config holds no LoRA and inference costs what the plain
    layer costs. `apply_lora` is the reverse direction.

    Returns:
        `(model, changed)` as in `apply_lora`.

    Raises:
        ValueError: if `model` has no LoRA layer.
    """
    chosen = [c for c in _walk(model) if isinstance(c[4], LoRABase)]
    if not chosen:
        raise ValueError(
            f"Model '{model.name}' has no LoRA layer to merge. Apply LoRA "
            "with `apply_lora` first."
        )
    model = _swap(
        model, chosen, lambda layer: layer.merge(), record=_record_merge
    )
    return model, [path for path, *_ in chosen]


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def trainable_summary(model, print_fn=print):
    """Trainable vs total parameters, per layer and in total.

    Lists each layer that owns weights directly (LoRA layers and adapters
    as one row each).

    Args:
        model: a Keras model or layer.
        print_fn: function used to print the table, or `None` for silence.

    Returns:
        A dict with `"layers"` (a list of `(path, trainable, total)`),
        `"trainable"`, `"total"` and `"fraction"`.
    """
    trainable_ids = {id(v) for v in model.trainable_weights}
    rows = []

    def visit(layer, path):
        children = (
            []
            if isinstance(layer, (LoRABase, Adapter))
            else _children(layer)
        )
        child_ids = {id(v) for _, _, c in children for v in c.weights}
        own = [v for v in layer.weights if id(v) not in child_ids]
        if own:
            rows.append(
                (
                    path or layer.name,
                    _count(v for v in own if id(v) in trainable_ids),
                    _count(own),
                )
            )
        for _, _, child in children:
            visit(child, f"{path}/{child.name}" if path else child.name)

    visit(model, "")
    seen, total_vars = set(), []
    for v in model.weights:
        if id(v) not in seen:
            seen.add(id(v))
            total_vars.append(v)
    total = _count(total_vars)
    trainable = _count(model.trainable_weights)
    summary = {
        "layers": rows,
        "trainable": trainable,
        "total": total,
        "fraction": trainable / total if total else 0.0,
    }
    if print_fn is not None:
        width = max([len(r[0]) for r in rows] + [5])
        lines = [f"{'layer':<{width}}  {'trainable':>12}  {'total':>12}"]
        lines += [f"{p:<{width}}  {t:>12,}  {n:>12,}" for p, t, n in rows]
        lines.append(
            f"{'TOTAL':<{width}}  {trainable:>12,}  {total:>12,}  "
            f"({100 * summary['fraction']:.3f}% trainable)"
        )
        print_fn("\n".join(lines))
    return summary


def _steps(layer):
    """`(step, attr, index, child)` per direct sublayer; `step` names the
    child by attribute and position (`_query_dense`, `layers[3]`), not by
    layer name."""
    for position, (attr, index, child) in enumerate(_children(layer)):
        if attr is None:
            step = f"layers[{position}]"
        else:
            step = attr if index is None else f"{attr}[{index}]"
        yield step, attr, index, child


def _structural_items(layer, prefix=""):
    """Yields `(key, parent, attr, index, child)` like `_walk`, keyed by
    position instead of name (see `_structural_walk`)."""
    for step, attr, index, child in _steps(layer):
        key = f"{prefix}{step}"
        yield key, layer, attr, index, child
        if not isinstance(child, (LoRABase, Adapter)):
            yield from _structural_items(child, prefix=f"{key}/")


def _structural_walk(layer, prefix=""):
    """Yields `(key, child)` like `_walk`, keyed by position, not by name.

    Keras makes auto-generated names unique per process (`bert_backbone`,
    `bert_backbone_1`, ...), so a fresh copy of the same model usually has
    other layer names; attribute names and positions do not change.
    """
    for key, _, _, _, child in _structural_items(layer, prefix):
        yield key, child


def _peft_variables(model, by_name=False):
    """`{key: variable}` for every LoRA and adapter weight that trains.

    Keys are structural paths (see `_structural_walk`); `by_name=True`
    gives the layer-name paths of files written by earlier versions.
    """
    found = {}
    if by_name:
        walk = ((path, layer) for path, _, _, _, layer in _walk(model))
    else:
        walk = _structural_walk(model)
    for path, layer in walk:
        if isinstance(layer, LoRABase):
            variables = [layer.lora_kernel_a, layer.lora_kernel_b]
            bias = getattr(layer.base_layer, "bias", None)
            if layer.train_bias and bias is not None:
                variables.append(bias)
        elif isinstance(layer, Adapter):
            variables = layer.weights
        else:
            continue
        for i, v in enumerate(variables):
            found[f"{path}/{i}:{v.name}"] = v
    return found


def save_peft_weights(model, filepath):
    """Saves only the LoRA and adapter weights of `model` to a `.npz` file.

    Load them onto a fresh copy of the base model after the same
    `apply_lora` / `add_adapters` call with `load_peft_weights`. Weights
    are keyed by their position in the model (attribute names and layer
    indices), not by layer names, so the copy may have other auto-generated
    names (`bert_backbone_1`, ...), e.g. when built in the same process.
    """
    variables = _peft_variables(model)
    if not variables:
        raise ValueError(
            f"Model '{model.name}' has no LoRA or adapter weights to save."
        )
    if not str(filepath).endswith(".npz"):
        raise ValueError(
            "`filepath` must end in `.npz`. "
            f"Received: filepath={filepath!r}"
        )
    np.savez(
        filepath,
        **{k: keras.ops.convert_to_numpy(v) for k, v in variables.items()},
    )


def load_peft_weights(model, filepath):
    """Loads weights saved by `save_peft_weights` into `model`.

    `model` must have the same LoRA layers / adapters (same targets, ranks
    and bottlenecks); any missing, extra or mis-shaped weight is an error.
    """
    variables = _peft_variables(model)
    with np.load(filepath) as data:
        stored = dict(data.items())
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
            "call to the base model before loading."
        )
    for key, v in variables.items():
        if tuple(stored[key].shape) != tuple(v.shape):
            raise ValueError(
                f"Weight {key!r} has shape {tuple(stored[key].shape)} in "
                f"{filepath!r} but {tuple(v.shape)} in the model."
            )
        v.assign(stored[key])
