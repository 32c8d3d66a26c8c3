"""`Conv2D` with a frozen kernel and a trainable low-rank update."""

import keras
from keras import ops

from keras_transfer.layers._lora_base import LoRABase


@keras.saving.register_keras_serializable(package="keras_transfer")
class LoRAConv2D(LoRABase):
    """A `Conv2D` whose kernel is frozen and whose update is low-rank.

    The update is a `kh x kw` convolution to `r` channels (`A`, shape
    `(kh, kw, c_in, r)`) followed by a `1 x 1` projection to `filters`
    (`B`, shape `(r, filters)`), which equals convolving with the rank-`r`
    kernel `A B`:

        y = activation(conv(x, W) + b + s * conv(dropout(x), A) B)

    Trainable parameters: `r (kh kw c_in + filters)` (plus `filters` for
    DoRA's magnitude, whose norm is over `kh, kw, c_in`). Grouped
    convolutions and quantized bases are not supported (Keras does not
    quantize `Conv2D`).

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate,
            use_bias: as in `Conv2D`.
        lora_rank, lora_alpha, lora_dropout, rank_stabilized, train_bias,
            activation, kernel_initializer, bias_initializer,
            lora_a_initializer, use_dora: as in `LoRADense`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: 4D tensor.
        training: bool, whether `lora_dropout` is active.

    Reference:
        Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
        ICLR 2022, https://arxiv.org/abs/2106.09685;
        Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation", ICML 2024,
        https://arxiv.org/abs/2402.09353
    """

    _keras_class = keras.layers.Conv2D

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        use_bias=True,
        lora_rank=8,
        lora_alpha=None,
        lora_dropout=0.0,
        rank_stabilized=False,
        train_bias=False,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        lora_a_initializer="he_uniform",
        **kwargs,
    ):
        super().__init__(
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            rank_stabilized=rank_stabilized,
            train_bias=train_bias,
            activation=activation,
            lora_a_initializer=lora_a_initializer,
            **kwargs,
        )
        if self._base_policy is not None:
            raise ValueError(
                f"`LoRAConv2D` '{self.name}' cannot wrap a quantized "
                "`Conv2D` (Keras does not quantize convolutions). "
                f"Received: dtype={self._base_policy.name!r}"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.base_layer = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            use_bias=use_bias,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name="base",
        )
        base = self.base_layer
        self.filters = base.filters
        self.kernel_size = base.kernel_size
        self.strides = base.strides
        self.padding = base.padding
        self.data_format = base.data_format
        self.dilation_rate = base.dilation_rate
        self.use_bias = base.use_bias

    @classmethod
    def from_layer(cls, layer, **lora_kwargs):
        """Wraps a built `keras.layers.Conv2D`, copying its weights."""
        if type(layer) is not keras.layers.Conv2D:
            raise ValueError(
                "`LoRAConv2D.from_layer` expects a `keras.layers.Conv2D`. "
                f"Received: layer={layer.name!r} of type "
                f"{type(layer).__name__}"
            )
        if layer.groups != 1:
            raise ValueError(
                "`LoRAConv2D` does not support grouped convolutions. "
                f"Received: groups={layer.groups} in layer {layer.name!r}"
            )
        config = layer.get_config()
        base_kwargs = {
            key: config[key]
            for key in (
                "filters",
                "kernel_size",
                "strides",
                "padding",
                "data_format",
                "dilation_rate",
                "use_bias",
                "kernel_initializer",
                "bias_initializer",
            )
        }
        return cls._from_built(layer, base_kwargs, **lora_kwargs)

    def _lora_shapes(self):
        kh, kw, c_in, filters = self.base_layer.kernel.shape
        return (
            (kh, kw, c_in, self.lora_rank),
            (self.lora_rank, filters),
            kh * kw * c_in,
            filters,
        )

    def _low_rank(self, x, a, b):
        h = ops.conv(
            x,
            a,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        if self.data_format == "channels_first":
            return ops.einsum("brhw,rf->bfhw", h, b)
        return ops.matmul(h, b)

    def _delta_kernel(self, a, b):
        return ops.einsum("hwcr,rf->hwcf", a, b)

    def _input_axes(self):
        return (0, 1, 2)

    def _output_bias(self):
        bias = super()._output_bias()
        if bias is not None and self.data_format == "channels_first":
            bias = ops.reshape(bias, (-1, 1, 1))
        return bias

    def _scale_outputs(self, outputs, factor):
        if self.data_format == "channels_first":
            factor = ops.reshape(factor, (-1, 1, 1))
        return ops.multiply(outputs, factor)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "use_bias": self.use_bias,
            **self._lora_config(),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
        }
