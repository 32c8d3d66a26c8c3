"""Per-group learning rates: factors of the optimizer's one learning rate."""

import math

import keras

from keras_transfer.callbacks import _grouped_optimizer as grouped

_Schedule = keras.optimizers.schedules.LearningRateSchedule


def _check_rate(name, value, schedule_ok=True):
    if schedule_ok and isinstance(value, _Schedule):
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        allowed = "a positive number"
        if schedule_ok:
            allowed += " or a `keras.optimizers.schedules.LearningRateSchedule`"
        raise ValueError(
            f"`{name}` must be {allowed}. Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="keras_transfer")
class DiscriminativeLR(keras.callbacks.Callback):
    """Gives the head and each layer group its own share of the learning rate.

    Lower layers of a pretrained model hold more general features and should
    move less than the top ones (ULMFiT's discriminative fine-tuning). Each
    group trains at a fixed *factor* of the optimizer's one learning rate;
    head first, then the groups from the top down, the factors are

    - `factors=[f_head, f_top, ..., f_bottom]` given explicitly, or
    - `factor**k` for the `k`-th entry (head `k = 0`, top group `k = 1`, ...).

    The optimizer's learning rate stays the one knob, as in plain Keras: a
    `keras.optimizers.schedules.LearningRateSchedule` it was compiled with
    (warm-up, cosine decay, `keras_transfer.optimizers.OneCycle`),
    `keras.callbacks.LearningRateScheduler` and `ReduceLROnPlateau` move
    every group together, each at its factor. `base_rate` (or the head's
    entry of `learning_rates`) replaces that learning rate when `fit` starts.

    The rates act on the *update*, not on the gradients: the compiled
    optimizer is replaced by a grouped `keras.optimizers.MultiOptimizer`
    with one clone of it per group (built on every variable that could
    train), and each clone runs at `learning_rate * factor` of its group.
    So with Adam, which ignores any rescaling of the gradients, a group at
    factor `0.1` really moves `0.1 x` as far. The factors live in a variable
    read inside the compiled step and saved with the optimizer: a model
    saved mid-training continues at its rates with a plain `fit` after
    `keras.models.load_model`. Works in the same `fit` as
    `GradualUnfreezer` (list both; order does not matter), on every backend.

    Each epoch, every group's effective rate (`learning_rate * factor`, 0.0
    while the group is frozen) is added to the epoch logs as `lr_head` and
    `lr_group_{i}` (`i` indexes `groups`, input -> output), so it shows in
    `History` and, under `epoch_lr_head`, `epoch_lr_group_{i}`, in a
    `keras.callbacks.TensorBoard` listed after this callback.

    Args:
        groups: list of groups, input -> output, each a list of layers (or
            layer names), usually `keras_transfer.strategies.layer_groups`.
            Every other trainable layer is the head.
        factor: float in (0, 1], ratio of each group's rate to the rate of
            the group above it. Defaults to 0.1.
        factors: optional list of `len(groups) + 1` positive multipliers of
            the learning rate: head first, then the groups from the top
            down. Overrides `factor`.
        base_rate: optional positive float or `LearningRateSchedule` to use
            as the optimizer's learning rate. None keeps the compiled one.
        learning_rates: optional list of `len(groups) + 1` positive floats,
            head first: shorthand for `base_rate=learning_rates[0]` and
            `factors=[r / learning_rates[0] for r in learning_rates]`.
            (For scheduled rates, compile the optimizer with the schedule
            and pass `factors`.)

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
        factor=0.1,
        factors=None,
        base_rate=None,
        learning_rates=None,
        log_dir=None,
    ):
        super().__init__()
        groups = grouped.check_groups(groups, "DiscriminativeLR")
        if log_dir is not None:
            raise ValueError(
                "`DiscriminativeLR` no longer writes TensorBoard files: the "
                "rates are in the epoch logs (`lr_head`, `lr_group_{i}`); "
                "list `keras.callbacks.TensorBoard(log_dir)` after this "
                f"callback. Received: log_dir={log_dir!r}"
            )
        if learning_rates is not None and (
            base_rate is not None or factors is not None
        ):
            raise ValueError(
                "Pass either `learning_rates`, or `base_rate` and/or "
                f"`factors`, not both. Received: learning_rates="
                f"{learning_rates!r}, base_rate={base_rate!r}, "
                f"factors={factors!r}"
            )
        count = len(groups) + 1
        if learning_rates is not None:
            if isinstance(learning_rates, (str, int, float, _Schedule)) or not (
                isinstance(learning_rates, (list, tuple))
            ):
                raise ValueError(
                    "`learning_rates` must be a list of rates, head first. "
                    f"Received: learning_rates={learning_rates!r}"
                )
            if len(learning_rates) != count:
                raise ValueError(
                    f"`learning_rates` needs {count} rates: the "
                    f"head's, then one per group ({len(groups)}) from the top "
                    f"down. Received: learning_rates={learning_rates!r}"
                )
            if any(isinstance(r, _Schedule) for r in learning_rates):
                raise ValueError(
                    "`learning_rates` takes floats only: one schedule drives "
                    "every group. Compile the optimizer with the schedule "
                    "(or pass it as `base_rate`) and give the groups "
                    f"`factors`. Received: learning_rates={learning_rates!r}"
                )
            learning_rates = [
                _check_rate("learning_rates", r, schedule_ok=False)
                for r in learning_rates
            ]
        if factors is not None:
            factors = grouped.check_factors(factors, count)
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
        self.factor = float(factor)
        self.factors = factors
        self.base_rate = base_rate
        self.learning_rates = learning_rates
        self._prepared_for = None

    def group_factors(self):
        """The factors, head first, then the groups from the top down."""
        if self.learning_rates is not None:
            head = self.learning_rates[0]
            return [r / head for r in self.learning_rates]
        if self.factors is not None:
            return list(self.factors)
        return [self.factor**k for k in range(len(self.groups) + 1)]

    def set_model(self, model):
        super().set_model(model)
        if getattr(model, "optimizer", None) is not None:
            self._prepare(model)

    def _prepare(self, model):
        if self._prepared_for is model:
            return
        groups = grouped.resolve_groups(model, self.groups, "DiscriminativeLR")
        rate = self.base_rate
        if self.learning_rates is not None:
            rate = self.learning_rates[0]
        if rate is not None and not isinstance(rate, _Schedule):
            current = grouped.compiled_learning_rate(model)
            if isinstance(current, _Schedule):
                raise ValueError(
                    "The model's optimizer runs on a `LearningRateSchedule`; "
                    "a float `base_rate`/`learning_rates` cannot replace it "
                    "(Keras's schedule-driven rates are not settable). Pass "
                    "`factors` to share that schedule, or a schedule as "
                    f"`base_rate`. Received: base_rate={rate!r}"
                )
        self._optimizer = grouped.install(
            model, groups, factors=self.group_factors(), learning_rate=rate
        )
        self._prepared_for = model

    def on_train_begin(self, logs=None):
        self._prepare(self.model)

    def current_rates(self):
        """Each group's effective rate now: `{"lr_head": ..., "lr_group_0": ...}`
        (0.0 for a frozen group)."""
        return grouped.rate_logs(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.current_rates())

    def on_train_end(self, logs=None):
        self._prepared_for = None

    def get_config(self):
        base_rate = self.base_rate
        if isinstance(base_rate, _Schedule):
            base_rate = keras.saving.serialize_keras_object(base_rate)
        return {
            "groups": grouped.names_of(self.groups),
            "factor": self.factor,
            "factors": self.factors,
            "base_rate": base_rate,
            "learning_rates": self.learning_rates,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("base_rate"), dict):
            config["base_rate"] = keras.saving.deserialize_keras_object(
                config["base_rate"]
            )
        return cls(**config)
