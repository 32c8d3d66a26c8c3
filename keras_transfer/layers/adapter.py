"""Bottleneck adapter (Houlsby et al., 2019)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_transfer")
class Adapter(keras.layers.Layer):
    """Residual bottleneck `x + up(activation(down(x)))`, identity at start.

    `down` maps the last axis `d` to `bottleneck` units and `up` maps back to
    `d`; `up` is zero-initialised, so a freshly inserted adapter leaves the
    pretrained model's outputs unchanged. Trainable parameters:
    `2 d m + m + d` for bottleneck `m`. The bottleneck is given either
    directly (`bottleneck`) or as `d // reduction_factor`.

    Args:
        bottleneck: positive integer `m`, or `None` to use `reduction_factor`.
        reduction_factor: positive number, `m = max(1, d // reduction_factor)`
            (used when `bottleneck` is `None`; default 16).
        activation: activation between `down` and `up` (default `"relu"`).
        kernel_initializer: initializer of `down` (`up` starts at zero).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor of shape `(..., d)`.

    Reference:
        Houlsby et al., "Parameter-Efficient Transfer Learning for NLP",
        ICML 2019, https://arxiv.org/abs/1902.00751
    """

    def __init__(
        self,
        bottleneck=None,
        reduction_factor=None,
        activation="relu",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if bottleneck is not None and reduction_factor is not None:
            raise ValueError(
                "Pass only one of `bottleneck` and `reduction_factor`. "
                f"Received: bottleneck={bottleneck!r}, "
                f"reduction_factor={reduction_factor!r}"
            )
        if bottleneck is not None and (
            isinstance(bottleneck, bool)
            or not isinstance(bottleneck, int)
            or bottleneck <= 0
        ):
            raise ValueError(
                "`bottleneck` must be a positive integer. "
                f"Received: bottleneck={bottleneck!r}"
            )
        if reduction_factor is not None and (
            isinstance(reduction_factor, bool)
            or not isinstance(reduction_factor, (int, float))
            or not reduction_factor > 0
        ):
            raise ValueError(
                "`reduction_factor` must be a positive number. "
                f"Received: reduction_factor={reduction_factor!r}"
            )
        if bottleneck is None and reduction_factor is None:
            reduction_factor = 16
        self.bottleneck = bottleneck
        self.reduction_factor = reduction_factor
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        d = input_shape[-1]
        if d is None:
            raise ValueError(
                f"`Adapter` '{self.name}' needs a known last axis. "
                f"Received: input_shape={input_shape}"
            )
        units = self.bottleneck or max(1, int(d // self.reduction_factor))
        self.down = keras.layers.Dense(
            units,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="down",
        )
        self.up = keras.layers.Dense(
            d, kernel_initializer="zeros", dtype=self.dtype_policy, name="up"
        )
        self.down.build(input_shape)
        self.up.build(tuple(input_shape[:-1]) + (units,))

    def call(self, inputs):
        hidden = self.down(inputs)
        if self.activation is not None:
            hidden = self.activation(hidden)
        return ops.add(inputs, self.up(hidden))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "bottleneck": self.bottleneck,
            "reduction_factor": self.reduction_factor,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
        }
