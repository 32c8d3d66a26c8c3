"""Image augmentation built from Keras's preprocessing layers."""

import math

import keras
import numpy as np

from keras_transfer._keras_private import layer_seed_generator
from keras_transfer.data import _seeding

_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


def _check_factor(name, value):
    values = value if isinstance(value, (tuple, list)) else (value,)
    ok = len(values) in (1, 2) and all(
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and 0.0 <= v <= 1.0
        for v in values
    )
    if not ok:
        raise ValueError(
            f"`{name}` must be a number in [0, 1] or a pair of such numbers. "
            f"Received: {name}={value!r}"
        )
    return tuple(values) if len(values) == 2 else float(values[0])


def _check_zoom(value):
    if value is None:
        return None
    values = value if isinstance(value, (tuple, list)) else (value,)
    ok = len(values) in (1, 2) and all(
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and 0.0 < v <= 2.0
        for v in values
    )
    if ok and len(values) == 2:
        ok = values[0] <= values[1]
    if not ok:
        raise ValueError(
            "`zoom` must be None (off), a number in (0, 2] or a pair "
            "(low, high) with 0 < low <= high <= 2: the side of the centred "
            "box that is resized to the full image, as a fraction of the "
            "image side (< 1 zooms in, > 1 zooms out). "
            f"Received: zoom={value!r}"
        )
    if len(values) == 2:
        return (float(values[0]), float(values[1]))
    # One number r: the range between r and 1 (no zoom).
    return (min(float(values[0]), 1.0), max(float(values[0]), 1.0))


def _check_alpha(name, value):
    if value is None:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"`{name}` must be None (off) or a positive number. "
            f"Received: {name}={value!r}"
        )
    return float(value)


class RandomSaturationHue(keras.layers.RandomHue):
    """Random saturation and hue in one RGB -> HSV -> RGB round trip.

    Keras's `RandomColorJitter` runs `RandomSaturation` and `RandomHue` as
    two round trips (4.0 ms of a 6.9 ms pipeline per 224 px image on 2
    cores; one fused trip costs 1.4 ms), and its `RandomSaturation` clips
    the scaled saturation to `value_range` instead of [0, 1]: with (0, 255)
    images a factor of 0.8 turns (200, 100, 50) into (200, -200, -400).
    Here the saturation is clipped to [0, 1] and the output to
    `value_range`.

    Factors mean what they mean for Keras's layers: a saturation factor
    `f` in [0, 1] scales the saturation by `f / (1 - f)` (0.5 keeps it, 0
    makes the image grey); a hue factor `f` shifts the hue by up to
    `f / 2` of a turn, either way.
    """

    def __init__(self, saturation_factor, hue_factor, value_range, seed=None, **kwargs):
        # RandomHue parses and checks the hue factor, value range and seed.
        super().__init__(
            factor=hue_factor if hue_factor is not None else 0.0,
            value_range=value_range,
            seed=seed,
            **kwargs,
        )
        self.saturation_factor = saturation_factor
        self.hue_factor = hue_factor
        self.saturation = (
            None
            if saturation_factor is None
            else keras.layers.RandomSaturation(saturation_factor).factor
        )

    def get_config(self):
        config = super().get_config()
        del config["factor"]
        return {
            **config,
            "saturation_factor": self.saturation_factor,
            "hue_factor": self.hue_factor,
        }

    def get_random_transformation(self, data, training=True, seed=None):
        images = data["images"] if isinstance(data, dict) else data
        shape = self.backend.shape(images)
        batch_size = 1 if len(shape) == 3 else shape[0]
        if seed is None:
            seed = layer_seed_generator(self)
        transformation = {}
        if self.hue_factor is not None:
            transformation["hue"] = super().get_random_transformation(
                images, training=training, seed=seed
            )["factor"]
        if self.saturation is not None:
            factor = self.backend.random.uniform(
                (batch_size,),
                minval=self.saturation[0],
                maxval=self.saturation[1],
                seed=seed,
            )
            transformation["saturation"] = factor / (1.0 - factor + keras.config.epsilon())
        return transformation

    def transform_images(self, images, transformation=None, training=True):
        if not training:
            return images
        ops = self.backend
        low, high = self.value_range
        images = ops.cast(images, self.compute_dtype)
        unbatched = len(ops.shape(images)) == 3
        if unbatched:
            images = ops.numpy.expand_dims(images, 0)
        hsv = ops.image.rgb_to_hsv((images - low) / (high - low))
        hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
        if "hue" in transformation:
            shift = ops.cast(transformation["hue"], hue.dtype)[:, None, None]
            hue = hue + shift
            hue = ops.numpy.where(hue > 1.0, hue - 1.0, hue)
            hue = ops.numpy.where(hue < 0.0, hue + 1.0, hue)
        if "saturation" in transformation:
            scale = ops.cast(transformation["saturation"], saturation.dtype)[:, None, None]
            saturation = ops.numpy.clip(saturation * scale, 0.0, 1.0)
        rgb = ops.image.hsv_to_rgb(ops.numpy.stack([hue, saturation, value], axis=-1))
        images = ops.numpy.clip(rgb, 0.0, 1.0) * (high - low) + low
        if unbatched:
            images = ops.numpy.squeeze(images, 0)
        return images


@keras.saving.register_keras_serializable(package="keras_transfer")
class ImageAugmentation(keras.layers.Layer):
    """Seeded image augmentation: zoom, crop, flip, rotation, colour, RandAugment.

    A thin layer over Keras's own preprocessing layers (`RandomZoom`,
    `RandomCrop`, `RandomFlip`, `RandomRotation`, `RandomColorJitter`,
    `RandAugment`, `MixUp`, `CutMix`). Use it in two ways:

    - inside a model or in `Dataset.map(augmentation)`, like any Keras
      preprocessing layer (per-image ops only; identity at inference, except
      `crop`, which centre-crops at inference so the output shape does not
      change, unlike Keras's `RandomCrop`, which returns the uncropped
      input at inference);
    - through `dataset(images, labels, ...)`, which builds the whole `tf.data`
      input pipeline: shuffle, per-image augmentation in parallel, batching,
      MixUp/CutMix with soft labels, prefetch.

    `dataset()` gives every example its own seed from a counter-based stream
    fixed by `seed`, so the output is the same from one run to the next even
    with parallel map, which Keras's stateful seed generators do not
    guarantee; each epoch still draws new augmentations. The shuffle and the
    seeds are stateless draws from `seed` alone: with a `seed`, every call
    gives the same examples in the same order, whatever TensorFlow's global
    seed and whatever ran before (with `seed=None`, a seed is drawn from
    NumPy's global generator at each call).

    Args:
        zoom: None (off), a number `r` in (0, 2], or a pair `(low, high)`
            with `0 < low <= high <= 2`. Random centred zoom, the same on
            both axes: per image a ratio `r` is drawn uniformly in
            `[low, high]` (in `[min(r, 1), max(r, 1)]` for one number),
            the centred box of side `r * height` by `r * width` is taken
            and resized (bilinear) back to `(height, width)`: output pixel
            `i` samples the input at `c + r * (i - c)`, `c = (size - 1) / 2`
            (the same as `tf.image.crop_and_resize` with that box). `r < 1`
            zooms in (the box lies inside the image: no pixel is invented);
            `r > 1` zooms out, the image being surrounded by pixels of value
            `value_range[0]`. Example: `zoom=20 / 28` enlarges MNIST digits
            (a 20x20 box in a 28x28 frame) by up to 28/20. Applied first,
            before crop, flip and rotation; identity at inference.
        rotation: float in [0, 1], fraction of a full turn; angles are drawn
            in `[-rotation, rotation] * 360` degrees. 0 disables it.
        flip: one of `"horizontal"`, `"vertical"`,
            `"horizontal_and_vertical"`, or None.
        crop: None or `(height, width)`: random crop to this size.
        brightness, contrast, saturation, hue: factors as in
            `keras.layers.RandomColorJitter` (a number in [0, 1] or a pair).
            0 disables that part. `saturation` and `hue` need RGB images.
            Brightness and contrast run through `RandomColorJitter`;
            saturation and hue through one fused RGB -> HSV -> RGB step
            (Keras makes two, 2.8x slower, and clips saturation to
            `value_range` instead of [0, 1], giving negative pixels on
            (0, 255) images).
        rand_augment: 0 (off) or the number of RandAugment ops per image.
        mixup_alpha: None (off) or the Beta parameter of `keras.layers.MixUp`.
            Used by `dataset()` only, because it needs labels.
        cutmix_alpha: None (off) or the Beta parameter of `keras.layers.CutMix`.
            When both are set, each batch gets one of the two at random.
            CutMix labels are the exact fractions of pasted pixels (Keras's
            own can be several percent off).
        value_range: the range of the input pixel values, `(0, 255)` for raw
            images.
        seed: int or None.

    Example:

    >>> import numpy as np
    >>> import keras_transfer
    >>> aug = keras_transfer.data.ImageAugmentation(
    ...     rotation=0.05, flip="horizontal", crop=(24, 24), seed=0)
    >>> images = np.zeros((10, 28, 28, 3), "uint8")
    >>> labels = np.arange(10) % 2
    >>> ds = aug.dataset(images, labels, batch_size=4, shuffle=False)
    >>> [tuple(x.shape) for x, _ in ds]
    [(4, 24, 24, 3), (4, 24, 24, 3), (2, 24, 24, 3)]
    """

    def __init__(
        self,
        rotation=0.0,
        flip="horizontal",
        crop=None,
        zoom=None,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        rand_augment=0,
        mixup_alpha=None,
        cutmix_alpha=None,
        value_range=(0, 255),
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rotation = _check_factor("rotation", rotation)
        if flip is not None and flip not in _FLIP_MODES:
            raise ValueError(
                f"`flip` must be one of {_FLIP_MODES} or None. "
                f"Received: flip={flip!r}"
            )
        self.flip = flip
        if crop is not None:
            if (
                not isinstance(crop, (tuple, list))
                or len(crop) != 2
                or not all(isinstance(c, int) and c > 0 for c in crop)
            ):
                raise ValueError(
                    "`crop` must be None or a pair of positive ints "
                    f"(height, width). Received: crop={crop!r}"
                )
            crop = tuple(crop)
        self.crop = crop
        self.zoom = _check_zoom(zoom)
        self.brightness = _check_factor("brightness", brightness)
        self.contrast = _check_factor("contrast", contrast)
        self.saturation = _check_factor("saturation", saturation)
        self.hue = _check_factor("hue", hue)
        if not isinstance(rand_augment, int) or isinstance(rand_augment, bool) or (
            rand_augment < 0
        ):
            raise ValueError(
                "`rand_augment` must be 0 (off) or a positive int, the number "
                f"of ops per image. Received: rand_augment={rand_augment!r}"
            )
        self.rand_augment = rand_augment
        self.mixup_alpha = _check_alpha("mixup_alpha", mixup_alpha)
        self.cutmix_alpha = _check_alpha("cutmix_alpha", cutmix_alpha)
        if (
            not isinstance(value_range, (tuple, list))
            or len(value_range) != 2
            or not value_range[0] < value_range[1]
        ):
            raise ValueError(
                "`value_range` must be a pair (low, high) with low < high. "
                f"Received: value_range={value_range!r}"
            )
        self.value_range = tuple(float(v) for v in value_range)
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

        def factor(value):
            return None if value == 0.0 else value

        policy = self.dtype_policy
        self.augmentation_layers = []
        if self.zoom is not None:
            # Keras's zoom matrix samples the input at c + z * (x - c) with
            # c = (size - 1) / 2, i.e. the crop-and-resize of a centred box
            # of relative side z; `height_factor` is z - 1.
            self.augmentation_layers.append(
                keras.layers.RandomZoom(
                    height_factor=(self.zoom[0] - 1.0, self.zoom[1] - 1.0),
                    width_factor=None,
                    fill_mode="constant",
                    fill_value=self.value_range[0],
                    interpolation="bilinear",
                    seed=seed,
                    dtype=policy,
                )
            )
        if self.crop is not None:
            self.augmentation_layers.append(
                keras.layers.RandomCrop(*self.crop, seed=seed, dtype=policy)
            )
        if self.flip is not None:
            self.augmentation_layers.append(
                keras.layers.RandomFlip(self.flip, seed=seed, dtype=policy)
            )
        if self.rotation != 0.0:
            self.augmentation_layers.append(
                keras.layers.RandomRotation(self.rotation, seed=seed, dtype=policy)
            )
        jitter = dict(
            brightness_factor=factor(self.brightness),
            contrast_factor=factor(self.contrast),
        )
        if any(v is not None for v in jitter.values()):
            self.augmentation_layers.append(
                keras.layers.RandomColorJitter(
                    value_range=self.value_range, seed=seed, dtype=policy, **jitter
                )
            )
        if self.saturation != 0.0 or self.hue != 0.0:
            self.augmentation_layers.append(
                RandomSaturationHue(
                    factor(self.saturation),
                    factor(self.hue),
                    value_range=self.value_range,
                    seed=seed,
                    dtype=policy,
                )
            )
        if self.rand_augment:
            self.augmentation_layers.append(
                keras.layers.RandAugment(
                    value_range=self.value_range,
                    num_ops=self.rand_augment,
                    seed=seed,
                    dtype=policy,
                )
            )
        self.center_crop = (
            keras.layers.CenterCrop(*self.crop, dtype=policy) if self.crop is not None else None
        )
        self.mixup = (
            keras.layers.MixUp(alpha=self.mixup_alpha, seed=seed)
            if self.mixup_alpha
            else None
        )
        self.cutmix = (
            keras.layers.CutMix(factor=self.cutmix_alpha, seed=seed)
            if self.cutmix_alpha
            else None
        )

    @property
    def needs_rgb(self):
        return self.saturation != 0.0 or self.hue != 0.0 or self.rand_augment > 0

    def build(self, input_shape):
        # None when called on NumPy arrays: the sublayers build on first call.
        if input_shape is not None:
            self._check_image_shape(input_shape)
            for layer in self.augmentation_layers:
                layer.build(input_shape)
                input_shape = layer.compute_output_shape(input_shape)

    def _check_image_shape(self, shape, name="images"):
        shape = tuple(shape)
        if len(shape) not in (3, 4):
            raise ValueError(
                f"`{name}` must have shape (height, width, channels) or "
                "(batch, height, width, channels). For grayscale arrays of "
                "shape (N, H, W), add a channel axis: `images[..., None]`. "
                f"Received: {name}.shape={shape}"
            )
        channels = shape[-1]
        if self.needs_rgb and channels not in (None, 3):
            raise ValueError(
                "`saturation`, `hue` and `rand_augment` need RGB images "
                f"(3 channels). Received: {name}.shape={shape}. Repeat the "
                "channel (`np.repeat(images, 3, axis=-1)`) or turn them off."
            )
        if self.crop is not None and None not in shape[-3:-1]:
            if shape[-3] < self.crop[0] or shape[-2] < self.crop[1]:
                raise ValueError(
                    f"`crop={self.crop}` is larger than the images. "
                    f"Received: {name}.shape={shape}"
                )

    def call(self, inputs, training=True):
        if not training:
            # Keras's RandomCrop returns the uncropped input at inference,
            # a different shape from training; centre-crop instead.
            if self.crop is None:
                return inputs
            return self.center_crop(inputs)
        outputs = inputs
        for layer in self.augmentation_layers:
            outputs = layer(outputs, training=True)
        return outputs

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.crop is not None:
            shape = shape[:-3] + self.crop + shape[-1:]
        return shape

    def _augment_example(self, seed_pair, image, label):
        import tensorflow as tf

        image = tf.cast(image, "float32")
        with _seeding.stateless_seeds(self.augmentation_layers, seed_pair):
            for layer in self.augmentation_layers:
                image = layer(image, training=True)
        return tf.cast(image, "float32"), label

    def _mix_batch(self, seed_pair, images, labels):
        import tensorflow as tf

        outputs = []
        if self.mixup is not None:
            with _seeding.stateless_seeds([self.mixup], seed_pair) as gen:
                data = self.mixup({"images": images, "labels": labels}, training=True)
            outputs.append(
                (tf.cast(data["images"], "float32"), tf.cast(data["labels"], "float32"))
            )
        if self.cutmix is not None:
            # Keras's CutMix weighs labels by the area of a fractional box,
            # while the pasted pixels come from an integer grid: labels can be
            # off by several percent. A channel holding each image's batch
            # index records where every output pixel came from, and the
            # labels are recomputed from it exactly.
            batch = tf.shape(images)[0]
            index = tf.cast(tf.range(batch), images.dtype)[:, None, None, None]
            tracer = tf.broadcast_to(index, tf.concat([tf.shape(images)[:3], [1]], 0))
            traced = tf.concat([images, tracer], axis=-1)
            with _seeding.stateless_seeds([self.cutmix], seed_pair) as gen:
                data = self.cutmix({"images": traced, "labels": labels}, training=True)
            mixed = tf.cast(data["images"], "float32")
            source = tf.cast(tf.round(mixed[..., -1]), "int32")
            weights = tf.reduce_mean(
                tf.one_hot(source, batch, dtype="float32"), axis=[1, 2]
            )
            outputs.append((mixed[..., :-1], tf.matmul(weights, labels)))
        if len(outputs) == 1:
            return outputs[0]
        pick_mixup = (
            tf.random.stateless_uniform((), seed=tf.cast(gen.next(), "int32")) < 0.5
        )
        return tf.cond(pick_mixup, lambda: outputs[0], lambda: outputs[1])

    def dataset(
        self,
        images,
        labels,
        batch_size=32,
        shuffle=True,
        num_classes=None,
        num_parallel_calls=None,
        drop_remainder=False,
    ):
        """A batched, shuffled, augmented, prefetched `tf.data.Dataset`.

        Args:
            images: array `(N, H, W, C)`, uint8 or float, pixel values in
                `value_range`.
            labels: array `(N,)` of int class ids, or `(N, num_classes)`
                one-hot / soft labels. Never changed unless MixUp/CutMix
                is on, in which case they come out as float one-hot mixtures
                that sum to 1.
            batch_size: positive int.
            shuffle: reshuffle each epoch (seeded by `seed`).
            num_classes: needed with MixUp/CutMix when `labels` are int ids.
            num_parallel_calls: for `Dataset.map`; `tf.data.AUTOTUNE` if None.
            drop_remainder: keep False to see every example each epoch.

        Returns:
            A `tf.data.Dataset` of `(images float32, labels)` batches.
        """
        import tensorflow as tf

        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
            raise ValueError(
                "`images` must be uint8 or float. "
                f"Received: images.dtype={images.dtype}"
            )
        if images.ndim != 4:
            raise ValueError(
                "`images` must be a batch of shape (N, height, width, "
                "channels). For grayscale (N, H, W) arrays add a channel axis: "
                f"`images[..., None]`. Received: images.shape={images.shape}"
            )
        self._check_image_shape(images.shape)
        if len(labels) != len(images):
            raise ValueError(
                "`images` and `labels` must have the same length. "
                f"Received: len(images)={len(images)}, len(labels)={len(labels)}"
            )
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(
                f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
            )
        mixing = self.mixup is not None or self.cutmix is not None
        if mixing:
            if labels.ndim == 1:
                if num_classes is None:
                    raise ValueError(
                        "MixUp/CutMix mix labels, so int `labels` need "
                        "`num_classes`. Received: num_classes=None"
                    )
                if labels.min() < 0 or labels.max() >= num_classes:
                    raise ValueError(
                        f"`labels` must be in [0, {num_classes}). Received: "
                        f"labels in [{labels.min()}, {labels.max()}]"
                    )
                labels = np.eye(num_classes, dtype="float32")[labels]
            labels = labels.astype("float32")

        calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
        ds = _seeding.seeded_examples(
            (images, labels), _seeding.resolve_seed(self.seed), shuffle
        ).map(
            lambda s, xy: (s, *self._augment_example(s, *xy)),
            num_parallel_calls=calls,
            deterministic=True,
        )
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if mixing:
            ds = ds.map(
                lambda s, x, y: self._mix_batch(_seeding.batch_seed(s), x, y),
                num_parallel_calls=calls,
                deterministic=True,
            )
        else:
            ds = ds.map(lambda s, x, y: (x, y))
        return ds.prefetch(tf.data.AUTOTUNE)

    def get_config(self):
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "flip": self.flip,
            "crop": None if self.crop is None else list(self.crop),
            "zoom": None if self.zoom is None else list(self.zoom),
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "hue": self.hue,
            "rand_augment": self.rand_augment,
            "mixup_alpha": self.mixup_alpha,
            "cutmix_alpha": self.cutmix_alpha,
            "value_range": list(self.value_range),
            "seed": self.seed,
        }
