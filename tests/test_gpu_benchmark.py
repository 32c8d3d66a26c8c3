"""`benchmarks/gpu.py` keeps working: its tiny mode runs on CPU (JAX)."""

import os
import subprocess
import sys

import pytest

from tests.testing import REPO_ROOT


def test_gpu_benchmark_tiny_mode_on_cpu(tmp_path):
    pytest.importorskip("jax", reason="needs JAX (installed by `pip install .[dev]`)")
    output = tmp_path / "gpu.md"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, os.path.join("benchmarks", "gpu.py"), "--tiny",
         "--steps", "1", "--repeats", "1", "--output", str(output)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = output.read_text()
    assert "This table has NOT run on a GPU" in text
    rows = [l for l in text.splitlines() if l.startswith("| `")]
    names = [r.split("`")[1] for r in rows]
    assert names == ["full_fine_tune", "keras_enable_lora", "lora_dense_stack", "minilm_lora", "dann"]
    # Trainable parameters: full = depth * (w*w + w); LoRA = depth * r * 2w.
    params = {r.split("`")[1]: int(r.split("|")[4].replace(",", "")) for r in rows}
    assert params["full_fine_tune"] == 2 * (64 * 64 + 64)
    assert params["lora_dense_stack"] == 2 * 4 * (64 + 64)
    # Keras's enable_lora leaves the bias trainable.
    assert params["keras_enable_lora"] == 2 * (4 * (64 + 64) + 64)
