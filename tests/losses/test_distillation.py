import keras
import numpy as np
from absl.testing import parameterized

from keras_transfer.losses import KLDistillation
from keras_transfer.losses import distillation_loss
from tests.testing import TestCase


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_reference(t, s, temperature):
    log_pt = _np_log_softmax(t / temperature)
    log_ps = _np_log_softmax(s / temperature)
    return temperature**2 * (np.exp(log_pt) * (log_pt - log_ps)).sum(-1)


def _np_softmax(z):
    return np.exp(_np_log_softmax(z))


class DistillationLossTest(TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.t = rng.normal(size=(5, 4)).astype("float32") * 3
        self.s = rng.normal(size=(5, 4)).astype("float32") * 3

    @parameterized.parameters(1.0, 2.0, 5.0)
    def test_matches_numpy_reference(self, temperature):
        got = distillation_loss(self.t, self.s, temperature=temperature)
        want = _np_reference(self.t, self.s, temperature)
        self.assertAllClose(got, want, atol=1e-5, rtol=1e-5)

    def test_t_squared_scaling(self):
        # Hand-worked: t=[log 3, 0] gives p_t=[3/4, 1/4] at T=1; s=[0, 0]
        # gives [1/2, 1/2]. KL = 3/4 log(3/2) + 1/4 log(1/2). At T=2 with
        # logits doubled the softmaxes are the same, so the loss is 4x.
        kl = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
        t = np.array([[np.log(3.0), 0.0]], "float32")
        s = np.zeros((1, 2), "float32")
        self.assertAllClose(distillation_loss(t, s, 1.0), [kl], atol=1e-6)
        self.assertAllClose(
            distillation_loss(2 * t, 2 * s, 2.0), [4 * kl], atol=1e-6
        )

    def test_identical_outputs_give_zero(self):
        self.assertAllClose(
            distillation_loss(self.t, self.t, 3.0), np.zeros(5), atol=1e-6
        )

    def test_probability_teacher_and_student_match_logits(self):
        want = distillation_loss(self.t, self.s, 3.0)
        got = distillation_loss(
            _np_softmax(self.t),
            _np_softmax(self.s),
            3.0,
            teacher_from_logits=False,
            from_logits=False,
        )
        self.assertAllClose(got, want, atol=1e-4, rtol=1e-4)

    def test_float16_inputs_compute_in_float32(self):
        got = distillation_loss(
            self.t.astype("float16"), self.s.astype("float16"), 2.0
        )
        self.assertEqual(keras.backend.standardize_dtype(got.dtype), "float32")
        self.assertAllClose(
            got,
            _np_reference(
                self.t.astype("float16").astype("float32"),
                self.s.astype("float16").astype("float32"),
                2.0,
            ),
            atol=1e-4,
        )

    def test_kl_distillation_is_batch_mean(self):
        loss = KLDistillation(temperature=3.0)
        self.assertAllClose(
            loss.compute_loss(self.t, self.s),
            _np_reference(self.t, self.s, 3.0).mean(),
            atol=1e-5,
        )

    def test_serialization(self):
        loss = KLDistillation(2.5, teacher_from_logits=False, from_logits=True)
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(loss)
        )
        self.assertIsInstance(restored, KLDistillation)
        self.assertEqual(restored.get_config(), loss.get_config())

    def test_plugs_into_keras_distiller(self):
        teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
        student = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
        distiller = keras.distillation.Distiller(
            teacher, student, distillation_losses=KLDistillation(2.0),
            student_loss_weight=0.0,
        )
        distiller.compile(loss="sparse_categorical_crossentropy")
        x = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
        loss = distiller.compute_loss(x, np.zeros(4), student(x))
        want = _np_reference(
            np.asarray(teacher(x)), np.asarray(student(x)), 2.0
        ).mean()
        self.assertAllClose(loss, want, atol=1e-5)

    def test_width_mismatch_raises(self):
        with self.assertRaisesRegex(ValueError, "same width"):
            KLDistillation().validate_outputs(self.t, self.s[:, :3])

    @parameterized.named_parameters(
        ("zero", {"temperature": 0}, "temperature"),
        ("negative", {"temperature": -1.0}, "temperature"),
        ("string", {"temperature": "4"}, "temperature"),
        ("teacher_flag", {"teacher_from_logits": "yes"}, "teacher_from_logits"),
        ("student_flag", {"from_logits": 1}, "from_logits"),
    )
    def test_invalid_arguments_raise(self, kwargs, name):
        with self.assertRaisesRegex(ValueError, f"Received: {name}="):
            KLDistillation(**kwargs)
