"""Cost of the linear-time vs the unbiased quadratic MMD estimator vs batch size.

Both estimators from `keras_transfer.losses.mmd`, Gaussian kernel with a fixed
bandwidth (so the median heuristic, itself quadratic for the quadratic
estimator, is not what is timed), feature width 64, TensorFlow backend, eager
calls on float32 NumPy inputs. For each n the two estimators are interleaved,
`--repeats` times, and the median wall time is reported.

Run: python benchmarks/mmd_scaling.py
"""

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_transfer.losses import mmd  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| n | linear (ms) | quadratic (ms) | quadratic / linear | load |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        x = rng.normal(size=(n, args.dim)).astype("float32")
        y = (rng.normal(size=(n, args.dim)) + 0.1).astype("float32")
        times = {"linear": [], "unbiased": []}
        for estimator in times:  # warm-up
            float(mmd(x, y, bandwidth=8.0, estimator=estimator))
        for _ in range(args.repeats):
            for estimator in times:
                start = time.perf_counter()
                float(mmd(x, y, bandwidth=8.0, estimator=estimator))
                times[estimator].append(time.perf_counter() - start)
        lin = np.median(times["linear"]) * 1e3
        quad = np.median(times["unbiased"]) * 1e3
        print(f"| {n} | {lin:.2f} | {quad:.1f} | {quad / lin:.0f}x | "
              f"{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
