"""The learning-rate range test (Smith 2017), as fastai's `lr_find`."""

import math
import warnings

import keras
import numpy as np

from keras_transfer._validation import check_positive


def range_test_rates(start_learning_rate, end_learning_rate, num_steps):
    """The exponential ramp: step `i` runs at `start * (end / start) **
    (i / num_steps)`, `i = 0 ... num_steps - 1` (fastai's `SchedExp` at
    position `i / num_it`)."""
    steps = np.arange(num_steps, dtype="float64")
    ratio = end_learning_rate / start_learning_rate
    return start_learning_rate * ratio ** (steps / num_steps)


def smooth_losses(losses, beta=0.98):
    """Exponential moving average with bias correction (fastai's
    `AvgSmoothLoss`): `a_i = beta * a_{i-1} + (1 - beta) * loss_i`,
    `a_{-1} = 0`, smoothed loss `a_i / (1 - beta ** (i + 1))`."""
    result, average = [], 0.0
    for i, loss in enumerate(losses):
        average = beta * average + (1.0 - beta) * float(loss)
        result.append(average / (1.0 - beta ** (i + 1)))
    return np.asarray(result)


def _longest_valley(losses):
    """`(start, end)` of fastai's longest valley: `end` where the longest
    decreasing subsequence of `losses` ends, `start = end - lds[end]`
    (fastai's arithmetic, its off-by-one included: `start` may be -1)."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    return max_start, max_end


def valley(learning_rates, losses):
    """fastai's "valley" suggestion: the longest decreasing subsequence of
    `losses` (`lds[i]`: the longest ending at `i`), from `start = end -
    lds[end]` to `end`, and the point `int(L / 3) + int(L / 6)` past its
    start, `L = end - start` (about half-way down; fastai's arithmetic
    exactly, its off-by-one `start` included).

    Returns `(learning_rate, index)`."""
    max_start, max_end = _longest_valley(losses)
    sections = (max_end - max_start) / 3
    index = max_start + int(sections) + int(sections / 2)
    return float(learning_rates[index]), index


class LRFinderResult:
    """What `lr_find` measured.

    Attributes:
        learning_rates: NumPy array, the rate of each step run.
        losses: NumPy array, the smoothed training loss after each step's
            batch (`smooth_losses` of `raw_losses`).
        raw_losses: NumPy array, each step's batch loss.
        suggestion: float, fastai's "valley" rate when the loss curve
            supports it (the smoothed loss falls along the valley by at
            least `min_drop` of its value and by more than the noise), else
            None; `reason` then says why.
        suggestion_index: int, the step of `suggestion`, or None.
        valley: float, fastai's "valley" rate whatever the curve (what
            fastai would suggest), or None when too few steps ran to take
            one.
        valley_index: int, the step of `valley`, or None.
        reason: None when there is a suggestion; otherwise a message
            giving what was seen (steps, rates, loss range), why no rate is
            suggested and what to do.
    """

    def __init__(self, learning_rates, losses, raw_losses, suggestion, index,
                 valley=None, valley_index=None, reason=None):
        self.learning_rates = learning_rates
        self.losses = losses
        self.raw_losses = raw_losses
        self.suggestion = suggestion
        self.suggestion_index = index
        self.valley = suggestion if valley is None else valley
        self.valley_index = index if valley_index is None else valley_index
        self.reason = reason

    def plot(self, ax=None):
        """Smoothed loss against the learning rate (log scale), with the
        suggestion marked. Returns the matplotlib `Axes`."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(self.learning_rates, self.losses)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("smoothed training loss")
        if self.suggestion is not None:
            ax.plot(
                self.suggestion,
                self.losses[self.suggestion_index],
                "o",
                color="C1",
                label=f"valley: {self.suggestion:.2e}",
            )
            ax.legend()
        elif self.valley is not None:
            ax.plot(
                self.valley,
                self.losses[self.valley_index],
                "x",
                color="grey",
                label=f"valley {self.valley:.2e}: not supported, see .reason",
            )
            ax.legend()
        return ax

    def __repr__(self):
        text = (
            f"LRFinderResult(steps={len(self.learning_rates)}, "
            f"suggestion={self.suggestion!r}"
        )
        if self.reason is not None:
            text += f", valley={self.valley!r}, reason={self.reason!r}"
        return text + ")"


def _is_arrays(value):
    """An array, or a dict / list of arrays (a multi-input `x`)."""
    leaves = keras.tree.flatten(value)
    return bool(leaves) and all(hasattr(a, "shape") for a in leaves)


def _as_numpy(structure):
    return keras.tree.map_structure(np.asarray, structure)


def _batches(data, batch_size, seed):
    """Yields `(x, y[, sample_weight])` batches of NumPy arrays forever.

    `data` is `(x, y[, sample_weight])` with `x` an array or a dict of
    arrays, or an iterable of such batches (a `tf.data.Dataset`, ...), whose
    tensors are turned into NumPy arrays (`train_on_batch` on JAX takes no
    `tf.Tensor`).
    """
    if isinstance(data, tuple) and len(data) in (2, 3) and all(
        _is_arrays(a) for a in data
    ):
        count = len(keras.tree.flatten(data[0])[0])
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(count)
            for start in range(0, count - batch_size + 1, batch_size):
                index = order[start : start + batch_size]
                yield tuple(
                    keras.tree.map_structure(lambda a: np.asarray(a)[index], part)
                    for part in data
                )
            if count < batch_size:
                yield tuple(_as_numpy(part) for part in data)
    else:
        while True:
            empty = True
            for batch in data:
                empty = False
                batch = batch if isinstance(batch, tuple) else (batch,)
                yield tuple(_as_numpy(part) for part in batch)
            if empty or iter(data) is data:
                # An exhausted iterator cannot restart: end the test here.
                return


def _optimizer_with_settable_rate(model):
    optimizer = model.optimizer
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    config = inner.get_config()
    if not isinstance(config.get("learning_rate"), dict):
        return None
    # A schedule-driven rate (serialized as a dict) is not settable: run the
    # test with a clone of the optimizer at a float rate, and give the model
    # its own back after.
    config["learning_rate"] = 1e-3
    try:
        clone = inner.__class__.from_config(config)
    except Exception as error:  # noqa: BLE001
        raise ValueError(
            "`lr_find` needs an optimizer whose learning rate it can set; "
            f"{inner.__class__.__name__} runs on a `LearningRateSchedule` "
            "and could not be cloned with a float rate. Compile with a "
            f"float rate for the test. Received: optimizer={inner!r}"
        ) from error
    if inner is not optimizer:
        clone = keras.optimizers.LossScaleOptimizer(clone)
    return clone


def lr_find(
    model,
    data,
    start_learning_rate=1e-7,
    end_learning_rate=10.0,
    num_steps=100,
    beta=0.98,
    stop_factor=4.0,
    batch_size=32,
    seed=0,
    min_drop=0.05,
):
    """Runs the learning-rate range test on a compiled model.

    Trains `num_steps` steps on `data` with the model's own optimizer and
    loss while the learning rate grows exponentially from
    `start_learning_rate` towards `end_learning_rate` (step `i` at
    `start * (end / start) ** (i / num_steps)`), records each batch's loss
    and its bias-corrected exponential moving average, and stops early once
    the smoothed loss exceeds `stop_factor` times its minimum or is not
    finite. Then every variable of the model (weights, BatchNorm statistics,
    random states) and every optimizer variable (its rate, step count and
    slots) is put back bit for bit: the model is exactly as before.

    The suggestion is fastai's "valley": in the smoothed losses between
    `num_steps // 10` and the last 5 recorded steps, the longest decreasing
    stretch, at `int(n/3) + int(n/6)` points past its start (about 1/2 of
    the way down the steep part), a rate at which the loss falls fast.

    fastai always reports a valley, even on a flat or noisy curve, where the
    longest decreasing stretch is noise and the rate it points at means
    nothing (on data without signal, or with too few steps for the loss to
    fall inside the window, it lands near `start_learning_rate`, 1e-7).
    Here the valley is the suggestion only when the curve supports it: the
    smoothed loss must fall along the valley by at least `min_drop` of its
    value at the valley's start, and by at least 3 standard errors of its
    batch-to-batch noise (estimated from the successive differences of the
    raw batch losses). Measured on 8x8 digits with labels drawn at random
    (an MLP, Adam, 2 and 10 classes, batches of 8 and 32, 3 seeds, 100
    steps), the valley fell by 0.4 % to 3.4 %: noise. Otherwise `suggestion` is None, `valley`
    keeps fastai's rate, `reason` says what was seen (steps, rates, loss
    range), why no rate is suggested and what to do (more steps when the
    loss fell only outside the window, checking the data or giving a rate
    when it never fell), and a `UserWarning` with that text is issued.

    Works with any compiled model (a `GroupedOptimizer` of
    `DiscriminativeLR` keeps its group factors: the groups ramp together);
    on an optimizer compiled with a `LearningRateSchedule` the test runs on
    a clone of it at float rates (fresh slots).

    Args:
        model: a compiled Keras model.
        data: `(x, y)` or `(x, y, sample_weight)` NumPy arrays (shuffled into
            batches of `batch_size`), or an iterable of batches such as a
            batched `tf.data.Dataset` (re-iterated when exhausted).
        start_learning_rate: positive float, the first rate. Defaults to
            1e-7.
        end_learning_rate: float above `start_learning_rate`, the rate the
            ramp heads for. Defaults to 10.
        num_steps: int >= 6, steps of the test. Defaults to 100.
        beta: smoothing in [0, 1). Defaults to 0.98.
        stop_factor: float > 1 or None: stop when the smoothed loss exceeds
            this multiple of its minimum (None never stops). Defaults to 4.
        batch_size: int, for array `data`. Defaults to 32.
        seed: int, the shuffling of array `data`.
        min_drop: float in [0, 1): the least relative fall of the smoothed
            loss along the valley for it to be suggested (the noise test
            applies as well). 0 turns both tests off and accepts any valley,
            as fastai does. Defaults to 0.05.

    Returns:
        An `LRFinderResult` with `learning_rates`, `losses` (smoothed),
        `raw_losses`, `suggestion` (None when the curve does not support
        one), `valley`, `reason`, and `.plot()`.

    Warns:
        UserWarning: when no rate is suggested (the text of `reason`).

    Example:

    ```python
    model.compile(keras.optimizers.Adam(), "sparse_categorical_crossentropy")
    found = keras_transfer.strategies.lr_find(model, (x, y))
    found.plot()
    if found.suggestion is None:  # the curve supports no rate
        raise SystemExit(found.reason)
    model.optimizer.learning_rate.assign(found.suggestion)
    model.fit(x, y, epochs=3)
    ```

    Reference:
        [Smith, Cyclical Learning Rates for Training Neural Networks, WACV
        2017](https://arxiv.org/abs/1506.01186); fastai's
        [`Learner.lr_find`](https://docs.fast.ai/callback.schedule.html).
    """
    start_learning_rate = check_positive(
        start_learning_rate, "start_learning_rate", "learning rate"
    )
    end_learning_rate = check_positive(
        end_learning_rate, "end_learning_rate", "learning rate"
    )
    if end_learning_rate <= start_learning_rate:
        raise ValueError(
            "`end_learning_rate` must be larger than `start_learning_rate`: "
            "the test ramps the rate up. Received: "
            f"start_learning_rate={start_learning_rate}, "
            f"end_learning_rate={end_learning_rate}"
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 6:
        raise ValueError(
            "`num_steps` must be an integer >= 6 (the suggestion skips the "
            f"first tenth and the last 5 steps). Received: num_steps={num_steps!r}"
        )
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
        raise ValueError(f"`beta` must be in [0, 1). Received: beta={beta!r}")
    if stop_factor is not None and (
        isinstance(stop_factor, bool)
        or not isinstance(stop_factor, (int, float))
        or not stop_factor > 1
    ):
        raise ValueError(
            "`stop_factor` must be None or a number > 1. "
            f"Received: stop_factor={stop_factor!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}"
        )
    if isinstance(min_drop, bool) or not isinstance(min_drop, (int, float)) or not (
        0 <= min_drop < 1
    ):
        raise ValueError(
            "`min_drop` must be a number in [0, 1) (a fraction of the loss). "
            f"Received: min_drop={min_drop!r}"
        )
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise ValueError(
            f"`lr_find` needs a compiled model; compile '{model.name}' with "
            "its optimizer and loss first. Received: optimizer=None"
        )

    batches = _batches(data, batch_size, seed)
    first = next(batches, None)
    if first is None:
        raise ValueError(
            "`lr_find` got no batch from `data`: pass `(x, y)` arrays or a "
            f"non-empty iterable of batches. Received: data={data!r}"
        )
    original_optimizer = model.optimizer
    clone = _optimizer_with_settable_rate(model)
    if not model.built:
        model(first[0])
    # Built now, so that "as before" covers the optimizer's variables.
    if not original_optimizer.built:
        original_optimizer.build(model.trainable_variables)
    if clone is not None:
        clone.build(model.trainable_variables)
    saved_model = [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]
    saved_optimizer = [
        np.array(keras.ops.convert_to_numpy(v)) for v in original_optimizer.variables
    ]
    if clone is not None:
        model.optimizer = clone
    model.make_train_function(force=True)
    optimizer = model.optimizer

    rates = range_test_rates(start_learning_rate, end_learning_rate, num_steps)
    raw, smoothed, used = [], [], []
    average, best = 0.0, math.inf
    stopped = None
    try:
        batch = first
        for i, rate in enumerate(rates):
            if batch is None:
                stopped = "the data ran out (a one-shot iterator)"
                break
            optimizer.learning_rate = float(rate)
            model.reset_metrics()
            logs = model.train_on_batch(*batch, return_dict=True)
            loss = float(logs["loss"])
            average = beta * average + (1.0 - beta) * loss
            value = average / (1.0 - beta ** (i + 1))
            raw.append(loss)
            smoothed.append(value)
            used.append(float(rate))
            if not math.isfinite(value):
                stopped = f"the loss was not finite at rate {rate:.2e}"
                break
            best = min(best, value)
            if stop_factor is not None and value > stop_factor * best:
                stopped = (
                    f"the loss passed {stop_factor:g} x its minimum at rate "
                    f"{rate:.2e} (`stop_factor`)"
                )
                break
            batch = next(batches, None)
    finally:
        if clone is not None:
            model.optimizer = original_optimizer
        for variable, value in zip(model.variables, saved_model):
            variable.assign(value)
        for variable, value in zip(original_optimizer.variables, saved_optimizer):
            variable.assign(value)
        model.reset_metrics()
        model.make_train_function(force=True)

    rates = np.asarray(used)
    losses = np.asarray(smoothed)
    found = _suggest(rates, losses, np.asarray(raw), num_steps, beta, min_drop, stopped)
    result = LRFinderResult(rates, losses, np.asarray(raw), *found)
    if result.reason is not None:
        warnings.warn(result.reason, UserWarning, stacklevel=2)
    return result


# A fall of the smoothed loss counts when it is this many standard errors
# of batch-to-batch noise (see `_noise`).
NOISE_Z = 3.0


def _noise(raw, beta, first, last):
    """Standard error of the difference of the smoothed losses at steps
    `first` and `last`, from the raw losses' batch-to-batch noise.

    The noise `sigma` of one batch's loss is estimated robustly from the
    successive differences of the raw losses (`1.4826 * median |diff| /
    sqrt(2)`, insensitive to the trend); the bias-corrected moving average
    at step `i` weighs batch `j` by `beta ** (i - j)`, so its standard error
    is `sigma * sqrt(sum w^2) / sum w`. The two errors are added in
    quadrature (an upper bound: the averages share batches)."""
    raw = raw[np.isfinite(raw)]
    if len(raw) < 3:
        return 0.0
    sigma = 1.4826 * np.median(np.abs(np.diff(raw))) / np.sqrt(2.0)

    def error(i):
        weights = beta ** np.arange(i + 1, dtype="float64")
        return sigma * np.sqrt(np.sum(weights**2)) / np.sum(weights)

    return float(np.hypot(error(first), error(last)))


def _suggest(rates, losses, raw, num_steps, beta, min_drop, stopped):
    """`(suggestion, index, valley, valley_index, reason)` of a range test."""
    skip = num_steps // 10
    window_rates = rates[skip:-5]
    window = losses[skip:-5]
    finite = np.isfinite(window)
    if not finite.all():
        stop = int(np.argmin(finite))
        window_rates, window = window_rates[:stop], window[:stop]
    ran = (
        f"The range test ran {len(rates)} of {num_steps} steps, rates "
        f"{rates[0]:.2e} to {rates[-1]:.2e}"
        + (f", and stopped early: {stopped}" if stopped else "")
    )
    # From the window's start on: the first steps' smoothed losses are
    # averages of a few batches, too noisy to measure a fall from.
    seen = np.asarray(losses)[min(skip, len(losses) - 1):]
    seen = seen[np.isfinite(seen)]
    if seen.size:
        first, lowest = float(seen[0]), float(seen.min())
        fell = (first - lowest) / max(abs(first), 1e-12)
        ran += (
            f". From step {min(skip, len(losses) - 1)} on, the smoothed loss "
            f"went from {first:.4g} to a lowest {lowest:.4g} ({fell:.1%} "
            "below)"
        )
    else:
        fell = 0.0
    if len(window) < 2:
        reason = (
            f"`lr_find` suggests no learning rate: {ran}. The suggestion is "
            f"taken from step {skip} to the 6th last (fastai skips the first "
            "tenth and the last 5 steps), which leaves fewer than 2 steps "
            "with a finite loss. Run more steps (`num_steps`; fastai uses "
            "100), start lower (`start_learning_rate`) if the loss diverged "
            "at once, or pass a learning rate yourself."
        )
        return None, None, None, None, reason
    first_step, end = _longest_valley(window)
    sections = (end - first_step) / 3
    index = first_step + int(sections) + int(sections / 2)
    start = max(first_step, 0)
    valley_rate, valley_index = float(window_rates[index]), index + skip
    fall = window[start] - window[end]
    drop = fall / max(abs(window[start]), 1e-12)
    noise = _noise(raw[skip : skip + len(window)], beta, start + skip, end + skip)
    if min_drop == 0 or (drop >= min_drop and fall >= NOISE_Z * noise):
        return valley_rate, valley_index, valley_rate, valley_index, None
    if drop < min_drop:
        short = (
            f"by {'only ' + format(drop, '.1%') if drop > 0 else 'nothing'} "
            f"({window[start]:.4g} -> {window[end]:.4g}), less than "
            f"`min_drop`={min_drop:g}"
        )
    else:
        short = (
            f"by {fall:.3g} ({window[start]:.4g} -> {window[end]:.4g}), less "
            f"than {NOISE_Z:g} standard errors ({NOISE_Z * noise:.3g}) of the "
            "batch-to-batch noise of the loss"
        )
    where = (
        f"steps {skip} to {skip + len(window) - 1}, rates "
        f"{window_rates[0]:.2e} to {window_rates[-1]:.2e}"
    )
    if fell >= min_drop:
        why = (
            "The loss fell only outside that window: the test was too short "
            "for its fall to show between the first tenth and the last 5 "
            f"steps. Run more steps (`num_steps`, now {num_steps}; fastai "
            "uses 100), or pass a learning rate yourself."
        )
    else:
        why = (
            "The loss never fell clearly at any rate tried: in "
            f"{len(rates)} steps the model learned nothing from these "
            f"batches. Either the test is too short (`num_steps`, now "
            f"{num_steps}; fastai uses 100) or the data carries nothing the "
            "model can learn (labels unrelated to the inputs, a frozen or "
            "already-converged model, a loss at its floor). Run more steps, "
            "check the data and the model, or pass a learning rate yourself."
        )
    reason = (
        f"`lr_find` suggests no learning rate: {ran}. In the steps the "
        f"suggestion is taken from ({where}), fastai's valley (the longest "
        f"falling stretch) falls {short}: its rate {valley_rate:.2e} marks no "
        f"real fall of the loss. {why}"
    )
    return None, None, valley_rate, valley_index, reason
