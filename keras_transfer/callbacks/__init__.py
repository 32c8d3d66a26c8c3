"""Public `keras_transfer.callbacks` API."""
