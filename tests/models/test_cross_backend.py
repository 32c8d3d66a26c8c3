import os
import subprocess
import sys

import numpy as np
import pytest

from tests.testing import REPO_ROOT
from tests.testing import TestCase


def _run(backend, *actions):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "tests.models.cross_backend_script", *actions],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if result.returncode:
        raise AssertionError(f"{backend} {actions} failed:\n{result.stderr[-3000:]}")


# Runs both backends itself (in subprocesses): once, in the TensorFlow pass.
@pytest.mark.tensorflow_only
class CrossBackendTest(TestCase):
    def test_save_on_one_backend_resume_on_the_other(self):
        pytest.importorskip("jax")
        on_jax = os.path.join(self.get_temp_dir(), "saved_on_jax")
        on_tf = os.path.join(self.get_temp_dir(), "saved_on_tf")
        os.makedirs(on_jax)
        os.makedirs(on_tf)
        # Three processes: JAX saves; TensorFlow resumes it and saves; JAX
        # resumes TensorFlow's file and its own.
        _run("jax", f"save:{on_jax}")
        _run("tensorflow", f"resume:{on_jax}", f"save:{on_tf}")
        _run("jax", f"resume:{on_tf}", f"resume:{on_jax}")
        tf_run = np.load(os.path.join(on_jax, "resumed_tensorflow.npz"))
        jax_run = np.load(os.path.join(on_jax, "resumed_jax.npz"))
        # Same weights after the same steps on both backends; the reversal
        # schedule continued from the saved step count (3 + 3 steps).
        for key in tf_run.files:
            self.assertAllClose(tf_run[key], jax_run[key], atol=1e-4, msg=key)
        self.assertAllClose(tf_run["dann/step"], 6.0)
        self.assertAllClose(np.load(os.path.join(on_tf, "resumed_jax.npz"))["dann/step"], 6.0)
