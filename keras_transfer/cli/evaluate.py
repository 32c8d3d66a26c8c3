"""`keras-transfer evaluate MODEL --data ...`: accuracy, per-class precision
and recall, and the confusion matrix of a model saved by `fit`.

The data is read as `fit` reads it. `--split test` (the default) takes the
examples `fit` holds out with the same `--seed`, `--test-fraction` and
`--n-test`, so it reproduces fit's held-out accuracy; `--split all` takes
every example of a folder or CSV file (new data). Results go to
`<logdir>/<run-name>/`: `evaluation.json` and `confusion_matrix.png`,
written together.
"""

import os
import time

from keras_transfer.cli import _args
from keras_transfer.cli import _inputs
from keras_transfer.cli import _run_folder
from keras_transfer.cli import _serving
from keras_transfer.cli import _strategies
from keras_transfer.cli._args import UsageError

NAME = "evaluate"

EXAMPLES = """\
examples:
  keras-transfer evaluate tensorboard_logs/RUN/model.keras --data rotten_tomatoes
  keras-transfer evaluate tensorboard_logs/RUN/model.keras --data path/to/images/ --split all
  keras-transfer evaluate tensorboard_logs/RUN/model.keras --data reviews.csv --text-column review --label-column verdict
"""


def add_parser(commands):
    """Adds `evaluate` and its options to the `commands` subparsers."""
    parser = commands.add_parser(
        NAME,
        help="accuracy, per-class precision/recall and confusion matrix of a saved model",
        description=(
            "Evaluate a model saved by `keras-transfer fit` on labelled data "
            "read as fit reads it: prints accuracy, per-class precision and "
            "recall and the confusion matrix, and writes evaluation.json and "
            "confusion_matrix.png under <logdir>/<run-name>/."
        ),
        epilog=EXAMPLES,
        formatter_class=_args.HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="a model.keras written by keras-transfer fit")
    parser.add_argument(
        "--data", required=True,
        help=(
            "labelled data: a built-in name (" + ", ".join(_inputs.BUILTIN_DATA)
            + "), a folder of images or .wav files with one sub-folder per "
            "class (named as the model's classes), or a .csv/.tsv file"
        ),
    )
    parser.add_argument(
        "--split", choices=("test", "all"), default="test",
        help=(
            "test: the examples fit holds out (same --seed, --test-fraction, "
            "--n-test); all: every example of a folder or CSV file"
        ),
    )
    parser.add_argument(
        "--test-fraction", type=_args.fraction, default=0.2,
        help="--split test: share of each class held out, as given to fit",
    )
    parser.add_argument(
        "--n-test", type=_args.int_in(1, 10_000_000), default=None,
        help="--split test: held-out examples, as given to fit (default as fit's)",
    )
    parser.add_argument("--text-column", default="text", help="CSV data: the text column")
    parser.add_argument("--label-column", default="label", help="CSV data: the label column")
    parser.add_argument("--encoding", default="utf-8", help="CSV data: the file's text encoding")
    parser.add_argument(
        "--on-bad-lines", choices=("error", "warn"), default="error",
        help="CSV data: a bad row stops the run naming its line (error), or is skipped with a count (warn)",
    )
    parser.add_argument("--batch-size", type=_args.int_in(1, 65_536), default=32)
    _args.add_distribution_argument(parser, "predict")
    parser.add_argument(
        "--logdir", default="tensorboard_logs",
        help="folder for the runs; this one writes to <logdir>/<run-name>/",
    )
    parser.add_argument(
        "--run-name", default=None,
        help="name of this run's folder; default evaluate-<data>-<time>",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the results of an earlier run of the same --run-name",
    )
    _args.add_common_arguments(parser)
    return parser


def _load(args, model):
    data = args.data
    if data in _inputs.BUILTIN_DATA and args.split == "all":
        raise UsageError(
            f"--split all with --data {data!r}: a built-in dataset is evaluated on "
            "its held-out split. Allowed: --split test, or a folder or CSV file"
        )
    _inputs.check_base_and_data(type("Args", (), {"base": "minilm", "data": data})())
    if os.path.isfile(data) or data == "rotten_tomatoes":
        modality = "text"
    elif _inputs.is_audio_folder(data):
        modality = "audio"
    else:
        modality = "image"
    if modality != model.modality:
        raise UsageError(
            f"--data {data!r} is {modality} data but MODEL {args.model!r} takes "
            f"{model.modality}. Allowed: {model.modality} data"
        )
    # `load_data` reads the options `fit` has; those evaluate does not offer
    # take fit's defaults.
    loader_args = type("Args", (), {})()
    loader_args.__dict__.update(
        data=data, seed=args.seed, test_fraction=args.test_fraction,
        n_train=None, n_test=args.n_test, text_column=args.text_column,
        label_column=args.label_column, encoding=args.encoding,
        on_bad_lines=args.on_bad_lines,
        image_size=model.image_size[0] if model.image_size else None,
        # Data of one class is evaluated too (over the model's classes).
        min_classes=1,
    )
    modality, train, test, class_names = _inputs.load_data(loader_args)
    if args.split == "all":
        import numpy as np

        x = np.concatenate([train[0], test[0]]) if modality != "text" else (
            list(train[0]) + list(test[0])
        )
        y = np.concatenate([train[1], test[1]])
    else:
        x, y = test
    unknown = [c for c in class_names if c not in model.class_names]
    if unknown:
        raise UsageError(
            f"--data {data!r} has classes {unknown} that MODEL {args.model!r} does "
            f"not know. Allowed: classes named as the model's: {list(model.class_names)}"
        )
    import numpy as np

    to_model = np.array([model.class_names.index(c) for c in class_names])
    return x, to_model[np.asarray(y)]


def metrics(y_true, y_pred, num_classes):
    """Accuracy, per-class precision/recall/support and the confusion matrix.

    `confusion[i][j]` counts examples of true class `i` predicted as `j`.
    Precision of a class never predicted, or recall of a class absent from
    the data, is `None` (0/0), not 0.
    """
    import numpy as np

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (np.asarray(y_true), np.asarray(y_pred)), 1)
    predicted, support = confusion.sum(0), confusion.sum(1)
    correct = np.diag(confusion)
    return {
        "accuracy": float(correct.sum() / max(len(y_true), 1)),
        "precision": [float(c / p) if p else None for c, p in zip(correct, predicted)],
        "recall": [float(c / s) if s else None for c, s in zip(correct, support)],
        "support": support.tolist(),
        "confusion_matrix": confusion.tolist(),
    }


def run(args, start_time=None):
    """Runs `keras-transfer evaluate`; returns the results dict."""
    start_time = time.time() if start_time is None else start_time
    _run_folder.check_run_name(args.run_name)
    _strategies.start_distribution(args)
    model = _serving.load_model(args.model)
    x, y = _load(args, model)
    if args.run_name is None:
        args.run_name = _run_folder.default_run_name("evaluate", args.data)
    run_dir = os.path.join(args.logdir, args.run_name)
    results_path = os.path.join(run_dir, "evaluation.json")
    if os.path.exists(results_path) and not args.overwrite:
        raise UsageError(
            f"--run-name {args.run_name!r} already has results in {run_dir!r}. "
            "Allowed: a new --run-name, or add --overwrite"
        )
    _run_folder.check_writable_folder("--logdir", run_dir)
    try:
        results = _evaluate_into(args, model, x, y, run_dir, start_time)
    except BaseException:
        # A run stopped before it wrote anything leaves no empty folder.
        if os.path.isdir(run_dir) and not os.listdir(run_dir):
            os.rmdir(run_dir)
        raise
    _print_results(results, run_dir)
    return results


def _evaluate_into(args, model, x, y, run_dir, start_time):
    try:
        probabilities = model.predict(x, batch_size=args.batch_size, verbose=0)
    except ValueError as e:
        raise UsageError(f"--data {args.data!r}: {e}")
    predicted = probabilities.argmax(-1)
    results = {
        "model": args.model,
        "data": args.data,
        "split": args.split,
        "classes": list(model.class_names),
        "n_examples": int(len(y)),
        **metrics(y, predicted, len(model.class_names)),
        "settings": {k: v for k, v in sorted(vars(args).items()) if k != "command"},
    }
    with _run_folder.PendingFiles() as pending:
        _plot_confusion(pending.path_for(os.path.join(run_dir, "confusion_matrix.png")), results)
        results["wall_time_s"] = round(time.time() - start_time, 1)
        _run_folder.write_json(pending.path_for(os.path.join(run_dir, "evaluation.json")), results)
        pending.commit()
    return results


def _print_results(results, run_dir):
    classes = results["classes"]
    print(f"\nkeras-transfer evaluate: {results['n_examples']:,} examples of "
          f"{results['data']} ({results['split']} split)")
    print(f"accuracy  {results['accuracy']:.4f}\n")
    width = max(len(c) for c in classes + ["class"])

    def number(v):
        return "-" if v is None else f"{v:.4f}"

    print(f"{'class':<{width}}  precision  recall  support")
    for i, name in enumerate(classes):
        print(f"{name:<{width}}  {number(results['precision'][i]):>9}  "
              f"{number(results['recall'][i]):>6}  {results['support'][i]:>7}")
    print("\nconfusion matrix (rows: true class, columns: predicted, in the order above)")
    cell = max(len(str(v)) for row in results["confusion_matrix"] for v in row)
    for name, row in zip(classes, results["confusion_matrix"]):
        print(f"{name:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row))
    print(f"\nwrote {os.path.join(run_dir, 'evaluation.json')} and confusion_matrix.png")


def _plot_confusion(path, results):
    """The confusion matrix as a PNG (Pillow): cells shaded by the share of
    their true class, with the counts written in."""
    from PIL import Image
    from PIL import ImageDraw

    classes = results["classes"]
    matrix = results["confusion_matrix"]
    n = len(classes)
    cell = 48 if n <= 12 else 24
    label_width = 8 + 7 * min(max(len(c) for c in classes), 20)
    top = 40
    image = Image.new("RGB", (label_width + n * cell + 10, top + n * cell + label_width), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), f"accuracy {results['accuracy']:.4f} (rows: true, columns: predicted)",
              fill="black")
    for i, row in enumerate(matrix):
        total = max(sum(row), 1)
        draw.text((4, top + i * cell + cell // 2 - 5), classes[i][:20], fill="black")
        for j, count in enumerate(row):
            shade = int(255 * (1 - count / total))
            x0, y0 = label_width + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1],
                           fill=(shade, shade, 255), outline="grey")
            if cell >= 48 or count:
                draw.text((x0 + 4, y0 + cell // 2 - 5), str(count),
                          fill="white" if shade < 128 else "black")
    for j, name in enumerate(classes):
        draw.text((label_width + j * cell + 2, top + n * cell + 4), name[:6], fill="black")
    image.save(path, format="PNG")
