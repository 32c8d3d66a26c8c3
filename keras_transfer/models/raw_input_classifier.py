"""`RawInputClassifier`: a classifier that reads raw inputs and knows its classes."""

import json
import os

import keras
import numpy as np

from keras_transfer._walk import model_output

MODALITIES = ("text", "image", "audio")
_IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
)
_CLASSIFIER_ASSET = "classifier.json"


@keras.saving.register_keras_serializable(package="keras_transfer")
class RawInputClassifier(keras.Model):
    """A trained classifier with what it needs to read raw inputs.

    `keras-transfer fit` saves one of these (`model.keras`). It wraps the
    trained `classifier` (which takes preprocessed arrays) with the class
    names and the preprocessing the training data went through, so that,
    after `import keras_transfer`, `keras.models.load_model(path)` predicts
    from raw inputs:

    - `"text"`: strings (a list or array) -> `preprocessor` (a keras-hub
      tokenizer + packer layer, saved with its vocabulary) -> token arrays.
    - `"image"`: an array `(N, H, W, 3)` or `(N, H, W)` (grey) of pixel
      values in [0, 255] at any size, or a list of image file paths
      (decoded to 8-bit RGB), resized to `image_size` with Pillow's bilinear
      filter in both cases (`datasets.resize_like_files`, as
      `datasets.load_image_folder` reads folders and `keras-transfer fit`
      resizes arrays), so an image gives the same prediction as an 8-bit
      array and as a file.
    - `"audio"`: float waveforms in [-1, 1] at `sample_rate` Hz (a list of
      1-D arrays of any lengths, or a 2-D array), or a list of `.wav` file
      paths (read and resampled by `datasets.read_wav`). Each clip is
      padded at the end with silence to `clip_length` samples, the length
      the training clips were padded to; longer clips are run at their own
      length.

    `call` takes the preprocessed inputs (what `classifier` takes) and
    returns `(batch, len(class_names))` class probabilities; `predict`,
    `evaluate` and `fit` take raw inputs (or already preprocessed ones, or a
    `tf.data.Dataset` of preprocessed batches) and run `preprocess` first.
    `class_names[i]` names output column `i`.

    In a `.keras` file written by `model.save`, the classifier's
    architecture is stored as an asset (`classifier.json`, as keras-hub
    stores tokenizer vocabularies) rather than in the config, so the config
    stays a few hundred characters: loaded without `import keras_transfer`,
    Keras's "Could not locate class 'RawInputClassifier'" error is short (it
    shows this config, which says to import `keras_transfer`) instead of
    printing the whole network. Everywhere else `get_config` holds the
    classifier's config, so `from_config(model.get_config())` and
    `keras.models.clone_model(model)` give the same architecture with new
    weights, as for any Keras model.

    Args:
        classifier: a built `keras.Model` from preprocessed inputs to class
            probabilities `(batch, num_classes)`; `None` only while loading.
        class_names: list of str, one per output column, unique.
        modality: `"text"`, `"image"` or `"audio"`.
        preprocessor: text only, a keras-hub preprocessor layer (e.g.
            `keras_hub.models.BertTextClassifierPreprocessor`) mapping
            strings to a dict holding the classifier's inputs.
        image_size: image only, `(height, width)` the classifier takes.
        sample_rate: audio only, int, Hz of the waveforms.
        clip_length: audio only, int, samples the clips are padded to.
        requires: str, a note for readers of the saved config (kept as
            given).
        **kwargs: `keras.Model` keyword arguments, such as `name`.

    Example:

    ```python
    import keras
    import keras_transfer  # registers RawInputClassifier

    model = keras.models.load_model("tensorboard_logs/run/model.keras")
    probabilities = model.predict(["a gripping film", "a dull mess"])
    labels = [model.class_names[i] for i in probabilities.argmax(-1)]
    ```
    """

    def __init__(
        self,
        classifier=None,
        class_names=(),
        modality="image",
        preprocessor=None,
        image_size=None,
        sample_rate=None,
        clip_length=None,
        requires="import keras_transfer before keras.models.load_model",
        **kwargs,
    ):
        super().__init__(**kwargs)
        class_names = list(class_names)
        if (
            len(class_names) < 2
            or not all(isinstance(c, str) for c in class_names)
            or len(set(class_names)) != len(class_names)
        ):
            raise ValueError(
                "`class_names` must be two or more distinct strings. "
                f"Received: class_names={class_names!r}"
            )
        if modality not in MODALITIES:
            raise ValueError(
                f"`modality` must be one of {MODALITIES}. Received: "
                f"modality={modality!r}"
            )
        if modality == "text" and preprocessor is None:
            raise ValueError("`preprocessor` is required for text models.")
        if modality == "image":
            if (
                not isinstance(image_size, (tuple, list))
                or len(image_size) != 2
                or not all(isinstance(s, int) and s > 0 for s in image_size)
            ):
                raise ValueError(
                    "`image_size` must be (height, width), two positive "
                    f"ints, for image models. Received: image_size={image_size!r}"
                )
            image_size = tuple(image_size)
        if modality == "audio":
            for name, value in (("sample_rate", sample_rate), ("clip_length", clip_length)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(
                        f"`{name}` must be a positive integer for audio "
                        f"models. Received: {name}={value!r}"
                    )
        self.class_names = class_names
        self.modality = modality
        self.preprocessor = preprocessor
        self.image_size = image_size
        self.sample_rate = sample_rate
        self.clip_length = clip_length
        self.requires = requires
        self.classifier = None
        # True while `save` writes a `.keras` file (see `get_config`).
        self._saving_file = False
        if classifier is not None:
            self._set_classifier(classifier)

    def _set_classifier(self, classifier):
        if not isinstance(classifier, keras.Model):
            raise ValueError(
                "`classifier` must be a built `keras.Model`. Received: "
                f"classifier={classifier!r}"
            )
        classes = model_output(classifier).shape[-1]
        if classes != len(self.class_names):
            raise ValueError(
                f"`classifier` has {classes} outputs but `class_names` has "
                f"{len(self.class_names)} names. Received: "
                f"class_names={self.class_names!r}"
            )
        self.classifier = classifier
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs, training=None):
        if self.classifier is None:
            raise ValueError(
                "This `RawInputClassifier` has no classifier: it was made "
                "from the config of a saved `.keras` file, which keeps the "
                "classifier as an asset. Load the file with "
                "`keras.models.load_model`, or clone the model itself "
                "(`keras.models.clone_model(model)`)."
            )
        return self.classifier(inputs, training=training)

    # -- raw inputs ------------------------------------------------------

    def preprocess(self, x):
        """Raw inputs -> what `classifier` takes (see the class docstring).

        Already preprocessed inputs pass through unchanged (token dicts;
        images at `image_size`; audio at `clip_length`). Audio clips longer
        than `clip_length` are padded to the longest clip of `x` (use
        `predict`, which runs them at their own length).

        Raises:
            ValueError: inputs that do not fit the modality (e.g. strings
                or a 2-D array for an image model), naming what was given.
        """
        if self.modality == "text":
            return self._preprocess_text(x)
        if self.modality == "image":
            return self._preprocess_images(x)
        from keras_transfer.datasets import pad_clips

        clips = self._clips(x)
        return pad_clips(clips, max(self.clip_length, max(len(c) for c in clips)))

    def _preprocess_text(self, x):
        if isinstance(x, dict):
            return x
        if isinstance(x, str):
            x = [x]
        strings = np.asarray(x, dtype=object)
        if strings.ndim != 1 or not all(isinstance(s, str) for s in strings):
            raise ValueError(
                "A text model takes a list of strings. Received: "
                f"{_describe(x)}"
            )
        out = self.preprocessor(strings.astype(str))
        inputs = self.classifier.input if self.classifier is not None else None
        names = list(inputs) if isinstance(inputs, dict) else None
        out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
        if names:
            out = {k: v for k, v in out.items() if k in names}
        return out

    def _preprocess_images(self, x):
        from keras_transfer.datasets import resize_like_files

        height, width = self.image_size
        if _is_paths(x):
            return self._read_images([x] if isinstance(x, str) else list(x))
        x = np.asarray(x)
        if x.dtype.kind not in "uif" or x.ndim not in (3, 4) or (
            x.ndim == 4 and x.shape[-1] not in (1, 3)
        ):
            raise ValueError(
                "An image model takes images (N, H, W) or (N, H, W, 3) with "
                "pixel values in [0, 255], or image file paths. Received: "
                f"{_describe(x)}"
            )
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        if x.shape[1:3] != (height, width):
            # As files are resized (`_read_images`), so that an image gives
            # the same prediction as an array and as a file.
            x = resize_like_files(x, (height, width))
        return np.asarray(x, dtype="float32")

    def _read_images(self, paths):
        from PIL import Image

        from keras_transfer.datasets.image_folder import read_image

        height, width = self.image_size
        out = np.empty((len(paths), height, width, 3), dtype="float32")
        for row, path in enumerate(paths):
            if not str(path).lower().endswith(_IMAGE_EXTENSIONS):
                raise ValueError(
                    f"{path!r} is not an image file. Allowed: "
                    f"{', '.join(_IMAGE_EXTENSIONS)} files"
                )
            try:
                out[row] = read_image(path, (height, width))
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                raise ValueError(
                    f"Cannot decode the image {path!r} "
                    f"({type(error).__name__}: {error})."
                ) from None
        return out

    def _clips(self, x):
        from keras_transfer.datasets import read_wav

        if _is_paths(x):
            paths = [x] if isinstance(x, str) else list(x)
            for path in paths:
                if not str(path).lower().endswith(".wav"):
                    raise ValueError(
                        f"{path!r} is not a .wav file. An audio model takes "
                        "waveforms or .wav files"
                    )
            return [read_wav(p, self.sample_rate) for p in paths]
        if isinstance(x, np.ndarray) and x.ndim == 2:
            clips = list(x)
        elif isinstance(x, (list, tuple)):
            clips = [np.asarray(c) for c in x]
        else:
            clips = [np.asarray(x)]
        if not clips or any(c.ndim != 1 or c.dtype.kind != "f" or c.size == 0 for c in clips):
            raise ValueError(
                "An audio model takes float waveforms (a 2-D array or a "
                f"list of 1-D arrays) at {self.sample_rate} Hz, or .wav file "
                f"paths. Received: {_describe(x)}"
            )
        return [np.asarray(c, dtype="float32") for c in clips]

    # -- Keras entry points on raw inputs ----------------------------------

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """`keras.Model.predict` on raw (or preprocessed) inputs.

        Under a `keras.distribution` (`DataParallel`, ...), whose devices
        each take an equal share of every batch, an uneven last batch is
        padded with copies of the last input and the extra rows dropped from
        the result, so any number of inputs can be predicted (the batch
        size itself must be a multiple of the device count).

        Returns:
            float32 `(N, len(class_names))` class probabilities.

        Raises:
            ValueError: inputs that do not fit the modality; under a
                distribution, a batch size the devices do not divide.
        """
        kwargs = dict(batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)
        if _is_dataset(x):
            return super().predict(x, **kwargs)
        if self.modality != "audio":
            return self._predict_arrays(self.preprocess(x), kwargs)
        from keras_transfer.datasets import pad_clips

        clips = self._clips(x)
        lengths = [max(self.clip_length, len(c)) for c in clips]
        out = None
        for length in sorted(set(lengths)):
            rows = [i for i, n in enumerate(lengths) if n == length]
            probabilities = self._predict_arrays(
                pad_clips([clips[i] for i in rows], length), kwargs
            )
            if out is None:
                out = np.zeros((len(clips), probabilities.shape[-1]), probabilities.dtype)
            out[rows] = probabilities
        return out

    def _predict_arrays(self, x, kwargs):
        """`keras.Model.predict` on arrays; under a distribution, an uneven
        last batch is padded (copies of the last input), the result trimmed."""
        shards, batch_size = _check_batches(x, kwargs.get("batch_size"), "predict")
        count = len(keras.tree.flatten(x)[0])
        last = count % batch_size
        pad = (-last) % shards if last else 0
        if pad:
            x = keras.tree.map_structure(
                lambda a: np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]), x
            )
        return super().predict(x, **kwargs)[:count]

    def evaluate(self, x=None, y=None, **kwargs):
        """`keras.Model.evaluate` on raw (or preprocessed) inputs.

        Under a `keras.distribution`, the batch size and the last batch must
        split evenly over the devices (padding would change the loss and
        the metrics): otherwise a `ValueError` says how to fix it. (`predict`
        pads and trims instead.)
        """
        if x is not None and not _is_dataset(x):
            x = self.preprocess(x)
            shards, batch_size = _check_batches(x, kwargs.get("batch_size"), "evaluate")
            count = len(keras.tree.flatten(x)[0])
            last = count % batch_size
            if last % shards:
                raise ValueError(
                    f"`evaluate` under a `keras.distribution` splits each batch "
                    f"over {shards} devices; the {count} examples in batches of "
                    f"{batch_size} end in a batch of {last}, which they cannot "
                    "split evenly (padding it would change the loss and the "
                    "metrics). Pass a number of examples or a `batch_size` that "
                    f"leaves a last batch that is a multiple of {shards}, or use "
                    "`predict` (it pads and trims). Received: "
                    f"batch_size={batch_size}, {count} examples"
                )
        return super().evaluate(x, y, **kwargs)

    def fit(self, x=None, y=None, validation_data=None, **kwargs):
        if x is not None and not _is_dataset(x):
            x = self.preprocess(x)
        if isinstance(validation_data, (tuple, list)):
            validation_data = (self.preprocess(validation_data[0]), *validation_data[1:])
        return super().fit(x, y, validation_data=validation_data, **kwargs)

    def predict_labels(self, x, batch_size=None, verbose=0):
        """Class names and probabilities of raw inputs.

        Returns:
            `(labels, probabilities)`: a list of str (the most probable class
            of each input) and float32 `(N, len(class_names))`.
        """
        probabilities = self.predict(x, batch_size=batch_size, verbose=verbose)
        return [self.class_names[i] for i in probabilities.argmax(-1)], probabilities

    # -- saving ------------------------------------------------------------

    def save(self, filepath, *args, **kwargs):
        """`keras.Model.save`; the classifier goes to an asset, not the config."""
        self._saving_file = True
        try:
            return super().save(filepath, *args, **kwargs)
        finally:
            self._saving_file = False

    def get_config(self):
        config = super().get_config()
        classifier = None
        if not self._saving_file and self.classifier is not None:
            classifier = keras.saving.serialize_keras_object(self.classifier)
        config.update({
            # In a file written by `save`, an asset (see `save_assets`), so
            # the config stays short.
            "classifier": classifier,
            "class_names": list(self.class_names),
            "modality": self.modality,
            "preprocessor": (
                keras.saving.serialize_keras_object(self.preprocessor)
                if self.preprocessor is not None else None
            ),
            "image_size": list(self.image_size) if self.image_size else None,
            "sample_rate": self.sample_rate,
            "clip_length": self.clip_length,
            "requires": self.requires,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("preprocessor") is not None:
            config["preprocessor"] = keras.saving.deserialize_keras_object(
                config["preprocessor"]
            )
        if config.get("classifier") is not None:
            config["classifier"] = keras.saving.deserialize_keras_object(
                config["classifier"]
            )
        if config.get("image_size") is not None:
            config["image_size"] = tuple(config["image_size"])
        return cls(**config)

    def get_build_config(self):
        return None

    def save_assets(self, dir_path):
        with open(os.path.join(dir_path, _CLASSIFIER_ASSET), "w") as f:
            json.dump(keras.saving.serialize_keras_object(self.classifier), f)

    def load_assets(self, dir_path):
        # Runs before the weights of the attributes are loaded, so the
        # classifier's weights are then read into it as usual. (A config
        # that held the classifier, as `keras.saving.save_model` writes it,
        # has built it already.)
        if self.classifier is None:
            with open(os.path.join(dir_path, _CLASSIFIER_ASSET)) as f:
                self._set_classifier(
                    keras.saving.deserialize_keras_object(json.load(f))
                )
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # `compile_from_config` ran before the classifier existed; build
            # the optimizer now so its saved state loads (training resumes).
            optimizer.build(self.trainable_variables)


def _check_batches(x, batch_size, method):
    """`(devices each batch is split over, batch size)`: 1 without a
    `keras.distribution`; raises if the batch size does not split evenly."""
    batch_size = 32 if batch_size is None else batch_size
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1, batch_size
    from keras_transfer.distribution import batch_shards

    shards = batch_shards(distribution)
    if batch_size % shards:
        raise ValueError(
            f"`{method}` under a `keras.distribution` splits each batch over "
            f"{shards} devices, so `batch_size` must be a multiple of "
            f"{shards}. Received: batch_size={batch_size}"
        )
    return shards, batch_size


def _is_paths(x):
    if isinstance(x, str):
        return True
    return (
        isinstance(x, (list, tuple)) and len(x) > 0
        and all(isinstance(p, (str, os.PathLike)) for p in x)
    )


def _is_dataset(x):
    return hasattr(x, "element_spec") or isinstance(x, keras.utils.PyDataset)


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} and dtype {x.dtype}"
    if isinstance(x, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in x})
        return f"a {type(x).__name__} of {len(x)} {'/'.join(kinds)}"
    return f"a {type(x).__name__}"
