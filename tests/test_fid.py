"""Fréchet distance against closed forms computed without scipy's sqrtm, and the `.npz` stats files."""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

import autogan_fast.metrics.fid as fid_module
from autogan_fast.errors import UsageError
from autogan_fast.metrics.fid import frechet_distance, load_fid_stats, save_fid_stats


def _random_spd(d: int, rng: np.random.Generator, floor: float = 0.1) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + floor * np.eye(d)


def _sample_stats(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, d)) * np.linspace(0.5, 2.0, d) + 3.0
    return x.mean(0), np.cov(x, rowvar=False)


def _diag_fid(mu1, s1, mu2, s2) -> float:
    """Independent closed form for diagonal (or jointly diagonalizable) covariances."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2)))


# Rounding: sqrtm and the traces are float64, errors ~1e-15 relative to Tr(S1) + Tr(S2), grown by the
# conditioning of the matrices used here (< 1e3). 1e-9 leaves margin yet is far below any formula
# error (a missing factor 2, a dropped trace, a sqrt of the wrong product are O(1) relative).
RTOL = 1e-9


@pytest.mark.parametrize("n, d", [
    (2000, 8),   # well-conditioned sample covariance
    (40, 64),    # fewer samples than dimensions: singular covariance, as with small FID runs
])
def test_distance_to_itself_is_zero(n: int, d: int) -> None:
    mu, sigma = _sample_stats(n, d, seed=0)
    value = frechet_distance(mu, sigma, mu, sigma)
    assert type(value) is float
    # Singular S: sqrt(S S) has eigenvalues near zero whose square roots carry ~sqrt(1e-16) error.
    assert abs(value) <= 1e-6 * np.trace(sigma)


@pytest.mark.parametrize("d, seed, mean_shift", [
    (1, 1, 0.0),   # scalar case: 0-d / 1-element inputs go through atleast_1d / atleast_2d
    (5, 2, 0.0),   # covariance term only
    (5, 3, 1.5),   # mean and covariance terms together
    (64, 4, 0.3),  # many dimensions, variances spread over three orders of magnitude
])
def test_diagonal_gaussians_match_closed_form(d: int, seed: int, mean_shift: float) -> None:
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) + mean_shift
    s1, s2 = 10 ** rng.uniform(-1.5, 1.5, d), 10 ** rng.uniform(-1.5, 1.5, d)
    expected = _diag_fid(mu1, s1, mu2, s2)
    value = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert value == pytest.approx(expected, rel=RTOL, abs=RTOL * (s1.sum() + s2.sum()))
    assert expected > 0.1  # the case is not trivially zero


def test_rotated_gaussians_match_closed_form() -> None:
    """Dense covariances sharing eigenvectors: FID depends only on the eigenvalues."""
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    s1, s2 = rng.uniform(0.1, 4, 16), rng.uniform(0.1, 4, 16)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    value = frechet_distance(mu1, q @ np.diag(s1) @ q.T, mu2, q @ np.diag(s2) @ q.T)
    assert value == pytest.approx(_diag_fid(mu1, s1, mu2, s2), rel=RTOL, abs=RTOL * (s1.sum() + s2.sum()))


def test_general_gaussians_match_symmetric_formula() -> None:
    """Non-commuting covariances: Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), computed with eigh only."""
    rng = np.random.default_rng(6)
    s1, s2 = _random_spd(32, rng), _random_spd(32, rng)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)

    def psd_sqrt(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    root = psd_sqrt(s1)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                     - 2 * np.trace(psd_sqrt(root @ s2 @ root)))
    value = frechet_distance(mu1, s1, mu2, s2)
    assert value == pytest.approx(expected, rel=RTOL, abs=RTOL * (np.trace(s1) + np.trace(s2)))


def test_float32_inputs_are_computed_in_float64() -> None:
    """Stats often arrive as float32 (TTUR files); float32 arithmetic would err by ~1e-6 relative."""
    mu1, sigma1 = _sample_stats(500, 16, seed=7)
    mu2, sigma2 = _sample_stats(500, 16, seed=8)
    mu32, sigma32 = mu1.astype(np.float32), sigma1.astype(np.float32)
    expected = frechet_distance(mu32.astype(np.float64), sigma32.astype(np.float64), mu2, sigma2)
    assert expected > 0.01
    assert frechet_distance(mu32, sigma32, mu2, sigma2) == pytest.approx(expected, rel=RTOL)


def test_singular_product_retries_with_eps(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-fid's fallback: when sqrtm's result is not finite, add 1e-6 to both diagonals."""
    real_sqrtm = fid_module.linalg.sqrtm
    calls = []

    def failing_once(m: np.ndarray) -> np.ndarray:
        calls.append(m)
        return np.full_like(m, np.inf) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(fid_module.linalg, "sqrtm", failing_once)
    s1, s2 = np.array([1.0, 4.0]), np.array([9.0, 0.0])  # a zero variance makes the product singular
    with pytest.warns(RuntimeWarning, match="singular"):
        value = frechet_distance(np.zeros(2), np.diag(s1), np.ones(2), np.diag(s2))
    assert len(calls) == 2
    eps = 1e-6  # the offset enters only the sqrt term
    expected = 2 + np.sum(s1 + s2) - 2 * np.sum(np.sqrt((s1 + eps) * (s2 + eps)))
    assert value == pytest.approx(expected, rel=RTOL)


def test_large_imaginary_part_is_an_error() -> None:
    """A covariance with a negative eigenvalue has no real square root of the product."""
    with pytest.raises(ValueError, match="imaginary component of 1"):
        frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))


@pytest.mark.parametrize("mu2, sigma2, message", [
    (np.zeros(3), np.eye(3), "different dimension"),       # stats of another feature network
    (np.zeros(2), np.eye(3), r"mu must be \(D,\)"),        # mu and sigma disagree
    (np.zeros((2, 1)), np.eye(2), r"mu must be \(D,\)"),   # mu not a vector
    (np.array([0.0, np.nan]), np.eye(2), "finite"),        # NaN from a diverged run
])
def test_malformed_statistics(mu2, sigma2, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        frechet_distance(np.zeros(2), np.eye(2), mu2, sigma2)


# --- .npz files ------------------------------------------------------------------------------------


def test_round_trip_and_format(tmp_path: Path) -> None:
    mu, sigma = _sample_stats(300, 12, seed=8)
    path = tmp_path / "fid_stats_test"  # no suffix: written exactly here, nothing appended
    save_fid_stats(path, mu, sigma)
    assert sorted(os.listdir(tmp_path)) == ["fid_stats_test"]  # no temporary file left
    loaded_mu, loaded_sigma = load_fid_stats(path)
    assert np.array_equal(loaded_mu, mu) and np.array_equal(loaded_sigma, sigma)
    with np.load(path) as data:  # what pytorch-fid / TTUR do with a stats file
        assert set(data.files) == {"mu", "sigma"}
        assert np.array_equal(data["mu"], mu) and np.array_equal(data["sigma"], sigma)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_reads_files_written_like_ttur(tmp_path: Path) -> None:
    """TTUR's and pytorch-fid's own writer: np.savez(path, mu=..., sigma=...), float32 here."""
    mu, sigma = _sample_stats(300, 12, seed=9)
    np.savez(tmp_path / "fid_stats_cifar10_train.npz", mu=mu.astype(np.float32),
             sigma=sigma.astype(np.float32))
    loaded_mu, loaded_sigma = load_fid_stats(tmp_path / "fid_stats_cifar10_train.npz")
    assert loaded_mu.dtype == loaded_sigma.dtype == np.float64
    assert np.array_equal(loaded_mu, mu.astype(np.float32).astype(np.float64))


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stats.npz"
    save_fid_stats(path, np.zeros(3), np.eye(3))
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fid_module.np, "savez", disk_full)
    with pytest.raises(UsageError, match=re.escape(str(path))):
        save_fid_stats(path, np.ones(3), 2 * np.eye(3))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["stats.npz"]


def test_save_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "missing"))):
        save_fid_stats(tmp_path / "missing" / "stats.npz", np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"sigma \(D, D\)"):
        save_fid_stats(tmp_path / "stats.npz", np.zeros(2), np.eye(3))
    assert not (tmp_path / "stats.npz").exists()


def _npy_bytes(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, a)
    return buffer.getvalue()


def _write_npz(**arrays):
    return lambda path: np.savez(path, **arrays)


def _zip_of(**members: bytes):
    """An .npz-like zip whose members hold exactly `members` (name.npy: bytes)."""
    def make(path: Path) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(f"{name}.npy", data)
    return make


def _claiming_npz(mu_shape: tuple[int, ...], sigma_shape: tuple[int, ...]):
    """An .npz whose members' .npy headers claim float64 arrays of these shapes and hold no data."""
    def header(shape: tuple[int, ...]) -> bytes:
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
        return buffer.getvalue()
    return _zip_of(mu=header(mu_shape), sigma=header(sigma_shape))


def _truncated_npz(path: Path) -> None:
    np.savez(path, mu=np.zeros(64), sigma=np.eye(64))
    path.write_bytes(path.read_bytes()[:-200])  # the zip directory at the end is cut


def _corrupt_member(path: Path) -> None:
    np.savez(path, mu=np.zeros(64), sigma=np.eye(64))
    raw = bytearray(path.read_bytes())
    start = raw.find(b"\x93NUMPY", raw.find(b"sigma.npy"))  # the sigma member's header
    raw[start:start + 6] = b"XXXXXX"  # keep the zip intact, break the array inside
    path.write_bytes(bytes(raw))


def _flipped_data_byte(path: Path) -> None:
    np.savez(path, mu=np.zeros(64), sigma=np.eye(64))
    raw = bytearray(path.read_bytes())
    raw[raw.find(b"\x93NUMPY", raw.find(b"sigma.npy")) + 200] ^= 1  # sigma's data: its CRC no longer matches
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "not found"),                                                    # no file
    (lambda p: p.write_text("mu sigma"), "not an .npz"),                             # text
    (lambda p: p.write_bytes(_npy_bytes(np.zeros(3))), "single .npy"),                # an .npy
    (_write_npz(mu=np.zeros(2)), "lacks sigma"),                                      # half the stats
    (_write_npz(m=np.zeros(2), s=np.eye(2)), r"lacks mu and sigma \(it has: m, s\)"),  # other names
    (_write_npz(mu=np.zeros((1, 2)), sigma=np.eye(2)), r"mu must be \(D,\)"),         # mu 2-D
    (_write_npz(mu=np.zeros(3), sigma=np.eye(2)), r"sigma \(D, D\)"),                 # sizes disagree
    (_write_npz(mu=np.zeros(2), sigma=np.full((2, 2), np.inf)), "finite"),            # inf
    (_write_npz(mu=np.zeros(2, complex), sigma=np.eye(2)), "real numbers"),           # complex
    (_write_npz(mu=np.array([None, None]), sigma=np.eye(2)), r"its mu.npy holds Python objects \(a pickle\), "
     r"not numbers; refused$"),                                                       # pickled objects
    (_claiming_npz((10**11,), (10**11, 10**11)), "declares 100,000,000,000-d features"),  # np.load: MemoryError
    (_claiming_npz((10**11,), (2, 2)), r"mu must be \(D,\) and sigma \(D, D\)"),     # shapes, before reading
    (_claiming_npz((64,), (64, 64)), r"corrupt: its mu declares \(64,\) float64 \(512 bytes\) but holds 0"),
    (_zip_of(mu=pickle.dumps([0.0, 0.0]), sigma=_npy_bytes(np.eye(2))), "corrupt: its mu.npy is not a .npy array$"),
    (lambda p: p.write_bytes(pickle.dumps({"mu": [0.0], "sigma": [[1.0]]})), r"not an .npz file \(a zip of .npy "
     r"arrays\): File is not a zip file$"),                                          # a bare pickle: no advice
    (_truncated_npz, "not an .npz"),                                                  # cut download
    (_corrupt_member, "corrupt"),                                                     # damaged member
    (_flipped_data_byte, "corrupt: Bad CRC-32"),                                      # damaged data
])
def test_bad_stats_files_name_the_file(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "stats.npz"
    make(path)
    with pytest.raises(UsageError, match=message) as info:
        load_fid_stats(path)
    assert str(path) in str(info.value)


def test_zipfile_error_type_is_what_numpy_raises(tmp_path: Path) -> None:
    """Guards the except clause: a cut zip surfaces from np.load as BadZipFile, not OSError."""
    path = tmp_path / "cut.npz"
    _truncated_npz(path)
    with pytest.raises(zipfile.BadZipFile):
        np.load(path)
