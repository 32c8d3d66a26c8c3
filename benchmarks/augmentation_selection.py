"""Choosing augmentation settings on validation data (issue 7, part 5).

The settings of `augmentation_evidence.py` must not be tuned on its test
sets. This script scores candidate settings on held-out *training* data:

* images: the Fashion-MNIST set-up of `augmentation_evidence.py` (or the
  variants below), scored on 2,000 other images of the official *training*
  set (200 per class, disjoint from the training subset; a new draw per seed);
* audio: the small CNN of `augmentation_evidence.py` trained on 3 of the 4
  training speakers (20 clips per digit each) and scored on all 500 clips of
  the 4th; seed s holds out speaker s % 4 (jackson, nicolas, theo, yweweler),
  so 4 seeds validate on every training speaker once. The two test speakers
  (george, lucas) are never loaded.

Usage:

    python benchmarks/augmentation_selection.py --grid images-500 --seeds 0 1 2
    python benchmarks/augmentation_selection.py --grid images-deep --seeds 0 1 2
    python benchmarks/augmentation_selection.py --grid images-100 --seeds 0 1 2
    python benchmarks/augmentation_selection.py --grid audio --seeds 0 1 2 3

Results: `augmentation_evidence.md`, "Selection on validation data".
"""

import argparse
import importlib
import importlib.util
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if importlib.util.find_spec("keras_transfer") is None:  # running from a source checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer  # noqa: E402
from keras_transfer.data import AudioAugmentation  # noqa: E402
from keras_transfer.data import ImageAugmentation  # noqa: E402

# The sibling script's data loaders and models (benchmarks/ is not a package).
evidence = importlib.import_module("augmentation_evidence")

LAST_BLOCK = ("block7a_", "top_")
DEEP = ("block5", "block6", "block7a_", "top_")
SPEC_AUGMENT = dict(time_masks=2, time_mask_width=5, freq_masks=2, freq_mask_width=4)

# name: (augmentation kwargs, n_train, head epochs, fine-tuning epochs, unfrozen prefixes).
# "pad" zero-pads the images by that many pixels and crops back to 64x64 at random.
IMAGE_GRIDS = {
    "images-500": {
        "none": ({}, 500, 5, 15, LAST_BLOCK),
        "flip": ({"flip": "horizontal"}, 500, 5, 15, LAST_BLOCK),
        "shift": ({"pad": 4}, 500, 5, 15, LAST_BLOCK),
        "shift+flip": ({"pad": 4, "flip": "horizontal"}, 500, 5, 15, LAST_BLOCK),
        "shift+flip+rotation (evidence setting)": (
            {"pad": 4, "flip": "horizontal", "rotation": 0.025}, 500, 5, 15, LAST_BLOCK),
        "mixup 0.2": ({"mixup_alpha": 0.2}, 500, 5, 15, LAST_BLOCK),
    },
    "images-deep": {
        "none": ({}, 500, 5, 15, DEEP),
        "shift+flip": ({"pad": 4, "flip": "horizontal"}, 500, 5, 15, DEEP),
    },
    "images-100": {
        "none": ({}, 100, 10, 30, LAST_BLOCK),
        "shift+flip": ({"pad": 4, "flip": "horizontal"}, 100, 10, 30, LAST_BLOCK),
    },
}
# name: (AudioAugmentation kwargs, epochs, learning rate); Adam with cosine decay.
AUDIO_GRID = {
    "none": ({}, 40, 2e-3),
    "SpecAugment": (SPEC_AUGMENT, 40, 2e-3),
    "pitch +-1.5 st (p 0.5)": ({"semitones": (-1.5, 1.5), "probability": 0.5}, 40, 2e-3),
    "pitch +-1.5 st, stretch 0.9-1.1 (p 0.5), SpecAugment": (
        {"semitones": (-1.5, 1.5), "stretch": (0.9, 1.1), "probability": 0.5, **SPEC_AUGMENT},
        40, 2e-3),
}

_FASHION = None


def image_data(seed, n_train, n_val=2000):
    global _FASHION
    if _FASHION is None:
        _FASHION, _ = keras_transfer.datasets.load_fashion_mnist(n_test=10)
    x, y = _FASHION
    rng = np.random.default_rng(1000 + seed)
    train, val = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        train.extend(idx[: n_train // 10])
        val.extend(idx[n_train // 10: n_train // 10 + n_val // 10])
    train, val = np.sort(train), np.sort(val)
    size = evidence.IMAGE_SIZE
    return (evidence._to_rgb(x[train], size), y[train]), (evidence._to_rgb(x[val], size), y[val])


def run_image(seed, kwargs, n_train, head_epochs, epochs, unfreeze):
    (x, y), (x_val, y_val) = image_data(seed, n_train)
    kwargs = dict(kwargs)
    pad = kwargs.pop("pad", 0)
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        kwargs["crop"] = (evidence.IMAGE_SIZE, evidence.IMAGE_SIZE)
    mixing = kwargs.get("mixup_alpha") or kwargs.get("cutmix_alpha")
    keras.utils.set_random_seed(seed)
    ds = ImageAugmentation(seed=seed, **{"flip": None, **kwargs}).dataset(
        x, y, batch_size=32, num_classes=10 if mixing else None
    )
    loss = "categorical_crossentropy" if mixing else "sparse_categorical_crossentropy"
    keras.utils.set_random_seed(seed)
    model, _ = evidence.fit_efficientnet(ds, head_epochs, epochs, loss=loss, unfreeze=unfreeze)
    predicted = model.predict(x_val, batch_size=128, verbose=0).argmax(-1)
    return float((predicted == y_val).mean())


_FSDD = None


def audio_data(seed, clips_per_digit=20):
    global _FSDD
    if _FSDD is None:
        (x, y, s), _ = keras_transfer.datasets.load_spoken_digits(
            evidence.FSDD_PATH, split="speaker", test_speakers=evidence.TEST_SPEAKERS
        )
        _FSDD = x, y, s, evidence._log_mel()
    x, y, s, log_mel = _FSDD
    names = list(keras_transfer.datasets.spoken_digit_speakers(evidence.FSDD_PATH))
    speakers = [names.index(name) for name in evidence.TRAIN_SPEAKERS]  # `s` holds indices
    held_out = speakers[seed % len(speakers)]
    rng = np.random.default_rng(seed)
    chosen = np.sort([
        i for speaker in speakers if speaker != held_out for d in range(10)
        for i in rng.choice(np.flatnonzero((s == speaker) & (y == d)), clips_per_digit, replace=False)
    ])
    val = np.flatnonzero(s == held_out)
    x_val = evidence.log_mel_features([x[i] for i in val], log_mel)
    train = [np.pad(x[i], (0, max(0, 512 - len(x[i])))) for i in chosen]
    return (train, y[chosen]), (x_val, y[val]), log_mel


def run_audio(seed, kwargs, epochs, learning_rate):
    (x, y), (x_val, y_val), log_mel = audio_data(seed)
    keras.utils.set_random_seed(seed)
    ds = AudioAugmentation(seed=seed, **kwargs).dataset(
        x, y, length=evidence.AUDIO_LENGTH, batch_size=32, features=log_mel
    )
    keras.utils.set_random_seed(seed)
    model = evidence.small_cnn(tuple(x_val.shape[1:]))
    steps = epochs * int(np.ceil(len(y) / 32))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(ds, epochs=epochs, shuffle=False, verbose=0)
    predicted = model.predict(x_val, batch_size=128, verbose=0).argmax(-1)
    return float((predicted == y_val).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", choices=sorted(IMAGE_GRIDS) + ["audio"], required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[:2]}, "
        f"keras {keras.__version__}, backend {keras.backend.backend()}"
    )
    grid = AUDIO_GRID if args.grid == "audio" else IMAGE_GRIDS[args.grid]
    for name, setting in grid.items():
        scores = []
        for seed in args.seeds:
            start = time.time()
            if args.grid == "audio":
                scores.append(run_audio(seed, *setting))
            else:
                scores.append(run_image(seed, *setting))
            print(f"{name} seed {seed}: validation accuracy {scores[-1]:.4f} "
                  f"({time.time() - start:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
        print(f"| {name} | {' | '.join(f'{v:.3f}' for v in scores)} | {np.mean(scores):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
