import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer.data import ImageAugmentation
from tests.testing import TestCase


def _images(n=12, size=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype("uint8")


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


class ImageAugmentationTest(TestCase):
    def test_layer_basics(self):
        self.run_layer_test(
            ImageAugmentation,
            init_kwargs={"rotation": 0.1, "flip": "horizontal", "seed": 1},
            input_shape=(2, 8, 8, 3),
            expected_output_shape=(2, 8, 8, 3),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=False,
        )

    def test_dataset_map_runs_on_the_layer(self):
        import tensorflow as tf

        aug = ImageAugmentation(flip="vertical", seed=0)
        ds = tf.data.Dataset.from_tensor_slices(_images(4).astype("float32"))
        out = np.stack([x.numpy() for x in ds.batch(2).map(aug).unbatch()])
        self.assertEqual(out.shape, (4, 12, 12, 3))

    def test_same_seed_same_output_every_epoch_with_parallel_map(self):
        images, labels = _images(16), np.arange(16) % 4

        def two_epochs(seed):
            aug = ImageAugmentation(
                rotation=0.1, crop=(10, 10), brightness=0.2, hue=0.1,
                rand_augment=1, mixup_alpha=0.4, cutmix_alpha=1.0, seed=seed,
            )
            ds = aug.dataset(images, labels, batch_size=4, num_classes=4)
            return [_collect(ds) for _ in range(2)]

        first, again, other = two_epochs(3), two_epochs(3), two_epochs(4)
        for (x1, y1), (x2, y2) in zip(first, again):
            self.assertAllClose(x1, x2, atol=0)
            self.assertAllClose(y1, y2, atol=0)
        # New draws each epoch, and a different seed gives different data.
        self.assertFalse(np.allclose(first[0][0], first[1][0]))
        self.assertFalse(np.allclose(first[0][0], other[0][0]))

    def test_flip_and_crop_are_exact_pixel_operations(self):
        images = _images(32, size=12)
        labels = np.arange(32)
        aug = ImageAugmentation(flip="horizontal", crop=(9, 9), seed=0)
        out, ys = _collect(aug.dataset(images, labels, batch_size=8, shuffle=False))
        self.assertAllEqual(ys, labels)
        flipped = 0
        offsets = set()
        for x, y in zip(out, ys):
            src = images[y].astype("float32")
            found = None
            for i in range(4):
                for j in range(4):
                    window = src[i : i + 9, j : j + 9]
                    if np.array_equal(x, window):
                        found = (i, j, False)
                    elif np.array_equal(x, window[:, ::-1]):
                        found = (i, j, True)
            self.assertIsNotNone(found, "output is not a (flipped) crop")
            flipped += found[2]
            offsets.add(found[:2])
        # Per-image draws: both flip outcomes and several crop offsets occur.
        self.assertGreater(flipped, 5)
        self.assertLess(flipped, 27)
        self.assertGreater(len(offsets), 4)

    def test_mixup_labels_match_the_mixed_pixels(self):
        # Class c images are constant 20 * c, so a mixed image's value is
        # 20 * sum_c(label_c * c): the labels must carry the same weights.
        labels = np.arange(24) % 6
        images = np.broadcast_to(
            (20 * labels)[:, None, None, None], (24, 8, 8, 3)
        ).astype("uint8")
        aug = ImageAugmentation(flip=None, mixup_alpha=0.5, seed=1)
        x, y = _collect(aug.dataset(images, labels, batch_size=6, num_classes=6))
        self.assertEqual(y.shape, (24, 6))
        self.assertAllClose(y.sum(axis=1), np.ones(24), atol=1e-6)
        expected = 20.0 * (y * np.arange(6)).sum(axis=1)
        self.assertAllClose(x.mean(axis=(1, 2, 3)), expected, atol=1e-3)
        self.assertGreater(np.mean(y.max(axis=1) < 0.999), 0.3)

    def test_cutmix_labels_match_the_pasted_area(self):
        labels = np.arange(24) % 6
        images = np.broadcast_to(
            (20 * labels)[:, None, None, None], (24, 16, 16, 3)
        ).astype("uint8")
        aug = ImageAugmentation(flip=None, cutmix_alpha=1.0, seed=2)
        x, y = _collect(aug.dataset(images, labels, batch_size=6, num_classes=6))
        self.assertAllClose(y.sum(axis=1), np.ones(24), atol=1e-6)
        # Fraction of pixels of each class value equals that class's weight.
        area = np.stack([(x[..., 0] == 20 * c).mean(axis=(1, 2)) for c in range(6)], 1)
        self.assertAllClose(area, y, atol=1e-5)
        self.assertGreater(np.mean(y.max(axis=1) < 0.999), 0.3)

    def test_never_drops_or_changes_labels(self):
        images, labels = _images(11), np.arange(11)
        aug = ImageAugmentation(rotation=0.2, seed=0)
        x, y = _collect(aug.dataset(images, labels, batch_size=4))
        self.assertEqual(len(x), 11)
        self.assertAllEqual(np.sort(y), labels)

    @parameterized.named_parameters(
        ("rotation", {"rotation": 1.5}, "rotation=1.5"),
        ("flip", {"flip": "diagonal"}, "flip='diagonal'"),
        ("crop", {"crop": (0, 4)}, r"crop=\(0, 4\)"),
        ("brightness", {"brightness": -0.1}, "brightness=-0.1"),
        ("hue_nan", {"hue": float("nan")}, "hue=nan"),
        ("mixup", {"mixup_alpha": 0.0}, "mixup_alpha=0.0"),
        ("rand_augment", {"rand_augment": -1}, "rand_augment=-1"),
        ("seed", {"seed": 1.5}, "seed=1.5"),
    )
    def test_invalid_argument_raises(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            ImageAugmentation(**kwargs)

    @parameterized.named_parameters(
        ("rank3", np.zeros((4, 8, 8), "uint8"), np.zeros(4), {}, r"images\[..., None\]"),
        ("dtype", np.zeros((4, 8, 8, 3), "int64"), np.zeros(4), {}, "images.dtype=int64"),
        ("length", np.zeros((4, 8, 8, 3), "uint8"), np.zeros(3), {}, r"len\(labels\)=3"),
        ("gray_hue", np.zeros((4, 8, 8, 1), "uint8"), np.zeros(4), {"hue": 0.1}, "RGB"),
        ("crop_too_big", np.zeros((4, 8, 8, 3), "uint8"), np.zeros(4), {"crop": (9, 9)}, "larger"),
        ("mix_no_classes", np.zeros((4, 8, 8, 3), "uint8"), np.zeros(4, "int32"), {"mixup_alpha": 1.0}, "num_classes"),
    )
    def test_invalid_data_raises(self, images, labels, kwargs, message):
        aug = ImageAugmentation(**kwargs)
        with self.assertRaisesRegex(ValueError, message):
            aug.dataset(images, labels, batch_size=2)

    def test_in_model_save_load(self):
        inputs = keras.Input((8, 8, 3))
        x = ImageAugmentation(rotation=0.1, crop=(6, 6), brightness=0.1, seed=0)(inputs)
        outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
        model = keras.Model(inputs, outputs)
        model.compile("sgd", "mse")
        x_train = _images(4, size=8).astype("float32")
        model.fit(x_train, np.zeros((4, 2)), epochs=1, verbose=0)
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(model.predict(x_train, verbose=0), loaded.predict(x_train, verbose=0))
        self.assertEqual(
            loaded.layers[1].get_config(), model.layers[1].get_config()
        )
        loaded.fit(x_train, np.zeros((4, 2)), epochs=1, verbose=0)
        # Inference is the centre crop, with no random change.
        aug = model.layers[1]
        self.assertAllClose(aug(x_train, training=False), x_train[:, 1:7, 1:7])
