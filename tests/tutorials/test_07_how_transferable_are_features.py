import math
import re

import pytest

from tests.testing import FASHION_MNIST_PATH
from tests.testing import USPS_PATH
from tests.testing import require_data
from tests.tutorials.notebook import notebook_text
from tests.tutorials.notebook import run_notebook

NAME = "07_how_transferable_are_features.ipynb"
_NUMBER = r"(-?[\d.]+)(?: \(1 seed\)| ± [\d.]+)"


@pytest.mark.large
def test_how_transferable_are_features_tutorial_runs_in_quick_mode(tmp_path):
    require_data("usps", "fashion_mnist", "efficientnet_lite0")
    nb = run_notebook(NAME, tmp_path, USPS_PATH=USPS_PATH, FASHION_PATH=FASHION_MNIST_PATH)
    text = notebook_text(nb)

    # The cut table: EfficientNet-Lite0 at 32x32 cut after block 2 (its
    # residual add, an 8x8x24 map pooled to 2x2) and after block 7.
    assert re.search(r"^block2 +block2b_add +\(8, 8, 24\) +96 ", text, re.M), text
    assert re.search(r"^block7 +block7a_project_bn +\(1, 1, 320\) +320 ", text, re.M), text

    # The results table: one row per target and depth, with real numbers.
    rows = {}
    for target in ("Fashion-MNIST", "USPS"):
        for depth in ("block2", "block7"):
            match = re.search(
                rf"^{target} +{depth} +(\d+) +{_NUMBER} +({_NUMBER}|not run) +{_NUMBER}",
                text,
                re.M,
            )
            assert match, f"no row for {target} {depth} in:\n{text}"
            groups = match.groups()
            frozen, logme = float(groups[1]), float(groups[-1])
            tuned = None if groups[2] == "not run" else float(groups[3])
            rows[target, depth] = (frozen, tuned, logme)
    for (target, depth), (frozen, tuned, logme) in rows.items():
        assert 0.0 <= frozen <= 1.0
        assert math.isfinite(logme) and -5.0 < logme < 5.0, (target, depth, logme)
    # Quick mode fine-tunes block 2 only, on both targets.
    assert rows["Fashion-MNIST", "block2"][1] is not None
    assert rows["USPS", "block2"][1] is not None
    assert rows["USPS", "block7"][1] is None
    assert "runs not done within the budget: 2" in text
    # ImageNet features: a head on the block-7 features beats chance (0.1)
    # clearly on both targets, even from 100 images at 32x32.
    assert rows["Fashion-MNIST", "block7"][0] > 0.3
    assert rows["USPS", "block7"][0] > 0.3

    # The rank correlations are printed, one per target.
    for target in ("Fashion-MNIST", "USPS"):
        match = re.search(
            rf"Spearman rho\(LogME, frozen accuracy\) over 2 depths, {target}: (-?[\d.]+)",
            text,
        )
        assert match and abs(float(match.group(1))) == 1.0  # two points: +-1

    # domain_similarity's target_logme is the table's LogME.
    match = re.search(r"target_logme (-?[\d.]+) \(LogME in the table: (-?[\d.]+)\)", text)
    assert match and match.group(1) == match.group(2)
    assert "USPS: gradual_unfreezing" in text
    assert "Fashion-MNIST: feature_extraction" in text

    images = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        for out in cell.get("outputs", [])
    )
    assert images >= 2
