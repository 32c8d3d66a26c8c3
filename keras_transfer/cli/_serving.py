"""Using a trained model: wrapping it for raw inputs, the serving export,
loading it back and reading raw inputs from the command line.

Imports Keras only inside the functions.
"""

import csv
import json
import os

from keras_transfer.cli._args import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
AUDIO_EXTENSIONS = (".wav",)
TEXT_FILE_EXTENSIONS = (".txt", ".csv", ".tsv")
SERVING_FOLDER = "serving"
SERVING_INFO = "keras_transfer.json"
ALLOWED_INPUTS = {
    "text": "strings, .txt files (one example a line) or .csv/.tsv files "
            "(with --text-column)",
    "image": "image files (" + ", ".join(IMAGE_EXTENSIONS) + ") or folders of them",
    "audio": ".wav files (any sample rate, mono or stereo) or folders of them",
}


def wrap(base, classifier, class_names, modality, args, clip_length=None, image_size=None):
    """The trained classifier as a `RawInputClassifier` (what `fit` saves).

    `image_size` (height, width) defaults to the classifier's input size.
    """
    from keras_transfer._walk import model_input
    from keras_transfer.models import RawInputClassifier

    kwargs = {}
    if modality == "text":
        kwargs["preprocessor"] = text_preprocessor_layer(base, args)
    elif modality == "image":
        height, width = image_size or model_input(classifier).shape[1:3]
        kwargs["image_size"] = (int(height), int(width))
    elif modality == "audio":
        kwargs["sample_rate"] = 16000
        kwargs["clip_length"] = int(clip_length)
    return RawInputClassifier(
        classifier, list(class_names), modality, name="raw_input_classifier", **kwargs
    )


def text_preprocessor_layer(base, args):
    """The keras-hub preprocessor layer (tokenizer + packer) of a text base."""
    packer = getattr(base.preprocessor, "_packer", None)  # minilm_preprocessor
    if packer is not None:
        return packer
    import keras_hub

    return keras_hub.models.TextClassifierPreprocessor.from_preset(
        args.base, sequence_length=args.sequence_length
    )


def export(classifier, path):
    """Writes a TensorFlow SavedModel of `classifier` (preprocessed inputs)."""
    classifier.export(path, format="tf_saved_model", verbose=False)


def serving_info(model):
    """What a serving client needs besides the SavedModel (JSON-safe)."""
    inputs = model.classifier.inputs
    return {
        "class_names": list(model.class_names),
        "modality": model.modality,
        "inputs": [
            {"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)} for t in inputs
        ],
        "image_size": list(model.image_size) if model.image_size else None,
        "sample_rate": model.sample_rate,
        "clip_length": model.clip_length,
        "sequence_length": getattr(model.preprocessor, "sequence_length", None),
        "signature": "serve",
        "outputs": "class probabilities (batch, len(class_names))",
    }


def load_model(path):
    """Loads a model saved by `keras-transfer fit`; bad ones are `UsageError`s."""
    allowed = "Allowed: a model.keras file written by keras-transfer fit"
    if not os.path.exists(path):
        raise UsageError(f"MODEL {path!r} does not exist. {allowed}")
    if os.path.isdir(path) or not path.endswith(".keras"):
        raise UsageError(f"MODEL {path!r} is not a .keras file. {allowed}")
    import keras

    import keras_transfer  # noqa: F401  (registers the classes)
    from keras_transfer.models import RawInputClassifier

    try:
        model = keras.models.load_model(path)
    except Exception as e:  # a zip/HDF5/JSON error: the file is unreadable
        message = " ".join(str(e).split())
        if len(message) > 200:
            message = message[:200] + "..."
        raise UsageError(
            f"MODEL {path!r} cannot be read ({type(e).__name__}: {message}). {allowed}"
        )
    if not isinstance(model, RawInputClassifier):
        raise UsageError(
            f"MODEL {path!r} is a {type(model).__name__} without class names or "
            f"input preprocessing. {allowed} (a RawInputClassifier)"
        )
    return model


def _files_in(folder, extensions):
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, f) for f in sorted(files)
            if not f.startswith(".") and f.lower().endswith(extensions)
        ]
    return found


def read_inputs(model, inputs, text_column="text", encoding="utf-8"):
    """Command-line INPUTs -> `(names, raw)` for `model.predict`.

    Text models take strings, `.txt` files (one example per non-empty line)
    and `.csv`/`.tsv` files (the `text_column`); image models take image
    files and folders of them (searched recursively); audio models take
    `.wav` files and folders of them.
    """
    modality = model.modality
    names, raw = [], []
    kinds = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS}
    allowed = ALLOWED_INPUTS[modality]
    for value in inputs:
        lower = value.lower()
        other = [m for m, ext in kinds.items() if m != modality and lower.endswith(ext)]
        if os.path.isfile(value) and other:
            raise UsageError(
                f"INPUT {value!r} is {other[0]} but the model takes {modality}. "
                f"Allowed: {allowed}"
            )
        if modality == "text":
            if os.path.isfile(value) and lower.endswith(TEXT_FILE_EXTENSIONS):
                texts = _read_texts(value, text_column, encoding)
                names += [f"{value}:{i + 1}" for i in range(len(texts))]
                raw += texts
            elif os.path.isdir(value):
                raise UsageError(
                    f"INPUT {value!r} is a folder but the model takes text. "
                    f"Allowed: {allowed}"
                )
            else:
                names.append(value)
                raw.append(value)
            continue
        if os.path.isdir(value):
            files = _files_in(value, kinds[modality])
            if not files:
                raise UsageError(
                    f"INPUT {value!r} is a folder with no {modality} files. "
                    f"Allowed: {allowed}"
                )
        elif os.path.isfile(value) and lower.endswith(kinds[modality]):
            files = [value]
        else:
            what = "not an existing file or folder" if not os.path.exists(value) else (
                "not a " + modality + " file"
            )
            raise UsageError(
                f"INPUT {value!r} is {what}, and the model takes {modality}. "
                f"Allowed: {allowed}"
            )
        names += files
        raw += files
    return names, raw


def _read_texts(path, text_column, encoding):
    try:
        with open(path, newline="", encoding=encoding) as f:
            if path.lower().endswith(".txt"):
                texts = [line.strip() for line in f if line.strip()]
            else:
                delimiter = "\t" if path.lower().endswith(".tsv") else ","
                reader = csv.DictReader(f, delimiter=delimiter)
                columns = reader.fieldnames or []
                if text_column not in columns:
                    raise UsageError(
                        f"--text-column {text_column!r} is not a column of INPUT "
                        f"{path!r}. Allowed: one of {columns}"
                    )
                texts = [row[text_column] for row in reader if row.get(text_column)]
    except UnicodeDecodeError as e:
        raise UsageError(
            f"INPUT {path!r} cannot be decoded as {encoding} ({e.reason} at byte "
            f"{e.start}). Allowed: a text file in --encoding {encoding!r}, or "
            "another --encoding"
        )
    except OSError as e:
        raise UsageError(f"INPUT {path!r} cannot be read ({e.strerror or e})")
    if not texts:
        raise UsageError(f"INPUT {path!r} holds no text. Allowed: a file with examples")
    return texts


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
