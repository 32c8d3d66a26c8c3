"""QLoRA-style LoRA on a quantized MiniLM: memory, step time, accuracy.

Run: `python benchmarks/qlora.py [--steps 5] [--repeats 3] [--accuracy]
[--seeds 0 1 2] [--n-train 500] [--n-test 500]`. Results go to
`benchmarks/qlora.md`.

Model: MiniLM-L6 (all-MiniLM-L6-v2 weights, `keras_transfer.backbones.minilm`,
mean pooling) plus a `Dense(2)` head, sequence length 64. Contenders, all
with rank-8 LoRA on the query and value projections of the 6 blocks and a
trainable head, everything else frozen:

- `float_lora`: float32 backbone, `LoRAEinsumDense` via `apply_lora`.
- `int8_lora`: `encoder.quantize("int8")` (every Dense, EinsumDense and
  embedding of the backbone), then `apply_lora`.
- `int4_lora`: the same with `"int4"` (Keras's default block size 128).
- `keras_lora_int8`: `encoder.quantize("int8")`, then Keras's own
  `enable_lora(8)` on the same projections.

Columns: weight memory (bytes of every variable of the model, frozen and
trainable); resident memory of a fresh process that builds the model
(after returning freed memory to the OS) and its peak while running
`--steps` training steps (the peak counter reset after building; most of it
is the TensorFlow runtime, so read the differences), and the peak while
loading (the float checkpoint is read before quantizing); step time (one
`train_on_batch`, batch 8, Adam, contenders interleaved in one process,
median over repeats); accuracy on Rotten Tomatoes sentiment (rotten vs
fresh) after one epoch on `--n-train` reviews, on `--n-test` held-out ones,
per seed (`--accuracy`).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

RANK, LENGTH, BATCH = 8, 64, 8
QV = r"self_attention_layer/(query|value)$"
MODES = {
    "float_lora": None,
    "int8_lora": "int8",
    "int4_lora": "int4",
    "keras_lora_int8": "int8",
}
CONTENDERS = tuple(MODES)


def build(kind, seed=0):
    from keras_transfer.backbones import minilm
    from keras_transfer.strategies import apply_lora

    keras.utils.set_random_seed(seed)
    encoder = minilm(sequence_length=LENGTH, normalize=False)
    if MODES[kind] is not None:
        encoder.quantize(MODES[kind])
    if kind.startswith("keras_lora"):
        backbone = _backbone(encoder)
        for block in backbone.transformer_layers:
            attention = block._self_attention_layer
            attention.query_dense.enable_lora(RANK)
            attention.value_dense.enable_lora(RANK)
        # Train the low-rank factors only (enable_lora leaves biases and
        # every other layer trainable), like ours.
        for v in encoder.weights:
            v.trainable = "lora_kernel" in v.path
    else:
        encoder, _ = apply_lora(encoder, lora_rank=RANK, targets=QV)
    inputs = {
        "token_ids": keras.Input((LENGTH,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(
            (LENGTH,), dtype="int32", name="padding_mask"
        ),
    }
    outputs = keras.layers.Dense(2, name="head")(encoder(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _backbone(encoder):
    import keras_hub

    for layer in encoder.layers:
        if isinstance(layer, keras_hub.models.Backbone):
            return layer
    raise ValueError("no keras-hub backbone in the encoder")


def weight_bytes(model):
    total = trainable = 0
    for v in model.weights:
        size = int(np.prod(v.shape)) * np.dtype(
            keras.backend.standardize_dtype(v.dtype)
        ).itemsize
        total += size
        if v.trainable:
            trainable += size
    return total, trainable


def batch(rng, n=BATCH):
    x = {
        "token_ids": rng.integers(1000, 20000, (n, LENGTH)).astype("int32"),
        "padding_mask": np.ones((n, LENGTH), "int32"),
    }
    return x, rng.integers(0, 2, (n,))


def _proc_status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise ValueError(field)


def peak_memory(kind, steps):
    """Run in a fresh process: resident memory of the model and of training.

    The float checkpoint is loaded before quantizing, so the process's
    all-time peak includes it; after building, freed memory is returned to
    the OS (`malloc_trim`) and the peak counter is reset
    (`/proc/self/clear_refs`), so `train_peak_mib` is the peak while
    training (trace and first step included).
    """
    import ctypes
    import gc

    rng = np.random.default_rng(0)
    model = build(kind)
    x, y = batch(rng)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    built = _proc_status_mib("VmRSS")
    load_peak = _proc_status_mib("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(steps):
        model.train_on_batch(x, y)
    print(json.dumps({
        "built_mib": built,
        "load_peak_mib": load_peak,
        "train_peak_mib": _proc_status_mib("VmHWM"),
    }))


def speed(kinds, steps, repeats):
    rng = np.random.default_rng(0)
    models = {k: build(k) for k in kinds}
    x, y = batch(rng)
    for m in models.values():
        m.train_on_batch(x, y)
        m.train_on_batch(x, y)
    times = {k: [] for k in kinds}
    for _ in range(repeats):
        for k, m in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                m.train_on_batch(x, y)
            times[k].append((time.perf_counter() - start) / steps)
    sizes = {k: weight_bytes(m) for k, m in models.items()}
    return times, sizes


def accuracy(kind, seed, n_train, n_test):
    from keras_transfer import datasets
    from keras_transfer.backbones.minilm import minilm_preprocessor

    (x, y), (x_test, y_test) = datasets.load_rotten_tomatoes(
        n_train=n_train, n_test=n_test, seed=0
    )
    preprocess = minilm_preprocessor(sequence_length=LENGTH)
    model = build(kind, seed=seed)
    model.fit(preprocess(x), y, batch_size=16, epochs=1, verbose=0)
    return float(model.evaluate(preprocess(x_test), y_test, verbose=0)[1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=list(CONTENDERS))
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        return peak_memory(args.memory_of, args.steps)

    load_before = os.getloadavg()
    memory = {}
    for k in args.kinds:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-of", k, "--steps",
             str(args.steps)],
            capture_output=True, text=True, check=True,
        ).stdout
        memory[k] = json.loads(out.strip().splitlines()[-1])
        print(k, memory[k], flush=True)
    times, sizes = speed(args.kinds, args.steps, args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = "float_lora"
    lines = [
        "| contender | weights (MiB) | trainable (MiB) | vs float_lora | "
        "RSS after build (MiB) | peak RSS training (MiB) | peak RSS "
        "loading (MiB) | median step (ms) | spread (ms) | step vs "
        "float_lora |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in args.kinds:
        total, trainable = sizes[k]
        lines.append(
            f"| {k} | {total / 2**20:.1f} | {trainable / 2**20:.2f} | "
            f"{total / sizes[ref][0]:.2f}x | {memory[k]['built_mib']:.0f} | "
            f"{memory[k]['train_peak_mib']:.0f} | "
            f"{memory[k]['load_peak_mib']:.0f} | {1e3 * med[k]:.0f} | "
            f"{1e3 * min(times[k]):.0f}-{1e3 * max(times[k]):.0f} | "
            f"{med[k] / med[ref]:.2f}x |"
        )
    print("\n".join(lines), flush=True)
    if args.accuracy:
        lines.append(
            f"\nAccuracy (Rotten Tomatoes sentiment, 1 epoch on "
            f"{args.n_train} reviews, {args.n_test} held out, batch 16, "
            "Adam 1e-3):\n"
        )
        lines.append("| contender | " + " | ".join(
            f"seed {s}" for s in args.seeds) + " | mean |")
        lines.append("|---|" + "---:|" * (len(args.seeds) + 1))
        for k in args.kinds:
            accs = [
                accuracy(k, s, args.n_train, args.n_test) for s in args.seeds
            ]
            lines.append(
                f"| {k} | " + " | ".join(f"{a:.3f}" for a in accs)
                + f" | {np.mean(accs):.3f} |"
            )
            print(lines[-1], flush=True)
    header = (
        f"Machine: {platform.node()} {platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other jobs), keras "
        f"{keras.__version__} ({keras.backend.backend()}). Date: "
        f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC. Load average "
        f"(1/5/15 min) before: {load_before}, after: {os.getloadavg()}. "
        f"Batch {BATCH}, seq len {LENGTH}, rank {RANK}; {args.steps} steps x "
        f"{args.repeats} interleaved repeats.\n"
    )
    print(header + "\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
