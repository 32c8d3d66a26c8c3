"""Shared machinery of the LoRA layers (private).

Each LoRA layer wraps a plain Keras layer (`base_layer`: `Dense`,
`EinsumDense` or `Conv2D`, built with no activation) whose kernel is frozen,
and adds a low-rank update computed *without* forming the full `A B` product:

    y = activation(base(x) + scale * B(A(dropout(x))))

`scale` is `lora_alpha / lora_rank`, or `lora_alpha / sqrt(lora_rank)` with
rank-stabilised scaling (Kalajdzievski, 2023).
"""

import math

import keras
from keras import ops


def _check_number(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or math.isinf(value)
    ):
        raise ValueError(
            f"`{name}` must be a finite number. Received: {name}={value!r}"
        )
    return value


def check_lora_args(lora_rank, lora_alpha, lora_dropout):
    if (
        isinstance(lora_rank, bool)
        or not isinstance(lora_rank, int)
        or lora_rank <= 0
    ):
        raise ValueError(
            "`lora_rank` must be a positive integer. "
            f"Received: lora_rank={lora_rank!r}"
        )
    _check_number("lora_alpha", lora_alpha, allow_none=True)
    if lora_alpha is not None and lora_alpha < 0:
        raise ValueError(
            "`lora_alpha` must be non-negative (or None for `lora_rank`). "
            f"Received: lora_alpha={lora_alpha!r}"
        )
    _check_number("lora_dropout", lora_dropout)
    if not 0 <= lora_dropout < 1:
        raise ValueError(
            "`lora_dropout` must be in [0, 1). "
            f"Received: lora_dropout={lora_dropout!r}"
        )


class LoRABase(keras.layers.Layer):
    """Common code of `LoRADense`, `LoRAEinsumDense` and `LoRAConv2D`."""

    def __init__(
        self,
        lora_rank=8,
        lora_alpha=None,
        lora_dropout=0.0,
        rank_stabilized=False,
        train_bias=False,
        activation=None,
        lora_a_initializer="he_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_lora_args(lora_rank, lora_alpha, lora_dropout)
        self.lora_rank = lora_rank
        self.lora_alpha = lora_rank if lora_alpha is None else lora_alpha
        self.lora_dropout = float(lora_dropout)
        self.rank_stabilized = bool(rank_stabilized)
        self.train_bias = bool(train_bias)
        self.activation = keras.activations.get(activation)
        self.lora_a_initializer = keras.initializers.get(lora_a_initializer)
        self.dropout_layer = keras.layers.Dropout(
            self.lora_dropout, dtype=self.dtype_policy, name="lora_dropout"
        )

    @property
    def scale(self):
        """The factor `s` in `y = x W + s x A B`."""
        if self.rank_stabilized:
            return self.lora_alpha / math.sqrt(self.lora_rank)
        return self.lora_alpha / self.lora_rank

    # Subclasses define: `base_layer` (created in __init__), `_lora_shapes`
    # (shapes of A and B from the built kernel), `_low_rank` (the update
    # from dropped-out inputs) and `_delta_kernel` (A B in kernel layout).

    def build(self, input_shape):
        self.base_layer.build(input_shape)
        # Only the kernel is frozen: the bias trains when `train_bias=True`.
        self._freeze_base()
        a_shape, b_shape, d, k = self._lora_shapes()
        if self.lora_rank > min(d, k):
            raise ValueError(
                f"`lora_rank` must be at most min(input size, output size) = "
                f"min({d}, {k}) = {min(d, k)} for layer '{self.name}'. "
                f"Received: lora_rank={self.lora_rank}"
            )
        # float32 even under mixed precision: LoRA updates underflow in fp16.
        self.lora_kernel_a = self.add_weight(
            name="lora_kernel_a",
            shape=a_shape,
            initializer=self.lora_a_initializer,
            dtype="float32",
        )
        self.lora_kernel_b = self.add_weight(
            name="lora_kernel_b",
            shape=b_shape,
            initializer="zeros",
            dtype="float32",
        )

    @property
    def trainable(self):
        return keras.layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        # `Layer.trainable` sets every weight, the frozen kernel included:
        # keep the kernel frozen and the bias as `train_bias` says.
        keras.layers.Layer.trainable.fset(self, value)
        if self.built:
            self._freeze_base()

    def _freeze_base(self):
        self.base_layer.kernel.trainable = False
        bias = getattr(self.base_layer, "bias", None)
        if bias is not None:
            bias.trainable = self.train_bias and self.trainable

    def call(self, inputs, training=None):
        outputs = self.base_layer(inputs)
        dropped = inputs
        if self.lora_dropout > 0:
            dropped = self.dropout_layer(inputs, training=training)
        a = ops.cast(self.lora_kernel_a, inputs.dtype)
        b = ops.cast(self.lora_kernel_b, inputs.dtype)
        if self.scale != 1:
            # On `B` (r x k), not on the (batch, ..., k) update: fewer FLOPs.
            b = ops.multiply(b, ops.cast(self.scale, b.dtype))
        outputs = ops.add(outputs, self._low_rank(dropped, a, b))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.base_layer.compute_output_shape(input_shape)

    def merged_kernel(self):
        """The base kernel plus the scaled low-rank update, as a tensor."""
        delta = self._delta_kernel(
            ops.convert_to_tensor(self.lora_kernel_a),
            ops.convert_to_tensor(self.lora_kernel_b),
        )
        kernel = ops.convert_to_tensor(self.base_layer.kernel)
        return ops.add(
            kernel, ops.cast(ops.multiply(delta, self.scale), kernel.dtype)
        )

    def merge(self):
        """Returns a plain Keras layer equal to this one, the update folded in.

        The returned layer (`Dense`, `EinsumDense` or `Conv2D`) has this
        layer's name, activation and dtype policy, a kernel
        `W + scale * A B`, and the base bias. It holds no LoRA weights.
        """
        config = self.base_layer.get_config()
        config["name"] = self.name
        config["activation"] = keras.activations.serialize(self.activation)
        config["trainable"] = self.trainable
        merged = self.base_layer.__class__.from_config(config)
        merged.build(_input_shape_of(self))
        merged.kernel.assign(self.merged_kernel())
        if getattr(self.base_layer, "bias", None) is not None:
            merged.bias.assign(self.base_layer.bias)
        return merged

    def _lora_config(self):
        return {
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "rank_stabilized": self.rank_stabilized,
            "train_bias": self.train_bias,
            "activation": keras.activations.serialize(self.activation),
            "lora_a_initializer": keras.initializers.serialize(
                self.lora_a_initializer
            ),
        }

    @classmethod
    def _from_built(cls, layer, base_kwargs, **lora_kwargs):
        if not layer.built:
            raise ValueError(
                f"`{cls.__name__}.from_layer` needs a built layer; layer "
                f"'{layer.name}' is not built yet. Call it on data or "
                "`layer.build(input_shape)` first."
            )
        if getattr(layer, "lora_enabled", False):
            raise ValueError(
                f"Layer '{layer.name}' has Keras's own LoRA enabled "
                "(`enable_lora`); apply one kind of LoRA only."
            )
        lora_kwargs.setdefault("name", layer.name)
        lora_kwargs.setdefault("dtype", layer.dtype_policy)
        lora_kwargs.setdefault("trainable", layer.trainable)
        new = cls(
            activation=keras.activations.serialize(layer.activation),
            **base_kwargs,
            **lora_kwargs,
        )
        new.build(_input_shape_of(layer))
        new.base_layer.kernel.assign(layer.kernel)
        if getattr(layer, "bias", None) is not None:
            new.base_layer.bias.assign(layer.bias)
        return new


def _input_shape_of(layer):
    """The shape `layer` was built with (`get_build_config`)."""
    config = layer.get_build_config() or {}
    if "input_shape" in config:
        return config["input_shape"]
    raise ValueError(
        f"Could not determine the input shape of layer '{layer.name}'."
    )
