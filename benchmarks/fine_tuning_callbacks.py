"""Step time of `GradualUnfreezer` / `DiscriminativeLR` vs plain fine-tuning.

EfficientNet-Lite0 (64x64 inputs, batch 32, Adam, TensorFlow, CPU), a Dense
head, groups `layer_groups(base, blocks="auto")` (9 groups). Contenders, each
timed inside a real `fit` (median batch time, first batch of each `fit`
dropped: it traces), interleaved over repeats:

- `full`: the whole base trainable (BatchNorm frozen), plain Adam: what a user
  would otherwise run;
- `discriminative`: the same with `DiscriminativeLR` (one Adam clone per
  group inside a `MultiOptimizer`): the grouped optimizer's overhead;
- `gradual_stage0`: `GradualUnfreezer` in stage 0 (head only): frozen groups
  cost no backward pass;
- `gradual_stage4`: stage 4 (the top 4 of 9 groups trainable).

Usage: `python benchmarks/fine_tuning_callbacks.py [--steps 8] [--repeats 3]`
appends a table to `benchmarks/fine_tuning_callbacks.md`.
"""

import argparse
import datetime
import os
import platform
import statistics
import time

import keras
import numpy as np

from keras_transfer.backbones import efficientnet_lite0
from keras_transfer.callbacks import DiscriminativeLR
from keras_transfer.callbacks import GradualUnfreezer
from keras_transfer.strategies import layer_groups
from keras_transfer.strategies import unfreeze_base

SIZE, BATCH = 64, 32


class _Timer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def _model():
    keras.utils.set_random_seed(0)
    base = efficientnet_lite0(
        weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3)
    )
    inputs = keras.Input((SIZE, SIZE, 3))
    head = keras.layers.Dense(10, activation="softmax", name="head")
    model = keras.Model(inputs, head(base(inputs)))
    unfreeze_base(base)
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    return model, base, head


def _contenders():
    def full():
        model, _, _ = _model()
        return model, lambda: [], 0

    def discriminative():
        model, base, _ = _model()
        groups = layer_groups(base, blocks="auto")
        return model, lambda: [DiscriminativeLR(groups, base_rate=1e-3, factor=0.5)], 0

    def gradual(stage):
        def make():
            model, base, head = _model()
            groups = layer_groups(base, blocks="auto")
            return model, lambda: [GradualUnfreezer(groups, head=[head])], stage

        return make

    return {
        "full": full,
        "discriminative": discriminative,
        "gradual_stage0": gradual(0),
        "gradual_stage4": gradual(4),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (BATCH * (args.steps + 1), SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 10, len(x))
    load_before = os.getloadavg()
    built = {name: make() for name, make in _contenders().items()}
    times = {name: [] for name in built}
    params = {}
    for repeat in range(args.repeats):
        for name, (model, callbacks, stage) in built.items():
            timer = _Timer()
            model.fit(
                x, y, batch_size=BATCH, initial_epoch=stage, epochs=stage + 1,
                callbacks=callbacks() + [timer], verbose=0, shuffle=False,
            )
            times[name].extend(timer.times[1:])
            params[name] = int(sum(np.prod(v.shape) for v in model.trainable_weights))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    load_after = os.getloadavg()
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## Run {date}",
        "",
        f"Machine: vm {platform.machine()}, {os.cpu_count()} cores, "
        f"keras {keras.__version__} ({keras.backend.backend()}). Load average (1/5/15 min) "
        f"before: {tuple(round(v, 2) for v in load_before)}, after: "
        f"{tuple(round(v, 2) for v in load_after)}. {args.steps} steps per fit "
        f"(first dropped) x {args.repeats} interleaved repeats, medians.",
        "",
        "| contender | trainable params | median step (ms) | vs full |",
        "|---|---:|---:|---:|",
    ]
    for name in built:
        lines.append(
            f"| {name} | {params[name]:,} | {medians[name]:.1f} | "
            f"{medians[name] / medians['full']:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fine_tuning_callbacks.md")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(
                "# Fine-tuning callbacks: step time\n\nScript: "
                "`benchmarks/fine_tuning_callbacks.py` (see its docstring for the "
                "contenders). EfficientNet-Lite0 at 64x64, batch 32, Adam, "
                "TensorFlow backend, CPU. Ratios from interleaved runs are the "
                "numbers to read: the 2-core machine is shared.\n"
            )
    with open(path, "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
