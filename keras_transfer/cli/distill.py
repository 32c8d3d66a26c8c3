"""`keras-transfer distill`: a smaller student learns from a trained teacher.

The teacher is a `.keras` classifier (e.g. the `model.keras` that
`keras-transfer fit` saves) taking images; the data is read as `fit --data`
reads it, resized to the teacher's input size, and split by
`--test-fraction` (or `--n-test`). The teacher runs once over the training
examples and its outputs are cached next to them
(`Distiller.cache_teacher_outputs`), so each epoch trains the student only.

The student is `--student default`, a small CNN (documented in
`default_student`), or a `.keras` model with the teacher's input shape and
one output per class. It is trained twice from the same initial weights,
with the same epochs, batches and optimizer: on the labels alone
(`student alone`), and by distillation (`keras_transfer.models.Distiller`:
`alpha * T^2 KL(teacher_T || student_T) + (1 - alpha) CE(labels, student)`,
Hinton et al., 2015). The teacher's, the student-alone and the distilled
accuracy on the held-out examples are printed and written to `results.json`
with the distilled student as `model.keras` (returning probabilities), in
`<logdir>/<run-name>/`.

Keras and TensorFlow are imported in `run`, not when the parser is built.
"""

import argparse
import os
import time

from keras_transfer.cli import _args
from keras_transfer.cli import _domains
from keras_transfer.cli import _inputs
from keras_transfer.cli import _serving
from keras_transfer.cli._args import UsageError

NAME = "distill"

EXAMPLES = """\
examples:
  keras-transfer fit --base efficientnet_lite0 --data fashion_mnist --run-name teacher
  keras-transfer distill --teacher tensorboard_logs/teacher/model.keras --data fashion_mnist
  keras-transfer distill --teacher teacher.keras --data path/to/images/ --student small.keras --epochs 20
"""


def add_parser(commands):
    """Adds `distill` and its options to the `commands` subparsers."""
    parser = commands.add_parser(
        NAME,
        help="train a smaller student from a trained teacher model",
        description=(
            "Knowledge distillation: train a small student on the teacher's "
            "cached outputs and the labels, and compare it on held-out data "
            "with the teacher and with the same student trained on the labels "
            "alone. Image classifiers (a .keras file taking images)."
        ),
        epilog=EXAMPLES,
        formatter_class=_args.HelpFormatter,
    )
    parser.add_argument(
        "--teacher", required=True,
        help="the trained teacher: a .keras image classifier, e.g. the "
        "model.keras that `keras-transfer fit` saves",
    )
    parser.add_argument(
        "--data", required=True,
        help="the labelled data: " + _domains.ALLOWED_DATA.replace(
            ", or a .csv file with text and label columns", "") + " (images)",
    )
    parser.add_argument(
        "--student", default="default",
        help="'default' (Rescaling -> 3 stride-2 Conv 32/64/128 + ReLU -> global "
        "average pooling -> Dense, about 94k weights) or a .keras model with the "
        "teacher's input shape and one output per class",
    )
    parser.add_argument(
        "--alpha", type=_args.float_in(0.0, 1.0, low_inclusive=True), default=0.9,
        help="weight of the distillation term; 1 - alpha weights the label loss",
    )
    parser.add_argument(
        "--temperature", type=_args.float_in(0.0, 100.0), default=4.0,
        help="softmax temperature T of the distillation term",
    )
    parser.add_argument("--epochs", type=_args.int_in(1, 10_000), default=10)
    parser.add_argument("--batch-size", type=_args.int_in(1, 65_536), default=32)
    parser.add_argument(
        "--learning-rate", type=_args.float_in(0.0, 10.0), default=1e-3,
        help="Adam learning rate of the student",
    )
    parser.add_argument(
        "--n-train", type=_args.int_in(1, 10_000_000), default=None,
        help="training examples to use; default 1000 for fashion_mnist, all otherwise",
    )
    parser.add_argument(
        "--n-test", type=_args.int_in(1, 10_000_000), default=None,
        help="held-out examples; default 1000 for fashion_mnist, all otherwise",
    )
    parser.add_argument(
        "--test-fraction", type=_args.fraction, default=0.2,
        help="share of each class held out, for image folders, mnist5k and digits",
    )
    _domains.add_run_arguments(parser, saves_model=True)
    return parser


def default_student(input_shape, num_classes):
    """The default student: a small CNN on raw RGB values in [0, 255].

    `Rescaling(1/255) -> Conv2D(32, 3, stride 2, relu) -> Conv2D(64, ...) ->
    Conv2D(128, ...) -> GlobalAveragePooling2D -> Dense(num_classes)`
    (logits), 'same' padding; about 94k weights for 3 channels and 10
    classes.
    """
    import keras

    layers = [keras.Input(input_shape), keras.layers.Rescaling(1.0 / 255.0)]
    for filters in (32, 64, 128):
        layers.append(keras.layers.Conv2D(filters, 3, strides=2, padding="same",
                                          activation="relu"))
    layers += [keras.layers.GlobalAveragePooling2D(),
               keras.layers.Dense(num_classes, name="logits")]
    return keras.Sequential(layers, name="student")


def _check_options(args):
    if args.data not in _inputs.BUILTIN_DATA and os.path.isfile(args.data):
        raise UsageError(
            f"--data {args.data!r} is a file; distill takes image data. Allowed: "
            "mnist5k, digits, fashion_mnist, or a folder of images with one "
            "sub-folder per class"
        )
    if args.data == "rotten_tomatoes":
        raise UsageError(
            "--data 'rotten_tomatoes' is text; distill takes image data. Allowed: "
            "mnist5k, digits, fashion_mnist, or a folder of images with one "
            "sub-folder per class"
        )
    _domains.check_data_option("--data", args.data)
    for option, path in (("--teacher", args.teacher), ("--student", args.student)):
        if option == "--student" and path == "default":
            continue
        if not os.path.isfile(path) or not path.endswith(".keras"):
            what = "does not exist" if not os.path.exists(path) else "is not a .keras file"
            raise UsageError(
                f"{option} {path!r} {what}. Allowed: a model file saved by Keras "
                "(.keras)" + (", or 'default'" if option == "--student" else "")
            )


def run(args, start_time=None):
    """Runs `keras-transfer distill` with parsed `args`; returns the results."""
    start_time = time.time() if start_time is None else start_time
    _check_options(args)
    teacher_name = args.teacher
    if os.path.splitext(os.path.basename(teacher_name))[0] == "model":
        # `fit` saves <run-name>/model.keras: name the run after its folder.
        teacher_name = os.path.dirname(os.path.abspath(teacher_name))
    run_dir, output = _domains.prepare_run(
        args, (teacher_name, args.data, NAME), saves_model=True
    )
    return _domains.run_in_folder(
        run_dir, output, lambda: _run_in(args, run_dir, output, start_time)
    )


def _image_input_shape(option, path, model):
    inputs = model.inputs
    shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else None
    if shape is None or len(shape) != 3 or None in shape or shape[-1] != 3:
        got = [tuple(t.shape) for t in inputs]
        raise UsageError(
            f"{option} {path!r} takes inputs of shape {got}, not images. "
            "Allowed: a model taking RGB images of a fixed size, (None, H, W, 3)"
        )
    return shape


def _outputs_logits(model, probe):
    """Whether `model` returns logits (else probabilities), from how it ends
    or, if that does not say, from its outputs on `probe`."""
    import numpy as np

    from keras_transfer.models._domain import ends_in_linear
    from keras_transfer.models._domain import ends_in_softmax

    if ends_in_softmax(model):
        return False
    if ends_in_linear(model):
        return True
    out = np.asarray(model.predict(probe, verbose=0), dtype="float64")
    return not (out.min() >= 0 and np.allclose(out.sum(-1), 1.0, atol=1e-3))


def _load_data(args, size):
    ns = argparse.Namespace(
        data=args.data, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
        test_fraction=args.test_fraction, image_size=size,
    )
    modality, (x, y), (x_test, y_test), classes = _inputs.load_data(ns)
    domain = _domains.Domain("--data", args.data, modality, x, y, x_test, y_test,
                             tuple(classes))
    _domains.check_class_counts(domain)
    return domain


def _accuracy(model, x, y):
    import numpy as np

    predictions = np.asarray(model.predict(x, batch_size=256, verbose=0)).argmax(-1)
    return float(np.mean(predictions == np.asarray(y)))


def _run_in(args, run_dir, output, start_time):
    import keras
    import numpy as np

    from keras_transfer.models import Distiller

    keras.utils.set_random_seed(args.seed)
    teacher = _domains.load_model_file("--teacher", args.teacher)
    shape = _image_input_shape("--teacher", args.teacher, teacher)
    data = _load_data(args, shape[0])
    x = _inputs.to_rgb(data.x, shape[0])
    x_test = _inputs.to_rgb(data.x_test, shape[0])
    y = np.asarray(data.y, dtype="int64")
    num_classes = len(data.classes)
    width = teacher.outputs[0].shape[-1]
    if width != num_classes:
        raise UsageError(
            f"--teacher {args.teacher!r} scores {width} classes but --data "
            f"{args.data!r} has {num_classes}. Allowed: a teacher trained on "
            "the same classes"
        )
    if shape[0] != shape[1]:
        raise UsageError(
            f"--teacher {args.teacher!r} takes {shape[0]}x{shape[1]} images. "
            "Allowed: a teacher taking square images"
        )

    keras.utils.set_random_seed(args.seed)
    if args.student == "default":
        student = default_student(shape, num_classes)
    else:
        student = _domains.load_model_file("--student", args.student)
        student_shape = tuple(student.inputs[0].shape[1:]) if len(student.inputs) == 1 else None
        student_width = student.outputs[0].shape[-1]
        if student_shape != shape or student_width != num_classes:
            raise UsageError(
                f"--student {args.student!r} takes {student_shape} and scores "
                f"{student_width} classes. Allowed: a model taking the teacher's "
                f"{shape} images and scoring {num_classes} classes"
            )
    probe = x_test[:16]
    teacher_logits = _outputs_logits(teacher, probe)
    student_logits = _outputs_logits(student, probe)
    initial = [w.copy() for w in student.get_weights()]

    # The student alone: same architecture and initial weights, labels only.
    alone = keras.models.clone_model(student)
    alone.set_weights(initial)
    keras.utils.set_random_seed(args.seed)
    alone.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=student_logits),
        metrics=["accuracy"],
    )
    alone.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose,
              callbacks=[keras.callbacks.TensorBoard(os.path.join(run_dir, "student_alone"))])

    distiller = Distiller(
        teacher, student, alpha=args.alpha, temperature=args.temperature,
        teacher_from_logits=teacher_logits, from_logits=student_logits,
    )
    keras.utils.set_random_seed(args.seed)
    distiller.compile(optimizer=keras.optimizers.Adam(args.learning_rate), metrics=["accuracy"])
    cached = distiller.cache_teacher_outputs(x, batch_size=max(args.batch_size, 64))
    history = distiller.fit(
        cached, y, epochs=args.epochs, batch_size=args.batch_size, verbose=args.verbose,
        callbacks=[keras.callbacks.TensorBoard(os.path.join(run_dir, "distilled"))],
    )

    saved = student
    if student_logits:
        inputs = keras.Input(tuple(shape))
        outputs = keras.layers.Softmax(dtype="float32", name="probabilities")(student(inputs))
        saved = keras.Model(inputs, outputs, name="distilled_student")
    # Saved with its class names and image reading, like `fit`'s model, so
    # `predict` and `evaluate` take it.
    saved = _serving.wrap(None, saved, data.classes, "image", args, image_size=shape[:2])
    results = {
        "command": NAME,
        "teacher": args.teacher,
        "data": args.data,
        "student": args.student,
        "classes": list(data.classes),
        "n_train": int(len(y)),
        "n_test": int(len(x_test)),
        "image_size": int(shape[0]),
        "teacher_params": int(teacher.count_params()),
        "student_params": int(student.count_params()),
        "teacher_outputs": "logits" if teacher_logits else "probabilities",
        "teacher_accuracy": _accuracy(teacher, x_test, data.y_test),
        "student_alone_accuracy": _accuracy(alone, x_test, data.y_test),
        "distilled_accuracy": _accuracy(student, x_test, data.y_test),
        "final_epoch": {k: float(v[-1]) for k, v in history.history.items()},
        "logdir": run_dir,
        "model": output,
        "seed": args.seed,
        "settings": _domains.settings_of(args),
    }
    _domains.write_results(
        run_dir, results, start_time, model=saved, output=output,
        check=lambda path: _domains.check_saved(saved, path, probe),
    )
    _print(results)
    return results


def _print(results):
    rows = [
        ("teacher", f"{results['teacher']} ({results['teacher_params']:,} weights, "
                    f"{results['teacher_outputs']})"),
        ("student", f"{results['student']} ({results['student_params']:,} weights)"),
        ("data", f"{results['data']} ({len(results['classes'])} classes, "
                 f"{results['image_size']} px)"),
        ("training examples", f"{results['n_train']:,}"),
        ("held-out examples", f"{results['n_test']:,}"),
        ("alpha, temperature", f"{results['settings']['alpha']:g}, "
                               f"{results['settings']['temperature']:g}"),
        ("epochs", results["settings"]["epochs"]),
        ("teacher accuracy", f"{results['teacher_accuracy']:.4f}"),
        ("student alone", f"{results['student_alone_accuracy']:.4f}"),
        ("distilled student", f"{results['distilled_accuracy']:.4f}"),
        ("wall time", f"{results['wall_time_s']:.1f} s (CPU {results['cpu_time_s']:.1f} s)"),
        ("TensorBoard logs", results["logdir"]),
        ("model", results["model"]),
    ]
    _domains.print_table("keras-transfer distill: results", rows)
