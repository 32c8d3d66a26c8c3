"""Per-group learning rates (head first, then groups top -> down)."""

import math

import keras

from keras_transfer.callbacks import _grouped_optimizer as grouped
from keras_transfer._tensorboard import SummaryWriter

_Schedule = keras.optimizers.schedules.LearningRateSchedule


def _check_rate(name, value):
    if isinstance(value, _Schedule):
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"`{name}` must be a positive number or a "
            f"`keras.optimizers.schedules.LearningRateSchedule`. "
            f"Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="keras_transfer")
class DiscriminativeLR(keras.callbacks.Callback):
    """Gives the head and each layer group its own learning rate.

    Lower layers of a pretrained model hold more general features and should
    move less than the top ones (ULMFiT's discriminative fine-tuning). The
    rates are, head first, then the groups from the top down:

    - `learning_rates=[r_head, r_top, ..., r_bottom]` given explicitly, or
    - `base_rate * factor**k` for the `k`-th entry (head `k = 0`, top group
      `k = 1`, ...), with `base_rate` defaulting to the compiled optimizer's
      learning rate.

    Every rate may be a `keras.optimizers.schedules.LearningRateSchedule`
    (warm-up then cosine decay, one-cycle, ...); a schedule as `base_rate`
    is scaled by `factor**k` for each group. Schedules are evaluated at the
    global training step.

    The rates act on the *update*, not on the gradients: the compiled
    optimizer is replaced by a grouped `keras.optimizers.MultiOptimizer`
    with one clone of it per group (built on every variable that could
    train), and each clone runs at its group's rate. So with Adam, which
    ignores any rescaling of the gradients, a group at `0.1 x` the head's
    rate really moves `0.1 x` as far. Works in the same `fit` as
    `GradualUnfreezer` (list both; order does not matter).

    Each epoch, every rate is added to the epoch logs as `lr_head` and
    `lr_group_{i}` (`i` indexes `groups`, input -> output), so it shows in
    `History` and in a `keras.callbacks.TensorBoard` listed after this
    callback; with `log_dir` the rates are also written as scalars
    `learning_rate/head`, `learning_rate/group_{i}` to `log_dir/train`.

    Args:
        groups: list of groups, input -> output, each a list of layers (or
            layer names), usually `keras_transfer.strategies.layer_groups`.
            Every other trainable layer is the head.
        learning_rates: optional list of `len(groups) + 1` positive rates
            or schedules: head first, then the groups from the top down.
        base_rate: optional positive rate or schedule of the head, when
            `learning_rates` is None. None takes the compiled optimizer's.
        factor: float in (0, 1], ratio of each group's rate to the rate of
            the group above it. Defaults to 0.1.
        log_dir: optional TensorBoard log directory.

    Example:

    ```python
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=1000, warmup_target=1e-3, warmup_steps=100
    )
    model.compile(keras.optimizers.Adam(schedule), loss, metrics=metrics)
    model.fit(x, y, epochs=10, callbacks=[
        keras_transfer.callbacks.DiscriminativeLR(groups, factor=0.3),
        keras.callbacks.TensorBoard("tensorboard_logs/discriminative"),
    ])
    ```

    Reference:
        [Howard & Ruder, Universal Language Model Fine-tuning for Text
        Classification (ULMFiT), ACL 2018](https://arxiv.org/abs/1801.06146).
    """

    def __init__(
        self,
        groups,
        learning_rates=None,
        base_rate=None,
        factor=0.1,
        log_dir=None,
    ):
        super().__init__()
        groups = grouped.check_groups(groups, "DiscriminativeLR")
        if learning_rates is not None and base_rate is not None:
            raise ValueError(
                "Pass either `learning_rates` or `base_rate` (with `factor`), "
                f"not both. Received: learning_rates={learning_rates!r}, "
                f"base_rate={base_rate!r}"
            )
        if learning_rates is not None:
            if isinstance(learning_rates, (str, int, float, _Schedule)) or not (
                isinstance(learning_rates, (list, tuple))
            ):
                raise ValueError(
                    "`learning_rates` must be a list of rates, head first. "
                    f"Received: learning_rates={learning_rates!r}"
                )
            if len(learning_rates) != len(groups) + 1:
                raise ValueError(
                    f"`learning_rates` needs {len(groups) + 1} rates: the "
                    f"head's, then one per group ({len(groups)}) from the top "
                    f"down. Received: learning_rates={learning_rates!r}"
                )
            learning_rates = [
                _check_rate("learning_rates", r) for r in learning_rates
            ]
        if base_rate is not None:
            base_rate = _check_rate("base_rate", base_rate)
        if (
            isinstance(factor, bool)
            or not isinstance(factor, (int, float))
            or not 0 < factor <= 1
        ):
            raise ValueError(
                "`factor` must be a number in (0, 1]: lower groups train at "
                f"`factor` times the rate of the group above. "
                f"Received: factor={factor!r}"
            )
        self.groups = groups
        self.learning_rates = learning_rates
        self.base_rate = base_rate
        self.factor = float(factor)
        self.log_dir = grouped.check_log_dir(log_dir)
        self._writer = SummaryWriter(log_dir) if log_dir else None
        self._prepared_for = None

    def rates(self, model=None):
        """The rates (floats or schedules), head first, then top -> down."""
        if self.learning_rates is not None:
            return list(self.learning_rates)
        base = self.base_rate
        if base is None:
            base = grouped.compiled_learning_rate(model or self.model)
        return [
            _ScaledSchedule(base, self.factor**k)
            if isinstance(base, _Schedule)
            else base * self.factor**k
            for k in range(len(self.groups) + 1)
        ]

    def set_model(self, model):
        super().set_model(model)
        if getattr(model, "optimizer", None) is not None:
            self._prepare(model)

    def _prepare(self, model):
        if self._prepared_for is model:
            return
        grouped.check_backend("DiscriminativeLR")
        groups = grouped.resolve_groups(model, self.groups, "DiscriminativeLR")
        self._optimizer = grouped.install(
            model, groups, learning_rates=self.rates(model)
        )
        self._prepared_for = model

    def on_train_begin(self, logs=None):
        self._prepare(self.model)

    def current_rates(self):
        """Each rate at the current step: `{"lr_head": ..., "lr_group_0": ...}`."""
        inner = grouped.install_target(self.model).current_rates()
        # Inner order: groups input -> output, then the head.
        values = {"lr_head": inner[-1]}
        for i, rate in enumerate(inner[:-1]):
            values[f"lr_group_{i}"] = rate
        return values

    def on_epoch_end(self, epoch, logs=None):
        values = self.current_rates()
        if logs is not None:
            logs.update(values)
        if self._writer is not None:
            self._writer.scalars(
                {
                    "learning_rate/" + k[len("lr_"):]: v
                    for k, v in values.items()
                },
                step=epoch,
            )

    def on_train_end(self, logs=None):
        self._prepared_for = None
        if self._writer is not None:
            self._writer.close()

    def get_config(self):
        def rate(r):
            if isinstance(r, _Schedule):
                return keras.saving.serialize_keras_object(r)
            return r

        return {
            "groups": grouped.names_of(self.groups),
            "learning_rates": None
            if self.learning_rates is None
            else [rate(r) for r in self.learning_rates],
            "base_rate": rate(self.base_rate),
            "factor": self.factor,
            "log_dir": self.log_dir,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("learning_rates") is not None:
            config["learning_rates"] = [
                keras.saving.deserialize_keras_object(r)
                if isinstance(r, dict)
                else r
                for r in config["learning_rates"]
            ]
        if isinstance(config.get("base_rate"), dict):
            config["base_rate"] = keras.saving.deserialize_keras_object(
                config["base_rate"]
            )
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_transfer")
class _ScaledSchedule(_Schedule):
    """`multiplier * schedule(step)`: a group's share of a base schedule."""

    def __init__(self, schedule, multiplier):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        self.schedule = schedule
        self.multiplier = float(multiplier)

    def __call__(self, step):
        return self.schedule(step) * self.multiplier

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "multiplier": self.multiplier,
        }
