"""The `keras-transfer` command line: `keras-transfer fit [options]`.

With no options, `keras-transfer fit` transfers the MiniLM-L6 sentence
encoder to 1,000 Rotten Tomatoes reviews (fresh vs rotten) by feature
extraction and evaluates it on 1,000 held-out reviews. Everything the run
writes goes under `<logdir>/<run-name>/`: Keras's TensorBoard logs, the
trained model (`model.keras`, unless `--output` says otherwise) and
`results.json`.

Bad input ends the run before anything is trained or written, with one
line on stderr that names the option, the value and what is allowed, and
exit status 2.
"""

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

BUILTIN_DATA = ("rotten_tomatoes", "fashion_mnist", "mnist5k", "digits")
BUILTIN_BASES = ("minilm", "efficientnet_lite0")
_TEXT_DATA = ("rotten_tomatoes",)
# Built-in datasets subsampled by default, so the default run stays small.
_DEFAULT_SIZES = {"rotten_tomatoes": (1000, 1000), "fashion_mnist": (1000, 1000)}
_DEFAULT_IMAGE_SIZE = 96


class UsageError(ValueError):
    """Bad command-line input: reported in one line, exit status 2."""


def _one_line(message):
    return " ".join(str(message).split())


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints the whole usage block; one line is easier to read
        # (and to grep in CI logs). `--help` still shows everything.
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _positive_int(value):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1 or str(number) != value.strip():
        raise argparse.ArgumentTypeError(
            f"must be a positive integer; received {value!r}"
        )
    return number


def _int(value):
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer; received {value!r}")


def _positive_float(value):
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a positive number; received {value!r}"
        )
    return number


def build_parser():
    """Returns the `argparse` parser of the `keras-transfer` command."""
    from keras_transfer.strategies import available_strategies

    parser = _Parser(
        prog="keras-transfer",
        description="Transfer a pretrained model to a small target dataset.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    fit = commands.add_parser(
        "fit",
        help="train a new head (and, by strategy, the base) on target data",
        description=(
            "Transfer a pretrained base to target data, evaluate it on held-out "
            "data, write TensorBoard logs and save the trained model. With no "
            "options: MiniLM on 1,000 Rotten Tomatoes reviews by feature "
            "extraction, evaluated on 1,000 held-out reviews."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fit.error = parser.error
    fit.add_argument(
        "--base",
        default="minilm",
        help=(
            "the pretrained base: 'minilm' (MiniLM-L6 sentence encoder, text), "
            "'efficientnet_lite0' (ImageNet, images), a path to a .keras "
            "model file, or a keras-hub preset folder"
        ),
    )
    fit.add_argument(
        "--data",
        default="rotten_tomatoes",
        help=(
            "the target data: a built-in name ("
            + ", ".join(BUILTIN_DATA)
            + "), a folder of images with one sub-folder per class, or a CSV "
            "file with text and label columns"
        ),
    )
    fit.add_argument(
        "--strategy",
        default="feature_extraction",
        help="how to transfer: " + ", ".join(available_strategies()),
    )
    fit.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=(
            "training epochs (for fine_tuning: epochs after the head "
            "warm-up); default 40 for feature_extraction (head-only epochs on cached features are cheap), 3 otherwise"
        ),
    )
    fit.add_argument(
        "--warmup-epochs",
        type=_positive_int,
        default=2,
        help="fine_tuning only: head-only epochs before the base is unfrozen",
    )
    fit.add_argument("--batch-size", type=_positive_int, default=32)
    fit.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=None,
        help=(
            "Adam learning rate of the head (feature_extraction, default 1e-3) "
            "or of the unfrozen base (fine_tuning, default 1e-5)"
        ),
    )
    fit.add_argument(
        "--logdir",
        default="tensorboard_logs",
        help="folder for the runs; this run writes to <logdir>/<run-name>/",
    )
    fit.add_argument(
        "--run-name",
        default=None,
        help="name of this run's folder; default <base>-<data>-<strategy>-<time>",
    )
    fit.add_argument(
        "--output",
        default=None,
        help="where to save the trained model (.keras); default <logdir>/<run-name>/model.keras",
    )
    fit.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output file (otherwise an error)",
    )
    fit.add_argument(
        "--n-train",
        type=_positive_int,
        default=None,
        help=(
            "training examples to use; default 1000 for rotten_tomatoes and "
            "fashion_mnist, all otherwise"
        ),
    )
    fit.add_argument(
        "--n-test",
        type=_positive_int,
        default=None,
        help=(
            "held-out examples to evaluate on; default 1000 for rotten_tomatoes "
            "and fashion_mnist, all otherwise"
        ),
    )
    fit.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of each class held out, for image folders, CSV files, mnist5k and digits",
    )
    fit.add_argument(
        "--image-size",
        type=_positive_int,
        default=None,
        help=(
            "images are resized to this square size; default 96 for the "
            "built-in 28x28 and 8x8 datasets, 224 for image folders, or the "
            "size a .keras base expects"
        ),
    )
    fit.add_argument(
        "--sequence-length",
        type=_positive_int,
        default=64,
        help="text bases: tokens per example (Rotten Tomatoes reviews have at most 63)",
    )
    fit.add_argument("--text-column", default="text", help="CSV data: the text column")
    fit.add_argument("--label-column", default="label", help="CSV data: the label column")
    fit.add_argument(
        "--encoding", default="utf-8",
        help="CSV data: the file's text encoding (e.g. cp1252, latin-1, utf-16)",
    )
    fit.add_argument(
        "--on-bad-lines", choices=("error", "warn"), default="error",
        help="CSV data: a row with an empty text or label or the wrong number of "
        "fields stops the run naming its line (error), or is skipped with a count (warn)",
    )
    fit.add_argument("--seed", type=_int, default=0, help="seeds the split, subsets and training")
    fit.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras verbosity: 0 silent, 1 progress bars, 2 one line per epoch",
    )
    return parser


def main(argv=None):
    """Entry point of the `keras-transfer` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "fit":
            fit(args)
    except UsageError as e:
        sys.stderr.write(f"{parser.prog}: error: {_one_line(e)}\n")
        return 2
    return 0


# ---------------------------------------------------------------------------
# Checking the options (before anything is loaded, trained or written)


def _check_options(args):
    from keras_transfer.strategies import available_strategies

    if args.strategy not in available_strategies():
        raise UsageError(
            f"--strategy {args.strategy!r} is not a known strategy. Allowed: "
            f"{', '.join(available_strategies())}"
        )
    if args.base not in BUILTIN_BASES:
        if not os.path.exists(args.base):
            raise UsageError(
                f"--base {args.base!r} is neither a built-in base nor an existing "
                f"path. Allowed: {', '.join(BUILTIN_BASES)}, a .keras file or a "
                "keras-hub preset folder"
            )
        if os.path.isfile(args.base) and not args.base.endswith(".keras"):
            raise UsageError(
                f"--base {args.base!r} is a file but not a .keras model. Allowed: "
                f"{', '.join(BUILTIN_BASES)}, a .keras file or a keras-hub preset folder"
            )
    if args.data not in BUILTIN_DATA:
        if not os.path.exists(args.data):
            raise UsageError(
                f"--data {args.data!r} is neither a built-in dataset nor an "
                f"existing path. Allowed: {', '.join(BUILTIN_DATA)}, a folder of "
                "images with one sub-folder per class, or a .csv file"
            )
        if os.path.isfile(args.data) and not args.data.lower().endswith(
            (".csv", ".tsv")
        ):
            raise UsageError(
                f"--data {args.data!r} is a file but not a .csv/.tsv file. "
                f"Allowed: {', '.join(BUILTIN_DATA)}, a folder of images with one "
                "sub-folder per class, or a .csv file"
            )
    if not 0 < args.test_fraction < 1:
        raise UsageError(
            f"--test-fraction {args.test_fraction!r} is out of range. Allowed: a "
            "number strictly between 0 and 1"
        )
    if args.sequence_length < 2 or args.sequence_length > 512:
        raise UsageError(
            f"--sequence-length {args.sequence_length} is out of range. Allowed: "
            "2 to 512"
        )
    if args.run_name is not None and (
        not args.run_name
        or args.run_name in (".", "..")
        or os.sep in args.run_name
        or (os.altsep and os.altsep in args.run_name)
    ):
        raise UsageError(
            f"--run-name {args.run_name!r} is not a folder name. Allowed: a "
            "non-empty name without path separators"
        )


def _check_writable_folder(option, folder):
    """Creates `folder` if needed and checks a file can be written there."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test_"):
            pass
    except OSError as e:
        raise UsageError(
            f"{option} {folder!r} is not a writable folder ({e.strerror or e}). "
            "Allowed: a folder you can write to"
        )


def _prepare_paths(args):
    """Picks the run folder and the model path, and checks both are writable."""
    if args.run_name is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        data = os.path.splitext(os.path.basename(os.path.normpath(args.data)))[0]
        base = os.path.splitext(os.path.basename(os.path.normpath(args.base)))[0]
        args.run_name = f"{base}-{data}-{args.strategy}-{stamp}"
    run_dir = os.path.join(args.logdir, args.run_name)
    if os.path.exists(args.logdir) and not os.path.isdir(args.logdir):
        raise UsageError(
            f"--logdir {args.logdir!r} is a file. Allowed: a folder you can write to"
        )
    _check_writable_folder("--logdir", run_dir)
    output = args.output or os.path.join(run_dir, "model.keras")
    if not output.endswith(".keras"):
        raise UsageError(
            f"--output {output!r} does not end in '.keras'. Allowed: a path "
            "ending in .keras (the Keras model format)"
        )
    if os.path.isdir(output):
        raise UsageError(
            f"--output {output!r} is a folder. Allowed: a .keras file path"
        )
    if os.path.exists(output) and not args.overwrite:
        raise UsageError(
            f"--output {output!r} already exists and would be replaced. Allowed: "
            "a new path, or add --overwrite"
        )
    _check_writable_folder("--output", os.path.dirname(os.path.abspath(output)))
    return run_dir, output


# ---------------------------------------------------------------------------
# Data


def _take(option, x, y, n, available_name):
    if n is None:
        return x, y
    if n > len(y):
        raise UsageError(
            f"{option} {n} is more than the {len(y)} {available_name} examples "
            f"available. Allowed: 1 to {len(y)}"
        )
    return x[:n], y[:n]


def _load_data(args):
    """Returns `(modality, (x, y), (x_test, y_test), class_names)`."""
    from keras_transfer import datasets

    name = args.data
    n_train, n_test = args.n_train, args.n_test
    if name in _DEFAULT_SIZES:
        default_train, default_test = _DEFAULT_SIZES[name]
        n_train = default_train if n_train is None else n_train
        n_test = default_test if n_test is None else n_test
    try:
        if name == "rotten_tomatoes":
            train, test = datasets.load_rotten_tomatoes(
                "sentiment", n_train=n_train, n_test=n_test, seed=args.seed
            )
            classes = datasets.ROTTEN_TOMATOES_CLASSES["sentiment"]
            return "text", train, test, classes
        if name == "fashion_mnist":
            train, test = datasets.load_fashion_mnist(
                n_train=n_train, n_test=n_test, seed=args.seed
            )
            return "image", train, test, datasets.FASHION_MNIST_CLASSES
        if name in ("mnist5k", "digits"):
            loader = datasets.load_mnist5k if name == "mnist5k" else datasets.load_digits
            train, test = loader(test_fraction=args.test_fraction, seed=args.seed)
            if name == "digits":  # counts in [0, 16] -> pixel values
                train = (train[0] * (255.0 / 16.0), train[1])
                test = (test[0] * (255.0 / 16.0), test[1])
            train = _take("--n-train", *train, n_train, "training")
            test = _take("--n-test", *test, n_test, "held-out")
            return "image", train, test, tuple(str(i) for i in range(10))
        if os.path.isdir(name):
            size = args.image_size or 224
            train, test, classes = datasets.load_image_folder(
                name, image_size=(size, size), test_fraction=args.test_fraction,
                seed=args.seed,
            )
            modality = "image"
        else:
            delimiter = "\t" if name.lower().endswith(".tsv") else ","
            train, test, classes = datasets.load_text_csv(
                name, text_column=args.text_column, label_column=args.label_column,
                test_fraction=args.test_fraction, seed=args.seed,
                delimiter=delimiter, encoding=args.encoding,
                on_bad_lines=args.on_bad_lines,
            )
            modality = "text"
    except UsageError:
        raise
    except (ValueError, FileNotFoundError, ImportError, OSError) as e:
        raise UsageError(f"--data {name!r}: {e}")
    train = _take("--n-train", *train, n_train, "training")
    test = _take("--n-test", *test, n_test, "held-out")
    if len(test[1]) == 0:
        raise UsageError(
            f"--data {name!r} leaves no held-out examples with --test-fraction "
            f"{args.test_fraction}. Allowed: more data or a larger --test-fraction"
        )
    return modality, train, test, tuple(classes)


def _to_rgb(x, size):
    import numpy as np

    from keras_transfer.datasets import resize_images

    x = np.asarray(x, dtype="float32")
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.shape[1:3] != (size, size):
        x = resize_images(x, (size, size))
    return np.asarray(x, dtype="float32")


def _load_base(args, data_modality):
    from keras_transfer.backbones import load_base

    kwargs = {}
    if args.base == "minilm":
        kwargs["sequence_length"] = args.sequence_length
    elif args.base == "efficientnet_lite0":
        size = args.image_size or _DEFAULT_IMAGE_SIZE
        kwargs["input_shape"] = (size, size, 3)
    elif os.path.isdir(args.base):
        kwargs["sequence_length"] = args.sequence_length
    try:
        base = load_base(args.base, **kwargs)
    except (ValueError, ImportError, OSError) as e:
        raise UsageError(f"--base {args.base!r}: {e}")
    if base.modality != data_modality:
        raise UsageError(
            f"--base {args.base!r} takes {base.modality} input but --data "
            f"{args.data!r} is {data_modality} data. Allowed: a text base "
            "(minilm, a text preset) with text data, an image base "
            "(efficientnet_lite0, an image model) with image data"
        )
    return base


def _prepare_inputs(args, base, x):
    """Raw examples -> what `base.model` takes (token arrays or RGB images)."""
    import numpy as np

    if base.modality == "text":
        inputs = base.preprocessor(np.asarray(x, dtype=object).astype(str))
        return {k: np.asarray(v) for k, v in inputs.items()}
    if base.image_size is not None:
        height, width = base.image_size
        if args.image_size is not None and args.image_size != height:
            raise UsageError(
                f"--image-size {args.image_size} does not match the {height}x"
                f"{width} input of --base {args.base!r}. Allowed: {height}, or "
                "leave it out"
            )
        size = height
    else:
        size = args.image_size or _DEFAULT_IMAGE_SIZE
    return _to_rgb(x, size)


# ---------------------------------------------------------------------------
# The run


def _save_atomically(model, path):
    """Saves to a temporary file next to `path`, then renames it over `path`.

    A run killed while saving leaves any earlier file at `path` intact.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".partial_", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_json(path, value):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".partial_", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def _count(variables):
    import numpy as np

    return int(sum(np.prod(v.shape) for v in variables))


def fit(args):
    """Runs `keras-transfer fit` with parsed `args`; returns the results dict."""
    start = time.perf_counter()
    _check_options(args)
    run_dir, output = _prepare_paths(args)

    import keras
    import numpy as np

    from keras_transfer.strategies import FeatureCache
    from keras_transfer.strategies import build_classifier
    from keras_transfer.strategies import get_strategy

    keras.utils.set_random_seed(args.seed)
    modality, (x, y), (x_test, y_test), class_names = _load_data(args)
    base = _load_base(args, modality)
    x = _prepare_inputs(args, base, x)
    x_test = _prepare_inputs(args, base, x_test)
    if len(np.unique(y)) < 2:
        raise UsageError(
            f"--data {args.data!r} has a single class in its training examples. "
            "Allowed: data with at least two classes"
        )

    model = build_classifier(base.model, num_classes=len(class_names))
    head = model.get_layer("head")
    tensorboard = keras.callbacks.TensorBoard(log_dir=run_dir)
    options = dict(
        validation_data=(x_test, y_test),
        batch_size=args.batch_size,
        callbacks=[tensorboard],
        verbose=args.verbose,
    )
    if args.strategy in ("feature_extraction", "fine_tuning"):
        # The frozen base runs once over the data; its progress bar shows.
        options["cache"] = FeatureCache(
            base.model, batch_size=args.batch_size, verbose=args.verbose
        )
    if args.strategy == "feature_extraction":
        options["epochs"] = args.epochs or 40
        options["optimizer"] = keras.optimizers.Adam(args.learning_rate or 1e-3)
    elif args.strategy == "fine_tuning":
        options["epochs"] = args.epochs or 3
        options["warmup_epochs"] = args.warmup_epochs
        options["learning_rate"] = args.learning_rate or 1e-5
    else:
        options["epochs"] = args.epochs or 3
        if args.learning_rate is not None:
            options["learning_rate"] = args.learning_rate
    histories = get_strategy(args.strategy)(base.model, head, x, y, **options)
    if not isinstance(histories, (tuple, list)):
        histories = (histories,)
    history = [h for h in histories if h is not None][-1]
    # The last epoch's validation metrics are the final model evaluated on
    # the held-out set (no epoch is picked by them).
    test_accuracy = float(history.history["val_accuracy"][-1])
    test_loss = float(history.history["val_loss"][-1])

    _save_atomically(model, output)
    probe = keras.tree.map_structure(lambda a: a[:16], x_test)
    reloaded = keras.models.load_model(output)
    difference = float(
        np.max(np.abs(reloaded.predict(probe, verbose=0) - model.predict(probe, verbose=0)))
    )
    if difference > 1e-4:
        raise RuntimeError(
            f"The saved model at {output!r} predicts differently from the trained "
            f"one (max difference {difference:.2e})."
        )

    results = {
        "base": args.base,
        "data": args.data,
        "strategy": args.strategy,
        "classes": list(class_names),
        "n_train": int(len(y)),
        "n_test": int(len(y_test)),
        "epochs": int(options["epochs"]),
        "trainable_params": _count(model.trainable_weights),
        "total_params": _count(model.weights),
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "logdir": run_dir,
        "model": output,
        "seed": args.seed,
    }
    _write_json(os.path.join(run_dir, "results.json"), results)
    _print_results(results)
    return results


def _print_results(results):
    rows = [
        ("strategy", results["strategy"]),
        ("base", results["base"]),
        ("data", f"{results['data']} ({len(results['classes'])} classes)"),
        ("training examples", f"{results['n_train']:,}"),
        ("held-out examples", f"{results['n_test']:,}"),
        ("epochs", str(results["epochs"])),
        ("trainable params", f"{results['trainable_params']:,}"),
        ("total params", f"{results['total_params']:,}"),
        ("held-out accuracy", f"{results['test_accuracy']:.4f}"),
        ("held-out loss", f"{results['test_loss']:.4f}"),
        ("wall time", f"{results['wall_time_s']:.1f} s"),
        ("TensorBoard logs", results["logdir"]),
        ("model", results["model"]),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    print("keras-transfer fit: results")
    print("-" * (width + 2 + max(len(v) for _, v in rows)))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(f"\nView the logs: tensorboard --logdir {os.path.dirname(results['logdir']) or '.'}")
