"""Feature cache vs the naive frozen-base `fit`: 10 epochs of head training.

Both contenders train the same new head on the same frozen pretrained base,
through `keras_transfer.strategies.fit_feature_extraction`:

- naive: `cache=False`, i.e. `model.fit` of `inputs -> base -> head` with
  the base frozen; the base runs forward every epoch. This is what the Keras
  transfer-learning guide does and what a user would write otherwise.
- cached: `cache=True`; the base runs once over the data (that extraction
  pass is included in the time, with a fresh cache for each repeat), then
  the head trains on the features.

The contenders are interleaved (ABBA order over the repeats) in one process,
after one untimed warm-up of each, and the medians are reported with their
ratio. Test accuracy of each trained head is reported too (it should agree:
the cached run is the same training, see tests/strategies).

Run: `python benchmarks/feature_cache.py [--bases efficientnet_lite0 minilm]
[--repeats 3] [--output benchmarks/feature_cache.md]`.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_transfer.strategies import build_classifier  # noqa: E402
from keras_transfer.strategies import fit_feature_extraction  # noqa: E402


def _fashion_mnist_files(n_train, n_test):
    # Stand-in loader: the first n images of the Debian package's idx files.
    import gzip

    root = "/usr/share/datasets/fashion-mnist"

    def read(name, offset, shape):
        with gzip.open(os.path.join(root, name)) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset).reshape(shape)

    x_train = read("train-images-idx3-ubyte.gz", 16, (-1, 28, 28))[:n_train]
    y_train = read("train-labels-idx1-ubyte.gz", 8, (-1,))[:n_train]
    x_test = read("t10k-images-idx3-ubyte.gz", 16, (-1, 28, 28))[:n_test]
    y_test = read("t10k-labels-idx1-ubyte.gz", 8, (-1,))[:n_test]
    return (x_train, y_train), (x_test, y_test)


def _efficientnet_setup(n_train, n_test, image_size, stand_in=False):
    if stand_in:
        (x_train, y_train), (x_test, y_test) = _fashion_mnist_files(n_train, n_test)
    else:
        from keras_transfer import datasets

        (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(
            n_train=n_train, n_test=n_test, seed=0
        )

    def to_rgb(x):
        # Grey 28x28 uint8 -> RGB image_size x image_size float32 in [0, 255].
        x = np.repeat(x[..., None], 3, axis=-1).astype("float32")
        return keras.ops.convert_to_numpy(
            keras.ops.image.resize(x, (image_size, image_size))
        )

    if stand_in:
        # Speed only: the forward cost does not depend on the weight values.
        base = keras.applications.EfficientNetB0(
            weights=None,
            include_top=False,
            pooling="avg",
            input_shape=(image_size, image_size, 3),
        )
        name = "STAND-IN EfficientNet-B0 architecture, random weights (speed only)"
    else:
        from keras_transfer import backbones

        base = backbones.efficientnet_lite0(
            weights="imagenet",
            include_top=False,
            pooling="avg",
            input_shape=(image_size, image_size, 3),
        )
        name = "EfficientNet-Lite0 (ImageNet)"
    description = (
        f"{name}, {n_train} Fashion-MNIST train images "
        f"grey->RGB resized to {image_size}x{image_size}, 10 classes"
    )
    return base, to_rgb(x_train), y_train, to_rgb(x_test), y_test, 10, description


def _minilm_setup(n_train, n_test, sequence_length):
    from keras_transfer import backbones
    from keras_transfer import datasets

    (x_train, y_train), (x_test, y_test) = datasets.load_rotten_tomatoes(
        task="sentiment", n_train=n_train, n_test=n_test, seed=0
    )
    preprocessor = backbones.minilm_preprocessor(sequence_length=sequence_length)

    def tokenize(texts):
        # Tokenized once up front: both contenders train on the same ids.
        return {
            k: keras.ops.convert_to_numpy(v)
            for k, v in preprocessor(list(texts)).items()
        }

    base = backbones.minilm(sequence_length=sequence_length)
    description = (
        f"MiniLM-L6 (all-MiniLM-L6-v2), {n_train} Rotten Tomatoes reviews, "
        f"{sequence_length} tokens, fresh vs rotten"
    )
    return (
        base,
        tokenize(x_train),
        np.asarray(y_train),
        tokenize(x_test),
        np.asarray(y_test),
        2,
        description,
    )


def _run(base, head_weights, num_classes, x, y, x_test, y_test, cache, epochs, batch_size):
    model = build_classifier(base, num_classes=num_classes, name="bench")
    head = model.get_layer("head")
    head.set_weights(head_weights)
    # Each timed run starts like a fresh process: the naive run traces a new
    # train function through the base, so the cached run must trace the
    # base's predict function again too rather than reuse the last one.
    base.predict_function = None
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    fit_feature_extraction(
        base, head, x, y, epochs=epochs, batch_size=batch_size, cache=cache, verbose=0
    )
    seconds = time.perf_counter() - start
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    accuracy = model.evaluate(x_test, y_test, batch_size=64, verbose=0)[1]
    return seconds, accuracy


def benchmark(setup, repeats, epochs, batch_size):
    base, x, y, x_test, y_test, num_classes, description = setup
    keras.utils.set_random_seed(0)
    head_weights = build_classifier(base, num_classes=num_classes).get_layer("head").get_weights()
    print(f"== {description}", flush=True)
    for cache in (False, True):  # warm-up: tracing, thread pools, caches
        _run(base, head_weights, num_classes, x[:64], y[:64], x_test[:64], y_test[:64],
             cache, 1, batch_size)
    times = {False: [], True: []}
    accuracies = {False: [], True: []}
    loads = [os.getloadavg()[0]]
    for r in range(repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        for cache in order:
            seconds, accuracy = _run(
                base, head_weights, num_classes, x, y, x_test, y_test,
                cache, epochs, batch_size,
            )
            times[cache].append(seconds)
            accuracies[cache].append(accuracy)
            loads.append(os.getloadavg()[0])
            print(f"  repeat {r} cache={cache}: {seconds:.2f} s, "
                  f"test accuracy {accuracy:.4f}", flush=True)
    naive, cached = statistics.median(times[False]), statistics.median(times[True])
    return {
        "description": description,
        "naive": naive,
        "cached": cached,
        "ratio": naive / cached,
        # Each repeat's adjacent pair ran under nearly the same load.
        "pair_ratio": statistics.median(
            n / c for n, c in zip(times[False], times[True])
        ),
        "naive_all": times[False],
        "cached_all": times[True],
        "naive_accuracy": statistics.median(accuracies[False]),
        "cached_accuracy": statistics.median(accuracies[True]),
        "load": (min(loads), max(loads)),
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _write_markdown(path, results, args):
    import tensorflow as tf

    lines = [
        "# Feature cache vs naive frozen-base `fit`",
        "",
        f"{args.epochs} epochs of head training (batch {args.batch_size}) on a frozen "
        "pretrained base, through `keras_transfer.strategies.fit_feature_extraction` "
        "with `cache=False` (naive: `model.fit` of `inputs -> base -> head`, the base "
        "frozen, as in the Keras transfer-learning guide) and `cache=True` (one "
        "extraction pass, included in the time, then the head on the features). "
        f"Same process, contenders interleaved (ABBA), {args.repeats} timed repeats "
        "each after one untimed warm-up; medians. Every timed run retraces its "
        "functions (the base's predict function is reset), as a fresh run would. Accuracy: the trained full model "
        "on held-out test data (median over repeats).",
        "",
        "| base and data | naive fit (s) | cached (s) | speed-up (ratio of medians) | "
        "speed-up (median of per-repeat ratios) | test acc. naive | test acc. cached |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['description']} | {r['naive']:.1f} | {r['cached']:.1f} | "
            f"**{r['ratio']:.1f}x** | {r['pair_ratio']:.1f}x | {r['naive_accuracy']:.3f} | {r['cached_accuracy']:.3f} |"
        )
    lines += ["", "All timings (s):", ""]
    for r in results:
        lines.append(
            f"- {r['description']}: naive {[round(t, 2) for t in r['naive_all']]}, "
            f"cached {[round(t, 2) for t in r['cached_all']]}; 1-min load average "
            f"during the run {r['load'][0]:.2f}-{r['load'][1]:.2f}"
        )
    lines += [
        "",
        f"- Machine: {os.cpu_count()} cores, {_cpu_model()}, shared with other "
        "engineers' jobs at the time (see load averages).",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Python {platform.python_version()}, keras {keras.__version__} "
        f"(backend {keras.backend.backend()}), TensorFlow {tf.__version__}",
        f"- Command: `python benchmarks/feature_cache.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bases", nargs="+", default=["efficientnet_lite0", "minilm"],
                        choices=["efficientnet_lite0", "minilm"])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stand-in", action="store_true",
                        help="EfficientNet-B0 architecture with random weights "
                        "and the raw Fashion-MNIST files, for when "
                        "keras_transfer.backbones/datasets are unavailable")
    parser.add_argument("--output", default=None,
                        help="write the markdown results table here")
    args = parser.parse_args()
    results = []
    for name in args.bases:
        if name == "efficientnet_lite0":
            setup = _efficientnet_setup(
                args.n_train, args.n_test, args.image_size, args.stand_in
            )
        else:
            setup = _minilm_setup(args.n_train, args.n_test, args.sequence_length)
        result = benchmark(setup, args.repeats, args.epochs, args.batch_size)
        print(f"  median naive {result['naive']:.2f} s, cached {result['cached']:.2f} s, "
              f"speed-up {result['ratio']:.1f}x", flush=True)
        results.append(result)
    if args.output:
        _write_markdown(args.output, results, args)


if __name__ == "__main__":
    main()
