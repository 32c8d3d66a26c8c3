"""Public `keras_transfer.backbones` API."""
