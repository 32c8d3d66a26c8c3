import os
import re

import pytest

from tests.testing import require_data
from tests.tutorials.notebook import notebook_text
from tests.tutorials.notebook import run_notebook

NAME = "01_feature_extraction_vs_fine_tuning.ipynb"
VARIANTS = ("scratch", "feature_extraction", "fine_tuning")


@pytest.mark.large
def test_feature_extraction_vs_fine_tuning_tutorial_runs_in_quick_mode(tmp_path):
    require_data("fashion_mnist", "efficientnet_lite0")
    log_dir = tmp_path / "logs"
    nb = run_notebook(NAME, tmp_path, LOG_DIR=str(log_dir))
    text = notebook_text(nb)

    # The results table: one row per strategy, accuracy in [0, 1], plausible
    # parameter counts (EfficientNet-Lite0 + a 10-way head).
    rows = {}
    for label in ("from scratch", "feature extraction", "fine-tuning"):
        match = re.search(
            rf"^{label} +([\d.]+)(?: ± [\d.]+)? +[\d., ]+? ([\d,]+) +([\d,]+) +(\d+) s$",
            text,
            re.M,
        )
        assert match, f"no results row for {label!r} in:\n{text}"
        accuracy, trainable, total, _ = match.groups()
        rows[label] = (
            float(accuracy),
            int(trainable.replace(",", "")),
            int(total.replace(",", "")),
        )
    for accuracy, trainable, total in rows.values():
        assert 0.0 <= accuracy <= 1.0
    # Same architecture in all three: EfficientNet-Lite0 without its top
    # (3,413,024 weights) plus a 10-way Dense head (1280 * 10 + 10).
    totals = {total for _, _, total in rows.values()}
    assert totals == {3_413_024 + 12_810}
    total = totals.pop()
    scratch, extraction, fine_tuning = (rows[k][1] for k in rows)
    assert extraction == 12_810  # the head only
    # From scratch, only the BatchNorm moving statistics are not trained;
    # fine-tuning also keeps BatchNorm's gamma and beta frozen, which are
    # as many again.
    batchnorm_statistics = total - scratch
    assert 40_000 < batchnorm_statistics < 45_000
    assert fine_tuning == scratch - batchnorm_statistics
    # Chance is 0.1; a head on ImageNet features learns more than that
    # from 200 images, even at 32x32.
    assert rows["feature extraction"][0] > 0.25

    # The cache demo: same training, cached and naive.
    cached, naive = re.search(
        r"test accuracy cached ([\d.]+), naive ([\d.]+)", text
    ).groups()
    assert abs(float(cached) - float(naive)) <= 0.03
    assert "reloaded fine-tuned model gives the same predictions: True" in text

    # TensorBoard logs go to LOG_DIR, one run per variant and seed.
    for variant in VARIANTS:
        run = log_dir / f"01_{variant}" / "seed0"
        assert (run / "train").is_dir() and (run / "validation").is_dir()
        assert any(
            name.startswith("events.out.tfevents")
            for name in os.listdir(run / "validation")
        )

    images = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        for out in cell.get("outputs", [])
    )
    assert images >= 2
