"""Public `keras_transfer.losses` API."""
