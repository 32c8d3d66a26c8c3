"""Feature extraction: a frozen base, a new head trained on cached features."""

import os

import keras

from keras_transfer.strategies.feature_cache import FeatureCache
from keras_transfer.strategies.feature_cache import _is_tf_dataset
from keras_transfer.strategies.inference_mode import InferenceMode
from keras_transfer.strategies.registry import register_strategy


def _check_positive_int(name, value, allow_zero=False):
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        allowed = "a non-negative" if allow_zero else "a positive"
        raise ValueError(
            f"`{name}` must be {allowed} integer. Received: {name}={value!r}"
        )


def _check_base_and_head(base, head):
    if not isinstance(base, keras.layers.Layer):
        raise ValueError(
            f"`base` must be a Keras model or layer. Received: base={base!r}"
        )
    if not isinstance(head, keras.layers.Layer):
        raise ValueError(
            f"`head` must be a Keras model or layer. Received: head={head!r}"
        )


def _new_inputs(base):
    """Fresh `keras.Input`s with the structure, shapes and dtypes of `base`'s."""
    try:
        if isinstance(base, keras.Sequential):
            # `Sequential.input` raises in Keras 3 even when the model starts
            # with `keras.Input`; `inputs` is its one-element list then.
            inputs = base.inputs
            if not inputs:
                raise ValueError("no inputs")
            inputs = inputs[0]
        else:
            inputs = base.input
    except (AttributeError, ValueError) as e:
        raise ValueError(
            "`base` must have defined inputs (a functional model, or a "
            "`Sequential` starting with `keras.Input`). "
            f"Received: base '{base.name}' of type {type(base).__name__}"
        ) from e
    return keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name),
        inputs,
    )


def _full_model(base, head, augmentation=None, name=None):
    """`inputs -> augmentation -> InferenceMode(base) -> head`."""
    inputs = _new_inputs(base)
    x = inputs if augmentation is None else augmentation(inputs)
    outputs = head(InferenceMode(base)(x))
    return keras.Model(inputs, outputs, name=name)


def _default_head(feature_shape, num_classes, dropout):
    layers = [keras.Input(shape=feature_shape)]
    if len(feature_shape) == 3:
        layers.append(keras.layers.GlobalAveragePooling2D(name="avg_pool"))
    elif len(feature_shape) == 2:
        layers.append(keras.layers.GlobalAveragePooling1D(name="avg_pool"))
    elif len(feature_shape) != 1:
        raise ValueError(
            "`base` must output features of shape (batch, d), "
            "(batch, steps, d) or (batch, h, w, d) for the default head; "
            "pass your own `head=` otherwise. Received: base output shape "
            f"{(None,) + tuple(feature_shape)}"
        )
    if dropout > 0:
        layers.append(keras.layers.Dropout(dropout, name="dropout"))
    # float32 even under mixed precision: softmax in fp16 saturates.
    layers.append(
        keras.layers.Dense(
            num_classes, activation="softmax", dtype="float32", name="predictions"
        )
    )
    return keras.Sequential(layers, name="head")


def build_classifier(
    base,
    num_classes=None,
    head=None,
    dropout=0.2,
    augmentation=None,
    name="classifier",
):
    """Builds `inputs -> [augmentation] -> base -> head` as a functional model.

    The base is wrapped in `InferenceMode`, so its Dropout stays off and its
    BatchNormalization layers use their moving statistics whether or not the
    base is trainable (the recipe of the Keras transfer-learning guide;
    a plain `base(x, training=False)` is overridden by `fit` in Keras 3).
    The head is a single layer of the model (`model.get_layer("head")` for
    the default one), so it can also train alone on cached features with
    `fit_feature_extraction`. Weights are shared: training `base` or `head`
    through any model trains this one. `base.trainable` is left as it is.

    Args:
        base: a built Keras model with defined inputs, e.g.
            `keras_transfer.backbones.efficientnet_lite0(...)`.
        num_classes: number of classes of the default head
            (`[pooling] -> Dropout -> Dense(num_classes, "softmax")`,
            float32 output). Give either `num_classes` or `head`.
        head: your own head, a layer or model taking the base's output.
        dropout: dropout rate before the default head's `Dense`, in [0, 1).
            Defaults to 0.2.
        augmentation: optional layer (e.g. a `keras.layers.Pipeline` of
            random preprocessing layers) applied to the inputs in training.
        name: the model's name.

    Returns:
        A `keras.Model` that predicts, evaluates, fits and saves as usual.

    Example:

    ```python
    base = keras_transfer.backbones.efficientnet_lite0(
        input_shape=(96, 96, 3), include_top=False, pooling="avg"
    )
    model = keras_transfer.strategies.build_classifier(base, num_classes=10)
    keras_transfer.strategies.fit_feature_extraction(
        base, model.get_layer("head"), x_train, y_train, epochs=10
    )
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.evaluate(x_test, y_test)
    ```
    """
    if not isinstance(base, keras.layers.Layer):
        raise ValueError(
            f"`base` must be a Keras model or layer. Received: base={base!r}"
        )
    if (num_classes is None) == (head is None):
        raise ValueError(
            "Pass exactly one of `num_classes` (for the default head) and "
            f"`head`. Received: num_classes={num_classes!r}, head={head!r}"
        )
    if head is None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                "`num_classes` must be an integer >= 2. "
                f"Received: num_classes={num_classes!r}"
            )
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0 <= dropout < 1
        ):
            raise ValueError(
                f"`dropout` must be a number in [0, 1). Received: dropout={dropout!r}"
            )
    elif not isinstance(head, keras.layers.Layer):
        raise ValueError(
            f"`head` must be a Keras model or layer. Received: head={head!r}"
        )
    inputs = _new_inputs(base)
    x = inputs if augmentation is None else augmentation(inputs)
    features = InferenceMode(base)(x)
    if head is None:
        head = _default_head(tuple(features.shape[1:]), num_classes, float(dropout))
    return keras.Model(inputs, head(features), name=name)


def _as_cache(cache, base, batch_size, verbose):
    if isinstance(cache, FeatureCache):
        if cache.base is not base:
            raise ValueError(
                "`cache` was made for another base model "
                f"('{cache.base.name}', not '{base.name}'). "
                f"Received: cache={cache!r}"
            )
        return cache
    if cache is True:
        return FeatureCache(base, batch_size=batch_size, verbose=verbose)
    if isinstance(cache, (str, os.PathLike)):
        return FeatureCache(base, directory=cache, batch_size=batch_size, verbose=verbose)
    raise ValueError(
        "`cache` must be True (in memory), a folder path (on disk), a "
        f"`FeatureCache`, or False (no cache). Received: cache={cache!r}"
    )


def _cached_data(cache, x, y, sample_weight, argument):
    """Returns `(features, y, sample_weight)` for arrays or a dataset."""
    if _is_tf_dataset(x):
        if y is not None or sample_weight is not None:
            raise ValueError(
                f"`{argument}` is a dataset, so the labels come from it; do "
                "not also pass `y` or `sample_weight`. "
                f"Received: y={type(y).__name__}, "
                f"sample_weight={type(sample_weight).__name__}"
            )
        result = cache.transform(x)
        if not isinstance(result, tuple):
            raise ValueError(
                f"`{argument}` must yield `(x, y)` or `(x, y, sample_weight)` "
                "batches to train on. Received: a dataset yielding `x` only"
            )
        return result + (None,) * (3 - len(result))
    return cache.transform(x), y, sample_weight


def _cached_validation(cache, validation_data):
    if validation_data is None:
        return None
    if _is_tf_dataset(validation_data):
        features, y, sample_weight = _cached_data(
            cache, validation_data, None, None, "validation_data"
        )
    elif isinstance(validation_data, tuple) and len(validation_data) in (2, 3):
        features = cache.transform(validation_data[0])
        y, sample_weight = (validation_data[1:] + (None,))[:2]
    else:
        raise ValueError(
            "`validation_data` must be `(x, y)`, `(x, y, sample_weight)` or "
            "a dataset. Received: validation_data of type "
            f"{type(validation_data).__name__}"
        )
    if sample_weight is None:
        return features, y
    return features, y, sample_weight


def _compile_args(optimizer, loss, metrics):
    return dict(
        optimizer=optimizer,
        loss=loss,
        metrics=list(metrics) if metrics is not None else None,
    )


@register_strategy("feature_extraction")
def fit_feature_extraction(
    base,
    head,
    x=None,
    y=None,
    validation_data=None,
    epochs=1,
    batch_size=32,
    optimizer="adam",
    loss="sparse_categorical_crossentropy",
    metrics=("accuracy",),
    callbacks=None,
    cache=True,
    augmentation=None,
    shuffle=True,
    sample_weight=None,
    class_weight=None,
    verbose="auto",
):
    """Trains a new `head` on a frozen `base`, from cached features.

    The base is frozen (`base.trainable = False`) and run once, in inference
    mode, over `x` (and the validation inputs) by a `FeatureCache`; the head
    is then compiled and fitted on the features. Without augmentation this
    is the same training as fitting `inputs -> InferenceMode(base) -> head`
    with the base frozen (same batches, same updates, up to float rounding
    of the base's forward pass), but the base runs once instead of once per
    epoch. The head's weights are shared with any model it is part of, so a
    model from `build_classifier(base, head=head)` is trained afterwards.

    With `cache=False` it fits that full frozen-base model instead (the base
    runs every epoch). This is also the only way to use random
    `augmentation`: augmented inputs differ every epoch, so their features
    cannot be cached, and asking for both raises an error.

    Args:
        base: the pretrained `keras.Model` with defined inputs. Frozen here.
        head: the new layer or model mapping the base's output to
            predictions, e.g. `model.get_layer("head")`.
        x: input data: NumPy array(s) (a dict for multi-input bases) or a
            batched `tf.data.Dataset` of `(x, y)` / `(x, y, sample_weight)`.
            With a dataset and a cache, the features are collected in one
            pass and the head is fitted on arrays with `batch_size`.
        y: targets for array `x`.
        validation_data: `(x_val, y_val)`, `(x_val, y_val, sample_weight)`
            or a dataset; cached like `x`.
        epochs: number of epochs. Defaults to 1.
        batch_size: batch size of the head's training and of extraction.
        optimizer, loss, metrics: as in `Model.compile`, for the head.
            Defaults: Adam (learning rate 1e-3), sparse categorical
            cross-entropy, accuracy.
        callbacks: list of `keras.callbacks.Callback`. With a cache, their
            `model` is the head-on-features model, not the full model.
        cache: `True` (default, in memory), a folder path (on-disk cache
            reused across runs, see `FeatureCache`), a `FeatureCache` made
            for `base`, or `False` for the naive frozen-base `fit`.
        augmentation: optional input-augmentation layer; requires
            `cache=False`.
        shuffle, sample_weight, class_weight, verbose: as in `Model.fit`.

    Returns:
        The `keras.callbacks.History` of the fit; `history.model` is the
        model that was fitted.
    """
    _check_base_and_head(base, head)
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    if augmentation is not None and cache is not False:
        raise ValueError(
            "Random `augmentation` cannot be combined with a feature cache: "
            "augmented inputs change every epoch, cached features do not. "
            "Pass `cache=False` to fit the full model with the frozen base "
            "in the loop, or drop the augmentation. "
            f"Received: augmentation={augmentation!r}, cache={cache!r}"
        )
    base.trainable = False
    fit_args = dict(
        epochs=epochs,
        callbacks=callbacks,
        shuffle=shuffle,
        class_weight=class_weight,
        verbose=verbose,
    )
    if cache is False:
        model = _full_model(base, head, augmentation)
        model.compile(**_compile_args(optimizer, loss, metrics))
        if _is_tf_dataset(x):
            # A dataset shuffles itself. `fit` ignores `shuffle` there but
            # warns unless it is False (its default is True).
            fit_args["shuffle"] = False
        else:
            fit_args["batch_size"] = batch_size
        return model.fit(
            x,
            y,
            validation_data=validation_data,
            sample_weight=sample_weight,
            **fit_args,
        )
    cache = _as_cache(cache, base, batch_size, verbose=0)
    features, y, sample_weight = _cached_data(cache, x, y, sample_weight, "x")
    validation_data = _cached_validation(cache, validation_data)
    inputs = keras.Input(shape=features.shape[1:], dtype=str(features.dtype))
    model = keras.Model(inputs, head(inputs), name=f"{head.name}_on_features")
    model.compile(**_compile_args(optimizer, loss, metrics))
    return model.fit(
        features,
        y,
        batch_size=batch_size,
        validation_data=validation_data,
        sample_weight=sample_weight,
        **fit_args,
    )
