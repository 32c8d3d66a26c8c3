"""Gradient reversal layer (Ganin & Lempitsky, 2015)."""

import keras
from keras import ops

from keras_transfer._validation import check_int
from keras_transfer._validation import check_nonnegative


def _check_factor(factor):
    return check_nonnegative(factor, "factor")


@keras.saving.register_keras_serializable(package="keras_transfer")
class GradientReversal(keras.layers.Layer):
    """Identity on the forward pass, gradient times `-factor` on the backward pass.

    Placed between a feature extractor and a domain classifier, it makes the
    feature extractor *maximise* the domain loss while the classifier
    minimises it, which is the adversarial game of DANN. The factor (the
    `lambda` of the paper) lives in a non-trainable variable.

    The factor can follow a schedule computed *inside* the compiled train
    step (so it reaches the step on every backend, with any
    `steps_per_execution`, without a host round trip): after
    `set_schedule(total_steps, ...)`, each training call uses
    `factor = schedule(p)` with `p = min(step / total_steps, 1)`, `step` the
    number of scheduled training calls made before it, then adds one to
    `step`. `step` and the schedule are non-trainable variables, saved with
    the model, so training resumed after `load_model` or
    `keras.callbacks.BackupAndRestore` continues the schedule where it
    stopped. `keras_transfer.callbacks.GradientReversalScheduler` sets the
    schedule from `fit`'s epochs and steps. Calls with `training=False` use
    the current factor and do not advance the schedule.

    Args:
        factor: float >= 0, the initial gradient multiplier `lambda`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a tensor of any shape.
        training: Python bool; only training calls advance the schedule.

    Returns:
        `inputs`, unchanged.

    Example:

    >>> import numpy as np
    >>> layer = GradientReversal(factor=0.5)
    >>> x = np.ones((2, 3), "float32")
    >>> bool((keras.ops.convert_to_numpy(layer(x)) == x).all())
    True

    Reference:
        [Ganin & Lempitsky, 2015](https://arxiv.org/abs/1409.7495),
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html).
    """

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self._initial_factor = _check_factor(factor)
        self._schedule_fn = None
        self.supports_masking = True

    def build(self, input_shape):
        def scalar(name, value):
            # float32 even under mixed precision; one writer under
            # tf.distribute (every replica computes the same value).
            return self.add_weight(
                name=name,
                shape=(),
                dtype="float32",
                trainable=False,
                initializer=keras.initializers.Constant(value),
                aggregation="only_first_replica",
            )

        self.factor_variable = scalar("factor", self._initial_factor)
        # Schedule: off while `schedule_steps` is 0. `schedule_gamma` 0 means
        # "constant `schedule_max_factor`", > 0 the DANN sigmoid.
        self.schedule_steps = scalar("schedule_steps", 0.0)
        self.schedule_gamma = scalar("schedule_gamma", 0.0)
        self.schedule_max_factor = scalar("schedule_max_factor", 0.0)
        self.schedule_step = scalar("schedule_step", 0.0)

    def _scheduled_factor(self):
        steps = ops.convert_to_tensor(self.schedule_steps)
        step = ops.convert_to_tensor(self.schedule_step)
        active = ops.greater(steps, 0.0)
        progress = ops.minimum(step / ops.maximum(steps, 1.0), 1.0)
        if self._schedule_fn is not None:
            value = ops.cast(self._schedule_fn(progress), "float32")
        else:
            gamma = ops.convert_to_tensor(self.schedule_gamma)
            sigmoid = 2.0 / (1.0 + ops.exp(-gamma * progress)) - 1.0
            value = ops.convert_to_tensor(self.schedule_max_factor) * ops.where(
                ops.greater(gamma, 0.0), sigmoid, 1.0
            )
        factor = ops.where(
            active, value, ops.convert_to_tensor(self.factor_variable)
        )
        self.factor_variable.assign(factor)
        self.schedule_step.assign(step + ops.cast(active, "float32"))
        return factor

    def call(self, inputs, training=None):
        if training:
            factor = self._scheduled_factor()
        else:
            factor = ops.convert_to_tensor(self.factor_variable)
        factor = ops.cast(factor, inputs.dtype)

        @ops.custom_gradient
        def reverse(x):
            def grad(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                return ops.negative(upstream) * factor

            return x, grad

        return reverse(inputs)

    @property
    def factor(self):
        """The current factor `lambda` (a Python float, read on the host)."""
        if not self.built:
            return self._initial_factor
        return float(ops.convert_to_numpy(self.factor_variable))

    def _check_writable(self):
        # On JAX, `fit` holds the variables' values in its own state during
        # an epoch; a write now would be overwritten at the epoch's end.
        try:
            purged = self.factor_variable.value is None
        except TypeError:  # Keras 3.15 on JAX: no value to autocast
            purged = True
        if purged:
            raise RuntimeError(
                "`GradientReversal` cannot be changed from inside a JAX `fit` "
                "without syncing first: call `model.jax_state_sync()` before "
                "`set_factor` / `set_schedule` in your callback, or use "
                "`keras_transfer.callbacks.GradientReversalScheduler`, which "
                "computes the factor inside the train step."
            )

    def set_factor(self, factor):
        """Sets `lambda` to `factor` (float >= 0) and stops any schedule."""
        factor = _check_factor(factor)
        if not self.built:
            self._initial_factor = factor
            return
        self._check_writable()
        self.factor_variable.assign(factor)
        self.schedule_steps.assign(0.0)

    def set_schedule(
        self, total_steps, gamma=10.0, max_factor=1.0, schedule=None, step=None
    ):
        """Makes training calls follow a schedule of the progress `p`.

        `factor = max_factor * (2 / (1 + exp(-gamma p)) - 1)` (DANN) when
        `gamma > 0`, `max_factor` when `gamma == 0`, or `schedule(p)` when a
        callable is given (called inside the train step on a float32 scalar
        tensor: write it with `keras.ops` or plain arithmetic).

        Args:
            total_steps: int > 0, the number of training steps for `p = 1`.
            gamma: float >= 0.
            max_factor: float >= 0.
            schedule: optional callable `p -> factor`.
            step: optional int >= 0, the step to continue from; None keeps
                the saved count.

        Returns:
            True when the callable changed, so a compiled train function
            must be rebuilt (`model.make_train_function(force=True)`).
        """
        total_steps = check_int(total_steps, "total_steps")
        gamma = check_nonnegative(gamma, "gamma")
        max_factor = check_nonnegative(max_factor, "max_factor")
        if schedule is not None and not callable(schedule):
            raise ValueError(
                "`schedule` must be a callable of the progress or None. "
                f"Received: schedule={schedule!r}"
            )
        if not self.built:
            raise ValueError(
                "`GradientReversal.set_schedule` needs a built layer: call "
                "the model once (or build it) first."
            )
        self._check_writable()
        self.schedule_steps.assign(float(total_steps))
        self.schedule_gamma.assign(gamma)
        self.schedule_max_factor.assign(max_factor)
        if step is not None:
            self.schedule_step.assign(float(check_int(step, "step", 0)))
        changed = schedule is not self._schedule_fn
        self._schedule_fn = schedule
        return changed

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
