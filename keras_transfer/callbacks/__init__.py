"""Public `keras_transfer.callbacks` API."""

from keras_transfer.callbacks.gradient_reversal_scheduler import GradientReversalScheduler
from keras_transfer.callbacks.gradient_reversal_scheduler import dann_factor
from keras_transfer.callbacks.gradual_unfreezer import GradualUnfreezer
from keras_transfer.callbacks.discriminative_lr import DiscriminativeLR
from keras_transfer.callbacks.selection_scores import SelectionScores
