"""`import keras_transfer` works where TensorFlow is not installed (JAX GPU machines)."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.testing import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class BlockTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"TensorFlow is blocked in this test: {name}")

    sys.meta_path.insert(0, BlockTensorFlow())

    import keras
    import numpy as np

    import keras_transfer
    from keras_transfer import backbones, callbacks, cli, data, datasets
    from keras_transfer import layers, losses, models, strategies

    assert keras.backend.backend() == "jax", keras.backend.backend()
    assert not [m for m in sys.modules if m.split(".")[0] == "tensorflow"]

    # The core trains on JAX: a LoRA layer on a frozen Dense kernel.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    dense = keras.layers.Dense(2)
    dense.build((None, 8))
    lora = layers.LoRADense.from_layer(dense, lora_rank=2)
    model = keras.Sequential([keras.Input((8,)), lora])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kernel = np.array(lora.base_layer.kernel)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert np.array_equal(np.array(lora.base_layer.kernel), kernel)  # frozen
    assert history.history["loss"][-1] < history.history["loss"][0]
    print("OK", keras_transfer.__version__)
    """
)


def test_import_and_train_without_tensorflow():
    pytest.importorskip("jax", reason="needs JAX (installed by `pip install .[dev]`)")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout
