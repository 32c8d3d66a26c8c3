"""What `similarity`, `adapt` and `distill` share: data named by any option
(`--source`, `--target`, `--data`), unlabelled target data, model files, the
run folder and the results table.

Built on `_inputs.load_data` (the data `fit` reads) and `_run_folder`;
imports Keras only inside the functions.
"""

import argparse
import csv
import io
import os
import time

from keras_transfer.cli import _args
from keras_transfer.cli import _inputs
from keras_transfer.cli import _run_folder
from keras_transfer.cli._args import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ALLOWED_DATA = (
    f"{', '.join(_inputs.BUILTIN_DATA)}, a folder of images with one sub-folder "
    "per class, or a .csv file with text and label columns"
)
ALLOWED_UNLABELLED = (
    ALLOWED_DATA + "; for the unlabelled target also a folder of images "
    "without class sub-folders, or a .csv file without the label column"
)


class Domain:
    """One side's examples: `x`/`y` (training part), `x_test`/`y_test`
    (held-out part), `classes` (None when unlabelled; then `y`, `y_test` are
    None and every example is in `x`)."""

    def __init__(self, option, value, modality, x, y, x_test, y_test, classes):
        self.option, self.value, self.modality = option, value, modality
        self.x, self.y, self.x_test, self.y_test = x, y, x_test, y_test
        self.classes = classes

    @property
    def labelled(self):
        return self.classes is not None

    def all_x(self):
        import numpy as np

        if self.x_test is None or len(self.x_test) == 0:
            return self.x
        return np.concatenate([self.x, self.x_test])

    def __len__(self):
        return len(self.x) + (0 if self.x_test is None else len(self.x_test))


# -- arguments ------------------------------------------------------------

def add_data_arguments(parser, sides, default_image_size_help):
    """`--image-size`, `--sequence-length`, `--test-fraction` and the CSV
    options, read alike for every data option in `sides`."""
    parser.add_argument(
        "--test-fraction", type=_args.fraction, default=0.2,
        help="share of each class held out for evaluation, for labelled image "
        "folders, CSV files, mnist5k and digits",
    )
    parser.add_argument(
        "--image-size",
        type=_args.int_in(_inputs.MIN_IMAGE_SIZE, _inputs.MAX_IMAGE_SIZE),
        default=None,
        help=(
            f"images of {sides} are resized to this square size "
            f"({_inputs.MIN_IMAGE_SIZE} to {_inputs.MAX_IMAGE_SIZE}); "
            + default_image_size_help
        ),
    )
    parser.add_argument(
        "--sequence-length", type=_args.int_in(2, 512), default=64,
        help="text: tokens per example",
    )
    parser.add_argument("--text-column", default="text", help="CSV data: the text column")
    parser.add_argument(
        "--label-column", default="label",
        help="CSV data: the label column (an unlabelled target CSV may lack it)",
    )
    parser.add_argument(
        "--encoding", default="utf-8",
        help="CSV data: the files' text encoding (e.g. cp1252, latin-1, utf-16)",
    )
    parser.add_argument(
        "--on-bad-lines", choices=("error", "warn"), default="error",
        help="CSV data: a bad row stops the run naming its line (error), or is "
        "skipped with a count (warn)",
    )


def add_run_arguments(parser, saves_model):
    parser.add_argument(
        "--logdir", default="tensorboard_logs",
        help="folder for the runs; this run writes to <logdir>/<run-name>/",
    )
    parser.add_argument(
        "--run-name", default=None,
        help="name of this run's folder; default from the inputs and the time",
    )
    if saves_model:
        parser.add_argument(
            "--output", default=None,
            help="where to save the trained model (.keras); default "
            "<logdir>/<run-name>/model.keras",
        )
        parser.add_argument(
            "--overwrite", action="store_true",
            help="replace an existing --output file (otherwise an error)",
        )
    _args.add_common_arguments(parser)


def settings_of(args):
    """Every option as used (defaults filled in), for `results.json`."""
    return {k: v for k, v in sorted(vars(args).items()) if k != "command"}


# -- checks before anything loads ----------------------------------------

def _is_csv(value):
    return os.path.isfile(value) and value.lower().endswith((".csv", ".tsv"))


def check_data_option(option, value, unlabelled_ok=False):
    """Checks a data option names something, before anything is loaded."""
    allowed = ALLOWED_UNLABELLED if unlabelled_ok else ALLOWED_DATA
    if value in _inputs.BUILTIN_DATA:
        return
    if not os.path.exists(value):
        raise UsageError(
            f"{option} {value!r} is neither a built-in dataset nor an existing "
            f"path. Allowed: {allowed}"
        )
    if os.path.isfile(value) and not value.lower().endswith((".csv", ".tsv")):
        raise UsageError(
            f"{option} {value!r} is a file but not a .csv/.tsv file. Allowed: {allowed}"
        )
    if os.path.isdir(value) and not _visible(value):
        raise UsageError(f"{option} {value!r} is an empty folder. Allowed: {allowed}")


def check_base(args):
    ns = argparse.Namespace(base=args.base, data="mnist5k")
    _inputs.check_base_and_data(ns)


def _visible(folder):
    return [n for n in os.listdir(folder) if not n.startswith(".")]


def check_csv_options(args, values):
    """CSV options given where no data option is a CSV are refused."""
    if any(_is_csv(v) for v in values):
        return
    for name, default in (("text_column", "text"), ("label_column", "label"),
                          ("encoding", "utf-8"), ("on_bad_lines", "error")):
        if getattr(args, name) != default:
            option = "--" + name.replace("_", "-")
            raise UsageError(
                f"{option} {getattr(args, name)!r} has no effect: no data option "
                "is a CSV file. Allowed: CSV options only with .csv/.tsv data"
            )


def check_modality_options(args, values):
    """`--image-size` with text data only, or `--sequence-length` with image
    data only, is refused: nothing would read it."""
    kinds = {"text" if (_is_csv(v) or v == "rotten_tomatoes") else "image" for v in values}
    rules = (("image_size", None, "image"), ("sequence_length", 64, "text"))
    for name, default, kind in rules:
        value = getattr(args, name, default)
        if value != default and kind not in kinds:
            option = "--" + name.replace("_", "-")
            raise UsageError(
                f"{option} {value!r} has no effect: the data is "
                f"{' and '.join(sorted(kinds))}. Allowed: {option} only with {kind} data"
            )


# -- loading --------------------------------------------------------------

def _renamed(error, value, option):
    text = str(error)
    return text.replace(f"--data {value!r}", f"{option} {value!r}", 1)


def load_domain(args, option, value, unlabelled_ok=False):
    """Loads `value` (named by `option`) as `fit --data` reads it; an
    unlabelled target (a folder of images without class sub-folders, a CSV
    without `--label-column`) when `unlabelled_ok`."""
    if unlabelled_ok and os.path.isdir(value) and not _has_class_folders(value):
        return _load_unlabelled_images(args, option, value)
    if unlabelled_ok and _is_csv(value) and not _csv_has_column(args, option, value):
        return _load_unlabelled_csv(args, option, value)
    ns = argparse.Namespace(**vars(args))
    ns.data, ns.n_train, ns.n_test = value, None, None
    try:
        modality, (x, y), (x_test, y_test), classes = _inputs.load_data(ns)
    except UsageError as e:
        raise UsageError(_renamed(e, value, option)) from None
    domain = Domain(option, value, modality, x, y, x_test, y_test, tuple(classes))
    check_class_counts(domain)
    return domain


def check_class_counts(domain):
    import numpy as np

    y = np.concatenate([np.asarray(domain.y), np.asarray(domain.y_test)]).astype(int)
    counts = np.bincount(y, minlength=len(domain.classes))
    present = counts > 0
    if present.sum() < 2:
        raise UsageError(
            f"{domain.option} {domain.value!r} has a single class. Allowed: "
            "labelled data with at least two classes"
        )
    for name, count in zip(domain.classes, counts):
        if count == 1:
            raise UsageError(
                f"{domain.option} {domain.value!r} has one example of class "
                f"{name!r}, too few to train on it and hold one out. Allowed: "
                "at least 2 examples of every class"
            )


def _has_class_folders(folder):
    return any(os.path.isdir(os.path.join(folder, n)) for n in _visible(folder))


def _load_unlabelled_images(args, option, folder):
    import numpy as np
    from PIL import Image

    from keras_transfer.datasets.image_folder import to_rgb8

    files = sorted(
        n for n in _visible(folder) if n.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise UsageError(
            f"{option} {folder!r} holds no image file and no class sub-folder. "
            f"Allowed: image files ({', '.join(IMAGE_EXTENSIONS)}) or one "
            "sub-folder of images per class"
        )
    size = args.image_size or 224
    x = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for row, name in enumerate(files):
        path = os.path.join(folder, name)
        try:
            with Image.open(path) as image:
                image = Image.fromarray(to_rgb8(image))
                x[row] = np.asarray(image.resize((size, size), Image.BILINEAR))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UsageError(
                f"{option} {folder!r}: cannot decode the image {name!r} "
                f"({type(e).__name__}: {e}). Allowed: readable image files; "
                "remove or replace it"
            ) from None
    return Domain(option, folder, "image", x, None, None, None, None)


def _read_csv_text(args, option, path):
    from keras_transfer.datasets.text_csv import read_text

    try:
        return read_text(path, args.encoding, "load_text_csv")
    except (ValueError, OSError) as e:
        raise UsageError(f"{option} {path!r}: {_args.cli_spelling(e)}") from None


def _csv_rows(args, option, path):
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    text = _read_csv_text(args, option, path)
    try:
        return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as e:
        raise UsageError(f"{option} {path!r} cannot be parsed as CSV ({e})") from None


def _csv_has_column(args, option, path):
    rows = _csv_rows(args, option, path)
    return bool(rows) and args.label_column in rows[0]


def _load_unlabelled_csv(args, option, path):
    import numpy as np

    rows = _csv_rows(args, option, path)
    header = rows[0] if rows else []
    if args.text_column not in header:
        raise UsageError(
            f"--text-column {args.text_column!r} is not a column of {option} "
            f"{path!r}, which has {header}. Allowed: one of {header}"
        )
    index = header.index(args.text_column)
    texts = [r[index] for r in rows[1:] if len(r) == len(header) and r[index].strip()]
    skipped = sum(1 for r in rows[1:] if r) - len(texts)
    if skipped and args.on_bad_lines == "error":
        raise UsageError(
            f"{option} {path!r} has {skipped} row(s) with an empty "
            f"{args.text_column!r} or the wrong number of fields. Allowed: "
            "complete rows, or --on-bad-lines warn to skip them"
        )
    if skipped:  # --on-bad-lines warn: skipped with a count, never silently
        import warnings

        warnings.warn(
            f"{option} {path!r}: skipped {skipped} row(s) with an empty "
            f"{args.text_column!r} or the wrong number of fields (kept "
            f"{len(texts)})", UserWarning, stacklevel=2,
        )
    if not texts:
        raise UsageError(
            f"{option} {path!r} has no text in column {args.text_column!r}. "
            "Allowed: a CSV with at least one text row"
        )
    return Domain(option, path, "text", np.asarray(texts, dtype=object),
                  None, None, None, None)


def subsample(domain, n, seed):
    """Keeps at most `n` training-part examples (seeded), in place."""
    import numpy as np

    if n is None or len(domain.x) <= n:
        return domain
    pick = np.sort(np.random.default_rng(seed).permutation(len(domain.x))[:n])
    domain.x = domain.x[pick]
    if domain.y is not None:
        domain.y = np.asarray(domain.y)[pick]
    return domain


def check_kinds(args):
    """Before anything loads: `--source` and `--target` of the same kind,
    and a built-in `--base` that takes it (a CSV given to an image base is
    refused for being text, not for a missing --text-column)."""
    kinds = [_inputs.data_modality(v) for v in (args.source, args.target)]
    if None not in kinds and kinds[0] != kinds[1]:
        check_same_modality(
            Domain("--source", args.source, kinds[0], *(None,) * 5),
            Domain("--target", args.target, kinds[1], *(None,) * 5),
        )
    _inputs.check_base_takes(args, "--source", args.source)
    _inputs.check_base_takes(args, "--target", args.target)


def check_same_modality(source, target):
    if source.modality != target.modality:
        raise UsageError(
            f"{target.option} {target.value!r} is {target.modality} data but "
            f"{source.option} {source.value!r} is {source.modality} data. "
            f"Allowed: {target.option} of the same kind as {source.option}"
        )


def load_model_file(option, path):
    """`keras.models.load_model(path)`, any failure as one line naming `option`."""
    if not os.path.isfile(path) or not path.endswith(".keras"):
        what = "does not exist" if not os.path.exists(path) else "is not a .keras file"
        raise UsageError(
            f"{option} {path!r} {what}. Allowed: a model file saved by Keras "
            "(.keras), e.g. by `keras-transfer fit`"
        )
    import keras

    import keras_transfer  # noqa: F401  (registers the package's layers)

    try:
        model = keras.models.load_model(path)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a damaged or foreign file: many exception kinds
        first = _args.one_line(e)[:200]
        raise UsageError(
            f"{option} {path!r} cannot be loaded ({type(e).__name__}: {first}). "
            "Allowed: a model file saved by Keras (.keras), e.g. by "
            "`keras-transfer fit`"
        ) from None
    from keras_transfer.models import RawInputClassifier

    if isinstance(model, RawInputClassifier):
        # What `fit`, `adapt` and `distill` save: the classifier inside takes
        # the preprocessed inputs these commands feed.
        model = model.classifier
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise UsageError(
            f"{option} {path!r} holds no model with defined inputs. Allowed: a "
            "Functional or Sequential model saved as .keras"
        )
    return model


# -- run folder and results -----------------------------------------------

def prepare_run(args, parts, saves_model):
    """Checks and creates `<logdir>/<run-name>/`; returns `(run_dir, output)`."""
    run_dir, output = _run_folder.check_paths(args, parts, saves_model)
    results_path = os.path.join(run_dir, "results.json")
    if os.path.exists(results_path) and not getattr(args, "overwrite", False):
        raise UsageError(
            f"--run-name {args.run_name!r} already holds results "
            f"({results_path}). Allowed: a new --run-name"
            + (", or add --overwrite" if saves_model else "")
        )
    return run_dir, output


def run_in_folder(run_dir, output, body):
    """Creates the run folder, runs `body()`; a run stopped before it wrote
    anything leaves no empty folder."""
    _run_folder.check_writable_folder("--logdir", run_dir)
    if output is not None:
        _run_folder.check_writable_folder("--output", os.path.dirname(os.path.abspath(output)))
    try:
        return body()
    except BaseException:
        if os.path.isdir(run_dir) and not os.listdir(run_dir):
            os.rmdir(run_dir)
        raise


def write_results(run_dir, results, start_time, model=None, output=None, check=None):
    """Writes `results.json` (and the model) atomically, together."""
    with _run_folder.PendingFiles() as pending:
        if model is not None:
            model_tmp = pending.path_for(output)
            model.save(model_tmp)
            if check is not None:
                check(model_tmp)
        results["wall_time_s"] = round(time.time() - start_time, 1)
        results["cpu_time_s"] = round(time.process_time(), 1)
        _run_folder.write_json(pending.path_for(os.path.join(run_dir, "results.json")), results)
        pending.commit()


def check_saved(model, path, probe):
    """The saved file predicts what `model` predicts on `probe`."""
    import keras
    import numpy as np

    reloaded = keras.models.load_model(path)
    difference = float(np.max(np.abs(
        np.asarray(reloaded.predict(probe, verbose=0))
        - np.asarray(model.predict(probe, verbose=0))
    )))
    if difference > 1e-4:
        raise RuntimeError(
            f"The saved model predicts differently from the trained one (max "
            f"difference {difference:.2e}); nothing was written."
        )


def print_table(title, rows, note=None):
    rows = [(k, str(v)) for k, v in rows]
    width = max(len(k) for k, _ in rows)
    print()
    print(title)
    print("-" * (width + 2 + max(len(v) for _, v in rows)))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if note:
        print()
        print(note)
