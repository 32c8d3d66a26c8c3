"""Public `keras_transfer.strategies` API."""
