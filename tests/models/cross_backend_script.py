"""Saves the package's models on one backend, resumes them on another.

Run as `KERAS_BACKEND=... python -m tests.models.cross_backend_script
ACTION:DIR ...` with ACTION `save` (build, train one epoch, save) or `resume`
(load, check the outputs, train one more epoch with the schedules, write the
outputs to `DIR/resumed_<backend>.npz`).
"""

import os
import sys

import keras
import numpy as np

from keras_transfer.callbacks import GradientReversalScheduler
from keras_transfer.models import DiscrepancyAlignmentModel
from keras_transfer.models import Distiller
from keras_transfer.models import DomainAdversarialModel
from keras_transfer.models import MultiTaskModel


def _seq(*layers):
    return keras.Sequential([keras.Input((4,)), *layers])


def _data():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(12, 4)).astype("float32")
    xt = (rng.normal(size=(8, 4)) + 0.5).astype("float32")
    ys = rng.integers(0, 3, 12)
    tasks = {"a": rng.integers(-1, 3, 12), "b": rng.integers(0, 2, 12)}
    return xs, xt, ys, tasks


def _build():
    keras.utils.set_random_seed(0)
    dann = DomainAdversarialModel(
        _seq(keras.layers.Dense(6, activation="tanh")),
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)]),
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)]),
    )
    dann.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
    coral = DiscrepancyAlignmentModel(
        _seq(keras.layers.Dense(6, activation="tanh")),
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)]),
        discrepancy="coral",
    )
    coral.compile(optimizer="adam")
    teacher = _seq(keras.layers.Dense(6, activation="relu", name="h"), keras.layers.Dense(3))
    student = _seq(keras.layers.Dense(6, activation="relu", name="h"), keras.layers.Dense(3))
    distiller = Distiller(teacher, student, hints=[("h", "h")])
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    multi = MultiTaskModel(
        _seq(keras.layers.Dense(6, activation="relu")),
        {"a": keras.layers.Dense(3), "b": keras.layers.Dense(2)},
        task_weights="uncertainty",
    )
    multi.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics={"a": ["accuracy"]},
    )
    return {"dann": dann, "coral": coral, "distiller": distiller, "multi": multi}


def _train(name, model, epochs, initial_epoch=0):
    xs, xt, ys, tasks = _data()
    kwargs = dict(batch_size=4, epochs=epochs, initial_epoch=initial_epoch,
                  shuffle=False, verbose=0)
    if name == "dann":
        model.fit({"source": xs, "target": xt}, ys,
                  callbacks=[GradientReversalScheduler("dann")], **kwargs)
    elif name == "coral":
        model.fit({"source": xs, "target": xt}, ys, **kwargs)
    elif name == "distiller":
        model.fit(xs, ys, **kwargs)
    else:
        model.fit(xs, tasks, **kwargs)


def _outputs(models):
    xs = _data()[0]
    result = {}
    for name, model in models.items():
        out = model.predict(xs, verbose=0)
        if isinstance(out, dict):
            for key, value in out.items():
                result[f"{name}/{key}"] = np.asarray(value)
        else:
            result[name] = np.asarray(out)
    result["dann/step"] = np.asarray(
        keras.ops.convert_to_numpy(models["dann"].gradient_reversal.schedule_step)
    )
    return result


def main(mode, directory):
    if mode == "save":
        models = _build()
        for name, model in models.items():
            _train(name, model, epochs=1)
            model.save(os.path.join(directory, f"{name}.keras"))
        np.savez(os.path.join(directory, "saved.npz"), **_outputs(models))
        return
    keras.utils.set_random_seed(0)
    models = {
        name: keras.models.load_model(os.path.join(directory, f"{name}.keras"))
        for name in ("dann", "coral", "distiller", "multi")
    }
    saved = np.load(os.path.join(directory, "saved.npz"))
    loaded = _outputs(models)
    for key in saved.files:
        np.testing.assert_allclose(loaded[key], saved[key], atol=1e-5, err_msg=key)
    for name, model in models.items():
        # The run planned for 2 epochs continues at epoch 1.
        _train(name, model, epochs=2, initial_epoch=1)
    backend = keras.backend.backend()
    np.savez(os.path.join(directory, f"resumed_{backend}.npz"), **_outputs(models))


if __name__ == "__main__":
    for action in sys.argv[1:]:
        main(*action.split(":", 1))
