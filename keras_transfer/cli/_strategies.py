"""The strategies of `keras-transfer fit`: one function per strategy.

Every strategy but `feature_extraction` (whose head search is in `_head`)
runs the same way:

1. A stratified validation split is carved from the TRAINING examples
   (`--validation-fraction`, `_head.stratified_split`). The model is
   monitored on it every epoch (`val_*` in the logs and TensorBoard); the
   held-out test examples are evaluated once, at the end.
2. Head warm-up (`--warmup-epochs`, all but `gradual`): the new head trains
   alone on cached features of the frozen base, with Adam at
   `HEAD_LEARNING_RATE`, so its random start sends no large gradients into
   the pretrained weights.
3. The strategy's own phase, with Adam at `--learning-rate` (or the rate
   `--learning-rate find` measured with `strategies.lr_find` on the
   training split):

   - `fine_tuning`: the whole base trains (BatchNormalization frozen).
   - `gradual`: `GradualUnfreezer` + `DiscriminativeLR` on `--stages`
     groups of the base (`layer_groups(blocks="auto")`), one stage every
     `--epochs-per-stage` epochs, each group at `--lr-factor` times the rate
     of the group above it; stage 0 trains the head only.
   - `lora`: `apply_lora` (`--lora-rank`, `--lora-alpha`; keras-hub
     transformers get LoRA on the attention query and value projections,
     other bases on every Dense/EinsumDense/Conv2D, or `--lora-targets`):
     only the LoRA factors and the head train.
   - `adapters`: `add_adapters` (bottleneck `--adapter-size`; Houlsby
     placement in keras-hub transformers, after each `project_conv` in
     EfficientNet-style bases, or `--adapter-targets`): only the adapters
     and the head train.
   - `l2sp`: fine-tuning with the L2-SP penalty (`--l2sp-alpha` on the
     distance of the base's weights to the pretrained ones, `--l2sp-beta`
     weight decay on the head) added to the loss (`regularizers.L2SPModel`).

`auto` measures the target size and the similarity of the target to a
reference set like the base's pretraining data (see `reference_set`), asks
`strategies.recommend_strategy`, and runs its choice.
"""

import argparse

from keras_transfer.cli import _head
from keras_transfer.cli._args import UsageError

# Names `--strategy` takes, in the order `--help` lists them.
STRATEGIES = (
    "feature_extraction", "fine_tuning", "gradual", "lora", "adapters", "l2sp",
    "auto",
)
# Options read by some strategies only. An option given with a value other
# than its default to a strategy that does not read it is refused (see
# `fit._check_applicable`). `auto` reads only what every strategy reads.
STRATEGY_OPTIONS = {
    "warmup_epochs": ("fine_tuning", "lora", "adapters", "l2sp"),
    "l2": ("feature_extraction",),
    "stages": ("gradual",),
    "epochs_per_stage": ("gradual",),
    "lr_factor": ("gradual",),
    "lora_rank": ("lora",),
    "lora_alpha": ("lora",),
    "lora_targets": ("lora",),
    "adapter_size": ("adapters",),
    "adapter_targets": ("adapters",),
    "l2sp_alpha": ("l2sp",),
    "l2sp_beta": ("l2sp",),
}
# Adam rate of each strategy's own phase when `--learning-rate` is not given.
DEFAULT_LEARNING_RATES = {
    "fine_tuning": 1e-5,
    "l2sp": 1e-5,
    "gradual": 1e-3,
    "lora": 1e-3,
    "adapters": 1e-3,
}
DEFAULT_EPOCHS = 3
# Adam rate of the head warm-up on cached features (the linear probes of
# the default data choose 3e-3 or 1e-2 on their validation split).
HEAD_LEARNING_RATE = 3e-3
# `recommend_strategy`'s names -> the `fit` strategy that runs it.
ADVICE_TO_STRATEGY = {
    "feature_extraction": "feature_extraction",
    "gradual_unfreezing": "gradual",
    "fine_tuning": "fine_tuning",
    # No from-scratch training in `fit`; the advice's own alternative is
    # pretrained initialisation.
    "from_scratch": "fine_tuning",
}
# Reference examples `auto` compares the target with.
REFERENCE_SIZE = 256
LR_FIND_STEPS = 100
TRANSFORMER_LORA_TARGETS = r"self_attention_layer/(query|value)$"
IMAGE_ADAPTER_TARGETS = r"block\d+[a-z]_project_conv$"


def add_arguments(parser, _args):
    """Adds the strategy-specific options of `fit` to `parser`."""
    parser.add_argument(
        "--stages", type=_args.int_in(1, 100), default=3,
        help="gradual: groups of the base unfrozen one at a time, top first "
        "(blocks='auto' of layer_groups, merged into this many)",
    )
    parser.add_argument(
        "--epochs-per-stage", type=_args.int_in(1, 1_000), default=1,
        help="gradual: epochs of each stage (stage 0 trains the head only)",
    )
    parser.add_argument(
        "--lr-factor", type=_args.float_in(0.0, 1.0), default=0.5,
        help="gradual: each group's learning rate is this times the rate of "
        "the group above it (DiscriminativeLR, ULMFiT uses 1/2.6)",
    )
    parser.add_argument(
        "--lora-rank", type=_args.int_in(1, 1024), default=8,
        help="lora: rank of the LoRA update",
    )
    parser.add_argument(
        "--lora-alpha", type=_args.float_in(0.0, 1e6), default=None,
        help="lora: LoRA scale numerator (scale alpha/rank; default alpha = rank)",
    )
    parser.add_argument(
        "--lora-targets", default=None,
        help="lora: regular expression of the layer paths that get LoRA; "
        "default the attention query/value of keras-hub transformers, "
        "else every Dense/EinsumDense/Conv2D",
    )
    parser.add_argument(
        "--adapter-size", type=_args.int_in(1, 65_536), default=64,
        help="adapters: bottleneck width of each adapter",
    )
    parser.add_argument(
        "--adapter-targets", default=None,
        help="adapters: regular expression of the layer paths followed by an "
        "adapter; default Houlsby placement in keras-hub transformers, "
        f"{IMAGE_ADAPTER_TARGETS!r} in EfficientNet-style bases",
    )
    parser.add_argument(
        "--l2sp-alpha", type=_args.float_in(0.0, 1e6, low_inclusive=True),
        default=0.01,
        help="l2sp: strength of the pull of the base's weights towards the "
        "pretrained ones (alpha/2 ||w - w0||^2)",
    )
    parser.add_argument(
        "--l2sp-beta", type=_args.float_in(0.0, 1e6, low_inclusive=True),
        default=0.01,
        help="l2sp: weight decay of the head (beta/2 ||w_head||^2)",
    )
    parser.add_argument(
        "--distribution", choices=("none", "data_parallel"), default="none",
        help="data_parallel: fit under keras.distribution.DataParallel over "
        "every device Keras lists (JAX backend only; the batch size and the "
        "last batch of the training, validation and test examples must be "
        "multiples of the device count); not with feature_extraction or auto",
    )
    parser.add_argument(
        "--lr-find-steps", type=_args.int_in(6, 10_000), default=LR_FIND_STEPS,
        help="with --learning-rate find: steps of the range test",
    )


def learning_rate(value):
    """An argparse `type`: a rate in (0, 10], or 'find'."""
    if value.strip().lower() == "find":
        return "find"
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number <= 10:
        raise argparse.ArgumentTypeError(
            f"{value!r} is out of range or not a number. Allowed: a number in "
            "(0, 10], or 'find' (the learning-rate range test)"
        )
    return number


learning_rate.__name__ = "learning rate"


def check_options(args, given):
    """Refuses options the strategy does not read (`given`: names set by the user)."""
    strategy = args.strategy
    for name, readers in STRATEGY_OPTIONS.items():
        if name in given and strategy not in readers:
            option = "--" + name.replace("_", "-")
            raise UsageError(
                f"{option} {getattr(args, name)!r} has no effect with --strategy "
                f"{strategy!r}. Allowed: {option} only with --strategy "
                + " or ".join(readers)
            )
    if "lr_find_steps" in given and args.learning_rate != "find":
        raise UsageError(
            f"--lr-find-steps {args.lr_find_steps} has no effect without "
            "--learning-rate find. Allowed: --lr-find-steps only with "
            "--learning-rate find"
        )
    if args.distribution != "none" and strategy in ("feature_extraction", "auto"):
        raise UsageError(
            f"--distribution {args.distribution!r} has no effect with --strategy "
            f"{strategy!r} (a linear head on cached features, or a choice made "
            "at run time). Allowed: --distribution with --strategy "
            "fine_tuning, gradual, lora, adapters or l2sp"
        )
    if args.learning_rate == "find" and strategy == "feature_extraction":
        raise UsageError(
            "--learning-rate 'find' has no effect with --strategy "
            "'feature_extraction': its head's rate is chosen on the validation "
            "split. Allowed: a number, or find with another strategy"
        )


def _take(x, index):
    import keras

    return keras.tree.map_structure(lambda a: a[index], x)


def _compile(model, rate):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=[
            "accuracy",
            keras.metrics.SparseCategoricalCrossentropy(name="cross_entropy"),
        ],
    )


def _batches(x, y, batch_size, seed):
    """Shuffled `(x, y)` batches of one pass, for `lr_find` (dict inputs)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(y))
    return [
        (_take(x, order[i : i + batch_size]), y[order[i : i + batch_size]])
        for i in range(0, len(y) - batch_size + 1, batch_size)
    ] or [(x, y)]


def _find_rate(args, model, x, y, settings):
    import warnings

    from keras_transfer.strategies import lr_find

    with warnings.catch_warnings():
        # Its reason is the error below instead.
        warnings.filterwarnings("ignore", message="`lr_find` suggests no")
        found = lr_find(
            model, _batches(x, y, args.batch_size, args.seed),
            num_steps=args.lr_find_steps, batch_size=args.batch_size,
            seed=args.seed,
        )
    settings["lr_find"] = {
        "suggestion": found.suggestion,
        "steps": int(len(found.learning_rates)),
        "min_rate": float(found.learning_rates[0]),
        "max_rate": float(found.learning_rates[-1]),
    }
    if found.suggestion is None:
        reason = found.reason.replace("`num_steps`", "--lr-find-steps")
        raise UsageError(
            f"--learning-rate 'find' with --lr-find-steps {args.lr_find_steps}: "
            f"{reason} Allowed: a number for --learning-rate, or more "
            "--lr-find-steps"
        )
    return float(found.suggestion)


# ---------------------------------------------------------------- auto


def _wordnet_glosses(n, seed):
    import numpy as np

    from keras_transfer.data.text import WORDNET_PATH

    glosses = []
    for part in ("noun", "verb", "adj", "adv"):
        path = f"{WORDNET_PATH}/data.{part}"
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("  ") or "| " not in line:
                    continue  # the licence header
                glosses.append(line.split("| ", 1)[1].strip())
    pick = np.random.default_rng(seed).choice(len(glosses), n, replace=False)
    return [glosses[i] for i in sorted(pick)]


def _photo_crops(n, seed):
    import numpy as np
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640 RGB photographs
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        size = int(rng.integers(64, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - size + 1))
        left = int(rng.integers(0, photo.shape[1] - size + 1))
        crops.append((photo, top, left, size))
    return crops


def reference_set(modality, n=REFERENCE_SIZE, seed=0):
    """Raw examples standing in for a base's pretraining data, offline.

    - text: `n` WordNet 3.0 glosses (Debian `wordnet-base`): short general
      English sentences across nouns, verbs, adjectives and adverbs, as
      a proxy for the web and book text sentence encoders are trained on;
    - image: `n` random square crops (64 px to full height) of the two
      natural photographs scikit-learn ships (`load_sample_images`), as a
      proxy for ImageNet photographs. Two photographs are a thin sample;
      the similarity is a rough proxy.

    Returns `(examples, description)`; raises `UsageError` for another
    modality (no reference is shipped).
    """
    if modality == "text":
        try:
            return _wordnet_glosses(n, seed), f"{n} WordNet 3.0 glosses"
        except OSError as e:
            raise UsageError(
                f"--strategy 'auto' compares text data with WordNet glosses, "
                f"which are missing ({e}). Allowed: install the Debian package "
                "wordnet-base, or pick a strategy"
            )
    if modality == "image":
        return _photo_crops(n, seed), (
            f"{n} random crops of scikit-learn's 2 sample photographs"
        )
    raise UsageError(
        f"--strategy 'auto' has no reference data for {modality} inputs (it "
        "ships text and image references only). Allowed: another --strategy"
    )


def _reference_inputs(args, base, modality, examples, image_size):
    import numpy as np

    from keras_transfer.cli import _inputs

    if modality == "text":
        return _inputs.prepare_inputs(args, base, examples)
    from keras_transfer.datasets import resize_images

    return np.concatenate([
        resize_images(
            np.asarray(photo[top : top + size, left : left + size], "float32")[None],
            (image_size, image_size),
        )
        for photo, top, left, size in examples
    ]).astype("float32")


def choose(args, base, x, y, num_classes):
    """`auto`: returns `(strategy, record)` from `recommend_strategy`."""
    import numpy as np

    from keras_transfer.strategies import domain_similarity
    from keras_transfer.strategies import recommend_strategy

    examples, description = reference_set(base.modality, seed=args.seed)
    size = None
    if base.modality == "image":
        size = int(np.asarray(x).shape[1])
    reference = _reference_inputs(args, base, base.modality, examples, size)
    n_target = int(len(y))
    # Target examples: a seeded subset as large as the reference set.
    pick = np.sort(
        np.random.default_rng(args.seed).permutation(n_target)[:REFERENCE_SIZE]
    )
    features = []
    for inputs in (reference, _take(x, pick)):
        out = base.model.predict(inputs, batch_size=args.batch_size, verbose=0)
        out = np.asarray(out)
        features.append(out.reshape(len(out), -1))
    report = domain_similarity(features[0], features[1], seed=args.seed)
    advice = recommend_strategy(n_target, report, n_classes=num_classes)
    strategy = ADVICE_TO_STRATEGY[advice.strategy]
    record = {
        "strategy": strategy,
        "advice": advice.strategy,
        "reason": advice.reason,
        "n_target": advice.n_target,
        "n_classes": int(num_classes),
        "similarity": advice.similarity,
        "size_threshold": advice.size_threshold,
        "similarity_threshold": advice.similarity_threshold,
        "reference": description,
        "n_reference": len(examples),
        "n_target_compared": int(len(pick)),
        "proxy_a_distance": report["proxy_a_distance"],
        "mmd": report["mmd"],
        "domain_logme": report["domain_logme"],
    }
    if strategy != advice.strategy:
        record["reason"] += (
            f" (`fit` has no {advice.strategy!r} strategy; it runs its "
            f"alternative {strategy!r}.)"
        )
    return strategy, record


# ----------------------------------------------------------- strategies


def _warmup(args, base, head, x, y, validation, callbacks, cache=None):
    import keras

    from keras_transfer.strategies import FeatureCache
    from keras_transfer.strategies import fit_feature_extraction

    fit_feature_extraction(
        base, head, x, y, validation_data=validation, epochs=args.warmup_epochs,
        batch_size=args.batch_size,
        optimizer=keras.optimizers.Adam(HEAD_LEARNING_RATE),
        cache=cache or FeatureCache(base, batch_size=args.batch_size, verbose=args.verbose),
        callbacks=callbacks, verbose=args.verbose,
    )


def _fine_tuning(args, base, head, settings):
    from keras_transfer.strategies import build_classifier
    from keras_transfer.strategies import unfreeze_base

    unfreeze_base(base)
    model = build_classifier(base, head=head)
    return model, model, []


def _gradual(args, base, head, settings):
    from keras_transfer.callbacks import DiscriminativeLR
    from keras_transfer.callbacks import GradualUnfreezer
    from keras_transfer.strategies import build_classifier
    from keras_transfer.strategies import layer_groups

    try:
        groups = layer_groups(base, blocks="auto", num_groups=args.stages)
        how = "blocks='auto'"
    except ValueError as e:
        if "found no blocks" not in str(e):
            raise UsageError(f"--stages {args.stages}: {e}")
        try:
            groups = layer_groups(base, num_groups=args.stages)
        except ValueError as e:
            raise UsageError(f"--stages {args.stages}: {e}")
        how = "equal numbers of layers"
    base.trainable = True
    model = build_classifier(base, head=head)
    settings.update(
        stages=args.stages, epochs_per_stage=args.epochs_per_stage,
        lr_factor=args.lr_factor, grouping=how,
        groups=[[layer.name for layer in group] for group in groups],
    )
    callbacks = [
        GradualUnfreezer(
            groups, epochs_per_stage=args.epochs_per_stage, head=[head],
            log_dir=settings["run_dir"],
        ),
        DiscriminativeLR(groups, factor=args.lr_factor),
    ]
    return model, model, callbacks


def _is_transformer(base):
    return any("transformer_layer_" in v.path for v in base.weights)


def _lora(args, base, head, settings):
    from keras_transfer.strategies import apply_lora
    from keras_transfer.strategies import build_classifier

    targets = args.lora_targets
    if targets is None and _is_transformer(base):
        targets = TRANSFORMER_LORA_TARGETS
    try:
        base, changed = apply_lora(
            base, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
            targets=targets,
        )
    except ValueError as e:
        option = "--lora-targets" if args.lora_targets else "--lora-rank"
        value = args.lora_targets if args.lora_targets else args.lora_rank
        raise UsageError(f"{option} {value!r}: {e}")
    settings.update(
        lora_rank=args.lora_rank, lora_alpha=args.lora_alpha or args.lora_rank,
        lora_targets=targets or "every Dense, EinsumDense and Conv2D",
        lora_layers=changed,
    )
    head.trainable = True
    model = build_classifier(base, head=head)
    return model, model, []


def _adapters(args, base, head, settings):
    from keras_transfer.strategies import add_adapters
    from keras_transfer.strategies import build_classifier

    targets = args.adapter_targets
    placement = None
    if targets is None:
        if _is_transformer(base):
            placement = "houlsby"
        elif any(l.name.endswith("_project_conv") for l in _layers(base)):
            targets = IMAGE_ADAPTER_TARGETS
        else:
            raise UsageError(
                f"--base {args.base!r} is neither a keras-hub transformer nor an "
                "EfficientNet-style model, so there is no default place for "
                "adapters. Allowed: --adapter-targets REGEX naming the layers "
                "to follow with an adapter"
            )
    try:
        base, changed = add_adapters(
            base, targets=targets, placement=placement,
            bottleneck=args.adapter_size,
        )
    except ValueError as e:
        option = "--adapter-targets" if args.adapter_targets else "--adapter-size"
        value = args.adapter_targets if args.adapter_targets else args.adapter_size
        raise UsageError(f"{option} {value!r}: {e}")
    settings.update(
        adapter_size=args.adapter_size,
        adapter_placement=placement or targets, adapter_layers=changed,
    )
    head.trainable = True
    model = build_classifier(base, head=head)
    return model, model, []


def _layers(model):
    from keras_transfer._keras_private import all_layers

    return all_layers(model)


def _l2sp(args, base, head, settings):
    from keras_transfer.regularizers import apply_l2sp
    from keras_transfer.strategies import build_classifier
    from keras_transfer.strategies import unfreeze_base

    unfreeze_base(base)
    model = build_classifier(base, head=head)
    trained = apply_l2sp(
        model, layers=[base], head=[head], alpha=args.l2sp_alpha,
        beta=args.l2sp_beta,
    )
    settings.update(l2sp_alpha=args.l2sp_alpha, l2sp_beta=args.l2sp_beta)
    return model, trained, []


BUILDERS = {
    "fine_tuning": _fine_tuning,
    "gradual": _gradual,
    "lora": _lora,
    "adapters": _adapters,
    "l2sp": _l2sp,
}


def run(args, base, x, y, x_test, y_test, num_classes, tensorboard, run_dir):
    """Runs `args.strategy` (or `auto`'s choice).

    Returns `(model, settings, scores)`: the trained classifier to save,
    what was chosen, and `{"test_accuracy", "test_loss",
    "validation_accuracy", "validation_loss"}` (validation: the split of
    the training examples; `None` for feature extraction, which refits on
    all of them).
    """
    import keras
    import numpy as np

    from keras_transfer.strategies import build_classifier

    strategy = args.strategy
    settings = {}
    if strategy == "auto":
        strategy, settings["auto"] = choose(args, base, x, y, num_classes)
        if strategy == "feature_extraction" and args.learning_rate == "find":
            raise UsageError(
                "--learning-rate 'find' has no effect: --strategy 'auto' chose "
                "'feature_extraction', whose head's rate is chosen on the "
                "validation split. Allowed: a number, or another --strategy"
            )
    settings["strategy"] = strategy
    y = np.asarray(y)
    y_test = np.asarray(y_test)
    if strategy == "feature_extraction":
        model, history, chosen = _head.fit_feature_extraction(
            args, base.model, x, y, x_test, y_test, num_classes, tensorboard,
            standardize=base.modality in _head.STANDARDIZED_MODALITIES,
        )
        settings.update(chosen)
        scores = {
            "test_accuracy": float(history.history["val_accuracy"][-1]),
            "test_loss": float(history.history["val_loss"][-1]),
            "validation_accuracy": None,
            "validation_loss": None,
        }
        return model, settings, scores

    fit_idx, val_idx = _head.stratified_split(y, args.validation_fraction, args.seed)
    if len(val_idx) == 0:
        raise UsageError(
            f"--validation-fraction {args.validation_fraction} leaves no "
            f"validation examples of the {len(y)} training examples. Allowed: "
            "more data (two or more examples of a class) or a larger fraction"
        )
    if args.distribution != "none":
        import keras

        check_sizes(
            args, keras.distribution.distribution(),
            training_examples=len(fit_idx), validation_examples=len(val_idx),
            test_examples=len(y_test),
        )
        settings["distribution"] = {
            "kind": args.distribution,
            "devices": list(keras.distribution.list_devices()),
        }
    x_fit, y_fit = _take(x, fit_idx), y[fit_idx]
    validation = (_take(x, val_idx), y[val_idx])
    settings.update(
        validation_fraction=args.validation_fraction,
        n_fit=int(len(fit_idx)), n_validation=int(len(val_idx)),
    )
    cache = None
    if base.modality in _head.STANDARDIZED_MODALITIES:
        # Unscaled features (audio): a head that standardises them first,
        # with the statistics of the frozen base's training features.
        from keras_transfer.strategies import FeatureCache

        base.model.trainable = False
        cache = FeatureCache(base.model, batch_size=args.batch_size, verbose=args.verbose)
        head = _head.strategy_head(cache.transform(x_fit), num_classes)
        settings["standardized_features"] = True
    else:
        head = build_classifier(base.model, num_classes).get_layer("head")
    warmup = args.warmup_epochs if strategy in STRATEGY_OPTIONS["warmup_epochs"] else 0
    if warmup:
        _warmup(args, base.model, head, x_fit, y_fit, validation, [tensorboard], cache)
        settings.update(warmup_epochs=warmup, head_learning_rate=HEAD_LEARNING_RATE)
    settings["run_dir"] = run_dir
    model, trained, callbacks = BUILDERS[strategy](args, base.model, head, settings)
    del settings["run_dir"]
    rate = args.learning_rate
    if rate == "find":
        if strategy == "gradual":
            # Stage 0 trains the head alone: find the head's rate so.
            base.model.trainable = False
            _compile(trained, 1e-3)
            rate = _find_rate(args, trained, x_fit, y_fit, settings)
            base.model.trainable = True
        else:
            _compile(trained, 1e-3)
            rate = _find_rate(args, trained, x_fit, y_fit, settings)
    elif rate is None:
        rate = DEFAULT_LEARNING_RATES[strategy]
    epochs = args.epochs
    if epochs is None:
        epochs = (
            (args.stages + 1) * args.epochs_per_stage
            if strategy == "gradual" else DEFAULT_EPOCHS
        )
    settings.update(learning_rate=float(rate), epochs=int(epochs))
    _compile(trained, rate)
    keras.utils.set_random_seed(args.seed)
    history = trained.fit(
        x_fit, y_fit, batch_size=args.batch_size, validation_data=validation,
        initial_epoch=warmup, epochs=warmup + epochs,
        callbacks=[*callbacks, tensorboard], verbose=args.verbose,
    )
    logs = history.history
    if strategy == "gradual":
        settings["stage_per_epoch"] = [int(s) for s in logs["unfreeze_stage"]]
        settings["trainable_params_per_epoch"] = [
            int(n) for n in logs["trainable_params"]
        ]
    if strategy == "l2sp":
        settings["l2sp_penalty_per_epoch"] = [float(v) for v in logs["l2sp_penalty"]]
        settings["loss_per_epoch"] = [float(v) for v in logs["loss"]]
        settings["cross_entropy_per_epoch"] = [float(v) for v in logs["cross_entropy"]]
        settings["weight_drift"] = trained.weight_drift()
    test = trained.evaluate(
        x_test, y_test, batch_size=args.batch_size, verbose=0, return_dict=True
    )
    scores = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["cross_entropy"]),
        "validation_accuracy": float(logs["val_accuracy"][-1]),
        "validation_loss": float(logs["val_cross_entropy"][-1]),
    }
    return model, settings, scores


def start_distribution(args):
    """`--distribution data_parallel`: sets `keras.distribution.DataParallel`
    over every device, before any model is built. Returns the device count
    (1 without a distribution)."""
    if args.distribution == "none":
        return 1
    import keras

    from keras_transfer.distribution import check_backend

    try:
        check_backend("--distribution 'data_parallel'")
    except ValueError as e:
        raise UsageError(
            f"--distribution {args.distribution!r} needs the JAX backend "
            f"(keras.distribution runs on JAX only); this run uses "
            f"{keras.backend.backend()!r}. Allowed: KERAS_BACKEND=jax, or "
            "--distribution none"
        ) from e
    distribution = keras.distribution.DataParallel()
    devices = check_sizes(args, distribution, batch_size=args.batch_size)
    keras.distribution.set_distribution(distribution)
    return devices


def check_sizes(args, distribution, **sizes):
    """Checks each pass's batches split evenly over the devices.

    `sizes`: `batch_size=` and/or `what=number of examples` (each passed
    through in batches of `--batch-size`).
    """
    from keras_transfer.distribution import check_distribution

    batch_size = sizes.pop("batch_size", args.batch_size)
    try:
        devices = check_distribution(distribution, batch_size=batch_size)
    except ValueError:
        devices = distribution.device_mesh.shape[0]
        raise UsageError(
            f"--batch-size {batch_size} is not a multiple of the {devices} "
            "devices --distribution 'data_parallel' splits each batch over. "
            f"Allowed: a multiple of {devices}"
        )
    for what, count in sizes.items():
        last = count % batch_size
        if last % devices:
            raise UsageError(
                f"--batch-size {batch_size}: the {count} {what.replace('_', ' ')} "
                f"end in a batch of {last}, which the {devices} devices of "
                "--distribution 'data_parallel' cannot split evenly. Allowed: "
                "a batch size, --n-train, --n-test or --validation-fraction "
                f"that leaves last batches that are multiples of {devices}"
            )
    return devices
