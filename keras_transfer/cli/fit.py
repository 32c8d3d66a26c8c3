"""`keras-transfer fit`: transfer a pretrained base to target data.

With no options it transfers the MiniLM-L6 sentence encoder to 1,000 Rotten
Tomatoes reviews (fresh vs rotten) by feature extraction and evaluates it
on 1,000 held-out reviews. Everything the run writes goes under
`<logdir>/<run-name>/`: Keras's TensorBoard logs, the trained model
(`model.keras`, unless `--output` says otherwise) and `results.json`.

Keras and TensorFlow are imported in `run`, not when the parser is built.
"""

import argparse
import os
import time

from keras_transfer.cli import _args
from keras_transfer.cli import _head
from keras_transfer.cli import _inputs
from keras_transfer.cli import _run_folder
from keras_transfer.cli import _serving
from keras_transfer.cli import _strategies
from keras_transfer.cli._args import UsageError

NAME = "fit"
# The strategies `fit` runs (one function each in `_strategies`).
KNOWN_STRATEGIES = _strategies.STRATEGIES

EXAMPLES = """\
examples:
  keras-transfer fit      # MiniLM on 1,000 Rotten Tomatoes reviews, feature extraction
  keras-transfer fit --base efficientnet_lite0 --data path/to/images/  # one sub-folder per class
  keras-transfer fit --data reviews.csv --text-column review --label-column verdict
  keras-transfer fit --base efficientnet_lite0 --data fashion_mnist --strategy fine_tuning --epochs 2
  keras-transfer fit --base speech_embedding --data path/to/recordings/  # one sub-folder of .wav per class
  keras-transfer fit --strategy auto          # measures size and similarity, picks and runs a strategy
  keras-transfer fit --strategy lora --lora-rank 4 --learning-rate find
  keras-transfer fit --strategy gradual --stages 3 --lr-factor 0.4
  keras-transfer fit --strategy adapters --adapter-size 32
  keras-transfer fit --strategy l2sp --l2sp-alpha 0.1
"""


def add_parser(commands):
    """Adds `fit` and its options to the `commands` subparsers."""
    fit = commands.add_parser(
        NAME,
        help="train a new head (and, by strategy, the base) on target data",
        description=(
            "Transfer a pretrained base to target data, evaluate it on held-out "
            "data, write TensorBoard logs and save the trained model. With no "
            "options: MiniLM on 1,000 Rotten Tomatoes reviews by feature "
            "extraction, evaluated on 1,000 held-out reviews."
        ),
        epilog=EXAMPLES,
        formatter_class=_args.HelpFormatter,
    )
    fit.add_argument(
        "--base",
        default="minilm",
        help=(
            "the pretrained base: 'minilm' (MiniLM-L6 sentence encoder, text), "
            "'efficientnet_lite0' (ImageNet, images), 'speech_embedding' "
            "(16 kHz speech, wav folders), a path to a .keras "
            "model file, or a keras-hub preset folder"
        ),
    )
    fit.add_argument(
        "--data",
        default="rotten_tomatoes",
        help=(
            "the target data: a built-in name ("
            + ", ".join(_inputs.BUILTIN_DATA)
            + "), a folder of images or .wav files with one sub-folder per class, or a CSV "
            "file with text and label columns"
        ),
    )
    fit.add_argument(
        "--strategy",
        default="feature_extraction",
        help=(
            "how to transfer: " + ", ".join(KNOWN_STRATEGIES) + " (auto: "
            "measures the target size and its similarity to reference data "
            "like the base's pretraining data, and runs recommend_strategy's "
            "choice)"
        ),
    )
    fit.add_argument(
        "--epochs",
        type=_args.int_in(1, 10_000),
        default=None,
        help=(
            "training epochs (after the head warm-up); feature_extraction: "
            "default the best epoch on the validation split, stopped early "
            f"(up to {_head.MAX_EPOCHS}); gradual: default (stages + 1) x "
            "epochs-per-stage; 3 otherwise"
        ),
    )
    fit.add_argument(
        "--warmup-epochs",
        type=_args.int_in(1, 1_000),
        default=2,
        help=(
            "fine_tuning, lora, adapters, l2sp: head-only epochs on cached "
            f"features (Adam {_strategies.HEAD_LEARNING_RATE:g}) before the "
            "strategy's own phase"
        ),
    )
    fit.add_argument("--batch-size", type=_args.int_in(1, 65_536), default=32)
    fit.add_argument(
        "--learning-rate",
        type=_strategies.learning_rate,
        default=None,
        help=(
            "Adam learning rate of the head (feature_extraction; default: the "
            "best of " + ", ".join(f"{r:g}" for r in _head.LEARNING_RATES)
            + " on the validation split) or of the strategy's own phase "
            "(default " + ", ".join(
                f"{k} {v:g}" for k, v in _strategies.DEFAULT_LEARNING_RATES.items()
            ) + "; gradual: the head's, lower groups get --lr-factor powers "
            "of it); 'find': the suggestion of a learning-rate range test "
            "(strategies.lr_find) on the training split, recorded in results.json"
        ),
    )
    fit.add_argument(
        "--l2",
        type=_args.float_in(0.0, 1.0, low_inclusive=True),
        default=None,
        help=(
            "feature_extraction: L2 penalty on the head's kernel (default: the "
            "best of " + ", ".join(f"{r:g}" for r in _head.L2_PENALTIES)
            + " on the validation split)"
        ),
    )
    fit.add_argument(
        "--validation-fraction",
        type=_args.fraction,
        default=0.2,
        help=(
            "share of each class of the TRAINING examples held out to choose "
            "the head's settings and epochs (feature_extraction, then refitted "
            "on all training examples) or to monitor every epoch (the other "
            "strategies); the test examples only give the final score"
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
        type=_args.int_in(1, 10_000_000),
        default=None,
        help=(
            "training examples to use; default 1000 for rotten_tomatoes and "
            "fashion_mnist, all otherwise"
        ),
    )
    fit.add_argument(
        "--n-test",
        type=_args.int_in(1, 10_000_000),
        default=None,
        help=(
            "held-out examples to evaluate on; default 1000 for rotten_tomatoes "
            "and fashion_mnist, all otherwise"
        ),
    )
    fit.add_argument(
        "--test-fraction",
        type=_args.fraction,
        default=0.2,
        help="share of each class held out, for image folders, CSV files, mnist5k and digits",
    )
    fit.add_argument(
        "--image-size",
        type=_args.int_in(_inputs.MIN_IMAGE_SIZE, _inputs.MAX_IMAGE_SIZE),
        default=None,
        help=(
            f"images are resized to this square size ({_inputs.MIN_IMAGE_SIZE} "
            f"to {_inputs.MAX_IMAGE_SIZE}); default 96 for the built-in 28x28 "
            "and 8x8 datasets, 224 for image folders, or the size a .keras base expects"
        ),
    )
    fit.add_argument(
        "--sequence-length",
        type=_args.int_in(2, 512),
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
    _strategies.add_arguments(fit, _args)
    _args.add_common_arguments(fit)
    return fit


def _check_options(args):
    if args.strategy not in KNOWN_STRATEGIES:
        raise UsageError(
            f"--strategy {args.strategy!r} is not a known strategy. Allowed: "
            f"{', '.join(KNOWN_STRATEGIES)}"
        )
    _inputs.check_base_and_data(args)
    _check_applicable(args)
    _inputs.check_base_takes(args, "--data", args.data)


# Options that only some data or strategies read: given with a value other
# than the default where nothing reads them, they are refused, not dropped.
_CSV_OPTIONS = ("text_column", "label_column", "encoding", "on_bad_lines")
_IMAGE_DATA = ("fashion_mnist", "mnist5k", "digits")


def _check_applicable(args):
    defaults = _defaults()
    given = {
        name for name, default in defaults.items()
        if getattr(args, name, default) != default
    }
    is_csv = os.path.isfile(args.data) and args.data.lower().endswith((".csv", ".tsv"))
    is_text = is_csv or args.data == "rotten_tomatoes"
    is_audio = _inputs.is_audio_folder(args.data)
    is_image = args.data in _IMAGE_DATA or (os.path.isdir(args.data) and not is_audio)
    rules = (
        (_CSV_OPTIONS, not is_csv, "CSV data (--data a .csv/.tsv file)"),
        (("image_size",), is_text or is_audio, "image data"),
        (("sequence_length",), is_image or is_audio, "text data"),
    )
    for names, unused, where in rules:
        for name in names:
            if name in given and unused:
                option = "--" + name.replace("_", "-")
                raise UsageError(
                    f"{option} {getattr(args, name)!r} has no effect with --data "
                    f"{args.data!r} and --strategy {args.strategy!r}. Allowed: "
                    f"{option} only with {where}"
                )
    # Options of some strategies only (the table is in `_strategies`).
    _strategies.check_options(args, given)


def _defaults():
    """Every fit option's default, as parsed from no arguments."""
    fit = add_parser(argparse.ArgumentParser().add_subparsers())
    return vars(fit.parse_args([]))


def _count(variables):
    import numpy as np

    return int(sum(np.prod(v.shape) for v in variables))


def run(args, start_time=None):
    """Runs `keras-transfer fit` with parsed `args`; returns the results dict.

    `start_time` is the `time.time()` the process started (the wall time
    reported includes start-up); defaults to now. The CPU time reported is
    the whole process's.
    """
    start_time = time.time() if start_time is None else start_time
    _run_folder.check_run_name(args.run_name)
    _check_options(args)
    run_dir, output = _run_folder.prepare_paths(args)
    try:
        return _run_in(args, run_dir, output, start_time)
    except BaseException:
        # A run stopped before it wrote anything leaves no empty folder.
        if os.path.isdir(run_dir) and not os.listdir(run_dir):
            os.rmdir(run_dir)
        raise


def _run_in(args, run_dir, output, start_time):
    import keras
    import numpy as np

    keras.utils.set_random_seed(args.seed)
    _strategies.start_distribution(args)
    modality, (x, y), (x_test, y_test), class_names = _inputs.load_data(args)
    base = _inputs.load_base(args, modality)
    x = _inputs.prepare_inputs(args, base, x)
    x_test = _inputs.prepare_inputs(args, base, x_test)
    if len(np.unique(y)) < 2:
        raise UsageError(
            f"--data {args.data!r} has a single class in its training examples. "
            "Allowed: data with at least two classes"
        )

    tensorboard = keras.callbacks.TensorBoard(log_dir=run_dir)
    model, settings, scores = _strategies.run(
        args, base, x, y, x_test, y_test, len(class_names), tensorboard, run_dir
    )
    test_accuracy, test_loss = scores["test_accuracy"], scores["test_loss"]

    results = {
        "base": args.base,
        "data": args.data,
        "strategy": args.strategy,
        "classes": list(class_names),
        "n_train": int(len(y)),
        "n_test": int(len(y_test)),
        "epochs": int(settings["epochs"]),
        "trainable_params": _count(model.trainable_weights),
        "total_params": _count(model.weights),
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "validation_accuracy": scores["validation_accuracy"],
        "validation_loss": scores["validation_loss"],
        "logdir": run_dir,
        "model": output,
        "seed": args.seed,
        # Every option as used (defaults filled in), then what the run chose.
        "settings": {k: v for k, v in sorted(vars(args).items()) if k != "command"},
        "chosen": settings,
    }
    results_path = os.path.join(run_dir, "results.json")
    serving = os.path.join(run_dir, _serving.SERVING_FOLDER)
    results["serving"] = serving
    # Saved with its class names and input preprocessing (raw inputs).
    saved = _serving.wrap(base, model, class_names, modality, args,
                          clip_length=x.shape[1] if modality == "audio" else None)
    with _run_folder.PendingFiles() as pending:
        model_tmp = pending.path_for(output)
        saved.save(model_tmp)
        serving_tmp = pending.path_for(serving)
        try:
            _serving.export(model, serving_tmp)
        except (KeyboardInterrupt, UsageError):
            raise
        except Exception as e:  # e.g. a layer the JAX -> SavedModel export cannot convert
            # The trained model is still saved; the export is recorded as not made.
            pending.discard(serving_tmp)
            results["serving"] = None
            results["serving_error"] = f"{type(e).__name__}: {_args.one_line(e)[:300]}"
        else:
            _serving.write_json(os.path.join(serving_tmp, _serving.SERVING_INFO),
                                _serving.serving_info(saved))
        _check_saved(keras, np, model, model_tmp, x_test, output)
        results["wall_time_s"] = round(time.time() - start_time, 1)
        results["cpu_time_s"] = round(time.process_time(), 1)
        _run_folder.write_json(pending.path_for(results_path), results)
        pending.commit()
    _print_results(results)
    return results


def _check_saved(keras, np, model, path, x_test, output):
    """The saved file predicts what the trained model predicts."""
    probe = keras.tree.map_structure(lambda a: a[:16], x_test)
    reloaded = keras.models.load_model(path)
    difference = float(
        np.max(np.abs(reloaded.predict(probe, verbose=0) - model.predict(probe, verbose=0)))
    )
    if difference > 1e-4:
        raise RuntimeError(
            f"The saved model for {output!r} predicts differently from the trained "
            f"one (max difference {difference:.2e}); nothing was written."
        )


def _print_results(results):
    chosen = results["chosen"]
    strategy = results["strategy"]
    if chosen.get("strategy", strategy) != strategy:
        strategy = f"{strategy} -> {chosen['strategy']}"
    rows = [
        ("strategy", strategy),
        ("base", results["base"]),
        ("data", f"{results['data']} ({len(results['classes'])} classes)"),
        ("training examples", f"{results['n_train']:,}"),
        ("held-out examples", f"{results['n_test']:,}"),
        ("epochs", str(results["epochs"])),
    ]
    if "auto" in chosen:
        rows.append(("auto: why", chosen["auto"]["reason"]))
        rows.append(("auto: compared with", chosen["auto"]["reference"]))
    for key in ("learning_rate", "l2", "warmup_epochs", "stages", "lr_factor",
                "lora_rank", "lora_alpha", "adapter_size", "l2sp_alpha",
                "l2sp_beta", "weight_drift"):
        if chosen.get(key) is not None:
            rows.append((key.replace("_", " "), f"{chosen[key]:g}"))
    if "lr_find" in chosen:
        rows.append(("learning rate from", f"lr_find, {chosen['lr_find']['steps']} steps"))
    if "stage_per_epoch" in chosen:
        rows.append(("stage per epoch", " ".join(map(str, chosen["stage_per_epoch"]))))
    if results.get("validation_accuracy") is not None:
        rows.append((
            "validation accuracy",
            f"{results['validation_accuracy']:.4f} ({chosen['n_validation']:,} "
            "training examples held out)",
        ))
    rows += [
        ("trainable params", f"{results['trainable_params']:,}"),
        ("total params", f"{results['total_params']:,}"),
        ("held-out accuracy", f"{results['test_accuracy']:.4f}"),
        ("held-out loss", f"{results['test_loss']:.4f}"),
        ("wall time", f"{results['wall_time_s']:.1f} s (CPU {results['cpu_time_s']:.1f} s)"),
        ("TensorBoard logs", results["logdir"]),
        ("model", results["model"]),
        ("serving export", results["serving"]
         or f"not written ({results.get('serving_error', '')[:120]})"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    print("keras-transfer fit: results")
    print("-" * (width + 2 + max(len(v) for _, v in rows)))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(f"\nView the logs: tensorboard --logdir {os.path.dirname(results['logdir']) or '.'}")
