"""Public `keras_transfer.data` API."""
