"""Walking a model's layers at any depth, and replacing them (private).

One walk for PEFT surgery, `layer_groups` and `InferenceMode`. A layer's
direct children are:

- for a Sequential or Functional model (a "graph model"): its `layers`,
  the nodes of its graph;
- for any other layer (a keras-hub `TransformerEncoder`, `InferenceMode`,
  a custom block): the layers held in its attributes, directly or in a
  list or tuple (`_query_dense`, `layer`, `blocks[2]`).

Each child is reached through a `Site`: the parent, the attribute (or
`None` for a graph node), the index in a list attribute, the layer, its
name path (`"backbone/transformer_layer_0/self_attention_layer/query"`)
and its structural key (`"layers[3]/_self_attention_layer/_query_dense"`),
which names each step by attribute and position instead of layer name and
so is the same on a fresh copy of the model, whose auto-generated names
differ (`bert_backbone_1`).

`rebuild` puts new layers where old ones were at any depth: in place on
the attribute of a subclassed parent; by `keras.models.clone_model` for a
node of a plain Sequential or Functional model (a new model object, which
then replaces that model in its own parent, up to the top); in place in the
graph of a Functional subclass such as a keras-hub backbone, which cannot be
cloned (see `_keras_private.replace_graph_node`).
"""

import collections

import keras

from keras_transfer import _keras_private

Site = collections.namedtuple(
    "Site", ["path", "key", "parent", "attr", "index", "layer"]
)


def is_graph_model(layer):
    """Whether `layer` is a Sequential or Functional model (or subclass)."""
    return isinstance(layer, keras.Model) and any(
        cls.__name__ in ("Functional", "Sequential")
        for cls in type(layer).__mro__
    )


def model_input(model):
    """`model.input`, also for a Sequential model, whose `input` raises
    ("has never been called") even when it starts with `keras.Input` or
    was loaded from a `.keras` file; its `inputs` list is set. One input
    gives that tensor, several the list (a dict for a Functional model with
    named inputs, as `model.input` gives it)."""
    try:
        return model.input
    except AttributeError:
        inputs = model.inputs
        if not inputs:
            raise
        return inputs[0] if len(inputs) == 1 else list(inputs)


def model_output(model):
    """`model.output`, also for a Sequential model (see `model_input`)."""
    try:
        return model.output
    except AttributeError:
        outputs = model.outputs
        if not outputs:
            raise
        return outputs[0] if len(outputs) == 1 else list(outputs)


def can_clone(model):
    """Whether `keras.models.clone_model` rebuilds `model` faithfully: plain
    Sequential and Functional models, not subclasses (a keras-hub backbone
    rebuilds its layers from its own constructor arguments)."""
    return type(model) is keras.Sequential or type(model).__name__ == "Functional"


def children(layer):
    """Direct sublayers as `(attr, index, child)`; see the module docstring."""
    if is_graph_model(layer):
        return [(None, None, child) for child in layer.layers]
    found, seen = [], set()
    for attr, value in vars(layer).items():
        if attr.startswith("_tracker") or attr == "_layers":
            continue
        if isinstance(value, keras.layers.Layer):
            items = [(attr, None, value)]
        elif isinstance(value, (list, tuple)):
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


def _step(position, attr, index):
    if attr is None:
        return f"layers[{position}]"
    return attr if index is None else f"{attr}[{index}]"


def walk(layer, descend=None, path="", key=""):
    """Yields a `Site` for every sublayer of `layer`, depth first.

    Args:
        layer: a Keras layer or model.
        descend: optional `fn(layer) -> bool`; the walk does not go below a
            layer for which it returns False (the layer itself is yielded).
    """
    for position, (attr, index, child) in enumerate(children(layer)):
        child_path = f"{path}{child.name}"
        child_key = f"{key}{_step(position, attr, index)}"
        yield Site(child_path, child_key, layer, attr, index, child)
        if descend is None or descend(child):
            yield from walk(
                child, descend, path=f"{child_path}/", key=f"{child_key}/"
            )


def trail(layer, target, descend=None):
    """`[(ancestor, step), ...]` from `layer` down to `target`, or None."""
    for position, (attr, index, child) in enumerate(children(layer)):
        step = _step(position, attr, index)
        if child is target:
            return [(layer, step)]
        if descend is None or descend(child):
            found = trail(child, target, descend)
            if found is not None:
                return [(layer, step)] + found
    return None


def serializes_sublayers(layer):
    """Whether `layer`'s saved config carries its sublayers as they are now:
    plain graph models, `keras.layers.Wrapper`s and layers whose class sets
    `_serializes_sublayers = True` (`InferenceMode`). Any other layer (a
    keras-hub backbone or block) rebuilds its sublayers from its own
    arguments when loaded."""
    if is_graph_model(layer):
        return can_clone(layer)
    return isinstance(layer, keras.layers.Wrapper) or bool(
        getattr(type(layer), "_serializes_sublayers", False)
    )


def graph_units(model):
    """The layers of `model` in graph order, nested graph models flattened
    into their own layers; any other layer is one unit."""
    units = []
    for _, _, child in children(model):
        if is_graph_model(child):
            units.extend(graph_units(child))
        else:
            units.append(child)
    return units


def rebuild(layer, new_layers):
    """Puts `new_layers[id(old)]` where each `old` is, at any depth.

    Returns `layer` itself when every change was made in place, or a new
    model when `layer` is a plain graph model one of whose nodes changed
    (see the module docstring). Layers not in `new_layers` are shared.
    """
    if id(layer) in new_layers:
        return new_layers[id(layer)]
    changed = {}
    for attr, index, child in children(layer):
        new = rebuild(child, new_layers)
        if new is not child:
            changed[id(child)] = (attr, index, child, new)
    if not changed:
        return layer
    if is_graph_model(layer) and can_clone(layer):

        def clone_function(old):
            return changed[id(old)][3] if id(old) in changed else old

        return keras.models.clone_model(layer, clone_function=clone_function)
    for attr, index, child, new in changed.values():
        if attr is None:
            _keras_private.replace_graph_node(layer, child, new)
        else:
            _keras_private.replace_sublayer(layer, attr, index, child, new)
    return layer
