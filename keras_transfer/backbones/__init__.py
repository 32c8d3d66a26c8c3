"""Public `keras_transfer.backbones` API."""

from keras_transfer.backbones.efficientnet_lite0 import efficientnet_lite0
