"""Public `keras_transfer.layers` API."""
