"""`load_base`: turn the CLI's `--base` value into a model to build on."""

import dataclasses
import os

import keras

from keras_transfer._walk import model_input
from keras_transfer._walk import model_output

BASE_NAMES = ("minilm", "efficientnet_lite0", "speech_embedding")
MODALITIES = ("text", "image", "audio", "features")
_ALLOWED = (
    "'minilm', 'efficientnet_lite0', 'speech_embedding', a path to a "
    "`.keras` model file, or a keras-hub preset folder (with `config.json`)"
)


@dataclasses.dataclass(frozen=True)
class Base:
    """A pretrained base model and what a caller needs to build on it.

    Attributes:
        model: `keras.Model` mapping preprocessed inputs to a feature vector
            `(batch, dim)` (or, for a `.keras` file, whatever it outputs).
        modality: `"text"` (inputs `{"token_ids", "padding_mask"}`, made from
            raw strings by `preprocessor`), `"image"` (raw RGB pixels in
            [0, 255] unless the model says otherwise), `"audio"` (float
            waveforms `(batch, samples)` in [-1, 1] at 16 kHz) or `"features"`
            (anything else: numeric arrays fed as they are).
        preprocessor: callable or `None`. For text, raw strings -> model
            inputs (usable in `tf.data.Dataset.map`). `None` when the model
            takes its inputs as they are.
        image_size: `(height, width)` the image model expects, or `None`.
        name: str, the `spec` that was loaded.
    """

    model: keras.Model
    modality: str
    preprocessor: object = None
    image_size: tuple = None
    name: str = ""

    @property
    def output_dim(self):
        """int, the last dimension of the model's output."""
        return int(model_output(self.model).shape[-1])


def load_base(spec, **kwargs):
    """Loads the base model named by `spec` (the CLI's `--base`).

    Args:
        spec: str, one of
            - `"minilm"`: `minilm(**kwargs)` with `minilm_preprocessor`
              (text, 384-d L2-normalised sentence embeddings);
            - `"efficientnet_lite0"`: `efficientnet_lite0(weights="imagenet",
              include_top=False, pooling="avg", **kwargs)` (image, 224x224
              raw RGB in [0, 255]);
            - `"speech_embedding"`: `speech_embedding(**kwargs)` (audio,
              16 kHz float waveforms in [-1, 1] -> 192-d mean+max pooled
              speech embedding);
            - a path to a `.keras` model file, loaded as it is; its modality
              is read from its inputs (a 4-D input is an image; a model
              starting with `SpeechMelSpectrogram` is audio);
            - a keras-hub preset folder (`config.json` + `metadata.json`) or a
              Hugging Face folder keras-hub can convert: text backbones are
              mean-pooled like MiniLM, image backbones globally average
              pooled.
        **kwargs: passed to `minilm` / `efficientnet_lite0` /
            `speech_embedding`, or for a text
            preset folder `sequence_length` (default 128).

    Returns:
        A frozen `Base(model, modality, preprocessor, image_size, name)`.

    Example:

    ```python
    base = keras_transfer.backbones.load_base("minilm", sequence_length=64)
    inputs = {k: keras.Input((64,), dtype="int32", name=k)
              for k in ("token_ids", "padding_mask")}
    outputs = keras.layers.Dense(2)(base.model(inputs))
    ```
    """
    if not isinstance(spec, (str, os.PathLike)) or not str(spec):
        raise ValueError(
            f"`base` must be {_ALLOWED}. Received: base={spec!r}"
        )
    spec = str(spec)
    if spec == "minilm":
        from keras_transfer.backbones.minilm import minilm
        from keras_transfer.backbones.minilm import minilm_preprocessor

        sequence_length = kwargs.get("sequence_length", 128)
        return Base(
            model=minilm(**kwargs),
            modality="text",
            preprocessor=minilm_preprocessor(sequence_length),
            name=spec,
        )
    if spec == "efficientnet_lite0":
        from keras_transfer.backbones.efficientnet_lite0 import (
            efficientnet_lite0,
        )

        kwargs = {
            "weights": "imagenet", "include_top": False, "pooling": "avg",
            **kwargs,
        }
        model = efficientnet_lite0(**kwargs)
        size = _image_size(model) or (224, 224)
        return Base(model, "image", None, size, spec)
    if spec == "speech_embedding":
        from keras_transfer.backbones.speech_embedding import speech_embedding

        return Base(speech_embedding(**kwargs), "audio", None, None, spec)
    if not os.path.exists(spec):
        raise ValueError(
            f"`base` is not a known name and no such file or folder exists. "
            f"Allowed: {_ALLOWED}. Received: base={spec!r}"
        )
    if os.path.isfile(spec):
        if not spec.endswith(".keras"):
            raise ValueError(
                f"`base` file must be a `.keras` model file. Allowed: "
                f"{_ALLOWED}. Received: base={spec!r}"
            )
        if kwargs:
            raise ValueError(
                "`load_base` takes no keyword arguments for a `.keras` file. "
                f"Received: {sorted(kwargs)} for base={spec!r}"
            )
        model = keras.models.load_model(spec)
        return Base(
            model, _modality(model), None, _image_size(model), spec
        )
    if not os.path.isfile(os.path.join(spec, "config.json")):
        raise ValueError(
            f"`base` folder has no `config.json`, so it is not a keras-hub "
            f"preset. Allowed: {_ALLOWED}. Received: base={spec!r}"
        )
    return _load_preset(spec, **kwargs)


def _modality(model):
    inputs = model_input(model)
    if any(
        type(layer).__name__ == "SpeechMelSpectrogram" for layer in model.layers
    ):
        return "audio"
    if isinstance(inputs, dict) and "token_ids" in inputs:
        return "text"
    if not isinstance(inputs, (list, tuple, dict)) and len(inputs.shape) == 4:
        return "image"
    return "features"


def _image_size(model):
    inputs = model_input(model)
    if isinstance(inputs, (list, tuple, dict)) or len(inputs.shape) != 4:
        return None
    height, width = inputs.shape[1:3]
    if height is None or width is None:
        return None
    return (int(height), int(width))


def _load_preset(folder, sequence_length=128, **kwargs):
    import keras_hub

    from keras_transfer.backbones.minilm import _check_sequence_length
    from keras_transfer.backbones.minilm import pooled_text_encoder

    if kwargs:
        raise ValueError(
            "`load_base` takes only `sequence_length` for a preset folder. "
            f"Received: {sorted(kwargs)} for base={folder!r}"
        )
    try:
        backbone = keras_hub.models.Backbone.from_preset(folder)
    except Exception as e:
        raise ValueError(
            f"`base` folder could not be loaded by keras-hub ({e}). "
            f"Allowed: {_ALLOWED}. Received: base={folder!r}"
        ) from e
    name = os.path.basename(os.path.normpath(folder))
    if isinstance(model_input(backbone), dict) and "token_ids" in model_input(backbone):
        _check_sequence_length(sequence_length)
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
            folder, sequence_length=sequence_length
        )
        model = pooled_text_encoder(
            backbone, sequence_length, pooling="mean", name=name
        )

        def text_preprocessor(x):
            out = preprocessor(x)
            return {k: out[k] for k in ("token_ids", "padding_mask")}

        return Base(model, "text", text_preprocessor, None, folder)
    if len(model_input(backbone).shape) == 4:
        inputs = keras.Input(backbone.input.shape[1:], name="images")
        features = backbone(inputs)
        if len(features.shape) == 4:
            features = keras.layers.GlobalAveragePooling2D()(features)
        model = keras.Model(inputs, features, name=name)
        # No preprocessor: keras-hub image backbones take what their
        # preset's `ImageConverter` makes; the caller applies it.
        return Base(model, "image", None, _image_size(model), folder)
    return Base(backbone, "features", None, None, folder)

