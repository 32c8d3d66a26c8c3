"""The one-cycle learning-rate policy as a Keras `LearningRateSchedule`."""

import math

import keras
from keras import ops

from keras_transfer._validation import check_positive


@keras.saving.register_keras_serializable(package="keras_transfer")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle policy: cosine warm-up to a peak, then cosine annealing.

    For `w = warmup_steps`, `T = total_steps`, `r = max_learning_rate`,
    `r_0 = r / div_factor` and `r_T = r / final_div_factor`, with
    `cos_ramp(a, b, p) = a + (b - a) * (1 + cos(pi * (1 - p))) / 2`
    (fastai's `SchedCos`: `a` at `p = 0`, `b` at `p = 1`):

    - step `t < w`: `cos_ramp(r_0, r, t / w)`;
    - `w <= t`: `cos_ramp(r, r_T, min((t - w) / (T - w), 1))`, so the rate
      stays at `r_T` after `total_steps`.

    The defaults are fastai's `fit_one_cycle` (`pct_start=0.25`, `div=25`,
    `div_final=1e5`). Smith's policy also cycles the momentum inversely
    (0.95 -> 0.85 -> 0.95); Keras optimizers take a float `beta_1` /
    `momentum`, so this schedule moves the rate only.

    Compile any optimizer with it; with `keras_transfer.callbacks.
    DiscriminativeLR` every group follows it times its factor.

    Args:
        max_learning_rate: positive float, the peak rate `r`.
        total_steps: int, the number of steps of the cycle (`epochs *
            steps_per_epoch`); must exceed `warmup_steps`.
        warmup_steps: int >= 0, steps of the warm-up. None takes
            `round(0.25 * total_steps)`.
        div_factor: positive float, `r / r_0`. Defaults to 25.
        final_div_factor: positive float, `r / r_T`. Defaults to 1e5.
        name: optional name.

    Example:

    >>> schedule = keras_transfer.optimizers.schedules.OneCycle(
    ...     1e-3, total_steps=100, warmup_steps=25)
    >>> [round(float(schedule(step)), 6) for step in (0, 25, 100)]
    [4e-05, 0.001, 0.0]
    >>> model.compile(keras.optimizers.Adam(schedule), ...)  # doctest: +SKIP

    Reference:
        [Smith & Topin, Super-Convergence: Very Fast Training of Neural
        Networks Using Large Learning Rates, 2019](https://arxiv.org/abs/1708.07120);
        [Smith, A disciplined approach to neural network
        hyper-parameters: Part 1, 2018](https://arxiv.org/abs/1803.09820).
    """

    def __init__(
        self,
        max_learning_rate,
        total_steps,
        warmup_steps=None,
        div_factor=25.0,
        final_div_factor=1e5,
        name="OneCycle",
    ):
        super().__init__()
        self.max_learning_rate = check_positive(
            max_learning_rate, "max_learning_rate", "learning rate"
        )
        if (
            isinstance(total_steps, bool)
            or not isinstance(total_steps, int)
            or total_steps < 1
        ):
            raise ValueError(
                "`total_steps` must be a positive integer (epochs x steps "
                f"per epoch). Received: total_steps={total_steps!r}"
            )
        if warmup_steps is None:
            warmup_steps = int(round(0.25 * total_steps))
        if (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, int)
            or warmup_steps < 0
        ):
            raise ValueError(
                "`warmup_steps` must be None or a non-negative integer. "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        if total_steps <= warmup_steps:
            raise ValueError(
                "`total_steps` must exceed `warmup_steps`: the cycle anneals "
                "after its warm-up. Received: "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.div_factor = check_positive(div_factor, "div_factor")
        self.final_div_factor = check_positive(
            final_div_factor, "final_div_factor"
        )
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.max_learning_rate
        start = peak / self.div_factor
        end = peak / self.final_div_factor
        warmup = float(self.warmup_steps)
        anneal = float(self.total_steps - self.warmup_steps)

        def ramp(a, b, position):
            return a + (b - a) * (1.0 + ops.cos(math.pi * (1.0 - position))) / 2.0

        up = ramp(start, peak, ops.clip(step / max(warmup, 1.0), 0.0, 1.0))
        down = ramp(peak, end, ops.clip((step - warmup) / anneal, 0.0, 1.0))
        return ops.where(step < warmup, up, down)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "name": self.name,
        }
