"""Augmentation pipeline throughput vs what consumes it / what users would use.

Two comparisons, each run side by side in one process, contenders
interleaved, repeated; medians and ratios are printed as a markdown table.

1. Images at 224 px: `ImageAugmentation.dataset` (crop 256->224, flip,
   rotation, colour jitter, MixUp) images/s, vs the training-step rate of
   EfficientNet-Lite0 feature extraction (frozen backbone + softmax head,
   `train_on_batch`, batch 32), and vs the same Keras layers applied the
   plain way, `Dataset.batch().map(keras.layers.Pipeline([...]))`.
2. Audio (real FSDD clips, 8 kHz, 1 s): `AudioAugmentation.dataset` (noise at
   an SNR, time stretch, pitch shift) clips/s vs a per-sample NumPy
   implementation of the same ops (written here, librosa-style phase vocoder
   loop, `np.interp` resampling) called through `tf.numpy_function` in the
   same parallel `tf.data` map.

3. `--small-data`: not a speed claim, the evidence that augmentation helps.
   Spoken digits (FSDD) from 4 training speakers, few clips per digit, a
   small CNN on log spectrograms, tested on the 2 speakers never seen in
   training; with and without `AudioAugmentation` (pitch shift, stretch,
   noise, SpecAugment), several seeds.

Usage: python benchmarks/augmentation.py [--reps 3] [--small-data --seeds 3]
"""

import argparse
import datetime
import glob
import os
import platform
import statistics
import sys
import threading
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import numpy as np
import tensorflow as tf
from scipy.io import wavfile

from keras_transfer.data import AudioAugmentation
from keras_transfer.data import ImageAugmentation
from keras_transfer.data import log_spectrogram

FSDD = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..", "shared", "data", "fsdd", "recordings",
)


def backbone():
    from keras_transfer.backbones import efficientnet_lite0

    model = efficientnet_lite0(
        weights="imagenet", include_top=False, pooling="avg", input_shape=(224, 224, 3)
    )
    return model, "EfficientNet-Lite0 (keras_transfer.backbones, ImageNet weights, frozen)"


LOADS = {}


def rate(fn, count, name=None):
    """Items/s of one run of `fn`; records the 1-min load before and after."""
    before = os.getloadavg()[0]
    start = time.perf_counter()
    fn()
    value = count / (time.perf_counter() - start)
    if name is not None:
        LOADS.setdefault(name, []).extend([before, os.getloadavg()[0]])
    return value


def image_benchmark(reps, n=256, batch=32):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 256, 256, 3)).astype("uint8")
    labels = rng.integers(0, 10, n)
    ops = dict(crop=(224, 224), flip="horizontal", rotation=0.05,
               brightness=0.2, contrast=0.2, saturation=(0.4, 0.6), hue=0.05)
    ours = ImageAugmentation(mixup_alpha=0.2, seed=0, **ops).dataset(
        images, labels, batch_size=batch, num_classes=10
    )
    keras_layers = keras.layers.Pipeline([
        keras.layers.RandomCrop(224, 224, seed=0),
        keras.layers.RandomFlip("horizontal", seed=0),
        keras.layers.RandomRotation(0.05, seed=0),
        keras.layers.RandomColorJitter(
            brightness_factor=0.2, contrast_factor=0.2,
            saturation_factor=(0.4, 0.6), hue_factor=0.05, seed=0),
    ])
    mixup = keras.layers.MixUp(alpha=0.2, seed=0)
    plain = (
        tf.data.Dataset.from_tensor_slices((images, np.eye(10, dtype="float32")[labels]))
        .shuffle(n, seed=0)
        .batch(batch)
        .map(lambda x, y: (keras_layers(tf.cast(x, "float32")), y),
             num_parallel_calls=tf.data.AUTOTUNE)
        .map(lambda x, y: tuple(mixup({"images": x, "labels": y}).values()),
             num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    base, base_name = backbone()
    base.trainable = False
    model = keras.Sequential([keras.Input((224, 224, 3)), base, keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    x = rng.uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch)]
    steps = 3

    def train():
        for _ in range(steps):
            model.train_on_batch(x, y)

    # Warm up: trace the pipelines and the train function.
    for ds in (ours, plain):
        for _ in ds:
            pass
    model.train_on_batch(x, y)
    results = {"ours": [], "keras_batch_map": [], "model": []}
    for _ in range(reps):
        results["ours"].append(rate(lambda: [None for _ in ours], n, "ours"))
        results["model"].append(rate(train, steps * batch, "model"))
        results["keras_batch_map"].append(
            rate(lambda: [None for _ in plain], n, "keras_batch_map"))
    return results, base_name


def _np_stretch(x, rate, n=512, hop=128):
    """librosa-style phase vocoder: vectorised STFT/ISTFT, loop over steps."""
    pad = np.pad(x, n // 2, mode="reflect")
    pad = np.pad(pad, (0, (-(len(pad) - n)) % hop + hop))
    window = np.hanning(n + 1)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(pad, n)[::hop]
    stft = np.fft.rfft(frames * window, axis=1)
    stft = np.concatenate([stft, np.zeros((2, stft.shape[1]))])
    advance = 2 * np.pi * hop * np.arange(stft.shape[1]) / n
    phase = np.angle(stft[0])
    steps = np.arange(0, len(frames), rate)
    out = np.zeros((len(steps), stft.shape[1]), complex)
    anchor = min(int(np.sum(steps < min(2, len(frames) - 1))), len(steps) - 1)
    for t, step in enumerate(steps):
        left, right = stft[int(step)], stft[int(step) + 1]
        alpha = step % 1
        delta = np.angle(right) - np.angle(left) - advance
        delta = delta - 2 * np.pi * np.round(delta / (2 * np.pi))
        if t <= anchor:  # the same inner-frame anchor as AudioAugmentation
            phase = np.angle(left) + (alpha * (advance + delta) if t < anchor else 0)
        out[t] = ((1 - alpha) * np.abs(left) + alpha * np.abs(right)) * np.exp(1j * phase)
        phase = phase + advance + delta
    chunks = np.fft.irfft(out, n, axis=1) * window
    y = np.zeros(len(steps) * hop + n)
    norm = np.zeros_like(y)
    for t in range(len(steps)):
        y[t * hop : t * hop + n] += chunks[t]
        norm[t * hop : t * hop + n] += window**2
    y = (y / np.maximum(norm, 1e-8))[n // 2 :]
    length = int(round(len(x) / rate))
    return np.pad(y[:length], (0, max(0, length - len(y))))


def _np_noise(x, rng):
    snr = rng.uniform(5, 20)
    noise = rng.normal(size=len(x))
    noise *= np.sqrt(np.mean(x**2) / 10 ** (snr / 10) / np.mean(noise**2))
    return (x + noise).astype("float32")


def _np_augment(x, seed):
    """Separate ops, as audiomentations chains TimeStretch and PitchShift."""
    rng = np.random.default_rng(seed)
    x = _np_stretch(x, rng.uniform(0.8, 1.25))
    factor = 2 ** (rng.uniform(-2, 2) / 12)
    shifted = _np_stretch(x, 1 / factor)
    x = np.interp(np.arange(len(x)) * len(shifted) / len(x), np.arange(len(shifted)), shifted)
    return _np_noise(x, rng)


def _np_augment_fused(x, seed):
    """One vocoder pass for stretch + pitch shift, as AudioAugmentation does."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.8, 1.25)
    factor = 2 ** (rng.uniform(-2, 2) / 12)
    y = _np_stretch(x, rate / factor)
    length = int(round(len(x) / rate))
    x = np.interp(np.arange(length) * len(y) / length, np.arange(len(y)), y)
    return _np_noise(x, rng)


_AUDIOMENTATIONS = threading.local()


def _audiomentations(method):
    """audiomentations' TimeStretch, PitchShift and AddGaussianSNR, one
    `Compose` per thread (it keeps its random parameters on the object)."""

    def augment(x, seed):
        compose = getattr(_AUDIOMENTATIONS, method, None)
        if compose is None:
            import audiomentations as A

            compose = A.Compose([
                A.TimeStretch(min_rate=0.8, max_rate=1.25, leave_length_unchanged=False,
                              method=method, p=1.0),
                A.PitchShift(min_semitones=-2, max_semitones=2, method=method, p=1.0),
                A.AddGaussianSNR(min_snr_db=5, max_snr_db=20, p=1.0),
            ])
            setattr(_AUDIOMENTATIONS, method, compose)
        with warnings.catch_warnings():
            # librosa warns that n_fft=2048 exceeds short clips; it pads them.
            warnings.simplefilter("ignore")
            return compose(samples=x, sample_rate=8000).astype("float32")

    return augment


def audio_benchmark(reps, n=300, length=8000, batch=32):
    files = sorted(glob.glob(os.path.join(FSDD, "*.wav")))[:: 3000 // n][:n]
    clips = []
    for f in files:
        _, w = wavfile.read(f)
        w = w.astype("float32") / 32768.0
        clips.append(np.pad(w, (0, max(0, 512 - len(w)))))
    labels = np.array([int(os.path.basename(f)[0]) for f in files])
    aug = AudioAugmentation(snr_db=(5, 20), stretch=(0.8, 1.25), semitones=(-2, 2), seed=0)
    ours = aug.dataset(clips, labels, length=length, batch_size=batch)

    ragged = tf.RaggedTensor.from_row_lengths(np.concatenate(clips), [len(c) for c in clips])

    def numpy_dataset(fn):
        def numpy_map(i, clip, label):
            out = tf.numpy_function(fn, [clip, i], tf.float32)
            out = out[:length]
            out = tf.pad(out, [[0, length - tf.shape(out)[0]]])
            return tf.ensure_shape(out, [length]), label

        return (
            tf.data.Dataset.from_tensor_slices((ragged, labels)).enumerate()
            .shuffle(n, seed=0)
            .map(lambda i, xy: numpy_map(i, *xy), num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch)
            .prefetch(tf.data.AUTOTUNE)
        )

    contenders = {
        "ours": ours,
        "numpy": numpy_dataset(_np_augment),
        "numpy_fused": numpy_dataset(_np_augment_fused),
    }
    try:
        import audiomentations  # noqa: F401

        contenders["audiomentations_vocoder"] = numpy_dataset(
            _audiomentations("librosa_phase_vocoder"))
        contenders["audiomentations"] = numpy_dataset(_audiomentations("signalsmith_stretch"))
    except ImportError:
        print("audiomentations not installed (pip install audiomentations): skipped")
    for ds in contenders.values():
        for _ in ds:
            pass
    results = {name: [] for name in contenders}
    for _ in range(reps):
        for name, ds in contenders.items():
            results[name].append(rate(lambda: [None for _ in ds], n, "audio_" + name))
    return results


TRAIN_SPEAKERS = ("jackson", "nicolas", "theo", "yweweler")
TEST_SPEAKERS = ("george", "lucas")
FASHION = "/usr/share/datasets/fashion-mnist"


def load_fsdd(speakers, per_digit=None, length=8000, first=0):
    clips, labels = [], []
    for speaker in speakers:
        for digit in range(10):
            for index in range(first, first + (per_digit or 50)):
                _, w = wavfile.read(os.path.join(FSDD, f"{digit}_{speaker}_{index}.wav"))
                w = w.astype("float32") / 32768.0
                clips.append(np.pad(w, (0, max(0, 512 - len(w))))[:length])
                labels.append(digit)
    return clips, np.array(labels)


_MEL = None


def log_mel(audio):
    """Per-clip standardised log-mel spectrogram (61 frames x 40 bands)."""
    global _MEL
    if _MEL is None:
        _MEL = tf.signal.linear_to_mel_weight_matrix(40, 129, 8000, 50.0, 4000.0)
    s = tf.abs(tf.signal.stft(audio, 256, 128, 256))
    m = tf.math.log(tf.matmul(s, _MEL) + 1e-3)
    return (m - tf.reduce_mean(m)) / (tf.math.reduce_std(m) + 1e-6)


def small_cnn(seed, input_shape, num_classes=10):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential([
        keras.Input(input_shape),
        L.Reshape(input_shape if len(input_shape) == 3 else input_shape + (1,)),
        L.Conv2D(16, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(2),
        L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(2),
        L.Conv2D(64, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.GlobalMaxPooling2D(), L.Dropout(0.3),
        L.Dense(num_classes, activation="softmax"),
    ])


def _fit_eval(model, ds, x_test, y_test, epochs):
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(ds, epochs=epochs, verbose=0)
    return model.evaluate(x_test, y_test, verbose=0)[1]


def small_data_audio(seeds, per_digit=20, epochs=30, length=8000):
    """FSDD: 4 training speakers, tested on 2 speakers never heard."""
    x_train, y_train = load_fsdd(TRAIN_SPEAKERS, per_digit, length)
    x_test, y_test = load_fsdd(TEST_SPEAKERS, 20, length, first=30)
    test = np.stack([log_mel(np.pad(c, (0, length - len(c)))).numpy() for c in x_test])
    results = {"none": [], "augmented": []}
    for seed in seeds:
        for name in results:
            if name == "none":
                aug = AudioAugmentation(seed=seed)
            else:
                aug = AudioAugmentation(
                    snr_db=(10, 30), stretch=(0.85, 1.15), semitones=(-3, 3),
                    probability=0.5, time_masks=2, time_mask_width=6,
                    freq_masks=2, freq_mask_width=5, seed=seed,
                )
            ds = aug.dataset(x_train, y_train, length=length, batch_size=32, features=log_mel)
            acc = _fit_eval(small_cnn(seed, (61, 40)), ds, test, y_test, epochs)
            results[name].append(acc)
            print(f"audio seed {seed} {name}: unseen-speaker accuracy {acc:.3f}", flush=True)
    return results


def load_fashion(split, n, offset=0):
    import gzip

    prefix = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(FASHION, f"{prefix}-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FASHION, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x[offset : offset + n, :, :, None], y[offset : offset + n].astype("int64")


def small_data_images(seeds, n_train=500, n_test=2000, epochs=40):
    """Fashion-MNIST, 500 training images, small CNN from scratch."""
    x_train, y_train = load_fashion("train", n_train)
    x_test, y_test = load_fashion("test", n_test)
    results = {"none": [], "augmented": []}
    for seed in seeds:
        for name in results:
            kwargs = {} if name == "none" else dict(
                crop=(24, 24), flip="horizontal", rotation=0.03, brightness=0.1, contrast=0.2,
            )
            aug = ImageAugmentation(**({"flip": None, "crop": (24, 24)} if name == "none" else kwargs),
                                    seed=seed)
            if name == "none":
                # Same 24x24 input, no randomness: the centre crop.
                ds = tf.data.Dataset.from_tensor_slices(
                    (aug(x_train.astype("float32"), training=False), y_train)
                ).shuffle(n_train, seed=seed).batch(32)
            else:
                ds = aug.dataset(x_train, y_train, batch_size=32)
            test = aug(x_test.astype("float32"), training=False)
            acc = _fit_eval(small_cnn(seed, (24, 24, 1)), ds, test, y_test, epochs)
            results[name].append(acc)
            print(f"images seed {seed} {name}: test accuracy {acc:.3f}", flush=True)
    return results


def reproducibility(n=256):
    """Same seed, fresh layers, parallel per-example map: identical output?"""
    x = np.random.default_rng(0).uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    labels = np.zeros(n, "int64")

    def keras_run():
        p = keras.layers.Pipeline([keras.layers.RandomRotation(0.2, seed=1),
                                   keras.layers.RandomFlip(seed=1)])
        ds = tf.data.Dataset.from_tensor_slices(x).map(
            lambda i: p(i), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return np.stack([a.numpy() for a in ds])

    def ours_run():
        aug = ImageAugmentation(rotation=0.2, flip="horizontal_and_vertical", seed=1)
        return np.concatenate([a.numpy() for a, _ in aug.dataset(x, labels, shuffle=False)])

    def differing(a, b):
        return int((np.abs(a - b).reshape(n, -1).max(1) > 0).sum())

    return differing(keras_run(), keras_run()), differing(ours_run(), ours_run())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--audio-reps", type=int, default=7,
                        help="audio repeats (cheap: ~10 s each)")
    parser.add_argument("--small-data", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    if args.small_data:
        load = os.getloadavg()
        start = time.perf_counter()
        experiments = {
            "Fashion-MNIST, 500 train images, small CNN, 2,000 test images": small_data_images(
                range(args.seeds), epochs=args.epochs),
            "FSDD, 4 speakers x 200 clips, tested on 2 unseen speakers (400 clips)": small_data_audio(
                range(args.seeds), epochs=args.epochs),
        }
        print(f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, load {load[0]:.2f}, "
              f"{time.perf_counter() - start:.0f} s, {args.epochs} epochs")
        print("| experiment | training | accuracy per seed | mean |")
        print("|---|---|---|---|")
        for title, results in experiments.items():
            for name, accs in results.items():
                print(f"| {title} | {name} | {', '.join(f'{a:.3f}' for a in accs)} | {np.mean(accs):.3f} |")
        for title, results in experiments.items():
            diffs = np.subtract(results["augmented"], results["none"])
            print(f"{title}: paired difference (augmented - none) mean {diffs.mean():+.3f}, "
                  f"per seed {', '.join(f'{d:+.3f}' for d in diffs)}")
        return
    load = os.getloadavg()
    image, base_name = image_benchmark(args.reps)
    audio = audio_benchmark(args.audio_reps)
    keras_diff, ours_diff = reproducibility()
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in image.items()}
    amed = {k: statistics.median(v) for k, v in audio.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, load before {load[0]:.2f}/{load[1]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}, reps {args.reps} (audio {args.audio_reps}), "
          f"keras {keras.__version__}, tf {tf.__version__}")
    print(f"model: {base_name}")
    print("| contender | rate (median) | all reps | ratio | 1-min load (min-max) |")
    print("|---|---|---|---|---|")
    fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)

    def load(name):
        values = LOADS.get(name, [float("nan")])
        return f"{min(values):.1f}-{max(values):.1f}"

    def row(label, results, medians, name, ratio, key=None):
        print(f"| {label} | {medians[name]:.1f} | {fmt(results[name])} | {ratio} | "
              f"{load(key or name)} |")

    row("ImageAugmentation.dataset, images/s", image, med, "ours",
        f"{med['ours'] / med['model']:.2f}x the model")
    row("Keras layers, batch map, images/s", image, med, "keras_batch_map",
        f"{med['keras_batch_map'] / med['model']:.2f}x the model")
    row("feature-extraction train step, images/s", image, med, "model", "1")
    a = lambda name: f"audio_{name}"
    row("AudioAugmentation.dataset, clips/s", audio, amed, "ours",
        f"{amed['ours'] / amed['numpy']:.2f}x NumPy", a("ours"))
    row("per-sample NumPy via tf.numpy_function, separate ops, clips/s", audio, amed,
        "numpy", "1", a("numpy"))
    row("per-sample NumPy via tf.numpy_function, fused vocoder pass, clips/s", audio, amed,
        "numpy_fused", f"{amed['numpy_fused'] / amed['numpy']:.2f}x NumPy "
        f"(ours is {amed['ours'] / amed['numpy_fused']:.2f}x this)", a("numpy_fused"))
    for name, label in (
        ("audiomentations_vocoder",
         "audiomentations (librosa_phase_vocoder) via tf.numpy_function, clips/s"),
        ("audiomentations",
         "audiomentations (default: signalsmith_stretch, C++) via tf.numpy_function, clips/s"),
    ):
        if name in amed:
            row(label, audio, amed, name, f"{amed[name] / amed['numpy']:.2f}x NumPy "
                f"(ours is {amed['ours'] / amed[name]:.2f}x this)", a(name))

    # Paired within each rep (contenders ran back to back): robust to the
    # load drifting between reps.
    paired = lambda a, b: statistics.median(x / y for x, y in zip(a, b))
    print(f"paired per-rep ratios (median): images ours/model "
          f"{paired(image['ours'], image['model']):.2f}x; audio ours/" + "; ours/".join(
              f"{name} {paired(audio['ours'], audio[name]):.2f}x"
              for name in audio if name != "ours"))
    print(f"reproducibility, 256 images, same seed, fresh layers, parallel per-example map: "
          f"Keras layers {keras_diff}/256 images differ between runs; ImageAugmentation.dataset {ours_diff}/256")


if __name__ == "__main__":
    main()
