"""Unfreezes layer groups one stage at a time inside one `fit` call."""

import keras
import numpy as np

from keras_transfer.callbacks import _grouped_optimizer as grouped
from keras_transfer._keras_private import children
from keras_transfer._tensorboard import SummaryWriter


def _is_batchnorm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def _check_positive_int(name, value, allow_zero=False):
    low = 0 if allow_zero else 1
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
    ):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(
            f"`{name}` must be a {kind} integer. Received: {name}={value!r}"
        )


@keras.saving.register_keras_serializable(package="keras_transfer")
class GradualUnfreezer(keras.callbacks.Callback):
    """Unfreezes a pretrained base one group at a time, top group first.

    Stage 0 trains the head only; stage `k` also trains the top `k` groups
    (`groups[-k:]`), until every group trains. Stages change at epoch
    boundaries: every `epochs_per_stage` epochs, or at the epochs listed in
    `schedule`. The stage is a pure function of the epoch index, so a run
    resumed by `keras.callbacks.BackupAndRestore` (or with `initial_epoch`)
    continues in the right stage.

    All of this happens inside one `model.fit`, without recompiling:

    - The compiled optimizer is replaced, once, by a grouped
      `keras.optimizers.MultiOptimizer` with one clone of it per group
      (plus the head), built on every variable that could ever train. A
      stage change only changes which variables get gradients: the state of
      the variables already training (Adam's moments, step counts) carries
      on unchanged, newly unfrozen variables start from fresh slots with
      their own step count (so Adam's bias correction starts afresh for
      them), and frozen weights stay bit-identical until their stage.
    - At a stage change, `layer.trainable` is flipped and the train function
      is rebuilt (`model.make_train_function(force=True)`), so frozen groups
      cost no backward pass.
    - `BatchNormalization` layers stay frozen (`trainable=False`, which in
      Keras 3 also means inference mode: moving statistics untouched) unless
      `train_batchnorm=True`.

    The learning rate stays the optimizer's own: a schedule it was compiled
    with, `keras.callbacks.LearningRateScheduler` and `ReduceLROnPlateau`
    drive every group (with `DiscriminativeLR`, each at its factor).

    Each epoch, the stage (`unfreeze_stage`), the number of trainable
    parameters (`trainable_params`) and each group's effective learning
    rate (`lr_head`, `lr_group_{i}`, 0.0 while frozen) are added to the
    epoch logs, so they appear in `History` and, as `epoch_unfreeze_stage`,
    `epoch_trainable_params`, `epoch_lr_head`, `epoch_lr_group_{i}`, in a
    `keras.callbacks.TensorBoard` listed after this callback. With
    `log_dir`, a text event per stage change (`unfreezing/stage_change`:
    which groups were unfrozen) is also written to `log_dir/train`.

    Resuming: the layers' `trainable` flags and the optimizer's state
    (rates, factors, every group's slots) are saved with the model, so a
    model saved mid-schedule continues in its stage with a plain `fit`
    after `keras.models.load_model`, or with this callback again (pass
    `initial_epoch`), or through `keras.callbacks.BackupAndRestore`.

    Backends: TensorFlow and JAX, tested to give the same weights (the JAX
    trainer re-reads the trainable variables at each epoch start, and the
    train function is rebuilt at a stage change). PyTorch reads the
    trainable variables at every step and should behave the same
    (untested here: no torch in CI).

    Args:
        groups: list of groups, input -> output, each a list of layers (or
            layer names) of the model being fitted, usually
            `keras_transfer.strategies.layer_groups(base, ...)`.
        epochs_per_stage: int >= 1, epochs per stage when `schedule` is None.
            Defaults to 1.
        schedule: optional list of strictly increasing epoch indices where
            stages 1, 2, ... start (at most one per group). Epochs before
            `schedule[0]` are stage 0 (head only). A shorter list leaves the
            lowest groups frozen.
        head: optional list of layers that train from stage 0 (set
            trainable here). None means every currently trainable,
            weight-bearing layer of the model not in `groups`.
        train_batchnorm: whether `BatchNormalization` layers in unfrozen
            groups train (their `gamma`/`beta`, and their batch statistics
            unless the base runs in `InferenceMode`). Defaults to False.
        log_dir: optional TensorBoard log directory (the one given to
            `keras.callbacks.TensorBoard`) for the stage-change text events.

    Example:

    ```python
    base = keras_transfer.backbones.efficientnet_lite0(
        include_top=False, pooling="avg", input_shape=(96, 96, 3)
    )
    model = keras_transfer.strategies.build_classifier(base, num_classes=10)
    groups = keras_transfer.strategies.layer_groups(
        base, blocks="auto", num_groups=3
    )
    model.compile(keras.optimizers.Adam(1e-4),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, callbacks=[
        keras_transfer.callbacks.GradualUnfreezer(groups, epochs_per_stage=2),
        keras.callbacks.TensorBoard("tensorboard_logs/gradual"),
    ])
    ```

    Reference:
        [Howard & Ruder, Universal Language Model Fine-tuning for Text
        Classification (ULMFiT), ACL 2018](https://arxiv.org/abs/1801.06146).
    """

    def __init__(
        self,
        groups,
        epochs_per_stage=1,
        schedule=None,
        head=None,
        train_batchnorm=False,
        log_dir=None,
    ):
        super().__init__()
        groups = grouped.check_groups(groups, "GradualUnfreezer")
        _check_positive_int("epochs_per_stage", epochs_per_stage)
        if schedule is not None:
            if isinstance(schedule, (str, int)) or not isinstance(
                schedule, (list, tuple)
            ) or not schedule:
                raise ValueError(
                    "`schedule` must be None or a non-empty list of epoch "
                    f"indices. Received: schedule={schedule!r}"
                )
            for epoch in schedule:
                _check_positive_int("schedule", epoch, allow_zero=True)
            if list(schedule) != sorted(set(schedule)):
                raise ValueError(
                    "`schedule` must be strictly increasing (one start epoch "
                    f"per stage). Received: schedule={schedule!r}"
                )
            if len(schedule) > len(groups):
                raise ValueError(
                    f"`schedule` has {len(schedule)} stages but there are only "
                    f"{len(groups)} groups to unfreeze. Received: "
                    f"schedule={schedule!r}, len(groups)={len(groups)}"
                )
            schedule = [int(e) for e in schedule]
        if head is not None:
            if isinstance(head, keras.layers.Layer):
                head = [head]
            if not isinstance(head, (list, tuple)) or not head or not all(
                isinstance(l, keras.layers.Layer) for l in head
            ):
                raise ValueError(
                    "`head` must be None or a non-empty list of layers. "
                    f"Received: head={head!r}"
                )
            head = list(head)
        if not isinstance(train_batchnorm, bool):
            raise ValueError(
                "`train_batchnorm` must be a boolean. "
                f"Received: train_batchnorm={train_batchnorm!r}"
            )
        self.groups = groups
        self.epochs_per_stage = int(epochs_per_stage)
        self.schedule = schedule
        self.head = head
        self.train_batchnorm = train_batchnorm
        self.log_dir = grouped.check_log_dir(log_dir)
        self.stage = None
        self._writer = SummaryWriter(log_dir) if log_dir else None
        self._prepared_for = None

    @property
    def num_stages(self):
        """Number of stages after stage 0."""
        return len(self.schedule) if self.schedule else len(self.groups)

    def stage_at(self, epoch):
        """The stage of epoch `epoch` (0-based): 0 is head only."""
        if self.schedule is not None:
            return sum(1 for start in self.schedule if start <= epoch)
        return min(epoch // self.epochs_per_stage, len(self.groups))

    def set_model(self, model):
        super().set_model(model)
        if getattr(model, "optimizer", None) is not None:
            self._prepare(model)

    def _prepare(self, model):
        if self._prepared_for is model:
            return
        self._groups = grouped.resolve_groups(
            model, self.groups, "GradualUnfreezer"
        )
        in_groups = {id(l) for g in self._groups for l in g}
        all_layers = grouped.model_layers(model)
        for i, group in enumerate(self._groups):
            if not any(
                grouped.trainable_capable(sub)
                for layer in group
                for sub in [layer] + grouped.model_layers(layer)
                if self.train_batchnorm or not _is_batchnorm(sub)
            ):
                raise ValueError(
                    f"Group {i} ({[l.name for l in group]}) has nothing to "
                    "unfreeze: no trainable-capable weight"
                    + ("" if self.train_batchnorm else
                       " outside BatchNormalization layers (pass "
                       "`train_batchnorm=True` to train those)")
                    + f". Received: groups[{i}]={[l.name for l in group]}"
                )
        ancestors = self._ancestors(model)
        if self.head is None:
            head = [
                l
                for l in all_layers
                if id(l) not in in_groups
                and not children(l)
                and l.trainable
                and l.trainable_weights
                and not any(id(p) in in_groups for p in ancestors.get(id(l), []))
            ]
        else:
            head = self.head
        needs_head = self.schedule is None or self.schedule[0] > 0
        if needs_head and not head:
            raise ValueError(
                "`GradualUnfreezer` found no head to train in stage 0: no "
                "trainable, weight-bearing layer outside `groups`. Pass "
                "`head=` or start `schedule` at epoch 0. Received: head=None"
            )
        self._head = head
        # Containers of group layers must be trainable for their layers to
        # train; setting them trainable flips every sublayer, so the others
        # get their own flag back.
        containers = {id(model): model}
        for layer in (l for g in self._groups for l in g):
            for parent in ancestors.get(id(layer), []):
                containers[id(parent)] = parent
        saved = {id(l): (l, l.trainable) for l in all_layers}
        for container in containers.values():
            container.trainable = True
        for layer, flag in saved.values():
            if id(layer) not in containers:
                layer.trainable = flag
        for layer in head:
            layer.trainable = True
        self._optimizer = grouped.install(model, self._groups)
        self.stage = None
        self._prepared_for = model

    @staticmethod
    def _ancestors(model):
        parents = {}

        def walk(container, chain):
            for layer in children(container):
                parents[id(layer)] = chain
                walk(layer, chain + [layer])

        walk(model, [])
        return parents

    def _set_group(self, group, unfrozen):
        for layer in group:
            layer.trainable = unfrozen
            for sub in [layer] + grouped.model_layers(layer):
                if _is_batchnorm(sub):
                    sub.trainable = unfrozen and self.train_batchnorm

    def _apply_stage(self, stage):
        n = len(self._groups)
        for i, group in enumerate(self._groups):
            self._set_group(group, i >= n - stage)
        self.stage = stage
        self.model.make_train_function(force=True)

    def trainable_params(self):
        return int(
            sum(np.prod(v.shape) for v in self.model.trainable_weights)
        )

    def on_train_begin(self, logs=None):
        self._prepare(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        stage = self.stage_at(epoch)
        if stage == self.stage:
            return
        previous = self.stage
        self._apply_stage(stage)
        if self._writer is not None:
            n = len(self._groups)
            opened = [
                [l.name for l in self._groups[i]]
                for i in range(n - stage, n - (previous or 0))
            ]
            self._writer.text(
                "unfreezing/stage_change",
                f"epoch {epoch}: stage {stage} of {self.num_stages}, "
                f"{self.trainable_params()} trainable parameters; "
                + (f"unfroze groups {opened}" if previous is not None and
                   stage > previous else f"groups trainable: "
                   f"{list(range(n - stage, n))}"),
                step=epoch,
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["unfreeze_stage"] = self.stage
            logs["trainable_params"] = self.trainable_params()
            logs.update(grouped.rate_logs(self.model))

    def on_train_end(self, logs=None):
        self._prepared_for = None
        if self._writer is not None:
            self._writer.close()

    def get_config(self):
        if self.head is not None:
            raise ValueError(
                "`GradualUnfreezer` with an explicit `head` of layer objects "
                "has no JSON config. Received: head="
                f"{[l.name for l in self.head]}"
            )
        return {
            "groups": grouped.names_of(self.groups),
            "epochs_per_stage": self.epochs_per_stage,
            "schedule": self.schedule,
            "head": None,
            "train_batchnorm": self.train_batchnorm,
            "log_dir": self.log_dir,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
