import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_transfer.data import AudioAugmentation
from keras_transfer.data import add_noise
from keras_transfer.data import log_spectrogram
from keras_transfer.data import pitch_shift
from keras_transfer.data import spec_augment
from keras_transfer.data import time_stretch
from tests.testing import TestCase

SR = 8000


def _tone(freq=440.0, seconds=1.0):
    t = np.arange(int(SR * seconds)) / SR
    return np.sin(2 * np.pi * freq * t).astype("float32")


def _peak_frequency(y):
    y = np.asarray(y, "float64")
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)), 8 * len(y)))
    return np.argmax(spectrum) * SR / (8 * len(y))


def _snr_db(clean, noisy):
    noise = np.asarray(noisy) - clean
    return 10 * np.log10(np.mean(clean**2) / np.mean(noise**2))


def _numpy_time_stretch(x, rate, n=512, hop=128):
    """The same phase vocoder, frame by frame in NumPy (float64)."""
    x = np.asarray(x, "float64")
    pad = np.pad(x, n // 2, mode="reflect")
    pad = np.pad(pad, (0, (-(len(pad) - n)) % hop + hop))
    window = np.hanning(n + 1)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(pad, n)[::hop]
    stft = np.fft.rfft(frames * window, axis=1)
    stft = np.concatenate([stft, np.zeros((2, stft.shape[1]))])
    advance = 2 * np.pi * hop * np.arange(stft.shape[1]) / n
    steps = np.arange(0, len(frames), rate)
    anchor = min(int(np.sum(steps < min(2, len(frames) - 1))), len(steps) - 1)
    out = np.zeros((len(steps), stft.shape[1]), complex)
    phase = None
    for t, step in enumerate(steps):
        left, right = stft[int(step)], stft[int(step) + 1]
        alpha = step % 1
        delta = np.angle(right) - np.angle(left) - advance
        delta = delta - 2 * np.pi * np.round(delta / (2 * np.pi))
        if t < anchor:
            current = np.angle(left) + alpha * (advance + delta)
        else:
            current = np.angle(left) if t == anchor else phase
        magnitude = (1 - alpha) * np.abs(left) + alpha * np.abs(right)
        out[t] = magnitude * np.exp(1j * current)
        phase = current + advance + delta
    chunks = np.fft.irfft(out, n, axis=1) * window
    y = np.zeros(len(steps) * hop + n)
    norm = np.zeros_like(y)
    for t in range(len(steps)):
        y[t * hop : t * hop + n] += chunks[t]
        norm[t * hop : t * hop + n] += window**2
    # The inverse STFT divides by the summed squared window of a full overlap.
    y = (y / (norm.max()))[n // 2 :]
    length = int(round(len(x) / rate))
    return np.pad(y[:length], (0, max(0, length - len(y))))


class AudioOpsTest(TestCase):
    @parameterized.parameters(-7, -2, 3, 5, 12)
    def test_pitch_shift_moves_a_tone_by_n_semitones(self, semitones):
        out = pitch_shift(_tone(440.0), semitones)
        self.assertEqual(out.shape, (SR,))
        expected = 440.0 * 2 ** (semitones / 12)
        # 1 Hz spectral resolution; the shift must land within 0.5%.
        self.assertAllClose(_peak_frequency(out), expected, rtol=5e-3)
        middle = np.asarray(out)[SR // 4 : 3 * SR // 4]
        self.assertAllClose(np.sqrt(np.mean(middle**2)), np.sqrt(0.5), rtol=0.03)

    @parameterized.parameters(0.5, 0.8, 1.25, 2.0)
    def test_time_stretch_changes_length_not_pitch(self, rate):
        out = time_stretch(_tone(440.0), rate)
        self.assertEqual(out.shape, (round(SR / rate),))
        self.assertAllClose(_peak_frequency(out), 440.0, rtol=5e-3)
        # The tone keeps its loudness: phases stay coherent across bins.
        middle = np.asarray(out)[len(out) // 4 : 3 * len(out) // 4]
        self.assertAllClose(np.sqrt(np.mean(middle**2)), np.sqrt(0.5), rtol=0.05)

    @parameterized.parameters(0.8, 1.0, 1.25)
    def test_time_stretch_matches_a_numpy_reference(self, rate):
        x = np.random.default_rng(0).normal(size=3000).astype("float32")
        out = np.asarray(time_stretch(x, rate))
        expected = _numpy_time_stretch(x, rate)
        self.assertEqual(out.shape, expected.shape)
        # Away from the edges, where overlap-add is complete.
        self.assertAllClose(out[512:-512], expected[512:-512], atol=1e-3)

    def test_time_stretch_rate_one_is_near_identity(self):
        x = _tone(300.0) + 0.5 * _tone(1234.0)
        out = np.asarray(time_stretch(x, 1.0))
        self.assertEqual(out.shape, x.shape)
        # Exact away from the clip's first and last half-frame (256 samples),
        # where the reflect padding of the first and last frames shows.
        self.assertAllClose(out[256:-256], x[256:-256], atol=2e-3)
        self.assertAllClose(out, x, atol=0.25)

    @parameterized.parameters(-5.0, 0.0, 10.0, 30.0)
    def test_add_noise_hits_the_snr(self, snr):
        x = _tone(440.0) * 0.3
        out = add_noise(x, snr, seed=3)
        self.assertAllClose(_snr_db(x, out), snr, atol=1e-3)
        again = add_noise(x, snr, seed=3)
        self.assertAllClose(out, again, atol=0)

    def test_add_noise_on_silence_stays_silent(self):
        out = add_noise(np.zeros(1000, "float32"), 10.0, seed=0)
        self.assertAllClose(out, np.zeros(1000), atol=0)

    def test_spec_augment_masks_full_bands(self):
        spec = np.ones((50, 20), "float32")
        seen_time, seen_freq = set(), set()
        for seed in range(20):
            out = np.asarray(
                spec_augment(spec, time_masks=1, time_mask_width=8,
                             freq_masks=1, freq_mask_width=5, mask_value=0.0,
                             seed=seed)
            )
            masked_rows = np.where((out == 0).all(axis=1))[0]
            masked_cols = np.where((out == 0).all(axis=0))[0]
            # Every masked cell lies in a fully masked row or column.
            zero = out == 0
            band = np.zeros_like(zero)
            band[masked_rows] = True
            band[:, masked_cols] = True
            self.assertAllEqual(zero, band)
            # One contiguous band per axis, no wider than the maximum.
            self.assertLessEqual(len(masked_rows), 8)
            self.assertLessEqual(len(masked_cols), 5)
            if len(masked_rows):
                self.assertEqual(masked_rows[-1] - masked_rows[0] + 1, len(masked_rows))
            seen_time.add(len(masked_rows))
            seen_freq.add(len(masked_cols))
        self.assertGreater(len(seen_time), 3)
        self.assertGreater(len(seen_freq), 2)

    @parameterized.named_parameters(
        ("snr_nan", lambda: add_noise(_tone(), float("nan")), "snr_db=nan"),
        ("rate_zero", lambda: time_stretch(_tone(), 0.0), "rate=0.0"),
        ("rate_negative", lambda: time_stretch(_tone(), -1.5), "rate=-1.5"),
        ("too_short", lambda: time_stretch(np.zeros(100, "float32"), 1.2), "shorter than one FFT frame"),
        ("pitch_too_short", lambda: pitch_shift(np.zeros(511, "float32"), 2), "shorter than one FFT frame"),
        ("int_audio", lambda: pitch_shift(np.zeros(1000, "int16"), 2), "float waveform"),
        ("batched", lambda: time_stretch(np.zeros((2, 1000), "float32"), 2.0), "1-D waveform"),
        ("masks", lambda: spec_augment(np.ones((5, 5)), time_masks=-1), "time_masks=-1"),
    )
    def test_invalid_input_raises(self, fn, message):
        with self.assertRaisesRegex(ValueError, message):
            fn()

    def test_short_audio_inside_graph_raises(self):
        fn = tf.function(
            lambda x: time_stretch(x, 1.5),
            input_signature=[tf.TensorSpec([None], tf.float32)],
        )
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "shorter than one FFT frame"):
            fn(tf.zeros([100]))

    def test_spec_augment_fills_with_the_mean_by_default(self):
        spec = np.arange(40 * 10, dtype="float32").reshape(40, 10)
        out = np.asarray(spec_augment(spec, time_masks=1, time_mask_width=20,
                                      freq_masks=0, seed=1))
        changed = out != spec
        self.assertTrue(changed.any())
        self.assertAllClose(out[changed], np.full(changed.sum(), spec.mean()))

    def test_mask_wider_than_spectrogram_raises(self):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "larger than"):
            spec_augment(np.ones((5, 20), "float32"), time_masks=1, time_mask_width=6)


class AudioAugmentationTest(TestCase):
    def _clips(self):
        rng = np.random.default_rng(0)
        return [rng.normal(size=n).astype("float32") for n in (4000, 6500, 3000, 5200, 4400)]

    def test_dataset_is_reproducible_and_keeps_every_clip(self):
        clips, labels = self._clips(), np.arange(5)

        def run(seed):
            aug = AudioAugmentation(
                snr_db=(5, 20), stretch=(0.8, 1.25), semitones=(-2, 2),
                probability=0.7, time_masks=1, time_mask_width=4,
                freq_masks=1, freq_mask_width=8, seed=seed,
            )
            ds = aug.dataset(clips, labels, length=4000, batch_size=2,
                             features=log_spectrogram)
            return [[(x.numpy(), y.numpy()) for x, y in ds] for _ in range(2)]

        a, b, c = run(1), run(1), run(2)
        for epoch_a, epoch_b in zip(a, b):
            for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
                self.assertAllClose(xa, xb, atol=0)
                self.assertAllEqual(ya, yb)
        x0 = np.concatenate([x for x, _ in a[0]])
        self.assertEqual(x0.shape, (5, 30, 129))
        self.assertAllEqual(np.sort(np.concatenate([y for _, y in a[0]])), np.arange(5))
        self.assertFalse(np.allclose(x0, np.concatenate([x for x, _ in a[1]])))
        self.assertFalse(np.allclose(x0, np.concatenate([x for x, _ in c[0]])))

    def test_each_op_is_applied_as_configured(self):
        x = _tone(440.0)
        pitch = AudioAugmentation(semitones=(4, 4), seed=0)(x)
        self.assertAllClose(_peak_frequency(pitch), 440 * 2 ** (4 / 12), rtol=5e-3)
        stretched = AudioAugmentation(stretch=(2.0, 2.0), seed=0)(x)
        self.assertEqual(stretched.shape, (SR // 2,))
        noisy = AudioAugmentation(snr_db=12.0, seed=0)(x)
        self.assertAllClose(_snr_db(x, noisy), 12.0, atol=1e-3)
        both = AudioAugmentation(stretch=(1.25, 1.25), semitones=(-3, -3), seed=0)(x)
        self.assertEqual(both.shape, (round(SR / 1.25),))
        self.assertAllClose(_peak_frequency(both), 440 * 2 ** (-3 / 12), rtol=5e-3)
        untouched = AudioAugmentation(snr_db=12.0, probability=0.0, seed=0)(x)
        self.assertAllClose(untouched, x, atol=0)

    def test_probability_is_respected(self):
        aug = AudioAugmentation(snr_db=10.0, probability=0.3)
        x = _tone(440.0, 0.1)
        changed = [
            not np.array_equal(np.asarray(aug(x, seed=s)), x) for s in range(200)
        ]
        self.assertAllClose(np.mean(changed), 0.3, atol=0.1)

    @parameterized.named_parameters(
        ("probability", {"probability": 1.5}, "probability=1.5"),
        ("probability_negative", {"probability": -0.1}, "probability=-0.1"),
        ("snr_nan", {"snr_db": float("nan")}, "snr_db=nan"),
        ("stretch_zero", {"stretch": (0.0, 1.2)}, "stretch=0.0"),
        ("stretch_order", {"stretch": (1.2, 0.8)}, "low <= high"),
        ("frame_step", {"frame_step": 1024}, "frame_step"),
    )
    def test_invalid_argument_raises(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            AudioAugmentation(**kwargs)

    def test_short_clip_in_dataset_raises(self):
        aug = AudioAugmentation(snr_db=10.0)
        clips = [np.zeros(1000, "float32"), np.zeros(100, "float32")]
        with self.assertRaisesRegex(ValueError, r"clips\[1\].shape=\(100,\)"):
            aug.dataset(clips, [0, 1], length=1000)

    def test_config_round_trip(self):
        aug = AudioAugmentation(snr_db=(5, 20), semitones=(-1, 1), seed=4)
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(aug)
        )
        self.assertIsInstance(restored, AudioAugmentation)
        self.assertEqual(restored.get_config(), aug.get_config())
        x = _tone(440.0, 0.2)
        self.assertAllClose(aug(x), restored(x), atol=0)
