"""`keras-transfer similarity`: how far apart two datasets are, and what to try.

Both datasets go through the frozen `--base` once (at most `--max-samples`
examples of each, a seeded subset); `domain_similarity` compares the pooled
features: proxy A-distance (PAD, from a cross-validated linear domain
classifier), MMD and domain LogME, plus the target LogME when the target is
labelled. `recommend_strategy` turns PAD and the number of labelled target
examples `fit` would train on (after `--test-fraction`; 0 for an unlabelled
target) into advice. Everything is printed and written to
`<logdir>/<run-name>/results.json`.

Keras and TensorFlow are imported in `run`, not when the parser is built.
"""

import os
import time

from keras_transfer.cli import _args
from keras_transfer.cli import _domains
from keras_transfer.cli import _inputs
from keras_transfer.cli._args import UsageError

NAME = "similarity"

EXAMPLES = """\
examples:
  keras-transfer similarity --base efficientnet_lite0 --source mnist5k --target digits
  keras-transfer similarity --base efficientnet_lite0 --source mnist5k --target path/to/images/
  keras-transfer similarity --source rotten_tomatoes --target reviews.csv --text-column review
"""


def add_parser(commands):
    """Adds `similarity` and its options to the `commands` subparsers."""
    parser = commands.add_parser(
        NAME,
        help="measure how far a target dataset is from a source, and advise a strategy",
        description=(
            "Compare two datasets through a pretrained base (proxy A-distance, "
            "MMD, domain LogME) and advise a transfer strategy from the "
            "distance and the number of labelled target examples. Nothing is "
            "trained; the report goes to the screen and to results.json."
        ),
        epilog=EXAMPLES,
        formatter_class=_args.HelpFormatter,
    )
    parser.add_argument(
        "--source", required=True,
        help="the source data (what the model knows): " + _domains.ALLOWED_DATA,
    )
    parser.add_argument(
        "--target", required=True,
        help="the target data (what it should work on): " + _domains.ALLOWED_UNLABELLED,
    )
    parser.add_argument(
        "--base", default="minilm",
        help=(
            "the pretrained base whose features are compared: 'minilm' (text), "
            "'efficientnet_lite0' (images), a .keras model file or a keras-hub "
            "preset folder"
        ),
    )
    parser.add_argument(
        "--max-samples", type=_args.int_in(10, 100_000), default=1000,
        help="examples of each dataset compared (a seeded random subset)",
    )
    parser.add_argument(
        "--folds", type=_args.int_in(2, 20), default=5,
        help="cross-validation folds of the linear domain classifier (PAD)",
    )
    parser.add_argument("--batch-size", type=_args.int_in(1, 65_536), default=64)
    _domains.add_data_arguments(
        parser, "both datasets",
        f"default {_inputs.DEFAULT_IMAGE_SIZE}, or the size a .keras base expects",
    )
    _domains.add_run_arguments(parser, saves_model=False)
    return parser


def run(args, start_time=None):
    """Runs `keras-transfer similarity` with parsed `args`; returns the results."""
    start_time = time.time() if start_time is None else start_time
    _domains.check_base(args)
    _domains.check_data_option("--source", args.source)
    _domains.check_data_option("--target", args.target, unlabelled_ok=True)
    _domains.check_csv_options(args, (args.source, args.target))
    _domains.check_modality_options(args, (args.source, args.target))
    _domains.check_kinds(args)
    run_dir, _ = _domains.prepare_run(
        args, (args.base, args.source, args.target, NAME), saves_model=False
    )
    return _domains.run_in_folder(
        run_dir, None, lambda: _run_in(args, run_dir, start_time)
    )


def measure(args, source, target, base):
    """`(report, advice)` for two loaded `Domain`s and a loaded base."""
    import numpy as np

    from keras_transfer.strategies import FeatureCache
    from keras_transfer.strategies import domain_similarity
    from keras_transfer.strategies import recommend_strategy

    rng = np.random.default_rng(args.seed)
    features, picks = [], []
    for domain in (source, target):
        x = domain.all_x()
        pick = np.sort(rng.permutation(len(x))[: args.max_samples])
        picks.append(pick)
        inputs = _inputs.prepare_inputs(args, base, x[pick])
        cache = FeatureCache(base.model, batch_size=args.batch_size, verbose=args.verbose)
        features.append(np.asarray(cache.transform(inputs)).reshape(len(pick), -1))
    labels = None
    if target.labelled:
        y = np.concatenate([np.asarray(target.y), np.asarray(target.y_test)])
        labels = y[picks[1]].astype("int64")
    folds = min(args.folds, len(picks[0]), len(picks[1]))
    try:
        report = domain_similarity(
            features[0], features[1], folds=folds, seed=args.seed,
            max_samples=args.max_samples, target_labels=labels,
        )
    except ValueError as e:
        raise UsageError(
            f"--target {args.target!r} cannot be compared with --source "
            f"{args.source!r}: {e}"
        ) from None
    n_target = len(target.y) if target.labelled else 0
    advice = recommend_strategy(
        int(n_target), report,
        n_classes=len(target.classes) if target.labelled else None,
    )
    return report, advice


def load_base(args, modality, data_option, data_value):
    import argparse

    ns = argparse.Namespace(**vars(args))
    ns.data = data_value
    try:
        return _inputs.load_base(ns, modality)
    except UsageError as e:
        raise UsageError(str(e).replace(f"--data {data_value!r}", f"{data_option} {data_value!r}"))


def _run_in(args, run_dir, start_time):
    import keras

    keras.utils.set_random_seed(args.seed)
    source = _domains.load_domain(args, "--source", args.source)
    target = _domains.load_domain(args, "--target", args.target, unlabelled_ok=True)
    _domains.check_same_modality(source, target)
    base = load_base(args, source.modality, "--source", args.source)
    report, advice = measure(args, source, target, base)

    results = {
        "command": NAME,
        "base": args.base,
        "source": args.source,
        "target": args.target,
        "n_source": len(source),
        "n_target": len(target),
        "target_labelled": target.labelled,
        "n_target_labelled_train": int(advice.n_target),
        "target_classes": list(target.classes) if target.labelled else None,
        "similarity_report": {k: _plain(v) for k, v in report.items()},
        "similarity": advice.similarity,
        "advice": {
            "strategy": advice.strategy,
            "alternatives": list(advice.alternatives),
            "reason": advice.reason,
            "size": advice.size,
            "similarity_level": advice.similarity_level,
            "size_threshold": advice.size_threshold,
            "similarity_threshold": advice.similarity_threshold,
        },
        "logdir": run_dir,
        "seed": args.seed,
        "settings": _domains.settings_of(args),
    }
    _domains.write_results(run_dir, results, start_time)
    _print(results, report)
    return results


def _plain(value):
    try:
        return float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        return value


def _print(results, report):
    advice = results["advice"]
    rows = [
        ("base", results["base"]),
        ("source", f"{results['source']} ({results['n_source']:,} examples)"),
        ("target", f"{results['target']} ({results['n_target']:,} examples, "
                   + ("labelled" if results["target_labelled"] else "unlabelled") + ")"),
        ("examples compared", f"{min(report['n_source'], results['settings']['max_samples'])}"
                              f" source, {min(report['n_target'], results['settings']['max_samples'])} target"),
        ("feature width", report["feature_dim"]),
        ("proxy A-distance", f"{report['proxy_a_distance']:.3f}  (0 = same domain, 2 = separable)"),
        ("domain classifier error", f"{report['domain_classifier_error']:.3f}"),
        ("MMD^2, unbiased estimate", f"{report['mmd']:.4g}  (0 = indistinguishable; "
                                     "may be slightly negative: sampling noise)"),
        ("domain LogME", f"{report['domain_logme']:.3f}  (higher = farther apart)"),
    ]
    if "target_logme" in report:
        rows.append(("target LogME", f"{report['target_logme']:.3f}  (higher = features suit the target labels)"))
    rows += [
        ("similarity", f"{results['similarity']:.3f}  (1 - PAD/2; {advice['similarity_level']})"),
        ("labelled target (train)", f"{results['n_target_labelled_train']:,}  ({advice['size']})"),
        ("advice", advice["strategy"]),
        ("alternatives", ", ".join(advice["alternatives"]) or "-"),
        ("wall time", f"{results['wall_time_s']:.1f} s (CPU {results['cpu_time_s']:.1f} s)"),
        ("results", os.path.join(results["logdir"], "results.json")),
    ]
    _domains.print_table("keras-transfer similarity: results", rows, "Why: " + advice["reason"])
