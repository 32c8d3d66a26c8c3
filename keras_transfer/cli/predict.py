"""`keras-transfer predict MODEL INPUT...`: labels and probabilities for raw inputs.

MODEL is a `model.keras` written by `keras-transfer fit` (a
`RawInputClassifier`, which knows its class names and how to read raw
inputs). Keras and TensorFlow are imported in `run`, not when the parser is
built.
"""

import csv
import os

from keras_transfer.cli import _args
from keras_transfer.cli import _run_folder
from keras_transfer.cli import _serving
from keras_transfer.cli import _strategies
from keras_transfer.cli._args import UsageError

NAME = "predict"
OUTPUT_FORMATS = (".csv", ".json")

EXAMPLES = """\
examples:
  keras-transfer predict tensorboard_logs/RUN/model.keras "a gripping film" "a dull mess"
  keras-transfer predict tensorboard_logs/RUN/model.keras reviews.txt --output predictions.csv
  keras-transfer predict tensorboard_logs/RUN/model.keras reviews.csv --text-column review
  keras-transfer predict tensorboard_logs/RUN/model.keras photos/ cat.jpg --output predictions.json
  keras-transfer predict tensorboard_logs/RUN/model.keras recording.wav
"""


def add_parser(commands):
    """Adds `predict` and its options to the `commands` subparsers."""
    parser = commands.add_parser(
        NAME,
        help="label raw inputs (texts, images, wav files) with a model saved by fit",
        description=(
            "Predict the class of raw inputs with a model saved by "
            "`keras-transfer fit`: text strings or .txt (one example a line) / "
            ".csv files for a text model, image files or folders for an image "
            "model, .wav files or folders for an audio model (any sample rate, "
            "mono or stereo). Prints a table of labels and probabilities, or "
            "writes every class's probability to --output."
        ),
        epilog=EXAMPLES,
        formatter_class=_args.HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="a model.keras written by keras-transfer fit")
    parser.add_argument(
        "inputs", metavar="INPUT", nargs="+",
        help="texts, .txt/.csv files, image files/folders or .wav files/folders",
    )
    parser.add_argument(
        "--output", default=None,
        help="write the predictions to this .csv or .json file instead of printing them",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing --output file (otherwise an error)",
    )
    parser.add_argument("--batch-size", type=_args.int_in(1, 65_536), default=32)
    parser.add_argument("--text-column", default="text", help="CSV inputs: the text column")
    parser.add_argument("--encoding", default="utf-8", help=".txt/.csv inputs: the text encoding")
    _args.add_distribution_argument(parser, "predict")
    return parser


def check_output(output, overwrite):
    if output is None:
        return
    if not output.lower().endswith(OUTPUT_FORMATS):
        raise UsageError(
            f"--output {output!r} is neither .csv nor .json. Allowed: a path "
            "ending in .csv or .json"
        )
    if os.path.isdir(output):
        raise UsageError(f"--output {output!r} is a folder. Allowed: a .csv or .json file path")
    if os.path.exists(output) and not overwrite:
        raise UsageError(
            f"--output {output!r} already exists and would be replaced. "
            "Allowed: a new path, or add --overwrite"
        )
    _run_folder.check_writable_folder("--output", os.path.dirname(os.path.abspath(output)))


def run(args, start_time=None):
    """Runs `keras-transfer predict`; returns the list of prediction rows."""
    check_output(args.output, args.overwrite)
    _strategies.start_distribution(args)
    model = _serving.load_model(args.model)
    names, raw = _serving.read_inputs(model, args.inputs, args.text_column, args.encoding)
    try:
        labels, probabilities = model.predict_labels(raw, batch_size=args.batch_size)
    except ValueError as e:
        raise UsageError(
            f"INPUT: {_args.cli_spelling(e)} Allowed: "
            f"{_serving.ALLOWED_INPUTS[model.modality]} that can be decoded"
        )
    rows = [
        {
            "input": name,
            "label": label,
            "probability": float(p.max()),
            "probabilities": {c: float(v) for c, v in zip(model.class_names, p)},
        }
        for name, label, p in zip(names, labels, probabilities)
    ]
    if args.output is None:
        _print_table(rows)
        return rows
    with _run_folder.PendingFiles() as pending:
        temporary = pending.path_for(args.output)
        if args.output.lower().endswith(".json"):
            _serving.write_json(temporary, rows)
        else:
            _write_csv(temporary, rows, model.class_names)
        pending.commit()
    print(f"wrote {len(rows)} predictions to {args.output}")
    return rows


def _write_csv(path, rows, class_names):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["input", "label", "probability"] + [f"p_{c}" for c in class_names])
        for row in rows:
            writer.writerow(
                [row["input"], row["label"], f"{row['probability']:.6f}"]
                + [f"{row['probabilities'][c]:.6f}" for c in class_names]
            )


def _print_table(rows):
    def short(text, width=60):
        text = " ".join(str(text).split())
        return text if len(text) <= width else text[: width - 3] + "..."

    table = [("input", "label", "probability")] + [
        (short(r["input"]), r["label"], f"{r['probability']:.4f}") for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
