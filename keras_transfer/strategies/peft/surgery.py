"""Choosing layers, swapping them at any depth, and freezing the rest.

Every PEFT entry point (`apply_lora`, `add_adapters`, `merge_lora`) runs the
same steps:

1. `select`: the sites (see `keras_transfer._walk`) its targets match;
2. `swap`: builds every new layer first (so a bad rank fails before the
   model changes), gives it its own variable buffers, records in-place
   changes on the saving owner (`owner.py`), then puts the new layers in
   place with `_walk.rebuild`;
3. `freeze_all_but`: freezes every weight outside the PEFT layers and the
   `trainable_layers` the user keeps;
4. `make_ready`: a compiled or used model drops its cached train / test /
   predict functions and gets a fresh optimizer for its new trainable set.
"""

import contextlib
import json
import re
import warnings

import keras

from keras_transfer import _keras_private
from keras_transfer import _walk
from keras_transfer.layers._lora_base import LoRABase
from keras_transfer.layers.adapter import Adapter

TRAINABLE_BEFORE_ATTR = "_keras_transfer_trainable_before"


def is_peft(layer):
    return isinstance(layer, (LoRABase, Adapter))


def _descend(layer):
    return not is_peft(layer)


def sites(model):
    """Every `Site` of `model`, not descending into LoRA layers or adapters."""
    return list(_walk.walk(model, descend=_descend))


def _some_paths(model, limit=40):
    return [site.path for site in sites(model)][:limit]


def _as_list(targets, name):
    if isinstance(targets, (str, type, keras.layers.Layer)):
        targets = [targets]
    if not isinstance(targets, (list, tuple)) or not targets:
        raise ValueError(
            f"`{name}` must be a layer class, a pattern string or a "
            f"non-empty list of them. Received: {name}={targets!r}"
        )
    for target in targets:
        if not isinstance(target, (str, type)):
            raise ValueError(
                f"Each entry of `{name}` must be a layer class or a regular "
                f"expression string. Received: {target!r} in "
                f"{name}={targets!r}"
            )
        if isinstance(target, str):
            try:
                re.compile(target)
            except re.error as error:
                raise ValueError(
                    f"`{name}` entry {target!r} is not a valid regular "
                    f"expression ({error}). Received: {name}={targets!r}"
                ) from None
    return list(targets)


def select(model, targets, supported, kind, accepts=None):
    """The sites that `targets` choose, each layer once.

    A string is a regular expression searched in the layer's path and must
    match at least one layer. Classes select every layer of their type; a
    list of classes must match at least one layer in all (so the default
    "every supported type" works on a model that has only some of them)
    and skip layers of a supported type that `accepts(layer)` refuses (a
    grouped convolution); a pattern naming such a layer is an error.
    """
    targets = _as_list(targets, "targets")
    strings = [t for t in targets if isinstance(t, str)]
    classes = tuple(t for t in targets if isinstance(t, type))
    string_hits = {t: 0 for t in strings}
    chosen, seen, with_lora = [], set(), []
    for site in sites(model):
        layer = site.layer
        by_string = [t for t in strings if re.search(t, site.path)]
        by_class = classes and isinstance(layer, classes)
        if kind == "lora" and classes and isinstance(layer, LoRABase):
            with_lora.append(site.path)
        if supported is not None and by_class:
            by_class = type(layer) in supported and (
                accepts is None or accepts(layer)
            )
        if not (by_string or by_class):
            continue
        if kind == "lora" and isinstance(layer, LoRABase):
            raise ValueError(
                f"LoRA is already applied to layer '{site.path}'. Apply it "
                "once per layer (merge it first with `merge_lora`)."
            )
        if kind == "lora" and type(layer) not in supported:
            # A pattern naming a container (a block) selects nothing by
            # itself; naming an unsupported leaf is an error.
            if by_string and not _walk.children(layer):
                raise ValueError(
                    f"LoRA does not support layer '{site.path}' of type "
                    f"{type(layer).__name__}. Supported types: "
                    f"{sorted(c.__name__ for c in supported)}. Received: "
                    f"targets={targets!r}"
                )
            continue
        if kind == "lora" and getattr(layer, "lora_enabled", False):
            raise ValueError(
                f"Layer '{site.path}' already has Keras's own LoRA enabled "
                "(`enable_lora`). Apply LoRA once per layer."
            )
        for t in by_string:
            string_hits[t] += 1
        if id(layer) not in seen:
            seen.add(id(layer))
            chosen.append(site)
    for target, hits in string_hits.items():
        if not hits:
            raise ValueError(
                f"No layer of model '{model.name}' matches target "
                f"{target!r}. Some layer paths: {_some_paths(model)}. Fix "
                "the pattern (a regular expression searched in the path)."
            )
    if not chosen and with_lora:
        raise ValueError(
            f"LoRA is already applied to layer '{with_lora[0]}' (and to "
            f"{len(with_lora) - 1} more), and no other layer of model "
            f"'{model.name}' matches targets {targets!r}. Apply it once per "
            "layer (merge it first with `merge_lora`)."
        )
    if not chosen:
        raise ValueError(
            f"No layer of model '{model.name}' matches targets {targets!r}"
            + (
                f" (supported types: {sorted(c.__name__ for c in supported)})"
                if supported is not None
                else ""
            )
            + f". Some layer paths: {_some_paths(model)}."
        )
    return chosen


def select_trainable(model, trainable_layers):
    """The layers named by `trainable_layers` (patterns searched in the
    layer paths, or layer objects); each entry must match a layer."""
    if trainable_layers is None:
        return []
    if isinstance(trainable_layers, (str, keras.layers.Layer)):
        trainable_layers = [trainable_layers]
    if not isinstance(trainable_layers, (list, tuple)):
        raise ValueError(
            "`trainable_layers` must be a list of layer path patterns or "
            f"layers. Received: trainable_layers={trainable_layers!r}"
        )
    all_sites = sites(model)
    found = []
    for entry in trainable_layers:
        if isinstance(entry, keras.layers.Layer):
            hits = [s.layer for s in all_sites if s.layer is entry]
        elif isinstance(entry, str) and entry:
            hits = [s.layer for s in all_sites if re.search(entry, s.path)]
        else:
            raise ValueError(
                "Each entry of `trainable_layers` must be a non-empty "
                f"pattern string or a layer. Received: {entry!r} in "
                f"trainable_layers={trainable_layers!r}"
            )
        if not hits:
            raise ValueError(
                f"`trainable_layers` entry {entry!r} matches no layer of "
                f"model '{model.name}'. Some layer paths: "
                f"{_some_paths(model)}. Received: "
                f"trainable_layers={trainable_layers!r}"
            )
        found.extend(h for h in hits if all(h is not f for f in found))
    return found


def without_kept(model, chosen, keep):
    """`chosen` less the layers in or below `keep` (they train whole)."""
    kept = set()
    for layer in keep:
        kept.add(id(layer))
        kept.update(id(s.layer) for s in _walk.walk(layer))
    remaining = [site for site in chosen if id(site.layer) not in kept]
    if chosen and not remaining:
        raise ValueError(
            f"Every layer the targets match in model '{model.name}' is in "
            "`trainable_layers` (which train whole, without LoRA or "
            f"adapters): {[site.path for site in chosen]}."
        )
    return remaining


def build_new(site, make):
    # Under the name scope the old layer was built in (`layer.path` less
    # its own name), so the new weight paths match the old ones.
    old = site.layer
    scope = (old.path or old.name).split("/")[:-1]
    with contextlib.ExitStack() as stack:
        for part in scope:
            stack.enter_context(keras.name_scope(part))
        try:
            new = make(old)
        except ValueError as error:
            raise ValueError(f"At layer '{site.path}': {error}") from error
    _own_buffers(new, old)
    return new


def _own_buffers(new, old):
    """Gives every variable `new` created its own array.

    `variable.assign(other_variable)` shares the array on JAX, and a
    compiled JAX step donates (deletes) the arrays of the model it trains:
    training the new model would delete the old model's weights
    ("Array has been deleted"). Variables `new` shares with `old` itself
    (an adapter block holds the old layer) stay shared, as Keras shares a
    layer between two models.
    """
    shared = {id(v) for v in old.weights}
    for variable in new.weights:
        if id(variable) not in shared:
            variable.assign(keras.ops.copy(variable.value))


def swap(model, chosen, make, record=None):
    """Replaces each chosen layer by `make(layer)`; returns the model (a new
    one when a node of a plain Sequential or Functional model changed).

    `record(chain, old, new)` is called per swapped layer, where `chain`
    lists the ancestors that must record the surgery to save it (see
    `owner.py`), before anything changes.
    """
    new_layers = {}
    for site in chosen:
        new_layers[id(site.layer)] = build_new(site, make)
    if record is not None:
        for site in chosen:
            record(
                record_chain(model, site.layer), site.layer,
                new_layers[id(site.layer)],
            )
    before = getattr(model, TRAINABLE_BEFORE_ATTR, None)
    result = _walk.rebuild(model, new_layers)
    if result is not model and before is not None:
        setattr(result, TRAINABLE_BEFORE_ATTR, before)
    return result


def record_chain(model, layer):
    """`[(ancestor, key), ...]`, top first, for the ancestors of `layer`
    whose saved config does not carry their sublayers (everything but
    graph models and wrappers); `key` is `layer`'s structural key below
    that ancestor. The first one is the owner that records the surgery."""
    trail = _walk.trail(model, layer, descend=_descend) or []
    steps = [step for _, step in trail]
    return [
        (ancestor, "/".join(steps[i:]))
        for i, (ancestor, _) in enumerate(trail)
        if not _walk.serializes_sublayers(ancestor)
    ]


def own_weights(layer):
    if is_peft(layer):
        return list(layer.weights)
    child_ids = {
        id(v) for _, _, c in _walk.children(layer) for v in c.weights
    }
    return [v for v in layer.weights if id(v) not in child_ids]


def freeze_all_but(layer, keep):
    """Freezes every weight outside the layers in `keep` (ids).

    Kept layers get `trainable=True` (even inside a model frozen before, as
    in `base.trainable = False; apply_lora(base)`); the containers holding
    them too, with the containers' own weights frozen; every other layer
    gets `trainable=False` (which graph models save in their config).
    Returns whether `layer` holds a kept layer.
    """
    if id(layer) in keep:
        layer.trainable = True
        return True
    if not _holds(layer, keep):
        layer.trainable = False
        return False
    # Setting `trainable` recurses; the children are then set one by one.
    layer.trainable = True
    for _, _, child in _walk.children(layer):
        freeze_all_but(child, keep)
    for variable in own_weights(layer):
        variable.trainable = False
    return True


def _holds(layer, keep):
    if id(layer) in keep:
        return True
    if is_peft(layer):
        return False
    return any(_holds(child, keep) for _, _, child in _walk.children(layer))


def peft_layers(model):
    return [site.layer for site in sites(model) if is_peft(site.layer)]


def freeze_others(model, trainable, caller):
    """Freezes all of `model` but its PEFT layers and `trainable` layers.

    Warns when this freezes an output layer of a plain Sequential or
    Functional model that trained before (a new classifier head, which
    then would never train): `trainable_layers` keeps it trainable.
    """
    keep = {id(layer) for layer in peft_layers(model)}
    keep.update(id(layer) for layer in trainable)
    heads = [
        layer
        for layer in _output_layers(model)
        if layer.trainable_weights and not _holds(layer, keep)
    ]
    freeze_all_but(model, keep)
    if heads:
        names = [layer.name for layer in heads]
        warnings.warn(
            f"`{caller}(..., freeze_others=True)` froze the output layers "
            f"{names} of model '{model.name}', which were trainable. If "
            "they are a new head that must train, pass "
            f"`trainable_layers={[f'^{n}$' for n in names]!r}`.",
            stacklevel=3,
        )


def _output_layers(model):
    if not (_walk.is_graph_model(model) and _walk.can_clone(model)):
        return []
    if isinstance(model, keras.Sequential):
        return model.layers[-1:]
    names = getattr(model, "output_names", None) or []
    found = []
    for name in names:
        try:
            found.append(model.get_layer(name))
        except ValueError:
            pass
    return found


def trainable_state(model):
    """`{key: [layer.trainable, [own variable flags]]}` over `model`."""
    state = {}
    for key, layer in [("", model)] + [(s.key, s.layer) for s in sites(model)]:
        state[key] = [
            bool(layer.trainable),
            [bool(v.trainable) for v in own_weights(layer)],
        ]
    return state


def set_trainable_state(model, state, keys=None):
    """Sets what `trainable_state` returned, top down, on the keys given."""
    layers = dict(
        [("", model)] + [(s.key, s.layer) for s in sites(model)]
    )
    for key, (flag, flags) in state.items():
        if keys is not None and key not in keys:
            continue
        layer = layers.get(key)
        if layer is not None:
            layer.trainable = flag
    for key, (flag, flags) in state.items():
        if keys is not None and key not in keys:
            continue
        layer = layers.get(key)
        if layer is None or is_peft(layer):
            continue
        variables = own_weights(layer)
        if len(variables) == len(flags):
            for variable, value in zip(variables, flags):
                variable.trainable = value


def remember_trainable_state(model):
    """Records `model`'s trainable state before its first PEFT surgery."""
    if getattr(model, TRAINABLE_BEFORE_ATTR, None) is None and not peft_layers(
        model
    ):
        # A string: Keras's attribute tracker leaves it alone.
        setattr(model, TRAINABLE_BEFORE_ATTR, json.dumps(trainable_state(model)))


def recorded_trainable_state(model):
    text = getattr(model, TRAINABLE_BEFORE_ATTR, None)
    return None if text is None else json.loads(text)


def make_ready(model, like=None):
    """Leaves `model` ready for `predict`, `evaluate` and `fit` after its
    layers or trainable weights changed (in place, or in a new model made
    from `like`).

    Keras caches the compiled train / test / predict functions, which hold
    the old layers, and an optimizer is built for one set of trainable
    variables (on JAX it pairs its slots with them by position). A compiled
    model (or the new model made from a compiled `like`) is compiled with
    the same arguments and a fresh copy of the optimizer (same config and
    step count; the moments of the old trainable set do not carry over);
    an uncompiled one drops its cached functions.
    """
    like = model if like is None else like
    if not isinstance(model, keras.Model):
        return
    if not getattr(like, "compiled", False):
        model.train_function = None
        model.test_function = None
        model.predict_function = None
        return
    arguments = _keras_private.compile_arguments(like)
    old = like.optimizer
    optimizer = old
    if old is not None and (old.built or like is not model):
        optimizer = keras.optimizers.deserialize(
            keras.optimizers.serialize(old)
        )
    arguments["optimizer"] = optimizer
    model.compile(**arguments)
    if optimizer is not old and old.built:
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(old.iterations)
