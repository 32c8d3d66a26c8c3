import os
import struct
import wave

import numpy as np
from absl.testing import parameterized
from scipy import signal
from scipy.io import wavfile

from keras_transfer import datasets
from tests.testing import TestCase


def _write_24bit(filename, values, rate):
    """24-bit PCM through the stdlib `wave` module (scipy cannot write it);
    `values` `(samples,)` or `(samples, channels)`."""
    values = np.asarray(values, dtype=np.int32)
    channels = 1 if values.ndim == 1 else values.shape[1]
    raw = b"".join(
        int(v).to_bytes(3, "little", signed=True) for v in values.ravel()
    )
    with wave.open(filename, "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(3)
        f.setframerate(rate)
        f.writeframes(raw)


def _samples(kind, shape, rng):
    """Random samples of a WAV sample format and their values in [-1, 1]."""
    if kind == "uint8":
        pcm = rng.integers(0, 256, size=shape).astype(np.uint8)
        return pcm, (pcm.astype(np.float64) - 128) / 128
    if kind == "float32":
        pcm = rng.uniform(-1, 1, size=shape).astype(np.float32)
        return pcm, pcm.astype(np.float64)
    bits = {"int16": 16, "int24": 24, "int32": 32}[kind]
    pcm = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=shape)
    dtype = np.int16 if bits == 16 else np.int32
    return pcm.astype(dtype), pcm / 2.0 ** (bits - 1)


class ReadWavTest(TestCase):
    def setUp(self):
        super().setUp()
        self.folder = self.get_temp_dir()

    def path(self, name):
        return os.path.join(self.folder, name)

    def test_16bit_at_target_rate_is_exact(self):
        rng = np.random.default_rng(0)
        pcm = rng.integers(-32768, 32768, size=4000).astype(np.int16)
        wavfile.write(self.path("a.wav"), 16000, pcm)
        audio = datasets.read_wav(self.path("a.wav"), sample_rate=16000)
        self.assertEqual(audio.dtype, np.float32)
        np.testing.assert_array_equal(audio, pcm / np.float32(32768.0))

    def test_8bit_unsigned(self):
        pcm = np.array([0, 64, 128, 192, 255] * 400, dtype=np.uint8)
        wavfile.write(self.path("a.wav"), 16000, pcm)
        audio = datasets.read_wav(self.path("a.wav"))
        np.testing.assert_allclose(audio[:5], [-1.0, -0.5, 0.0, 0.5, 127 / 128])

    def test_24bit(self):
        values = np.array([-(2**23), -1, 0, 1, 2**22, 2**23 - 1] * 400)
        _write_24bit(self.path("a.wav"), values, 16000)
        audio = datasets.read_wav(self.path("a.wav"))
        np.testing.assert_allclose(audio[:6], values[:6] / 2.0**23, atol=1e-7)

    def test_float_stereo_resampled(self):
        rng = np.random.default_rng(1)
        stereo = rng.uniform(-1, 1, size=(2000, 2)).astype(np.float32)
        wavfile.write(self.path("a.wav"), 8000, stereo)
        audio = datasets.read_wav(self.path("a.wav"), sample_rate=16000)
        expected = signal.resample_poly(stereo.mean(axis=1), 2, 1)
        self.assertEqual(audio.shape, (4000,))
        np.testing.assert_allclose(audio, expected, atol=1e-6)

    def test_44100_to_16000_keeps_pitch(self):
        t = np.arange(44100) / 44100.0
        pcm = (0.5 * 32767 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)
        wavfile.write(self.path("a.wav"), 44100, pcm)
        audio = datasets.read_wav(self.path("a.wav"), sample_rate=16000)
        self.assertEqual(audio.shape, (16000,))
        spectrum = np.abs(np.fft.rfft(audio))
        self.assertEqual(int(np.argmax(spectrum)), 440)  # 1 Hz bins over 1 s
        self.assertAllClose(np.abs(audio[1000:-1000]).max(), 0.5, atol=0.01)

    @parameterized.product(
        kind=["uint8", "int16", "int24", "int32", "float32"],
        channels=[1, 2],
        rate=[16000, 22050],
    )
    def test_formats_channels_and_rates(self, kind, channels, rate):
        # The decoded clip = the written samples scaled by the format,
        # averaged over channels, resampled by resample_poly (to 16 kHz).
        rng = np.random.default_rng(channels + rate)
        shape = (2205,) if channels == 1 else (2205, channels)
        pcm, values = _samples(kind, shape, rng)
        path = self.path(f"{kind}.wav")
        if kind == "int24":
            _write_24bit(path, pcm, rate)
        else:
            wavfile.write(path, rate, pcm)
        audio = datasets.read_wav(path, sample_rate=16000)
        mono = values if channels == 1 else values.mean(axis=1)
        if rate != 16000:
            mono = signal.resample_poly(mono, 320, 441)  # 16000 / 22050
        self.assertEqual(audio.dtype, np.float32)
        self.assertEqual(audio.shape, (len(mono),))
        self.assertAllClose(audio, mono, atol=1e-6, rtol=0)

    def test_truncated_file_is_named(self):
        # scipy returns the samples before the cut with a warning only.
        wavfile.write(self.path("cut.wav"), 16000, np.ones(4000, np.int16))
        with open(self.path("cut.wav"), "rb") as f:
            data = f.read()
        with open(self.path("cut.wav"), "wb") as f:
            f.write(data[: len(data) // 2])
        with self.assertRaisesRegex(ValueError, "cut.wav.* truncated"):
            datasets.read_wav(self.path("cut.wav"))

    def test_file_cut_inside_its_header_is_named(self):
        # Regression: scipy raised struct.error, which escaped as a traceback.
        wavfile.write(self.path("head.wav"), 16000, np.ones(4000, np.int16))
        with open(self.path("head.wav"), "rb") as f:
            data = f.read()
        with open(self.path("head.wav"), "wb") as f:
            f.write(data[:30])
        with self.assertRaisesRegex(ValueError, "Cannot decode .*head.wav"):
            datasets.read_wav(self.path("head.wav"))

    def test_compressed_format_is_named(self):
        # A mu-law WAV (format tag 7): a clear error, not noise.
        header = (
            b"RIFF" + struct.pack("<I", 36 + 800) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 7, 1, 8000, 8000, 1, 8)
            + b"data" + struct.pack("<I", 800)
        )
        with open(self.path("mulaw.wav"), "wb") as f:
            f.write(header + bytes(range(200)) * 4)
        with self.assertRaisesRegex(ValueError, "Cannot decode .*mulaw.wav"):
            datasets.read_wav(self.path("mulaw.wav"))

    def test_float64_and_int64(self):
        wavfile.write(self.path("f64.wav"), 16000, np.full(2000, 0.25))
        self.assertAllClose(
            datasets.read_wav(self.path("f64.wav")), np.full(2000, 0.25)
        )
        wavfile.write(self.path("i64.wav"), 16000, np.ones(2000, np.int64))
        with self.assertRaisesRegex(ValueError, "i64.wav.*unsupported"):
            datasets.read_wav(self.path("i64.wav"))

    @parameterized.named_parameters(
        ("empty_file", None, "as a WAV file"),
        ("empty", np.zeros(0, np.int16), "empty"),
        ("silent", np.zeros(4000, np.int16), "silent"),
        ("too_short", np.ones(800, np.int16), "shorter than `min_duration`"),
        ("nan", np.full(4000, np.nan, np.float32), "NaN or infinite"),
    )
    def test_bad_clips(self, data, message):
        if data is None:
            open(self.path("bad.wav"), "wb").close()
        else:
            wavfile.write(self.path("bad.wav"), 16000, data)
        with self.assertRaisesRegex(ValueError, "bad.wav.*" + message):
            datasets.read_wav(self.path("bad.wav"))

    def test_anti_phase_stereo_is_named_not_called_silent(self):
        # Regression: a stereo file whose channels cancel when averaged to
        # mono (one inverted) was refused as "silent".
        tone = (8000 * np.sin(np.linspace(0, 200 * np.pi, 4000))).astype(np.int16)
        wavfile.write(self.path("anti.wav"), 16000, np.stack([tone, -tone], axis=1))
        with self.assertRaises(ValueError) as raised:
            datasets.read_wav(self.path("anti.wav"))
        message = str(raised.exception)
        self.assertIn("anti.wav", message)
        self.assertIn("2 channels that cancel when mixed to mono", message)
        self.assertIn("silent (every sample 0) although the recording is not silent", message)
        self.assertIn("Keep one channel", message)
        # Nearly cancelling (a 1-sample level difference): more than 60 dB
        # down, said in decibels. Partly correlated stereo is read as before.
        wavfile.write(self.path("near.wav"), 16000, np.stack([tone, -tone + 1], axis=1))
        with self.assertRaisesRegex(ValueError, r"near.wav.*\d+ dB quieter than its channels"):
            datasets.read_wav(self.path("near.wav"))
        right = (-tone // 2).astype(np.int16)
        wavfile.write(self.path("ok.wav"), 16000, np.stack([tone, right], axis=1))
        np.testing.assert_allclose(
            datasets.read_wav(self.path("ok.wav")),
            (tone.astype(np.float64) + right) / 2 / 32768,
            atol=1e-6,
        )
        # A file silent on every channel is still called silent.
        wavfile.write(self.path("quiet.wav"), 16000, np.zeros((4000, 2), np.int16))
        with self.assertRaisesRegex(ValueError, r"quiet.wav.*is silent \(all 8000 samples"):
            datasets.read_wav(self.path("quiet.wav"))

    def test_short_clip_error_says_what_a_command_line_user_can_do(self):
        # Regression: the CLI's message named `min_duration`, an argument
        # the command line does not have.
        from keras_transfer.cli import _args

        wavfile.write(self.path("short.wav"), 16000, np.ones(800, np.int16))
        with self.assertRaises(ValueError) as raised:
            datasets.read_wav(self.path("short.wav"))
        line = _args.cli_spelling(raised.exception)
        self.assertIn("short.wav", line)
        self.assertIn("0.0500 s long, shorter than the 0.1 s the command line reads", line)
        self.assertIn("Remove the file, or pad it with silence to at least 0.1 s", line)
        self.assertNotIn("min_duration", line)

    def test_min_duration_zero_accepts_short_clip(self):
        wavfile.write(self.path("a.wav"), 16000, np.ones(800, np.int16))
        self.assertEqual(
            datasets.read_wav(self.path("a.wav"), min_duration=0).shape, (800,)
        )

    def test_missing_file(self):
        with self.assertRaisesRegex(FileNotFoundError, "nothing.wav"):
            datasets.read_wav(self.path("nothing.wav"))

    def test_undecodable_file_is_named(self):
        with open(self.path("broken.wav"), "wb") as f:
            f.write(b"RIFF\x00\x00not really a wave file")
        with self.assertRaisesRegex(ValueError, "Cannot decode .*broken.wav"):
            datasets.read_wav(self.path("broken.wav"))

    @parameterized.named_parameters(
        ("rate_zero", {"sample_rate": 0}, "`sample_rate` must be"),
        ("rate_float", {"sample_rate": 16000.0}, "`sample_rate` must be"),
        ("min_negative", {"min_duration": -1}, "`min_duration` must be"),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            datasets.read_wav(self.path("x.wav"), **kwargs)


class PadClipsTest(TestCase):
    def test_pads_with_zeros_and_refuses_to_cut(self):
        out = datasets.pad_clips([np.ones(3), np.full(5, 2.0)])
        np.testing.assert_array_equal(out, [[1, 1, 1, 0, 0], [2] * 5])
        self.assertEqual(datasets.pad_clips([np.ones(3)], length=4).shape, (1, 4))
        with self.assertRaisesRegex(ValueError, "at least the longest clip, 5"):
            datasets.pad_clips([np.ones(5)], length=4)


class LoadAudioFolderTest(TestCase):
    def _folder(self, per_class=4):
        root = self.get_temp_dir()
        rng = np.random.default_rng(0)
        for c, name in enumerate(["yes", "no"]):
            os.makedirs(os.path.join(root, name))
            for i in range(per_class):
                pcm = rng.integers(-1000, 1000, size=1600 + 100 * i)
                # "no" is recorded at 8 kHz: resampled to 16 kHz on read.
                rate = 16000 if name == "yes" else 8000
                wavfile.write(
                    os.path.join(root, name, f"{i}.WAV"), rate,
                    pcm.astype(np.int16),
                )
        with open(os.path.join(root, "no", "readme.txt"), "w") as f:
            f.write("skipped")
        return root

    def test_classes_split_and_resampling(self):
        root = self._folder()
        (x, y), (x_test, y_test), names = datasets.load_audio_folder(
            root, test_fraction=0.25, seed=0
        )
        self.assertEqual(names, ("no", "yes"))
        self.assertEqual((len(x), len(x_test)), (6, 2))
        self.assertEqual(np.bincount(y_test).tolist(), [1, 1])
        lengths = sorted(len(a) for a, label in zip(x + x_test, np.r_[y, y_test]) if label == 0)
        self.assertEqual(lengths, [3200, 3400, 3600, 3800])  # 8 kHz doubled

    def test_bad_file_is_named(self):
        root = self._folder()
        with open(os.path.join(root, "yes", "zz_broken.wav"), "wb") as f:
            f.write(b"garbage")
        with self.assertRaisesRegex(ValueError, "zz_broken.wav"):
            datasets.load_audio_folder(root)

    def test_class_without_wavs_and_single_class(self):
        root = self._folder()
        os.makedirs(os.path.join(root, "maybe"))
        with self.assertRaisesRegex(ValueError, "'maybe' with no `.wav`"):
            datasets.load_audio_folder(root)
        single = os.path.join(root, "no")
        os.makedirs(os.path.join(single, "only"))
        with self.assertRaisesRegex(ValueError, "at least two class"):
            datasets.load_audio_folder(single)
        with self.assertRaises(FileNotFoundError):
            datasets.load_audio_folder(os.path.join(root, "missing"))
