import os
import traceback

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Absent real data: skip with what to set, or fail under the CI flag.

    Tests that check for their data first call `tests.testing.require_data`.
    This catches the others: a test that errors with a missing-file or
    missing-package error naming a data source that is indeed absent (see
    `tests.testing.DATA_SOURCES`) is reported as skipped with the reason,
    unless `KERAS_TRANSFER_REQUIRE_DATA=1`, where it stays a failure.
    """
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None or call.when == "teardown":
        return
    error = call.excinfo.value
    names = {type(e).__name__ for e in _chain(error)}
    wanted = {"FileNotFoundError", "OSError", "ImportError", "ModuleNotFoundError",
              "PapermillExecutionError"}
    if not names & wanted:
        return
    from tests import testing

    text = "".join(traceback.format_exception(error))
    missing = testing.absent_data_in_error(text)
    if not missing:
        return
    reason = testing.absent_data_reason(missing)
    if testing.data_required():
        report.sections.append(
            ("absent data", f"{reason} ({testing.REQUIRE_DATA_ENV} is set)")
        )
        return
    report.outcome = "skipped"
    report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {reason}")


def _chain(error):
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


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
