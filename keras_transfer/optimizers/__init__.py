"""Public `keras_transfer.optimizers` API."""

from keras_transfer.optimizers import schedules
