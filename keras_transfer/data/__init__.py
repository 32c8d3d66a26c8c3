"""Public `keras_transfer.data` API."""

from keras_transfer.data.image import ImageAugmentation
