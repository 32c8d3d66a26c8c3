"""Gradient reversal layer (Ganin & Lempitsky, 2015)."""

import keras
from keras import ops

from keras_transfer._validation import check_nonnegative


def _check_factor(factor):
    return check_nonnegative(factor, "factor")


@keras.saving.register_keras_serializable(package="keras_transfer")
class GradientReversal(keras.layers.Layer):
    """Identity on the forward pass, gradient times `-factor` on the backward pass.

    Placed between a feature extractor and a domain classifier, it makes the
    feature extractor *maximise* the domain loss while the classifier
    minimises it, which is the adversarial game of DANN. The factor (the
    `lambda` of the paper) lives in a non-trainable variable, so a callback
    such as `keras_transfer.callbacks.GradientReversalScheduler` can change it
    during `fit` without retracing the compiled train step.

    Args:
        factor: float >= 0, the initial gradient multiplier `lambda`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a tensor of any shape.

    Returns:
        `inputs`, unchanged.

    Example:

    >>> import numpy as np
    >>> layer = GradientReversal(factor=0.5)
    >>> x = np.ones((2, 3), "float32")
    >>> bool((keras.ops.convert_to_numpy(layer(x)) == x).all())
    True

    Reference:
        [Ganin & Lempitsky, 2015](https://arxiv.org/abs/1409.7495),
        [Ganin et al., 2016](https://jmlr.org/papers/v17/15-239.html).
    """

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = _check_factor(factor)
        self.supports_masking = True

    def build(self, input_shape):
        # A variable, not a float: callbacks can anneal it without retracing.
        self.factor_variable = self.add_weight(
            name="factor",
            shape=(),
            dtype="float32",
            trainable=False,
            initializer=keras.initializers.Constant(self.factor),
        )

    def call(self, inputs):
        factor = ops.cast(self.factor_variable, inputs.dtype)

        @ops.custom_gradient
        def reverse(x):
            def grad(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                return ops.negative(upstream) * factor

            return x, grad

        return reverse(inputs)

    def set_factor(self, factor):
        """Set `lambda` without retracing. `factor`: float >= 0."""
        factor = _check_factor(factor)
        if not self.built:
            self.factor = factor
            return
        self.factor_variable.assign(factor)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
