"""Multi-task (digit + speaker) vs single-task on spoken digits, several seeds.

Free Spoken Digit Dataset (Jakobovski et al., CC BY-SA 4.0), 3,000
recordings of 6 speakers x 10 digits x 50; the usual split: recordings 0-4
of each speaker and digit are the test set (300), the rest train (2,700).
Features: log-power spectrogram of the first second (256-sample frames, hop
128 at 8 kHz), pooled to 15 frames x 32 bands and standardised.

Both tasks come from the same recordings. Two labelling regimes:

- full: every training recording has both labels;
- few digit labels: only `--digit-fraction` of the training recordings keep
  their digit label (the rest are `-1`, masked by `MultiTaskModel`), while
  all keep the speaker label.

Per seed and regime: single-task models (the same encoder + one head,
trained on the examples labelled for that task) vs `MultiTaskModel` with
fixed equal weights and with learned (Kendall) weights, same architecture,
same epochs. Reports test accuracy per task, mean ± sd over seeds.

Run: `python benchmarks/multi_task_fsdd.py [--seeds 0 1 2]
[--output benchmarks/multi_task_fsdd.md]`.
"""

import argparse
import datetime
import glob
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_transfer.models import MultiTaskModel  # noqa: E402

FSDD = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "shared", "data", "fsdd", "recordings",
)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _features(wave, length=8000, frame=256, hop=128, frames=15, bands=32):
    wave = wave.astype("float32") / 32768.0
    wave = np.pad(wave[:length], (0, max(0, length - len(wave))))
    n = 1 + (length - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(wave[idx] * np.hanning(frame), axis=1)) ** 2
    spec = np.log(spec[:, 1:] + 1e-6)  # (61, 128)
    t_edges = np.linspace(0, n, frames + 1).astype(int)
    spec = np.stack([spec[a:b].mean(0) for a, b in zip(t_edges[:-1], t_edges[1:])])
    return spec.reshape(frames, bands, -1).mean(-1).ravel()


def load_fsdd(path=FSDD, every=1):
    """Features and labels: `(x_train, digit, speaker), (x_test, digit, speaker)`.

    `every=k` keeps every k-th recording (in file-name order), for quick runs.
    """
    from scipy.io import wavfile

    files = sorted(glob.glob(os.path.join(path, "*.wav")))[::every]
    if not files:
        raise FileNotFoundError(f"No FSDD recordings under {path!r}")
    speakers = sorted({os.path.basename(f).split("_")[1] for f in files})
    x, digit, speaker, index = [], [], [], []
    for f in files:
        d, s, i = os.path.basename(f)[:-4].split("_")
        x.append(_features(wavfile.read(f)[1]))
        digit.append(int(d))
        speaker.append(speakers.index(s))
        index.append(int(i))
    x = np.array(x, "float32")
    digit, speaker, index = map(np.array, (digit, speaker, index))
    test = index < 5
    mean, std = x[~test].mean(0), x[~test].std(0) + 1e-6
    x = (x - mean) / std
    return (
        (x[~test], digit[~test], speaker[~test]),
        (x[test], digit[test], speaker[test]),
    )


def encoder(seed, dim):
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential(
        [
            keras.Input((dim,)),
            keras.layers.Dropout(0.2, seed=seed),
            keras.layers.Dense(64, activation="relu", kernel_initializer=init),
        ],
        name="encoder",
    )


def head(classes, seed, name):
    init = keras.initializers.GlorotUniform(seed=seed + 1)
    return keras.layers.Dense(classes, kernel_initializer=init, name=name)


def single_task(x, y, classes, x_test, y_test, seed, epochs):
    keep = y != -1
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([encoder(seed, x.shape[1]), head(classes, seed, "head")])
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    model.fit(x[keep], y[keep], batch_size=32, epochs=epochs, verbose=0)
    return float(model.evaluate(x_test, y_test, verbose=0)[1])


def multi_task(x, digit, speaker, x_test, d_test, s_test, seed, epochs, task_weights):
    keras.utils.set_random_seed(seed)
    model = MultiTaskModel(
        encoder(seed, x.shape[1]),
        {"digit": head(10, seed, "digit"), "speaker": head(6, seed, "speaker")},
        task_weights=task_weights,
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        loss=LOSS,
        metrics={"digit": ["accuracy"], "speaker": ["accuracy"]},
    )
    model.fit(x, {"digit": digit, "speaker": speaker}, batch_size=32, epochs=epochs, verbose=0)
    result = model.evaluate(
        x_test, {"digit": d_test, "speaker": s_test}, verbose=0, return_dict=True
    )
    return result["digit_accuracy"], result["speaker_accuracy"], model.task_weight_values()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--digit-fraction", type=float, default=0.1)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    start = time.perf_counter()
    (x, digit, speaker), (xt, dt, st) = load_fsdd()
    results = {}
    for regime in ("full", "few digit labels"):
        for seed in args.seeds:
            d = digit.copy()
            if regime != "full":
                rng = np.random.default_rng(seed)
                hide = rng.permutation(len(d))[int(args.digit_fraction * len(d)):]
                d[hide] = -1
            rows = {
                "single-task": (
                    single_task(x, d, 10, xt, dt, seed, args.epochs),
                    single_task(x, speaker, 6, xt, st, seed, args.epochs),
                ),
            }
            for label, weights in (("multi-task, equal weights", None), ("multi-task, learned weights", "uncertainty")):
                acc_d, acc_s, w = multi_task(x, d, speaker, xt, dt, st, seed, args.epochs, weights)
                rows[label] = (acc_d, acc_s)
                if weights:
                    results.setdefault((regime, "weights"), []).append(w)
            for label, accs in rows.items():
                results.setdefault((regime, label), []).append(accs)
            print(regime, seed, rows, flush=True)

    lines = [
        "| labels | model | digit accuracy | speaker accuracy |",
        "|---|---|---|---|",
    ]
    for regime in ("full", "few digit labels"):
        for label in ("single-task", "multi-task, equal weights", "multi-task, learned weights"):
            accs = np.array(results[(regime, label)])
            lines.append(
                f"| {regime} | {label} | {accs[:, 0].mean():.3f} ± {accs[:, 0].std(ddof=1):.3f} "
                f"| {accs[:, 1].mean():.3f} ± {accs[:, 1].std(ddof=1):.3f} |"
            )
    weight_lines = []
    for regime in ("full", "few digit labels"):
        ws = results[(regime, "weights")]
        weight_lines.append(
            f"- learned task weights exp(-s) after training ({regime}), mean over seeds: "
            f"digit {np.mean([w['digit'] for w in ws]):.2f}, "
            f"speaker {np.mean([w['speaker'] for w in ws]):.2f}"
        )
    info = (
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, keras "
        f"{keras.__version__} ({keras.backend.backend()}); load average "
        f"{os.getloadavg()[0]:.2f}; total run time {time.perf_counter() - start:.0f} s\n"
        f"- data: FSDD, {len(x)} training / {len(xt)} test recordings (recordings "
        f"0-4 are test); 'few digit labels' keeps {args.digit_fraction:.0%} of the "
        "training digit labels (different subset per seed), all speaker labels\n"
        f"- model: Dropout 0.2 -> Dense 64 relu encoder, linear heads; Adam 1e-3, "
        f"batch 32, {args.epochs} epochs; seeds {args.seeds}; mean ± sd over seeds\n"
        + "\n".join(weight_lines)
        + "\n"
    )
    report = info + "\n" + "\n".join(lines) + "\n"
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(
                "# Multi-task vs single-task on spoken digits (digit + speaker)\n\n"
                "Produced by `python benchmarks/multi_task_fsdd.py --seeds "
                f"{' '.join(map(str, args.seeds))} --output {args.output}`. "
                "Data: Free Spoken Digit Dataset, CC BY-SA 4.0.\n\n" + report
            )


if __name__ == "__main__":
    main()
