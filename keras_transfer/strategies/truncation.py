"""Cut a Functional model after its k-th block (or a named layer)."""

import keras

from keras_transfer import _walk
from keras_transfer._validation import check_int
from keras_transfer.strategies.layer_groups import _BLOCK_PATTERNS


def _blocks(model):
    """`[(key, [layers])]`: the model's top-level layers grouped by block,
    in graph order, with the first block pattern that matches any name."""
    for pattern in _BLOCK_PATTERNS:
        blocks = []
        for layer in model.layers:
            match = pattern.match(layer.name)
            if not match:
                continue
            key = match.group(1)
            if blocks and blocks[-1][0] == key:
                blocks[-1][1].append(layer)
            elif any(key == k for k, _ in blocks):
                raise ValueError(
                    f"The layers of block '{key}' of model '{model.name}' are "
                    "not contiguous in graph order, so the model has no single "
                    "cut after that block. Cut at a layer with `layer_name=` "
                    "instead."
                )
            else:
                blocks.append((key, [layer]))
        if blocks:
            return blocks
    raise ValueError(
        f"`truncate_model` found no blocks in model '{model.name}': no layer "
        "name matches the block patterns "
        f"{[p.pattern for p in _BLOCK_PATTERNS]}. Pass `layer_name=` instead."
    )


def _output_of(model, layer):
    try:
        return layer.output
    except (AttributeError, ValueError) as e:
        raise ValueError(
            f"Layer '{layer.name}' of model '{model.name}' has no single "
            "output to cut at (it is called more than once, or is not part "
            f"of the model's graph). Received: layer_name={layer.name!r}"
        ) from e


def truncate_model(model, num_blocks=None, layer_name=None, name=None):
    """The first blocks of a Functional model, as a Functional sub-model.

    The "first k layers" of Yosinski et al. (2014): a model from `model`'s
    inputs to the output of its `num_blocks`-th block (or of the layer named
    `layer_name`). Blocks are found by layer name, as `layer_groups(...,
    blocks="auto")` finds them: EfficientNet stages (`block1a_...`,
    `block1b_...` are block 1; EfficientNet-Lite0 has 7, as
    `keras.applications.EfficientNetB0` does) and keras-hub transformer
    layers (`transformer_layer_0`, ...). The cut is after the block's last
    layer in graph order (for an EfficientNet block, its residual `add` or
    its `project_bn`). `num_blocks=0` keeps only what comes before the
    first block (the stem).

    The sub-model shares its layers and weights with `model`: training one
    trains the other, and `trainable` flags are shared. Put a new head on
    top (pooling and a `Dense`, say) and treat it as any base:
    `FeatureCache`, `fit_feature_extraction`, `fine_tune` and
    `transferability` take it as they take a whole base. It is a plain
    Functional model, so it saves and loads without custom objects.

    Args:
        model: a Functional `keras.Model` (a keras-hub backbone counts)
            whose blocks are top-level layers; a model nested inside
            another must be truncated on its own.
        num_blocks: int in `[0, number of blocks]`; keep the layers up to
            the end of that block. Exactly one of `num_blocks` and
            `layer_name` must be given.
        layer_name: name of a top-level layer of `model`; keep the layers up
            to its output.
        name: the sub-model's name; defaults to
            `f"{model.name}_to_{cut layer name}"`.

    Returns:
        A Functional `keras.Model` with `model`'s inputs and the cut layer's
        output, e.g. `(batch, h / 8, w / 8, 40)` for EfficientNet-Lite0 with
        `num_blocks=3`.

    Raises:
        ValueError: `model` is not a Functional model, both or neither of
            `num_blocks` and `layer_name` given, `num_blocks` out of range
            or the model without recognisable blocks, an unknown
            `layer_name`, or a layer with no single output.

    Example:

    ```python
    base = keras_transfer.backbones.efficientnet_lite0(
        include_top=False, input_shape=(64, 64, 3))
    first4 = keras_transfer.strategies.truncate_model(base, num_blocks=4)
    first4.output.shape  # (None, 4, 4, 80)
    ```

    Reference:
        [Yosinski et al., 2014, "How transferable are features in deep neural
        networks?"](https://arxiv.org/abs/1411.1792)
    """
    if not _walk.is_graph_model(model) or isinstance(model, keras.Sequential):
        if isinstance(model, keras.Sequential):
            hint = " Cut a Sequential model with `keras.Sequential(model.layers[:k])`."
        else:
            hint = ""
        raise ValueError(
            "`model` must be a Functional `keras.Model` (built from "
            f"`keras.Input`).{hint} Received: model of type "
            f"{type(model).__name__}"
        )
    if (num_blocks is None) == (layer_name is None):
        raise ValueError(
            "Pass exactly one of `num_blocks` and `layer_name`. Received: "
            f"num_blocks={num_blocks!r}, layer_name={layer_name!r}"
        )
    if name is not None and not isinstance(name, str):
        raise ValueError(f"`name` must be a string or None. Received: name={name!r}")
    layers = [
        layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    if layer_name is not None:
        matches = [layer for layer in layers if layer.name == layer_name]
        if not matches:
            raise ValueError(
                f"Model '{model.name}' has no top-level layer named "
                f"{layer_name!r}. Available layers: "
                f"{[layer.name for layer in layers]}. "
                f"Received: layer_name={layer_name!r}"
            )
        cut = matches[0]
    else:
        blocks = _blocks(model)
        num_blocks = check_int(num_blocks, "num_blocks", minimum=0)
        if num_blocks > len(blocks):
            raise ValueError(
                f"`num_blocks` can be at most {len(blocks)}, the number of "
                f"blocks of model '{model.name}' "
                f"({[key for key, _ in blocks]}). "
                f"Received: num_blocks={num_blocks}"
            )
        if num_blocks:
            cut = blocks[num_blocks - 1][1][-1]
        else:
            first = layers.index(blocks[0][1][0])
            if first == 0:
                raise ValueError(
                    f"Model '{model.name}' has no layer before its first block "
                    f"'{blocks[0][0]}', so there is nothing to keep with "
                    "`num_blocks=0`. Received: num_blocks=0"
                )
            cut = layers[first - 1]
    outputs = _output_of(model, cut)
    return keras.Model(
        _walk.model_input(model), outputs, name=name or f"{model.name}_to_{cut.name}"
    )
