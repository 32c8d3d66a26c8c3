import hashlib
import os
import tempfile

import keras
import numpy as np

from keras_transfer._keras_private import all_layers
from keras_transfer._validation import check_int

_FORMAT_VERSION = "keras_transfer.FeatureCache/1"


def _is_tf_dataset(x):
    # Checked by class name so that TensorFlow is never imported here.
    return any(
        cls.__name__ in ("DatasetV2", "DatasetV1")
        for cls in type(x).__mro__
    )


def _hash_array(digest, array):
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    if array.dtype.kind == "O":
        # Object arrays (raw strings for text bases) hold pointers: hash the
        # values themselves.
        digest.update("\x1f".join(map(repr, array.ravel())).encode())
    else:
        digest.update(memoryview(array).cast("B"))


def _hash_structure(digest, x):
    if isinstance(x, dict):
        for key in sorted(x):
            digest.update(f"key:{key}".encode())
            _hash_structure(digest, x[key])
    elif isinstance(x, (list, tuple)):
        digest.update(f"seq:{len(x)}".encode())
        for item in x:
            _hash_structure(digest, item)
    else:
        _hash_array(digest, keras.ops.convert_to_numpy(x))


class FeatureCache:
    """Runs a frozen base once over the data and keeps its outputs.

    Training a new head on a frozen base repeats the same forward pass of the
    base every epoch. `FeatureCache` runs the base once, in inference mode
    (`training=False`, so Dropout is off and BatchNormalization uses its
    moving statistics), and returns the features as a NumPy array, on which
    the head trains as on any other data.

    Results are kept in memory and, when `directory` is given, on disk as
    `<directory>/<fingerprint>.npz`. The fingerprint is a SHA-256 of the
    base's weights (values, shapes, dtypes), its layer types, its dtype
    policy, the optional `key`, and the input data itself, so a later run on
    the same base and data reuses the file, while changed weights (after
    fine-tuning, say) or changed data give a new one. Files are written to a
    temporary name and renamed, so an interrupted run never leaves a
    truncated cache behind. Changes the fingerprint cannot see (a custom
    layer's code, an activation with identical weights) need a new `key`.

    Random augmentation cannot be cached: the features of an augmented image
    differ every epoch. Augment inside a model fitted with the base in the
    loop instead (`fit_feature_extraction(..., cache=False)`).

    `FeatureCache` is a utility, not a Keras object: it is not saved with a
    model and holds no trainable state.

    Args:
        base: the frozen `keras.Model` (or layer) whose outputs are cached.
        directory: optional folder for the on-disk cache. Created if missing.
            `None` (default) keeps results in memory only.
        batch_size: batch size of the extraction pass over NumPy inputs.
            Defaults to 32.
        key: optional string mixed into the fingerprint.
        verbose: verbosity of the extraction pass (as in `Model.predict`).

    Attributes:
        hits: how many `transform` calls were answered from the cache.
        misses: how many ran the base.

    Example:

    ```python
    cache = keras_transfer.strategies.FeatureCache(base, directory="cache")
    features = cache.transform(x_train)  # runs the base once
    features = cache.transform(x_train)  # from memory (or disk next run)
    head.fit(features, y_train, epochs=10)
    ```
    """

    def __init__(self, base, directory=None, batch_size=32, key=None, verbose=0):
        if not isinstance(base, keras.layers.Layer):
            raise ValueError(
                "`base` must be a Keras model or layer. "
                f"Received: base={base!r}"
            )
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise ValueError(
                "`directory` must be a folder path or None. "
                f"Received: directory={directory!r}"
            )
        batch_size = check_int(batch_size, "batch_size")
        if key is not None and not isinstance(key, str):
            raise ValueError(
                f"`key` must be a string or None. Received: key={key!r}"
            )
        self.base = base
        self.directory = None if directory is None else os.fspath(directory)
        self.batch_size = batch_size
        self.key = key
        self.verbose = verbose
        self.hits = 0
        self.misses = 0
        self._memory = {}
        if self.directory is not None:
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as e:
                raise ValueError(
                    "`directory` could not be created or is not a folder "
                    f"({e.strerror}). Received: directory={self.directory!r}"
                ) from e

    def base_fingerprint(self):
        """Returns the SHA-256 hex digest of the base (weights and layers)."""
        digest = hashlib.sha256(_FORMAT_VERSION.encode())
        digest.update(f"key:{self.key}".encode())
        digest.update(f"policy:{self.base.dtype_policy.name}".encode())
        for layer in all_layers(self.base):
            digest.update(type(layer).__name__.encode())
        for variable in self.base.weights:
            _hash_array(digest, keras.ops.convert_to_numpy(variable.value))
        return digest.hexdigest()

    def fingerprint(self, x):
        """Returns the cache key of `x`: base fingerprint + data digest.

        Args:
            x: NumPy array, dict/list of arrays, or a batched
                `tf.data.Dataset` (iterated once to hash it).

        Returns:
            A hex string, the file stem of the on-disk cache entry.
        """
        digest = hashlib.sha256(self.base_fingerprint().encode())
        if _is_tf_dataset(x):
            digest.update(b"tf.data")
            for element in x.as_numpy_iterator():
                _hash_structure(digest, element)
        else:
            digest.update(b"arrays")
            _hash_structure(digest, x)
        return digest.hexdigest()

    def transform(self, x):
        """Returns the base's features for `x`, from the cache if possible.

        Args:
            x: the base's input: a NumPy array, a dict or list of arrays
                (multi-input bases such as text encoders), or a batched
                `tf.data.Dataset` yielding `x`, `(x, y)` or
                `(x, y, sample_weight)`.

        Returns:
            For array inputs, the features as one NumPy array with one row
            per example, in input order. For a dataset of tuples, a tuple
            `(features, y, ...)` of NumPy arrays collected in the same pass,
            so features and labels stay aligned even if the dataset
            shuffles.
        """
        is_dataset = _is_tf_dataset(x)
        if not is_dataset:
            x = self._check_arrays(x)
        key = self.fingerprint(x)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        result = self._load(key)
        if result is not None:
            self.hits += 1
        else:
            self.misses += 1
            if is_dataset:
                result = self._extract_dataset(x)
            else:
                result = self._extract_arrays(x)
            self._save(key, result)
        self._memory[key] = result
        return result

    def clear(self):
        """Forgets the in-memory results (files on disk are kept)."""
        self._memory = {}

    def _check_arrays(self, x):
        def convert(value):
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                if value and all(isinstance(v, str) for v in value):
                    return np.array(value, dtype=object)
                return type(value)(convert(v) for v in value)
            if isinstance(value, np.ndarray):
                return value
            try:
                return keras.ops.convert_to_numpy(value)
            except Exception as e:
                raise ValueError(
                    "`x` must be a NumPy array, a dict or list of arrays, or "
                    "a batched `tf.data.Dataset`. "
                    f"Received: x of type {type(value).__name__}"
                ) from e

        x = convert(x)
        leaves = keras.tree.flatten(x)
        sizes = {len(leaf) if np.ndim(leaf) else None for leaf in leaves}
        if not leaves or None in sizes or len(sizes) != 1:
            raise ValueError(
                "`x` must hold arrays with the same number of examples in "
                "their first dimension. Received: x with first dimensions "
                f"{[np.shape(leaf)[:1] for leaf in leaves]}"
            )
        return x

    def _extract_arrays(self, x):
        features = self.base.predict(
            x, batch_size=self.batch_size, verbose=self.verbose
        )
        return self._check_features(features)

    def _extract_dataset(self, dataset):
        features, rest = [], None
        for element in dataset.as_numpy_iterator():
            if isinstance(element, tuple):
                inputs, others = element[0], element[1:]
            else:
                inputs, others = element, ()
            features.append(
                self._check_features(self.base.predict_on_batch(inputs))
            )
            if rest is None:
                rest = [[] for _ in others]
            for store, value in zip(rest, others):
                store.append(np.asarray(value))
        if not features:
            raise ValueError(
                "`x` is an empty dataset: there is nothing to extract. "
                f"Received: x={dataset!r}"
            )
        features = np.concatenate(features, axis=0)
        if not rest:
            return features
        return (features,) + tuple(np.concatenate(r, axis=0) for r in rest)

    def _check_features(self, features):
        if not isinstance(features, np.ndarray):
            raise ValueError(
                "`base` must have a single output to be cached. "
                f"Received: base '{self.base.name}' returning "
                f"{type(features).__name__}"
            )
        return features

    def _path(self, key):
        return os.path.join(self.directory, f"{key}.npz")

    def _load(self, key):
        if self.directory is None or not os.path.exists(self._path(key)):
            return None
        with np.load(self._path(key), allow_pickle=False) as data:
            arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
        return arrays[0] if len(arrays) == 1 else tuple(arrays)

    def _save(self, key, result):
        if self.directory is None:
            return
        arrays = result if isinstance(result, tuple) else (result,)
        fd, tmp_path = tempfile.mkstemp(
            dir=self.directory, prefix=f".{key}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, *arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, self._path(key))
        except BaseException:
            if os.path.exists(tmp_path):
                os.remove(tmp_path)
            raise
