"""Audio clips from a folder of `.wav` files with one sub-folder per class."""

import math
import os
import struct
import warnings

import numpy as np

from keras_transfer.datasets import _common


def _check_rate(name, value):
    if (
        not isinstance(value, (int, np.integer))
        or isinstance(value, bool)
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be a positive integer (Hz). "
            f"Received: {name}={value!r}"
        )
    return int(value)


def _check_min_duration(value):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            "`min_duration` must be a non-negative number of seconds. "
            f"Received: min_duration={value!r}"
        )
    return float(value)


def _to_float(data, filename):
    """PCM or float samples -> float32 in [-1, 1], by the sample format."""
    kind, bits = data.dtype.kind, 8 * data.dtype.itemsize
    if kind == "u" and bits == 8:  # 8-bit WAV is unsigned, centred at 128.
        return (data.astype(np.float32) - 128.0) / 128.0
    if kind == "i" and bits in (16, 32):
        # scipy returns 24-bit PCM left-justified in int32, so one scale
        # serves 24- and 32-bit files.
        return (data.astype(np.float64) / 2.0 ** (bits - 1)).astype(np.float32)
    if kind == "f":
        if not np.all(np.isfinite(data)):
            raise ValueError(
                f"The WAV file {filename!r} holds NaN or infinite float "
                "samples."
            )
        return data.astype(np.float32)
    raise ValueError(
        f"The WAV file {filename!r} has an unsupported sample format "
        f"({data.dtype}). Allowed: 8-, 16-, 24- or 32-bit PCM, 32- or 64-bit "
        "float."
    )


# A mono mix at least 60 dB below its channels: they cancel (anti-phase).
_CANCELLED = 1e-3


def _quieter(quiet, loud):
    if quiet == 0:
        return "silent (every sample 0)"
    return f"{20 * math.log10(loud / quiet):.0f} dB quieter than its channels"


def read_wav(filename, sample_rate=16000, min_duration=0.1):
    """Reads one `.wav` file as a mono float32 waveform at `sample_rate`.

    Decoded with `scipy.io.wavfile` (8-bit unsigned, 16-, 24- and 32-bit
    PCM, 32- and 64-bit float; `WAVE_FORMAT_EXTENSIBLE` too), scaled to
    [-1, 1] by the sample format (8-bit: `(x - 128) / 128`; `n`-bit PCM:
    `x / 2^(n-1)`; float as stored), averaged over channels, and resampled
    with `scipy.signal.resample_poly` (polyphase, Kaiser-windowed
    anti-aliasing filter) when the file's rate differs.

    Args:
        filename: str, path of the `.wav` file.
        sample_rate: int, Hz, the rate of the returned waveform.
        min_duration: float, seconds; shorter clips raise an error (a clip
            of a few milliseconds is a broken recording, not speech). 0
            accepts any non-empty clip.

    Returns:
        float32 `(samples,)` in [-1, 1] (float files may exceed it).
        Clips are returned at their own length; a clip shorter than one
        window of `backbones.speech_embedding` (0.78 s) is padded with
        silence by that model (see `SpeechMelSpectrogram`), not here.

    Raises:
        ValueError: the file cannot be decoded (not RIFF/RF64 WAV, a
            compressed format such as mu-law or ADPCM, or truncated: its
            data chunk ends before the length its header gives), holds
            NaN or infinite float samples, or the clip is empty, silent
            (all samples zero), has channels that cancel when mixed to
            mono (anti-phase stereo: the message says so) or is shorter
            than `min_duration`; the message names the file.
        FileNotFoundError: no such file.
    """
    sample_rate = _check_rate("sample_rate", sample_rate)
    min_duration = _check_min_duration(min_duration)
    from scipy import signal
    from scipy.io import wavfile

    filename = _common.check_path("read_wav", "filename", filename)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            rate, data = wavfile.read(filename)
    except (ValueError, EOFError, OSError, IndexError, struct.error) as error:
        raise ValueError(
            f"Cannot decode {filename!r} as a WAV file "
            f"({type(error).__name__}: {error})."
        ) from None
    for warning in caught:
        message = str(warning.message)
        if issubclass(warning.category, wavfile.WavFileWarning) and (
            "EOF" in message
        ):
            # scipy returns the samples before the end of a truncated file
            # with only a warning: a cut recording is refused instead.
            raise ValueError(
                f"The WAV file {filename!r} is truncated ({message})."
            )
        warnings.warn_explicit(
            f"{filename}: {message}", warning.category, warning.filename,
            warning.lineno,
        )
    if data.ndim == 2 and data.shape[1] == 0:
        data = data[:, :0]
    audio = _to_float(data, filename)
    channels = audio
    if audio.ndim == 2:
        audio = audio.mean(axis=1, dtype=np.float32)
    if audio.size == 0:
        raise ValueError(f"The WAV file {filename!r} is empty (0 samples).")
    if not np.any(channels):
        raise ValueError(
            f"The WAV file {filename!r} is silent (all {channels.size} samples "
            "are zero)."
        )
    if channels.ndim == 2:
        # Channels in anti-phase (one the negative of the other: a
        # polarity-inverted microphone or cable) cancel when averaged; the
        # recording is not silent, its mono mix is.
        level = np.sqrt(np.mean(np.square(channels, dtype=np.float64)))
        mixed = np.sqrt(np.mean(np.square(audio, dtype=np.float64)))
        if mixed <= _CANCELLED * level:
            raise ValueError(
                f"The WAV file {filename!r} has {channels.shape[1]} channels "
                "that cancel when mixed to mono (averaged): they are in "
                "anti-phase (one is the negative of the other, e.g. a "
                "polarity-inverted microphone or cable), so its mono mix is "
                f"{_quieter(mixed, level)} although the recording is not "
                "silent. Keep one channel, or invert one, and save the file "
                "again."
            )
    duration = audio.size / rate
    if duration < min_duration:
        raise ValueError(
            f"The WAV file {filename!r} is {duration:.4f} s long, shorter "
            f"than `min_duration`={min_duration} s. Remove it or lower "
            "`min_duration`."
        )
    if rate != sample_rate:
        g = math.gcd(int(rate), sample_rate)
        audio = signal.resample_poly(audio, sample_rate // g, int(rate) // g)
    return audio.astype(np.float32)


def pad_clips(clips, length=None):
    """Stacks waveforms into one array, zero-padded (silence) at the end.

    Args:
        clips: list of 1-D float arrays.
        length: int, samples per row, or `None` for the longest clip. A
            clip longer than `length` raises an error (nothing is cut).

    Returns:
        float32 `(len(clips), length)`.
    """
    if not isinstance(clips, (list, tuple)) or not clips:
        raise ValueError(
            "`clips` must be a non-empty list of 1-D waveforms. "
            f"Received: clips={type(clips).__name__}"
        )
    longest = max(len(c) for c in clips)
    if length is None:
        length = longest
    length = _common.check_count("length", length, allow_none=False)
    if longest > length:
        raise ValueError(
            f"`length` must be at least the longest clip, {longest} samples "
            f"(clips are not truncated). Received: length={length}"
        )
    out = np.zeros((len(clips), length), dtype=np.float32)
    for row, clip in zip(out, clips):
        row[: len(clip)] = clip
    return out


def load_audio_folder(
    path, sample_rate=16000, test_fraction=0.2, seed=0, min_duration=0.1,
    min_classes=2,
):
    """Loads a folder of `.wav` clips, one sub-folder per class, and splits it.

    ```
    path/
      yes/001.wav, 002.wav, ...
      no/...
    ```

    Class names are the sub-folder names, sorted; label `i` is
    `class_names[i]`. Every `.wav` file (any case; hidden files skipped) is
    read with `read_wav`: any sample rate, mono or stereo (averaged), 8-,
    16-, 24-, 32-bit PCM or float, resampled to `sample_rate`. Other files
    are skipped. A file that cannot be read, or an empty, silent or too
    short clip, raises an error naming it (nothing is skipped silently).
    Clips keep their own lengths; `backbones.speech_embedding` pads one
    shorter than its 0.78 s window with silence.

    Args:
        path: str, the folder.
        sample_rate: int, Hz; 16000 is what
            `keras_transfer.backbones.speech_embedding` takes.
        test_fraction: float in [0, 1), share of each class held out; 0
            gives an empty test set.
        seed: int, seeds the split.
        min_duration: float, seconds, see `read_wav`.
        min_classes: 2 (default: data to train a classifier on) or 1
            (data of a single class is accepted, e.g. to evaluate a trained
            classifier on it).

    Returns:
        `(x_train, y_train), (x_test, y_test), class_names`:
        - `x_*`: lists of float32 `(samples,)` waveforms in [-1, 1] (their
          own lengths; `pad_clips` stacks them into one array).
        - `y_*`: int64 `(N,)`, indices into `class_names`.
        - `class_names`: tuple of str, sorted sub-folder names.
        Train and test come in shuffled order.

    Raises:
        FileNotFoundError: `path` is not a folder.
        ValueError: fewer than `min_classes` class sub-folders, a class
            without `.wav` files, or a bad file (named in the message).
    """
    path = _common.check_path(
        "load_audio_folder", "path", path, kind="folder",
        hint="Pass a folder with one sub-folder of .wav files per class",
    )
    sample_rate = _check_rate("sample_rate", sample_rate)
    min_duration = _check_min_duration(min_duration)
    test_fraction = _common.check_fraction(
        "test_fraction", test_fraction, allow_zero=True
    )
    seed = _common.check_seed(seed)
    min_classes = _common.check_min_classes(min_classes)
    class_names = _common.class_folders(path, min_classes)
    clips, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(path, name)
        files = sorted(
            f for f in os.listdir(folder)
            if not f.startswith(".") and f.lower().endswith(".wav")
        )
        if not files:
            raise ValueError(
                f"`path` has a class sub-folder {name!r} with no `.wav` "
                f"files. Received: path={path!r}"
            )
        for f in files:
            clips.append(
                read_wav(os.path.join(folder, f), sample_rate, min_duration)
            )
            labels.append(label)
    y = np.array(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train, test = _common.stratified_split(y, round(test_fraction * len(y)), rng)
    return (
        ([clips[i] for i in train], y[train]),
        ([clips[i] for i in test], y[test]),
        class_names,
    )
