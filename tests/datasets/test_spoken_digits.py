import os
import shutil
import wave

import numpy as np
from absl.testing import parameterized

from keras_transfer import datasets
from tests.testing import FSDD_PATH
from tests.testing import TestCase
from tests.testing import require_data


class LoadSpokenDigitsTest(TestCase):
    _speaker_split = None

    @property
    def speaker_split(self):
        # Loaded once, by the first test that needs it (the others run without the data).
        require_data("fsdd")
        if LoadSpokenDigitsTest._speaker_split is None:
            LoadSpokenDigitsTest._speaker_split = datasets.load_spoken_digits(FSDD_PATH)
        return LoadSpokenDigitsTest._speaker_split

    def test_speaker_split(self):
        (x, y, s), (x_test, y_test, s_test) = self.speaker_split
        # 3,000 files, 6 speakers x 10 digits x 50; "theo" is held out.
        self.assertEqual((len(x), len(x_test)), (2500, 500))
        self.assertEqual(datasets.spoken_digit_speakers(FSDD_PATH), datasets.FSDD_SPEAKERS)
        theo = datasets.FSDD_SPEAKERS.index("theo")
        np.testing.assert_array_equal(np.unique(s_test), [theo])
        self.assertNotIn(theo, set(s.tolist()))
        np.testing.assert_array_equal(np.bincount(y), [250] * 10)
        np.testing.assert_array_equal(np.bincount(y_test), [50] * 10)
        self.assertEqual((y.dtype, s.dtype), (np.int64, np.int64))
        lengths = [len(w) for w in x + x_test]
        self.assertEqual((min(lengths), max(lengths)), (1148, 18262))
        self.assertEqual(x[0].dtype, np.float32)
        self.assertLessEqual(max(float(np.abs(w).max()) for w in x), 1.0)

    def test_samples_match_the_wav_file(self):
        (x, y, s), _ = self.speaker_split
        # File order: the first one is 0_george_0.wav.
        self.assertEqual((int(y[0]), datasets.FSDD_SPEAKERS[s[0]]), (0, "george"))
        with wave.open(os.path.join(FSDD_PATH, "0_george_0.wav")) as f:
            raw = np.frombuffer(f.readframes(f.getnframes()), "<i2")
        self.assertAllClose(x[0], raw / 32768.0)

    def test_official_and_random_splits(self):
        require_data("fsdd")
        (x, y, s), (x_test, y_test, s_test) = datasets.load_spoken_digits(
            FSDD_PATH, split="official", length=4000
        )
        self.assertEqual((x.shape, x_test.shape), ((2700, 4000), (300, 4000)))
        self.assertEqual(x.dtype, np.float32)
        np.testing.assert_array_equal(np.bincount(y_test), [30] * 10)
        np.testing.assert_array_equal(np.bincount(s_test), [50] * 6)
        # 0_george_0.wav (2,384 samples) is zero-padded to 4,000; 0_george_5
        # (5,145) is truncated.
        (full, _, _), _ = self.speaker_split
        self.assertEqual(len(full[0]), 2384)
        self.assertAllClose(x_test[0][:2384], full[0])
        self.assertEqual(float(np.abs(x_test[0][2384:]).max()), 0.0)
        with wave.open(os.path.join(FSDD_PATH, "0_george_5.wav")) as f:
            self.assertEqual(f.getnframes(), 5145)
            raw = np.frombuffer(f.readframes(4000), "<i2")
        self.assertAllClose(x[0], raw / 32768.0)

        (r, ry, rs), (rt, rty, rts) = datasets.load_spoken_digits(
            FSDD_PATH, split="random", length=20000, seed=0
        )
        self.assertEqual((len(r), len(rt)), (2400, 600))
        # Stratified by (digit, speaker): 10 of each pair's 50 held out.
        pairs = np.bincount(rty * 6 + rts, minlength=60)
        np.testing.assert_array_equal(pairs, [10] * 60)
        # Padding at the end with zeros.
        self.assertEqual(float(np.abs(r[:, 18262:]).max()), 0.0)

    def test_custom_folder_resampled_and_stereo(self):
        folder = self.get_temp_dir()
        rng = np.random.default_rng(0)
        for digit, speaker in [(1, "ann"), (2, "bob"), (1, "bob")]:
            samples = rng.integers(-1000, 1000, size=(160, 2), dtype=np.int16)
            with wave.open(os.path.join(folder, f"{digit}_{speaker}_0.wav"), "wb") as f:
                f.setnchannels(2)
                f.setsampwidth(2)
                f.setframerate(16000)
                f.writeframes(samples.tobytes())
        (x, y, s), (x_test, y_test, s_test) = datasets.load_spoken_digits(
            folder, test_speakers=["ann"], sample_rate=8000
        )
        self.assertEqual(datasets.spoken_digit_speakers(folder), ("ann", "bob"))
        self.assertEqual([len(w) for w in x + x_test], [80, 80, 80])
        np.testing.assert_array_equal(y_test, [1])
        np.testing.assert_array_equal(s, [1, 1])

    def test_missing_folder_raises(self):
        with self.assertRaisesRegex(
            FileNotFoundError, r"`load_spoken_digits`.*Received: path='/no/fsdd'"
        ):
            datasets.load_spoken_digits("/no/fsdd")

    def test_folder_without_recordings_raises(self):
        with self.assertRaisesRegex(ValueError, "found no"):
            datasets.load_spoken_digits(self.get_temp_dir())

    @parameterized.named_parameters(
        ("split", {"split": "kfold"}, "split='kfold'"),
        ("unknown_speaker", {"test_speakers": ("zoe",)}, r"test_speakers=\('zoe',\)"),
        ("string_speaker", {"test_speakers": "theo"}, "test_speakers='theo'"),
        ("all_speakers", {"test_speakers": datasets.FSDD_SPEAKERS}, "test_speakers="),
        ("rate", {"sample_rate": 0}, "sample_rate=0"),
        ("length", {"length": -5}, "length=-5"),
    )
    def test_invalid_arguments_raise(self, kwargs, received):
        with self.assertRaisesRegex(ValueError, "Received: " + received):
            datasets.load_spoken_digits(FSDD_PATH, **kwargs)

    def test_broken_wav_is_named(self):
        require_data("fsdd")
        folder = self.get_temp_dir()
        shutil.copy(os.path.join(FSDD_PATH, "0_george_0.wav"), folder)
        with open(os.path.join(folder, "1_george_0.wav"), "wb") as f:
            f.write(b"not a wav")
        with self.assertRaisesRegex(ValueError, "1_george_0.wav"):
            datasets.load_spoken_digits(folder, split="official")
