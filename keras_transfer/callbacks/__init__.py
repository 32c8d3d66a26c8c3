"""Public `keras_transfer.callbacks` API."""

from keras_transfer.callbacks.gradient_reversal_scheduler import GradientReversalScheduler
from keras_transfer.callbacks.gradient_reversal_scheduler import dann_factor
