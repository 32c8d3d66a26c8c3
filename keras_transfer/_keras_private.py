"""The private Keras APIs keras-transfer reads, in one place.

Keras has no public recursive walk over sub-layers (`Model.layers` stops at
the first level and misses layers nested in subclassed blocks), and no public
way to tell the variables a layer trains when unfrozen (BatchNormalization's
`gamma`) from its state (the moving mean): freezing sets `trainable=False` on
both. Keras keeps them apart in `Layer._trainable_variables` and
`Layer._non_trainable_variables`. `tests/test_keras_private.py` pins the
behaviour relied on here, so a Keras change fails there first.

(The grouped optimizer's use of `MultiOptimizer` internals is isolated in
`keras_transfer/callbacks/_grouped_optimizer.py`, with its own guard tests.)
"""

import contextlib


def all_layers(layer, include_self=True):
    """`layer` (if `include_self`) and every sub-layer, recursively, once."""
    return list(layer._flatten_layers(include_self=include_self, recursive=True))


def children(layer):
    """The layers `layer` tracks directly: a model's layers, but also the
    sub-layers of a subclassed layer or wrapper (e.g. `InferenceMode`'s
    wrapped base), which `Model.layers` does not list."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def own_variables(layer):
    """The variables created by `layer` itself, not by its sub-layers."""
    return list(layer._trainable_variables) + list(
        layer._non_trainable_variables
    )


def trainable_capable(layer):
    """The variables of `layer` (sub-layers included) that train when their
    layer is trainable, frozen or not, in `layer.weights` order."""
    ids = set()
    for sub in all_layers(layer):
        ids.update(id(v) for v in sub._trainable_variables)
    seen, result = set(), []
    for variable in layer.weights:
        if id(variable) in ids and id(variable) not in seen:
            seen.add(id(variable))
            result.append(variable)
    return result


def layer_seed_generator(layer):
    """The seed generator a Keras random preprocessing layer draws from now.

    Inside `tf.data` under another backend this is a TensorFlow generator, not
    `layer.generator`; Keras's own layers pick it this way.
    """
    return layer._get_seed_generator(layer.backend._backend)


def replace_sublayer(parent, attr, index, old, new):
    """Puts `new` where `old` is on `parent` (`parent.attr` or
    `parent.attr[index]`).

    The old layer must leave `parent._tracker` (or its weights would be
    listed twice) and the tracker, locked after `build`, must accept the new
    one. No public API swaps a sublayer of a built layer.
    """
    tracker = parent._tracker
    was_locked = tracker.locked
    tracker.untrack(old)
    tracker.unlock()
    try:
        if index is None:
            setattr(parent, attr, new)
        else:
            getattr(parent, attr)[index] = new
            tracker.track(new)
    finally:
        if was_locked:
            tracker.lock()


def replace_graph_node(model, old, new):
    """Makes the graph of Functional `model` call `new` where it calls `old`.

    For Functional subclasses (keras-hub backbones) that `clone_model`
    cannot rebuild; they serialize their constructor arguments, not their
    graph, so only calling (the nodes' `operation`) and tracking (the
    operation lists and `_tracker`) need to change.
    """
    for depth, nodes in model._nodes_by_depth.items():
        for node in nodes:
            if node.operation is old:
                node.operation = new
    model._operations = [new if op is old else op for op in model._operations]
    for depth, ops in model._operations_by_depth.items():
        model._operations_by_depth[depth] = [
            new if op is old else op for op in ops
        ]
    # In place in the tracked list: `model.weights` keeps its order.
    model._tracker.replace_tracked_value("layers", old, new)


def compile_arguments(model):
    """The keyword arguments of the last `model.compile(...)` call, as given
    (objects, not their serialized configs)."""
    return dict(model._compile_config.config)


def monitorable_group(metrics, name="keras_transfer_metrics"):
    """A `Metric` reporting each of `metrics` under its own name, of the class
    (`compile_utils.MetricsList`) whose members Keras's `EarlyStopping` /
    `ModelCheckpoint` look into to infer `mode` from a metric's `_direction`
    (`keras/src/callbacks/monitor_callback.py`); Keras offers no public hook.
    `MetricsList` itself has no `result()`, which `Model.get_metrics_result`
    calls: it is added here."""
    from keras.src.trainers import compile_utils

    class _Group(compile_utils.MetricsList):
        def result(self):
            return self.get_result()

    return _Group(list(metrics), name=name)


@contextlib.contextmanager
def unlocked_tracker(layer):
    """Lets `layer.add_weight` create variables on a built `layer`.

    Keras locks a layer's attribute tracker after `build` (adding state
    later raises); a LoRA layer that gains a named adapter
    (`keras_transfer.strategies.add_lora_adapter`) creates its new factors
    after `build`. The lock is restored afterwards.
    """
    tracker = layer._tracker
    was_locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if was_locked:
            tracker.lock()


def untrack_variable(layer, variable):
    """Removes `variable` from `layer`'s weights (a deleted named adapter).

    No public API drops a variable from a built layer.
    """
    layer._untrack_variable(variable)


def backup_files(callback):
    """The files a `keras.callbacks.BackupAndRestore` writes: (weights,
    training metadata, previous weights, previous metadata). Keras keeps
    their paths in private attributes (`keras/src/callbacks/backup_and_restore.py`)
    and offers no public way to ask whether a backup exists or at which epoch
    it resumes."""
    return (
        callback._weights_path,
        callback._training_metadata_path,
        callback._prev_weights_path,
        callback._prev_training_metadata_path,
    )


def backup_epoch(callback):
    """The epoch a `BackupAndRestore` would resume at (0: no backup), read
    from its metadata file (JSON with an `"epoch"` key)."""
    import json
    import os

    path = backup_files(callback)[1]
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])



def build_from_batch(model, data_batch):
    """Builds `model`'s variables, compiled loss and metrics and optimizer
    from one `(x, y, sample_weight)` batch, symbolically (no step runs).

    Keras's JAX trainer does this at the start of `fit`, before any callback's
    `on_train_begin`; its TensorFlow trainer does it only under a
    `tf.distribute` strategy and otherwise builds inside the first traced
    step, so callbacks that read or restore weights at train begin
    (`BackupAndRestore`) meet an unbuilt subclassed model there.
    """
    model._symbolic_build(data_batch=data_batch)
