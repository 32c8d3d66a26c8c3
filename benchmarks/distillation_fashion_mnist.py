"""Distilled vs labels-only student on Fashion-MNIST, several seeds.

The classic result (Hinton et al. 2015): a small network trained to match a
large teacher's softened outputs beats the same network trained on labels
alone. Here the teacher is a CNN trained on `--teacher-n-train` images (by
default the full 60,000); the students see only a `--n-train` subset (the
transfer set). Each seed trains identical students (MLP 784-32-10, same
initial weights, same data order, same epochs): one on labels alone, and
two with `keras_transfer.models.Distiller` (cached teacher outputs) at
(alpha 0.9, T 4) and (alpha 0.5, T 2). Reports test accuracy per seed, mean
and standard deviation, and the paired differences.

Run: `python benchmarks/distillation_fashion_mnist.py [--seeds 0 1 2]
[--n-train 10000] [--output benchmarks/distillation_fashion_mnist.md]`.
"""

import argparse
import datetime
import gzip
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_transfer.models import Distiller  # noqa: E402

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _read_idx(name, offset):
    with gzip.open(os.path.join(FASHION_DIR, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load_fashion(n_train, n_test, seed=0):
    """Fashion-MNIST subsets as float32 (N, 28, 28, 1) in [0, 1]."""
    try:
        from keras_transfer.datasets import load_fashion_mnist

        (x, y), (xt, yt) = load_fashion_mnist(n_train=n_train, n_test=n_test, seed=seed)
    except ImportError:
        x = _read_idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        y = _read_idx("train-labels-idx1-ubyte.gz", 8)
        xt = _read_idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        yt = _read_idx("t10k-labels-idx1-ubyte.gz", 8)
        rng = np.random.default_rng(seed)
        i, j = rng.permutation(len(x))[:n_train], rng.permutation(len(xt))[:n_test]
        x, y, xt, yt = x[i], y[i], xt[j], yt[j]
    prep = lambda a: (a.astype("float32") / 255.0)[..., None]
    return (prep(x), y.astype("int32")), (prep(xt), yt.astype("int32"))


def teacher_model(seed):
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu", kernel_initializer=init),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu", kernel_initializer=init),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", kernel_initializer=init),
            keras.layers.Dropout(0.3, seed=seed),
            keras.layers.Dense(10, kernel_initializer=init),
        ],
        name="teacher",
    )


def student_model(seed, hidden=32):
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu", kernel_initializer=init),
            keras.layers.Dense(10, kernel_initializer=init),
        ],
        name="student",
    )


def train_teacher(x, y, epochs, seed):
    keras.utils.set_random_seed(seed)
    teacher = teacher_model(seed)
    teacher.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(x, y, batch_size=128, epochs=epochs, verbose=0)
    return teacher


CONFIGS = ((0.9, 4.0), (0.5, 2.0))


def compare_students(teacher, x, y, x_test, y_test, seed, epochs, configs=CONFIGS):
    """Trains a labels-only and distilled students from the same init.

    Returns:
        `(labels_only_accuracy, [distilled_accuracy per (alpha, T)])`.
    """
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(seed)
    alone = student_model(seed)
    alone.compile(keras.optimizers.Adam(1e-3), ce, metrics=["accuracy"])
    alone.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    acc_alone = alone.evaluate(x_test, y_test, verbose=0)[1]

    accs, cached = [], None
    for alpha, temperature in configs:
        keras.utils.set_random_seed(seed)
        distiller = Distiller(teacher, student_model(seed), alpha=alpha, temperature=temperature)
        distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        if cached is None:
            cached = distiller.cache_teacher_outputs(x)
        distiller.fit(cached, y, batch_size=64, epochs=epochs, verbose=0)
        accs.append(distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
    return float(acc_alone), [float(a) for a in accs]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--teacher-n-train", type=int, default=60000)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--student-epochs", type=int, default=15)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    start = time.perf_counter()
    (x_all, y_all), (xt, yt) = load_fashion(args.teacher_n_train, args.n_test, seed=0)
    x, y = x_all[: args.n_train], y_all[: args.n_train]  # a random subset already
    teacher = train_teacher(x_all, y_all, args.teacher_epochs, seed=0)
    teacher_acc = teacher.evaluate(xt, yt, verbose=0)[1]
    rows, alone, distilled = [], [], []
    for seed in args.seeds:
        a, ds = compare_students(teacher, x, y, xt, yt, seed, args.student_epochs)
        alone.append(a)
        distilled.append(ds)
        rows.append(f"| {seed} | {a:.4f} | " + " | ".join(f"{d:.4f} ({d - a:+.4f})" for d in ds) + " |")
        print(rows[-1], flush=True)
    alone, distilled = np.array(alone), np.array(distilled)
    diff = distilled - alone[:, None]
    n_test = len(yt)
    rows.append(
        f"| mean ± sd | {alone.mean():.4f} ± {alone.std(ddof=1):.4f} | "
        + " | ".join(
            f"{distilled[:, k].mean():.4f} ± {distilled[:, k].std(ddof=1):.4f} "
            f"({diff[:, k].mean():+.4f} ± {diff[:, k].std(ddof=1):.4f})"
            for k in range(len(CONFIGS))
        )
        + " |"
    )
    errors = f"test errors (of {n_test}), mean: labels only {(1 - alone.mean()) * n_test:.0f}" + "".join(
        f"; distilled (alpha {a}, T {t}) {(1 - distilled[:, k].mean()) * n_test:.0f}, "
        f"better on {(diff[:, k] > 0).sum()} of {len(diff)} seeds"
        for k, (a, t) in enumerate(CONFIGS)
    )
    table = "\n".join(
        [
            "| seed | labels only | "
            + " | ".join(f"distilled, alpha {a}, T {t} (difference)" for a, t in CONFIGS)
            + " |",
            "|---" * (2 + len(CONFIGS)) + "|",
            *rows,
        ]
    )
    info = (
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, keras "
        f"{keras.__version__} ({keras.backend.backend()}); load average "
        f"{os.getloadavg()[0]:.2f}; total run time {time.perf_counter() - start:.0f} s\n"
        f"- data: Fashion-MNIST; teacher trained on {len(x_all)} training images, "
        f"students on a random subset of {args.n_train} of them (the transfer set); "
        f"{n_test} test images\n"
        f"- teacher: CNN ({teacher.count_params():,} parameters), "
        f"{args.teacher_epochs} epochs, test accuracy {teacher_acc:.4f}\n"
        f"- student: MLP 784-32-10 ({student_model(0).count_params():,} "
        f"parameters), {args.student_epochs} epochs, Adam 1e-3, batch 64, "
        "same initial weights for both arms of a seed\n"
        f"- {errors}\n"
    )
    report = f"{info}\n{table}\n"
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(
                "# Distillation on Fashion-MNIST: distilled vs labels-only student\n\n"
                "Produced by `python benchmarks/distillation_fashion_mnist.py "
                f"--seeds {' '.join(map(str, args.seeds))} --n-train {args.n_train} "
                f"--teacher-n-train {args.teacher_n_train} "
                f"--output {args.output}`.\n\n" + report
            )


if __name__ == "__main__":
    main()
