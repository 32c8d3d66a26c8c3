"""Read PyTorch's legacy (non-zip) `.pth` state dicts into NumPy, without torch.

The legacy format (`torch.save(..., _use_new_zipfile_serialization=False)`,
the only format before PyTorch 1.6) is a sequence of pickles followed by raw
bytes:

1. the magic number `0x1950a86a20f9469cfc6c`,
2. the protocol version (1001),
3. a `sys_info` dict (endianness, C type sizes),
4. the object itself (here an `OrderedDict` of tensors). Tensors are rebuilt by
   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, and
   each storage is a *persistent id* `("storage", StorageType, key, location,
   numel, view_metadata)`, so its bytes are not in the pickle,
5. the list of storage keys, in the order their bytes follow,
6. for each key: an 8-byte little-endian element count, then the raw data.

The unpickler below only resolves the handful of globals such a file needs
(storage types, the tensor rebuild functions, `OrderedDict`), so loading an
untrusted file cannot run arbitrary code.
"""

import collections
import pickle
import struct

import numpy as np

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """Placeholder for a storage whose bytes follow the pickle."""

    def __init__(self, dtype, numel):
        self.dtype = dtype
        self.numel = numel
        self.data = None


class _StorageView:
    def __init__(self, root, offset, size):
        self.root = root
        self.offset = offset
        self.size = size


class _LazyTensor:
    """Placeholder for a tensor; materialized once the storages are read."""

    def __init__(self, storage, storage_offset, size, stride):
        self.storage = storage
        self.storage_offset = storage_offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def to_numpy(self):
        storage, offset = self.storage, self.storage_offset
        if isinstance(storage, _StorageView):
            offset += storage.offset
            storage = storage.root
        flat = storage.data
        if not self.size:
            return flat[offset].copy()
        itemsize = flat.dtype.itemsize
        last = offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if min(self.size) > 0 and last >= flat.size:
            raise ValueError(
                f"Tensor of shape {self.size} reads past the end of its "
                f"storage ({flat.size} elements): the file is corrupt."
            )
        return np.lib.stride_tricks.as_strided(
            flat[offset:],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        ).copy()


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad, backward_hooks,
    metadata=None,
):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file, encoding="utf-8")
        self.path = path
        self.storages = {}

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(
            f"Refusing to load '{self.path}': it references the global "
            f"`{module}.{name}`, which a plain PyTorch state dict does not "
            "need. Only tensors, storages and `OrderedDict` are allowed."
        )

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(
                f"Unsupported persistent id in '{self.path}'. "
                f"Received: saved_id={saved_id!r}"
            )
        storage_type, key, _location, numel, view_metadata = saved_id[1:]
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, numel)
        root = self.storages[key]
        if view_metadata is not None:
            _view_key, offset, view_size = view_metadata
            return _StorageView(root, offset, view_size)
        return root


def load_torch_state_dict(path):
    """Reads a legacy-format PyTorch `.pth` state dict into NumPy arrays.

    Args:
        path: path to a file written by `torch.save(state_dict, path)` with the
            legacy (pre-1.6, non-zip) serialization.

    Returns:
        An `OrderedDict` mapping parameter names to `np.ndarray`s.
    """
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith(b"PK"):
            raise ValueError(
                f"'{path}' is a zip-format PyTorch checkpoint (PyTorch >= 1.6). "
                "Only the legacy non-zip format is supported; re-save it with "
                "`torch.save(sd, path, _use_new_zipfile_serialization=False)` "
                "or convert it to `.weights.h5`."
            )
        f.seek(0)
        try:
            magic = pickle.load(f)
        except Exception as e:
            raise ValueError(
                f"'{path}' is not a PyTorch legacy `.pth` file (could not "
                f"read the magic number: {e})."
            ) from None
        if magic != _MAGIC_NUMBER:
            raise ValueError(
                f"'{path}' is not a PyTorch legacy `.pth` file. Received: "
                f"magic_number={magic!r}, expected {_MAGIC_NUMBER:#x}."
            )
        protocol = pickle.load(f)
        if protocol != _PROTOCOL_VERSION:
            raise ValueError(
                f"Unsupported PyTorch serialization protocol in '{path}'. "
                f"Received: protocol_version={protocol!r}, expected "
                f"{_PROTOCOL_VERSION}."
            )
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", False):
            raise ValueError(
                f"'{path}' was written on a big-endian machine, which is not "
                "supported."
            )
        unpickler = _RestrictedUnpickler(f, path)
        obj = unpickler.load()
        keys = pickle.load(f)
        for key in keys:
            storage = unpickler.storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * storage.dtype.itemsize
            buf = f.read(nbytes)
            if len(buf) != nbytes:
                raise ValueError(
                    f"'{path}' is truncated: storage {key!r} needs {nbytes} "
                    f"bytes, got {len(buf)}."
                )
            storage.data = np.frombuffer(buf, dtype=storage.dtype)

    if not isinstance(obj, dict):
        raise ValueError(
            f"'{path}' does not hold a state dict. Received an object of "
            f"type {type(obj).__name__}."
        )
    state = collections.OrderedDict()
    for name, value in obj.items():
        if not isinstance(value, _LazyTensor):
            raise ValueError(
                f"'{path}' holds a non-tensor entry {name!r} of type "
                f"{type(value).__name__}; expected a plain state dict."
            )
        state[name] = value.to_numpy()
    return state
