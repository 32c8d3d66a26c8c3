"""Test helpers. The only module that imports Keras's private `keras.src.testing`."""

import os

from keras.src import testing

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
USPS_PATH = os.path.join(SHARED_DATA, "usps", "usps.h5")
FSDD_PATH = os.path.join(SHARED_DATA, "fsdd", "recordings")


class TestCase(testing.TestCase):
    """Keras's own `TestCase` (`run_layer_test`, `assertAllClose`, ...)."""
