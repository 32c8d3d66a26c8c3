"""`keras-transfer adapt`: unsupervised domain adaptation from labelled
source data to unlabelled target data.

The network: the frozen `--base` (run once over all examples, its features
cached), then a trainable bottleneck `Dense(--bottleneck, relu)` (the
adapted feature extractor) and a linear task head. The bottleneck and head
train on the labelled source examples while the method pulls source and
target features together:

- `dann`: `DomainAdversarialModel`, a domain classifier behind gradient
  reversal (Ganin et al., 2016), the reversal factor ramped by
  `GradientReversalScheduler("dann")`;
- `cdan`: `CDANModel`, CDAN+E (Long et al., 2018), the domain classifier
  conditioned on the class predictions, ramped alike;
- `mcd`: `MCDModel`, two task heads whose disagreement on the target the
  features minimise (Saito et al., 2018): the paper's three steps per
  batch, the features updated 4 times in the third;
- `mmd`, `coral`: `DiscrepancyAlignmentModel` with multi-kernel MMD (DAN,
  Long et al., 2015) or Deep CORAL (Sun & Saenko, 2016).

Target labels are never used for training or for choosing anything. When
the target has labels (class sub-folders, a CSV with `--label-column`, a
built-in dataset), `--test-fraction` of each class is held out: the rest is
the unlabelled adaptation set (labels dropped), and the held-out part gives
the target accuracy, for evaluation only. The same network (same initial
weights, same batches and epochs) trained on the source alone (alignment
weight 0) is reported beside it. The target's classes must be source class
names. The adapted classifier (`base -> bottleneck -> head -> softmax`, the
task model, not the domain model) is saved as `model.keras` with
`results.json` in `<logdir>/<run-name>/`, with TensorBoard logs.

Keras and TensorFlow are imported in `run`, not when the parser is built.
"""

import os
import time

from keras_transfer.cli import _args
from keras_transfer.cli import _domains
from keras_transfer.cli import _head
from keras_transfer.cli import _inputs
from keras_transfer.cli import _serving
from keras_transfer.cli import similarity as _similarity
from keras_transfer.cli._args import UsageError

NAME = "adapt"
METHODS = ("dann", "mmd", "coral", "cdan", "mcd")
# Default alignment weights: DANN/CDAN domain loss weight 1 (Ganin et al.,
# Long et al.), MMD 1 (DAN), CORAL 10 (as in benchmarks/domain_adaptation.py),
# MCD discrepancy weight 1 (Saito et al.).
DEFAULT_WEIGHTS = {"dann": 1.0, "mmd": 1.0, "coral": 10.0, "cdan": 1.0, "mcd": 1.0}
# Largest reversal factor of the ramp (the methods with gradient reversal;
# MCD alternates its steps instead, `MCDModel(n_generator_steps=4)`).
REVERSAL_MAX = {"dann": 1.0, "cdan": 1.0}

EXAMPLES = """\
examples:
  keras-transfer adapt --base efficientnet_lite0 --source mnist5k --target path/to/usps/ --method dann
  keras-transfer adapt --base efficientnet_lite0 --source path/to/photos/ --target path/to/unlabelled/ --method cdan
  keras-transfer adapt --source rotten_tomatoes --target reviews.csv --text-column review --method coral
"""


def add_parser(commands):
    """Adds `adapt` and its options to the `commands` subparsers."""
    parser = commands.add_parser(
        NAME,
        help="adapt a classifier from labelled source data to unlabelled target data",
        description=(
            "Unsupervised domain adaptation: train a bottleneck and a head on "
            "the frozen base's features of labelled source data while aligning "
            "them with unlabelled target data (DANN, MMD, CORAL, CDAN+E or "
            "MCD). Target labels, when the target has them, are used only to "
            "report the target accuracy on held-out target examples, next to "
            "the same network trained on the source alone."
        ),
        epilog=EXAMPLES,
        formatter_class=_args.HelpFormatter,
    )
    parser.add_argument(
        "--source", required=True,
        help="labelled source data: " + _domains.ALLOWED_DATA,
    )
    parser.add_argument(
        "--target", required=True,
        help=(
            "target data, labels never trained on: " + _domains.ALLOWED_UNLABELLED
            + ". With labels, --test-fraction of each class is held out to "
            "report the target accuracy"
        ),
    )
    parser.add_argument(
        "--base", default="minilm",
        help="the frozen pretrained base: 'minilm' (text), 'efficientnet_lite0' "
        "(images), a .keras model file or a keras-hub preset folder",
    )
    parser.add_argument("--method", choices=METHODS, default="dann",
                        help="the alignment method (see the module docs)")
    parser.add_argument(
        "--alignment-weight", type=_args.float_in(0.0, 1000.0, low_inclusive=True),
        default=None,
        help="weight of the alignment term (domain loss, MMD, CORAL or "
        "discrepancy); default "
        + ", ".join(f"{m} {w:g}" for m, w in DEFAULT_WEIGHTS.items()),
    )
    parser.add_argument(
        "--bottleneck", type=_args.int_in(2, 4096), default=256,
        help="width of the trainable Dense(relu) layer after the base (the adapted features)",
    )
    parser.add_argument("--epochs", type=_args.int_in(1, 10_000), default=10)
    parser.add_argument(
        "--batch-size", type=_args.int_in(2, 65_536), default=64,
        help="examples of EACH domain per step",
    )
    parser.add_argument(
        "--learning-rate", type=_args.float_in(0.0, 10.0), default=1e-3,
        help="Adam learning rate of the bottleneck and heads",
    )
    parser.add_argument(
        "--n-source", type=_args.int_in(2, 10_000_000), default=None,
        help="source training examples to use (a seeded subset); default all",
    )
    parser.add_argument(
        "--n-target", type=_args.int_in(2, 10_000_000), default=None,
        help="unlabelled target examples to adapt on (a seeded subset); default all",
    )
    _domains.add_data_arguments(
        parser, "both datasets",
        f"default {_inputs.DEFAULT_IMAGE_SIZE}, or the size a .keras base expects",
    )
    _domains.add_run_arguments(parser, saves_model=True)
    return parser


def run(args, start_time=None):
    """Runs `keras-transfer adapt` with parsed `args`; returns the results."""
    start_time = time.time() if start_time is None else start_time
    _domains.check_base(args)
    _domains.check_data_option("--source", args.source)
    _domains.check_data_option("--target", args.target, unlabelled_ok=True)
    _domains.check_csv_options(args, (args.source, args.target))
    _domains.check_modality_options(args, (args.source, args.target))
    _domains.check_kinds(args)
    run_dir, output = _domains.prepare_run(
        args, (args.base, args.source, args.target, args.method), saves_model=True
    )
    return _domains.run_in_folder(
        run_dir, output, lambda: _run_in(args, run_dir, output, start_time)
    )


def target_labels_in_source_classes(source, target):
    """Target labels as indices into the source's classes (or None)."""
    import numpy as np

    if not target.labelled:
        return None
    missing = [c for c in target.classes if c not in source.classes]
    if missing:
        raise UsageError(
            f"--target {target.value!r} has classes {missing} that --source "
            f"{source.value!r} does not have. Allowed: target class names among "
            f"the source's {list(source.classes)}, or an unlabelled target"
        )
    mapping = np.array([source.classes.index(c) for c in target.classes])
    return mapping[np.asarray(target.y_test, dtype=int)]


def _networks(keras, feature_shape, args, num_classes, standardize=None):
    """`(feature_extractor, task_head)`, fresh. `standardize`: None, or the
    source features to standardise the pooled features with (a
    `Normalization` adapted to them, before the bottleneck; see
    `_head.standardizer`)."""
    layers = [keras.Input(feature_shape)]
    if len(feature_shape) == 3:
        layers.append(keras.layers.GlobalAveragePooling2D())
    elif len(feature_shape) == 2:
        layers.append(keras.layers.GlobalAveragePooling1D())
    if standardize is not None:
        layers.append(_head.standardizer(standardize))
    layers.append(keras.layers.Dense(args.bottleneck, activation="relu", name="bottleneck"))
    extractor = keras.Sequential(layers, name="feature_extractor")
    head = keras.Sequential(
        [keras.Input((args.bottleneck,)), keras.layers.Dense(num_classes, name="logits")],
        name="task_head",
    )
    return extractor, head


def _domain_head(keras, width):
    return keras.Sequential([
        keras.Input((width,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(1),
    ], name="domain_head")


def build_domain_model(args, extractor, head, num_classes, weight):
    import keras

    from keras_transfer import models

    if args.method == "dann":
        return models.DomainAdversarialModel(
            extractor, head, _domain_head(keras, args.bottleneck), domain_loss_weight=weight
        )
    if args.method == "cdan":
        return models.CDANModel(
            extractor, head, _domain_head(keras, args.bottleneck * num_classes),
            domain_loss_weight=weight,
        )
    if args.method == "mcd":
        head_2 = keras.Sequential(
            [keras.Input((args.bottleneck,)), keras.layers.Dense(num_classes, name="logits_2")],
            name="task_head_2",
        )
        return models.MCDModel(extractor, head, head_2, discrepancy_weight=weight)
    return models.DiscrepancyAlignmentModel(extractor, head, args.method, weight)


def _accuracy(network, features, labels):
    import numpy as np

    if labels is None or len(labels) == 0:
        return None
    predictions = network.predict(features, batch_size=512, verbose=0).argmax(-1)
    return float(np.mean(predictions == np.asarray(labels)))


def _run_in(args, run_dir, output, start_time):
    import keras
    import numpy as np

    from keras_transfer import models
    from keras_transfer.callbacks import GradientReversalScheduler
    from keras_transfer.strategies import FeatureCache
    from keras_transfer.strategies import build_classifier

    keras.utils.set_random_seed(args.seed)
    source = _domains.load_domain(args, "--source", args.source)
    target = _domains.load_domain(args, "--target", args.target, unlabelled_ok=True)
    _domains.check_same_modality(source, target)
    y_target_test = target_labels_in_source_classes(source, target)
    _domains.subsample(source, args.n_source, args.seed)
    _domains.subsample(target, args.n_target, args.seed + 1)
    base = _similarity.load_base(args, source.modality, "--source", args.source)
    num_classes = len(source.classes)

    base.model.trainable = False
    cache = FeatureCache(base.model, batch_size=max(args.batch_size, 64), verbose=args.verbose)

    def features(x):
        if x is None or len(x) == 0:
            return None
        return np.asarray(cache.transform(_inputs.prepare_inputs(args, base, x)))

    fs, fs_test = features(source.x), features(source.x_test)
    ft, ft_test = features(target.x), features(target.x_test)
    ys = np.asarray(source.y, dtype="int64")
    weight = args.alignment_weight
    if weight is None:
        weight = DEFAULT_WEIGHTS[args.method]

    # Audio: the speech embedding's outputs are unscaled (up to about 70), as
    # in `fit` (`_head.STANDARDIZED_MODALITIES`); standardised with the
    # source features' statistics, saved as weights of the extractor.
    standardize = fs if source.modality in _head.STANDARDIZED_MODALITIES else None
    keras.utils.set_random_seed(args.seed)
    extractor, head = _networks(keras, fs.shape[1:], args, num_classes, standardize)
    initial = [w.copy() for w in extractor.get_weights()], [w.copy() for w in head.get_weights()]

    def train(model, log_name, callbacks):
        keras.utils.set_random_seed(args.seed)
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        return model.fit(
            {"source": fs, "target": ft}, ys, epochs=args.epochs,
            batch_size=args.batch_size, verbose=args.verbose,
            callbacks=callbacks + [keras.callbacks.TensorBoard(os.path.join(run_dir, log_name))],
        )

    # The source-only network: same architecture, initial weights, batches
    # and epochs, alignment weight 0.
    plain_extractor, plain_head = _networks(
        keras, fs.shape[1:], args, num_classes, standardize
    )
    plain_extractor.set_weights(initial[0])
    plain_head.set_weights(initial[1])
    source_only = models.DiscrepancyAlignmentModel(plain_extractor, plain_head, "coral", 0.0)
    train(source_only, "source_only", [])

    adapted = build_domain_model(args, extractor, head, num_classes, weight)
    callbacks = []
    if args.method in REVERSAL_MAX:
        callbacks.append(GradientReversalScheduler("dann", max_factor=REVERSAL_MAX[args.method]))
    history = train(adapted, "adapted", callbacks)

    classifier_head = keras.Sequential(
        [extractor, head, keras.layers.Softmax(dtype="float32", name="probabilities")],
        name="head",
    )
    classifier = build_classifier(base.model, head=classifier_head, name="adapted_classifier")
    # Saved with its class names and input reading, like `fit`'s model, so
    # `predict` and `evaluate` take it.
    classifier = _serving.wrap(
        base, classifier, source.classes, source.modality, args,
        clip_length=source.x.shape[1] if source.modality == "audio" else None,
    )

    results = {
        "command": NAME,
        "method": args.method,
        "standardized_features": standardize is not None,
        "base": args.base,
        "source": args.source,
        "target": args.target,
        "classes": list(source.classes),
        "n_source_train": int(len(ys)),
        "n_source_test": 0 if fs_test is None else int(len(fs_test)),
        "n_target_adapt": int(len(ft)),
        "n_target_test": 0 if ft_test is None else int(len(ft_test)),
        "target_labelled": target.labelled,
        "alignment_weight": float(weight),
        "epochs": args.epochs,
        "target_accuracy": _accuracy(adapted, ft_test, y_target_test),
        "source_only_target_accuracy": _accuracy(source_only, ft_test, y_target_test),
        "source_accuracy": _accuracy(adapted, fs_test, source.y_test),
        "source_only_source_accuracy": _accuracy(source_only, fs_test, source.y_test),
        "final_epoch": {k: float(v[-1]) for k, v in history.history.items()},
        "logdir": run_dir,
        "model": output,
        "seed": args.seed,
        "settings": _domains.settings_of(args),
    }
    probe = _inputs.prepare_inputs(args, base, source.x[:8])
    _domains.write_results(
        run_dir, results, start_time, model=classifier, output=output,
        check=lambda path: _domains.check_saved(classifier, path, probe),
    )
    _print(results)
    return results


def _fmt(value):
    return "-" if value is None else f"{value:.4f}"


def _print(results):
    rows = [
        ("method", f"{results['method']} (alignment weight {results['alignment_weight']:g})"),
        ("base", results["base"]),
        ("source", f"{results['source']} ({results['n_source_train']:,} train, "
                   f"{results['n_source_test']:,} held out; {len(results['classes'])} classes)"),
        ("target", f"{results['target']} ({results['n_target_adapt']:,} unlabelled for "
                   f"adaptation, {results['n_target_test']:,} held out with labels)"),
        ("epochs", results["epochs"]),
        ("target accuracy", f"{_fmt(results['target_accuracy'])} adapted, "
                            f"{_fmt(results['source_only_target_accuracy'])} source only"),
        ("source accuracy", f"{_fmt(results['source_accuracy'])} adapted, "
                            f"{_fmt(results['source_only_source_accuracy'])} source only"),
        ("wall time", f"{results['wall_time_s']:.1f} s (CPU {results['cpu_time_s']:.1f} s)"),
        ("TensorBoard logs", results["logdir"]),
        ("model", results["model"]),
    ]
    note = None
    if not results["target_labelled"]:
        note = ("The target has no labels: no target accuracy. Give a target with "
                "one sub-folder per class (or a label column) to measure it.")
    _domains.print_table("keras-transfer adapt: results", rows, note)
