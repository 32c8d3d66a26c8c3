import colorsys
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


def _zoom_reference(image, r, fill):
    """Centred zoom by NumPy: bilinear sample at c + r * (i - c), c = (n - 1) / 2.

    Pixels outside the image count as `fill` (only reached when r > 1). For
    r <= 1 this is `tf.image.crop_and_resize` with the centred box of side r.
    """
    h, w, _ = image.shape
    padded = np.pad(image.astype("float64"), ((1, 1), (1, 1), (0, 0)), constant_values=fill)

    def grid(n):
        t = (n - 1) / 2 + r * (np.arange(n) - (n - 1) / 2)
        k = np.floor(t).astype(int)
        return k, t - k

    (yk, yf), (xk, xf) = grid(h), grid(w)

    def at(dy, dx):
        yy = np.clip(yk + dy + 1, 0, h + 1)
        xx = np.clip(xk + dx + 1, 0, w + 1)
        return padded[yy[:, None], xx[None, :]]

    yf, xf = yf[:, None, None], xf[None, :, None]
    top = (1 - xf) * at(0, 0) + xf * at(0, 1)
    bottom = (1 - xf) * at(1, 0) + xf * at(1, 1)
    return (1 - yf) * top + yf * bottom


def _ramp(n, size=16, channels=1):
    """Images whose value is the column index: bilinear zoom keeps them linear."""
    ramp = np.broadcast_to(np.arange(size, dtype="float32")[None, :, None], (size, size, channels))
    return np.broadcast_to(ramp, (n, size, size, channels)).copy()


def _hsv_reference(image, saturation_scale, hue_shift, value_range=(0.0, 255.0)):
    """Per-pixel `colorsys` (float64): scale S (clipped to [0, 1]), turn H."""
    low, high = value_range
    out = np.zeros(image.shape, "float64")
    for index in np.ndindex(image.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*((image[index] - low) / (high - low)))
        rgb = colorsys.hsv_to_rgb((h + hue_shift) % 1.0, min(1.0, s * saturation_scale), v)
        out[index] = np.array(rgb) * (high - low) + low
    return out


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

    def test_zoom_layer_basics_grayscale(self):
        self.run_layer_test(
            ImageAugmentation,
            init_kwargs={"zoom": (0.6, 1.2), "flip": None, "seed": 1},
            input_shape=(2, 8, 8, 1),
            expected_output_shape=(2, 8, 8, 1),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=0,
            supports_masking=False,
            run_training_check=False,
        )

    @parameterized.named_parameters(
        ("zoom_in_gray", 20 / 28, 1),
        ("zoom_in_rgb", 0.5, 3),
        ("zoom_out_rgb", 1.3, 3),
        ("zoom_out_max_gray", 2.0, 1),
    )
    def test_zoom_equals_numpy_crop_and_resize(self, r, channels):
        images = np.random.default_rng(0).uniform(10, 250, (3, 14, 14, channels))
        images = images.astype("float32")
        expected = np.stack([_zoom_reference(x, r, fill=10.0) for x in images])
        aug = ImageAugmentation(zoom=(r, r), flip=None, value_range=(10, 250), seed=0)
        # Layer call path (a batch) and the per-example `dataset()` path.
        # atol: float32 rounding on values up to 250; a wrong ratio or
        # centre is off by whole units.
        self.assertAllClose(aug(images), expected, atol=1e-3)
        out, _ = _collect(aug.dataset(images, np.arange(3), batch_size=2, shuffle=False))
        self.assertAllClose(out, expected, atol=1e-3)
        if r < 1:
            import tensorflow as tf

            lo, hi = (1 - r) / 2, (1 + r) / 2
            boxes = np.tile([[lo, lo, hi, hi]], (3, 1)).astype("float32")
            crop = tf.image.crop_and_resize(images, boxes, tf.range(3), (14, 14))
            self.assertAllClose(out, crop, atol=1e-3)

    def test_zoom_draws_each_ratio_in_range(self):
        # On a ramp (value = column), the zoomed image is c + r * (j - c):
        # the slope along a row of the central pixels is the drawn ratio r.
        images = _ramp(48)
        aug = ImageAugmentation(zoom=(0.6, 0.8), flip=None, seed=5)
        out, _ = _collect(aug.dataset(images, np.arange(48), batch_size=16, shuffle=False))
        ratios = np.array([np.polyfit(np.arange(16), x[8, :, 0], 1)[0] for x in out])
        self.assertTrue(np.all(ratios >= 0.6 - 1e-4), ratios)
        self.assertTrue(np.all(ratios <= 0.8 + 1e-4), ratios)
        # Per-example draws that cover the range.
        self.assertLess(ratios.min(), 0.63)
        self.assertGreater(ratios.max(), 0.77)
        # Same ratio on both axes (the aspect ratio is kept).
        transposed = np.transpose(images, (0, 2, 1, 3))
        out_t, _ = _collect(aug.dataset(transposed, np.arange(48), batch_size=16, shuffle=False))
        self.assertAllClose(np.transpose(out_t, (0, 2, 1, 3)), out, atol=1e-4)
        # One number r < 1 means [r, 1]; r > 1 means [1, r] (zoom out).
        self.assertEqual(ImageAugmentation(zoom=0.7).zoom, (0.7, 1.0))
        self.assertEqual(ImageAugmentation(zoom=1.5).zoom, (1.0, 1.5))

    def test_zoom_same_seed_same_output_and_identity_at_inference(self):
        images = _images(8, size=10)

        def epoch(seed):
            aug = ImageAugmentation(zoom=(0.5, 1.5), flip=None, seed=seed)
            return _collect(aug.dataset(images, np.arange(8), batch_size=4))[0]

        first = epoch(7)
        self.assertAllClose(first, epoch(7), atol=0)
        self.assertFalse(np.allclose(first, epoch(8)))
        aug = ImageAugmentation(zoom=0.5, flip=None, seed=0)
        self.assertAllClose(aug(images.astype("float32"), training=False), images)
        restored = ImageAugmentation.from_config(aug.get_config())
        self.assertEqual(restored.zoom, (0.5, 1.0))

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
        ("zoom_zero", {"zoom": 0}, "zoom=0"),
        ("zoom_negative", {"zoom": -0.5}, "zoom=-0.5"),
        ("zoom_too_big", {"zoom": 2.5}, "zoom=2.5"),
        ("zoom_nan", {"zoom": float("nan")}, "zoom=nan"),
        ("zoom_reversed", {"zoom": (0.9, 0.8)}, r"zoom=\(0.9, 0.8\)"),
        ("zoom_three", {"zoom": [0.5, 0.6, 0.7]}, r"zoom=\[0.5, 0.6, 0.7\]"),
        ("zoom_bool", {"zoom": True}, "zoom=True"),
        ("zoom_string", {"zoom": "in"}, "zoom='in'"),
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

    def test_saturation_matches_colorsys_and_stays_in_range(self):
        # factor 0.8 scales saturation by 0.8 / 0.2 = 4. Keras's own
        # RandomSaturation clips the result to value_range (0, 255) instead
        # of [0, 1] and returns (200, -200, -400) for (200, 100, 50); fully
        # saturated at the same hue (20 degrees) and value it is (200, 66.7, 0).
        images = np.concatenate([
            np.array([[[[200, 100, 50]]]], "uint8").repeat(4, 1).repeat(4, 2),
            _images(n=3, size=4),
        ])
        aug = ImageAugmentation(flip=None, saturation=(0.8, 0.8), seed=0)
        out, _ = _collect(aug.dataset(images, np.zeros(4), batch_size=4, shuffle=False))
        expected = np.stack([_hsv_reference(i.astype("float64"), 4.0, 0.0) for i in images])
        self.assertAllClose(out, expected, atol=2e-3)
        self.assertGreaterEqual(out.min(), 0.0)
        self.assertLessEqual(out.max(), 255.0)
        self.assertAllClose(out[0, 0, 0], [200.0, 200.0 / 3.0, 0.0], atol=1e-3)

    def test_saturation_and_hue_together_match_colorsys(self):
        # Hue factor 0.3: a turn of +-0.15, the sign drawn per image.
        images = _images(n=6, size=5)
        # Seed 0 draws both signs among these 6 (each image's sign is a coin flip).
        aug = ImageAugmentation(flip=None, saturation=(0.25, 0.25), hue=(0.3, 0.3), seed=0)
        out, _ = _collect(aug.dataset(images, np.zeros(6), batch_size=6, shuffle=False))
        signs = []
        for image, result in zip(images.astype("float64"), out):
            errors = {
                sign: np.abs(result - _hsv_reference(image, 0.25 / 0.75, sign * 0.15)).max()
                for sign in (-1, 1)
            }
            sign = min(errors, key=errors.get)
            self.assertLess(errors[sign], 2e-3)
            signs.append(sign)
        self.assertEqual(len(set(signs)), 2)  # both directions were drawn

    def test_hue_alone_equals_keras_random_hue(self):
        from keras_transfer.data.image import RandomSaturationHue

        images = _images(n=4, size=6).astype("float32")
        keras_out = keras.layers.RandomHue((0.3, 0.3), value_range=(0, 255), seed=3)(
            images, training=True
        )
        ours = RandomSaturationHue(None, (0.3, 0.3), value_range=(0, 255), seed=3)(
            images, training=True
        )
        self.assertAllClose(ours, keras_out, atol=1e-4)

    def test_saturation_hue_layer_config_round_trip(self):
        from keras_transfer.data.image import RandomSaturationHue

        layer = RandomSaturationHue((0.3, 0.7), 0.2, value_range=(0, 255), seed=5)
        clone = RandomSaturationHue.from_config(layer.get_config())
        images = _images(n=3, size=5).astype("float32")
        self.assertAllClose(clone(images, training=True), layer(images, training=True))

