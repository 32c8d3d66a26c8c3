"""Shared machinery of the LoRA layers (private).

Each LoRA layer wraps a plain Keras layer (`base_layer`: `Dense`,
`EinsumDense` or `Conv2D`, built with no activation) whose kernel is frozen,
and adds a low-rank update computed *without* forming the full `A B` product:

    y = activation(base(x) + scale * B(A(dropout(x))))

`scale` is `lora_alpha / lora_rank`, or `lora_alpha / sqrt(lora_rank)` with
rank-stabilised scaling (Kalajdzievski, 2023).

With `use_dora=True` (DoRA, Liu et al. 2024) the kernel is decomposed into a
trainable magnitude `m` (one entry per output unit) and a direction:

    W' = m * (W + s A B) / ||W + s A B||_c
    y = activation(m / ||W + s A B||_c * (x W + s (x A) B) + b)

where `||.||_c` is the norm of each output unit's kernel column, taken over
the input axes. As in the paper (section 4.3) and PEFT, the norm is treated
as a constant in the backward pass. At the start (`B = 0`, `m = ||W||_c`)
the layer equals the base exactly in float32; under a mixed-precision
policy the factor `m / ||W||_c` is 1 only up to one rounding of the compute
dtype (about 4e-3 relative in bfloat16), while plain LoRA stays exact.

Named adapters (`keras_transfer.strategies.add_lora_adapter` and its
siblings): besides the adapter `apply_lora` made (named `"default"`: `A`,
`B` and DoRA's `m`), a layer may hold more low-rank pairs `A_i`, `B_i`,
each with its own rank and scale `s_i`, and one non-trainable scalar
weight `g_i` per adapter (the default's included), read inside `call`:

    y = activation(base(x) + g_0 delta_0(x) + sum_i g_i s_i B_i(A_i(x)))

where `delta_0` is the default adapter's update (LoRA or DoRA). Which
adapters are active, and how much, is the values of the `g_i`, so changing
it needs no new trace of a compiled step; `g_i = 0` for all gives exactly
`base(x)`. Only one adapter's weights train at a time. A layer with no
named adapter holds no `g_i` and computes as before.

The base layer may be `int8` or `int4` quantized (QLoRA-style), either
before wrapping (`from_layer` on a quantized layer) or after
(`model.quantize(...)` quantizes the wrapped base in place). The low-rank
weights stay float32 and the quantized codes stay frozen.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_transfer.layers._named_adapters import DEFAULT_ADAPTER
from keras_transfer.layers._named_adapters import NamedAdaptersMixin

# Quantization modes whose frozen base can carry a low-rank update. Keras's
# other modes either train their own variables (float8 scales) or compute
# the kernel from calibration state (GPTQ, AWQ).
LORA_QUANTIZATION_MODES = ("int8", "int4")


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


def check_quantization_mode(mode, layer_name, use_dora=False):
    """Raises unless a LoRA layer's base may be quantized with `mode`."""
    if mode is None:
        return
    if mode not in LORA_QUANTIZATION_MODES:
        raise ValueError(
            f"LoRA layer '{layer_name}' cannot carry a low-rank update on a "
            f"base quantized with mode={mode!r}: the allowed modes are "
            f"{LORA_QUANTIZATION_MODES} (or no quantization). Quantize with "
            "'int8' or 'int4', or merge the LoRA update (`merge_lora`) "
            f"before quantizing to {mode!r}."
        )
    if use_dora:
        raise ValueError(
            f"DoRA layer '{layer_name}' (use_dora=True) cannot use a "
            f"quantized base (mode={mode!r}): DoRA needs the float kernel's "
            "column norms. Use `use_dora=False` for a quantized base, or "
            f"merge the update (`merge_lora`) before quantizing."
        )


class QuantizeGuard:
    """Mixin of the wrapped base layers: only LoRA-compatible quantization.

    `model.quantize(mode)` quantizes every leaf layer, the base inside a
    LoRA layer included; this raises for modes that cannot carry LoRA
    instead of silently ignoring the low-rank update.
    """

    _lora_owner = "?"
    _lora_use_dora = False

    def quantize(self, mode=None, type_check=True, config=None):
        check_quantization_mode(mode, self._lora_owner, self._lora_use_dora)
        # `type_check` rejects subclasses of `Dense` / `EinsumDense`; this
        # one only adds the check above.
        super().quantize(mode, type_check=False, config=config)


def adapter_scale(spec):
    """`s` of a named adapter's settings."""
    if spec["rank_stabilized"]:
        return spec["lora_alpha"] / math.sqrt(spec["lora_rank"])
    return spec["lora_alpha"] / spec["lora_rank"]


def _split_dtype(dtype):
    """`(wrapper dtype, base dtype policy or None)` for a `dtype` argument.

    A quantized policy (`"int8_from_float32"`, ...) belongs to the base
    layer; the wrapper itself computes in the policy's source dtype.
    """
    if dtype is None or isinstance(dtype, keras.dtype_policies.DTypePolicyMap):
        return dtype, None
    policy = keras.dtype_policies.get(dtype)
    if policy.quantization_mode is None:
        return dtype, None
    return policy.get_config()["source_name"], policy


class LoRABase(NamedAdaptersMixin, keras.layers.Layer):
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
        use_dora=False,
        quantization_config=None,
        named_adapters=None,
        **kwargs,
    ):
        kwargs["dtype"], base_policy = _split_dtype(kwargs.get("dtype"))
        super().__init__(**kwargs)
        check_lora_args(lora_rank, lora_alpha, lora_dropout)
        if not isinstance(use_dora, bool):
            raise ValueError(
                f"`use_dora` must be a bool. Received: use_dora={use_dora!r}"
            )
        if base_policy is not None:
            check_quantization_mode(
                base_policy.quantization_mode, self.name, use_dora
            )
        if isinstance(quantization_config, dict):
            quantization_config = keras.saving.deserialize_keras_object(
                quantization_config
            )
        self.lora_rank = lora_rank
        self.lora_alpha = lora_rank if lora_alpha is None else lora_alpha
        self.lora_dropout = float(lora_dropout)
        self.rank_stabilized = bool(rank_stabilized)
        self.train_bias = bool(train_bias)
        self.use_dora = use_dora
        self.activation = keras.activations.get(activation)
        self.lora_a_initializer = keras.initializers.get(lora_a_initializer)
        self._base_policy = base_policy
        self._quantization_config = quantization_config
        # Named adapters (see the module docstring): created in `build` from
        # `named_adapters` (a saved layer's), or later by the strategies.
        self._init_named(named_adapters)
        # No dropout sublayer at rate 0: no op in the step, and nothing for
        # `model.quantize` to warn about.
        self.dropout_layer = None
        if self.lora_dropout > 0:
            self.dropout_layer = keras.layers.Dropout(
                self.lora_dropout, dtype=self.dtype_policy, name="lora_dropout"
            )

    def _base_kwargs(self):
        """Dtype arguments of the wrapped base layer (quantized or not)."""
        return {
            "dtype": self._base_policy or self.dtype_policy,
            "quantization_config": self._quantization_config,
        }

    def _guard(self, base):
        base._lora_owner = self.name
        base._lora_use_dora = self.use_dora
        return base

    @property
    def scale(self):
        """The factor `s` in `y = x W + s x A B`."""
        if self.rank_stabilized:
            return self.lora_alpha / math.sqrt(self.lora_rank)
        return self.lora_alpha / self.lora_rank

    @property
    def peft_weights(self):
        """The weights that fine-tuning changes: A, B, DoRA's magnitude and
        (with `train_bias=True`) the bias, in that order."""
        weights = [self.lora_kernel_a, self.lora_kernel_b]
        if self.use_dora:
            weights.append(self.lora_magnitude)
        bias = getattr(self.base_layer, "bias", None)
        if self.train_bias and bias is not None:
            weights.append(bias)
        # Then the named adapters' factors and every adapter's weight `g`.
        for a, b in self._named.factors.values():
            weights.extend([a, b])
        weights.extend(self._named.gates.values())
        return weights

    # --- Named adapters (see `_named_adapters`; driven by
    # `strategies/peft/named.py`) -----------------------------------------

    def _default_adapter_variables(self):
        # `[A, B]`, `[A, B, m]` with DoRA.
        weights = [self.lora_kernel_a, self.lora_kernel_b]
        if self.use_dora:
            weights.append(self.lora_magnitude)
        return weights

    def _default_adapter_spec(self):
        return {
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "rank_stabilized": self.rank_stabilized,
        }

    def _weights_scope(self):
        b = getattr(self, "lora_kernel_b", None)
        return None if b is None else b.path.split("/")[:-2]

    def _check_rank(self, lora_rank):
        _, _, d, k = self._lora_shapes()
        if lora_rank > min(d, k):
            raise ValueError(
                f"`lora_rank` must be at most min(input size, output size) = "
                f"min({d}, {k}) = {min(d, k)} for layer '{self.name}'. "
                f"Received: lora_rank={lora_rank}"
            )

    def _normalize_spec(self, name, spec, check):
        check_lora_args(spec["lora_rank"], spec["lora_alpha"], 0.0)
        if check:
            self._check_rank(spec["lora_rank"])
        return {
            "lora_rank": spec["lora_rank"],
            "lora_alpha": (
                spec["lora_rank"]
                if spec["lora_alpha"] is None
                else spec["lora_alpha"]
            ),
            "rank_stabilized": bool(spec["rank_stabilized"]),
        }

    def _create_named_variables(self, name, spec):
        a_shape, b_shape, _, _ = self._lora_shapes()
        rank = spec["lora_rank"]
        a = self.add_weight(
            name=f"lora_kernel_a_{name}",
            shape=tuple(a_shape[:-1]) + (rank,),
            initializer=self.lora_a_initializer,
            dtype="float32",
        )
        b = self.add_weight(
            name=f"lora_kernel_b_{name}",
            shape=(rank,) + tuple(b_shape[1:]),
            initializer="zeros",
            dtype="float32",
        )
        return a, b

    def weighted_adapter(self, names, weights):
        """`(settings, [A, B])` of the adapter equal to
        `sum_i w_i delta_i` over adapters `names` (NumPy arrays; see
        `add_weighted_adapter`)."""
        if DEFAULT_ADAPTER in names and self.use_dora:
            raise ValueError(
                "The default adapter is DoRA (`use_dora=True`): its update "
                "is not low-rank and cannot be concatenated. Received: "
                f"adapters={list(names)!r}"
            )
        parts_a, parts_b = [], []
        for name, w in zip(names, weights):
            a, b = self.adapter_variables(name)[:2]
            factor = w * adapter_scale(self.adapter_spec(name))
            parts_a.append(ops.convert_to_numpy(a))
            parts_b.append(ops.convert_to_numpy(b) * factor)
        a = np.concatenate(parts_a, axis=-1)
        b = np.concatenate(parts_b, axis=0)
        rank = a.shape[-1]
        spec = {"lora_rank": rank, "lora_alpha": rank, "rank_stabilized": False}
        return spec, [a, b]

    def add_named_adapter(
        self, name, lora_rank, lora_alpha, rank_stabilized, check_rank=True
    ):
        """Creates adapter `name`: `A` (initialised like the default's `A`),
        `B = 0` and its weight `g = 0`. Raises a `ValueError` for a taken
        name or (with `check_rank`) a rank above min(input size, output
        size); a weighted combination's rank, the sum of its parts', may
        exceed it."""
        self._add_named(
            name,
            {
                "lora_rank": lora_rank,
                "lora_alpha": lora_alpha,
                "rank_stabilized": rank_stabilized,
            },
            check=check_rank,
        )

    # Subclasses define: `base_layer` (created in __init__), `_lora_shapes`
    # (shapes of A and B from the built kernel), `_low_rank` (the update
    # from dropped-out inputs), `_delta_kernel` (A B in kernel layout),
    # `_input_axes` (the kernel axes contracted with the input) and
    # `_scale_outputs` / `_scale_kernel` (multiply by a per-unit factor).

    def build(self, input_shape):
        self.base_layer.build(input_shape)
        # Only the kernel is frozen: the bias trains when `train_bias=True`.
        self._freeze_base()
        a_shape, b_shape, _, _ = self._lora_shapes()
        self._check_rank(self.lora_rank)
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
        if self.use_dora:
            shape = tuple(
                size
                for axis, size in enumerate(self.base_layer.kernel.shape)
                if axis not in self._input_axes()
            )
            self.lora_magnitude = self.add_weight(
                name="lora_magnitude",
                shape=shape,
                initializer="ones",
                dtype="float32",
            )
            self.reset_magnitude()
        self._build_named()

    def reset_magnitude(self):
        """Sets DoRA's magnitude `m` to `||W + s A B||_c` (the identity)."""
        self.lora_magnitude.assign(self._column_norm(self._float_kernel()))

    def _freeze_base(self):
        bias = getattr(self.base_layer, "bias", None)
        for weight in self.base_layer.weights:
            if bias is not None and weight is bias:
                bias.trainable = self.train_bias and self.trainable
            else:
                # The kernel, or a quantized kernel's codes and scales.
                weight.trainable = False

    def _float_kernel(self):
        """`W + s A B` as a float32 tensor in the kernel's layout."""
        delta = self._delta_kernel(
            ops.convert_to_tensor(self.lora_kernel_a),
            ops.convert_to_tensor(self.lora_kernel_b),
        )
        kernel = ops.cast(self.base_layer.kernel, "float32")
        return ops.add(kernel, ops.multiply(delta, self.scale))

    def _column_norm(self, kernel):
        return ops.sqrt(
            ops.sum(ops.square(kernel), axis=tuple(self._input_axes()))
        )

    def _dora_factor(self):
        # The norm is a constant in the backward pass (DoRA section 4.3).
        norm = ops.stop_gradient(self._column_norm(self._float_kernel()))
        return ops.divide_no_nan(
            ops.convert_to_tensor(self.lora_magnitude), norm
        )

    def call(self, inputs, training=None):
        outputs = self.base_layer(inputs)
        dropped = inputs
        if self.dropout_layer is not None:
            dropped = self.dropout_layer(inputs, training=training)
        named = self._named
        a = ops.cast(self.lora_kernel_a, inputs.dtype)
        b = ops.cast(self.lora_kernel_b, inputs.dtype)
        gate = None
        if named.gates:
            gate = ops.cast(named.gates[DEFAULT_ADAPTER], b.dtype)
        if gate is not None and not self.use_dora:
            b = ops.multiply(b, ops.multiply(ops.cast(self.scale, b.dtype), gate))
        elif self.scale != 1:
            # On `B` (r x k), not on the (batch, ..., k) update: fewer FLOPs.
            b = ops.multiply(b, ops.cast(self.scale, b.dtype))
        update = self._low_rank(dropped, a, b)
        if self.use_dora:
            # y = base(x) + (f - 1) (x W) + f s x A B with f = m / ||.||_c,
            # as PEFT: exactly `base(x)` while f = 1 and B = 0.
            factor = ops.cast(self._dora_factor(), outputs.dtype)
            linear = outputs
            bias = self._output_bias()
            if bias is not None:
                linear = ops.subtract(linear, ops.cast(bias, linear.dtype))
            update = ops.add(
                self._scale_outputs(linear, ops.subtract(factor, 1)),
                self._scale_outputs(update, factor),
            )
            if gate is not None:
                update = ops.multiply(update, ops.cast(gate, update.dtype))
        for name, (a_i, b_i) in named.factors.items():
            # g_i s_i on B_i: with g_i = 0 the term is exactly zero.
            factor = ops.multiply(
                ops.cast(adapter_scale(named.specs[name]), "float32"),
                named.gates[name],
            )
            b_i = ops.multiply(ops.cast(b_i, inputs.dtype), ops.cast(factor, inputs.dtype))
            update = ops.add(
                update,
                self._low_rank(dropped, ops.cast(a_i, inputs.dtype), b_i),
            )
        outputs = ops.add(outputs, update)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _output_bias(self):
        """The base bias, broadcastable against the outputs (or None)."""
        bias = getattr(self.base_layer, "bias", None)
        if bias is None:
            return None
        return ops.convert_to_tensor(bias)

    def _scale_outputs(self, outputs, factor):
        return ops.multiply(outputs, factor)

    def _scale_kernel(self, kernel, factor):
        return ops.multiply(kernel, factor)

    def compute_output_shape(self, input_shape):
        return self.base_layer.compute_output_shape(input_shape)

    def merged_kernel(self):
        """The kernel of the merged layer, as a float tensor.

        `W + s A B`, or with DoRA `m (W + s A B) / ||W + s A B||_c`, in the
        base kernel's dtype. Raises a `ValueError` for a quantized base
        (use `merge`, which requantizes).
        """
        mode = self.base_layer.quantization_mode
        if mode is not None:
            raise ValueError(
                f"Layer '{self.name}' has a {mode!r} quantized base: its "
                "merged kernel is requantized, see `merge()`."
            )
        kernel = self._float_kernel()
        if self.use_dora:
            kernel = self._scale_kernel(
                kernel,
                ops.divide_no_nan(
                    ops.convert_to_tensor(self.lora_magnitude),
                    self._column_norm(kernel),
                ),
            )
        if self._named.gates:
            # W + g_0 (W_0' - W) + sum_i g_i s_i A_i B_i.
            base = ops.cast(self.base_layer.kernel, "float32")
            kernel = ops.add(
                base,
                ops.add(
                    ops.multiply(
                        ops.subtract(kernel, base),
                        ops.convert_to_tensor(
                            self._named.gates[DEFAULT_ADAPTER]
                        ),
                    ),
                    self._named_delta(),
                ),
            )
        return ops.cast(kernel, self.base_layer.kernel.dtype)

    def _named_delta(self):
        """`sum_i g_i s_i A_i B_i` over the named adapters (float32)."""
        total = ops.zeros(self.base_layer.kernel.shape, "float32")
        for name, (a, b) in self._named.factors.items():
            delta = self._delta_kernel(
                ops.convert_to_tensor(a), ops.convert_to_tensor(b)
            )
            weight = adapter_scale(self._named.specs[name]) * float(
                ops.convert_to_numpy(self._named.gates[name])
            )
            total = ops.add(total, ops.multiply(delta, weight))
        return total

    def merge(self):
        """Returns a plain Keras layer equal to this one, the update folded in.

        The returned layer (`Dense`, `EinsumDense` or `Conv2D`) has this
        layer's name, activation and dtype policy, a kernel
        `W + scale * A B` (with DoRA: `m (W + s A B) / ||W + s A B||_c`),
        and the base bias. It holds no LoRA weights.

        With an `int8` / `int4` quantized base the merged layer is quantized
        in the same mode: `W + s A B` is formed from the dequantized kernel
        and requantized, as Keras's own `enable_lora` does when saving. Its
        outputs then differ from this layer's by the requantization error
        (at most half a quantization step per kernel entry).
        """
        config = self._plain_base_config()
        config["name"] = self.name
        config["activation"] = keras.activations.serialize(self.activation)
        config["trainable"] = self.trainable
        plain_class = self._plain_base_class()
        merged = plain_class.from_config(config)
        merged.build(_input_shape_of(self))
        if self.base_layer.quantization_mode is not None:
            merged.load_own_variables(self._requantized_merge())
            return merged
        merged.kernel.assign(self.merged_kernel())
        if getattr(self.base_layer, "bias", None) is not None:
            merged.bias.assign(_copy(self.base_layer.bias))
        return merged

    def _plain_base_config(self):
        config = self.base_layer.get_config()
        config["dtype"] = keras.dtype_policies.serialize(
            self.base_layer.dtype_policy
        )
        return config

    def _plain_base_class(self):
        # The Keras class under the private `QuantizeGuard` subclass.
        return self._keras_class

    def _requantized_merge(self):
        """Variables of the merged quantized layer, via Keras's requantizer.

        A plain copy of the base gets Keras's own LoRA with `A = s A B`
        reshaped to the kernel's `(..., last axis)` and `B = I`; its
        `save_own_variables` dequantizes, adds `A B` and requantizes.
        """
        config = self._plain_base_config()
        copy = self._plain_base_class().from_config(config)
        copy.build(_input_shape_of(self))
        store = {}
        self.base_layer.save_own_variables(store)
        copy.load_own_variables({k: _copy(v) for k, v in store.items()})
        delta = ops.multiply(
            self._delta_kernel(
                ops.convert_to_tensor(self.lora_kernel_a),
                ops.convert_to_tensor(self.lora_kernel_b),
            ),
            self.scale,
        )
        if self._named.gates:
            delta = ops.add(
                ops.multiply(
                    delta,
                    ops.convert_to_tensor(self._named.gates[DEFAULT_ADAPTER]),
                ),
                self._named_delta(),
            )
        last = delta.shape[-1]
        copy.enable_lora(last, lora_alpha=last)
        copy.lora_kernel_a.assign(delta)
        copy.lora_kernel_b.assign(ops.eye(last, dtype="float32"))
        merged_store = {}
        copy.save_own_variables(merged_store)
        return {k: _copy(v) for k, v in merged_store.items()}

    def _lora_config(self):
        named = self.named_adapter_state()
        if named is not None:
            return {**self._lora_config_plain(), "named_adapters": named}
        return self._lora_config_plain()

    def _lora_config_plain(self):
        return {
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "rank_stabilized": self.rank_stabilized,
            "train_bias": self.train_bias,
            "use_dora": self.use_dora,
            "activation": keras.activations.serialize(self.activation),
            "lora_a_initializer": keras.initializers.serialize(
                self.lora_a_initializer
            ),
        }

    def get_config(self):
        config = super().get_config()
        base = getattr(self, "base_layer", None)
        if base is not None and base.quantization_mode is not None:
            # The quantized policy is the base's (see `_split_dtype`).
            config["dtype"] = keras.dtype_policies.serialize(
                base.dtype_policy
            )
            config["quantization_config"] = (
                keras.saving.serialize_keras_object(base.quantization_config)
            )
        return config

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
        mode = getattr(layer, "quantization_mode", None)
        check_quantization_mode(
            mode, layer.name, lora_kwargs.get("use_dora", False)
        )
        lora_kwargs.setdefault("name", layer.name)
        lora_kwargs.setdefault("dtype", layer.dtype_policy)
        lora_kwargs.setdefault("trainable", layer.trainable)
        if mode is not None:
            lora_kwargs.setdefault(
                "quantization_config", layer.quantization_config
            )
        new = cls(
            activation=keras.activations.serialize(layer.activation),
            **base_kwargs,
            **lora_kwargs,
        )
        new.build(_input_shape_of(layer))
        names = sorted(weight.name for weight in new.base_layer.weights)
        if names != sorted(weight.name for weight in layer.weights):
            raise ValueError(
                f"Cannot wrap layer '{layer.name}' (quantization mode "
                f"{mode!r}) in a {cls.__name__} with base quantization mode "
                f"{new.base_layer.quantization_mode!r}: leave `dtype` unset "
                "to keep the layer's dtype policy. "
                f"Received: dtype={lora_kwargs['dtype']!r}"
            )
        # By name: a quantized kernel is several variables (codes, scale,
        # zero point, group index), all of which are copied.
        source = {weight.name: weight for weight in layer.weights}
        for weight in new.base_layer.weights:
            if weight.name not in source:
                raise ValueError(
                    f"Cannot copy layer '{layer.name}': it has no weight "
                    f"{weight.name!r} (it has {sorted(source)})."
                )
            weight.assign(_copy(source[weight.name]))
        if new.use_dora:
            new.reset_magnitude()
        return new


def _copy(value):
    """A fresh tensor holding `value`.

    On JAX, `variable.assign(other_variable)` shares the array; when a
    training step of either model then donates its state, the array is
    deleted under the other ("Array has been deleted").
    """
    return ops.copy(ops.convert_to_tensor(value))


def _input_shape_of(layer):
    """The shape `layer` was built with (`get_build_config`)."""
    config = layer.get_build_config() or {}
    if "input_shape" in config:
        return config["input_shape"]
    raise ValueError(
        f"Could not determine the input shape of layer '{layer.name}'."
    )
