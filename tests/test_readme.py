"""The README stays true: its commands exist and its Python example runs."""

import os
import re
import subprocess
import sys

import pytest

from tests.testing import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")


def readme_blocks(language):
    with open(README) as f:
        text = f.read()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_quick_start_commands_match_ci():
    bash = readme_blocks("bash")[0]
    commands = [l for l in bash.splitlines() if l and not l.startswith("#")]
    assert commands == [
        "bash scripts/setup.sh && keras-transfer fit",
        "bash scripts/setup.sh --dev && bash scripts/test.sh",
    ]
    with open(os.path.join(REPO_ROOT, ".ci", "run")) as f:
        assert commands[1] in f.read()


def test_test_script_runs_both_backends():
    with open(os.path.join(REPO_ROOT, "scripts", "test.sh")) as f:
        script = f.read()
    assert 'run_pass "pass 1" tensorflow "$@"' in script
    assert 'run_pass "pass 2" jax -m "not tensorflow_only"' in script
    for folder in ("layers", "losses", "regularizers", "models", "callbacks", "strategies",
                   "backbones"):
        assert f"tests/{folder}" in script


def test_cli_examples_parse():
    from keras_transfer.cli import build_parser

    parser = build_parser()
    for line in readme_blocks("bash")[1].splitlines():
        if line.startswith("keras-transfer fit") and "--help" not in line:
            args = line.split("#")[0].split()[1:]
            parsed = parser.parse_args(args)
            assert parsed.command == "fit"


@pytest.mark.large
def test_python_example_runs(tmp_path):
    (code,) = readme_blocks("python")
    code += "\nassert accuracy > 0.7, accuracy\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "fashion.keras").is_file()
