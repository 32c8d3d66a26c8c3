"""Fitting the head of a feature-extraction run, with settings chosen fairly.

The frozen base runs once over the training and test examples
(`FeatureCache`). A stratified validation split is carved from the
TRAINING examples; each candidate (Adam learning rate, L2 penalty on the
head's kernel) trains on the rest with early stopping on the validation
cross-entropy (without the L2 term, which would favour small penalties).
The candidate with the lowest validation cross-entropy is then refitted on all
training examples for its best number of epochs. The test examples are only
evaluated at the end: no choice is made on them.

Options the user gives (`--learning-rate`, `--l2`, `--epochs`) are used as
given: they remove that setting from the search (and a given `--epochs`
turns early stopping off). With all three given there is no search.

Audio features are standardised first (`STANDARDIZED_MODALITIES`): the
speech embedding's outputs are unscaled (values up to about 70), and a
linear head at these rates on them saturates in one epoch (a probability of
1.0 on one class). The head starts with a `Normalization` layer adapted to
the features it trains on (per-feature mean and variance, as the speech
benchmark's recipe, `benchmarks/speech_commands.py`); its statistics are
weights of the head, so the saved model (`RawInputClassifier`) applies the
same standardisation when it predicts.
"""

LEARNING_RATES = (3e-3, 1e-2)
L2_PENALTIES = (1e-4, 3e-4, 1e-3, 3e-3)
MAX_EPOCHS = 100
PATIENCE = 10
# Early stopping ignores gains below this (nats of validation cross-entropy).
MIN_DELTA = 1e-3
# Modalities whose base features the head standardises (see above).
STANDARDIZED_MODALITIES = ("audio",)


def stratified_split(y, fraction, seed):
    """Indices `(fit, validation)`: `fraction` of each class (at least one
    example of every class with two or more) goes to validation."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.asarray(y).reshape(-1)
    validation = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        if len(members) < 2:
            continue
        n = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        validation.extend(members[:n])
    validation = np.sort(np.asarray(validation, dtype=int))
    fit = np.setdiff1d(np.arange(len(y)), validation)
    return fit, validation


def standardizer(features):
    """A `keras.layers.Normalization` adapted to `features` `(N, ...)`, pooled
    over their middle axes as the heads pool them: per-feature mean and
    variance, kept as the layer's weights (saved with the model)."""
    import keras
    import numpy as np

    features = np.asarray(features, dtype="float32")
    if features.ndim > 2:
        features = features.reshape(len(features), -1, features.shape[-1]).mean(1)
    layer = keras.layers.Normalization(name="standardize")
    layer.adapt(features)
    return layer


def _pooling(feature_shape):
    import keras

    if len(feature_shape) == 3:
        return [keras.layers.GlobalAveragePooling2D(name="avg_pool")]
    if len(feature_shape) == 2:
        return [keras.layers.GlobalAveragePooling1D(name="avg_pool")]
    return []


def build_head(feature_shape, num_classes, l2, standardize=None):
    """`[pooling] -> [standardize] -> Dense(num_classes, softmax, L2 kernel)`:
    a linear probe.

    No dropout: the L2 penalty, chosen on validation data, is the
    regularizer, and the problem stays convex. `standardize`: None, or the
    training features to adapt a `Normalization` layer to (`standardizer`).
    """
    import keras

    layers = [keras.Input(shape=feature_shape)] + _pooling(feature_shape)
    if standardize is not None:
        layers.append(standardizer(standardize))
    layers.append(
        keras.layers.Dense(
            num_classes,
            activation="softmax",
            dtype="float32",
            kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
            name="predictions",
        )
    )
    return keras.Sequential(layers, name="head")


def strategy_head(features, num_classes, dropout=0.2):
    """The head of the strategies that train the base too, for standardised
    features: `build_classifier`'s default head (`[pooling] -> Dropout ->
    Dense(softmax, float32)`) with a `Normalization` adapted to `features`
    (the frozen base's training features) after the pooling."""
    import keras

    feature_shape = tuple(features.shape[1:])
    layers = [keras.Input(shape=feature_shape)] + _pooling(feature_shape)
    layers += [
        standardizer(features),
        keras.layers.Dropout(dropout, name="dropout"),
        keras.layers.Dense(
            num_classes, activation="softmax", dtype="float32", name="predictions"
        ),
    ]
    return keras.Sequential(layers, name="head")


def _train(features, y, num_classes, learning_rate, l2, epochs, batch_size,
           validation_data, callbacks, verbose, standardize):
    import keras

    head = build_head(
        features.shape[1:], num_classes, l2, features if standardize else None
    )
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=[
            "accuracy",
            keras.metrics.SparseCategoricalCrossentropy(name="cross_entropy"),
        ],
    )
    history = head.fit(
        features, y, batch_size=batch_size, epochs=epochs,
        validation_data=validation_data, callbacks=callbacks, verbose=verbose,
    )
    return head, history


def fit_feature_extraction(args, base, x, y, x_test, y_test, num_classes, tensorboard,
                           standardize=False):
    """Returns `(model, history, settings)`; `history` ends with the test
    metrics of the final model, `settings` records what was chosen.
    `standardize`: the head starts with a `Normalization` adapted to the
    features it trains on."""
    import keras
    import numpy as np

    from keras_transfer.strategies import FeatureCache
    from keras_transfer.strategies import build_classifier

    base.trainable = False
    cache = FeatureCache(base, batch_size=args.batch_size, verbose=args.verbose)
    features = cache.transform(x)
    test_features = cache.transform(x_test)
    y = np.asarray(y)

    rates = (args.learning_rate,) if args.learning_rate else LEARNING_RATES
    penalties = (args.l2,) if args.l2 is not None else L2_PENALTIES
    candidates = [(r, p) for r in rates for p in penalties]
    searched = []
    epochs = args.epochs
    if len(candidates) > 1 or epochs is None:
        fit_idx, val_idx = stratified_split(y, args.validation_fraction, args.seed)
        validation = (features[val_idx], y[val_idx])
        for rate, penalty in candidates:
            keras.utils.set_random_seed(args.seed)
            callbacks = []
            if args.epochs is None:
                callbacks.append(keras.callbacks.EarlyStopping(
                    monitor="val_cross_entropy", patience=PATIENCE,
                    min_delta=MIN_DELTA,
                ))
            _, history = _train(
                features[fit_idx], y[fit_idx], num_classes, rate, penalty,
                args.epochs or MAX_EPOCHS, args.batch_size, validation, callbacks, 0,
                standardize,
            )
            losses = history.history["val_cross_entropy"]
            best = int(np.argmin(losses))
            searched.append({
                "learning_rate": rate, "l2": penalty,
                "epochs": args.epochs or best + 1,
                "val_cross_entropy": float(losses[best]),
                "val_accuracy": float(history.history["val_accuracy"][best]),
            })
        choice = min(searched, key=lambda s: s["val_cross_entropy"])
        rate, penalty, epochs = choice["learning_rate"], choice["l2"], choice["epochs"]
    else:
        (rate, penalty), = candidates

    keras.utils.set_random_seed(args.seed)
    head, history = _train(
        features, y, num_classes, rate, penalty, epochs, args.batch_size,
        (test_features, np.asarray(y_test)), [tensorboard], args.verbose,
        standardize,
    )
    model = build_classifier(base, head=head)
    settings = {
        "learning_rate": rate, "l2": penalty, "epochs": int(epochs),
        "standardized_features": bool(standardize),
        "validation_fraction": args.validation_fraction if searched else None,
        "searched": searched,
    }
    return model, history, settings
