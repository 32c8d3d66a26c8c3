"""The optimizer that `GradualUnfreezer` and `DiscriminativeLR` drive.

Every touch of private Keras API made by the two callbacks lives in this file
(`Optimizer._var_key`, `MultiOptimizer._var_to_optimizer_idx`, the names Keras
gives optimizer slot variables), and `tests/callbacks/test_grouped_optimizer.py`
guards each of them.

Why a `MultiOptimizer` subclass:

- Keras's optimizers may only update the variables they were built with
  ("Unknown variable ..."). The grouped optimizer is built once on *every*
  variable that could ever train (`variable.trainable`), so flipping
  `layer.trainable` between stages only changes which subset it is applied
  to. `MultiOptimizer.apply` insists on gradients for all its variables; this
  subclass accepts any subset of them.
- Each group has its own inner optimizer (a clone of the compiled one) with
  its own step counter, so a group unfrozen late starts with fresh slots
  (Adam moments at zero) and Adam's bias correction counts from its first
  step, while the groups already training keep their state untouched.
- Each group's learning rate is a float or a `LearningRateSchedule`,
  evaluated at the *global* step (this optimizer's `iterations`) and written
  into the inner optimizer's learning-rate variable before each update. So
  per-group rates scale the actual update for any optimizer (Adam included,
  which ignores a rescaling of the gradients).
- Variable paths change when a model is saved and loaded, so the callbacks
  assign variables to groups by identity (`group_of`), which a loaded
  optimizer does not have yet: it stays unbuilt, keeps its saved state
  aside (`pending_state`), and the callbacks rebuild it on all variables
  and restore that state when `fit` runs with them again (`install`).
  `load_model` also builds it on the variables trainable when the model was
  saved, fewer than it held mid-schedule, so this is needed either way.
"""

import re
import warnings

import keras
import numpy as np

from keras_transfer._keras_private import children
from keras_transfer._keras_private import trainable_capable

_GLOBAL_NAMES = ("iteration", "iterations", "learning_rate")


def _rate_value(rate, step):
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return rate(step)
    return rate


def _paths_regex(paths):
    return "(?:" + "|".join(re.escape(p) for p in paths) + ")"


def _serialize_rate(rate):
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return keras.saving.serialize_keras_object(rate)
    return float(rate)


def _deserialize_rate(rate):
    if isinstance(rate, dict):
        return keras.saving.deserialize_keras_object(rate)
    return rate


@keras.saving.register_keras_serializable(package="keras_transfer")
class GroupedOptimizer(keras.optimizers.MultiOptimizer):
    """A `MultiOptimizer` with one inner optimizer and one rate per group.

    Created by `GradualUnfreezer` and `DiscriminativeLR`; not meant to be
    built by hand. Inner optimizers are ordered as `MultiOptimizer` orders
    them: the groups in the map's key order (input -> output), then the
    default optimizer (the head).

    Args:
        optimizer_map: a `keras.optimizers.OptimizerMap` whose keys are
            regexes of variable paths, one per group, and whose default
            optimizer updates the head.
        learning_rates: one float or `LearningRateSchedule` per inner
            optimizer, in `optimizers` order.
        group_layers: the layer names of each group (input -> output), to
            recognise the groups after `load_model`.
        loss_scale_factor, name: as in `MultiOptimizer`.
    """

    def __init__(
        self,
        optimizer_map,
        learning_rates,
        group_layers=None,
        loss_scale_factor=None,
        name=None,
    ):
        super().__init__(
            optimizer_map, loss_scale_factor=loss_scale_factor, name=name
        )
        self.group_layers = group_layers
        self.group_of = None
        self.learning_rates = [_deserialize_rate(r) for r in learning_rates]
        if len(self.learning_rates) != len(self.optimizers):
            raise ValueError(
                f"`learning_rates` needs one rate per inner optimizer "
                f"({len(self.optimizers)}). "
                f"Received: learning_rates={learning_rates!r}"
            )
        self.pending_state = None

    def build(self, var_list):
        if self.built:
            return
        if self.group_of is None:
            # A model just loaded: variable paths are not those the map was
            # made with, so only the callbacks can assign the variables.
            # Stay unbuilt; `load_own_variables` keeps the saved state.
            return
        # Variable paths change when a model is saved and loaded, so the
        # callbacks assign variables to groups by identity (`group_of`).
        head = len(self.optimizers) - 1
        self._var_to_optimizer_idx = {}
        self._trainable_variables_indices = {}
        per_optimizer = [[] for _ in self.optimizers]
        for i, variable in enumerate(var_list):
            key = self._var_key(variable)
            index = self.group_of.get(key, head)
            self._var_to_optimizer_idx[key] = index
            self._trainable_variables_indices[key] = i
            per_optimizer[index].append(variable)
        for optimizer, variables in zip(self.optimizers, per_optimizer):
            if variables:
                optimizer.build(variables)
        keras.optimizers.Optimizer.build(self, var_list)

    def current_rates(self):
        """The rate of each inner optimizer at the current global step."""
        step = self.iterations
        return [
            float(keras.ops.convert_to_numpy(_rate_value(r, step)))
            for r in self.learning_rates
        ]

    def apply(self, grads, trainable_variables=None):
        if len(grads) == 0:
            return
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        if not self.built and self.group_of is None:
            raise ValueError(
                f"Optimizer '{self.name}' was loaded with a model trained with "
                "`GradualUnfreezer`/`DiscriminativeLR`: pass the same "
                "callback(s) to `fit` to continue training (they restore its "
                "state and its groups), or `compile` the model again with a "
                "fresh optimizer. Received: callbacks without them"
            )
        if not self.built:
            self.build(list(trainable_variables))
        per_optimizer = [[] for _ in self.optimizers]
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
        step = self.iterations
        for optimizer, rate, pairs in zip(
            self.optimizers, self.learning_rates, per_optimizer
        ):
            if not pairs:
                continue
            optimizer.learning_rate = keras.ops.cast(
                _rate_value(rate, step), "float32"
            )
            sub_grads, sub_vars = zip(*pairs)
            optimizer.apply(list(sub_grads), list(sub_vars))
        self._iterations.assign_add(1)

    def built_on(self):
        """Keys of the variables this optimizer was built on."""
        return set(getattr(self, "_var_to_optimizer_idx", {}))

    def save_own_variables(self, store):
        if not self.built and self.pending_state is not None:
            # Loaded and saved again before any `fit`: keep the state.
            for i, value in enumerate(self.pending_state):
                store[str(i)] = value
            return
        return super().save_own_variables(store)

    def load_own_variables(self, store):
        if len(store.keys()) == len(self.variables):
            return super().load_own_variables(store)
        # Built on fewer variables than were saved (a model saved
        # mid-schedule): keep the state until `install` rebuilds on all.
        self.pending_state = [
            np.array(store[str(i)]) for i in range(len(store.keys()))
        ]
        warnings.warn(
            f"Optimizer '{self.name}' holds its {len(store.keys())} saved "
            "variables aside until `fit` runs with `GradualUnfreezer` or "
            "`DiscriminativeLR` again, which rebuilds it on the model's "
            "variables and restores them.",
            stacklevel=2,
        )

    def __dir__(self):
        # `model.save` walks `dir(optimizer)` for nested savables; the inner
        # optimizers' variables are already in `self.variables`, and saved
        # a second time they would be loaded (or fail to, with a warning)
        # one by one on a model saved mid-schedule.
        return [
            a for a in super().__dir__()
            if a not in ("optimizers", "_inner_optimizers")
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "learning_rates": [_serialize_rate(r) for r in self.learning_rates],
            "group_layers": self.group_layers,
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
    if isinstance(optimizer, GroupedOptimizer):
        return optimizer.learning_rates[-1]
    _check_supported(optimizer)
    rate = optimizer._learning_rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return rate
    if isinstance(rate, keras.Variable):
        return float(keras.ops.convert_to_numpy(rate))
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


def _clone(optimizer, rate_value, suffix):
    config = optimizer.get_config()
    config["learning_rate"] = rate_value
    config["name"] = f"{config.get('name', 'optimizer')}_{suffix}"
    return optimizer.__class__.from_config(config)


def _initial(rate):
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(rate(0)))
    return float(rate)


def _copy_state(old, new):
    """Copies slot variables by name (Keras names them after the variable
    they belong to), and step counters, from optimizer `old` to `new`."""
    if not old.built:
        return
    olds = old.optimizers if isinstance(old, keras.optimizers.MultiOptimizer) else [old]
    by_name = {}
    for optimizer in olds:
        for variable in optimizer.variables:
            if variable.name not in _GLOBAL_NAMES:
                by_name[variable.name] = (variable, optimizer.iterations)
    for optimizer in new.optimizers:
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


def install(model, groups, learning_rates=None):
    """Makes `model.optimizer` a `GroupedOptimizer` for `groups`, built on
    every variable that could train, keeping all optimizer state.

    Args:
        model: the compiled model.
        groups: lists of layers, input -> output.
        learning_rates: None (keep the current rates, or the compiled
            optimizer's rate for every group), or one rate per group in
            public order: head first, then the groups from the top down.

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
            fresh = GroupedOptimizer.from_config(grouped.get_config())
            fresh.group_of = group_of
            fresh.build(candidates)
            pending = grouped.pending_state
            if pending is not None and len(pending) == len(fresh.variables):
                for variable, value in zip(fresh.variables, pending):
                    variable.assign(value)
            else:
                _copy_state(grouped, fresh)
            grouped = fresh
    else:
        if isinstance(optimizer, GroupedOptimizer):
            template = optimizer.optimizers[-1]
            rates = [optimizer.learning_rates[-1]] * (len(groups) + 1)
        else:
            _check_supported(optimizer)
            template = optimizer
            rates = [compiled_learning_rate(model)] * (len(groups) + 1)
        optimizer_map = keras.optimizers.OptimizerMap(
            _clone(template, _initial(rates[-1]), "head"),
            {
                key: _clone(template, _initial(rates[i]), f"group_{i}")
                for i, key in enumerate(keys)
            },
        )
        grouped = GroupedOptimizer(
            optimizer_map,
            learning_rates=rates,
            group_layers=names,
            loss_scale_factor=optimizer.loss_scale_factor,
            name=f"grouped_{template.name}",
        )
        grouped.group_of = group_of
        grouped.build(candidates)
        _copy_state(optimizer, grouped)

    if learning_rates is not None:
        # Public order (head, top ... bottom) -> inner order (bottom ... top, head).
        grouped.learning_rates = list(reversed(learning_rates[1:])) + [
            learning_rates[0]
        ]
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


def check_backend(caller):
    if keras.backend.backend() == "jax":
        raise ValueError(
            f"`{caller}` changes which variables train, and their rates, "
            "inside one `fit`; the JAX trainer fixes both when `fit` starts. "
            "Use the TensorFlow or PyTorch backend. "
            f"Received: backend={keras.backend.backend()!r}"
        )


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
