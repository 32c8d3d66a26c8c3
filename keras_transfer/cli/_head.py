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
"""

LEARNING_RATES = (3e-3, 1e-2)
L2_PENALTIES = (1e-4, 3e-4, 1e-3, 3e-3)
MAX_EPOCHS = 100
PATIENCE = 10
# Early stopping ignores gains below this (nats of validation cross-entropy).
MIN_DELTA = 1e-3


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


def build_head(feature_shape, num_classes, l2):
    """`[pooling] -> Dense(num_classes, softmax, L2 kernel)`: a linear probe.

    No dropout: the L2 penalty, chosen on validation data, is the
    regularizer, and the problem stays convex.
    """
    import keras

    layers = [keras.Input(shape=feature_shape)]
    if len(feature_shape) == 3:
        layers.append(keras.layers.GlobalAveragePooling2D(name="avg_pool"))
    elif len(feature_shape) == 2:
        layers.append(keras.layers.GlobalAveragePooling1D(name="avg_pool"))
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


def _train(features, y, num_classes, learning_rate, l2, epochs, batch_size,
           validation_data, callbacks, verbose):
    import keras

    head = build_head(features.shape[1:], num_classes, l2)
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


def fit_feature_extraction(args, base, x, y, x_test, y_test, num_classes, tensorboard):
    """Returns `(model, history, settings)`; `history` ends with the test
    metrics of the final model, `settings` records what was chosen."""
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
    )
    model = build_classifier(base, head=head)
    settings = {
        "learning_rate": rate, "l2": penalty, "epochs": int(epochs),
        "validation_fraction": args.validation_fraction if searched else None,
        "searched": searched,
    }
    return model, history, settings
