"""`GradualUnfreezer` + `DiscriminativeLR` give the same weights on TensorFlow
and JAX (issue 13: they used to refuse JAX)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.testing import REPO_ROOT
from tests.testing import TestCase

SCRIPT = """
import json, keras, numpy as np
from keras_transfer.callbacks import DiscriminativeLR, GradualUnfreezer
from tests.callbacks.tiny import fit, tiny_groups, tiny_model
# JAX: the `jax.jit`-compiled step, as users run it; TensorFlow: tf.function.
model, base = tiny_model(learning_rate=1e-2, jit_compile=keras.backend.backend() == "jax")
# The backends' random initializers differ: start from the same weights.
rng = np.random.default_rng(0)
for v in model.weights:
    if v.path.endswith(("kernel", "bias")):
        v.assign(rng.normal(size=v.shape).astype("float32") * 0.5)
history = fit(model, [
    GradualUnfreezer(tiny_groups(base), schedule=[1, 2]),
    DiscriminativeLR(tiny_groups(base), factor=0.5),
    keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
], epochs=3, batch_size=8)
print("RESULT" + json.dumps({
    "weights": [keras.ops.convert_to_numpy(v).tolist() for v in model.weights],
    "stage": history.history["unfreeze_stage"],
    "lr_group_1": history.history["lr_group_1"],
}))
"""


def _run(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO_ROOT)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.split("RESULT", 1)[1])


class BackendParityTest(TestCase):
    @pytest.mark.large
    def test_same_weights_on_tensorflow_and_jax(self):
        here = keras.backend.backend()
        other = "jax" if here == "tensorflow" else "tensorflow"
        namespace = {}
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(SCRIPT, namespace)
        ours = json.loads(buffer.getvalue().split("RESULT", 1)[1])
        theirs = _run(other)
        self.assertEqual(ours["stage"], [0, 1, 2])
        self.assertEqual(theirs["stage"], ours["stage"])
        # Group 1 (d1) frozen until epoch 2, then at 1e-2 * 0.5**3 * 0.25.
        self.assertAllClose(ours["lr_group_1"], [0.0, 0.0, 1e-2 * 0.125 * 0.25])
        self.assertAllClose(theirs["lr_group_1"], ours["lr_group_1"])
        for a, b in zip(ours["weights"], theirs["weights"]):
            self.assertAllClose(np.array(a), np.array(b), atol=1e-5)
