"""Public `keras_transfer.models` API."""
