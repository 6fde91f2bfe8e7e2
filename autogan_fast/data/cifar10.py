"""CIFAR-10 from its "python version" folder (`cifar-10-batches-py/`), as uint8 (N, 3, 32, 32).

Each batch file is a Python 2 pickle of a dict: `b"data"` is a uint8 array N x 3072 holding the R, G and
B planes of a 32x32 image one after another, each plane row-major, so a plain reshape to (N, 3, 32, 32)
gives channel-first images. `b"labels"` holds N class indices (unused by a GAN, checked for length).

A pickle can run any callable it names, so the batches are read with an unpickler that resolves only
the three numpy names an ndarray needs; a file that names anything else is refused before it runs. A
pickle can also ask for any amount of memory in a few bytes (an array of 10**12 elements, a read of 2**40
bytes, a memo index of 2**31), so the file is read whole first (it must be the size of a batch at most),
unpickled from memory by Python's own unpickler (whose reads stop at the end of the data and whose memo is
a dict), and an array is rebuilt only from bytes the file holds.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autogan_fast.errors import UsageError

FOLDER_NAME = "cifar-10-batches-py"
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_IMAGE_BYTES = 3 * 32 * 32
# A batch file of the dataset is 31,035,704 bytes (10,000 images); a file past this bound is not one.
MAX_BATCH_FILE_BYTES = 1 << 30


def _numpy_reconstruct() -> Callable[..., Any]:
    """numpy's ndarray pickle helper; it moved from numpy.core to numpy._core in numpy 2."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _latin1_bytes(text: object, encoding: object) -> bytes:
    """`_codecs.encode` as a protocol-2 pickle written by Python 3 calls it: protocol 2 has no bytes
    type, so `b"..."` is pickled as `_codecs.encode("...", "latin1")`. Only that call is accepted."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): only "
                                     f"str to 'latin1' rebuilds bytes")
    return text.encode("latin1")


class _CheckedArray(np.ndarray):
    """What a pickled ndarray is rebuilt as (the batch's arrays are viewed back as plain ndarrays): its
    `__setstate__`, which the pickle calls with the array's shape, dtype and raw bytes, checks that the
    dtype is one of numbers and the bytes are all there before numpy allocates the shape it names."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):  # (version,) shape, dtype, fortran, data
            raise pickle.UnpicklingError("an ndarray's state is not numpy's")
        shape, dtype, _, data = state[-4:]
        if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.names is not None or dtype.subdtype:
            raise pickle.UnpicklingError(f"refusing an ndarray of dtype {dtype!r}: only arrays of numbers load")
        if not (isinstance(shape, tuple) and all(type(size) is int and size >= 0 for size in shape)):
            raise pickle.UnpicklingError(f"an ndarray's shape is {shape!r}")
        needed = math.prod(shape) * dtype.itemsize
        if not isinstance(data, bytes) or len(data) != needed:
            held = f"{len(data):,} bytes" if isinstance(data, bytes) else f"a {type(data).__name__}"
            raise pickle.UnpicklingError(f"an ndarray of shape {shape} {dtype} needs {needed:,} bytes, the file "
                                         f"holds {held}")
        super().__setstate__(state)


def _empty_array(subtype: object, shape: object, typecode: object) -> np.ndarray:
    """`_reconstruct` as a pickled ndarray calls it: numpy pickles every array as an empty one, (0,) of
    `typecode`, that `__setstate__` then fills. Any other shape would allocate whatever the file says."""
    if subtype is not _NDARRAY or shape != (0,):
        raise pickle.UnpicklingError(f"refusing _reconstruct(..., {shape!r}, ...): numpy pickles an array as an "
                                     f"empty one its state fills")
    return _numpy_reconstruct()(_CheckedArray, (0,), typecode)


class _NdarrayName:
    """Stands in for `numpy.ndarray`, which a pickled array names only as `_reconstruct`'s first argument:
    called, ndarray(shape) would allocate any shape the file says, so it refuses."""

    def __call__(self, *args: object) -> None:
        raise pickle.UnpicklingError("refusing to call numpy.ndarray: a pickled array is rebuilt by _reconstruct")


_NDARRAY = _NdarrayName()

# The only globals a pickled uint8 ndarray refers to. The CIFAR-10 files were written by numpy 1.x
# (`numpy.core...`); a file re-pickled by numpy 2 says `numpy._core...`: both map to the same function.
# A batch pickled by Python 3 at protocol 2 also rebuilds its bytes (keys, array buffer) with
# `_codecs.encode`, stood in for by `_latin1_bytes`.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _NumpyOnlyUnpickler(pickle._Unpickler):
    """Resolves only the globals in `_ALLOWED_GLOBALS`; any other name raises before it is called.

    Python's own unpickler (`pickle._Unpickler`), not the C one: the C one sizes its memo by the index a
    PUT names (2**31 in a 9-byte file: 2**32 slots, 32 GiB) and reads a length-prefixed string from a file by
    allocating the length first; this one keeps its memo in a dict, and reads from memory."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _read_batch(file: Path) -> np.ndarray:
    """One batch file -> its validated uint8 data array (N, 3072)."""
    if not file.is_file():
        raise UsageError(f"CIFAR-10 batch file missing: {file} (expected the python version of CIFAR-10, "
                         f"cifar-10-python.tar.gz extracted)")
    size = file.stat().st_size
    if size > MAX_BATCH_FILE_BYTES:
        raise UsageError(f"CIFAR-10 batch file {file} is {size:,} bytes, more than any batch (31 MB) by far")
    try:
        # encoding="bytes": the files come from Python 2, whose str keys and array buffers must stay
        # bytes (latin1 decoding would also work for the buffers but turns the keys into str).
        batch = _NumpyOnlyUnpickler(io.BytesIO(file.read_bytes()), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise UsageError(f"CIFAR-10 batch file {file} is not a CIFAR-10 pickle: {e}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, struct.error,
            OSError) as e:
        # What a truncated or overwritten pickle raises varies with where the damage starts.
        raise UsageError(f"CIFAR-10 batch file {file} is truncated or corrupt: "
                         f"{type(e).__name__}{f': {e}' if str(e) else ''}") from None
    if not isinstance(batch, dict):
        raise UsageError(f"CIFAR-10 batch file {file} holds a {type(batch).__name__}, not a dict")
    # A file re-pickled by Python 3 has str keys; the originals have bytes keys.
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray):
        raise UsageError(f"CIFAR-10 batch file {file} has no numpy array under b'data'")
    data = data.view(np.ndarray)  # a plain array, not the unpickler's _CheckedArray
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGE_BYTES or data.shape[0] == 0:
        raise UsageError(f"CIFAR-10 batch file {file}: b'data' must be uint8 of shape (N, {_IMAGE_BYTES}) "
                         f"with N > 0, got {data.dtype} {data.shape}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != data.shape[0]:
        got = f"{len(labels)} labels" if isinstance(labels, (list, np.ndarray)) else type(labels).__name__
        raise UsageError(f"CIFAR-10 batch file {file}: b'labels' must be a list of one label per image "
                         f"({data.shape[0]}), got {got}")
    return data


def resolve_cifar10_folder(path: str | Path) -> Path:
    """`cifar-10-batches-py/` itself, or a folder that contains it -> the batches folder."""
    path = Path(path).expanduser()
    if (path / FOLDER_NAME).is_dir():
        return path / FOLDER_NAME
    if path.is_dir():
        return path
    raise UsageError(f"CIFAR-10 folder not found: {path} (pass {FOLDER_NAME}/ or the folder holding it)")


def load_cifar10(path: str | Path, split: str = "train") -> torch.Tensor:
    """CIFAR-10 images of one split as a uint8 tensor (N, 3, 32, 32), in file order.

    Args:
        path: the `cifar-10-batches-py/` folder, or its parent.
        split: "train" (data_batch_1..5, 50,000 images) or "test" (test_batch, 10,000 images).

    Raises:
        UsageError: unknown split, missing folder or batch file, a file that is corrupt, refers to
            anything but numpy arrays, or holds data of the wrong shape or dtype; the message names it.
    """
    if split not in SPLIT_FILES:
        raise UsageError(f"unknown CIFAR-10 split {split!r}; choose one of {', '.join(SPLIT_FILES)}")
    folder = resolve_cifar10_folder(path)
    batches = [_read_batch(folder / name) for name in SPLIT_FILES[split]]
    # np.concatenate copies: the unpickled arrays can be read-only views of the pickle's bytes.
    data = np.concatenate(batches, axis=0)
    return torch.from_numpy(data).view(-1, 3, 32, 32)
