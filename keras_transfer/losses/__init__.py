"""Public `keras_transfer.losses` API."""

from keras_transfer.losses.distillation import KLDistillation
from keras_transfer.losses.distillation import distillation_loss

from keras_transfer.losses.coral import CORAL
from keras_transfer.losses.coral import coral
from keras_transfer.losses.mmd import MMD
from keras_transfer.losses.mmd import mmd
from keras_transfer.losses.information_maximization import InformationMaximization
from keras_transfer.losses.information_maximization import information_maximization
