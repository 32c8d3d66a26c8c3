"""Audio augmentation ops that run inside `tf.data` graphs.

Keras has no audio augmentation layers, so these are written with TensorFlow
ops (imported lazily: `import keras_transfer` works without TensorFlow). Every
op is vectorised over frames: the phase vocoder accumulates phase with a
cumulative sum instead of a Python loop over frames.
"""

import math

import keras
import numpy as np

from keras_transfer.data import _seeding


def _tf():
    import tensorflow as tf

    return tf


def _check_number(name, value, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"`{name}` must be a number. Received: {name}={value!r}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"`{name}` must be finite. Received: {name}={value!r}")
    if low is not None and (value <= low if low_open else value < low):
        sign = ">" if low_open else ">="
        raise ValueError(f"`{name}` must be {sign} {low}. Received: {name}={value!r}")
    if high is not None and value > high:
        raise ValueError(f"`{name}` must be <= {high}. Received: {name}={value!r}")
    return value


def _check_audio(audio, frame_length, name="audio"):
    tf = _tf()
    audio = tf.convert_to_tensor(audio)
    if not audio.dtype.is_floating:
        raise ValueError(
            f"`{name}` must be a float waveform. Received: {name}.dtype={audio.dtype.name}"
        )
    if audio.shape.rank != 1:
        raise ValueError(
            f"`{name}` must be a 1-D waveform (samples,); map over a batch. "
            f"Received: {name}.shape={audio.shape}"
        )
    length = audio.shape[0]
    if length is not None and length < frame_length:
        raise ValueError(
            f"`{name}` is shorter than one FFT frame: {length} < "
            f"frame_length={frame_length}. Received: {name}.shape={audio.shape}"
        )
    if length is None:
        with tf.control_dependencies(
            [
                tf.debugging.assert_greater_equal(
                    tf.shape(audio)[0],
                    frame_length,
                    message=(
                        f"`{name}` is shorter than one FFT frame "
                        f"(frame_length={frame_length})"
                    ),
                )
            ]
        ):
            audio = tf.identity(audio)
    return tf.cast(audio, "float32")


def _seed_pair(seed):
    tf = _tf()
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    if isinstance(seed, int):
        return tf.constant([seed, 0], "int64")
    return tf.cast(seed, "int64")


def add_noise(audio, snr_db, seed=None):
    """Adds white Gaussian noise at exactly `snr_db` dB.

    The noise is rescaled so that `10 log10(mean(audio**2) / mean(noise**2))`
    equals `snr_db` for this clip (not only on average). A silent clip stays
    silent.

    Args:
        audio: float tensor `(samples,)`.
        snr_db: signal-to-noise ratio in dB (number or scalar tensor).
        seed: int, a `(2,)` int tensor (stateless seed) or None.

    Returns:
        A float32 tensor, same shape as `audio`.
    """
    tf = _tf()
    if not tf.is_tensor(snr_db):
        snr_db = _check_number("snr_db", snr_db)
    audio = tf.cast(tf.convert_to_tensor(audio), "float32")
    noise = tf.random.stateless_normal(
        tf.shape(audio), seed=tf.cast(_seed_pair(seed), "int32"), dtype="float32"
    )
    signal_power = tf.reduce_mean(tf.square(audio))
    noise_power = tf.reduce_mean(tf.square(noise))
    target = signal_power / tf.pow(10.0, tf.cast(snr_db, "float32") / 10.0)
    scale = tf.sqrt(tf.math.divide_no_nan(target, noise_power))
    return audio + scale * noise


def _stft(audio, frame_length, frame_step):
    tf = _tf()
    # Centre the frames (as librosa does) so the edges are reconstructed.
    padded = tf.pad(audio, [[frame_length // 2, frame_length // 2]], mode="REFLECT")
    # Zeros so the last frame reaches the end of the clip.
    extra = tf.math.floormod(-(tf.shape(padded)[0] - frame_length), frame_step)
    padded = tf.pad(padded, [[0, extra + frame_step]])
    return tf.signal.stft(
        padded,
        frame_length=frame_length,
        frame_step=frame_step,
        fft_length=frame_length,
        window_fn=tf.signal.hann_window,
    )


def _istft(stft, frame_length, frame_step, length):
    tf = _tf()
    audio = tf.signal.inverse_stft(
        stft,
        frame_length=frame_length,
        frame_step=frame_step,
        fft_length=frame_length,
        window_fn=tf.signal.inverse_stft_window_fn(
            frame_step, forward_window_fn=tf.signal.hann_window
        ),
    )
    audio = audio[frame_length // 2 :]
    audio = audio[:length]
    return tf.pad(audio, [[0, length - tf.shape(audio)[0]]])


def _angle(z):
    # `atan2` on the real and imaginary parts: the same numbers as
    # `tf.math.angle`, whose complex kernel was ~10x slower (measured).
    tf = _tf()
    return tf.math.atan2(tf.math.imag(z), tf.math.real(z))


def time_stretch(audio, rate, frame_length=512, frame_step=128):
    """Changes the duration by `1 / rate` without changing the pitch.

    A phase vocoder: STFT, magnitudes interpolated at fractional frame
    positions `0, rate, 2 rate, ...`, phases advanced by each bin's measured
    instantaneous frequency, inverse STFT. The output has
    `round(len(audio) / rate)` samples.

    Args:
        audio: float tensor `(samples,)`, at least `frame_length` samples.
        rate: speed factor > 0 (2.0 halves the duration).
        frame_length: FFT size (also the window length).
        frame_step: hop between frames; 1/4 of `frame_length` keeps the
            overlap-add faithful.

    Returns:
        A float32 tensor `(round(samples / rate),)`.

    Reference:
        Flanagan & Golden, "Phase vocoder", Bell System Technical Journal, 1966.
    """
    tf = _tf()
    if not tf.is_tensor(rate):
        rate = _check_number("rate", rate, low=0.0, low_open=True)
    audio = _check_audio(audio, frame_length)
    rate = tf.cast(rate, "float32")
    length = tf.cast(
        tf.round(tf.cast(tf.shape(audio)[0], "float32") / rate), "int32"
    )
    stft = _stft(audio, frame_length, frame_step)
    num_frames = tf.shape(stft)[0]
    num_bins = frame_length // 2 + 1
    steps = tf.range(0.0, tf.cast(num_frames, "float32"), rate)
    # Two zero frames at the end so `floor(step) + 1` is always valid.
    stft = tf.concat([stft, tf.zeros([2, num_bins], stft.dtype)], axis=0)
    index = tf.cast(tf.floor(steps), "int32")
    alpha = (steps - tf.floor(steps))[:, None]
    # Magnitudes and phases once per input frame, then gathered per step:
    # `atan2` is the costliest op here, and the steps outnumber the frames.
    frame_magnitude = tf.abs(stft)
    frame_phase = _angle(stft)
    left_phase = tf.gather(frame_phase, index)
    magnitude = (1.0 - alpha) * tf.gather(frame_magnitude, index) + alpha * tf.gather(
        frame_magnitude, index + 1
    )
    advance = (
        2.0 * math.pi * frame_step * tf.range(num_bins, dtype="float32") / frame_length
    )
    delta = tf.gather(frame_phase, index + 1) - left_phase - advance
    delta = delta - 2.0 * math.pi * tf.round(delta / (2.0 * math.pi))
    accumulated = tf.cumsum(advance + delta, axis=0, exclusive=True)
    # Anchor the phases on a frame that lies wholly inside the clip: the
    # padded edge frame has inter-bin phase relations of its own, and
    # carrying them along makes overlapping frames cancel (a pure tone came
    # out at half its amplitude for rates < 1).
    anchor_frame = tf.minimum(2, num_frames - 1)
    anchor = tf.reduce_sum(tf.cast(steps < tf.cast(anchor_frame, "float32"), "int32"))
    anchor = tf.minimum(anchor, tf.shape(steps)[0] - 1)
    phase = (
        tf.gather(left_phase, anchor)[None, :]
        + accumulated
        - accumulated[anchor][None, :]
    )
    # Before the anchor, read the phase off the input frames directly.
    direct = left_phase + alpha * (advance + delta)
    before = (tf.range(tf.shape(steps)[0]) < anchor)[:, None]
    phase = tf.where(before, direct, phase)
    stretched = tf.complex(magnitude * tf.cos(phase), magnitude * tf.sin(phase))
    return _istft(stretched, frame_length, frame_step, length)


def _resample_linear(audio, length):
    tf = _tf()
    source = tf.shape(audio)[0]
    positions = tf.cast(tf.range(length), "float32") * (
        tf.cast(source, "float32") / tf.cast(length, "float32")
    )
    left = tf.cast(tf.floor(positions), "int32")
    right = tf.minimum(left + 1, source - 1)
    alpha = positions - tf.floor(positions)
    return (1.0 - alpha) * tf.gather(audio, left) + alpha * tf.gather(audio, right)


def pitch_shift(audio, semitones, frame_length=512, frame_step=128):
    """Shifts the pitch by `semitones` without changing the duration.

    Time-stretch by `2 ** (-semitones / 12)` (phase vocoder), then resample
    back to the original length, which multiplies every frequency by
    `2 ** (semitones / 12)`.

    Args:
        audio: float tensor `(samples,)`, at least `frame_length` samples.
        semitones: number (negative lowers the pitch).
        frame_length, frame_step: as in `time_stretch`.

    Returns:
        A float32 tensor with the same number of samples as `audio`.
    """
    tf = _tf()
    if not tf.is_tensor(semitones):
        semitones = _check_number("semitones", semitones)
    audio = _check_audio(audio, frame_length)
    factor = tf.pow(2.0, tf.cast(semitones, "float32") / 12.0)
    stretched = time_stretch(audio, 1.0 / factor, frame_length, frame_step)
    return _resample_linear(stretched, tf.shape(audio)[0])


def spec_augment(
    spectrogram,
    time_masks=2,
    time_mask_width=10,
    freq_masks=2,
    freq_mask_width=8,
    mask_value=None,
    seed=None,
):
    """SpecAugment time and frequency masking of one spectrogram.

    Each mask has a width drawn uniformly in `[0, max width]` and a start drawn
    uniformly so that it fits; masked cells are set to `mask_value`, by
    default the spectrogram's mean (the paper's 0 after normalisation; a
    literal 0 in a log spectrogram would be a loud band).

    Args:
        spectrogram: float tensor `(frames, bins)`.
        time_masks, freq_masks: number of masks along each axis (>= 0).
        time_mask_width, freq_mask_width: the largest mask width; must not
            exceed the axis length (checked at run time).
        mask_value: value written into masked cells; None for the mean.
        seed: int, a `(2,)` int tensor or None.

    Returns:
        A tensor like `spectrogram`.

    Reference:
        Park et al., "SpecAugment", Interspeech 2019.
        https://arxiv.org/abs/1904.08779
    """
    tf = _tf()
    for name, value in (
        ("time_masks", time_masks),
        ("time_mask_width", time_mask_width),
        ("freq_masks", freq_masks),
        ("freq_mask_width", freq_mask_width),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(
                f"`{name}` must be a non-negative int. Received: {name}={value!r}"
            )
    spectrogram = tf.convert_to_tensor(spectrogram)
    if spectrogram.shape.rank != 2:
        raise ValueError(
            "`spectrogram` must have shape (frames, bins); map over a batch. "
            f"Received: spectrogram.shape={spectrogram.shape}"
        )
    seed = _seed_pair(seed)
    shape = tf.shape(spectrogram)
    checks = []
    keep = tf.ones_like(spectrogram, dtype="bool")
    draw = 0
    for axis, count, width in ((0, time_masks, time_mask_width), (1, freq_masks, freq_mask_width)):
        if count == 0:
            continue
        size = shape[axis]
        checks.append(
            tf.debugging.assert_less_equal(
                width,
                size,
                message=f"mask width {width} is larger than spectrogram axis {axis}",
            )
        )
        positions = tf.range(size)
        for _ in range(count):
            draw += 1
            sub = tf.cast(tf.random.experimental.stateless_fold_in(seed, draw), "int32")
            w = tf.random.stateless_uniform((), sub, 0, width + 1, dtype="int32")
            sub2 = tf.cast(
                tf.random.experimental.stateless_fold_in(seed, 1000 + draw), "int32"
            )
            start = tf.random.stateless_uniform(
                (), sub2, 0, tf.maximum(size - w + 1, 1), dtype="int32"
            )
            inside = (positions >= start) & (positions < start + w)
            inside = inside[:, None] if axis == 0 else inside[None, :]
            keep = keep & ~inside
    with tf.control_dependencies(checks):
        if mask_value is None:
            fill = tf.reduce_mean(spectrogram)
        else:
            fill = tf.cast(mask_value, spectrogram.dtype)
        return tf.where(keep, spectrogram, fill)


def log_spectrogram(audio, frame_length=256, frame_step=128):
    """`log(|STFT| + 1e-6)` of one clip, `(frames, frame_length // 2 + 1)`."""
    tf = _tf()
    stft = tf.signal.stft(
        tf.cast(audio, "float32"),
        frame_length=frame_length,
        frame_step=frame_step,
        fft_length=frame_length,
    )
    return tf.math.log(tf.abs(stft) + 1e-6)


def _check_range(name, value, low=None, low_open=False):
    if value is None:
        return None
    values = value if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2:
        raise ValueError(
            f"`{name}` must be None, a number or a (low, high) pair. "
            f"Received: {name}={value!r}"
        )
    values = tuple(_check_number(name, v, low=low, low_open=low_open) for v in values)
    if values[0] > values[1]:
        raise ValueError(
            f"`{name}` must have low <= high. Received: {name}={value!r}"
        )
    return values


@keras.saving.register_keras_serializable(package="keras_transfer")
class AudioAugmentation:
    """Random noise, time stretch, pitch shift and SpecAugment for `tf.data`.

    Each op is applied to a clip with probability `probability`, with its
    amount drawn uniformly from its range. Every draw derives from a
    per-example stateless seed, so `dataset()` gives the same examples from
    run to run for a fixed `seed`, even with a parallel map, and new draws at
    each epoch. The shuffle and the seeds are stateless draws from `seed`
    alone: every call gives the same clips in the same order, whatever
    TensorFlow's global seed and whatever ran before.

    Args:
        snr_db: None (off), a number or a `(low, high)` range in dB.
        stretch: None (off) or a `(low, high)` range of speed rates > 0.
        semitones: None (off) or a `(low, high)` range of pitch shifts.
        probability: chance, in [0, 1], that each op is applied to a clip.
        time_masks, time_mask_width, freq_masks, freq_mask_width: SpecAugment
            masks, applied by `dataset()` to the output of `features`.
        frame_length, frame_step: STFT sizes of the phase vocoder.
        seed: int or None.

    Example:

    >>> import numpy as np
    >>> import keras_transfer
    >>> aug = keras_transfer.data.AudioAugmentation(
    ...     snr_db=(10, 20), semitones=(-2, 2), seed=0)
    >>> clips = [np.zeros(n, "float32") for n in (4000, 6000, 5000)]
    >>> ds = aug.dataset(clips, [0, 1, 2], length=4000, batch_size=2)
    >>> [tuple(x.shape) for x, _ in ds]
    [(2, 4000), (1, 4000)]
    """

    def __init__(
        self,
        snr_db=None,
        stretch=None,
        semitones=None,
        probability=1.0,
        time_masks=0,
        time_mask_width=0,
        freq_masks=0,
        freq_mask_width=0,
        frame_length=512,
        frame_step=128,
        seed=None,
    ):
        self.snr_db = _check_range("snr_db", snr_db)
        self.stretch = _check_range("stretch", stretch, low=0.0, low_open=True)
        self.semitones = _check_range("semitones", semitones)
        self.probability = _check_number("probability", probability, low=0.0, high=1.0)
        for name, value in (
            ("time_masks", time_masks),
            ("time_mask_width", time_mask_width),
            ("freq_masks", freq_masks),
            ("freq_mask_width", freq_mask_width),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"`{name}` must be a non-negative int. Received: {name}={value!r}"
                )
        self.time_masks = time_masks
        self.time_mask_width = time_mask_width
        self.freq_masks = freq_masks
        self.freq_mask_width = freq_mask_width
        for name, value in (("frame_length", frame_length), ("frame_step", frame_step)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"`{name}` must be a positive int. Received: {name}={value!r}"
                )
        if frame_step > frame_length:
            raise ValueError(
                "`frame_step` must be <= `frame_length`. Received: "
                f"frame_step={frame_step}, frame_length={frame_length}"
            )
        self.frame_length = frame_length
        self.frame_step = frame_step
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed

    def __call__(self, audio, seed=None):
        """Augments one waveform `(samples,)`; `seed` as in `add_noise`."""
        tf = _tf()
        audio = _check_audio(audio, self.frame_length)
        seed = _seed_pair(seed if seed is not None else self.seed)

        def draw(index, bounds):
            sub = tf.cast(tf.random.experimental.stateless_fold_in(seed, index), "int32")
            u = tf.random.stateless_uniform((2,), sub)
            value = bounds[0] + (bounds[1] - bounds[0]) * u[1]
            return u[0] < self.probability, value

        n, s = self.frame_length, self.frame_step
        if self.stretch is not None or self.semitones is not None:
            # One phase-vocoder pass does both: stretching by `rate / factor`
            # then resampling to `len / rate` samples changes the duration by
            # `1 / rate` and every frequency by `factor`.
            false = tf.constant(False)
            stretch, rate = draw(1, self.stretch) if self.stretch else (false, 1.0)
            shift, semitones = draw(2, self.semitones) if self.semitones else (false, 0.0)
            rate = tf.where(stretch, rate, 1.0)
            factor = tf.where(shift, tf.pow(2.0, semitones / 12.0), 1.0)
            length = tf.shape(audio)[0]
            out_length = tf.where(
                stretch,
                tf.cast(tf.round(tf.cast(length, "float32") / rate), "int32"),
                length,
            )

            def vocoder():
                y = time_stretch(audio, rate / factor, n, s)
                return tf.cond(
                    shift, lambda: _resample_linear(y, out_length), lambda: y
                )

            audio = tf.cond(stretch | shift, vocoder, lambda: audio)
        if self.snr_db is not None:
            apply, snr = draw(3, self.snr_db)
            noise_seed = tf.random.experimental.stateless_fold_in(seed, 4)
            audio = tf.cond(
                apply, lambda: add_noise(audio, snr, noise_seed), lambda: audio
            )
        return audio

    def _fix_length(self, audio, length):
        tf = _tf()
        audio = audio[:length]
        return tf.pad(audio, [[0, length - tf.shape(audio)[0]]])

    def dataset(
        self,
        clips,
        labels,
        length,
        batch_size=32,
        shuffle=True,
        features=None,
        num_parallel_calls=None,
    ):
        """A batched, augmented, prefetched `tf.data.Dataset` of clips.

        Args:
            clips: a list of 1-D float arrays (any lengths, each at least
                `frame_length` samples) or a 2-D array.
            labels: array `(N,)`; passed through unchanged.
            length: every clip is cut or zero-padded at the end to this many
                samples after augmentation, so clips batch together.
            batch_size: positive int.
            shuffle: reshuffle each epoch (seeded by `seed`).
            features: None (waveforms) or a function of one waveform, e.g.
                `keras_transfer.data.log_spectrogram`; SpecAugment masks
                are applied to its output.
            num_parallel_calls: for `Dataset.map`; `tf.data.AUTOTUNE` if None.

        Returns:
            A `tf.data.Dataset` of `(features, labels)` batches.
        """
        tf = _tf()
        clips = [np.asarray(c, dtype="float32") for c in clips]
        labels = np.asarray(labels)
        if len(clips) != len(labels):
            raise ValueError(
                "`clips` and `labels` must have the same length. "
                f"Received: len(clips)={len(clips)}, len(labels)={len(labels)}"
            )
        if len(clips) == 0:
            raise ValueError("`clips` is empty. Received: clips=[]")
        for i, clip in enumerate(clips):
            if clip.ndim != 1 or clip.shape[0] < self.frame_length:
                raise ValueError(
                    f"Every clip must be 1-D with at least frame_length="
                    f"{self.frame_length} samples. Received: clips[{i}].shape="
                    f"{clip.shape}"
                )
        if not isinstance(length, int) or length < self.frame_length:
            raise ValueError(
                f"`length` must be an int >= frame_length={self.frame_length}. "
                f"Received: length={length!r}"
            )
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(
                f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
            )
        ragged = tf.RaggedTensor.from_row_lengths(
            np.concatenate(clips), [len(c) for c in clips]
        )
        masks = self.time_masks or self.freq_masks

        def augment(seed, clip, label):
            audio = self._fix_length(self(clip, seed), length)
            if features is not None:
                audio = features(audio)
                if masks:
                    audio = spec_augment(
                        audio,
                        self.time_masks,
                        self.time_mask_width,
                        self.freq_masks,
                        self.freq_mask_width,
                        seed=tf.random.experimental.stateless_fold_in(seed, 5),
                    )
            return audio, label

        calls = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
        ds = _seeding.seeded_examples(
            (ragged, np.asarray(labels)), _seeding.resolve_seed(self.seed), shuffle
        ).map(
            lambda s, xy: augment(s, *xy),
            num_parallel_calls=calls,
            deterministic=True,
        )
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def get_config(self):
        return {
            "snr_db": self.snr_db and list(self.snr_db),
            "stretch": self.stretch and list(self.stretch),
            "semitones": self.semitones and list(self.semitones),
            "probability": self.probability,
            "time_masks": self.time_masks,
            "time_mask_width": self.time_mask_width,
            "freq_masks": self.freq_masks,
            "freq_mask_width": self.freq_mask_width,
            "frame_length": self.frame_length,
            "frame_step": self.frame_step,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
