"""Loading a command's data and base, and turning raw examples into inputs.

Imports Keras (through `keras_transfer.datasets` and `.backbones`) only
inside the functions, when a command runs.
"""

import os

from keras_transfer.cli import _args
from keras_transfer.cli._args import UsageError

BUILTIN_DATA = ("rotten_tomatoes", "fashion_mnist", "mnist5k", "digits")
BUILTIN_BASES = ("minilm", "efficientnet_lite0", "speech_embedding")
# Built-in datasets subsampled by default, so the default run stays small.
DEFAULT_SIZES = {"rotten_tomatoes": (1000, 1000), "fashion_mnist": (1000, 1000)}
DEFAULT_IMAGE_SIZE = 96
# Square image sizes the commands accept: the built-in image base needs 32
# px (five stride-2 stages); above 512 px a thousand images already take
# over 3 GB as float32 arrays.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512
# What `backbones.speech_embedding` takes; wav folders are resampled to it.
AUDIO_SAMPLE_RATE = 16000
# Mel frames between the speech embedding's windows: 4 (40 ms), the speech
# benchmark's recipe (`benchmarks/speech_commands.py`), not the base's 8.
SPEECH_WINDOW_STRIDE = 4


def is_audio_folder(path):
    """Whether `path` is a folder whose class sub-folders hold `.wav` files."""
    if not os.path.isdir(path):
        return False
    for name in os.listdir(path):
        folder = os.path.join(path, name)
        if not name.startswith(".") and os.path.isdir(folder) and any(
            f.lower().endswith(".wav") for f in os.listdir(folder)
        ):
            return True
    return False


# What each built-in base takes, known before it is loaded.
BUILTIN_BASE_MODALITIES = {
    "minilm": "text", "efficientnet_lite0": "image", "speech_embedding": "audio",
}
_BUILTIN_IMAGE_DATA = ("fashion_mnist", "mnist5k", "digits")


def data_modality(value):
    """The kind of a data option's value, from its name or path alone:
    `"text"` (rotten_tomatoes, a .csv/.tsv file), `"audio"` (a folder of
    .wav class folders), `"image"` (the built-in image sets, another
    folder), or None when it is neither."""
    if value == "rotten_tomatoes" or (
        os.path.isfile(value) and value.lower().endswith((".csv", ".tsv"))
    ):
        return "text"
    if value in _BUILTIN_IMAGE_DATA:
        return "image"
    if is_audio_folder(value):
        return "audio"
    if os.path.isdir(value):
        return "image"
    return None


def modality_mismatch(base, base_modality, option, value, modality):
    """The one-line error for a base given data of another kind."""
    return UsageError(
        f"--base {base!r} takes {base_modality} input but {option} "
        f"{value!r} is {modality} data. Allowed: a text base "
        "(minilm, a text preset) with text data, an image base "
        "(efficientnet_lite0, an image model) with image data, "
        "speech_embedding with a folder of .wav files"
    )


def check_base_takes(args, option, value):
    """A built-in `--base` and the kind of `value` (named by `option`),
    compared before anything loads: a CSV given to an image base is refused
    for being text, not for a missing --text-column. (Bases from files are
    checked once loaded, in `load_base`.)"""
    base_modality = BUILTIN_BASE_MODALITIES.get(args.base)
    modality = data_modality(value)
    if base_modality and modality and modality != base_modality:
        raise modality_mismatch(args.base, base_modality, option, value, modality)


def check_base_and_data(args):
    """Checks `--base` and `--data` name something, before anything loads."""
    if args.base not in BUILTIN_BASES:
        if not os.path.exists(args.base):
            raise UsageError(
                f"--base {args.base!r} is neither a built-in base nor an existing "
                f"path. Allowed: {', '.join(BUILTIN_BASES)}, a .keras file or a "
                "keras-hub preset folder"
            )
        if os.path.isfile(args.base) and not args.base.endswith(".keras"):
            raise UsageError(
                f"--base {args.base!r} is a file but not a .keras model. Allowed: "
                f"{', '.join(BUILTIN_BASES)}, a .keras file or a keras-hub preset folder"
            )
    if args.data not in BUILTIN_DATA:
        if not os.path.exists(args.data):
            raise UsageError(
                f"--data {args.data!r} is neither a built-in dataset nor an "
                f"existing path. Allowed: {', '.join(BUILTIN_DATA)}, a folder of "
                "images or .wav files with one sub-folder per class, or a .csv file"
            )
        if os.path.isfile(args.data) and not args.data.lower().endswith((".csv", ".tsv")):
            raise UsageError(
                f"--data {args.data!r} is a file but not a .csv/.tsv file. "
                f"Allowed: {', '.join(BUILTIN_DATA)}, a folder of images with one "
                "sub-folder per class, or a .csv file"
            )


def _take(option, x, y, n, available_name):
    if n is None:
        return x, y
    if n > len(y):
        raise UsageError(
            f"{option} {n} is more than the {len(y)} {available_name} examples "
            f"available. Allowed: 1 to {len(y)}"
        )
    return x[:n], y[:n]


def load_data(args):
    """Returns `(modality, (x, y), (x_test, y_test), class_names)`."""
    from keras_transfer import datasets

    name = args.data
    n_train, n_test = args.n_train, args.n_test
    # 1 for `evaluate`: a trained model can be scored on one class's data.
    min_classes = getattr(args, "min_classes", 2)
    if name in DEFAULT_SIZES:
        default_train, default_test = DEFAULT_SIZES[name]
        n_train = default_train if n_train is None else n_train
        n_test = default_test if n_test is None else n_test
    try:
        if name == "rotten_tomatoes":
            train, test = datasets.load_rotten_tomatoes(
                "sentiment", n_train=n_train, n_test=n_test, seed=args.seed
            )
            classes = datasets.ROTTEN_TOMATOES_CLASSES["sentiment"]
            return "text", train, test, classes
        if name == "fashion_mnist":
            train, test = datasets.load_fashion_mnist(
                n_train=n_train, n_test=n_test, seed=args.seed
            )
            return "image", train, test, datasets.FASHION_MNIST_CLASSES
        if name in ("mnist5k", "digits"):
            loader = datasets.load_mnist5k if name == "mnist5k" else datasets.load_digits
            train, test = loader(test_fraction=args.test_fraction, seed=args.seed)
            if name == "digits":  # counts in [0, 16] -> pixel values
                train = (train[0] * (255.0 / 16.0), train[1])
                test = (test[0] * (255.0 / 16.0), test[1])
            train = _take("--n-train", *train, n_train, "training")
            test = _take("--n-test", *test, n_test, "held-out")
            return "image", train, test, tuple(str(i) for i in range(10))
        if is_audio_folder(name):
            train, test, classes = datasets.load_audio_folder(
                name, sample_rate=AUDIO_SAMPLE_RATE,
                test_fraction=args.test_fraction, seed=args.seed,
                min_classes=min_classes,
            )
            # One length for all clips (silence at the end), so the model
            # sees train and held-out clips alike; `fit` saves it.
            length = max(len(c) for c in train[0] + test[0])
            train = (datasets.pad_clips(train[0], length), train[1])
            test = (datasets.pad_clips(test[0], length) if test[0] else
                    train[0][:0], test[1])
            modality = "audio"
        elif os.path.isdir(name):
            size = args.image_size or 224
            train, test, classes = datasets.load_image_folder(
                name, image_size=(size, size), test_fraction=args.test_fraction,
                seed=args.seed, min_classes=min_classes,
            )
            modality = "image"
        else:
            delimiter = "\t" if name.lower().endswith(".tsv") else ","
            train, test, classes = datasets.load_text_csv(
                name, text_column=args.text_column, label_column=args.label_column,
                test_fraction=args.test_fraction, seed=args.seed,
                delimiter=delimiter, encoding=args.encoding,
                on_bad_lines=args.on_bad_lines, min_classes=min_classes,
            )
            modality = "text"
    except UsageError:
        raise
    except (ValueError, FileNotFoundError, ImportError, OSError) as e:
        raise UsageError(f"--data {name!r}: {_args.cli_spelling(e)}")
    train = _take("--n-train", *train, n_train, "training")
    test = _take("--n-test", *test, n_test, "held-out")
    if len(test[1]) == 0:
        raise UsageError(
            f"--data {name!r} leaves no held-out examples with --test-fraction "
            f"{args.test_fraction}. Allowed: more data or a larger --test-fraction"
        )
    return modality, train, test, tuple(classes)


def to_rgb(x, size):
    """Grey or RGB images -> float32 RGB arrays of `size` x `size`."""
    import numpy as np

    from keras_transfer.datasets import resize_like_files

    x = np.asarray(x)
    if x.ndim == 3:
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.shape[1:3] != (size, size):
        # The resizing `load_image_folder` and the saved model use for files.
        x = resize_like_files(x, (size, size))
    return np.asarray(x, dtype="float32")


def load_base(args, data_modality):
    from keras_transfer.backbones import load_base as load

    kwargs = {}
    if args.base == "minilm":
        kwargs["sequence_length"] = args.sequence_length
    elif args.base == "efficientnet_lite0":
        size = args.image_size or DEFAULT_IMAGE_SIZE
        kwargs["input_shape"] = (size, size, 3)
    elif args.base == "speech_embedding":
        kwargs["window_stride"] = SPEECH_WINDOW_STRIDE
    elif os.path.isdir(args.base):
        kwargs["sequence_length"] = args.sequence_length
    try:
        if os.path.isfile(args.base):
            base = load_keras_file(args, data_modality)
        else:
            base = load(args.base, **kwargs)
    except (ValueError, ImportError, OSError) as e:
        raise UsageError(f"--base {args.base!r}: {_args.cli_spelling(e)}")
    if base.modality != data_modality:
        raise modality_mismatch(args.base, base.modality, "--data", args.data, data_modality)
    return base


def image_size_of(args, base):
    """The square image size the base takes (checked against `--image-size`)."""
    if base.image_size is not None:
        height, width = base.image_size
        if args.image_size is not None and args.image_size != height:
            raise UsageError(
                f"--image-size {args.image_size} does not match the {height}x"
                f"{width} input of --base {args.base!r}. Allowed: {height}, or "
                "leave it out"
            )
        return height
    return args.image_size or DEFAULT_IMAGE_SIZE


def prepare_inputs(args, base, x):
    """Raw examples -> what `base.model` takes (token arrays or RGB images)."""
    import numpy as np

    if base.modality == "audio":
        return np.asarray(x, dtype="float32")
    if base.modality == "text":
        inputs = base.preprocessor(np.asarray(x, dtype=object).astype(str))
        return {k: np.asarray(v) for k, v in inputs.items()}
    return to_rgb(x, image_size_of(args, base))


def load_keras_file(args, data_modality):
    """`--base` a `.keras` file: a Functional model, or a Sequential one.

    A Sequential model built with `keras.Input` (or `build`) keeps its input
    shape; one that was never built takes the shape of the data: square RGB
    images of `--image-size` (default 224 for image folders, 96 for the
    built-in datasets). Either is wrapped in a Functional model with that
    input, so every strategy sees defined inputs. Anything else (a file
    that is not a Keras model, a layer, a subclassed model without inputs,
    text models without a tokenizer, outputs a head cannot take) is a
    one-line `UsageError`.
    """
    import keras

    from keras_transfer.backbones import Base
    from keras_transfer.backbones.base import _image_size
    from keras_transfer.backbones.base import _modality

    path = args.base
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 -- a zip, JSON or class error
        message = " ".join(str(e).split())[:300]
        raise UsageError(
            f"--base {path!r} could not be loaded as a Keras model "
            f"({type(e).__name__}: {message}). Allowed: a .keras file saved by "
            "model.save(), holding a Functional or Sequential model"
        )
    if not isinstance(model, keras.Model):
        raise UsageError(
            f"--base {path!r} holds a {type(model).__name__}, not a model. "
            "Allowed: a .keras file holding a Functional or Sequential model"
        )
    if isinstance(model, keras.Sequential):
        try:
            inputs = model.inputs[0]
            shape = tuple(inputs.shape[1:])
        except (ValueError, AttributeError, IndexError):
            if data_modality != "image":
                raise UsageError(
                    f"--base {path!r} is a Sequential model without an input "
                    f"shape, and {data_modality} data cannot give it one. "
                    "Allowed: a Sequential model built with keras.Input, or "
                    "image data"
                )
            size = args.image_size or (224 if os.path.isdir(args.data) else DEFAULT_IMAGE_SIZE)
            shape = (size, size, 3)
        inputs = keras.Input(shape, name="images" if len(shape) == 3 else None)
        try:
            outputs = model(inputs)
        except Exception as e:  # noqa: BLE001
            message = " ".join(str(e).split())[:300]
            raise UsageError(
                f"--base {path!r}: its Sequential model cannot take inputs of "
                f"shape {(None,) + shape} ({message}). Allowed: a model that "
                "takes the data's inputs (RGB images for image data)"
            )
        model = keras.Model(inputs, outputs, name=f"{model.name}_base")
    else:
        try:
            model.input
        except (ValueError, AttributeError):
            raise UsageError(
                f"--base {path!r} holds a subclassed model "
                f"({type(model).__name__}) without defined inputs. Allowed: "
                "a Functional or Sequential model, or a keras-hub preset folder"
            )
    modality = _modality(model)
    if modality == "text":
        raise UsageError(
            f"--base {path!r} takes token ids but a .keras file carries no "
            "tokenizer. Allowed: a keras-hub preset folder (with its "
            "tokenizer) for text, or 'minilm'"
        )
    if isinstance(model.output, (list, tuple, dict)) or len(model.output.shape) not in (2, 3, 4):
        raise UsageError(
            f"--base {path!r} outputs {keras.tree.map_structure(lambda t: t.shape, model.output)}; "
            "a classifier head needs one tensor of shape (batch, features), "
            "(batch, steps, features) or (batch, height, width, channels). "
            "Allowed: a model with one such output"
        )
    return Base(model, modality, None, _image_size(model), path)
