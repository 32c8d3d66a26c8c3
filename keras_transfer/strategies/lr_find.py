"""The learning-rate range test (Smith 2017), as fastai's `lr_find`."""

import math

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


def valley(learning_rates, losses):
    """fastai's "valley" suggestion: the longest decreasing subsequence of
    `losses` (`lds[i]`: the longest ending at `i`), from `start = end -
    lds[end]` to `end`, and the point `int(L / 3) + int(L / 6)` past its
    start, `L = end - start` (about half-way down; fastai's arithmetic
    exactly, its off-by-one `start` included).

    Returns `(learning_rate, index)`."""
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
        suggestion: float, fastai's "valley" rate, or None when too few
            steps ran (the loss diverged at once).
    """

    def __init__(self, learning_rates, losses, raw_losses, suggestion, index):
        self.learning_rates = learning_rates
        self.losses = losses
        self.raw_losses = raw_losses
        self.suggestion = suggestion
        self.suggestion_index = index

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
        return ax

    def __repr__(self):
        return (
            f"LRFinderResult(steps={len(self.learning_rates)}, "
            f"suggestion={self.suggestion!r})"
        )


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

    Returns:
        An `LRFinderResult` with `learning_rates`, `losses` (smoothed),
        `raw_losses`, `suggestion`, and `.plot()`.

    Example:

    ```python
    model.compile(keras.optimizers.Adam(), "sparse_categorical_crossentropy")
    found = keras_transfer.strategies.lr_find(model, (x, y))
    found.plot()
    model.fit(x, y, epochs=3, callbacks=[...])  # with found.suggestion
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
    try:
        batch = first
        for i, rate in enumerate(rates):
            if batch is None:
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
                break
            best = min(best, value)
            if stop_factor is not None and value > stop_factor * best:
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
    window_rates = rates[num_steps // 10 : -5]
    window = losses[num_steps // 10 : -5]
    finite = np.isfinite(window)
    if not finite.all():
        stop = int(np.argmin(finite))
        window_rates, window = window_rates[:stop], window[:stop]
    suggestion, index = None, None
    if len(window) >= 2:
        suggestion, index = valley(window_rates, window)
        index += num_steps // 10
    return LRFinderResult(rates, losses, np.asarray(raw), suggestion, index)
