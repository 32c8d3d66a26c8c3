"""QLoRA-style LoRA on a quantized MiniLM: memory, step time, accuracy.

Run: `python benchmarks/qlora.py [--accuracy] [--seeds 0 1 2]
[--n-train 400] [--n-test 400] [--epochs 2] [--steps 5]`. Results go to
`benchmarks/qlora.md`.

Model and protocol: tutorial 02's (`tutorials/02_lora_and_adapters.ipynb`).
MiniLM-L6 (all-MiniLM-L6-v2 weights, `keras_transfer.backbones.minilm`,
mean pooling, L2-normalised) in `build_classifier` with the default head
(`Dropout(0.2) -> Dense(2, softmax)`), sequence length 48, batch 16, Adam
1e-3. Contenders, all with rank-8 LoRA on the query and value projections
of the 6 blocks and a trainable head, everything else frozen:

- `float_lora`: float32 backbone, `LoRAEinsumDense` via `apply_lora`.
- `int8_lora`: `encoder.quantize("int8")` (every Dense, EinsumDense and
  embedding of the backbone), then `apply_lora`.
- `int4_lora`: the same with `"int4"` (Keras's default block size 128).
- `keras_lora_int8`: `encoder.quantize("int8")`, then Keras's own
  `enable_lora(8)` on the same projections, only its LoRA factors trainable.

With `--accuracy`: Rotten Tomatoes sentiment (rotten vs fresh), `--n-train`
training reviews and a fixed `--n-test`-review test set (data split seed 0).
For each seed, a linear probe (the head alone, 100 epochs on the frozen
float encoder's cached features, `fit_feature_extraction`) is trained
first; every contender of that seed starts from a copy of that probe's
head and trains `--epochs` epochs. Within each seed the contenders run one
after the other (interleaved), each in a fresh process.

Columns: weight memory (bytes of every variable of the classifier, frozen
and trainable); resident memory of that process once the model is built
(after returning freed memory to the OS), the peak while loading (the float
checkpoint is read before quantizing) and the peak while training (the
peak counter reset after building; trace included; most of it is the
backend runtime, so read the differences); step time: the last epoch's
wall time divided by its steps (`--accuracy`), or the median of `--steps`
`train_on_batch` calls after two warm-up calls (without it); test accuracy
per seed and its mean.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

RANK, LENGTH, BATCH, LEARNING_RATE = 8, 48, 16, 1e-3
HEAD_EPOCHS = 100
QV = r"self_attention_layer/(query|value)$"
MODES = {
    "float_lora": None,
    "int8_lora": "int8",
    "int4_lora": "int4",
    "keras_lora_int8": "int8",
}
CONTENDERS = tuple(MODES)


def encoder_for(kind, seed):
    """The seeded MiniLM of contender `kind`, LoRA applied."""
    import warnings

    from keras_transfer.backbones import minilm
    from keras_transfer.strategies import apply_lora

    keras.utils.set_random_seed(seed)
    encoder = minilm(sequence_length=LENGTH)
    if MODES[kind] is not None:
        with warnings.catch_warnings():
            # One warning per layer Keras does not quantize (LayerNorm...).
            warnings.filterwarnings("ignore", message="Layer .* does not")
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
        return encoder
    return apply_lora(encoder, lora_rank=RANK, targets=QV)[0]


def classifier(kind, seed, make_head):
    """Tutorial 02's `fit_end_to_end` model: `build_classifier` + Adam.

    `make_head()` is called after seeding (its `Dropout` draws its seed).
    """
    from keras_transfer import strategies

    encoder = encoder_for(kind, seed)
    keras.utils.set_random_seed(seed)
    model = strategies.build_classifier(encoder, head=make_head())
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        "sparse_categorical_crossentropy",
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


def _proc_status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise ValueError(field)


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def one_run(kind, seed, workdir, steps):
    """Runs in a fresh process: builds `kind`, trains, prints a JSON line.

    With data in `workdir` (`--accuracy`): the probe head of `seed`, the
    tokenized reviews; fits and evaluates. Otherwise `steps` steps on
    random tokens. After building, freed memory is returned to the OS
    (`malloc_trim`) and the peak counter is reset (`/proc/self/clear_refs`),
    so `train_peak_mib` is the peak while training.
    """
    import ctypes
    import gc

    from keras_transfer import strategies

    data_file = os.path.join(workdir, "data.npz")
    accuracy_run = os.path.exists(data_file)
    if accuracy_run:
        head_file = os.path.join(workdir, f"head_{seed}.keras")

        def make_head():
            return keras.models.load_model(head_file)

        data = np.load(data_file)
        x = {k: data[f"train_{k}"] for k in ("token_ids", "padding_mask")}
        x_test = {k: data[f"test_{k}"] for k in ("token_ids", "padding_mask")}
        y, y_test = data["y_train"], data["y_test"]
    else:

        def make_head():
            return strategies.build_classifier(
                keras.Sequential([keras.Input((384,))]), num_classes=2
            ).get_layer("head")

        rng = np.random.default_rng(seed)
        x = {
            "token_ids": rng.integers(1000, 20000, (BATCH, LENGTH)).astype("int32"),
            "padding_mask": np.ones((BATCH, LENGTH), "int32"),
        }
        y = rng.integers(0, 2, (BATCH,))
    model = classifier(kind, seed, make_head)
    total, trainable = weight_bytes(model)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    result = {
        "kind": kind,
        "seed": seed,
        "weights_mib": total / 2**20,
        "trainable_mib": trainable / 2**20,
        "trainable_params": int(
            sum(np.prod(v.shape) for v in model.trainable_weights)
        ),
        "built_mib": _proc_status_mib("VmRSS"),
        "load_peak_mib": _proc_status_mib("VmHWM"),
    }
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    if accuracy_run:
        timer = EpochTimer()
        model.fit(
            x, y, batch_size=BATCH, epochs=int(os.environ["QLORA_EPOCHS"]),
            callbacks=[timer], verbose=0,
        )
        result["train_peak_mib"] = _proc_status_mib("VmHWM")
        steps_per_epoch = -(-len(y) // BATCH)
        result["epoch_s"] = timer.times
        result["step_ms"] = 1e3 * timer.times[-1] / steps_per_epoch
        probabilities = model.predict(x_test, batch_size=64, verbose=0)
        result["accuracy"] = float((probabilities.argmax(axis=1) == y_test).mean())
    else:
        model.train_on_batch(x, y)
        model.train_on_batch(x, y)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        result["train_peak_mib"] = _proc_status_mib("VmHWM")
        result["step_ms"] = 1e3 * statistics.median(times)
    result["load"] = os.getloadavg()[0]
    print(json.dumps(result))


def prepare(workdir, seeds, n_train, n_test):
    """Tokenized data and one probe head per seed (tutorial 02's 2a)."""
    from keras_transfer import backbones, datasets, strategies

    (x_train, y_train), (x_test, y_test) = datasets.load_rotten_tomatoes(
        task="sentiment", n_train=n_train, n_test=n_test, seed=0
    )
    preprocess = backbones.minilm_preprocessor(LENGTH)

    def tokenize(texts):
        return {k: np.asarray(v) for k, v in preprocess(list(texts)).items()}

    t_train, t_test = tokenize(x_train), tokenize(x_test)
    np.savez(
        os.path.join(workdir, "data.npz"),
        y_train=y_train, y_test=y_test,
        **{f"train_{k}": v for k, v in t_train.items()},
        **{f"test_{k}": v for k, v in t_test.items()},
    )
    base = backbones.minilm(sequence_length=LENGTH)
    cache = strategies.FeatureCache(base, batch_size=64)
    test_features = base.predict(t_test, batch_size=64, verbose=0)
    probe = {}
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        frozen = strategies.build_classifier(base, num_classes=2)
        head = frozen.get_layer("head")
        strategies.fit_feature_extraction(
            base, head, t_train, y_train, epochs=HEAD_EPOCHS,
            batch_size=BATCH, optimizer=keras.optimizers.Adam(LEARNING_RATE),
            cache=cache, verbose=0,
        )
        head.save(os.path.join(workdir, f"head_{seed}.keras"))
        probs = head.predict(test_features, verbose=0)
        probe[seed] = float((probs.argmax(axis=1) == y_test).mean())
        print(f"probe seed {seed}: {probe[seed]:.4f}", flush=True)
    majority = float(max(y_test.mean(), 1 - y_test.mean()))
    return probe, majority


def run_all(kinds, seeds, workdir, steps, epochs):
    results = {k: [] for k in kinds}
    env = {**os.environ, "QLORA_EPOCHS": str(epochs)}
    for seed in seeds:
        for k in kinds:  # interleaved within each seed
            out = subprocess.run(
                [sys.executable, __file__, "--one-run", k, "--seed",
                 str(seed), "--workdir", workdir, "--steps", str(steps)],
                capture_output=True, text=True, env=env,
            )
            if out.returncode:
                sys.stderr.write(out.stderr[-4000:])
                raise RuntimeError(f"{k} seed {seed} failed")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results[k].append(result)
            print(json.dumps(result), flush=True)
    return results


def table(kinds, seeds, results, accuracy):
    ref = results["float_lora"][0]
    step = {k: statistics.median(r["step_ms"] for r in results[k]) for k in kinds}
    head = (
        "| contender | weights (MiB) | vs float_lora | trainable (MiB) | "
        "RSS after build (MiB) | peak RSS loading (MiB) | peak RSS training "
        "(MiB) | step (ms) | step vs float_lora |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if accuracy:
        head += "".join(f" seed {s} |" for s in seeds) + " mean |"
        rule += "---:|" * (len(seeds) + 1)
    lines = [head, rule]
    for k in kinds:
        rs = results[k]
        med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
        row = (
            f"| {k} | {rs[0]['weights_mib']:.1f} | "
            f"{rs[0]['weights_mib'] / ref['weights_mib']:.2f}x | "
            f"{rs[0]['trainable_mib']:.2f} | {med('built_mib'):.0f} | "
            f"{med('load_peak_mib'):.0f} | {med('train_peak_mib'):.0f} | "
            f"{step[k]:.0f} | {step[k] / step['float_lora']:.2f}x |"
        )
        if accuracy:
            accs = [r["accuracy"] for r in rs]
            row += "".join(f" {a:.4f} |" for a in accs)
            row += f" {np.mean(accs):.4f} |"
        lines.append(row)
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=list(CONTENDERS))
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--one-run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:
        return one_run(args.one_run, args.seed, args.workdir, args.steps)
    if "float_lora" not in args.kinds:
        parser.error("--kinds must include float_lora (the reference)")

    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    seeds = args.seeds if args.accuracy else args.seeds[:1]
    with tempfile.TemporaryDirectory() as workdir:
        probe = majority = None
        if args.accuracy:
            probe, majority = prepare(
                workdir, seeds, args.n_train, args.n_test
            )
        results = run_all(args.kinds, seeds, workdir, args.steps, args.epochs)
    lines = table(args.kinds, seeds, results, args.accuracy)
    loads = [r["load"] for rs in results.values() for r in rs]
    ended = datetime.datetime.now(datetime.timezone.utc)
    header = (
        f"Machine: {platform.node()} {platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other jobs), keras "
        f"{keras.__version__} ({keras.backend.backend()}). Date: "
        f"{started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC. Load average (1 min) "
        f"before: {load_before[0]:.1f}, at the end of each run: "
        f"{min(loads):.1f}-{max(loads):.1f}, after: {os.getloadavg()[0]:.1f}. "
        f"Batch {BATCH}, seq len {LENGTH}, rank {RANK}, Adam {LEARNING_RATE}."
    )
    if args.accuracy:
        header += (
            f" {args.n_train} training reviews, {args.n_test} test reviews "
            f"(majority class {majority:.3f}), {args.epochs} epochs; probe "
            "(head alone, the start of every run) per seed: "
            + ", ".join(f"{probe[s]:.4f}" for s in seeds)
            + f" (mean {np.mean([probe[s] for s in seeds]):.4f})."
        )
    print(header + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
