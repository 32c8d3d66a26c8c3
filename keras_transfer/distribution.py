"""Scale-out with `keras.distribution`: checks and LoRA-aware layouts.

`keras.distribution` (Keras's multi-device API: `DataParallel`,
`ModelParallel`, `LayoutMap`, multi-host through
`keras.distribution.initialize`) runs on the JAX backend only: its
TensorFlow module is an unfinished DTensor prototype marked "DO NOT USE" and
PyTorch has none. The package's models (`DomainAdversarialModel`,
`Distiller`, `MultiTaskModel`, ...) compute their losses with `keras.ops`
over the whole batch inside the compiled step, so under `DataParallel` the
batch reductions are global and training gives the single-device numbers
(tested in `tests/test_distribution.py` on 2 host devices).

`tf.distribute.MirroredStrategy` is another matter: Keras 3 runs the
`train_step` once per replica, on that replica's share of the batch, and
sums the replicas' gradients. It divides a loss by the number of replicas
only inside `keras.losses.Loss.__call__` and for `model.losses`; a term
computed with plain ops (a KL term, a learned task weight's regulariser)
is not divided, and a statistic of the whole batch (MMD or CORAL between
the source and target batches, a mean over the unmasked labels) is taken
per replica. Measured on 2 logical CPUs (`tests/distribution_runs.py`),
after 4 SGD steps the weights of `DomainAdversarialModel`,
`DiscrepancyAlignmentModel`, `Distiller` and `MultiTaskModel` are off by
0.03, 0.08, 0.05 and 0.2 (a plain compiled Keras model: 7e-9).
`check_tf_distribute` refuses such a model with a clear error instead.
"""

import re

import keras
import numpy as np

from keras_transfer._keras_private import all_layers
from keras_transfer.layers import Adapter
from keras_transfer.layers._lora_base import LoRABase
from keras_transfer.layers.lora_einsum_dense import LoRAEinsumDense


def _is_distribution(value):
    # `keras.distribution` exports `DataParallel` and `ModelParallel` but not
    # their base class; accept any object with the base class's interface.
    return all(
        hasattr(value, name)
        for name in ("device_mesh", "batch_dim_name", "scope",
                     "get_variable_layout")
    )


def check_backend(feature="`keras.distribution`"):
    """Raises unless the running Keras backend supports `keras.distribution`.

    Args:
        feature: what needs it, for the message.

    Raises:
        ValueError: on a backend other than JAX.
    """
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            f"{feature} needs the JAX backend: `keras.distribution` runs on "
            "JAX only (Keras's TensorFlow module for it is an unfinished "
            "DTensor prototype, PyTorch has none). Set KERAS_BACKEND=jax "
            "before importing Keras; on TensorFlow, data parallelism is "
            "`tf.distribute.MirroredStrategy` (see `check_tf_distribute`). "
            f"Received: backend={backend!r}, allowed: 'jax'"
        )


def batch_shards(distribution):
    """Number of pieces `distribution` cuts each global batch into.

    Args:
        distribution: a `keras.distribution.Distribution`.

    Returns:
        int, the size of the mesh axis named `distribution.batch_dim_name`.
    """
    mesh = distribution.device_mesh
    axis = distribution.batch_dim_name
    if axis not in mesh.axis_names:
        raise ValueError(
            f"`batch_dim_name` {axis!r} is not an axis of the device mesh. "
            f"Allowed: {list(mesh.axis_names)}. Received: "
            f"batch_dim_name={axis!r}"
        )
    return int(mesh.shape[list(mesh.axis_names).index(axis)])


def check_distribution(distribution, batch_size=None, num_samples=None):
    """Checks that `fit` can run under `distribution` before it starts.

    Each global batch is split along its first axis over the devices of the
    mesh's batch axis; JAX refuses a batch whose size that count does not
    divide, with an error from deep inside `fit` (mid-epoch when only the
    last, partial batch is uneven). This check says so up front.

    Args:
        distribution: a `keras.distribution.Distribution` (`DataParallel`,
            `ModelParallel`).
        batch_size: optional int, the global batch size given to `fit`.
        num_samples: optional int, the number of training examples; with
            `batch_size`, the last partial batch
            (`num_samples % batch_size` examples) is checked too.

    Returns:
        int, the number of batch shards (see `batch_shards`).

    Raises:
        ValueError: on a backend other than JAX, an argument of the wrong
            type, or a batch the batch shards do not divide.
    """
    if not _is_distribution(distribution):
        raise ValueError(
            "`distribution` must be a `keras.distribution.Distribution` "
            "(`DataParallel`, `ModelParallel`). "
            f"Received: distribution={distribution!r}"
        )
    check_backend()
    shards = batch_shards(distribution)
    sizes = []
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)
        ) or batch_size < 1:
            raise ValueError(
                "`batch_size` must be a positive integer. "
                f"Received: batch_size={batch_size!r}"
            )
        sizes.append(("batch_size", int(batch_size)))
        if num_samples is not None:
            last = int(num_samples) % int(batch_size)
            if last:
                sizes.append(("the last batch", last))
    for what, size in sizes:
        if size % shards:
            hint = (
                f"drop the last {size} examples (`drop_remainder=True` on a "
                "tf.data pipeline) or pick a batch size that divides "
                "the data"
                if what == "the last batch"
                else f"use a multiple of {shards}"
            )
            raise ValueError(
                f"The batch is split over {shards} devices (mesh axis "
                f"{distribution.batch_dim_name!r}), so every batch size must "
                f"be a multiple of {shards}; {what} holds {size} examples. "
                f"Fix: {hint}. Received: batch_size={batch_size!r}, "
                f"num_samples={num_samples!r}"
            )
    return shards


def check_tf_distribute(model):
    """Raises if `model` would train wrongly under a `tf.distribute` strategy.

    Call it where a model with its own `train_step` / `compute_loss` is
    compiled or fitted (see the module docstring for what goes wrong under
    `tf.distribute.MirroredStrategy` in Keras 3). Use the JAX backend with
    `keras.distribution.DataParallel` instead: there the whole batch is one
    computation and the numbers equal a single device's.

    Args:
        model: the `keras.Model` about to train.

    Raises:
        ValueError: when a `tf.distribute` strategy other than the default
            one is active (TensorFlow backend only; elsewhere it does
            nothing).
    """
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return
    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync <= 1:
        return
    raise ValueError(
        f"`{type(model).__name__}` computes its own loss terms in its "
        "training step, which `tf.distribute` strategies in Keras 3 run per "
        "replica without rescaling them, so the gradients would be wrong. "
        "Train it on the JAX backend with "
        "`keras.distribution.DataParallel` (same numbers as one device), or "
        "outside the strategy. Received: strategy="
        f"{type(strategy).__name__} with "
        f"{strategy.num_replicas_in_sync} replicas"
    )


def _axes(layout):
    if layout is None:
        return None
    return tuple(getattr(layout, "axes", layout))


def _axis_size(mesh, axis):
    names = list(mesh.axis_names)
    if axis is None:
        return 1
    parts = axis if isinstance(axis, (tuple, list)) else (axis,)
    size = 1
    for part in parts:
        if part not in names:
            raise ValueError(
                f"Layout axis {part!r} is not an axis of the device mesh. "
                f"Allowed: {names} or None. Received: axis={part!r}"
            )
        size *= int(mesh.shape[names.index(part)])
    return size


def _fit_to_shape(mesh, axes, shape):
    """`axes` with every mesh axis that does not divide its dimension
    replaced by None (for layouts derived here, never for the user's)."""
    return tuple(
        axis if dim % _axis_size(mesh, axis) == 0 else None
        for axis, dim in zip(axes, shape)
    )


def _lora_layouts(layer, kernel_axes, own):
    """(A axes, B axes) consistent with the base kernel's `kernel_axes`:
    A is sharded like the kernel's input (contracted) axes, B like its
    output axes, so `x A B` is laid out like `x W`."""
    if isinstance(layer, LoRAEinsumDense) and not own:
        lhs = layer.equation.split("->")[0]
        inputs, kernel = lhs.split(",")
        in_k = [c for c in kernel if c in inputs]
        out_k = [c for c in kernel if c not in inputs]
        a = tuple(kernel_axes[kernel.index(c)] for c in in_k) + (None,)
        b = (None,) + tuple(kernel_axes[kernel.index(c)] for c in out_k)
        return a, b
    # LoRADense, LoRAConv2D and Keras's own `enable_lora` (Dense,
    # EinsumDense, Conv): A = kernel.shape[:-1] + (r,), B = (r, kernel[-1]).
    return tuple(kernel_axes[:-1]) + (None,), (None, kernel_axes[-1])


def _roles(model):
    """{id(variable): (role, layer)} for the variables of PEFT layers."""
    roles = {}
    for layer in all_layers(model):
        if isinstance(layer, LoRABase):
            base = layer.base_layer
            roles[id(base.kernel)] = ("base", layer)
            if getattr(base, "bias", None) is not None:
                roles[id(base.bias)] = ("base", layer)
            roles[id(layer.lora_kernel_a)] = ("lora_a", layer)
            roles[id(layer.lora_kernel_b)] = ("lora_b", layer)
        elif getattr(layer, "lora_enabled", False):
            roles[id(layer.lora_kernel_a)] = ("keras_lora_a", layer)
            roles[id(layer.lora_kernel_b)] = ("keras_lora_b", layer)
        elif isinstance(layer, Adapter):
            for sub in (layer.down, layer.up):
                for variable in sub.weights:
                    roles[id(variable)] = ("adapter", layer)
    return roles


def _canonical(path):
    """The path the variable had before LoRA wrapped its layer:
    `.../query/base/kernel` -> `.../query/kernel`."""
    return re.sub(r"/base/(kernel|bias)$", r"/\1", path)


def peft_layout_map(layout_map, model):
    """Extends a layout map written for a plain model to its PEFT version.

    Layout maps such as keras-hub's `Backbone.get_layout_map(device_mesh)`
    name the kernels of the plain model (`".*query/kernel"`). After
    `strategies.apply_lora` a kernel lives at `.../query/base/kernel` and
    the map no longer shards it (the frozen base, the bulk of the memory,
    ends up replicated on every device); after Keras's own `enable_lora`
    the map names neither `lora_kernel_a` nor `lora_kernel_b`, so both are
    replicated and `x A B` does not come out laid out like `x W`; a pattern
    loose enough to match them (`".*dense.*"`) hands the `(d, r)` factor
    the kernel's layout. The returned map gives:

    - each LoRA layer's frozen base kernel and bias the layout the original
      map gives the plain layer's `kernel` / `bias`;
    - `lora_kernel_a` the kernel's layout on its input (contracted) axes and
      nothing on the rank axis, and `lora_kernel_b` the kernel's layout on
      its output axes: `x A B` is laid out like `x W` and needs no extra
      communication (a mesh axis that does not divide a LoRA dimension is
      dropped, i.e. that dimension is replicated);
    - `Adapter` weights (small bottlenecks) replicated, unless a pattern of
      the map names them;
    - every other variable what the original map gives it.

    Entries are exact variable paths of `model`, so build the PEFT model
    once (on the host), compute the map, and create the sharded copy under
    the distribution with `distribute_model`.

    Args:
        layout_map: a `keras.distribution.LayoutMap` for the plain model.
        model: the built PEFT model (after `apply_lora`, `add_adapters` or
            Keras's `enable_lora`).

    Returns:
        A new `keras.distribution.LayoutMap` on the same device mesh.

    Raises:
        ValueError: when a pattern of `layout_map` matches no variable of
            `model`, a path matches two patterns, or a layout does not fit
            its variable (wrong rank, a mesh axis that does not divide the
            dimension).

    Example:

    ```python
    mesh = keras.distribution.DeviceMesh((1, 2), ("batch", "model"))
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*intermediate_dense/kernel"] = (None, "model")
    layout_map[".*output_dense/kernel"] = ("model", None)
    model, _ = keras_transfer.strategies.apply_lora(backbone, lora_rank=8)
    distribution = keras.distribution.ModelParallel(
        layout_map=keras_transfer.distribution.peft_layout_map(
            layout_map, model),
        batch_dim_name="batch",
    )
    sharded = keras_transfer.distribution.distribute_model(model, distribution)
    ```
    """
    if not isinstance(layout_map, keras.distribution.LayoutMap):
        raise ValueError(
            "`layout_map` must be a `keras.distribution.LayoutMap`. "
            f"Received: layout_map={layout_map!r}"
        )
    if not isinstance(model, keras.layers.Layer) or not model.built:
        raise ValueError(
            "`model` must be a built Keras model (the PEFT model whose "
            f"variables the map lays out). Received: model={model!r}"
        )
    mesh = layout_map.device_mesh
    if mesh is None:
        raise ValueError(
            "`layout_map` must have a device mesh: create it as "
            "`keras.distribution.LayoutMap(device_mesh)`. "
            "Received: layout_map.device_mesh=None"
        )
    patterns = list(layout_map.keys())
    used = set()

    def lookup(path):
        # Not `path in layout_map`: `LayoutMap.__getitem__` answers None for
        # a missing key, so `in` is always True.
        if path in patterns:
            used.add(path)
            return path, layout_map[path]
        hits = [p for p in patterns if re.fullmatch(p, path)]
        if len(hits) > 1:
            raise ValueError(
                f"Variable path {path!r} matches several patterns of "
                f"`layout_map`: {hits}. Make each path match at most one "
                "pattern."
            )
        if hits:
            used.add(hits[0])
            return hits[0], layout_map[hits[0]]
        return None, None

    def check_fits(path, shape, axes, pattern):
        if len(axes) != len(shape):
            raise ValueError(
                f"Pattern {pattern!r} of `layout_map` gives variable "
                f"{path!r} of shape {tuple(shape)} the layout {axes}, which "
                f"has {len(axes)} axes for a {len(shape)}-D variable. "
                "Allowed: one entry (a mesh axis name or None) per dimension."
            )
        for axis, dim in zip(axes, shape):
            size = _axis_size(mesh, axis)
            if dim % size:
                raise ValueError(
                    f"Pattern {pattern!r} of `layout_map` shards dimension "
                    f"{dim} of variable {path!r} (shape {tuple(shape)}) over "
                    f"mesh axis {axis!r} of {size} devices, which does not "
                    f"divide it. Received: layout={axes}; allowed: axes "
                    "whose device count divides the dimension, or None."
                )

    roles = _roles(model)
    entries = {}
    seen = set()
    for variable in model.weights:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        path, shape = variable.path, tuple(variable.shape)
        role, layer = roles.get(id(variable), (None, None))
        axes = None
        if role in ("lora_a", "lora_b", "keras_lora_a", "keras_lora_b"):
            own = role.startswith("lora")
            if own:
                kernel = layer.base_layer.kernel
                kernel_path = _canonical(kernel.path)
            else:
                # With Keras's LoRA on, `layer.kernel` is the merged tensor;
                # the kernel variable sits next to `lora_kernel_a`.
                kernel = layer.lora_kernel_a
                kernel_path = re.sub(r"lora_kernel_[ab]$", "kernel", path)
            _, kernel_layout = lookup(kernel_path)
            kernel_axes = _axes(kernel_layout)
            if kernel_axes is not None:
                a, b = _lora_layouts(layer, kernel_axes, not own)
                axes = _fit_to_shape(mesh, a if role.endswith("a") else b, shape)
        else:
            pattern, layout = lookup(
                _canonical(path) if role == "base" else path
            )
            if layout is None and role == "base":
                pattern, layout = lookup(path)
            axes = _axes(layout)
            if axes is not None:
                check_fits(path, shape, axes, pattern)
        if axes is not None and any(a is not None for a in axes):
            entries[path] = axes
    # A model's variable paths may or may not start with its own name (a
    # `Sequential` built at construction prefixes it, the same model rebuilt
    # from its config does not), so each entry also answers without it.
    result = keras.distribution.LayoutMap(mesh)
    aliases = {}
    prefix = f"{model.name}/"
    for path, axes in entries.items():
        if path.startswith(prefix):
            short = path[len(prefix):]
            if short not in entries:
                aliases.setdefault(short, []).append(axes)
    for path, axes in list(entries.items()) + [
        (short, found[0]) for short, found in aliases.items()
        if len(found) == 1
    ]:
        # Escaped: `LayoutMap` also tries every key as a regular expression.
        result[re.escape(path)] = axes
    unused = [p for p in patterns if p not in used]
    if unused:
        paths = [v.path for v in model.weights]
        shown = paths[:12] + (["..."] if len(paths) > 12 else [])
        raise ValueError(
            f"Patterns of `layout_map` match no variable of model "
            f"'{model.name}': {unused}. A pattern must match a whole path "
            f"(`re.fullmatch`), such as one of {shown}. Fix or remove them."
        )
    return result


def distribute_model(model, distribution):
    """A copy of `model` whose variables are laid out by `distribution`.

    Variables take their layout when they are created, so the copy is
    rebuilt from `model`'s config under `distribution.scope()` (same layer
    names, so the same variable paths) and gets `model`'s weights.

    Args:
        model: a built `keras.Model` (registered custom objects, as every
            class of this package).
        distribution: a `keras.distribution.Distribution`, e.g. a
            `ModelParallel` with a `peft_layout_map`.

    Returns:
        The new model, built, not compiled (compile and fit it under
        `distribution.scope()`).
    """
    check_distribution(distribution)
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            f"`model` must be a built `keras.Model`. Received: model={model!r}"
        )
    config = keras.saving.serialize_keras_object(model)
    with distribution.scope():
        copy = keras.saving.deserialize_keras_object(config)
        if not copy.built:
            copy.build_from_config(model.get_build_config())
        if [tuple(v.shape) for v in copy.weights] != [
            tuple(v.shape) for v in model.weights
        ]:
            raise ValueError(
                f"The copy of model '{model.name}' rebuilt from its config "
                "does not have the same variables, so its weights cannot be "
                "copied over. Build the model under `distribution.scope()` "
                "yourself."
            )
        for target, source in zip(copy.weights, model.weights):
            target.assign(keras.ops.convert_to_numpy(source))
    return copy
