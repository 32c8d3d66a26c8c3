"""Distillation epoch time with and without the teacher cache vs the student alone.

Three contenders train the same small student on the same Fashion-MNIST
subset for one epoch (same batch size, same optimizer):

- student: `student.fit(x, y)`, training on labels alone; what a user would
  run without distillation, the baseline of the ratios.
- distill: `Distiller(teacher, student).fit(x, y)`, the teacher (a CNN)
  running forward on every batch, as `keras.distillation.Distiller` does.
- cached: `Distiller.fit(distiller.cache_teacher_outputs(x), y)`, the teacher
  outputs computed once (its time reported separately: it is paid once, not
  per epoch) and shuffled along with their examples.

Each contender gets one untimed warm-up epoch (tracing), then the repeats
run interleaved in rotating order in one process; medians and ratios to the
student-alone median are reported.

Run: `python benchmarks/teacher_cache.py [--repeats 5] [--n-train 12000]
[--output benchmarks/teacher_cache.md]`.
"""

import argparse
import datetime
import gzip
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_transfer.models import Distiller  # noqa: E402

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def load_fashion(n_train, seed=0):
    try:
        from keras_transfer.datasets import load_fashion_mnist

        (x, y), _ = load_fashion_mnist(n_train=n_train, n_test=10, seed=seed)
    except ImportError:
        with gzip.open(f"{FASHION_DIR}/train-images-idx3-ubyte.gz") as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(f"{FASHION_DIR}/train-labels-idx1-ubyte.gz") as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8)
        idx = np.random.default_rng(seed).permutation(len(x))[:n_train]
        x, y = x[idx], y[idx]
    return (x.astype("float32") / 255.0)[..., None], y.astype("int32")


def teacher_model():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10),
        ],
        name="teacher",
    )


def student_model():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="student",
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x, y = load_fashion(args.n_train)
    teacher = teacher_model()
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, batch_size=128, epochs=1, verbose=0)

    student = student_model()
    student.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller = Distiller(teacher, student_model(), alpha=0.9, temperature=4.0)
    distiller.compile("adam")
    cached_distiller = Distiller(teacher, student_model(), alpha=0.9, temperature=4.0)
    cached_distiller.compile("adam")

    start = time.perf_counter()
    cached = cached_distiller.cache_teacher_outputs(x, batch_size=512)
    cache_time = time.perf_counter() - start

    contenders = {
        "student alone": lambda: student.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0),
        "distill, no cache": lambda: distiller.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0),
        "distill, cached": lambda: cached_distiller.fit(cached, y, batch_size=args.batch_size, epochs=1, verbose=0),
    }
    names = list(contenders)
    for name in names:  # warm-up: tracing
        contenders[name]()
    times = {name: [] for name in names}
    loads = []
    for r in range(args.repeats):
        order = names[r % 3:] + names[: r % 3]
        for name in order:
            loads.append(os.getloadavg()[0])
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)

    base = statistics.median(times["student alone"])
    rows = []
    for name in names:
        med = statistics.median(times[name])
        rows.append(
            f"| {name} | {med:.2f} | {min(times[name]):.2f} | {max(times[name]):.2f} | {med / base:.2f}x |"
        )
    table = "\n".join(
        [
            "| contender | median epoch (s) | min | max | ratio to student alone |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    info = (
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        f"({platform.processor() or 'cpu'}), Python {platform.python_version()}, "
        f"keras {keras.__version__}, backend {keras.backend.backend()}\n"
        f"- load average (1 min) during the timed runs: min {min(loads):.2f}, "
        f"median {statistics.median(loads):.2f}, max {max(loads):.2f} "
        "(machine shared with other jobs)\n"
        f"- data: Fashion-MNIST, {args.n_train} training images, batch "
        f"{args.batch_size}, {args.repeats} interleaved repeats after one "
        "warm-up epoch each\n"
        f"- teacher: CNN, {teacher.count_params():,} parameters; student: "
        f"MLP 784-32-10, {student.count_params():,} parameters\n"
        f"- one-off teacher pass for the cache: {cache_time:.2f} s "
        f"({cache_time / base:.2f}x one student-alone epoch)\n"
    )
    report = f"{info}\n{table}\n"
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(
                "# Teacher cache: distillation epoch time\n\n"
                "Produced by `python benchmarks/teacher_cache.py "
                f"--repeats {args.repeats} --n-train {args.n_train} "
                f"--output {args.output}`.\n\n" + report
            )


if __name__ == "__main__":
    main()
