import re

import pytest

from tests.testing import FSDD_PATH
from tests.tutorials.notebook import notebook_text
from tests.tutorials.notebook import run_notebook


@pytest.mark.large
def test_voice_commands_tutorial_runs_in_quick_mode(tmp_path):
    nb = run_notebook("08_voice_commands.ipynb", tmp_path, FSDD_PATH=FSDD_PATH)
    text = notebook_text(nb)
    # The wav folder: 8-bit, float stereo and int16 files at 8 kHz, doubled.
    assert "classes ('one', 'two') clips 6" in text
    assert re.search(r"error: The WAV file '.*silent\.wav' is silent", text)
    # 7 of george: 0.75 s of silence each side -> frames -> windows every 8.
    samples, frames, windows = map(int, re.search(
        r"clip: (\d+) samples .* mel frames \((\d+), 32\) -> windows \((\d+), 96\)", text
    ).groups())
    assert frames == (max(samples + 24000, 12512) - 512) // 160 + 1
    assert windows == (frames - 76) // 8 + 1
    # The pretrained embedding: far above chance (0.1) on unseen speakers
    # from 3 clips per digit (the benchmark measures ~0.9 on 1,500 clips).
    accuracy = float(re.search(r"3 clip\(s\) per digit, seed 0: unseen-speaker accuracy ([\d.]+)", text).group(1))
    assert accuracy > 0.6
    # The saved full model on raw audio = the head on cached features.
    difference = float(re.search(r"max \|difference\| of probabilities: ([\d.e+-]+)", text).group(1))
    assert difference < 1e-4
    pads = dict(re.findall(r"george vs (\w+)(?: \(two halves\))?: PAD ([-+][\d.]+)", text))
    assert set(pads) == {"george", "jackson", "theo", "yweweler"}
    assert "convs, " in text and text.count("convs, ") == 6  # 5 blocks + top conv
    assert "trainable LoRA parameters: 7680 of" in text  # 5 convs x (288 + 96) x rank 4
    assert "same output before training: True" in text
