"""Public `keras_transfer.datasets` API."""
