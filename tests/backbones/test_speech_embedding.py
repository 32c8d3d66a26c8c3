import os

import keras
import numpy as np
import pytest
from absl.testing import parameterized

from keras_transfer import callbacks
from keras_transfer import datasets
from keras_transfer import strategies
from keras_transfer.backbones import load_base
from keras_transfer.backbones import speech_embedding
from keras_transfer.backbones.speech_embedding import FlooredLeakyReLU
from keras_transfer.backbones.speech_embedding import SlidingWindows
from keras_transfer.backbones.speech_embedding import SpeechMelSpectrogram
from keras_transfer.backbones.speech_embedding import WindowPooling
from keras_transfer.layers import LoRAConv2D
from tests.testing import FSDD_PATH
from tests.testing import TestCase

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
REFERENCE = os.path.join(FIXTURES, "speech_embedding_reference.npz")
BLOCK_CONVS = (3, 4, 4, 4, 4)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _clip(name):
    return datasets.read_wav(os.path.join(FSDD_PATH, name), sample_rate=16000)


class LayersTest(TestCase):
    def test_floored_leaky_relu_basics(self):
        self.run_layer_test(
            FlooredLeakyReLU,
            init_kwargs={"negative_slope": 0.2, "floor": -0.4},
            input_shape=(2, 3),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=0,
        )

    def test_floored_leaky_relu_values(self):
        x = np.array([-5.0, -2.0, -1.0, 0.0, 0.5, 3.0], "float32")
        out = _numpy(FlooredLeakyReLU(0.2, -0.4)(x))
        # max(leaky(x), -0.4): -5 -> -1 -> -0.4, -2 -> -0.4, -1 -> -0.2.
        self.assertAllClose(out, [-0.4, -0.4, -0.2, 0.0, 0.5, 3.0])

    def test_sliding_windows_match_slicing(self):
        frames = np.random.default_rng(0).normal(size=(2, 23, 3)).astype("float32")
        out = _numpy(SlidingWindows(window=5, stride=4)(frames))
        # (23 - 5) // 4 + 1 = 5 windows per row, folded into the batch.
        expected = np.stack(
            [frames[b, 4 * i:4 * i + 5] for b in range(2) for i in range(5)]
        )[..., None]
        self.assertAllClose(out, expected)

    def test_sliding_windows_symbolic_unknown_length(self):
        inputs = keras.Input((None, 3))
        outputs = SlidingWindows(window=5, stride=2)(inputs)
        self.assertEqual(tuple(outputs.shape), (None, 5, 3, 1))
        model = keras.Model(inputs, outputs)
        x = np.arange(2 * 9 * 3, dtype="float32").reshape(2, 9, 3)
        self.assertEqual(model.predict(x, verbose=0).shape, (6, 5, 3, 1))

    @parameterized.named_parameters(
        ("mean_max", "mean_max", 4),
        ("mean", "mean", 2),
        ("max", "max", 2),
        ("none", None, None),
    )
    def test_window_pooling(self, pooling, dim):
        emb = np.random.default_rng(1).normal(size=(6, 2)).astype("float32")
        frames = np.zeros((2, 10, 3), "float32")
        out = _numpy(WindowPooling(pooling)([emb, frames]))
        windows = emb.reshape(2, 3, 2)
        expected = {
            "mean_max": np.concatenate(
                [windows.mean(1), windows.max(1)], axis=-1
            ),
            "mean": windows.mean(1),
            "max": windows.max(1),
            None: windows,
        }[pooling]
        self.assertAllClose(out, expected)
        if dim is not None:
            self.assertEqual(out.shape, (2, dim))

    def test_front_end_stays_float32_under_mixed_precision(self):
        layer = SpeechMelSpectrogram(dtype="mixed_float16")
        self.assertEqual(layer.compute_dtype, "float32")
        self.assertNotIn("dtype", layer.get_config())

    @parameterized.named_parameters(
        ("pooling", {"pooling": "avg"}, "`pooling` must be one of"),
        ("stride", {"window_stride": 0}, "`window_stride` must be"),
        ("padding", {"padding": -0.1}, "`padding` must be"),
        ("length", {"input_length": 0}, "`input_length` must be"),
        ("weights", {"weights": "imagenet"}, "`weights` must be"),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            speech_embedding(**kwargs)

    def test_bad_layer_arguments(self):
        with self.assertRaisesRegex(ValueError, "`padding` must be"):
            SpeechMelSpectrogram(padding=-1)
        with self.assertRaisesRegex(ValueError, "`stride` must be"):
            SlidingWindows(76, 0)
        with self.assertRaisesRegex(ValueError, "`floor` must be"):
            FlooredLeakyReLU(floor=1.0)

    def test_untrained_shapes(self):
        model = speech_embedding(weights=None, window_stride=10, padding=0.0)
        # 12,512 samples = exactly one window of 76 frames.
        self.assertEqual(model.predict(np.zeros((1, 12512)), verbose=0).shape, (1, 192))
        model = speech_embedding(weights=None, pooling=None, padding=0.0,
                                 window_stride=10)
        # Shorter than a window: padded up to one; 76 + 25 frames: 3 windows.
        self.assertEqual(model.predict(np.zeros((2, 100)), verbose=0).shape, (2, 1, 96))
        x = np.zeros((2, 12512 + 25 * 160), "float32")
        self.assertEqual(model.predict(x, verbose=0).shape, (2, 3, 96))


@pytest.mark.large
class SpeechEmbeddingReferenceTest(TestCase):
    """The port against onnxruntime on real FSDD clips (fixture made by
    fixtures/make_speech_embedding_reference.py)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ref = np.load(REFERENCE)
        cls.model = speech_embedding(
            pooling=None, window_stride=int(cls.ref["stride"]),
            padding=float(cls.ref["padding"]) / 16000,
        )
        cls.clips = [_clip(str(name)) for name in cls.ref["clips"]]

    def test_mel_frames_match_onnx(self):
        mel = self.model.get_layer("mel_spectrogram")
        for k, clip in enumerate(self.clips):
            self.assertEqual(len(clip), int(self.ref[f"num_samples_{k}"]))
            frames = _numpy(mel(clip[None]))[0]
            self.assertEqual(len(frames), int(self.ref[f"num_frames_{k}"]))
            self.assertAllClose(
                frames[self.ref[f"mel_rows_{k}"]], self.ref[f"mel_{k}"],
                atol=1e-4, rtol=0,
            )

    def test_embeddings_match_onnx(self):
        for k, clip in enumerate(self.clips):
            windows = self.model.predict(clip[None], verbose=0)[0]
            self.assertAllClose(
                windows[self.ref[f"window_rows_{k}"]], self.ref[f"windows_{k}"],
                atol=1e-4, rtol=0,
            )
            # The pooled vectors cover every window.
            self.assertAllClose(windows.mean(0), self.ref[f"mean_{k}"], atol=1e-4, rtol=0)
            self.assertAllClose(windows.max(0), self.ref[f"max_{k}"], atol=1e-4, rtol=0)

    def test_batched_clips_keep_their_own_floor(self):
        # Zero-padding a clip to batch it with a longer one only appends
        # silent windows: its own windows are unchanged.
        short, long = self.clips[1], self.clips[2]
        batch = datasets.pad_clips([short, long])
        out = self.model.predict(batch, batch_size=2, verbose=0)
        alone = self.model.predict(short[None], verbose=0)[0]
        self.assertAllClose(out[0, : len(alone)], alone, atol=1e-4, rtol=0)

    def test_mean_max_pooling_and_load_base(self):
        base = load_base(
            "speech_embedding", window_stride=int(self.ref["stride"])
        )
        self.assertEqual((base.modality, base.output_dim), ("audio", 192))
        pooled = base.model.predict(self.clips[0][None], verbose=0)[0]
        expected = np.concatenate([self.ref["mean_0"], self.ref["max_0"]])
        self.assertAllClose(pooled, expected, atol=1e-4, rtol=0)


@pytest.mark.large
class SpeechEmbeddingTransferTest(TestCase):
    """The base in the package's tools: classifier, layer groups, LoRA,
    save/load, mixed precision, domain similarity."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.base = speech_embedding(window_stride=16, padding=0.25)
        rng = np.random.default_rng(0)
        cls.x = (0.1 * rng.normal(size=(4, 8000))).astype("float32")
        cls.y = np.array([0, 1, 0, 1])

    def test_layer_groups_are_the_blocks(self):
        groups = strategies.layer_groups(self.base, blocks="auto")
        self.assertEqual(
            [[layer.name for layer in g] for g in groups],
            [
                [f"block{b + 1}{chr(97 + j)}_conv" for j in range(n)]
                for b, n in enumerate(BLOCK_CONVS)
            ] + [["top_conv"]],
        )
        self.assertEqual(
            sum(layer.count_params() for g in groups for layer in g), 328_128
        )

    def test_classifier_fits_saves_and_loads(self):
        model = strategies.build_classifier(self.base, num_classes=2)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(self.x, self.y, epochs=1, batch_size=2, verbose=0)
        path = os.path.join(self.get_temp_dir(), "speech.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(
            loaded.predict(self.x, verbose=0), model.predict(self.x, verbose=0),
            atol=1e-5,
        )
        loaded.fit(self.x, self.y, epochs=1, batch_size=2, verbose=0)

    def test_lora_on_top_convolutions(self):
        base = speech_embedding(window_stride=16, padding=0.25)
        before = base.predict(self.x, verbose=0)
        lora_model, changed = strategies.apply_lora(
            base, lora_rank=2,
            targets=r"(block5.*_conv|top_conv)$",
        )
        self.assertLen(changed, 5)
        self.assertIsInstance(lora_model.get_layer("top_conv"), LoRAConv2D)
        # LoRA starts as the identity (B = 0): same outputs.
        self.assertAllClose(lora_model.predict(self.x, verbose=0), before, atol=1e-5)
        trainable = sum(int(np.prod(w.shape)) for w in lora_model.trainable_weights)
        # rank 2: (k_h k_w c_in + c_out) * 2 per conv, four 96->96 convs in
        # block5 (1x3, 3x1, 1x3, 3x1) and top_conv (3x1).
        self.assertEqual(trainable, 5 * (3 * 96 + 96) * 2)
        # A small head: the pooled features reach ~60, and a default-size
        # random head can saturate the softmax (zero gradient after the
        # cross-entropy's probability clipping).
        keras.utils.set_random_seed(0)
        head = keras.layers.Dense(
            2, activation="softmax",
            kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
        )
        model = strategies.build_classifier(lora_model, head=head)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        lora_b = lora_model.get_layer("top_conv").lora_kernel_b
        model.fit(self.x, self.y, epochs=1, batch_size=2, verbose=0)
        self.assertGreater(np.abs(_numpy(lora_b)).max(), 0)
        path = os.path.join(self.get_temp_dir(), "lora.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(
            loaded.predict(self.x, verbose=0), model.predict(self.x, verbose=0),
            atol=1e-5,
        )

    def _small_head(self):
        # The pooled features reach ~60: a default-size random head can
        # saturate the softmax (zero gradient), so it starts small.
        keras.utils.set_random_seed(0)
        return keras.layers.Dense(
            2, activation="softmax",
            kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
        )

    def test_adapters_on_convolutions(self):
        base = speech_embedding(window_stride=16, padding=0.25)
        before = base.predict(self.x, verbose=0)
        frozen_kernel = _numpy(base.get_layer("block5a_conv").kernel)
        adapted, changed = strategies.add_adapters(
            base, targets=r"block5[ab]_conv$", bottleneck=8
        )
        self.assertEqual(sorted(changed), ["block5a_conv", "block5b_conv"])
        # The adapters' `up` starts at zero: same outputs.
        self.assertAllClose(adapted.predict(self.x, verbose=0), before, atol=1e-5)
        trainable = sum(int(np.prod(w.shape)) for w in adapted.trainable_weights)
        self.assertEqual(trainable, 2 * (2 * 96 * 8 + 8 + 96))  # 2 d m + m + d
        model = strategies.build_classifier(adapted, head=self._small_head())
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(self.x, self.y, epochs=2, batch_size=2, verbose=0)
        ups = [w for w in adapted.trainable_weights if "up" in w.path and "kernel" in w.path]
        self.assertLen(ups, 2)
        self.assertGreater(max(np.abs(_numpy(w)).max() for w in ups), 0)
        # The convolution, wrapped with its adapter, stays as loaded.
        wrapped = adapted.get_layer("block5a_conv_with_adapter")
        self.assertAllClose(
            _numpy(wrapped.layers[0].kernel), frozen_kernel, atol=0
        )
        path = os.path.join(self.get_temp_dir(), "adapters.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertAllClose(
            loaded.predict(self.x, verbose=0), model.predict(self.x, verbose=0),
            atol=1e-5,
        )

    def test_gradual_unfreezing_by_blocks(self):
        # Stage 0 trains the head, stage 1 adds top_conv, stage 2 block5;
        # blocks 1-4 stay as loaded.
        base = speech_embedding(window_stride=16, padding=0.25)
        groups = strategies.layer_groups(base, blocks="auto")
        model = strategies.build_classifier(base, head=self._small_head())
        base.trainable = False
        names = ["block1a_conv", "block4d_conv", "block5a_conv", "top_conv"]
        before = {n: _numpy(base.get_layer(n).weights[0]) for n in names}
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
        )
        model.fit(
            self.x, self.y, epochs=3, batch_size=2, verbose=0,
            callbacks=[callbacks.GradualUnfreezer(groups, epochs_per_stage=1)],
        )
        changed = {
            n: bool(np.any(_numpy(base.get_layer(n).weights[0]) != before[n]))
            for n in names
        }
        self.assertEqual(changed, {
            "block1a_conv": False, "block4d_conv": False,
            "block5a_conv": True, "top_conv": True,
        })

    def test_domain_similarity_between_speakers(self):
        # Two speakers are far apart in the embedding; two halves of one
        # speaker's clips (every digit in both) are not.
        names = {
            speaker: [f"{d}_{speaker}_{i}.wav" for d in range(10) for i in range(2)]
            for speaker in ("george", "theo")
        }
        clips = {k: [_clip(n) for n in v] for k, v in names.items()}
        length = max(len(c) for v in clips.values() for c in v)
        audio = {k: datasets.pad_clips(v, length) for k, v in clips.items()}
        base = speech_embedding(window_stride=16)
        far = strategies.domain_similarity(
            audio["george"], audio["theo"], model=base, folds=2
        )
        near = strategies.domain_similarity(
            audio["george"][0::2], audio["george"][1::2], model=base, folds=2
        )
        self.assertGreater(far["proxy_a_distance"], 1.0)
        self.assertLess(near["proxy_a_distance"], 0.5)
        self.assertGreater(far["mmd"], near["mmd"])

    def test_mixed_precision(self):
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")
        try:
            model = speech_embedding(window_stride=16, padding=0.25)
        finally:
            keras.config.set_dtype_policy(policy)
        self.assertEqual(
            model.get_layer("mel_spectrogram").compute_dtype, "float32"
        )
        out = model.predict(self.x, verbose=0)
        # A fresh float32 model: `self.base` may have been trained by the
        # classifier test (build_classifier shares its weights).
        ref = speech_embedding(window_stride=16, padding=0.25).predict(
            self.x, verbose=0
        )
        self.assertAllClose(out, ref, atol=0.05 * np.abs(ref).max(), rtol=0)
