"""Public `keras_transfer.layers` API."""

from keras_transfer.layers.gradient_reversal import GradientReversal
