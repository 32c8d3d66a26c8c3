"""Fine-tuning recipes: `fine_tune`, fastai's two phases in one call."""

import difflib
import inspect
import math
import os
import warnings

import keras
import numpy as np

from keras_transfer import _keras_private
from keras_transfer._keras_private import all_layers
from keras_transfer._validation import check_int
from keras_transfer._validation import check_positive
from keras_transfer.callbacks import _grouped_optimizer as grouped
from keras_transfer.callbacks.discriminative_lr import DiscriminativeLR
from keras_transfer.callbacks.gradual_unfreezer import GradualUnfreezer
from keras_transfer.optimizers.schedules.one_cycle import OneCycle
from keras_transfer.strategies.feature_cache import _is_tf_dataset
from keras_transfer.strategies.feature_extraction import _check_base_and_head
from keras_transfer.strategies.feature_extraction import _check_positive_int
from keras_transfer.strategies.feature_extraction import _compile_args
from keras_transfer.strategies.feature_extraction import _full_model
from keras_transfer.strategies.feature_extraction import build_classifier
from keras_transfer.strategies.feature_extraction import fit_feature_extraction
from keras_transfer.strategies.inference_mode import InferenceMode
from keras_transfer.strategies.layer_groups import layer_groups
from keras_transfer.strategies.lr_find import lr_find
from keras_transfer.strategies.registry import register_strategy


def _check_learning_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"`{name}` must be a positive number. Received: {name}={value!r}"
        )


def unfreeze_base(base, train_batchnorm=False):
    """Makes `base` trainable, keeping BatchNormalization layers frozen.

    `BatchNormalization` layers with `trainable=False` run in inference
    mode in Keras 3 and keep their moving statistics and their `gamma` and
    `beta`. With `train_batchnorm=True` their `gamma`/`beta` train too; the
    statistics still stay put as long as the base runs in `InferenceMode`,
    as in `build_classifier` and `fine_tune`.

    Args:
        base: a Keras model or layer.
        train_batchnorm: whether `BatchNormalization` `gamma`/`beta` train.

    Returns:
        The list of BatchNormalization layers found (nested ones included).
    """
    base.trainable = True
    batchnorms = [
        layer
        for layer in all_layers(base)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in batchnorms:
        layer.trainable = bool(train_batchnorm)
    return batchnorms


def _fine_tune_base_head(
    base,
    head,
    x=None,
    y=None,
    validation_data=None,
    warmup_epochs=2,
    epochs=2,
    batch_size=32,
    learning_rate=1e-5,
    head_learning_rate=1e-3,
    train_batchnorm=False,
    loss="sparse_categorical_crossentropy",
    metrics=("accuracy",),
    callbacks=None,
    cache=True,
    augmentation=None,
    shuffle=True,
    verbose="auto",
):
    """The two-argument form `fine_tune(base, head, x, y, ...)`.

    Fine-tunes a pretrained `base` with a new `head`, the standard way:

    1. Warm-up: the base is frozen and the head trains alone, with Adam at
       `head_learning_rate`, for `warmup_epochs` epochs (through
       `fit_feature_extraction`, so on cached features unless `cache=False`).
       A randomly initialised head would otherwise send large gradients
       into the pretrained weights.
    2. Fine-tuning: the base is unfrozen (BatchNormalization layers stay
       frozen, see `unfreeze_base`), and the full model
       `inputs -> InferenceMode(base) -> head` is compiled once more with a
       fresh Adam at the small `learning_rate` and fitted for `epochs` more
       epochs (numbered on from the warm-up, so the two phases form one
       curve in TensorBoard). The head's Adam moments from the warm-up are
       not carried over.

    Args:
        base: the pretrained `keras.Model` with defined inputs.
        head: the new layer or model on top of it, e.g.
            `build_classifier(base, 10).get_layer("head")`.
        x, y: training data, as in `fit_feature_extraction`.
        validation_data: as in `Model.fit`; evaluated in both phases.
        warmup_epochs: epochs of head-only training. 0 skips the warm-up
            (only sensible for an already trained head). Defaults to 2.
        epochs: epochs of fine-tuning after the warm-up. Defaults to 2.
        batch_size: batch size of both phases (ignored for datasets in the
            fine-tuning phase, which are already batched).
        learning_rate: Adam learning rate of phase 2. Defaults to 1e-5.
        head_learning_rate: Adam learning rate of the warm-up. Defaults to
            1e-3.
        train_batchnorm: whether BatchNormalization `gamma`/`beta` train in
            phase 2. Their moving statistics never change. Defaults to False.
        loss, metrics: as in `Model.compile`, for both phases.
        callbacks: list of callbacks, passed to both phases.
        cache: the warm-up's feature cache, as in `fit_feature_extraction`.
        augmentation: optional input-augmentation layer used in phase 2 and,
            with `cache=False`, in the warm-up.
        shuffle, verbose: as in `Model.fit`.

    Returns:
        A tuple `(warmup_history, history)` of `keras.callbacks.History`
        (`warmup_history` is None when `warmup_epochs=0`);
        `history.model` is the fine-tuned full model.

    Example:

    ```python
    model = keras_transfer.strategies.build_classifier(base, num_classes=10)
    warmup, history = keras_transfer.strategies.fine_tune(
        base, model.get_layer("head"), x_train, y_train,
        warmup_epochs=5, epochs=5, validation_data=(x_val, y_val),
    )
    model.evaluate(x_test, y_test)
    ```
    """
    _check_base_and_head(base, head)
    _check_positive_int("warmup_epochs", warmup_epochs, allow_zero=True)
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    _check_learning_rate("learning_rate", learning_rate)
    _check_learning_rate("head_learning_rate", head_learning_rate)
    if augmentation is not None and cache is not False and warmup_epochs > 0:
        raise ValueError(
            "Random `augmentation` cannot be combined with a feature cache in "
            "the warm-up: augmented inputs change every epoch, cached "
            "features do not. Pass `cache=False`. "
            f"Received: augmentation={augmentation!r}, cache={cache!r}"
        )
    common = dict(
        loss=loss,
        metrics=metrics,
        callbacks=callbacks,
        shuffle=shuffle,
        verbose=verbose,
    )
    warmup_history = None
    if warmup_epochs > 0:
        warmup_history = fit_feature_extraction(
            base,
            head,
            x,
            y,
            validation_data=validation_data,
            epochs=warmup_epochs,
            batch_size=batch_size,
            optimizer=keras.optimizers.Adam(head_learning_rate),
            cache=cache,
            augmentation=augmentation,
            **common,
        )

    unfreeze_base(base, train_batchnorm=train_batchnorm)
    model = _full_model(base, head, augmentation)
    model.compile(
        **_compile_args(keras.optimizers.Adam(learning_rate), loss, metrics)
    )
    fit_args = {} if _is_tf_dataset(x) else {"batch_size": batch_size}
    history = model.fit(
        x,
        y,
        validation_data=validation_data,
        initial_epoch=warmup_epochs,
        epochs=warmup_epochs + epochs,
        callbacks=callbacks,
        shuffle=shuffle,
        verbose=verbose,
        **fit_args,
    )
    return warmup_history, history


@register_strategy("fine_tuning")
def fine_tune(model_or_base, data=None, *args, **kwargs):
    """Fine-tunes a pretrained model in one call: fastai's `fine_tune` recipe.

    `fine_tune(model_or_base, data, epochs=..., ...)` runs two phases, as
    fastai's `Learner.fine_tune(epochs, base_lr, freeze_epochs=1,
    lr_mult=100, pct_start=0.3, div=5)`:

    1. **Head on the frozen base** (`freeze_epochs` epochs): the base is
       frozen, the optimizer runs on a one-cycle schedule
       (`keras_transfer.optimizers.schedules.OneCycle`) with peak `base_lr`,
       `pct_start=freeze_pct_start` (0.99: almost all warm-up),
       `div_factor=25`, `final_div_factor=final_div`.
    2. **Everything, with discriminative rates** (`epochs` epochs, numbered
       on from phase 1): the base is unfrozen (BatchNormalization layers stay
       frozen, so in inference mode, see `unfreeze_base`), the optimizer is
       compiled afresh on a one-cycle schedule with peak `base_lr / 2`,
       `pct_start`, `div_factor=div`, and a
       `keras_transfer.callbacks.DiscriminativeLR` gives the head factor 1
       and the `n` layer groups of the base, from the top down, factors
       `lr_mult ** (-k / n)`, `k = 1 ... n`: the rates are spread
       geometrically from `base_lr / 2` (head) down to `base_lr / 2 /
       lr_mult` (lowest group), as fastai's `slice(base_lr / lr_mult,
       base_lr)`. Every group follows the one-cycle schedule times its
       factor.

    When `base_lr` is None it comes from `lr_find` (fastai's "valley"
    suggestion) on the model with the frozen base, just before phase 1;
    `lr_find` leaves every weight as it found it.

    The optimizer is `optimizer` (cloned, its learning rate replaced by the
    schedules), else the model's compiled optimizer, else fastai's default:
    `AdamW(weight_decay=0.01, beta_1=0.9, beta_2=0.99, epsilon=1e-5)`.
    Differences from fastai: the momentum is not cycled (Keras optimizers
    take a float `beta_1`), and phase 2 starts with fresh optimizer slots
    (fastai keeps the head's Adam moments).

    Callbacks (`EarlyStopping`, `ModelCheckpoint`, `TensorBoard`,
    `BackupAndRestore`, ...) are passed to both phases' `fit`, which see the
    whole model. Phase 2 starts at epoch `freeze_epochs`, so TensorBoard
    and checkpoints number the epochs of both phases as one run. Each
    phase is its own `fit`: an `EarlyStopping` that fires in phase 1 ends
    phase 1 only (its one-cycle schedule cut short) and phase 2 still runs,
    with the callback's state reset, as Keras resets it at every `fit`. A
    `keras.callbacks.BackupAndRestore` resumes an interrupted run in the
    phase it stopped in (phase 1 is skipped when the backup is from phase
    2); it needs an explicit `base_lr`, since `lr_find`'s suggestion depends
    on the random head and a resumed run must keep the interrupted one's
    rates.

    The old form `fine_tune(base, head, x, y, warmup_epochs=..., ...)` (a
    layer as second argument) is still accepted and unchanged: a head
    warm-up at `head_learning_rate`, then the whole model at a fixed
    `learning_rate`, returning `(warmup_history, history)`.

    Args:
        model_or_base: a Keras model to fine-tune whole, or, with
            `num_classes`, a pretrained base to which a new head is added
            (`build_classifier(base, num_classes)`).
        data: training data: a batched `tf.data.Dataset` (or any iterable
            `fit` takes) of `(x, y[, sample_weight])`, a tuple `(x, y)` or
            `(x, y, sample_weight)` of arrays, or `x` alone with `y=`.
        y: targets when `data` is `x`.
        epochs: int >= 1, epochs of phase 2. Defaults to 1.
        freeze_epochs: int >= 0, epochs of phase 1 (0 skips it). Defaults
            to 1.
        base_lr: positive float, the peak rate of phase 1 (phase 2 peaks at
            half of it). None runs `lr_find`. fastai's default is 2e-3.
        lr_mult: positive float, ratio of the head's rate to the lowest
            group's. Defaults to 100.
        num_classes: int >= 2: `model_or_base` is a base and gets
            `build_classifier`'s default softmax head.
        base: the pretrained part of `model_or_base` (a layer of it or its
            name). None finds the layer wrapped in `InferenceMode` (as
            `build_classifier` builds it).
        groups: layer groups of the base, input -> output, as
            `layer_groups` returns them. None takes
            `layer_groups(base, blocks="auto", num_groups=num_groups)`, or
            `layer_groups(base, num_groups=num_groups)` for a base without
            blocks.
        num_groups: int >= 1, groups of the base when `groups` is None.
            Defaults to 2 (fastai's split of a CNN body).
        optimizer: a Keras optimizer (instance or name) the groups can
            drive (one `Optimizer`, no `global_clipnorm`,
            `gradient_accumulation_steps` or `use_ema`).
        loss, metrics: as in `Model.compile`. None keeps the compiled ones,
            or sparse categorical cross-entropy and accuracy for a model
            that is not compiled.
        pct_start: fraction of phase 2's steps spent warming up, in
            [0, 1). Defaults to 0.3.
        div: phase 2's `base_lr / 2` over its starting rate. Defaults to 5.
        final_div: the peak over the final rate, both phases. Defaults to
            1e5.
        freeze_pct_start: `pct_start` of phase 1. Defaults to 0.99.
        freeze_div: `div` of phase 1. Defaults to 25.
        batch_size: batch size for array data. Defaults to 32. Must be None
            for a dataset (already batched).
        steps_per_epoch: steps per epoch; needed for a dataset without a
            known length, and used to size the schedules.
        validation_data, callbacks, class_weight, shuffle, verbose: as in
            `Model.fit`, for both phases.
        train_batchnorm: whether BatchNormalization `gamma`/`beta` train in
            phase 2 (their moving statistics never change). Defaults to
            False.
        lr_find_steps: int >= 6, steps of the `lr_find` run. Defaults to
            100.

    Returns:
        A `FineTuneHistory`: a `keras.callbacks.History` whose `history`
        holds both phases (epochs `0 ... freeze_epochs + epochs - 1`, with
        `lr_head` and `lr_group_{i}`, each group's effective rate at the
        epoch's end, 0 while frozen), plus `phases` (the two phases'
        histories), `base_lr`, `lr_finder` (the `LRFinderResult`, or None),
        `groups` and `factors`. `history.model` is the fine-tuned model.

    Example:

    ```python
    base = keras_transfer.backbones.efficientnet_lite0(
        include_top=False, pooling="avg", input_shape=(96, 96, 3)
    )
    history = keras_transfer.strategies.fine_tune(
        base, (x_train, y_train), epochs=3, num_classes=10,
        validation_data=(x_val, y_val),
        callbacks=[keras.callbacks.EarlyStopping(patience=2)],
    )
    model = history.model
    ```

    Reference:
        fastai's [`Learner.fine_tune`](https://docs.fast.ai/callback.schedule.html#learner.fine_tune);
        [Howard & Ruder, ULMFiT, ACL 2018](https://arxiv.org/abs/1801.06146);
        [Smith & Topin, Super-Convergence, 2019](https://arxiv.org/abs/1708.07120).
    """
    if isinstance(data, keras.layers.Layer):
        _check_keywords(_fine_tune_base_head, kwargs, 2 + len(args),
                        "fine_tune(base, head, x, y, ...)")
        return _fine_tune_base_head(model_or_base, data, *args, **kwargs)
    if "head" in kwargs:
        head = kwargs.pop("head")
        if data is not None:
            args = (data,) + args
        _check_keywords(_fine_tune_base_head, kwargs, 2 + len(args),
                        "fine_tune(base, head=..., x, y, ...)")
        return _fine_tune_base_head(model_or_base, head, *args, **kwargs)
    _check_keywords(_fine_tune_recipe, kwargs, 2,
                    "fine_tune(model_or_base, data, ...)")
    if args:
        raise TypeError(
            "`fine_tune(model_or_base, data, epochs=..., ...)` takes keyword "
            "arguments after `data` (the old form `fine_tune(base, head, x, "
            "y, ...)` needs a Keras layer as its second argument). Received "
            f"{len(args)} more positional argument(s) after data of type "
            f"{type(data).__name__}"
        )
    return _fine_tune_recipe(model_or_base, data, **kwargs)


def _check_keywords(function, kwargs, num_positional, form):
    """Raises a `TypeError` naming `fine_tune` (not the private `function`
    it hands over to) for a keyword `function` does not take, or one given
    twice (also positionally)."""
    names = list(inspect.signature(function).parameters)
    allowed = names[2:]
    unknown = sorted(k for k in kwargs if k not in names)
    if unknown:
        described = []
        for key in unknown:
            match = difflib.get_close_matches(key, allowed, n=1)
            described.append(
                repr(key) + (f" (did you mean `{match[0]}`?)" if match else "")
            )
        raise TypeError(
            f"`fine_tune` got unexpected keyword argument(s) "
            f"{', '.join(described)}. The form `{form}` takes: "
            f"{', '.join(allowed)}."
        )
    twice = sorted(k for k in kwargs if k in names[:num_positional])
    if twice:
        raise TypeError(
            f"`fine_tune` got multiple values for argument(s) "
            f"{', '.join(repr(k) for k in twice)} (given by position and by "
            f"keyword). The form `{form}` takes: {', '.join(names)}."
        )


class FineTuneHistory(keras.callbacks.History):
    """The `History` of both phases of `fine_tune`.

    Attributes:
        history: dict of lists, one entry per epoch of both phases (a
            quantity one phase does not log is NaN in the other).
        epoch: the epoch indices, `0 ... freeze_epochs + epochs - 1`.
        model: the fine-tuned model.
        phases: `(phase_1, phase_2)`, each a `History` (None when the phase
            did not run).
        base_lr: the peak rate of phase 1 (phase 2 peaks at half of it).
        lr_finder: the `LRFinderResult` when `base_lr` came from `lr_find`.
        groups: the base's layer groups, input -> output.
        factors: the rate factors, head first, then the groups from the top
            down.
    """

    def __init__(self, model, phases, base_lr, lr_finder, groups, factors):
        super().__init__()
        self.set_model(model)
        self.phases = tuple(phases)
        self.base_lr = base_lr
        self.lr_finder = lr_finder
        self.groups = groups
        self.factors = factors
        ran = [p for p in self.phases if p is not None]
        keys = []
        for phase in ran:
            keys += [k for k in phase.history if k not in keys]
        self.epoch = [e for phase in ran for e in phase.epoch]
        self.history = {
            key: [
                value
                for phase in ran
                for value in phase.history.get(key, [math.nan] * len(phase.epoch))
            ]
            for key in keys
        }


class _FrozenRates(keras.callbacks.Callback):
    """Phase 1's rates under the names `DiscriminativeLR` logs in phase 2:
    `lr_head` the optimizer's rate now, every group 0.0 (frozen)."""

    def __init__(self, num_groups):
        super().__init__()
        self.num_groups = num_groups

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        rate = self.model.optimizer.learning_rate
        logs["lr_head"] = float(keras.ops.convert_to_numpy(rate))
        for i in range(self.num_groups):
            logs[f"lr_group_{i}"] = 0.0


def _check_fraction(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value < 1
    ):
        raise ValueError(
            f"`{name}` must be a number in [0, 1): the fraction of the "
            f"phase's steps spent warming up. Received: {name}={value!r}"
        )
    return float(value)


def _one_cycle(peak, steps, pct_start, div, final_div, name):
    """fastai's `fit_one_cycle` schedule over `steps` steps: the warm-up
    is `round(pct_start * steps)` steps, at most `steps - 1`."""
    warmup = min(int(round(pct_start * steps)), steps - 1)
    return OneCycle(
        peak,
        total_steps=steps,
        warmup_steps=warmup,
        div_factor=div,
        final_div_factor=final_div,
        name=name,
    )


def _find_base(model, base):
    layers = grouped.model_layers(model)
    if base is None:
        found = [l.layer for l in layers if isinstance(l, InferenceMode)]
        if len(found) != 1:
            raise ValueError(
                "`fine_tune` could not tell the pretrained base from the "
                f"head: model '{model.name}' has {len(found)} layers wrapped "
                "in `InferenceMode` (needs exactly one, as "
                "`build_classifier` builds). Pass `base=` (the base layer or "
                "its name), or the base alone with `num_classes=`. "
                "Received: base=None"
            )
        return found[0]
    if isinstance(base, str):
        found = [l for l in layers if l.name == base]
        if len(found) != 1:
            raise ValueError(
                f"`base` names a layer that model '{model.name}' has "
                f"{len(found)} times (needs exactly one). Available layers: "
                f"{[l.name for l in layers]}. Received: base={base!r}"
            )
        return found[0]
    if not isinstance(base, keras.layers.Layer) or not any(
        l is base for l in layers
    ):
        raise ValueError(
            f"`base` must be a layer of model '{model.name}' (or its name). "
            f"Received: base={base!r}"
        )
    return base


def _is_array_like(value):
    return hasattr(value, "shape") or isinstance(value, (dict, list))


def _split_data(data, y, sample_weight):
    """`(x, y, sample_weight)` from `data` (+ `y`)."""
    if data is None:
        raise ValueError(
            "`fine_tune` needs training `data`: a dataset, `(x, y)` arrays, "
            "or `x` with `y=`. Received: data=None"
        )
    if (
        isinstance(data, tuple)
        and len(data) in (2, 3)
        and all(_is_array_like(a) for a in data)
    ):
        if y is not None or sample_weight is not None:
            raise ValueError(
                "`data` is a tuple `(x, y[, sample_weight])`; do not also pass "
                "`y` or `sample_weight`. Received: data of length "
                f"{len(data)}, y={type(y).__name__}, "
                f"sample_weight={type(sample_weight).__name__}"
            )
        return tuple(data) + (None,) * (3 - len(data))
    return data, y, sample_weight


def _steps_per_epoch(x, batch_size, steps_per_epoch, arrays):
    if steps_per_epoch is not None:
        return check_int(steps_per_epoch, "steps_per_epoch")
    if arrays:
        count = int(keras.tree.flatten(x)[0].shape[0])
        return max(1, math.ceil(count / batch_size))
    try:
        count = len(x)
    except TypeError:
        count = -1
    if count < 1:
        raise ValueError(
            "`fine_tune` sizes its one-cycle schedules by the steps per "
            "epoch, and `data` has no known length (an infinite or filtered "
            "dataset, a generator). Pass `steps_per_epoch=`. "
            f"Received: data of type {type(x).__name__}, steps_per_epoch=None"
        )
    return int(count)


def _template_optimizer(model, optimizer):
    if optimizer is None:
        if getattr(model, "compiled", False) and model.optimizer is not None:
            optimizer = model.optimizer
            if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                optimizer = optimizer.inner_optimizer
            if isinstance(optimizer, grouped.GroupedOptimizer):
                optimizer = optimizer.group_optimizers[-1]
        else:
            # fastai's `Adam` defaults: decoupled weight decay 0.01,
            # momentum 0.9, squared momentum 0.99, eps 1e-5.
            optimizer = keras.optimizers.AdamW(
                weight_decay=0.01, beta_1=0.9, beta_2=0.99, epsilon=1e-5
            )
    elif isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer) or isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        raise ValueError(
            "`optimizer` must be a Keras optimizer (an instance or a name "
            "such as 'adam'); mixed precision's loss scaling is added by "
            f"`compile`. Received: optimizer={optimizer!r}"
        )
    grouped._check_supported(optimizer)
    return optimizer


def _with_rate(template, rate):
    config = template.get_config()
    config["learning_rate"] = rate
    return template.__class__.from_config(config)


def _compile_kwargs(model, loss, metrics):
    kwargs = {}
    if getattr(model, "compiled", False):
        config = keras.saving.deserialize_keras_object(model.get_compile_config())
        kwargs = {k: v for k, v in config.items() if k != "optimizer"}
    elif loss is None:
        kwargs = {
            "loss": "sparse_categorical_crossentropy",
            "metrics": ["accuracy"],
        }
    if loss is not None:
        kwargs["loss"] = loss
    if metrics is not None:
        kwargs["metrics"] = list(metrics)
    return kwargs


def _backups(callbacks):
    return [
        c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)
    ]


def _backup_epoch(callback):
    """The epoch a `BackupAndRestore` would resume at (0: no backup)."""
    return _keras_private.backup_epoch(callback)


def _remove_backup(callback):
    for path in _keras_private.backup_files(callback):
        if os.path.exists(path):
            os.remove(path)


class _NumpyBatches:
    """Re-iterable batches of a dataset as NumPy arrays: `lr_find` feeds
    its batches to `train_on_batch`, which on JAX takes no `tf.Tensor`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        for batch in self.dataset:
            yield keras.tree.map_structure(np.asarray, batch)


def _default_groups(base, num_groups):
    try:
        return layer_groups(base, blocks="auto", num_groups=num_groups)
    except ValueError as error:
        if "found no blocks" not in str(error):
            raise
    return layer_groups(base, num_groups=num_groups)


def _fine_tune_recipe(
    model_or_base,
    data,
    y=None,
    epochs=1,
    freeze_epochs=1,
    base_lr=None,
    lr_mult=100.0,
    num_classes=None,
    base=None,
    groups=None,
    num_groups=2,
    optimizer=None,
    loss=None,
    metrics=None,
    pct_start=0.3,
    div=5.0,
    final_div=1e5,
    freeze_pct_start=0.99,
    freeze_div=25.0,
    batch_size=None,
    steps_per_epoch=None,
    validation_data=None,
    callbacks=None,
    sample_weight=None,
    class_weight=None,
    shuffle=True,
    train_batchnorm=False,
    lr_find_steps=100,
    verbose="auto",
):
    epochs = check_int(epochs, "epochs")
    freeze_epochs = check_int(freeze_epochs, "freeze_epochs", minimum=0)
    if base_lr is not None:
        base_lr = check_positive(base_lr, "base_lr", "learning rate")
    lr_mult = check_positive(lr_mult, "lr_mult", "rate factor")
    pct_start = _check_fraction(pct_start, "pct_start")
    freeze_pct_start = _check_fraction(freeze_pct_start, "freeze_pct_start")
    div = check_positive(div, "div")
    freeze_div = check_positive(freeze_div, "freeze_div")
    final_div = check_positive(final_div, "final_div")
    lr_find_steps = check_int(lr_find_steps, "lr_find_steps", minimum=6)
    if not isinstance(train_batchnorm, bool):
        raise ValueError(
            "`train_batchnorm` must be a boolean. "
            f"Received: train_batchnorm={train_batchnorm!r}"
        )
    if not isinstance(model_or_base, keras.Model):
        raise ValueError(
            "`model_or_base` must be a Keras model (the model to fine-tune, "
            "or a base with `num_classes=`). "
            f"Received: model_or_base={model_or_base!r}"
        )
    if num_classes is not None:
        if base is not None:
            raise ValueError(
                "With `num_classes`, `model_or_base` is the base; do not also "
                f"pass `base`. Received: base={base!r}"
            )
        base = model_or_base
        model = build_classifier(base, num_classes)
    else:
        model = model_or_base
        base = _find_base(model, base)
    callbacks = list(callbacks or [])
    for callback in callbacks:
        if isinstance(
            callback,
            (
                keras.callbacks.LearningRateScheduler,
                keras.callbacks.ReduceLROnPlateau,
                DiscriminativeLR,
                GradualUnfreezer,
            ),
        ):
            raise ValueError(
                "`fine_tune` sets the learning rates itself (one-cycle "
                "schedules, `DiscriminativeLR` factors) and freezes and "
                f"unfreezes the base; a `{type(callback).__name__}` would "
                "fight it. Use `base_lr`, `lr_mult`, `pct_start`, `div`, or "
                "`model.fit` with your own callbacks. "
                f"Received: callbacks=[..., {callback!r}, ...]"
            )
    backups = _backups(callbacks)
    if backups and base_lr is None:
        raise ValueError(
            "`fine_tune` with `BackupAndRestore` needs an explicit `base_lr`: "
            "`lr_find`'s suggestion depends on the random head, and a resumed "
            "run must keep the rates of the interrupted one. Run `lr_find` "
            "once and pass its suggestion. Received: base_lr=None"
        )

    x, y, sample_weight = _split_data(data, y, sample_weight)
    arrays = _is_array_like(x) and not hasattr(x, "element_spec")
    if arrays:
        batch_size = 32 if batch_size is None else check_int(batch_size, "batch_size")
    elif batch_size is not None:
        raise ValueError(
            "`data` is a dataset, batched already; do not pass `batch_size`. "
            f"Received: batch_size={batch_size!r}"
        )
    steps = _steps_per_epoch(x, batch_size, steps_per_epoch, arrays)

    template = _template_optimizer(model, optimizer)
    compile_kwargs = _compile_kwargs(model, loss, metrics)
    if groups is None:
        groups = _default_groups(base, check_int(num_groups, "num_groups"))
    else:
        groups = grouped.check_groups(groups, "fine_tune")
    n = len(groups)
    factors = [1.0] + [lr_mult ** (-k / n) for k in range(1, n + 1)]

    fit_kwargs = dict(
        validation_data=validation_data,
        class_weight=class_weight,
        verbose=verbose,
    )
    if arrays:
        fit_kwargs.update(
            y=y, sample_weight=sample_weight, batch_size=batch_size,
            shuffle=shuffle,
        )
    else:
        if y is not None or sample_weight is not None:
            raise ValueError(
                "`data` is a dataset, so the targets come from it; do not "
                "also pass `y` or `sample_weight`. "
                f"Received: y={type(y).__name__}, "
                f"sample_weight={type(sample_weight).__name__}"
            )
        fit_kwargs["shuffle"] = False
    if steps_per_epoch is not None:
        fit_kwargs["steps_per_epoch"] = steps

    resume_epoch = max([_backup_epoch(c) for c in backups] or [0])
    base.trainable = False
    finder = None
    phase_1 = None
    if base_lr is None:
        model.compile(optimizer=_with_rate(template, 1e-3), **compile_kwargs)
        if arrays:
            find_data = (x, y) if sample_weight is None else (x, y, sample_weight)
        else:
            find_data = _NumpyBatches(x)
        with warnings.catch_warnings():
            # Its reason is raised below instead.
            warnings.filterwarnings("ignore", message="`lr_find` suggests no")
            finder = lr_find(
                model, find_data, num_steps=lr_find_steps,
                batch_size=batch_size or 32,
            )
        if finder.suggestion is None:
            raise ValueError(
                f"`fine_tune` has no `base_lr` to use: {finder.reason} Pass "
                "`base_lr` (fastai's default is 2e-3), or more "
                f"`lr_find_steps`. Received: base_lr=None, "
                f"lr_find_steps={lr_find_steps}"
            )
        base_lr = finder.suggestion
    if freeze_epochs > 0 and resume_epoch <= freeze_epochs:
        schedule = _one_cycle(
            base_lr, freeze_epochs * steps, freeze_pct_start, freeze_div,
            final_div, "one_cycle_frozen",
        )
        model.compile(optimizer=_with_rate(template, schedule), **compile_kwargs)
        phase_1 = model.fit(
            x,
            epochs=freeze_epochs,
            callbacks=[_FrozenRates(n)] + callbacks,
            **fit_kwargs,
        )
    # Phase 1 is over: a backup it left (`delete_checkpoint=False`) must not
    # be loaded into the phase-2 optimizer.
    if resume_epoch <= freeze_epochs:
        for callback in backups:
            _remove_backup(callback)

    unfreeze_base(base, train_batchnorm=train_batchnorm)
    schedule = _one_cycle(
        base_lr / 2, epochs * steps, pct_start, div, final_div, "one_cycle"
    )
    model.compile(optimizer=_with_rate(template, schedule), **compile_kwargs)
    phase_2 = model.fit(
        x,
        initial_epoch=freeze_epochs,
        epochs=freeze_epochs + epochs,
        callbacks=[DiscriminativeLR(groups, factors=factors)] + callbacks,
        **fit_kwargs,
    )
    return FineTuneHistory(
        model, (phase_1, phase_2), base_lr, finder, groups, factors
    )
