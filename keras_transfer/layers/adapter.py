"""Bottleneck adapter (Houlsby et al., 2019)."""

import keras
import numpy as np
from keras import ops

from keras_transfer.layers._named_adapters import DEFAULT_ADAPTER
from keras_transfer.layers._named_adapters import NamedAdaptersMixin


@keras.saving.register_keras_serializable(package="keras_transfer")
class Adapter(NamedAdaptersMixin, keras.layers.Layer):
    """Residual bottleneck `x + up(activation(down(x)))`, identity at start.

    `down` maps the last axis `d` to `bottleneck` units and `up` maps back to
    `d`; `up` is zero-initialised, so a freshly inserted adapter leaves the
    pretrained model's outputs unchanged. Trainable parameters:
    `2 d m + m + d` for bottleneck `m`. The bottleneck is given either
    directly (`bottleneck`) or as `d // reduction_factor`.

    Named adapters (`add_adapters(..., adapter_name=...)` and
    `keras_transfer.strategies.set_adapter` and its siblings): besides its
    first bottleneck (named `"default"`), the layer may hold more, each
    with its own down/up weights and bottleneck `m_i` and a non-trainable
    scalar weight `g_i` per adapter (the default's included):

        y = x + g_0 up(act(down(x))) + sum_i g_i up_i(act(down_i(x)))

    With every `g_i = 0` the layer returns exactly `x`. Switching adapters
    assigns the `g_i` (variables), so a compiled step is not traced again.

    Args:
        bottleneck: positive integer `m`, or `None` to use `reduction_factor`.
        reduction_factor: positive number, `m = max(1, d // reduction_factor)`
            (used when `bottleneck` is `None`; default 16).
        activation: activation between `down` and `up` (default `"relu"`).
        kernel_initializer: initializer of `down` (`up` starts at zero).
        named_adapters: the named adapters to create in `build` (set when
            loading a saved layer; see `named_adapter_state`).
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
        named_adapters=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_named(named_adapters)
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
        self._build_named()

    def call(self, inputs):
        hidden = self.down(inputs)
        if self.activation is not None:
            hidden = self.activation(hidden)
        update = self.up(hidden)
        gates = self._named.gates
        if gates:
            update = ops.multiply(
                update, ops.cast(gates[DEFAULT_ADAPTER], update.dtype)
            )
        for name, weights in self._named.factors.items():
            down_kernel, down_bias, up_kernel, up_bias = (
                ops.cast(w, inputs.dtype) for w in weights
            )
            hidden = ops.add(ops.matmul(inputs, down_kernel), down_bias)
            if self.activation is not None:
                hidden = self.activation(hidden)
            branch = ops.add(ops.matmul(hidden, up_kernel), up_bias)
            # g_i = 0 gives an exact zero term.
            update = ops.add(
                update, ops.multiply(branch, ops.cast(gates[name], branch.dtype))
            )
        return ops.add(inputs, update)

    # --- Named adapters (see `_named_adapters`) ---------------------------

    def _default_adapter_variables(self):
        return [self.down.kernel, self.down.bias, self.up.kernel, self.up.bias]

    def _default_adapter_spec(self):
        return {"bottleneck": self.down.units}

    def _weights_scope(self):
        up = getattr(self, "up", None)
        if up is None or not up.built:
            return None
        # `<scope>/<this layer>/up/kernel`.
        return up.kernel.path.split("/")[:-3]

    def _gate_name(self, name):
        return "gate" if name == DEFAULT_ADAPTER else f"gate_{name}"

    def _normalize_spec(self, name, spec, check):
        bottleneck = spec.get("bottleneck")
        if bottleneck is None:
            bottleneck = self.down.units
        if (
            isinstance(bottleneck, bool)
            or not isinstance(bottleneck, int)
            or bottleneck <= 0
        ):
            raise ValueError(
                "`bottleneck` must be a positive integer (or None for the "
                "default adapter's). "
                f"Received: bottleneck={spec.get('bottleneck')!r}"
            )
        return {"bottleneck": bottleneck}

    def _create_named_variables(self, name, spec):
        d, m = self.down.kernel.shape[0], spec["bottleneck"]
        return (
            self.add_weight(
                name=f"down_kernel_{name}",
                shape=(d, m),
                initializer=self.kernel_initializer,
            ),
            self.add_weight(
                name=f"down_bias_{name}", shape=(m,), initializer="zeros"
            ),
            self.add_weight(
                name=f"up_kernel_{name}", shape=(m, d), initializer="zeros"
            ),
            self.add_weight(
                name=f"up_bias_{name}", shape=(d,), initializer="zeros"
            ),
        )

    def weighted_adapter(self, names, weights):
        """`(settings, [down kernel, down bias, up kernel, up bias])` of the
        adapter equal to `sum_i w_i up_i(act(down_i(x)))` over adapters
        `names` (NumPy arrays; see `add_weighted_adapter`)."""
        parts = [
            [ops.convert_to_numpy(v) for v in self.adapter_variables(name)]
            for name in names
        ]
        down_kernel = np.concatenate([p[0] for p in parts], axis=1)
        down_bias = np.concatenate([p[1] for p in parts])
        up_kernel = np.concatenate(
            [w * p[2] for p, w in zip(parts, weights)], axis=0
        )
        up_bias = sum(w * p[3] for p, w in zip(parts, weights))
        spec = {"bottleneck": int(down_kernel.shape[1])}
        return spec, [down_kernel, down_bias, up_kernel, up_bias]

    def add_named_adapter(self, name, bottleneck=None):
        """Creates adapter `name` with bottleneck `bottleneck` (`None`: the
        default adapter's): `down` initialised like the default's, `up = 0`
        and its weight `g = 0`. Raises a `ValueError` for a taken name or a
        bad bottleneck."""
        self._add_named(name, {"bottleneck": bottleneck})

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            **super().get_config(),
            "bottleneck": self.bottleneck,
            "reduction_factor": self.reduction_factor,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
        }
        state = self.named_adapter_state()
        if state is not None:
            config["named_adapters"] = state
        return config
