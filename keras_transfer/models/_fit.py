"""Building the package's subclassed models before `fit` starts."""

import keras

from keras_transfer import _keras_private


def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "__getitem__") and (
        len(getattr(value, "shape", ())) > 0
    )


def _first_batch(x, y, sample_weight, batch_size):
    """One `(x, y, sample_weight)` batch of `fit`'s data (or, for a
    tf.data.Dataset, its element spec), or None where it cannot be read
    without consuming it (generators, `PyDataset`)."""
    if hasattr(x, "element_spec"):
        # A tf.data.Dataset: its element spec (shapes, dtypes), not a batch
        # read from it (a new iterator would advance a reshuffling dataset's
        # order, changing what the epochs of `fit` see).
        return x.element_spec
    leaves = [v for v in keras.tree.flatten((x, y, sample_weight)) if v is not None]
    if not leaves or not all(_is_array(v) for v in leaves):
        return None
    n = min(int(batch_size or 32), min(int(v.shape[0]) for v in leaves))
    return keras.tree.map_structure(
        lambda v: None if v is None else v[:n], (x, y, sample_weight)
    )


def build_before_fit(model, x, y=None, sample_weight=None, batch_size=None):
    """On TensorFlow, builds `model` from its first batch before `fit` runs
    any callback, as Keras's JAX and PyTorch trainers do themselves, so that
    callbacks that read or restore weights at train begin
    (`BackupAndRestore`) work there too. Does nothing once the model and
    its optimizer are built, or when the data cannot be read without
    consuming it (generators)."""
    if keras.backend.backend() != "tensorflow":
        return  # the JAX and PyTorch trainers build from their first batch
    optimizer = getattr(model, "optimizer", None)
    if model.built and (optimizer is None or optimizer.built):
        return
    batch = _first_batch(x, y, sample_weight, batch_size)
    if batch is not None:
        _keras_private.build_from_batch(model, batch)
