"""Public `keras_transfer.optimizers.schedules` API."""

from keras_transfer.optimizers.schedules.one_cycle import OneCycle
