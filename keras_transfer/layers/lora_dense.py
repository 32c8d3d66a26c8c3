"""`Dense` with a frozen kernel and a trainable low-rank update (LoRA)."""

import keras
from keras import ops

from keras_transfer.layers._lora_base import LoRABase
from keras_transfer.layers._lora_base import QuantizeGuard


class _BaseDense(QuantizeGuard, keras.layers.Dense):
    pass


@keras.saving.register_keras_serializable(package="keras_transfer")
class LoRADense(LoRABase):
    """A `Dense` layer whose kernel is frozen and whose update is low-rank.

    Computes `y = activation(x W + b + s * ((dropout(x) A) B))` where `W`
    (`d x k`) and `b` are the pretrained (frozen) weights, `A` (`d x r`) and
    `B` (`r x k`) are trainable, `B` starts at zero so the layer starts
    exactly equal to its base, and `s = lora_alpha / lora_rank` (or
    `lora_alpha / sqrt(lora_rank)` with `rank_stabilized=True`). The product
    `A B` is never formed while training: the backward pass costs
    `O(r (d + k))` per example instead of the `d x k` kernel gradient that
    Keras's `Dense.enable_lora` computes. Trainable parameters:
    `r (d + k)`, plus `k` when `train_bias=True`.

    With `use_dora=True` (DoRA) the layer learns a per-unit magnitude `m`
    (`k` values, initialised to the column norms `||W||_c`) on top:
    `W' = m (W + s A B) / ||W + s A B||_c`, the norm taken over the input
    axis and held constant in the backward pass (paper section 4.3, as PEFT).

    The frozen base may be `int8` or `int4` quantized (QLoRA-style): wrap a
    layer quantized with `layer.quantize(mode)`, or call
    `model.quantize(mode)` on a model holding LoRA layers. The output is
    Keras's quantized `Dense` plus the float32 low-rank update. Other modes
    (`float8`, `gptq`, `awq`) and DoRA on a quantized base raise a
    `ValueError`.

    The argument names follow Keras's `Dense(lora_rank=, lora_alpha=)`, so a
    user of the built-in LoRA has nothing new to learn; `lora_alpha=None`
    means `lora_alpha = lora_rank` (scale 1), as in Keras.

    Args:
        units: positive integer, the output size `k`.
        lora_rank: positive integer `r`, at most `min(d, k)`.
        lora_alpha: non-negative number or `None` (= `lora_rank`).
        lora_dropout: float in `[0, 1)`, dropout on the inputs of the
            low-rank path only.
        rank_stabilized: bool, scale by `lora_alpha / sqrt(lora_rank)`
            (rsLoRA) instead of `lora_alpha / lora_rank`.
        train_bias: bool, whether the bias `b` trains too.
        activation: activation function, as in `Dense`.
        use_bias: bool, as in `Dense`.
        kernel_initializer: initializer of the frozen `W` (when built from
            scratch rather than with `from_layer`).
        bias_initializer: initializer of `b`.
        lora_a_initializer: initializer of `A` (`"he_uniform"`, as Keras).
        use_dora: bool, weight-decomposed LoRA (DoRA, see above).
        quantization_config: a `keras.quantizers.QuantizationConfig` for a
            quantized base (set by `from_layer` and on loading).
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...). A
            quantized `dtype` (`"int8_from_float32"`) quantizes the base;
            the layer itself computes in the source dtype.

    Call arguments:
        inputs: tensor of shape `(..., d)`.
        training: bool, whether `lora_dropout` is active.

    Example:

    >>> import keras, keras_transfer
    >>> dense = keras.layers.Dense(16)
    >>> dense.build((None, 32))
    >>> lora = keras_transfer.layers.LoRADense.from_layer(dense, lora_rank=4)
    >>> sum(int(keras.ops.size(w)) for w in lora.trainable_weights)
    192

    Reference:
        Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
        ICLR 2022, https://arxiv.org/abs/2106.09685;
        Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation", ICML 2024,
        https://arxiv.org/abs/2402.09353;
        Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs",
        NeurIPS 2023, https://arxiv.org/abs/2305.14314
    """

    _keras_class = keras.layers.Dense

    def __init__(
        self,
        units,
        lora_rank=8,
        lora_alpha=None,
        lora_dropout=0.0,
        rank_stabilized=False,
        train_bias=False,
        activation=None,
        use_bias=True,
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
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(
                f"`units` must be a positive integer. Received: units={units!r}"
            )
        self.units = units
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.base_layer = self._guard(
            _BaseDense(
                units,
                use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer,
                bias_initializer=self.bias_initializer,
                name="base",
                **self._base_kwargs(),
            )
        )

    @classmethod
    def from_layer(cls, layer, **lora_kwargs):
        """Wraps a built `keras.layers.Dense`, copying its weights.

        Args:
            layer: a built `keras.layers.Dense`.
            **lora_kwargs: `lora_rank`, `lora_alpha`, ... (see the class).

        Returns:
            A built `LoRADense` with the same name, output and weights (an
            `int8` / `int4` layer keeps its quantized kernel).
        """
        if type(layer) is not keras.layers.Dense:
            raise ValueError(
                "`LoRADense.from_layer` expects a `keras.layers.Dense`. "
                f"Received: layer={layer.name!r} of type "
                f"{type(layer).__name__}"
            )
        base_kwargs = {
            "units": layer.units,
            "use_bias": layer.use_bias,
            "kernel_initializer": keras.initializers.serialize(
                layer.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                layer.bias_initializer
            ),
        }
        return cls._from_built(layer, base_kwargs, **lora_kwargs)

    def _lora_shapes(self):
        d, k = self.base_layer.kernel.shape
        return (d, self.lora_rank), (self.lora_rank, k), d, k

    def _low_rank(self, x, a, b):
        return ops.matmul(ops.matmul(x, a), b)

    def _delta_kernel(self, a, b):
        return ops.matmul(a, b)

    def _input_axes(self):
        return (0,)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            **self._lora_config(),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
        }
