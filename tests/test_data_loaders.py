"""CIFAR-10, STL-10 and image-folder loaders against small files written here in the real formats.

The file encoders below follow the format descriptions index by index (byte c*plane + h*row + w, or
w*96 + h for STL-10's column-major planes), not the loaders' reshapes, so a transposed or channel-swapped
read cannot pass. Image content is seeded random bytes: any permutation of pixels changes it.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autogan_fast.data.cifar10 import MAX_BATCH_FILE_BYTES, load_cifar10
from autogan_fast.data.folder import load_image_folder
from autogan_fast.data.stl10 import load_stl10
from autogan_fast.errors import UsageError


def _images(n: int, size: int, seed: int) -> np.ndarray:
    """(n, 3, size, size) uint8, seeded random bytes."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


# --- CIFAR-10 ------------------------------------------------------------------------------------


def _binstring(b: bytes) -> bytes:
    """Python 2's str in pickle protocol 2: SHORT_BINSTRING or BINSTRING (read back as bytes)."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _py2_ndarray(arr: np.ndarray, multiarray: str) -> bytes:
    """An ndarray pickled as numpy under Python 2 did: _reconstruct, then BUILD with the raw bytes."""
    kind = arr.dtype.str  # e.g. "|u1", "<u2"
    shape = b"(" + b"".join(_int(d) for d in arr.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _binstring(kind[1:].encode()) + _int(0) + _int(1) + b"\x87R"
             + b"(" + _int(3) + _binstring(kind[:1].encode()) + b"NNN" + _int(-1) + _int(-1) + _int(0)
             + b"tb")
    return (b"c" + multiarray.encode() + b"\n_reconstruct\ncnumpy\nndarray\n" + _int(0) + b"\x85"
            + _binstring(b"b") + b"\x87R"
            + b"(" + _int(1) + shape + dtype + b"\x89" + _binstring(arr.tobytes()) + b"tb")


def _py2_batch_pickle(data: np.ndarray | None, labels: list[int] | None,
                      multiarray: str = "numpy.core.multiarray") -> bytes:
    """A CIFAR-10 batch file as the dataset ships it: a Python 2 protocol-2 pickle of a dict."""
    items = b""
    if data is not None:
        items += _binstring(b"data") + _py2_ndarray(data, multiarray)
    if labels is not None:
        items += _binstring(b"labels") + b"](" + b"".join(_int(v) for v in labels) + b"e"
    items += _binstring(b"batch_label") + _binstring(b"testing batch 1 of 1")
    return b"\x80\x02}(" + items + b"u."


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 3, 32, 32) -> N x 3072 by the format's definition: byte c*1024 + h*32 + w."""
    n = images.shape[0]
    rows = np.zeros((n, 3072), np.uint8)
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    rows[:, (c * 1024 + h * 32 + w).ravel()] = images.reshape(n, 3, 32, 32)[:, c, h, w].reshape(n, -1)
    return rows


def _write_cifar(root: Path, per_batch: int = 3, multiarray: str = "numpy.core.multiarray") -> dict:
    """cifar-10-batches-py/ with 5 train batches and a test batch; returns the images per split."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    images = {name: _images(per_batch, 32, seed=i) for i, name in enumerate(names)}
    for name, imgs in images.items():
        labels = [int(v) for v in np.arange(per_batch) % 10]
        (folder / name).write_bytes(_py2_batch_pickle(_cifar_rows(imgs), labels, multiarray))
    return {"train": np.concatenate([images[n] for n in names[:5]]), "test": images["test_batch"]}


def test_py2_pickle_writer_matches_the_format() -> None:
    """The hand-made pickle is what the loaders are tested on, so check it with the stock unpickler."""
    data = _cifar_rows(_images(2, 32, seed=7))
    batch = pickle.loads(_py2_batch_pickle(data, [3, 4], "numpy._core.multiarray"), encoding="bytes")
    assert np.array_equal(batch[b"data"], data) and batch[b"data"].dtype == np.uint8
    assert batch[b"labels"] == [3, 4]


@pytest.mark.parametrize("multiarray", [
    "numpy.core.multiarray",   # the published files (numpy 1.x under Python 2)
    "numpy._core.multiarray",  # a batch re-pickled by numpy 2
])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_pixels_round_trip(tmp_path: Path, split: str, multiarray: str) -> None:
    expected = _write_cifar(tmp_path, multiarray=multiarray)[split]
    images = load_cifar10(tmp_path / "cifar-10-batches-py", split)
    assert images.dtype == torch.uint8 and images.shape == (15 if split == "train" else 3, 3, 32, 32)
    assert np.array_equal(images.numpy(), expected)


def test_cifar10_accepts_parent_folder_and_reads_planes_row_major(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = np.zeros((1, 3072), np.uint8)
    row[0, 1] = 200          # R plane, second byte: row 0, column 1
    row[0, 32] = 100         # R plane, byte 32: row 1, column 0
    row[0, 1024 + 5] = 50    # G plane, row 0, column 5
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(_py2_batch_pickle(row, [0]))
    img = load_cifar10(tmp_path, "train")[0]  # the parent folder
    assert (img[0, 0, 1].item(), img[0, 1, 0].item(), img[1, 0, 5].item()) == (200, 100, 50)
    assert int(img.sum()) == 350  # nothing else is set


def _damage_truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])


@pytest.mark.parametrize("name, damage", [
    ("data_batch_3", lambda f: f.unlink()),                                  # one batch missing
    ("data_batch_2", _damage_truncate),                                      # download cut short
    ("data_batch_1", lambda f: f.write_bytes(b"")),                          # empty file
    ("data_batch_4", lambda f: f.write_bytes(b"\x80\x02garbage")),           # not a pickle
    ("data_batch_5", lambda f: f.write_bytes(pickle.dumps([1, 2], 2))),      # a pickle, but not a dict
    ("data_batch_1", lambda f: f.write_bytes(                                # rows of 3000, not 3072
        _py2_batch_pickle(np.zeros((2, 3000), np.uint8), [0, 1]))),
    ("data_batch_2", lambda f: f.write_bytes(                                # uint16, not uint8
        _py2_batch_pickle(np.zeros((2, 3072), np.uint16), [0, 1]))),
    ("data_batch_3", lambda f: f.write_bytes(                                # no labels
        _py2_batch_pickle(np.zeros((2, 3072), np.uint8), None))),
    ("data_batch_4", lambda f: f.write_bytes(                                # label count != images
        _py2_batch_pickle(np.zeros((2, 3072), np.uint8), [0]))),
    ("data_batch_5", lambda f: f.write_bytes(_py2_batch_pickle(None, [0])))  # no data
])
def test_cifar10_bad_file_names_it(tmp_path: Path, name: str, damage) -> None:
    _write_cifar(tmp_path)
    file = tmp_path / "cifar-10-batches-py" / name
    damage(file)
    with pytest.raises(UsageError, match=re.escape(str(file))):
        load_cifar10(tmp_path, "train")


@pytest.mark.parametrize("module, name", [
    ("os", "system"),                   # the classic: run a shell command
    ("builtins", "eval"),               # arbitrary Python
    ("numpy", "load"),                  # a numpy name, but not one an array needs (loads pickles)
    ("numpy.core.multiarray", "scalar"),  # same module as _reconstruct, not on the list
])
def test_cifar10_refuses_pickles_naming_other_globals(tmp_path: Path, module: str, name: str) -> None:
    """A hand-assembled protocol-0 pickle calling module.name("touch <marker>"): never executed here
    except through the restricted unpickler, which must refuse it before the call."""
    _write_cifar(tmp_path)
    marker = tmp_path / "executed"
    file = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    file.write_bytes(f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(UsageError, match=rf"{re.escape(str(file))}.*{module}\.{name}"):
        load_cifar10(tmp_path, "train")
    assert not marker.exists()


@pytest.mark.parametrize("data_key", [b"data", "data"])  # the original's bytes keys, or a re-pickle's str
def test_cifar10_batch_pickled_by_python3_at_protocol_2(tmp_path: Path, data_key) -> None:
    """Python 3 pickles bytes at protocol 2 as `_codecs.encode(str, "latin1")` (the array buffer, and the
    keys when they are bytes): the one call of a global besides numpy's that a batch may make."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = {name: _images(2, 32, seed=i) for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)])}
    for name, imgs in images.items():
        batch = {data_key: _cifar_rows(imgs), "labels": [1, 2]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    assert np.array_equal(load_cifar10(tmp_path, "train").numpy(), np.concatenate(list(images.values())))


@pytest.mark.parametrize("args, why", [
    (b"(Vtouch x\nVrot13\nt", "another codec"),
    (b"(Vabc\nVlatin1\nVstrict\nt", "more arguments than protocol 2 writes"),
    (b"(S'abc'\nVlatin1\nt", "bytes, not str (encoding='bytes' reads Python 2 strings as bytes)"),
])
def test_cifar10_allows_only_the_latin1_encode_of_a_str(tmp_path: Path, args: bytes, why: str) -> None:
    _write_cifar(tmp_path)
    file = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    file.write_bytes(b"c_codecs\nencode\n" + args + b"R.")
    with pytest.raises(UsageError, match=re.escape(str(file))):
        load_cifar10(tmp_path, "train")


def _ndarray_state(shape: tuple[int, ...], kind: bytes, data: bytes) -> bytes:
    """A pickled ndarray as numpy writes one (an empty array its BUILD fills), with any state."""
    dtype = b"cnumpy\ndtype\n" + _binstring(kind) + _int(0) + _int(1) + b"\x87R"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _int(0) + b"\x85" + _binstring(b"b")
            + b"\x87R(" + _int(1) + b"(" + b"".join(b"L%dL\n" % d for d in shape) + b"t" + dtype + b"\x89" + data
            + b"tb")


def _batch_with(array: bytes) -> bytes:
    return b"\x80\x02}(" + _binstring(b"data") + array + _binstring(b"labels") + b"](" + _int(0) + b"eu."


@pytest.mark.parametrize("content, message", [
    # 9 bytes: BINBYTES8 of a length past sys.maxsize (the C unpickler: OverflowError)
    (b"\x8e" + struct.pack("<Q", 2**63 + 5), "exceeds system's maximum size"),
    # 9 bytes: BINBYTES8 of 2**40 bytes (the C unpickler allocates them before reading: MemoryError)
    (b"\x8e" + struct.pack("<Q", 2**40), "truncated or corrupt"),
    # a memo index of 2**31 - 1 (the C unpickler sizes its memo by it: 32 GiB)
    (b"\x80\x02Nr\xff\xff\xff\x7f.", "holds a NoneType"),
    # _reconstruct of a (10**12,) array: numpy allocates 10**12 bytes (MemoryError)
    (_batch_with(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n(L1000000000000L\nt"
                 + _binstring(b"b") + b"\x87R"), r"refusing _reconstruct\(\.\.\., \(1000000000000,\)"),
    # numpy.ndarray((10**12,)) called directly
    (_batch_with(b"cnumpy\nndarray\n(L1000000000000L\n\x85tR"), "refusing to call numpy.ndarray"),
    # a state of 10**12 uint8 holding one byte (numpy checks this one itself; refused before it runs)
    (_batch_with(_ndarray_state((10**12,), b"u1", _binstring(b"x"))), "needs 1,000,000,000,000 bytes, the file "
                                                                       "holds 1 bytes"),
    # a state of 10**12 Python objects: numpy allocates 8 x 10**12 bytes for the pointers (MemoryError)
    (_batch_with(_ndarray_state((10**12,), b"O8", b"](" + _int(0) + b"e")), "only arrays of numbers load"),
], ids=["binbytes8-overflow", "binbytes8-2**40", "memo-2**31", "reconstruct-10**12", "ndarray-call-10**12",
        "state-10**12-uint8", "state-10**12-objects"])
def test_cifar10_pickles_asking_for_huge_memory_are_refused_in_one_line(tmp_path: Path, content: bytes,
                                                                          message: str) -> None:
    _write_cifar(tmp_path)
    file = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    file.write_bytes(content)
    with pytest.raises(UsageError, match=rf"CIFAR-10 batch file {re.escape(str(file))} .*{message}"):
        load_cifar10(tmp_path, "train")


def test_cifar10_batch_file_larger_than_any_batch_is_refused_unread(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    file = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(file, "r+b") as f:
        f.truncate(MAX_BATCH_FILE_BYTES + 1)  # sparse: nothing is written or read
    with pytest.raises(UsageError, match=rf"{re.escape(str(file))} is {MAX_BATCH_FILE_BYTES + 1:,} bytes, more than"):
        load_cifar10(tmp_path, "train")


def test_cifar10_missing_folder_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "nowhere"))):
        load_cifar10(tmp_path / "nowhere")
    _write_cifar(tmp_path)
    with pytest.raises(UsageError, match="'valid'"):
        load_cifar10(tmp_path, "valid")


# --- STL-10 --------------------------------------------------------------------------------------


def _stl_bytes(images: np.ndarray) -> bytes:
    """(N, 3, 96, 96) -> the *_X.bin layout by definition: plane c, byte w*96 + h (column-major)."""
    n = images.shape[0]
    out = np.zeros((n, 3 * 96 * 96), np.uint8)
    c, h, w = np.meshgrid(np.arange(3), np.arange(96), np.arange(96), indexing="ij")
    out[:, (c * 9216 + w * 96 + h).ravel()] = images[:, c, h, w].reshape(n, -1)
    return out.tobytes()


def _write_stl(root: Path) -> dict[str, np.ndarray]:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    images = {"train_X.bin": _images(2, 96, seed=10), "unlabeled_X.bin": _images(3, 96, seed=11),
              "test_X.bin": _images(1, 96, seed=12)}
    for name, imgs in images.items():
        (folder / name).write_bytes(_stl_bytes(imgs))
    return images


@pytest.mark.parametrize("split, files", [
    ("unlabeled", ["unlabeled_X.bin"]),                   # the default, used for GAN training
    ("train", ["train_X.bin"]),
    ("train+unlabeled", ["train_X.bin", "unlabeled_X.bin"]),  # labeled first, as torchvision orders it
    ("test", ["test_X.bin"]),
])
def test_stl10_pixels_round_trip(tmp_path: Path, split: str, files: list[str]) -> None:
    written = _write_stl(tmp_path)
    images = load_stl10(tmp_path / "stl10_binary", split)
    assert images.dtype == torch.uint8 and images.is_contiguous()
    assert np.array_equal(images.numpy(), np.concatenate([written[f] for f in files]))


def test_stl10_planes_are_column_major(tmp_path: Path) -> None:
    """Spot check straight from the format: the second byte of a plane is row 1, column 0."""
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    raw = np.zeros(27648, np.uint8)
    raw[1] = 200              # R plane, row 1, column 0
    raw[96] = 100             # R plane, row 0, column 1
    raw[2 * 9216 + 3] = 50    # B plane, row 3, column 0
    (folder / "unlabeled_X.bin").write_bytes(raw.tobytes())
    img = load_stl10(tmp_path)[0]  # the parent folder
    assert (img[0, 1, 0].item(), img[0, 0, 1].item(), img[2, 3, 0].item()) == (200, 100, 50)
    assert int(img.sum()) == 350


@pytest.mark.parametrize("content", [
    b"\x00" * (27648 + 5),   # a partial image at the end
    b"\x00" * 27000,         # less than one image
    b"",                     # empty: no images at all
])
def test_stl10_bad_size_names_file(tmp_path: Path, content: bytes) -> None:
    _write_stl(tmp_path)
    file = tmp_path / "stl10_binary" / "unlabeled_X.bin"
    file.write_bytes(content)
    with pytest.raises(UsageError, match=rf"{re.escape(str(file))}.*27648"):
        load_stl10(tmp_path, "unlabeled")


def test_stl10_missing_file_folder_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "nowhere"))):
        load_stl10(tmp_path / "nowhere")
    _write_stl(tmp_path)
    (tmp_path / "stl10_binary" / "train_X.bin").unlink()
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "stl10_binary" / "train_X.bin"))):
        load_stl10(tmp_path, "train+unlabeled")
    with pytest.raises(UsageError, match="'labeled'"):
        load_stl10(tmp_path, "labeled")


# --- image folder --------------------------------------------------------------------------------


def _hwc(images: np.ndarray, i: int) -> np.ndarray:
    return np.ascontiguousarray(images[i].transpose(1, 2, 0))


def test_folder_png_exact_recursive_sorted_and_case_insensitive(tmp_path: Path) -> None:
    imgs = _images(4, 16, seed=20)
    # Sorted relative paths: "A.PNG" < "b.png" < "sub/a.png" < "sub/z/c.Png" (ASCII order).
    names = ["b.png", "sub/z/c.Png", "A.PNG", "sub/a.png"]
    order = sorted(names)
    for i, name in enumerate(names):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_hwc(imgs, i)).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")      # ignored: not PNG/JPEG
    (tmp_path / "._b.png").write_bytes(b"AppleDouble junk")  # ignored: hidden (macOS metadata)
    out = load_image_folder(tmp_path, 16)
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.uint8
    expected = np.stack([imgs[names.index(name)] for name in order])
    assert np.array_equal(out.numpy(), expected)  # PNG is lossless and no resize happens at 16


def test_folder_center_crop_then_lanczos(tmp_path: Path) -> None:
    wide = np.random.default_rng(21).integers(0, 256, (20, 30, 3), dtype=np.uint8)  # H 20, W 30
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert np.array_equal(load_image_folder(tmp_path, 20)[0].permute(1, 2, 0).numpy(), wide[:, 5:25])
    expected = Image.fromarray(np.ascontiguousarray(wide[:, 5:25])).resize((8, 8), Image.Resampling.LANCZOS)
    assert np.array_equal(load_image_folder(tmp_path, 8)[0].permute(1, 2, 0).numpy(), np.asarray(expected))


def test_folder_converts_modes_to_rgb(tmp_path: Path) -> None:
    gray = np.random.default_rng(22).integers(0, 256, (8, 8), dtype=np.uint8)
    rgba = np.random.default_rng(23).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "a_gray.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "b_rgba.png")
    out = load_image_folder(tmp_path, 8).numpy()
    assert all(np.array_equal(out[0, c], gray) for c in range(3))
    assert np.array_equal(out[1], rgba[..., :3].transpose(2, 0, 1))  # alpha dropped


def test_folder_jpeg(tmp_path: Path) -> None:
    # A smooth image: JPEG at quality 95 keeps it within a few levels, so the check below can fail
    # only if pixels are misplaced (a transposed or channel-swapped read errs by tens of levels).
    y, x = np.mgrid[0:32, 0:32]
    smooth = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "photo.JPEG", quality=95)
    out = load_image_folder(tmp_path, 32)[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(out - smooth).mean() < 2.0
    assert np.abs(out - smooth.transpose(1, 0, 2)).mean() > 20  # the check can tell a transpose apart


def _truncated_png(file: Path) -> None:
    Image.fromarray(_hwc(_images(1, 64, seed=24), 0)).save(file)
    file.write_bytes(file.read_bytes()[:300])


@pytest.mark.parametrize("make_bad", [
    lambda f: f.write_bytes(b"this is not a PNG"),  # wrong content behind the suffix
    lambda f: f.write_bytes(b""),                   # empty file
    _truncated_png,                                 # a PNG cut short
])
def test_folder_unreadable_image_names_it(tmp_path: Path, make_bad) -> None:
    Image.fromarray(_hwc(_images(1, 8, seed=25), 0)).save(tmp_path / "a_good.png")
    bad = tmp_path / "b_bad.png"
    make_bad(bad)
    with pytest.raises(UsageError, match=re.escape(str(bad))):
        load_image_folder(tmp_path, 8)


def _fifo(file: Path) -> None:
    os.mkfifo(file)


def _socket(file: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(file))  # the socket file outlives the closed socket


@pytest.mark.parametrize("make_special", [
    _fifo,                                                # opening it would wait for a writer forever
    _socket,
    lambda f: f.symlink_to(f.parent / "nowhere.png"),     # a link to nothing
], ids=["fifo", "socket", "broken-link"])
def test_folder_refuses_a_non_regular_file_naming_it_without_hanging(tmp_path: Path, make_special) -> None:
    Image.fromarray(_hwc(_images(1, 8, seed=26), 0)).save(tmp_path / "a_good.png")
    special = tmp_path / "b_special.png"
    make_special(special)

    def hung(signum, frame):
        raise TimeoutError(f"the loader blocked on {special}")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        with pytest.raises(UsageError, match=re.escape(str(special)) + " is a"):
            load_image_folder(tmp_path, 8)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_folder_empty_missing_and_bad_resolution(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "empty")) + "$"):
        load_image_folder(tmp_path / "empty", 32)
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "missing"))):
        load_image_folder(tmp_path / "missing", 32)
    for resolution in (0, -1, 2.5, True):
        with pytest.raises(UsageError, match="resolution"):
            load_image_folder(tmp_path, resolution)  # type: ignore[arg-type]
