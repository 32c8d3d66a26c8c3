"""Free Spoken Digit Dataset (FSDD): a folder of `{digit}_{speaker}_{index}.wav`."""

import math
import os
import re
import wave

import numpy as np

from keras_transfer.datasets import _common

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")

_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")
_SPLITS = ("speaker", "official", "random")


def _list_recordings(path):
    path = _common.check_path(
        "load_spoken_digits", "path", path, kind="folder",
        hint="Pass the FSDD `recordings` folder (e.g. ../shared/data/fsdd/recordings)",
    )
    records = []
    for name in os.listdir(path):
        match = _NAME.match(name)
        if match:
            digit, speaker, index = match.groups()
            records.append((int(digit), speaker, int(index), name))
    if not records:
        raise ValueError(
            "`load_spoken_digits` found no `{digit}_{speaker}_{index}.wav` "
            f"files in the folder. Received: path={path!r}"
        )
    records.sort()
    return path, records


def spoken_digit_speakers(path):
    """Sorted speaker names in an FSDD folder; speaker labels index this list.

    For the FSDD release this is `FSDD_SPEAKERS`.
    """
    _, records = _list_recordings(path)
    return tuple(sorted({speaker for _, speaker, _, _ in records}))


def _read_wav(filename, sample_rate):
    try:
        with wave.open(filename, "rb") as f:
            channels, width = f.getnchannels(), f.getsampwidth()
            rate = f.getframerate()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as error:
        raise ValueError(
            f"`load_spoken_digits` could not read {filename!r} as a WAV file "
            f"({error})."
        ) from None
    if width != 2:
        raise ValueError(
            "`load_spoken_digits` reads 16-bit PCM WAV files only. "
            f"Received: {filename!r} with {8 * width}-bit samples"
        )
    audio = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)
    audio = audio.mean(axis=1, dtype=np.float32) / 32768.0
    if rate != sample_rate:
        from scipy import signal

        g = math.gcd(rate, sample_rate)
        audio = signal.resample_poly(audio, sample_rate // g, rate // g)
    return audio.astype(np.float32)


def load_spoken_digits(
    path,
    split="speaker",
    test_speakers=("theo",),
    test_fraction=0.2,
    seed=0,
    sample_rate=8000,
    length=None,
):
    """Loads the Free Spoken Digit Dataset (FSDD) from a folder of WAV files.

    FSDD (Jakobovski et al., CC BY-SA 4.0) has 3,000 recordings: 6 speakers
    x 10 digits x 50, mono 16-bit 8 kHz, named `{digit}_{speaker}_{index}.wav`.
    Files are read with the stdlib `wave` module (no librosa).

    Three splits:
    - `"speaker"` (default): the recordings of `test_speakers` form the test
      set, so the model is tested on unseen voices (default: `theo`,
      500 test / 2,500 train).
    - `"official"`: the FSDD README's split, indices 0-4 of every
      speaker/digit are the test set (300 test / 2,700 train).
    - `"random"`: a seeded split stratified by (digit, speaker), holding out
      `test_fraction` of each pair.

    Args:
        path: str, the FSDD `recordings` folder. The project's tests use
            `../shared/data/fsdd/recordings`.
        split: str, `"speaker"`, `"official"` or `"random"`.
        test_speakers: sequence of speaker names in the folder, for
            `split="speaker"`.
        test_fraction: float in (0, 1), for `split="random"`.
        seed: int, seeds `split="random"` (the other splits are fixed).
        sample_rate: int, Hz. Recordings at another rate are resampled with
            `scipy.signal.resample_poly`.
        length: int or None. None returns the waveforms at their own lengths
            (1,148 to 18,262 samples at 8 kHz); an int zero-pads at the end
            or truncates every waveform to `length` samples.

    Returns:
        `(x_train, y_train, speaker_train), (x_test, y_test, speaker_test)`:
        - `x_*`: with `length=None`, a list of float32 `(samples,)` arrays;
          with `length`, a float32 array `(N, length)`. Values in [-1, 1)
          (int16 / 32768; stereo files are averaged to mono).
        - `y_*`: int64 `(N,)`, the spoken digit 0-9.
        - `speaker_*`: int64 `(N,)`, index into the sorted speaker names of
          the folder (`spoken_digit_speakers(path)`; `FSDD_SPEAKERS` for
          FSDD).
        `"speaker"` and `"official"` splits are in file order (digit,
        speaker, index); `"random"` is shuffled.

    Example:

    ```python
    (x, y, s), (x_test, y_test, s_test) = datasets.load_spoken_digits(
        "../shared/data/fsdd/recordings", length=8000
    )
    x.shape  # (2500, 8000)
    ```
    """
    if split not in _SPLITS:
        raise ValueError(
            f"`split` must be one of {list(_SPLITS)}. Received: split={split!r}"
        )
    if (
        not isinstance(sample_rate, (int, np.integer))
        or isinstance(sample_rate, bool)
        or sample_rate < 1
    ):
        raise ValueError(
            "`sample_rate` must be a positive integer (Hz). "
            f"Received: sample_rate={sample_rate!r}"
        )
    length = _common.check_count("length", length)
    seed = _common.check_seed(seed)
    path, records = _list_recordings(path)
    speakers = sorted({speaker for _, speaker, _, _ in records})
    digit = np.array([r[0] for r in records], dtype=np.int64)
    speaker = np.array([speakers.index(r[1]) for r in records], dtype=np.int64)
    index = np.array([r[2] for r in records], dtype=np.int64)

    if split == "speaker":
        if isinstance(test_speakers, str) or not isinstance(
            test_speakers, (tuple, list)
        ):
            raise ValueError(
                "`test_speakers` must be a tuple or list of speaker names. "
                f"Received: test_speakers={test_speakers!r}"
            )
        unknown = [s for s in test_speakers if s not in speakers]
        if unknown or not test_speakers or len(set(test_speakers)) == len(speakers):
            raise ValueError(
                "`test_speakers` must name at least one and not all of the "
                f"speakers in the folder, {speakers}. "
                f"Received: test_speakers={test_speakers!r}"
            )
        is_test = np.isin(speaker, [speakers.index(s) for s in test_speakers])
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    elif split == "official":
        is_test = index < 5
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    else:
        test_fraction = _common.check_fraction("test_fraction", test_fraction)
        rng = np.random.default_rng(seed)
        train, test = _common.stratified_split(
            digit * len(speakers) + speaker,
            round(test_fraction * len(records)),
            rng,
        )

    def read(indices):
        waves = [
            _read_wav(os.path.join(path, records[i][3]), sample_rate)
            for i in indices
        ]
        if length is None:
            return waves
        out = np.zeros((len(waves), length), dtype=np.float32)
        for row, audio in zip(out, waves):
            row[: min(length, len(audio))] = audio[:length]
        return out

    return (
        (read(train), digit[train], speaker[train]),
        (read(test), digit[test], speaker[test]),
    )
