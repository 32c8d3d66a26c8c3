"""Prints a digest of every seeded `.dataset()` pipeline, two epochs each.

Run as a script by `test_seeding.py` in fresh processes:
`python -m tests.data.seeded_pipelines GLOBAL_SEED PRIOR_OPS`, where
GLOBAL_SEED is TensorFlow's global seed (`none` leaves it unset) and
PRIOR_OPS how many unrelated random ops and shuffled datasets run first.
"""

import hashlib
import json
import sys

import numpy as np


def _digest(dataset, epochs=2):
    out = []
    for _ in range(epochs):
        h = hashlib.sha256()
        for batch in dataset:
            for part in batch:
                part = part.numpy()
                if part.dtype == object:  # strings: their bytes, not pointers
                    h.update(b"\0".join(part.ravel().tolist()))
                else:
                    h.update(np.ascontiguousarray(part).tobytes())
        out.append(h.hexdigest()[:16])
    return out


def pipelines():
    from keras_transfer import datasets
    from keras_transfer.data import AudioAugmentation
    from keras_transfer.data import ImageAugmentation
    from keras_transfer.data import TextAugmentation

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 8, 8, 3)).astype("uint8")
    labels = np.arange(10) % 3
    texts = [f"movie {i} was not good at all but the cast was fine" for i in range(10)]
    clips = [rng.normal(0, 0.1, size=600 + 37 * i).astype("float32") for i in range(6)]
    image = ImageAugmentation(
        rotation=0.1, flip="horizontal", crop=(6, 6), contrast=0.2, mixup_alpha=0.4, seed=7
    )
    text = TextAugmentation(swap_rate=0.3, deletion_rate=0.2, seed=7)
    audio = AudioAugmentation(snr_db=(5, 20), stretch=(0.9, 1.1), probability=0.7, seed=7)
    return {
        "image": _digest(image.dataset(images, labels, batch_size=4, num_classes=3)),
        "image_again": _digest(image.dataset(images, labels, batch_size=4, num_classes=3)),
        "text": _digest(text.dataset(texts, labels, batch_size=4)),
        "audio": _digest(audio.dataset(clips, np.arange(6), length=640, batch_size=4)),
        "to_dataset": _digest(datasets.to_dataset(images, labels, batch_size=4, shuffle=True, seed=7)),
    }


def main(global_seed, prior_ops):
    import tensorflow as tf

    if global_seed != "none":
        tf.random.set_seed(int(global_seed))
    for i in range(int(prior_ops)):
        tf.random.uniform((3,))
        list(tf.data.Dataset.range(5).shuffle(5, seed=i))
        list(tf.data.Dataset.random(seed=i).take(2))
    print("DIGESTS " + json.dumps(pipelines()))


if __name__ == "__main__":
    main(*sys.argv[1:3])
