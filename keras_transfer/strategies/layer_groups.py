"""Splits a model into ordered groups of layers (input -> output)."""

import keras


def layer_groups(model, num_groups=None, names=None, blocks=None):
    """Splits `model` into ordered groups of layers, from input to output.

    Exactly one of `num_groups`, `names` or `blocks` is given.

    Args:
        model: a Keras `Sequential`/Functional model or keras-hub backbone.
        num_groups: int, split the weight-bearing layers into this many
            contiguous groups of about equal parameter count.
        names: list of groups, each a list of layer names or name prefixes.
        blocks: `"auto"` to use the blocks the model defines
            (EfficientNet-Lite0 `block{i}` stages, BERT `transformer_layer_{i}`).

    Returns:
        A list of lists of `keras.layers.Layer`, ordered input -> output.
    """
    raise NotImplementedError("`layer_groups` is being implemented.")
