"""Few-shot voice commands on unseen speakers: a pretrained speech embedding.

Free Spoken Digit Dataset (FSDD, Jakobovski et al., CC BY-SA 4.0): train on
3 speakers (george, jackson, lucas), test on every clip of the 3 others
(nicolas, theo, yweweler: 1,500 clips, never heard in training). For each
seed and each budget (1, 3, 10 clips per digit, drawn at random from the
training speakers, or all 1,500), four contenders:

* **frozen**: `keras_transfer.backbones.speech_embedding()` (the openWakeWord
  embedding ported to Keras; 0.75 s of silence on both sides, 76-frame
  windows every `--stride` frames (4, the issue's reference), mean and max
  of the windows, 192-d), frozen, its features computed once by
  `strategies.FeatureCache` (on disk, reused across runs), and a Keras head
  trained with `fit` to convergence, the reference's standardised logistic
  regression: `Normalization` (adapted to the training features) ->
  `Dense(10, softmax)` with L2 `1 / (2 n)` on the kernel (`n` training
  clips: the objective of scikit-learn's `LogisticRegression(C=1)`, mean
  cross-entropy + `|W|^2 / (2 n)`), full batch, Adam with a cosine decay
  from 1e-2 to 0 over `--head-steps` (1,000) steps. With scikit-learn
  installed the run also prints the gap between the head's objective and
  scikit-learn's optimum, and scikit-learn's own accuracy on the same
  clips (**reference** column: the issue's recipe).
* **scratch**: the package's from-scratch network of
  `augmentation_evidence.py` (small CNN on a normalised 40-band log-mel of
  the 8 kHz clips cut/padded to 1 s), Adam 2e-3, 400 steps (at least 20
  passes over the training set), batch <= 32.
* **fine-tuned**: `frozen`'s trained head, then block5 (4 convs) and
  `top_conv` of the embedding network trained with it (Adam 1e-4, 100
  steps); the layers below are frozen, so their outputs are cached once too
  (per window, the input of block5).
* **augmented**: `frozen` trained on the clips plus `--copies` copies of
  each made by `data.AudioAugmentation(snr_db=(10, 30), stretch=(0.9, 1.1),
  semitones=(-2, 2), probability=0.5)` (each copy embedded by the frozen
  base), same head recipe (L2 `1 / (2 N)`, `N` = clips + copies; the
  standardisation of `frozen`), same steps. Paired with `frozen` by seed
  (same clips, same initial head).

Clips per digit are drawn at random from the three training speakers
(`--draw random`; a digit's clips may come from one speaker) or one per
speaker and digit (`--draw balanced`, 3 per digit only).

All settings were fixed before any test accuracy was seen (the head recipe
from the issue's reference measurement).

Usage:

    python benchmarks/speech_commands.py                      # the table
    python benchmarks/speech_commands.py --seeds 0 --shots 3  # one cell
"""

import argparse
import importlib.util
import math
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
if importlib.util.find_spec("keras_transfer") is None:  # a source checkout
    sys.path.insert(0, os.path.join(HERE, ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer.data import AudioAugmentation  # noqa: E402

FSDD_PATH = os.path.join(HERE, "..", "..", "shared", "data", "fsdd", "recordings")
TEST_SPEAKERS = ("nicolas", "theo", "yweweler")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "keras_transfer", "speech_commands")
HEAD_STEPS = 1000
FINE_TUNE_STEPS = 100
SCRATCH_STEPS = 400


def _load():
    return os.getloadavg()[0]


def load_clips(sample_rate=16000, path=FSDD_PATH):
    """Train (3 speakers) and test (3 unseen speakers) clips, file order."""
    (x, y, s), (x_test, y_test, _) = keras_transfer.datasets.load_spoken_digits(
        path, split="speaker", test_speakers=TEST_SPEAKERS, sample_rate=sample_rate
    )
    return (x, y, s), (x_test, y_test)


def choose(y, shots, seed, speakers=None):
    """`shots` clips per digit at random (seeded), or all for `None`; with
    `speakers`, `shots` must be their number: one clip per speaker and digit."""
    if shots is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    if speakers is not None:
        names = np.unique(speakers)
        if shots != len(names):
            raise ValueError(f"a balanced draw takes {len(names)} clips per digit, not {shots}")
        return np.sort(np.concatenate([
            rng.choice(np.flatnonzero((y == d) & (speakers == k)), 1, replace=False)
            for d in range(10) for k in names
        ]))
    return np.sort(np.concatenate([
        rng.choice(np.flatnonzero(y == d), shots, replace=False) for d in range(10)
    ]))


def num_windows(length, base):
    """Windows the base cuts from a clip of `length` samples."""
    mel = base.get_layer("mel_spectrogram")
    frames = mel.compute_output_shape((1, length))[1]
    return (frames - 76) // base.get_layer("windows").stride + 1


def clip_dataset(clips):
    import tensorflow as tf

    return tf.data.Dataset.from_generator(
        lambda: (c[None] for c in clips),
        output_signature=tf.TensorSpec((1, None), tf.float32),
    )


class Embedding:
    """The frozen base, split below block5, with its outputs cached."""

    def __init__(self, stride, cache_dir=CACHE):
        self.base = keras_transfer.backbones.speech_embedding(window_stride=stride)
        self.base.trainable = False
        self.lower = keras.Model(
            self.base.input, self.base.get_layer("block4_pool").output, name="lower"
        )
        self.cache = keras_transfer.strategies.FeatureCache(
            self.lower, directory=cache_dir, key=f"speech_commands-stride{stride}"
        )

    def windows(self, clips):
        """Per-window block5 inputs `(total windows, 10, 2, 96)` and offsets."""
        counts = np.array([num_windows(len(c), self.base) for c in clips])
        lower = self.cache.transform(clip_dataset(clips))
        if len(lower) != counts.sum():
            raise RuntimeError(f"window count {len(lower)} != {counts.sum()}")
        return lower, np.concatenate([[0], np.cumsum(counts)])


def upper_model(base, name="upper"):
    """block5 + top_conv as a model on one window's block5 input (a copy)."""
    inputs = keras.Input((10, 2, 96))
    x = inputs
    names = [n for n in (l.name for l in base.layers)]
    start = names.index("block5a_conv")
    for layer in base.layers[start:names.index("embedding") + 1]:
        clone = layer.__class__.from_config(layer.get_config())
        x = clone(x)
        clone.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=name)


def pool(window_embeddings, offsets):
    """Per-clip mean and max of the window embeddings: `(clips, 192)`."""
    starts = offsets[:-1]
    counts = np.diff(offsets)[:, None]
    mean = np.add.reduceat(window_embeddings, starts, axis=0) / counts
    maximum = np.maximum.reduceat(window_embeddings, starts, axis=0)
    return np.concatenate([mean, maximum], axis=1).astype("float32")


def head_model(features, seed, num_examples=None):
    """Standardisation + softmax regression, L2 `1 / (2 num_examples)`
    (scikit-learn's `LogisticRegression(C=1)` objective)."""
    keras.utils.set_random_seed(seed)
    norm = keras.layers.Normalization(name="standardize")
    norm.adapt(features)
    l2 = 1.0 / (2 * (num_examples or len(features)))
    return keras.Sequential([
        keras.Input((features.shape[1],)),
        norm,
        keras.layers.Dense(
            10, activation="softmax", kernel_regularizer=keras.regularizers.L2(l2),
            name="predictions",
        ),
    ], name="head")


def fit_full_batch(model, x, y, steps, seed, learning_rate):
    """`steps` full-batch steps, Adam with a cosine decay to 0, in one `fit`
    epoch (a dataset of the whole training set, repeated)."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    data = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    model.fit(data, epochs=1, shuffle=False, verbose=0)
    return model


def reference(feats, y, test_feats, y_test, head):
    """scikit-learn's standardised `LogisticRegression(C=1)` (the issue's
    recipe) on the same clips: its accuracy, and the gap between `head`'s
    objective and scikit-learn's optimum (`None`s without scikit-learn)."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None, None
    norm = head.get_layer("standardize")
    z = keras.ops.convert_to_numpy(norm(feats))
    z_test = keras.ops.convert_to_numpy(norm(test_feats))
    model = LogisticRegression(C=1.0, tol=1e-8, max_iter=10_000).fit(z, y)

    def objective(w, b):
        logits = z @ w + b
        logits = logits - logits.max(1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -log_p[np.arange(len(y)), y].mean() + (w ** 2).sum() / (2 * len(y))

    w, b = head.get_layer("predictions").get_weights()
    gap = objective(w, b) - objective(model.coef_.T, model.intercept_)
    return float(model.score(z_test, y_test)), float(gap)


def epoch_order(n, steps, batch, seed):
    """Indices for `steps` batches: whole shuffled passes over the `n`
    examples, concatenated (what `epochs` of `fit(shuffle=True)` would
    see), so one `fit` epoch runs all the steps without per-epoch overhead."""
    rng = np.random.default_rng(seed)
    passes = math.ceil(steps * batch / n)
    return np.concatenate([rng.permutation(n) for _ in range(passes)])[: steps * batch]


def fit_steps(model, x, y, steps, seed, learning_rate):
    n = len(y)
    batch = min(32, n)
    order = epoch_order(n, steps, batch, seed)
    pick = lambda a: a[order]  # noqa: E731
    keras.utils.set_random_seed(seed)
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(keras.tree.map_structure(pick, x), y[order], batch_size=batch, epochs=1,
              shuffle=False, verbose=0)
    return model


def accuracy(probabilities, y):
    return float(np.mean(np.argmax(probabilities, axis=-1) == y))


# ------------------------------------------------------------ contenders


def run_frozen(feats, y, test_feats, y_test, seed, steps):
    head = head_model(feats, seed)
    fit_full_batch(head, feats, y, steps, seed, 1e-2)
    return accuracy(head.predict(test_feats, verbose=0), y_test), head


class MaskedWindowPooling(keras.layers.Layer):
    """`(clips, windows, 96)` + mask `(clips, windows)` -> masked mean | max."""

    def call(self, inputs):
        x, mask = inputs
        mask = keras.ops.cast(mask, x.dtype)[..., None]
        mean = keras.ops.sum(x * mask, axis=1) / keras.ops.sum(mask, axis=1)
        maximum = keras.ops.max(x + (mask - 1.0) * 1e9, axis=1)
        return keras.ops.concatenate([mean, maximum], axis=-1)


def padded_windows(lower, offsets, indices):
    """Windows of the chosen clips, zero-padded to the longest: + mask."""
    counts = np.diff(offsets)[indices]
    out = np.zeros((len(indices), counts.max(), 10, 2, 96), "float32")
    mask = np.zeros((len(indices), counts.max()), "float32")
    for row, i in enumerate(indices):
        out[row, : counts[row]] = lower[offsets[i]:offsets[i + 1]]
        mask[row, : counts[row]] = 1
    return out, mask


def run_fine_tuned(base, head, lower, offsets, idx, y, test_lower, test_offsets, y_test, seed):
    upper = upper_model(base)
    windows = keras.Input((None, 10, 2, 96))
    mask = keras.Input((None,))
    folded = keras.layers.Reshape((10, 2, 96))(
        keras.layers.Lambda(lambda t: keras.ops.reshape(t, (-1, 10, 2, 96)))(windows)
    )
    per_window = upper(folded)
    per_clip = keras.layers.Lambda(
        lambda t: keras.ops.reshape(t[0], (keras.ops.shape(t[1])[0], -1, 96))
    )([per_window, mask])
    outputs = head(MaskedWindowPooling()([per_clip, mask]))
    model = keras.Model([windows, mask], outputs)
    head.get_layer("standardize").trainable = False
    x, m = padded_windows(lower, offsets, idx)
    fit_steps(model, [x, m], y, FINE_TUNE_STEPS, seed, 1e-4)
    correct = 0
    for start in range(0, len(y_test), 100):
        chunk = np.arange(start, min(start + 100, len(y_test)))
        xt, mt = padded_windows(test_lower, test_offsets, chunk)
        correct += np.sum(np.argmax(model.predict([xt, mt], verbose=0), -1) == y_test[chunk])
    return correct / len(y_test)


def augmentation(seed):
    return AudioAugmentation(
        snr_db=(10, 30), stretch=(0.9, 1.1), semitones=(-2, 2), probability=0.5, seed=seed
    )


def run_augmented(embed, clips, feats, y, test_feats, y_test, seed, copies, steps):
    aug = augmentation(seed)
    extra, extra_y = [], []
    for c in range(copies):
        for i, clip in enumerate(clips):
            audio = np.asarray(aug(clip, seed=seed * 1_000_003 + c * 10_007 + i))
            features = embed(audio[None].astype("float32"))
            extra.append(keras.ops.convert_to_numpy(features)[0])
            extra_y.append(y[i])
    all_feats = np.concatenate([feats, np.stack(extra)])
    all_y = np.concatenate([y, extra_y])
    # Same init and same standardisation as frozen; L2 1 / (2 N) for all N rows.
    head = head_model(feats, seed, num_examples=len(all_y))
    fit_full_batch(head, all_feats, all_y, steps, seed, 1e-2)
    return accuracy(head.predict(test_feats, verbose=0), y_test)


def scratch_features(clips8):
    """The from-scratch network's inputs (normalised log-mel, 8 kHz, 1 s)."""
    spec = importlib.util.spec_from_file_location(
        "augmentation_evidence", os.path.join(HERE, "augmentation_evidence.py")
    )
    evidence = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evidence)
    return evidence.log_mel_features(clips8, evidence._log_mel()), evidence.small_cnn


def run_scratch(feats, y, test_feats, y_test, seed, small_cnn):
    keras.utils.set_random_seed(seed)
    model = small_cnn(tuple(feats.shape[1:]))
    n, batch = len(y), min(32, len(y))
    steps = max(SCRATCH_STEPS, 20 * math.ceil(n / batch))  # >= 20 epochs
    fit_steps(model, feats, y, steps, seed, 2e-3)
    return accuracy(model.predict(test_feats, batch_size=256, verbose=0), y_test)


# ------------------------------------------------------------ main


def summarize(results, contenders, shots_list):
    sd = lambda v: np.std(v, ddof=1) if len(v) > 1 else float("nan")  # noqa: E731
    print("\n| clips per digit | " + " | ".join(contenders) + " |")
    print("|---" * (len(contenders) + 1) + "|")
    for shots in shots_list:
        cells = []
        for c in contenders:
            v = np.array(results.get((c, shots), []))
            cells.append(f"{v.mean():.3f} ± {sd(v):.3f} (n={len(v)})" if len(v) else "-")
        print(f"| {shots or 'all'} | " + " | ".join(cells) + " |")
    for other in ("fine-tuned", "augmented"):
        for shots in shots_list:
            a, f = results.get((other, shots)), results.get(("frozen", shots))
            if a and f and len(a) == len(f):
                d = np.array(a) - np.array(f)
                print(f"{other} - frozen, {shots or 'all'} per digit: {d.mean():+.3f} ± {sd(d):.3f} "
                      f"({', '.join(f'{v:+.3f}' for v in d)}), "
                      f"{int((d > 0).sum())} of {len(d)} seeds better, {int((d == 0).sum())} equal")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--shots", nargs="+", default=["1", "3", "10", "all"])
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--head-steps", type=int, default=HEAD_STEPS)
    parser.add_argument("--draw", choices=["random", "balanced"], default="random")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--contenders", nargs="+",
                        default=["frozen", "scratch", "fine-tuned", "augmented"])
    parser.add_argument("--augment-shots", nargs="+", default=["1", "3", "10"])
    parser.add_argument("--fine-tune-shots", nargs="+", default=["1", "3", "10", "all"])
    parser.add_argument("--cache", default=CACHE)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[:2]}, "
        f"keras {keras.__version__}, backend {keras.backend.backend()}", flush=True
    )
    shots_list = [None if s == "all" else int(s) for s in args.shots]
    (x, y, s), (x_test, y_test) = load_clips()
    start = time.time()
    emb = Embedding(args.stride, args.cache)
    lower, offsets = emb.windows(list(x) + list(x_test))
    print(f"block5 inputs of {len(offsets) - 1} clips, {len(lower)} windows: "
          f"{time.time() - start:.0f} s (cache hits {emb.cache.hits}), load {_load():.1f}", flush=True)
    upper = upper_model(emb.base)
    feats_all = pool(upper.predict(lower, batch_size=1024, verbose=0), offsets)
    n = len(y)
    feats, test_feats = feats_all[:n], feats_all[n:]
    # The split model pooled in NumPy = the whole base on raw audio.
    check = [n, n + 1, n + 2]
    whole = np.concatenate([emb.base.predict(x_test[i - n][None], verbose=0) for i in check])
    print(f"max |whole base - cached split| on 3 test clips: "
          f"{np.abs(whole - feats_all[check]).max():.1e}", flush=True)
    train_lower, train_offsets = lower, offsets[: n + 1]
    test_lower = lower[offsets[n]:]
    test_offsets = offsets[n:] - offsets[n]
    if "scratch" in args.contenders:
        (x8, y8, _), (x8_test, y8_test) = load_clips(sample_rate=8000)
        mel8, small_cnn = scratch_features(list(x8) + list(x8_test))
        mel8, mel8_test = mel8[: len(y8)], mel8[len(y8):]
    if "augmented" in args.contenders:
        import tensorflow as tf

        # One trace for every clip length (an eager call is op by op).
        embed = tf.function(lambda a: emb.base(a, training=False), reduce_retracing=True,
                            input_signature=[tf.TensorSpec((1, None), tf.float32)])
    results = {}
    for shots in shots_list:
        for seed in args.seeds:
            idx = choose(y, shots, seed, speakers=s if args.draw == "balanced" else None)
            row, seconds = {}, {}
            t = time.time()
            acc, head = run_frozen(feats[idx], y[idx], test_feats, y_test, seed, args.head_steps)
            row["frozen"], seconds["frozen"] = acc, time.time() - t
            ref, gap = reference(feats[idx], y[idx], test_feats, y_test, head)
            if ref is not None:
                row["reference"], seconds["reference"] = ref, 0.0
                print(f"  head objective - scikit-learn optimum: {gap:.1e}", flush=True)
            if "fine-tuned" in args.contenders and str(shots or "all") in args.fine_tune_shots:
                t = time.time()
                row["fine-tuned"] = run_fine_tuned(
                    emb.base, head, train_lower, train_offsets, idx, y[idx],
                    test_lower, test_offsets, y_test, seed,
                )
                seconds["fine-tuned"] = time.time() - t
            if "augmented" in args.contenders and str(shots or "all") in args.augment_shots:
                t = time.time()
                row["augmented"] = run_augmented(
                    embed, [x[i] for i in idx], feats[idx], y[idx], test_feats, y_test,
                    seed, args.copies, args.head_steps,
                )
                seconds["augmented"] = time.time() - t
            if "scratch" in args.contenders:
                t = time.time()
                row["scratch"] = run_scratch(mel8[idx], y8[idx], mel8_test, y8_test, seed, small_cnn)
                seconds["scratch"] = time.time() - t
            for k, v in row.items():
                results.setdefault((k, shots), []).append(v)
            print(f"shots {shots or 'all'} seed {seed}: "
                  + " ".join(f"{k} {v:.3f} ({seconds[k]:.0f} s)" for k, v in row.items())
                  + f", load {_load():.1f}", flush=True)
    summarize(results, [c for c in ["frozen", "reference", "scratch", "fine-tuned", "augmented"]
                        if c in args.contenders or (c == "reference" and ("reference", shots_list[0]) in results)],
              shots_list)


if __name__ == "__main__":
    main()
