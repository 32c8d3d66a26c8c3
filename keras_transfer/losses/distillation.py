import keras
from keras import ops

# Floor for probabilities before the log: teachers that end in a softmax can
# return exact zeros (float16 underflow), and log(0) would give NaN gradients.
_PROB_EPSILON = 1e-7


def _check_temperature(temperature):
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not temperature > 0
    ):
        raise ValueError(
            "`temperature` must be a positive number. "
            f"Received: temperature={temperature!r}"
        )
    return float(temperature)


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(
            f"`{name}` must be `True` or `False`. Received: {name}={value!r}"
        )
    return value


def _tempered_log_softmax(outputs, temperature, from_logits):
    outputs = ops.cast(outputs, "float32")
    if not from_logits:
        # log(p) equals the logits up to a per-example constant, which the
        # softmax removes: softmax(log(p) / T) is exact for probabilities.
        outputs = ops.log(ops.clip(outputs, _PROB_EPSILON, 1.0))
    return ops.log_softmax(outputs / temperature, axis=-1)


def distillation_loss(
    teacher_outputs,
    student_outputs,
    temperature=1.0,
    teacher_from_logits=True,
    from_logits=True,
):
    """Soft-target distillation loss of Hinton et al., per example.

    Computes

        T^2 * KL(softmax(t / T) || softmax(s / T))

    over the last axis, where `t` and `s` are the teacher's and student's
    logits and `T` is the temperature. The `T^2` factor keeps gradient
    magnitudes comparable across temperatures, since the gradient of the KL
    term with respect to the logits scales as `1 / T^2`. When a model returns
    probabilities instead of logits (`*_from_logits=False`), `log(p)` is used
    in place of the logits, which gives the same tempered softmax exactly.

    Computed in float32 whatever the input dtype.

    Args:
        teacher_outputs: the teacher's logits (or probabilities), shape
            `(..., num_classes)`.
        student_outputs: the student's logits (or probabilities), same shape.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        teacher_from_logits: whether `teacher_outputs` are logits (`True`,
            default) or probabilities.
        from_logits: whether `student_outputs` are logits (`True`, default)
            or probabilities.

    Returns:
        The loss per example, shape `teacher_outputs.shape[:-1]`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]])
    >>> float(distillation_loss(t, t, temperature=4.0)[0])
    0.0

    Reference:
        [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
    """
    temperature = _check_temperature(temperature)
    log_p_teacher = _tempered_log_softmax(
        teacher_outputs, temperature, teacher_from_logits
    )
    log_p_student = _tempered_log_softmax(
        student_outputs, temperature, from_logits
    )
    kl = ops.sum(
        ops.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1
    )
    return kl * (temperature**2)


@keras.saving.register_keras_serializable(package="keras_transfer")
class KLDistillation(keras.distillation.DistillationLoss):
    """Temperature-scaled KL distillation loss, `T^2 * KL(p_t^T || p_s^T)`.

    A `keras.distillation.DistillationLoss`, so it also plugs into Keras's own
    `keras.distillation.Distiller(distillation_losses=...)`. It computes the
    batch mean of `distillation_loss`:

        mean_i T^2 * sum_c p_t(c) * (log p_t(c) - log p_s(c)),
        p_t = softmax(t / T), p_s = softmax(s / T).

    Unlike `keras.distillation.LogitsDistillation(loss="kl_divergence")`, the
    `T^2` factor and the softmax are always applied (Keras resolves the string
    to a plain function and skips both), and teachers or students that end in
    a softmax are handled through `teacher_from_logits` / `from_logits`.

    Args:
        temperature: softmax temperature `T > 0`. Defaults to `4.0`.
        teacher_from_logits: whether the teacher returns logits (`True`,
            default) or probabilities.
        from_logits: whether the student returns logits (`True`, default)
            or probabilities.

    Example:

    ```python
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras_transfer.losses.KLDistillation(4.0),
        student_loss_weight=0.1,
    )
    ```

    Reference:
        [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
    """

    def __init__(
        self, temperature=4.0, teacher_from_logits=True, from_logits=True
    ):
        self.temperature = _check_temperature(temperature)
        self.teacher_from_logits = _check_bool(
            "teacher_from_logits", teacher_from_logits
        )
        self.from_logits = _check_bool("from_logits", from_logits)

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        t_width = teacher_outputs.shape[-1]
        s_width = student_outputs.shape[-1]
        if t_width is not None and s_width is not None and t_width != s_width:
            raise ValueError(
                "`KLDistillation` needs teacher and student outputs of the "
                f"same width. Received: teacher width={t_width}, student "
                f"width={s_width}"
            )

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return ops.mean(
            distillation_loss(
                teacher_outputs,
                student_outputs,
                temperature=self.temperature,
                teacher_from_logits=self.teacher_from_logits,
                from_logits=self.from_logits,
            )
        )

    def get_config(self):
        return {
            "temperature": self.temperature,
            "teacher_from_logits": self.teacher_from_logits,
            "from_logits": self.from_logits,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
