"""Optional TensorBoard scalars and text for the fine-tuning callbacks.

TensorBoard writing is I/O, not model math, so it lives outside the
backend-agnostic `callbacks` package: TensorFlow is imported here lazily,
only when a `log_dir` is given, so the callbacks run without it.
"""

import os


class SummaryWriter:
    """Writes into `log_dir/train`, where `keras.callbacks.TensorBoard`
    writes its training scalars, so both show up as the same run."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._writer = None

    def _get(self):
        if self._writer is None:
            try:
                import tensorflow as tf
            except ImportError:
                raise ImportError(
                    "Writing TensorBoard logs needs TensorFlow. Install it or "
                    f"pass `log_dir=None`. Received: log_dir={self.log_dir!r}"
                ) from None
            self._tf = tf
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "train")
            )
        return self._writer

    def text(self, tag, value, step):
        writer = self._get()
        with writer.as_default():
            self._tf.summary.text(tag, value, step=int(step))
        writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
