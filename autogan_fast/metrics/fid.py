"""Fréchet Inception Distance between two Gaussians, and the `.npz` statistics files FID is scored against.

FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), computed as pytorch-fid and TTUR do (scipy's
`sqrtm`, an eps on the diagonals when the product is singular, the imaginary part dropped only when it
is numerical noise), so numbers are comparable with papers that used those tools.

Statistics files are the TTUR / pytorch-fid format: an uncompressed `.npz` with `mu` (D,) and `sigma`
(D, D), e.g. AutoGAN's `fid_stats_cifar10_train.npz`.
"""

from __future__ import annotations

import math
import os
import tempfile
import typing
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from scipy import linalg

from autogan_fast.errors import UsageError

# pytorch-fid's offset; large enough to make a rank-deficient covariance (fewer samples than
# dimensions) invertible, small against the variances of Inception features (~1e-2 and up).
_EPS = 1e-6
# pytorch-fid's limit: |imaginary part| on the diagonal of sqrt(S1 S2) above this is not rounding.
_IMAG_ATOL = 1e-3


def _check_stats(mu: np.ndarray, sigma: np.ndarray, which: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{which}: mu must be (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{which}: mu and sigma must be finite")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FID between N(mu1, sigma1) and N(mu2, sigma2), as a Python float (pytorch-fid's algorithm).

    Computed in float64 whatever the input dtype. When sqrt(sigma1 sigma2) comes out non-finite (a
    singular product), it is recomputed with 1e-6 added to both diagonals, with a warning. A complex
    square root is accepted only when its diagonal's imaginary parts are below 1e-3 (rounding noise)
    and then its real part is used.

    Raises:
        ValueError: mismatched or malformed shapes, non-finite statistics, or a square root with a
            large imaginary part (the covariances are not positive semi-definite; usually too few
            samples or a bug upstream).
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    _check_stats(mu1, sigma1, "first statistics")
    _check_stats(mu2, sigma2, "second statistics")
    if mu1.shape != mu2.shape:
        raise ValueError(f"statistics of different dimension: {mu1.shape[0]} and {mu2.shape[0]} features")

    diff = mu1 - mu2
    with warnings.catch_warnings():
        # scipy warns on a singular product; the finiteness check below handles that case itself.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: sqrt(sigma1 sigma2) is singular; adding {_EPS} to the covariance diagonals",
                      RuntimeWarning, stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * _EPS
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise ValueError("FID: sqrt(sigma1 sigma2) is not finite even with an eps offset")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=_IMAG_ATOL):
            largest = float(np.max(np.abs(covmean.imag)))
            raise ValueError(f"FID: sqrt(sigma1 sigma2) has an imaginary component of {largest:.3g}; "
                             f"the covariances are not positive semi-definite (too few samples?)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def save_fid_stats(path: str | os.PathLike[str], mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write `mu` (D,) and `sigma` (D, D) as float64 to an `.npz` at exactly `path`, atomically.

    The file is written to a temporary name in the same folder and renamed over `path` (os.replace),
    so a reader never sees half a file and an interrupted run leaves any previous file intact. No
    ".npz" is appended to `path` (unlike `np.savez` given a name).

    Raises:
        ValueError: malformed or non-finite statistics.
        UsageError: the folder does not exist or cannot be written.
    """
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    _check_stats(mu, sigma, "FID statistics to save")
    path = Path(path).expanduser()
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write FID statistics {path}: folder {folder} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise UsageError(f"cannot write FID statistics {path}: {e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        # mkstemp creates the file private (0600); give it the usual permissions of a data file.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except OSError as e:
        raise UsageError(f"cannot write FID statistics {path}: {e}") from None
    finally:
        if os.path.exists(tmp_name):  # only when something failed before the rename
            os.unlink(tmp_name)


# The largest feature dimension D a statistics file may declare: Inception's pool features are 2048-d. Its
# sigma (D, D) of float64 is 2 GiB at this bound; a header claiming more is refused before anything is
# allocated (np.load would allocate what the header claims, 10**11 elements included, before reading).
MAX_FEATURES = 16384
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_ZIP_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)  # what a damaged member raises


def load_fid_stats(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read `mu` (D,) and `sigma` (D, D) from a TTUR / pytorch-fid `.npz`, as float64 arrays.

    Each member's `.npy` header is read first: its dtype must be real numbers (never pickled Python
    objects: nothing is unpickled), its shape (D,) or (D, D) with D at most MAX_FEATURES, and the member
    must hold the bytes the header declares; only then is the array read.

    Raises:
        UsageError: the file is missing, not an `.npz`, lacks `mu` or `sigma`, holds pickled objects,
            declares too large or inconsistent shapes, or has non-finite values; the message names the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"FID statistics file not found: {path}")
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, EOFError, zipfile.BadZipFile) as e:  # a cut download loses the zip's directory
        with open(path, "rb") as f:
            single = f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX
        if single:
            raise UsageError(f"FID statistics file {path} is a single .npy array, not an .npz with mu and "
                             f"sigma") from None
        raise UsageError(f"FID statistics file {path} is not an .npz file (a zip of .npy arrays): {e}") from None
    with archive:
        members = {name.removesuffix(".npy"): name for name in archive.namelist()}
        missing = [key for key in ("mu", "sigma") if key not in members]
        if missing:
            raise UsageError(f"FID statistics file {path} lacks {' and '.join(missing)} "
                             f"(it has: {', '.join(members) or 'nothing'})")
        headers = {key: _npy_header(archive, members[key], path) for key in ("mu", "sigma")}
        mu_shape, sigma_shape = headers["mu"].shape, headers["sigma"].shape
        if len(mu_shape) != 1 or sigma_shape != (mu_shape[0], mu_shape[0]):
            raise UsageError(f"FID statistics file {path}: mu must be (D,) and sigma (D, D), got {mu_shape} and "
                             f"{sigma_shape}")
        if mu_shape[0] > MAX_FEATURES:
            raise UsageError(f"FID statistics file {path} declares {mu_shape[0]:,}-d features, more than "
                             f"{MAX_FEATURES:,} (Inception's are 2048-d); refused before reading")
        for key, header in headers.items():
            if header.held < header.declared:  # a member cut short (np.load would allocate, then fail)
                raise UsageError(f"FID statistics file {path} is corrupt: its {key} declares {header.shape} "
                                 f"{header.dtype} ({header.declared:,} bytes) but holds {header.held:,}")
        try:
            mu, sigma = (_read_npy(archive, members[key]) for key in ("mu", "sigma"))
        except _ZIP_ERRORS as e:  # a damaged member (a bad CRC, a broken compressed stream)
            raise UsageError(f"FID statistics file {path} is corrupt: {e}") from None
    mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    try:
        _check_stats(mu, sigma, f"FID statistics file {path}")
    except ValueError as e:
        raise UsageError(str(e)) from None
    return mu, sigma


class NpyHeader(typing.NamedTuple):
    shape: tuple[int, ...]
    dtype: np.dtype
    declared: int  # bytes of data the header declares
    held: int  # bytes of data the member holds (its size in the zip's directory, less the header)


def _npy_header(archive: zipfile.ZipFile, name: str, path: Path) -> NpyHeader:
    """What member `name`'s `.npy` header declares, read without reading the array; refused in one line
    unless it is a `.npy` of real numbers (never pickled Python objects: nothing is unpickled)."""
    info = archive.getinfo(name)
    try:
        with archive.open(info) as member:
            magic = member.read(len(np.lib.format.MAGIC_PREFIX))
            if magic == np.lib.format.MAGIC_PREFIX:
                member.seek(0)
                version = np.lib.format.read_magic(member)
                reader = _NPY_HEADER_READERS.get(version)
                shape, _, dtype = reader(member) if reader is not None else ((), None, None)
                header_size = member.tell()
    except _ZIP_ERRORS as e:  # a damaged member, or a header numpy cannot parse
        raise UsageError(f"FID statistics file {path} is corrupt: its {name}: {e}") from None
    if magic != np.lib.format.MAGIC_PREFIX:  # a pickle, or any other bytes
        raise UsageError(f"FID statistics file {path} is corrupt: its {name} is not a .npy array")
    if dtype is None:
        raise UsageError(f"FID statistics file {path}: its {name} is a .npy of version {version[0]}.{version[1]}, "
                         f"which statistics files are not written in")
    if dtype.hasobject:  # pickled Python objects: a statistics file never holds any, and nothing is unpickled
        raise UsageError(f"FID statistics file {path}: its {name} holds Python objects (a pickle), not numbers; "
                         f"refused")
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise UsageError(f"FID statistics file {path}: mu and sigma must be real numbers, its {name} is {dtype}")
    return NpyHeader(shape, dtype, math.prod(shape) * dtype.itemsize, max(info.file_size - header_size, 0))


def _read_npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(name) as member:
        return np.lib.format.read_array(member, allow_pickle=False)
