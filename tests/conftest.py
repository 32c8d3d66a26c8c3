import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

# Nothing here picks a backend: Keras reads KERAS_BACKEND (else ~/.keras/keras.json) on import,
# and `scripts/test.sh` runs the backend-agnostic tests once per backend.


def pytest_report_header(config):
    import keras

    return f"keras {keras.__version__}, backend: {keras.backend.backend()}"


def pytest_collection_modifyitems(config, items):
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend (running on {backend})")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)
