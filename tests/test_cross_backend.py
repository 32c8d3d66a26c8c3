"""Save on one backend, load on another and continue training: same numbers.

The models of `tests/cross_backend_runs.py` (every layer of the package,
`InferenceMode` via `build_classifier`, the L2-SP wrapper with its `w0`
anchors) are trained for one epoch and saved here; another backend, in a
subprocess, loads them with their optimizer state and trains 4 more Adam
steps; this process does the same from the same files. Weights and
predictions must agree to float32 tolerance, and the files the other
backend writes back must load here with the same predictions.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests import cross_backend_runs
from tests.testing import REPO_ROOT

OTHER_BACKENDS = [b for b in ("tensorflow", "jax", "torch") if b != keras.backend.backend()]


def _available(backend):
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cross_backend")
    models = cross_backend_runs.build_models()
    for name, model in models.items():
        model.save(os.path.join(folder, f"{name}.keras"))
    here = {}
    for name in models:
        loaded = keras.models.load_model(os.path.join(folder, f"{name}.keras"))
        here[name] = cross_backend_runs.continue_training(loaded)
    return str(folder), here


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_save_here_load_there_continue_training(saved, backend):
    if not _available(backend):
        pytest.skip(f"the {backend} backend is not installed ({backend} is not a dependency)")
    folder, here = saved
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "tests.cross_backend_runs", folder],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name, mine in here.items():
        theirs = np.load(os.path.join(folder, f"{name}.{backend}.npz"))
        assert sorted(theirs.files) == sorted(mine), name
        moved = 0.0
        for key, value in mine.items():
            np.testing.assert_allclose(theirs[key], value, atol=2e-5, rtol=1e-4, err_msg=f"{name} {key}")
        # Continued training really changed the weights (not a no-op).
        first = keras.models.load_model(os.path.join(folder, f"{name}.keras"))
        for i, w in enumerate(first.weights):
            moved = max(moved, float(np.abs(np.array(w) - mine[f"w{i}"]).max()))
        assert moved > 1e-3, (name, moved)
        # ...and what the other backend saved loads here.
        back = keras.models.load_model(os.path.join(folder, f"{name}.{backend}.keras"))
        x, _ = cross_backend_runs.data()
        np.testing.assert_allclose(
            back.predict(x, verbose=0), theirs["predictions"], atol=2e-5, rtol=1e-4
        )
