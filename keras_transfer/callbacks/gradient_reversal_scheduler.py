"""Schedules the `factor` (lambda) of `GradientReversal` layers during `fit`."""

import math

import keras

from keras_transfer._validation import check_int
from keras_transfer._validation import check_nonnegative
from keras_transfer.layers.gradient_reversal import GradientReversal

_SCHEDULES = ("dann", "constant")


def dann_factor(progress, gamma=10.0, max_factor=1.0):
    """DANN's schedule `max_factor * (2 / (1 + exp(-gamma p)) - 1)`, `p` in [0, 1].

    Rises from 0 at `p = 0` to about `max_factor` at `p = 1` (0.9999 of it for
    `gamma = 10`), which keeps the noisy early domain gradients small.

    Reference:
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html), sec. 5.2.1.
    """
    return max_factor * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


def _find_reversal_layers(model):
    found, stack, seen = [], list(model.layers), set()
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, GradientReversal):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []))
    return found


@keras.saving.register_keras_serializable(package="keras_transfer")
class GradientReversalScheduler(keras.callbacks.Callback):
    """Schedules the reversal factor of `GradientReversal` layers per step.

    With `p = step / total_steps` the training progress from 0 to 1, the
    factor of each training step becomes

    - `"dann"`: `max_factor * (2 / (1 + exp(-gamma p)) - 1)` (Ganin et al.);
    - `"constant"`: `max_factor` throughout;
    - a callable `schedule(p) -> float >= 0`, called inside the train step on
      a float32 scalar tensor (plain arithmetic or `keras.ops`, e.g.
      `lambda p: keras.ops.minimum(1.0, 2.0 * p)`); it is checked on the host
      for finite, non-negative values at 101 points of `[0, 1]` first.

    The schedule is computed inside the compiled train step from the layer's
    saved step counter (`GradientReversal.set_schedule`), so it reaches the
    step on TensorFlow and JAX alike, with any `steps_per_execution`, and a
    run resumed after `load_model` or `keras.callbacks.BackupAndRestore`
    continues where it stopped: `step` counts the scheduled steps done, and
    `total_steps` defaults to `epochs * steps_per_epoch` of the `fit` call,
    with `epochs` counted from 0 as Keras does (so `fit(...,
    initial_epoch=k)` continues a run planned for `epochs`). The factor is
    added to the batch and epoch logs as `grl_factor` (the factor of the
    batch's last step), so a `keras.callbacks.TensorBoard` placed *after*
    this callback records it.

    Args:
        schedule: `"dann"`, `"constant"` or a callable of the progress `p`.
        gamma: float > 0, steepness of the `"dann"` schedule.
        max_factor: float >= 0, the factor reached at the end.
        layers: the `GradientReversal` layers to drive; None finds every one in
            the model (there must be at least one).
        total_steps: int > 0, steps of the whole run; needed only when `fit`
            cannot know the steps per epoch (a dataset of unknown length
            without `steps_per_epoch`).

    Example:

    ```python
    model.fit(data, epochs=30, callbacks=[
        keras_transfer.callbacks.GradientReversalScheduler("dann", gamma=10.0),
        keras.callbacks.TensorBoard("tensorboard_logs/dann"),
    ])
    ```

    Reference:
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html).
    """

    def __init__(
        self,
        schedule="dann",
        gamma=10.0,
        max_factor=1.0,
        layers=None,
        total_steps=None,
    ):
        super().__init__()
        if not callable(schedule) and schedule not in _SCHEDULES:
            raise ValueError(
                f"`schedule` must be one of {_SCHEDULES} or a callable of the "
                f"training progress. Received: schedule={schedule!r}"
            )
        if (
            isinstance(gamma, bool)
            or not isinstance(gamma, (int, float))
            or not math.isfinite(gamma)
            or gamma <= 0
        ):
            raise ValueError(
                f"`gamma` must be a positive number. Received: gamma={gamma!r}"
            )
        max_factor = check_nonnegative(max_factor, "max_factor")
        if total_steps is not None:
            total_steps = check_int(total_steps, "total_steps")
        if layers is not None:
            layers = list(layers)
            bad = [l for l in layers if not isinstance(l, GradientReversal)]
            if bad or not layers:
                raise ValueError(
                    "`layers` must be a non-empty list of `GradientReversal` "
                    f"layers. Received: layers={layers!r}"
                )
        self.schedule = schedule
        self.gamma = float(gamma)
        self.max_factor = max_factor
        self.layers = layers
        self.total_steps = total_steps
        self.factor = None

    def factor_at(self, progress):
        """The factor for a progress `p` in [0, 1] (a Python float)."""
        if self.schedule == "dann":
            return dann_factor(progress, self.gamma, self.max_factor)
        if self.schedule == "constant":
            return self.max_factor
        value = self.schedule(progress)
        try:
            value = float(value)
        except (TypeError, ValueError):
            pass
        try:
            return check_nonnegative(value, "factor")
        except ValueError:
            raise ValueError(
                "The `schedule` callable must return a finite, non-negative "
                f"number. Received: schedule({progress:.4f})={value!r}"
            ) from None

    def on_train_begin(self, logs=None):
        if self.layers is None:
            found = _find_reversal_layers(self.model)
            if not found:
                raise ValueError(
                    "`GradientReversalScheduler` found no `GradientReversal` "
                    f"layer in model '{self.model.name}'. Add one or pass "
                    "`layers=` explicitly."
                )
            self._layers = found
        else:
            self._layers = self.layers
        epochs = self.params.get("epochs") or 1
        steps = self.params.get("steps")
        if self.total_steps is not None:
            self._total = self.total_steps
        elif steps:
            self._total = steps * epochs
        else:
            raise ValueError(
                "`GradientReversalScheduler` needs the number of steps: the "
                "dataset has unknown length. Pass `steps_per_epoch=` to `fit` "
                "or `total_steps=` to the scheduler. Received: "
                f"steps={steps!r}, total_steps={self.total_steps!r}"
            )
        fn = None
        if callable(self.schedule):
            fn = self.schedule
            for i in range(101):
                self.factor_at(i / 100)
        gamma = self.gamma if self.schedule == "dann" else 0.0
        rebuild = False
        for layer in self._layers:
            if not layer.built:
                # Subclassed models build on the first step; the schedule's
                # variables do not depend on the input shape.
                layer.build(None)
            rebuild |= layer.set_schedule(
                self._total, gamma=gamma, max_factor=self.max_factor,
                schedule=fn,
            )
        if rebuild:
            # The callable is traced into the train step.
            self.model.make_train_function(force=True)
        self._start = self._read_step()
        self.factor = self.factor_at(min(self._start / self._total, 1.0))

    def _read_step(self):
        step = self._layers[0].schedule_step
        return int(round(float(keras.ops.convert_to_numpy(step))))

    def on_epoch_begin(self, epoch, logs=None):
        # Variables are readable here on every backend (JAX syncs its state
        # back at the end of each epoch).
        self._start = self._read_step()

    def on_train_batch_end(self, batch, logs=None):
        # The factor of the batch's last step, mirrored on the host.
        progress = min((self._start + batch) / self._total, 1.0)
        self.factor = self.factor_at(progress)
        if logs is not None:
            logs["grl_factor"] = self.factor

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.factor is not None:
            logs["grl_factor"] = self.factor

    def get_config(self):
        if callable(self.schedule) or self.layers is not None:
            raise NotImplementedError(
                "`GradientReversalScheduler` with a callable `schedule` or "
                "explicit `layers` has no JSON config. Received: "
                f"schedule={self.schedule!r}, layers={self.layers!r}"
            )
        return {
            "schedule": self.schedule,
            "gamma": self.gamma,
            "max_factor": self.max_factor,
            "layers": None,
            "total_steps": self.total_steps,
        }
