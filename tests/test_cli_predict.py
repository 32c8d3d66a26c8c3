"""Using a model saved by `keras-transfer fit`: raw inputs, the serving
export, `predict` and `evaluate` (issue 18 parts 2-3, issue 17 part 3).

Each modality is fitted once per module (tiny data, given settings, so no
search) and shared by the tests below.
"""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_transfer import cli
from keras_transfer import datasets
from keras_transfer.cli import _inputs
from keras_transfer.cli import evaluate as evaluate_command
from keras_transfer.models import RawInputClassifier
from tests.test_cli import fashion_folder
from tests.test_cli import reviews_csv
from tests.testing import FSDD_PATH
from tests.testing import REPO_ROOT
from tests.testing import require_data

# Imports of keras_transfer fail in this subprocess (the package is
# installed editable, so it is importable anywhere unless blocked).
WITHOUT_KERAS_TRANSFER = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "keras_transfer":
            raise ImportError("keras_transfer is blocked in this test")
sys.meta_path.insert(0, Blocker())
import json
import numpy as np
import tensorflow as tf
import keras
serving, keras_file, inputs_file, out_file = sys.argv[1:]
inputs = dict(np.load(inputs_file))
info = json.load(open(serving + "/keras_transfer.json"))
loaded = tf.saved_model.load(serving)
names = [spec["name"] for spec in info["inputs"]]
out = loaded.serve(inputs[names[0]] if len(names) == 1 else {n: inputs[n] for n in names})
np.save(out_file, np.asarray(out))
try:
    keras.models.load_model(keras_file)
    print("LOADED")
except Exception as e:
    print("ERROR", type(e).__name__, len(str(e)))
    print(str(e))
print("IMPORTED", "keras_transfer" in sys.modules and sys.modules["keras_transfer"] is not None)
"""


def main(*args):
    return cli.main(list(args))


def fit(logdir, *args):
    code = main("fit", "--logdir", str(logdir), "--run-name", "run", "--verbose", "0", *args)
    assert code == 0
    with open(os.path.join(logdir, "run", "results.json")) as f:
        return json.load(f)


def the_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("keras-transfer: error: ")
    return err[0]


def check_serving_export(tmp_path, results, inputs):
    """The SavedModel, loaded where keras_transfer cannot be imported,
    predicts what the saved `.keras` model predicts; that `.keras` file
    fails to load there with a short error naming keras_transfer."""
    model = keras.models.load_model(results["model"])
    expected = model.predict(inputs, verbose=0)
    arrays = inputs if isinstance(inputs, dict) else {model.classifier.input.name: inputs}
    np.savez(tmp_path / "inputs.npz", **arrays)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_KERAS_TRANSFER, results["serving"], results["model"],
         str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(served, expected, atol=1e-5)
    lines = result.stdout.splitlines()
    assert "IMPORTED False" in lines
    error = result.stdout.split("\nIMPORTED")[0]
    # Was a 150,000-character message (the whole network's config).
    assert error.startswith("ERROR TypeError"), error[:500]
    assert len(error) < 2000, len(error)
    assert "import keras_transfer" in error
    return float(np.max(np.abs(served - expected)))


# ---------------------------------------------------------------- images


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("image")
    folder = fashion_folder(str(root / "images"), per_class=8)
    results = fit(
        root / "logs", "--base", "efficientnet_lite0", "--data", folder,
        "--image-size", "32", "--epochs", "3", "--learning-rate", "0.01", "--l2", "0.001",
        "--test-fraction", "0.25",
    )
    return root, folder, results


def test_saved_image_model_reads_raw_images(image_run):
    _, folder, results = image_run
    model = keras.models.load_model(results["model"])
    assert isinstance(model, RawInputClassifier)
    assert model.class_names == results["classes"] == ["Sneaker", "T-shirt_top"]
    assert (model.modality, model.image_size) == ("image", (32, 32))
    # Files (28x28 PNGs) -> decoded and resized to 32x32 as the folder
    # loader does for fit.
    files = sorted(
        os.path.join(folder, c, f) for c in results["classes"]
        for f in os.listdir(os.path.join(folder, c))
    )
    from_files = model.predict(files, verbose=0)
    preprocessed = model.classifier.predict(
        np.stack([_read_png(f, 32) for f in files]), verbose=0
    )
    np.testing.assert_allclose(from_files, preprocessed, atol=1e-6)
    # Grey arrays at their own size -> RGB resized as fit resizes arrays.
    grey = np.stack([np.asarray(_open(f).convert("L")) for f in files[:4]])
    np.testing.assert_allclose(
        model.predict(grey, verbose=0),
        model.classifier.predict(_inputs.to_rgb(grey, 32), verbose=0),
        atol=1e-6,
    )
    np.testing.assert_allclose(from_files.sum(-1), 1.0, atol=1e-5)


def _open(path):
    from PIL import Image

    return Image.open(path)


def _read_png(path, size):
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), "float32")


def test_predict_command_on_image_files(image_run, capsys):
    root, folder, results = image_run
    model = keras.models.load_model(results["model"])
    one = os.path.join(folder, "Sneaker", "0.png")
    for output in ("p.csv", "p.json"):
        path = str(root / output)
        assert main("predict", results["model"], folder, one, "--output", path) == 0
        files = sorted(
            os.path.join(folder, c, f) for c in ("Sneaker", "T-shirt_top")
            for f in sorted(os.listdir(os.path.join(folder, c)))
        ) + [one]
        expected = model.predict(files, verbose=0)
        if output.endswith(".json"):
            with open(path) as f:
                rows = json.load(f)
            got = np.array([[r["probabilities"][c] for c in model.class_names] for r in rows])
        else:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            got = np.array([[float(r[f"p_{c}"]) for c in model.class_names] for r in rows])
        assert [r["input"] for r in rows] == files
        assert [r["label"] for r in rows] == [model.class_names[i] for i in expected.argmax(-1)]
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # An existing --output is kept unless --overwrite.
    assert main("predict", results["model"], one, "--output", str(root / "p.csv")) == 2
    assert "--overwrite" in the_error(capsys)
    assert main("predict", results["model"], one) == 0
    out = capsys.readouterr().out
    assert "probability" in out and one in out


def test_image_serving_export_without_keras_transfer(image_run, tmp_path):
    _, folder, results = image_run
    (x, _), _, _ = datasets.load_image_folder(folder, (32, 32), test_fraction=0.25)
    difference = check_serving_export(tmp_path, results, x.astype("float32"))
    assert difference < 1e-5


def test_evaluate_reproduces_fit_held_out_accuracy(image_run, capsys):
    root, folder, results = image_run
    logdir = str(root / "eval")
    args = ("evaluate", results["model"], "--data", folder, "--test-fraction", "0.25",
            "--logdir", logdir, "--run-name", "e")
    assert main(*args) == 0
    run_dir = os.path.join(logdir, "e")
    with open(os.path.join(run_dir, "evaluation.json")) as f:
        evaluation = json.load(f)
    assert evaluation["n_examples"] == results["n_test"] == 4
    assert evaluation["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    confusion = np.array(evaluation["confusion_matrix"])
    assert confusion.sum() == 4 and confusion.sum(1).tolist() == evaluation["support"]
    assert os.path.getsize(os.path.join(run_dir, "confusion_matrix.png")) > 0
    out = capsys.readouterr().out
    assert f"accuracy  {results['test_accuracy']:.4f}" in out
    # The same run name again keeps the earlier results unless --overwrite.
    assert main(*args) == 2
    assert "--overwrite" in the_error(capsys)
    assert main(*args, "--split", "all", "--overwrite") == 0
    with open(os.path.join(run_dir, "evaluation.json")) as f:
        assert json.load(f)["n_examples"] == 16


def test_evaluate_on_data_of_a_single_class(image_run, capsys, tmp_path):
    # Regression: evaluate refused labelled data of one class (the loaders
    # ask for two, as training does). Scored over the model's classes.
    import shutil

    _, folder, results = image_run
    one = tmp_path / "sneakers"
    shutil.copytree(os.path.join(folder, "Sneaker"), one / "Sneaker")
    logdir = str(tmp_path / "eval")
    assert main("evaluate", results["model"], "--data", str(one), "--split", "all",
                "--logdir", logdir, "--run-name", "one") == 0
    with open(os.path.join(logdir, "one", "evaluation.json")) as f:
        evaluation = json.load(f)
    model = keras.models.load_model(results["model"])
    files = sorted(str(p) for p in (one / "Sneaker").iterdir())
    predicted = model.predict(files, verbose=0).argmax(-1)
    sneaker = model.class_names.index("Sneaker")
    assert evaluation["classes"] == model.class_names
    assert evaluation["n_examples"] == len(files) == 8
    assert evaluation["accuracy"] == pytest.approx(float(np.mean(predicted == sneaker)))
    confusion = np.zeros((2, 2), int)
    np.add.at(confusion, (sneaker, predicted), 1)
    assert evaluation["confusion_matrix"] == confusion.tolist()
    assert evaluation["support"][sneaker] == 8 and evaluation["support"][1 - sneaker] == 0
    assert evaluation["recall"][1 - sneaker] is None  # no example of that class


def test_metrics_against_a_hand_count():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 1, 1])
    m = evaluate_command.metrics(y_true, y_pred, 4)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert m["precision"] == [1.0, pytest.approx(2 / 4), None, None]
    assert m["recall"] == [pytest.approx(2 / 3), 1.0, 0.0, None]
    assert m["support"] == [3, 2, 1, 0]


def test_bad_input_to_predict_and_evaluate(image_run, capsys, tmp_path):
    root, folder, results = image_run
    model = results["model"]
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip")
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"RIFF")
    csv_path = reviews_csv(str(tmp_path / "reviews.csv"), n=10)
    cases = (
        (("predict", str(tmp_path / "none.keras"), "a"), "MODEL", "does not exist"),
        (("predict", str(garbage), "a"), "MODEL", "cannot be read"),
        (("predict", csv_path, "a"), "MODEL", "not a .keras file"),
        (("predict", model, "a gripping film"), "INPUT 'a gripping film'", "takes image"),
        (("predict", model, str(wav)), f"INPUT {str(wav)!r}", "is audio but the model takes image"),
        (("predict", model, str(empty)), f"INPUT {str(empty)!r}", "no image files"),
        (("predict", model, str(broken)), "broken.png", "Allowed"),
        (("predict", model, folder, "--output", str(tmp_path / "p.txt")), "--output", ".csv or .json"),
        (("evaluate", model, "--data", csv_path), f"--data {csv_path!r}", "takes image"),
        (("evaluate", model, "--data", "digits"), "--data 'digits'", "does not know"),
        (("evaluate", model, "--data", str(empty)), f"--data {str(empty)!r}", "one per class"),
        (("evaluate", model, "--data", "digits", "--split", "all"), "--split all", "Allowed"),
    )
    for args, named, allowed in cases:
        assert main(*args) == 2, args
        line = the_error(capsys)
        assert named in line and allowed in line, (args, line)
    assert not os.path.exists(tmp_path / "p.txt")
    assert sorted(os.listdir(tmp_path)) == ["broken.png", "empty", "garbage.keras",
                                           "reviews.csv", "x.wav"]


def test_plain_keras_model_is_refused(tmp_path, capsys):
    inputs = keras.Input((4,))
    path = str(tmp_path / "plain.keras")
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)
    assert main("predict", path, "x") == 2
    line = the_error(capsys)
    assert "MODEL" in line and "RawInputClassifier" in line


# ------------------------------------------------------------------ text


@pytest.mark.large
def test_text_model_predicts_from_strings(tmp_path, capsys):
    path = reviews_csv(str(tmp_path / "reviews.csv"), n=24)
    results = fit(
        tmp_path / "logs", "--data", path, "--text-column", "review", "--label-column",
        "verdict", "--sequence-length", "16", "--epochs", "2", "--learning-rate", "0.01",
        "--l2", "0.001", "--test-fraction", "0.25",
    )
    model = keras.models.load_model(results["model"])
    assert model.class_names == ["fresh", "rotten"] and model.modality == "text"
    texts = ["a gripping, beautifully acted film", "a dull and lifeless mess", "ok"]
    from keras_transfer.backbones import minilm_preprocessor

    tokens = minilm_preprocessor(16)(np.array(texts))
    tokens = {k: np.asarray(v) for k, v in tokens.items()}
    probabilities = model.predict(texts, verbose=0)
    np.testing.assert_allclose(
        probabilities, model.classifier.predict(tokens, verbose=0), atol=1e-6
    )
    # A .txt file, one example a line, through the command.
    txt = tmp_path / "texts.txt"
    txt.write_text("\n".join(texts) + "\n\n")
    out = str(tmp_path / "p.json")
    assert main("predict", results["model"], str(txt), "--output", out) == 0
    with open(out) as f:
        rows = json.load(f)
    got = np.array([[r["probabilities"][c] for c in model.class_names] for r in rows])
    np.testing.assert_allclose(got, probabilities, atol=1e-6)
    out = str(tmp_path / "p.csv")
    assert main("predict", results["model"], path, "--text-column", "review", "--output", out) == 0
    with open(out, newline="") as f:
        assert [r["input"] for r in csv.DictReader(f)] == [f"{path}:{i}" for i in range(1, 25)]
    # A CSV without the named column; an image to a text model.
    assert main("predict", results["model"], path) == 2
    line = the_error(capsys)
    assert "--text-column 'text'" in line and "review" in line
    png = tmp_path / "a.png"
    png.write_bytes(b"x")
    assert main("predict", results["model"], str(png)) == 2
    assert "is image but the model takes text" in the_error(capsys)
    check_serving_export(tmp_path, results, tokens)


# ----------------------------------------------------------------- audio


def speech_folder(root, per_class=3):
    """Spoken digits 'zero' and 'one' as a folder of wavs: some resampled
    to 22.05 kHz stereo, the rest the original 8 kHz mono."""
    from scipy import signal
    from scipy.io import wavfile

    require_data("fsdd")
    speakers = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    for digit, name in ((0, "zero"), (1, "one")):
        os.makedirs(os.path.join(root, name))
        for i, speaker in enumerate(speakers[:per_class]):
            rate, audio = wavfile.read(os.path.join(FSDD_PATH, f"{digit}_{speaker}_0.wav"))
            if i % 2:
                audio = signal.resample_poly(audio.astype("float64"), 441, 160)
                audio = np.stack([audio, 0.5 * audio], axis=1).astype("int16")
                rate = 22050
            wavfile.write(os.path.join(root, name, f"{speaker}.wav"), rate, audio)
    return root


@pytest.mark.large
def test_audio_folder_fit_predict_and_serving(tmp_path, capsys):
    folder = speech_folder(str(tmp_path / "speech"))
    results = fit(
        tmp_path / "logs", "--base", "speech_embedding", "--data", folder, "--epochs", "5",
        "--learning-rate", "0.01", "--l2", "0.001", "--test-fraction", "0.34",
    )
    assert results["classes"] == ["one", "zero"]
    assert (results["n_train"], results["n_test"]) == (4, 2)
    model = keras.models.load_model(results["model"])
    assert (model.modality, model.sample_rate) == ("audio", 16000)
    wav = os.path.join(folder, "zero", "jackson.wav")  # 22.05 kHz stereo
    clip = datasets.read_wav(wav, 16000)
    assert len(clip) <= model.clip_length
    padded = datasets.pad_clips([clip], model.clip_length)
    expected = model.classifier.predict(padded, verbose=0)
    np.testing.assert_allclose(model.predict([clip], verbose=0), expected, atol=1e-6)
    out = str(tmp_path / "p.json")
    assert main("predict", results["model"], wav, "--output", out) == 0
    with open(out) as f:
        (row,) = json.load(f)
    np.testing.assert_allclose(
        [row["probabilities"][c] for c in model.class_names], expected[0], atol=1e-6
    )
    # A longer clip runs at its own length (not cut).
    long_clip = np.concatenate([clip, np.zeros(model.clip_length, "float32"), clip])
    np.testing.assert_allclose(
        model.predict([long_clip, clip], verbose=0)[0],
        model.classifier.predict(long_clip[None], verbose=0)[0], atol=1e-6,
    )
    # A wav that cannot be decoded is named; text to an audio model refused.
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVE")
    assert main("predict", results["model"], str(bad)) == 2
    assert "bad.wav" in the_error(capsys)
    assert main("predict", results["model"], "hello") == 2
    assert "takes audio" in the_error(capsys)
    # evaluate reads the folder as fit did and finds fit's held-out accuracy.
    assert main("evaluate", results["model"], "--data", folder, "--test-fraction", "0.34",
                "--logdir", str(tmp_path / "eval"), "--run-name", "e") == 0
    with open(tmp_path / "eval" / "e" / "evaluation.json") as f:
        evaluation = json.load(f)
    assert evaluation["n_examples"] == 2
    assert evaluation["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    check_serving_export(tmp_path, results, padded)


def test_audio_head_standardizes_the_embeddings(tmp_path, capsys):
    # Regression: the head trained on the raw speech embeddings (values up
    # to ~70) and, after one epoch at lr 0.01, put p = 1.0 on one class. Now
    # it standardises them (the speech benchmark's recipe: windows every 4
    # frames, per-feature mean and variance of the training features); the
    # statistics are weights of the saved model, so predict applies them.
    from keras_transfer.backbones import speech_embedding

    folder = speech_folder(str(tmp_path / "speech"))
    results = fit(
        tmp_path / "logs", "--base", "speech_embedding", "--data", folder, "--epochs", "1",
        "--test-fraction", "0.34",
    )
    assert results["chosen"]["standardized_features"] is True
    model = keras.models.load_model(results["model"])  # saved and loaded
    # The training clips as fit read them, through the base fit used.
    (x, _), (x_test, _), _ = datasets.load_audio_folder(folder, 16000, test_fraction=0.34)
    length = max(len(c) for c in x + x_test)
    assert model.clip_length == length
    base = speech_embedding(window_stride=_inputs.SPEECH_WINDOW_STRIDE)
    features = base.predict(datasets.pad_clips(x, length), verbose=0)
    assert np.abs(features).max() > 10  # unscaled, as the issue saw
    norm = model.classifier.get_layer("head").get_layer("standardize")
    mean, variance = (keras.ops.convert_to_numpy(v).reshape(-1) for v in (norm.mean, norm.variance))
    np.testing.assert_allclose(mean, features.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(variance, features.var(0), rtol=1e-3, atol=1e-4)
    # predict on raw clips = the classifier on preprocessed arrays = softmax
    # of the standardised features through the head's Dense (NumPy).
    padded = datasets.pad_clips(x_test, length)
    raw = model.predict(x_test, verbose=0)
    np.testing.assert_allclose(raw, model.classifier.predict(padded, verbose=0), atol=1e-6)
    kernel, bias = model.classifier.get_layer("head").get_layer("predictions").get_weights()
    z = (base.predict(padded, verbose=0) - mean) / np.sqrt(variance) @ kernel + bias
    expected = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(raw, expected / expected.sum(-1, keepdims=True), atol=1e-4)
    assert raw.max() < 0.999  # one epoch does not saturate the head


def test_a_failed_serving_export_keeps_the_model(tmp_path, monkeypatch, capsys):
    # Regression: on JAX the SavedModel export of the speech base failed
    # after training and nothing was saved (no model.keras, a traceback).
    from keras_transfer.cli import _serving

    def failing_export(model, path):
        os.makedirs(path)  # a half-written export is removed
        raise RuntimeError("cannot convert this layer")

    monkeypatch.setattr(_serving, "export", failing_export)
    folder = fashion_folder(str(tmp_path / "images"), per_class=4)
    results = fit(
        tmp_path / "logs", "--base", "efficientnet_lite0", "--data", folder,
        "--image-size", "32", "--epochs", "1", "--test-fraction", "0.25",
    )
    assert results["serving"] is None
    assert results["serving_error"] == "RuntimeError: cannot convert this layer"
    assert sorted(os.listdir(tmp_path / "logs" / "run")) == [
        "model.keras", "results.json", "train", "validation"
    ]
    model = keras.models.load_model(results["model"])
    assert model.class_names == results["classes"]
    assert "not written (RuntimeError" in capsys.readouterr().out


def test_audio_options_that_nothing_reads_are_refused(tmp_path, capsys):
    folder = tmp_path / "speech"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.wav").write_bytes(b"")
    code = main("fit", "--logdir", str(tmp_path / "logs"), "--base", "speech_embedding",
                "--data", str(folder), "--image-size", "64")
    assert code == 2
    assert "--image-size 64" in the_error(capsys)


def test_readme_examples_parse():
    from tests.test_readme import readme_blocks

    parser = cli.build_parser()
    seen = set()
    for line in readme_blocks("bash")[1].splitlines():
        for command in ("predict", "evaluate"):
            if line.startswith(f"keras-transfer {command} "):
                import shlex

                assert parser.parse_args(shlex.split(line.split("#")[0])[1:]).command == command
                seen.add(command)
    assert seen == {"predict", "evaluate"}


def test_help_is_fast_and_has_examples():
    from tests.test_cli import HELP_WITHOUT_PARENT

    for command in ("predict", "evaluate"):
        result = subprocess.run(
            [sys.executable, "-c", HELP_WITHOUT_PARENT, command, "--help"],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "EXIT 0" in result.stdout and "HEAVY []" in result.stdout
        assert f"examples:\n  keras-transfer {command} " in result.stdout


def test_adapt_standardizes_audio_embeddings(tmp_path):
    # Regression: `adapt` trained its bottleneck on the raw speech
    # embeddings (values up to ~70), which `fit` no longer does. Now the
    # extractor starts with a `Normalization` adapted to the source features.
    from keras_transfer.backbones import speech_embedding

    source = speech_folder(str(tmp_path / "source"))
    target = speech_folder(str(tmp_path / "target"), per_class=2)
    code = main(
        "adapt", "--logdir", str(tmp_path / "logs"), "--run-name", "run", "--verbose", "0",
        "--base", "speech_embedding", "--source", source, "--target", target,
        "--method", "mmd", "--epochs", "1", "--bottleneck", "8",
    )
    assert code == 0
    with open(os.path.join(tmp_path, "logs", "run", "results.json")) as f:
        results = json.load(f)
    assert results["standardized_features"] is True
    model = keras.models.load_model(results["model"])
    norm = model.classifier.get_layer("head").get_layer("feature_extractor").get_layer("standardize")
    (x, _), (x_test, _), _ = datasets.load_audio_folder(source, 16000, test_fraction=0.2, seed=0)
    length = model.clip_length
    base = speech_embedding(window_stride=_inputs.SPEECH_WINDOW_STRIDE)
    features = base.predict(datasets.pad_clips(x, length), verbose=0)
    features = features.reshape(len(features), -1, features.shape[-1]).mean(1)
    mean = keras.ops.convert_to_numpy(norm.mean).reshape(-1)
    np.testing.assert_allclose(mean, features.mean(0), rtol=1e-3, atol=1e-3)
