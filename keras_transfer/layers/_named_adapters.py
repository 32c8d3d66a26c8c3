"""Several named adapters in one layer (private; LoRA and `Adapter` layers).

A layer that holds adapters (`LoRADense` and its siblings, the bottleneck
`Adapter`) has its first adapter, named `"default"`, plus any number of
named ones, each with its own weights and one non-trainable scalar weight
`g` (a `keras.Variable`) that multiplies the adapter's output inside
`call`. Which adapters act, and how much, is the values of the `g`, so
switching needs no new trace of a compiled step; `g = 0` for all gives
exactly the layer without adapters. Only one adapter's weights train at a
time. A layer with no named adapter holds no `g` and computes as before.
The strategies in `keras_transfer.strategies.peft.named` drive this.
"""

import contextlib

import keras
from keras import ops

from keras_transfer import _keras_private

DEFAULT_ADAPTER = "default"


class _NamedAdapters:
    """The named adapters of one layer, besides the default one.

    A plain object, which Keras's attribute tracker leaves alone: the
    variables are tracked by `add_weight` (in creation order, which `build`
    repeats from the config on loading).
    """

    def __init__(self):
        self.specs = {}  # name -> settings (ranks, bottleneck, ...)
        self.factors = {}  # name -> tuple of the adapter's variables
        self.gates = {}  # name -> scalar weight g, the default's included
        self.training = DEFAULT_ADAPTER  # whose weights train


class NamedAdaptersMixin:
    """Named adapters of a layer (see the module docstring).

    The layer calls `_init_named(state)` in `__init__` and
    `_build_named()` at the end of `build`, and defines:

    - `_default_adapter_variables()`: the default adapter's weights;
    - `_default_adapter_spec()`: its settings (a dict);
    - `_normalize_spec(name, spec, check)`: the settings of a new adapter,
      checked (raises a `ValueError` naming argument and value);
    - `_create_named_variables(name, spec)`: creates and returns the new
      adapter's weights (trainable; the last factor zero, so a new adapter
      starts as the identity);
    - `_weights_scope()`: the name scope the layer was built in (a list
      of names), or `None` while the default adapter's weights do not
      exist yet.
    """

    def _init_named(self, state):
        # Created in `build` from `state` (a saved layer's), or later by
        # the strategies.
        self._named_state = state
        self._named = _NamedAdapters()

    @property
    def adapter_names(self):
        """The adapters of this layer: `"default"`, then the named ones."""
        return [DEFAULT_ADAPTER] + list(self._named.specs)

    def adapter_variables(self, name):
        """The weights of adapter `name`, in a fixed order."""
        if name == DEFAULT_ADAPTER:
            return self._default_adapter_variables()
        return list(self._named.factors[name])

    def adapter_spec(self, name):
        """The settings of adapter `name` (a new dict)."""
        if name == DEFAULT_ADAPTER:
            return self._default_adapter_spec()
        return dict(self._named.specs[name])

    def adapter_weights(self):
        """`{name: g}`, the current weight of each adapter (all 1.0 for the
        default adapter of a layer with no named adapter)."""
        if not self._named.gates:
            return {DEFAULT_ADAPTER: 1.0}
        return {
            name: float(ops.convert_to_numpy(gate))
            for name, gate in self._named.gates.items()
        }

    def set_adapter_weights(self, weights):
        """Assigns `g` of each adapter: `weights` maps every adapter name to
        a number. Needs `gate_adapters()` first."""
        for name, gate in self._named.gates.items():
            gate.assign(float(weights[name]))

    @property
    def training_adapter(self):
        """The adapter whose weights train (`None`: none of them)."""
        return self._named.training

    def set_training_adapter(self, name):
        self._named.training = name
        self._freeze_adapters()

    def named_adapter_state(self):
        """What `build` needs to recreate the named adapters (the config
        entry `named_adapters`), or `None` if there are none."""
        named = self._named
        if not named.gates and named.training == DEFAULT_ADAPTER:
            return None
        return {
            "adapters": [
                {"name": name, **spec} for name, spec in named.specs.items()
            ],
            "gated": bool(named.gates),
            "training": named.training,
        }

    def _gate_name(self, name):
        return "lora_gate" if name == DEFAULT_ADAPTER else f"lora_gate_{name}"

    def gate_adapters(self):
        """Creates the default adapter's weight `g = 1` (once)."""
        if not self._named.gates:
            with self._adding_weights():
                self._named.gates[DEFAULT_ADAPTER] = self.add_weight(
                    name=self._gate_name(DEFAULT_ADAPTER),
                    shape=(),
                    initializer="ones",
                    dtype="float32",
                    trainable=False,
                )

    @contextlib.contextmanager
    def _adding_weights(self):
        """Lets a built layer create weights, under the name scope it was
        built in (so the paths match those of a layer loaded from a file)."""
        scope = self._weights_scope()
        with contextlib.ExitStack() as stack:
            for part in scope:
                stack.enter_context(keras.name_scope(part))
            stack.enter_context(_keras_private.unlocked_tracker(self))
            yield

    def _add_named(self, name, spec, check=True):
        """Creates adapter `name` with settings `spec` (not active: `g = 0`;
        training, the others frozen). Raises a `ValueError` for a taken
        name or invalid settings."""
        if name in self.adapter_names:
            raise ValueError(
                f"Layer '{self.name}' already has an adapter named {name!r} "
                f"(it has {self.adapter_names}). Received: "
                f"adapter_name={name!r}"
            )
        spec = self._normalize_spec(name, spec, check)
        self.gate_adapters()
        with self._adding_weights():
            variables = tuple(self._create_named_variables(name, spec))
            gate = self.add_weight(
                name=self._gate_name(name),
                shape=(),
                initializer="zeros",
                dtype="float32",
                trainable=False,
            )
        self._named.specs[name] = spec
        self._named.factors[name] = variables
        self._named.gates[name] = gate
        self._freeze_adapters()

    def delete_named_adapter(self, name):
        """Removes adapter `name` and its weights (not the default one)."""
        variables = self._named.factors.pop(name)
        gate = self._named.gates.pop(name)
        del self._named.specs[name]
        for variable in variables + (gate,):
            _keras_private.untrack_variable(self, variable)
        if self._named.training == name:
            self._named.training = None
        self._freeze_adapters()

    def _build_named(self):
        state = self._named_state
        if not state:
            return
        if state.get("gated"):
            self.gate_adapters()
        for spec in state.get("adapters", []):
            spec = dict(spec)
            self._add_named(spec.pop("name"), spec, check=False)
        self._named.training = state.get("training", DEFAULT_ADAPTER)
        self._freeze_adapters()

    @property
    def trainable(self):
        return keras.layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        # `Layer.trainable` sets every weight: the wrapped base stays frozen
        # (`_freeze_base`, e.g. LoRA's kernel; the bias as `train_bias`
        # says) and only the adapter that trains (`set_training_adapter`)
        # follows `value`.
        keras.layers.Layer.trainable.fset(self, value)
        if self.built:
            self._freeze_base()
            self._freeze_adapters()

    def _freeze_base(self):
        """Re-freezes the layer's own base weights (a bottleneck has none)."""

    def _freeze_adapters(self):
        """Only the training adapter's weights train (if the layer does)."""
        if getattr(self, "_named", None) is None or self._weights_scope() is None:
            return  # Not built yet: `build` calls this again.
        for name in self.adapter_names:
            flag = self.trainable and name == self._named.training
            for variable in self.adapter_variables(name):
                variable.trainable = flag
