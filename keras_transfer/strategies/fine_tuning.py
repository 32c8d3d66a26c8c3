"""Fine-tuning with the standard recipe: head warm-up, then the whole model."""

import keras

from keras_transfer.strategies.feature_cache import _is_tf_dataset
from keras_transfer._keras_private import all_layers
from keras_transfer.strategies.feature_extraction import _check_base_and_head
from keras_transfer.strategies.feature_extraction import _check_positive_int
from keras_transfer.strategies.feature_extraction import _compile_args
from keras_transfer.strategies.feature_extraction import _full_model
from keras_transfer.strategies.feature_extraction import fit_feature_extraction
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


@register_strategy("fine_tuning")
def fine_tune(
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
    """Fine-tunes a pretrained `base` with a new `head`, the standard way.

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
