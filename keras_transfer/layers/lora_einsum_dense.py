"""`EinsumDense` with a frozen kernel and a trainable low-rank update."""

import string

import keras
from keras import ops

from keras_transfer.layers._lora_base import LoRABase
from keras_transfer.layers._lora_base import QuantizeGuard


class _BaseEinsumDense(QuantizeGuard, keras.layers.EinsumDense):
    pass


def _split_equation(equation, kernel_shape):
    """Splits the kernel axes into contracted (input) and output axes.

    Returns `(eq_a, eq_b, eq_delta, ker, out, out_k, a_shape_tail,
    b_shape_tail)` where `eq_a` maps (inputs, A) to the rank-`r`
    bottleneck, `eq_b` maps (bottleneck, B) to the outputs, `eq_delta`
    forms `A B` in the kernel's layout, `ker` / `out` are the kernel's and
    output's axis letters and `out_k` the kernel axes that reach the output.
    """
    lhs, out = equation.split("->")
    inp, ker = lhs.split(",")
    used = set(equation)
    z = next(c for c in string.ascii_letters if c not in used)
    in_k = "".join(c for c in ker if c in inp)
    out_k = "".join(c for c in ker if c not in inp)
    if not in_k or not out_k or any(c not in out for c in out_k) or any(
        c in out for c in in_k
    ):
        return None
    mid = "".join(c for c in out if c not in out_k) + z
    sizes = dict(zip(ker, kernel_shape))
    return (
        f"{inp},{in_k}{z}->{mid}",
        f"{mid},{z}{out_k}->{out}",
        f"{in_k}{z},{z}{out_k}->{ker}",
        ker,
        out,
        out_k,
        tuple(sizes[c] for c in in_k),
        tuple(sizes[c] for c in out_k),
    )


@keras.saving.register_keras_serializable(package="keras_transfer")
class LoRAEinsumDense(LoRABase):
    """An `EinsumDense` whose kernel is frozen and whose update is low-rank.

    The kernel's axes split into those contracted with the input (total size
    `d`) and those that reach the output (total size `k`). For the query
    projection of a transformer, `"abc,cde->abde"` with a `(384, 12, 32)`
    kernel, `d = 384` and `k = 12 * 32`. `A` has the contracted axes and
    `r`, `B` has `r` and the output axes, and

        y = activation(einsum(x, W) + b + s * einsum(einsum(dropout(x), A), B))

    with `s = lora_alpha / lora_rank` (or `/ sqrt(lora_rank)`). This is the
    paper's factorisation of the flattened `d x k` matrix, so trainable
    parameters are `r (d + k)` (Keras's `EinsumDense.enable_lora` instead
    factors only the last kernel axis). `A B` is never formed while
    training.

    With `use_dora=True` the magnitude `m` has the kernel's output axes and
    the column norm is taken over its contracted axes. The base may be
    `int8` / `int4` quantized, as in `LoRADense` (`quantization_config` as
    there).

    Equations where a kernel axis is both in the input and in the output
    (per-head kernels) are not supported and raise a `ValueError`.

    Args:
        equation: the `EinsumDense` equation.
        output_shape: as in `EinsumDense`.
        bias_axes: as in `EinsumDense`.
        lora_rank, lora_alpha, lora_dropout, rank_stabilized, train_bias,
            activation, kernel_initializer, bias_initializer,
            lora_a_initializer, use_dora: as in `LoRADense`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor matching the equation's input.
        training: bool, whether `lora_dropout` is active.

    Reference:
        Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
        ICLR 2022, https://arxiv.org/abs/2106.09685;
        Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation", ICML 2024,
        https://arxiv.org/abs/2402.09353
    """

    _keras_class = keras.layers.EinsumDense

    def __init__(
        self,
        equation,
        output_shape,
        bias_axes=None,
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
        self.equation = equation
        self.partial_output_shape = output_shape
        self.bias_axes = bias_axes
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.base_layer = self._guard(
            _BaseEinsumDense(
                equation,
                output_shape,
                bias_axes=bias_axes,
                kernel_initializer=self.kernel_initializer,
                bias_initializer=self.bias_initializer,
                name="base",
                **self._base_kwargs(),
            )
        )

    @classmethod
    def from_layer(cls, layer, **lora_kwargs):
        """Wraps a built `keras.layers.EinsumDense`, copying its weights."""
        if type(layer) is not keras.layers.EinsumDense:
            raise ValueError(
                "`LoRAEinsumDense.from_layer` expects a "
                f"`keras.layers.EinsumDense`. Received: layer={layer.name!r} "
                f"of type {type(layer).__name__}"
            )
        config = layer.get_config()
        base_kwargs = {
            "equation": config["equation"],
            "output_shape": config["output_shape"],
            "bias_axes": config["bias_axes"],
            "kernel_initializer": config["kernel_initializer"],
            "bias_initializer": config["bias_initializer"],
        }
        return cls._from_built(layer, base_kwargs, **lora_kwargs)

    def _lora_shapes(self):
        split = _split_equation(self.equation, self.base_layer.kernel.shape)
        if split is None:
            raise ValueError(
                f"`LoRAEinsumDense` '{self.name}' cannot split the kernel of "
                "equation into input and output axes (an axis is in the "
                "input, the kernel and the output). "
                f"Received: equation={self.equation!r}"
            )
        (
            self._eq_a,
            self._eq_b,
            self._eq_delta,
            self._kernel_axes,
            self._output_axes,
            self._kernel_output_axes,
            a_tail,
            b_tail,
        ) = split
        d = int(ops.prod(a_tail)) if a_tail else 1
        k = int(ops.prod(b_tail)) if b_tail else 1
        return a_tail + (self.lora_rank,), (self.lora_rank,) + b_tail, d, k

    def _low_rank(self, x, a, b):
        return ops.einsum(self._eq_b, ops.einsum(self._eq_a, x, a), b)

    def _delta_kernel(self, a, b):
        return ops.einsum(self._eq_delta, a, b)

    def _input_axes(self):
        return tuple(
            axis
            for axis, c in enumerate(self._kernel_axes)
            if c not in self._kernel_output_axes
        )

    def _scale_outputs(self, outputs, factor):
        out, out_k = self._output_axes, self._kernel_output_axes
        return ops.einsum(f"{out},{out_k}->{out}", outputs, factor)

    def _scale_kernel(self, kernel, factor):
        ker, out_k = self._kernel_axes, self._kernel_output_axes
        return ops.einsum(f"{ker},{out_k}->{ker}", kernel, factor)

    def get_config(self):
        return {
            **super().get_config(),
            "equation": self.equation,
            "output_shape": self.partial_output_shape,
            "bias_axes": self.bias_axes,
            **self._lora_config(),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
        }
