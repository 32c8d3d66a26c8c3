"""Splits a model into ordered groups of layers (input -> output)."""

import re

import keras
import numpy as np

from keras_transfer import _walk
from keras_transfer._keras_private import trainable_capable
from keras_transfer._validation import check_int

# Block patterns of the models this package ships or supports, tried in order.
# Each maps a layer name to the block it belongs to.
_BLOCK_PATTERNS = (
    # keras-hub transformer backbones (BertBackbone, ...).
    re.compile(r"^(transformer_layer_\d+)$"),
    # EfficientNet-Lite0 (and keras.applications EfficientNets): one block per
    # stage, `block3a_...` and `block3b_...` both belong to `block3`.
    re.compile(r"^(block\d+)[a-z]_"),
)


def _units(model):
    """The layers of `model` in input -> output order, nested models flattened.

    A nested `Sequential` or Functional model is replaced by its own layers; any
    other layer (a keras-hub `TransformerEncoder`, say) is one unit.
    """
    return _walk.graph_units(model)


def _has_weights(layer):
    """Weight-bearing: holds a weight that could train, frozen or not
    (BatchNormalization counts through its `gamma`/`beta`, its moving
    statistics do not)."""
    return bool(trainable_capable(layer))


def _check_count(num_groups, available):
    check_int(num_groups, "num_groups")
    if num_groups > available:
        raise ValueError(
            f"`num_groups` can be at most {available}, the number of "
            "weight-bearing units (layers or blocks) to split. "
            f"Received: num_groups={num_groups!r}"
        )


def _split(items, num_groups):
    """Splits `items` into `num_groups` contiguous, nearly equal runs."""
    bounds = np.linspace(0, len(items), num_groups + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _by_blocks(model, units):
    """Contiguous runs of weight-bearing layers, one per block the model
    defines; layers outside any block form their own groups (a stem before
    the first block, a top after the last)."""
    weighted = [u for u in units if _has_weights(u)]
    for pattern in _BLOCK_PATTERNS:
        keys = []
        for layer in weighted:
            match = pattern.match(layer.name)
            keys.append(match.group(1) if match else None)
        if any(k is not None for k in keys):
            break
    else:
        raise ValueError(
            f"`layer_groups` found no blocks in model '{model.name}': no layer "
            "name matches the block patterns "
            f"{[p.pattern for p in _BLOCK_PATTERNS]}. Pass `num_groups=` or "
            "`names=` instead. Received: blocks='auto'"
        )
    groups, current_key = [], object()
    for layer, key in zip(weighted, keys):
        if key != current_key:
            groups.append([])
            current_key = key
        groups[-1].append(layer)
    return groups


def _by_names(model, units, names):
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise ValueError(
            "`names` must be a non-empty list of groups, each a list of layer "
            f"names or name prefixes. Received: names={names!r}"
        )
    position = {id(u): i for i, u in enumerate(units)}
    all_names = [u.name for u in units]
    groups = []
    for group_names in names:
        if isinstance(group_names, str):
            group_names = [group_names]
        if not isinstance(group_names, (list, tuple)) or not group_names:
            raise ValueError(
                "Each group in `names` must be a non-empty list of layer names "
                f"or prefixes. Received: names={names!r}"
            )
        group = []
        for name in group_names:
            if not isinstance(name, str) or not name:
                raise ValueError(
                    "Layer names in `names` must be non-empty strings. "
                    f"Received: {name!r} in names={names!r}"
                )
            exact = [u for u in units if u.name == name]
            found = exact or [u for u in units if u.name.startswith(name)]
            if not found:
                raise ValueError(
                    f"`layer_groups` found no layer named or starting with "
                    f"{name!r} in model '{model.name}'. Available layers: "
                    f"{all_names}. Received: names={names!r}"
                )
            group.extend(u for u in found if u not in group)
        group = [u for u in group if _has_weights(u)]
        if not group:
            raise ValueError(
                f"A group in `names` has no weight-bearing layer: "
                f"{list(group_names)!r} would freeze nothing. "
                f"Received: names={names!r}"
            )
        groups.append(sorted(group, key=lambda u: position[id(u)]))
    return groups


def _validate(model, units, groups, how):
    seen = {}
    for i, group in enumerate(groups):
        for layer in group:
            if id(layer) in seen:
                raise ValueError(
                    f"Layer '{layer.name}' is in groups {seen[id(layer)]} and "
                    f"{i}; groups must not overlap. Received: {how}"
                )
            seen[id(layer)] = i
    missing = [u.name for u in units if _has_weights(u) and id(u) not in seen]
    if missing:
        raise ValueError(
            f"Weight-bearing layers {missing} of model '{model.name}' are in no "
            "group, so no stage would ever unfreeze them. Add them to a group "
            f"(a name prefix covers many). Received: {how}"
        )
    position = {id(u): i for i, u in enumerate(units)}
    firsts = [position[id(g[0])] for g in groups]
    if firsts != sorted(firsts):
        raise ValueError(
            "Groups must be ordered from the input to the output (first "
            f"layers: {[g[0].name for g in groups]}). Received: {how}"
        )


def layer_groups(model, num_groups=None, names=None, blocks=None):
    """Splits `model` into ordered groups of layers, from input to output.

    Callbacks such as `GradualUnfreezer` and `DiscriminativeLR` talk about
    "the top group" (`groups[-1]`) and "the lowest group" (`groups[0]`).
    Only weight-bearing layers (layers holding a trainable-capable weight;
    BatchNormalization counts) are put into groups: freezing a layer without
    weights changes nothing. Nested `Sequential`/Functional models are
    flattened into their layers; any other layer (a keras-hub
    `TransformerEncoder`) is one unit.

    Give one of:

    - `num_groups`: contiguous groups of (nearly) equal numbers of
      weight-bearing layers;
    - `names`: a list of groups, input to output, each a list of layer names
      or name prefixes (`"block6"` matches `block6a_...`, `block6b_...`);
      every weight-bearing layer must be in exactly one group;
    - `blocks="auto"`: the blocks the model defines: keras-hub
      `transformer_layer_{i}` layers (BERT, MiniLM) or EfficientNet stages
      (`block{i}a_...`, `block{i}b_...`), with layers before the first block
      (embeddings, stem) and after the last (`top_conv`, `pooled_dense`) as
      their own groups. With `num_groups` as well, neighbouring blocks are
      merged into that many groups.

    Args:
        model: a Keras `Sequential` or Functional model, or a keras-hub
            backbone.
        num_groups: int >= 1, number of groups.
        names: list of lists of layer names or name prefixes.
        blocks: None or `"auto"`.

    Returns:
        A list of non-empty lists of `keras.layers.Layer`, ordered from input
        to output, with every weight-bearing layer in exactly one group.

    Example:

    ```python
    base = keras_transfer.backbones.efficientnet_lite0(
        include_top=False, pooling="avg", input_shape=(96, 96, 3)
    )
    groups = keras_transfer.strategies.layer_groups(
        base, blocks="auto", num_groups=3
    )
    [group[0].name for group in groups]
    # ['stem_conv', 'block3a_expand_conv', 'block6a_expand_conv']
    ```
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise ValueError(
            "`model` must be a Keras `Sequential` or Functional model. "
            f"Received: model={model!r}"
        )
    if blocks not in (None, "auto"):
        raise ValueError(
            f"`blocks` must be None or 'auto'. Received: blocks={blocks!r}"
        )
    if names is not None and (num_groups is not None or blocks is not None):
        raise ValueError(
            "Pass `names` alone, not together with `num_groups` or `blocks`. "
            f"Received: num_groups={num_groups!r}, blocks={blocks!r}, "
            f"names={names!r}"
        )
    if names is None and num_groups is None and blocks is None:
        raise ValueError(
            "Pass one of `num_groups`, `names` or `blocks='auto'`. "
            "Received: num_groups=None, names=None, blocks=None"
        )
    units = _units(model)
    if names is not None:
        groups = _by_names(model, units, names)
        how = f"names={names!r}"
    elif blocks == "auto":
        groups = _by_blocks(model, units)
        how = "blocks='auto'"
        if num_groups is not None:
            _check_count(num_groups, len(groups))
            groups = [sum(run, []) for run in _split(groups, num_groups)]
            how += f", num_groups={num_groups!r}"
    else:
        weighted = [u for u in units if _has_weights(u)]
        _check_count(num_groups, len(weighted))
        groups = _split(weighted, num_groups)
        how = f"num_groups={num_groups!r}"
    _validate(model, units, groups, how)
    return groups
