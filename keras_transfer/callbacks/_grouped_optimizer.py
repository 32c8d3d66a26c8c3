"""The optimizer that `GradualUnfreezer` and `DiscriminativeLR` drive.

Every touch of private Keras API made by the two callbacks lives in this file
(`Optimizer._var_key`, `Optimizer._learning_rate`,
`MultiOptimizer._var_to_optimizer_idx` and `_inner_optimizers`, the names Keras gives optimizer slot
variables), and `tests/callbacks/test_grouped_optimizer.py` guards each of
them.

Why a `MultiOptimizer` subclass:

- Keras's optimizers may only update the variables they were built with
  ("Unknown variable ..."). The grouped optimizer is built once on *every*
  variable that could ever train (`variable.trainable`), so flipping
  `layer.trainable` between stages only changes which subset it is applied
  to. `MultiOptimizer.apply` (and `stateless_apply`, JAX) insist on
  gradients for all its variables; this subclass accepts the subset that
  trains now (the variables whose `trainable` flag is set).
- Each group has its own inner optimizer (a clone of the compiled one) with
  its own step counter, so a group unfrozen late starts with fresh slots
  (Adam moments at zero) and Adam's bias correction counts from its first
  step, while the groups already training keep their state untouched.
- One learning rate drives every group, as in any Keras optimizer: the
  grouped optimizer has a `learning_rate` (a float variable or a
  `LearningRateSchedule` evaluated at its own `iterations`), which
  `keras.callbacks.LearningRateScheduler` and `ReduceLROnPlateau` read and
  set. Group `i` runs at `learning_rate * factors[i]`; the factors live in a
  non-trainable variable (`group_factors`) read inside the compiled step, so
  a callback may change them between steps on every backend, and they are
  saved with the optimizer. The product is written into the inner
  optimizer's learning-rate variable before each update, so the factors
  scale the *update* for any optimizer (Adam included, which ignores a
  rescaling of the gradients).
- Saving: the config records, for every variable the optimizer was built on
  (in build order), its group, its shape and whether it trained when saved
  (`layout`). `load_model` builds the optimizer on the model's trainable
  variables (the groups that trained when it was saved) and stands in a
  placeholder for each frozen one, so every saved slot loads in place and a
  plain `fit` continues with the saved rates; the callbacks, given again,
  swap the placeholders for the model's variables and keep all state.
"""

import math
import re

import keras
import numpy as np

from keras_transfer._keras_private import children
from keras_transfer._keras_private import trainable_capable

_GLOBAL_NAMES = ("iteration", "iterations", "learning_rate", "group_factors")
_Schedule = keras.optimizers.schedules.LearningRateSchedule


def _paths_regex(paths):
    return "(?:" + "|".join(re.escape(p) for p in paths) + ")"


def _to_float(value):
    return float(keras.ops.convert_to_numpy(value))


def check_factors(factors, count, name="factors"):
    """Validates `count` positive, finite rate factors."""
    if isinstance(factors, (str, bytes)) or not isinstance(
        factors, (list, tuple, np.ndarray)
    ):
        raise ValueError(
            f"`{name}` must be a list of {count} positive numbers. "
            f"Received: {name}={factors!r}"
        )
    if len(factors) != count:
        raise ValueError(
            f"`{name}` needs {count} values: the head's, then one per group "
            f"from the top down. Received: {name}={list(factors)!r}"
        )
    for value in factors:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.floating, np.integer))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(
                f"Each of `{name}` must be a positive, finite number (a "
                "multiplier of the optimizer's learning rate; freeze a group "
                f"with `GradualUnfreezer` instead of a 0). Received: "
                f"{name}={list(factors)!r}"
            )
    return [float(v) for v in factors]


@keras.saving.register_keras_serializable(package="keras_transfer")
class GroupedOptimizer(keras.optimizers.MultiOptimizer):
    """A `MultiOptimizer` whose groups run at factors of one learning rate.

    Created by `GradualUnfreezer` and `DiscriminativeLR`; not meant to be
    built by hand. Inner optimizers are ordered as `MultiOptimizer` orders
    them: the groups in the map's key order (input -> output), then the
    default optimizer (the head).

    Args:
        optimizer_map: a `keras.optimizers.OptimizerMap` whose keys are
            regexes of variable paths, one per group, and whose default
            optimizer updates the head.
        factors: one positive float per inner optimizer, in `optimizers`
            order: inner optimizer `i` runs at `learning_rate * factors[i]`.
        learning_rate: float or `LearningRateSchedule`, the rate all groups
            follow (settable, as in any Keras optimizer).
        group_layers: the layer names of each group (input -> output), to
            recognise the groups when the callbacks are given again.
        layout: `[group, trained_when_saved, shape, dtype]` for each variable
            the optimizer was built on, in build order (written by
            `get_config`; lets `load_model` rebuild it).
        loss_scale_factor, name: as in `MultiOptimizer`.
    """

    def __init__(
        self,
        optimizer_map,
        factors,
        learning_rate=0.001,
        group_layers=None,
        layout=None,
        loss_scale_factor=None,
        name=None,
    ):
        super().__init__(
            optimizer_map, loss_scale_factor=loss_scale_factor, name=name
        )
        factors = check_factors(factors, len(self._inner_optimizers))
        if isinstance(learning_rate, dict):
            learning_rate = keras.saving.deserialize_keras_object(learning_rate)
        # `MultiOptimizer` has no rate of its own; this one has, settable
        # through the ordinary `learning_rate` setter.
        self.learning_rate = learning_rate
        self._factors = self.add_variable(
            shape=(len(factors),),
            initializer=keras.initializers.Constant(factors),
            dtype="float32",
            name="group_factors",
        )
        self.group_layers = group_layers
        self.layout = layout
        self.group_of = None
        self.pending_state = None

    learning_rate = keras.optimizers.Optimizer.learning_rate

    @property
    def optimizers(self):
        # Keras's `LearningRateScheduler`, `ReduceLROnPlateau` and
        # `TensorBoard` set or log each inner optimizer's rate when they find
        # `optimizers`; here those rates are derived (`learning_rate *
        # factor`, rewritten each step), so the callbacks must see the one
        # `learning_rate` instead.
        raise AttributeError(
            "`GroupedOptimizer` has one `learning_rate` for all groups; its "
            "inner optimizers are `group_optimizers`."
        )

    @property
    def group_optimizers(self):
        """The inner optimizers: the groups input -> output, then the head."""
        return self._inner_optimizers

    @property
    def factors(self):
        """The current factor of each inner optimizer (floats)."""
        return [float(f) for f in keras.ops.convert_to_numpy(self._factors)]

    @factors.setter
    def factors(self, values):
        values = check_factors(values, len(self._inner_optimizers))
        self._factors.assign(np.asarray(values, "float32"))

    def build(self, var_list):
        if self.built:
            return
        if self.group_of is None:
            if self.layout is None:
                return
            var_list = self._with_placeholders(list(var_list))
            if var_list is None:
                return
        # Variable paths change when a model is saved and loaded, so the
        # callbacks assign variables to groups by identity (`group_of`).
        head = len(self._inner_optimizers) - 1
        self._var_to_optimizer_idx = {}
        self._trainable_variables_indices = {}
        per_optimizer = [[] for _ in self._inner_optimizers]
        for i, variable in enumerate(var_list):
            key = self._var_key(variable)
            index = self.group_of.get(key, head)
            self._var_to_optimizer_idx[key] = index
            self._trainable_variables_indices[key] = i
            per_optimizer[index].append(variable)
        for optimizer, variables in zip(self._inner_optimizers, per_optimizer):
            if variables:
                optimizer.build(variables)
        keras.optimizers.Optimizer.build(self, var_list)

    def _with_placeholders(self, trainable):
        """Just loaded: `trainable` are the variables that trained when the
        model was saved; the others of `layout` get stand-ins (never
        trained: `trainable=False`) so that the saved slots load in place."""
        if sum(1 for entry in self.layout if entry[1]) != len(trainable):
            return None
        live = iter(trainable)
        var_list, self.group_of = [], {}
        for i, (group, trained, shape, dtype) in enumerate(self.layout):
            if trained:
                variable = next(live)
                if tuple(variable.shape) != tuple(shape):
                    self.group_of = None
                    return None
            else:
                variable = keras.Variable(
                    np.zeros(shape, dtype),
                    trainable=False,
                    name=f"frozen_{i}",
                )
            self.group_of[self._var_key(variable)] = group
            var_list.append(variable)
        return var_list

    def current_learning_rate(self):
        """The optimizer's learning rate at the current step (a float)."""
        return _to_float(self._get_current_learning_rate())

    def effective_rates(self):
        """The rate each inner optimizer applies now: the learning rate times
        its factor, or 0.0 for a group none of whose variables trains."""
        rate = self.current_learning_rate()
        training = [False] * len(self._inner_optimizers)
        for variable in getattr(self, "_trainable_variables", []):
            if variable.trainable:
                index = self._var_to_optimizer_idx[self._var_key(variable)]
                training[index] = True
        return [
            rate * factor if active else 0.0
            for factor, active in zip(self.factors, training)
        ]

    def apply(self, grads, trainable_variables=None):
        if len(grads) == 0:
            return
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        if not self.built and self.group_of is None:
            raise ValueError(
                f"Optimizer '{self.name}' was loaded with a model whose "
                "trainable variables do not match those it was saved with "
                "(was `trainable` changed after `load_model`?). Pass "
                "`GradualUnfreezer`/`DiscriminativeLR` with the same groups "
                "to `fit` (they restore its groups and state), or `compile` "
                "the model again with a fresh optimizer."
            )
        if not self.built:
            self.build(list(trainable_variables))
        per_optimizer = [[] for _ in self._inner_optimizers]
        for grad, variable in zip(grads, trainable_variables):
            index = self._var_to_optimizer_idx.get(self._var_key(variable))
            if index is None:
                raise ValueError(
                    f"Variable '{variable.path}' is not one the grouped "
                    "optimizer of `GradualUnfreezer`/`DiscriminativeLR` was "
                    "built on: was a layer added to the model after `fit` "
                    "started? Pass the callbacks to a `fit` of the final "
                    f"model. Received: variable={variable.path!r}"
                )
            per_optimizer[index].append((grad, variable))
        rate = keras.ops.cast(self._get_current_learning_rate(), "float32")
        for i, (optimizer, pairs) in enumerate(
            zip(self._inner_optimizers, per_optimizer)
        ):
            if not pairs:
                continue
            optimizer.learning_rate = rate * self._factors[i]
            sub_grads, sub_vars = zip(*pairs)
            optimizer.apply(list(sub_grads), list(sub_vars))
        self._iterations.assign_add(1)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        # JAX passes the values of the variables that train now, a subset
        # of those this optimizer was built on: the ones flagged trainable,
        # in the same (model.weights) order.
        if not self.built:
            raise ValueError(
                f"Optimizer '{self.name}' must be built before "
                "`stateless_apply`."
            )
        active = [v for v in self._trainable_variables if v.trainable]
        if len(active) != len(trainable_variables):
            raise ValueError(
                f"Optimizer '{self.name}' got {len(trainable_variables)} "
                f"trainable variables, but {len(active)} of those it was "
                "built on are trainable. Was `trainable` changed during "
                "`fit` without `GradualUnfreezer`?"
            )
        mapping = list(zip(active, trainable_variables)) + list(
            zip(self.variables, optimizer_variables)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.apply(grads, active)
        return (
            [scope.get_current_value(v) for v in active],
            [scope.get_current_value(v) for v in self.variables],
        )

    def built_on(self):
        """Keys of the variables this optimizer was built on."""
        return set(getattr(self, "_var_to_optimizer_idx", {}))

    def _layout(self):
        if not self.built:
            return self.layout
        return [
            [
                self._var_to_optimizer_idx[self._var_key(v)],
                bool(v.trainable),
                [int(d) for d in v.shape],
                str(v.dtype),
            ]
            for v in self._trainable_variables
        ]

    def save_own_variables(self, store):
        if not self.built and self.pending_state is not None:
            # Loaded and saved again before any `fit`: keep the state.
            for i, value in enumerate(self.pending_state):
                store[str(i)] = value
            return
        return super().save_own_variables(store)

    def load_own_variables(self, store):
        if self.built and len(store.keys()) == len(self.variables):
            return super().load_own_variables(store)
        # Not built (trainable variables changed after loading): keep the
        # state for the callbacks, which rebuild the optimizer.
        self.pending_state = [
            np.array(store[str(i)]) for i in range(len(store.keys()))
        ]

    def __dir__(self):
        # `model.save` walks `dir(optimizer)` for nested savables; the inner
        # optimizers' variables are already in `self.variables`, and saved
        # a second time they would be loaded (or fail to, with a warning)
        # one by one.
        return [
            a for a in super().__dir__()
            if a not in ("optimizers", "_inner_optimizers", "group_optimizers")
        ]

    def get_config(self):
        rate = self._learning_rate
        if isinstance(rate, _Schedule):
            rate = keras.saving.serialize_keras_object(rate)
        else:
            rate = _to_float(rate)
        return {
            **super().get_config(),
            "factors": self.factors,
            "learning_rate": rate,
            "group_layers": self.group_layers,
            "layout": self._layout(),
        }


def _unwrap(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            f"Model '{model.name}' has no optimizer: compile it before "
            "`fit` with `GradualUnfreezer` or `DiscriminativeLR`. "
            "Received: optimizer=None"
        )
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer, optimizer.inner_optimizer
    return None, optimizer


def compiled_learning_rate(model):
    """The compiled optimizer's rate: a float or a `LearningRateSchedule`."""
    _, optimizer = _unwrap(model)
    if not isinstance(optimizer, GroupedOptimizer):
        _check_supported(optimizer)
    rate = optimizer._learning_rate
    if isinstance(rate, _Schedule):
        return rate
    if isinstance(rate, keras.Variable):
        return _to_float(rate)
    raise ValueError(
        "`GradualUnfreezer`/`DiscriminativeLR` need an optimizer whose "
        "learning rate is a float or a `LearningRateSchedule`. Received: "
        f"learning_rate={rate!r}"
    )


def _check_supported(optimizer):
    if isinstance(optimizer, keras.optimizers.MultiOptimizer) or not isinstance(
        optimizer, keras.optimizers.Optimizer
    ):
        raise ValueError(
            "`GradualUnfreezer`/`DiscriminativeLR` drive a single Keras "
            "optimizer (Adam, SGD, AdamW, ...), cloned once per group; they "
            "cannot drive this one. Compile with a plain optimizer. Received: "
            f"optimizer={optimizer!r}"
        )
    # Per-group clones would clip each group's norm / accumulate or average
    # per group, not what these arguments promise for the whole model.
    for name in ("global_clipnorm", "gradient_accumulation_steps", "use_ema"):
        value = getattr(optimizer, name, None)
        if value:
            raise ValueError(
                "`GradualUnfreezer`/`DiscriminativeLR` clone the optimizer "
                f"once per group, so `{name}` would act per group, not on the "
                f"whole model. Compile without it (`clipnorm` and "
                f"`clipvalue` work). Received: {name}={value!r}"
            )
    if not isinstance(optimizer._learning_rate, (keras.Variable, _Schedule)):
        raise ValueError(
            "`GradualUnfreezer`/`DiscriminativeLR` need an optimizer whose "
            "learning rate is a float or a `LearningRateSchedule`. Received: "
            f"learning_rate={optimizer._learning_rate!r}"
        )


def trainable_candidates(model):
    """Every variable of `model` that could train, in `model.weights` order."""
    return trainable_capable(model)


def group_paths(model, groups):
    """Variable paths of each group (only variables that could train)."""
    candidates = trainable_candidates(model)
    paths = [v.path for v in candidates]
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ValueError(
            f"Model '{model.name}' has several variables with the same path "
            f"{duplicates}; per-group optimizers are keyed by variable path. "
            "Give the layers unique names."
        )
    return [
        [v.path for layer in group for v in trainable_capable(layer)]
        for group in groups
    ]


def _clone(optimizer, suffix):
    config = optimizer.get_config()
    # Overwritten before every update with `learning_rate * factor`.
    config["learning_rate"] = 0.0
    config["name"] = f"{config.get('name', 'optimizer')}_{suffix}"
    return optimizer.__class__.from_config(config)


def _copy_state(old, new):
    """Copies slot variables by name (Keras names them after the variable
    they belong to), and step counters, from optimizer `old` to `new`."""
    if not old.built:
        return
    olds = old._inner_optimizers if isinstance(old, keras.optimizers.MultiOptimizer) else [old]
    by_name = {}
    for optimizer in olds:
        for variable in optimizer.variables:
            if variable.name not in _GLOBAL_NAMES:
                by_name[variable.name] = (variable, optimizer.iterations)
    for optimizer in new._inner_optimizers:
        steps = []
        for variable in optimizer.variables:
            if variable.name in _GLOBAL_NAMES:
                continue
            found = by_name.get(variable.name)
            if found is not None and tuple(found[0].shape) == tuple(variable.shape):
                variable.assign(found[0])
                steps.append(int(keras.ops.convert_to_numpy(found[1])))
        if steps:
            optimizer.iterations.assign(max(steps))
    new.iterations.assign(old.iterations)


def _copy_by_position(old_values, new):
    """Copies a same-layout optimizer's state, variable by variable."""
    if len(old_values) != len(new.variables) or any(
        tuple(np.shape(a)) != tuple(b.shape)
        for a, b in zip(old_values, new.variables)
    ):
        return False
    for variable, value in zip(new.variables, old_values):
        variable.assign(value)
    return True


def install(model, groups, factors=None, learning_rate=None):
    """Makes `model.optimizer` a `GroupedOptimizer` for `groups`, built on
    every variable that could train, keeping all optimizer state.

    Args:
        model: the compiled model.
        groups: lists of layers, input -> output.
        factors: None (keep the current factors; 1.0 for a new grouped
            optimizer), or one factor per group in public order: head first,
            then the groups from the top down.
        learning_rate: None (keep the optimizer's), or a float or schedule
            that becomes the optimizer's learning rate.

    Returns:
        The installed `GroupedOptimizer`.
    """
    wrapper, optimizer = _unwrap(model)
    paths = group_paths(model, groups)
    keys = [_paths_regex(p) for p in paths]
    names = names_of(groups)
    candidates = trainable_candidates(model)
    wanted = {optimizer._var_key(v) for v in candidates}
    group_of = {}
    for i, group in enumerate(groups):
        for layer in group:
            for variable in trainable_capable(layer):
                group_of[optimizer._var_key(variable)] = i

    if (
        isinstance(optimizer, GroupedOptimizer)
        and optimizer.group_layers == names
    ):
        grouped = optimizer
        if not (grouped.built and grouped.built_on() == wanted):
            config = grouped.get_config()
            config["layout"] = None
            fresh = GroupedOptimizer.from_config(config)
            fresh.group_of = group_of
            fresh.build(candidates)
            if grouped.built:
                old = [keras.ops.convert_to_numpy(v) for v in grouped.variables]
            else:
                old = grouped.pending_state or []
            if not _copy_by_position(old, fresh):
                _copy_state(grouped, fresh)
            grouped = fresh
    else:
        if isinstance(optimizer, GroupedOptimizer):
            template = optimizer.group_optimizers[-1]
        else:
            _check_supported(optimizer)
            template = optimizer
        optimizer_map = keras.optimizers.OptimizerMap(
            _clone(template, "head"),
            {key: _clone(template, f"group_{i}") for i, key in enumerate(keys)},
        )
        grouped = GroupedOptimizer(
            optimizer_map,
            factors=[1.0] * (len(groups) + 1),
            learning_rate=compiled_learning_rate(model),
            group_layers=names,
            loss_scale_factor=optimizer.loss_scale_factor,
            name=f"grouped_{template.name}",
        )
        grouped.group_of = group_of
        grouped.build(candidates)
        _copy_state(optimizer, grouped)

    if factors is not None:
        # Public order (head, top ... bottom) -> inner order (bottom ... top, head).
        grouped.factors = list(reversed(factors[1:])) + [factors[0]]
    if learning_rate is not None:
        grouped.learning_rate = learning_rate
    if grouped is not optimizer:
        if wrapper is not None:
            wrapper.inner_optimizer = grouped
        else:
            model.optimizer = grouped
        # `model.save` writes the optimizer from the compile arguments; keep
        # them in step so that `load_model` rebuilds this optimizer.
        compile_config = getattr(model, "_compile_config", None)
        if compile_config is not None:
            compile_config.config["optimizer"] = grouped
    model.make_train_function(force=True)
    return grouped


def rate_logs(model):
    """`{"lr_head": ..., "lr_group_0": ...}`: each group's effective rate now
    (0.0 while frozen); groups indexed input -> output."""
    inner = install_target(model).effective_rates()
    values = {"lr_head": inner[-1]}
    for i, rate in enumerate(inner[:-1]):
        values[f"lr_group_{i}"] = rate
    return values


def check_groups(groups, caller):
    """Validates `groups` (lists of layers, input -> output) for a callback."""
    if (
        isinstance(groups, (str, keras.layers.Layer))
        or not isinstance(groups, (list, tuple))
        or not groups
    ):
        raise ValueError(
            f"`{caller}` needs `groups`: a non-empty list of lists of layers, "
            "input -> output, e.g. `keras_transfer.strategies.layer_groups("
            f"base, blocks='auto')`. Received: groups={groups!r}"
        )
    seen = {}
    result = []
    for i, group in enumerate(groups):
        if isinstance(group, keras.layers.Layer):
            group = [group]
        if not isinstance(group, (list, tuple)) or not group:
            raise ValueError(
                f"Group {i} of `groups` is empty or not a list of layers: each "
                f"group must be a non-empty list. Received: groups[{i}]={group!r}"
            )
        for layer in group:
            if not isinstance(layer, (keras.layers.Layer, str)):
                raise ValueError(
                    f"Group {i} of `groups` holds {layer!r}, neither a Keras "
                    f"layer nor a layer name. Received: groups[{i}]={group!r}"
                )
            key = layer if isinstance(layer, str) else id(layer)
            name = layer if isinstance(layer, str) else layer.name
            if key in seen:
                raise ValueError(
                    f"Layer '{name}' is in groups {seen[key]} and "
                    f"{i}; groups must not overlap. Received: groups={groups!r}"
                )
            seen[key] = i
        result.append(list(group))
    return result


def check_log_dir(log_dir):
    if log_dir is not None and (not isinstance(log_dir, str) or not log_dir):
        raise ValueError(
            "`log_dir` must be None or a directory path. "
            f"Received: log_dir={log_dir!r}"
        )
    return log_dir


def model_layers(model):
    """Every layer of `model`, nested models and wrapped layers (such as
    `InferenceMode(base)`) included, depth first."""
    result, stack = [], children(model)
    while stack:
        layer = stack.pop(0)
        result.append(layer)
        stack[0:0] = children(layer)
    return result


def resolve_groups(model, groups, caller):
    """Replaces layer names in `groups` by the model's layers, and checks
    that every layer belongs to `model`."""
    layers = model_layers(model)
    by_id = {id(l) for l in layers}
    by_name = {}
    for layer in layers:
        by_name.setdefault(layer.name, []).append(layer)
    resolved = []
    for i, group in enumerate(groups):
        out = []
        for layer in group:
            if isinstance(layer, str):
                found = by_name.get(layer, [])
                if len(found) != 1:
                    raise ValueError(
                        f"`{caller}`: group {i} names layer {layer!r}, which "
                        f"model '{model.name}' has {len(found)} times (needs "
                        "exactly one). Available layers: "
                        f"{sorted(by_name)}. Received: groups[{i}]={group!r}"
                    )
                layer = found[0]
            elif id(layer) not in by_id:
                raise ValueError(
                    f"`{caller}`: layer '{layer.name}' of group {i} is not "
                    f"part of model '{model.name}'. Build the groups from the "
                    "base inside the model being fitted. "
                    f"Received: groups[{i}]={[getattr(l, 'name', l) for l in group]!r}"
                )
            out.append(layer)
        resolved.append(out)
    return resolved


def names_of(groups):
    return [[l if isinstance(l, str) else l.name for l in g] for g in groups]


def install_target(model):
    """The model's `GroupedOptimizer` (inside a `LossScaleOptimizer` or not)."""
    _, optimizer = _unwrap(model)
    if not isinstance(optimizer, GroupedOptimizer):
        raise ValueError(
            f"Model '{model.name}' has no grouped optimizer yet: its optimizer "
            "is set up when `fit` starts with the callback. "
            f"Received: optimizer={optimizer!r}"
        )
    return optimizer
