"""Extra gradient steps inside a JAX train step (private).

The JAX twin of `keras_transfer/backend/tensorflow.py` (see there why): the
steps run statelessly on the trainer's `state`, as Keras's JAX trainer
(`keras/src/backend/jax/trainer.py`) runs its own.
"""

import jax
import keras
from keras import ops


def extra_train_steps(model, state, data, steps, step_loss):
    """As the TensorFlow twin, on the trainer's `state` (trainable,
    non-trainable, optimizer and metrics values); returns the new state."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    trainable, non_trainable, optimizer_values, metrics_values = state
    optimizer = model.optimizer
    # Under a LossScaleOptimizer (mixed_float16), the extra steps scale the
    # loss by its current scale and update through the inner optimizer;
    # an update with non-finite gradients is skipped (the scale itself
    # is adjusted by step A, Keras's own step).
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    inner = optimizer.inner_optimizer if scaled else optimizer
    model_variables = model.trainable_variables
    optimizer_variables = optimizer.variables
    iteration_index = _index(optimizer_variables, inner.iterations)
    iterations = optimizer_values[iteration_index]
    scale = (
        optimizer_values[_index(optimizer_variables, optimizer.dynamic_scale)]
        if scaled
        else None
    )
    position = {id(v): i for i, v in enumerate(model_variables)}
    for step, variables in steps:
        index = [position[id(v)] for v in variables]

        def loss_fn(values, trainable, non_trainable):
            full = list(trainable)
            for i, value in zip(index, values):
                full[i] = value
            y_pred, non_trainable, losses = model.stateless_call(
                full, non_trainable, x, training=True, return_losses=True
            )
            loss = step_loss(step, y, y_pred, sample_weight, losses)
            if scale is not None:
                loss = loss * ops.cast(scale, loss.dtype)
            return loss, non_trainable

        old = [trainable[i] for i in index]
        (_, non_trainable), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(old, trainable, non_trainable)
        if scale is not None:
            grads = [g / ops.cast(scale, g.dtype) for g in grads]
        mapping = list(zip(model_variables, trainable)) + list(
            zip(optimizer_variables, optimizer_values)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            inner.apply(grads, variables)
        new_trainable = [
            _current(scope, v, value)
            for v, value in zip(model_variables, trainable)
        ]
        new_optimizer = [
            _current(scope, v, value)
            for v, value in zip(optimizer_variables, optimizer_values)
        ]
        if scale is not None:
            finite = ops.all(
                ops.stack([ops.all(ops.isfinite(g)) for g in grads])
            )
            new_trainable = [
                ops.where(finite, a, b)
                for a, b in zip(new_trainable, trainable)
            ]
            new_optimizer = [
                ops.where(finite, a, b)
                for a, b in zip(new_optimizer, optimizer_values)
            ]
        trainable, optimizer_values = new_trainable, new_optimizer
        optimizer_values[iteration_index] = iterations
    return trainable, non_trainable, optimizer_values, metrics_values



def _index(variables, variable):
    return next(i for i, v in enumerate(variables) if v is variable)


def _current(scope, variable, value):
    new = scope.get_current_value(variable)
    return value if new is None else new
