"""Public `keras_transfer.models` API."""

from keras_transfer.models.distiller import Distiller
