"""`load_generator`: AutoGAN's released generator files (both layouts, both torch file formats) and this
project's train checkpoints, checked against an independent implementation of the authors' cell."""

import dataclasses
import io
import os
import pickle

import numpy as np
import pytest
import torch
from autogan_reference import AuthorsGenerator, full_checkpoint, randomize, save_as_torch1

from autogan_fast import load_generator
from autogan_fast.config import TrainConfig
from autogan_fast.errors import UsageError
from autogan_fast.models.derived import DerivedGenerator
from autogan_fast.pretrained import CHECKPOINT_FORMAT, RELEASED, read_generator_file, resolve_arch

ARCH_A = (1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3)
ARCH_B = (1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 3)
ARCH_C = (1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3)


class Foreign:
    """A class no weights file needs: loading a pickle of it must be refused."""


def authors_generator(arch, latent_dim=16, gf_dim=8, bottom_width=2, seed=1) -> AuthorsGenerator:
    return randomize(AuthorsGenerator(arch, latent_dim, gf_dim, bottom_width), seed).eval()


def save(obj, path, file_format: str) -> None:
    """`torch1`: as torch 1.x / numpy 1 wrote it (legacy format); `zip`: today's torch.save."""
    if file_format == "torch1":
        save_as_torch1(obj, path)
    else:
        torch.save(obj, path)


def assert_same_images(authors: AuthorsGenerator, ours: DerivedGenerator, latent_dim: int) -> None:
    """Both in float64, where a wrong mapping shows at O(0.1) and rounding at O(1e-15)."""
    z = torch.randn(6, latent_dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():  # AutoGAN's in-place skip-in add needs it, as in its own evaluation
        expected = authors.double()(z)
        got = ours.double()(z)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------- AutoGAN's files

@pytest.mark.parametrize("arch, bottom_width", [
    (ARCH_A, 2),                                        # the paper's generator (a): no norm, bilinear cell 2
    (ARCH_B, 3),                                        # b: nearest everywhere, every shortcut; odd bottom width
    (ARCH_C, 2),                                        # c: BatchNorm in cell 1 (n1 / n2 keys)
    ((1, 2, 0, 0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 2), 2),    # IN (no keys), cell 3 skips from cell 1 only: skip_in_ops.0
    ((1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 1), 2),    # no skips in cell 2, cell 3 from cell 2 only
], ids=["a", "b-bw3", "c-bn", "in-skip-from-cell1", "skip-from-cell2"])
@pytest.mark.parametrize("layout", ["full", "state-dict"])
@pytest.mark.parametrize("file_format", ["torch1", "zip"])
def test_authors_file_gives_the_authors_images(arch, bottom_width, layout, file_format, tmp_path):
    authors = authors_generator(arch, bottom_width=bottom_width)
    path = tmp_path / "gen.pth"
    save(full_checkpoint(authors) if layout == "full" else authors.state_dict(), path, file_format)
    loaded = read_generator_file(path, " ".join(map(str, arch)))
    gen = loaded.generator
    assert isinstance(gen, DerivedGenerator) and not gen.training
    assert (gen.latent_dim, gen.gf_dim, gen.bottom_width) == (16, 8, bottom_width)  # read off the tensors
    assert (loaded.layout, loaded.weights) == (("autogan", "avg_gen_state_dict") if layout == "full"
                                               else ("autogan-state-dict", "state dict"))
    assert loaded.epoch == (320 if layout == "full" else None)
    assert_same_images(authors, gen, 16)  # the EMA generator, not gen_state_dict (which differs by 1)


def test_paper_sized_file_loads_into_the_4_405_251_parameter_generator(tmp_path):
    authors = AuthorsGenerator(ARCH_A, latent_dim=128, gf_dim=256, bottom_width=4)  # AutoGAN-a as released
    torch.save(authors.state_dict(), tmp_path / "autogan_cifar10_a.pth")
    gen = load_generator(tmp_path / "autogan_cifar10_a.pth", arch="autogan_cifar10_a")
    assert (gen.latent_dim, gen.gf_dim, gen.bottom_width, gen.output_size) == (128, 256, 4, 32)
    assert sum(p.numel() for p in gen.parameters()) == sum(p.numel() for p in authors.parameters()) == 4_405_251


def test_torch1_file_is_the_legacy_format_with_numpy1_names(tmp_path):
    data = save_as_torch1(full_checkpoint(authors_generator(ARCH_A)), tmp_path / "a.pth")
    assert not data.startswith(b"PK")  # not a zip archive
    assert b"cnumpy.core.multiarray\nscalar\n" in data and b"numpy._core" not in data
    state = torch.load(io.BytesIO(data), weights_only=False)  # what the file holds, read without limits
    assert type(state["best_fid"]) is np.float64 and state["best_fid"] == 12.42


def test_released_names_and_spellings_of_an_arch(tmp_path):
    authors = authors_generator(ARCH_A)
    path = tmp_path / "a.pth"
    torch.save(authors.state_dict(), path)
    for arch in ("autogan_cifar10_a", ARCH_A, list(ARCH_A), "1 0 1 1 1 0 0 1 1 1 0 1 0 3",
                 "1,0,1,1,1,0,0,1,1,1,0,1,0,3", [str(v) for v in ARCH_A]):
        gen = load_generator(path, arch=arch)
        assert gen.arch == ARCH_A, arch
    assert RELEASED == {
        "autogan_cifar10_a": ARCH_A, "autogan_cifar10_b": ARCH_B, "autogan_cifar10_c": ARCH_C,
        "autogan_cifar10_a2stl10": ARCH_A}


def test_a2stl10_is_the_48px_generator(tmp_path):
    authors = authors_generator(ARCH_A, latent_dim=8, gf_dim=4, bottom_width=6)
    path = tmp_path / "a2stl10.pth"
    save_as_torch1(full_checkpoint(authors), path)
    gen = load_generator(path, arch="autogan_cifar10_a2stl10")
    assert gen.output_size == 48
    assert_same_images(authors, gen, 8)


def test_full_checkpoint_names_its_model_so_the_arch_may_be_left_out(tmp_path):
    authors = authors_generator(ARCH_C)
    save_as_torch1(full_checkpoint(authors, gen_model="autogan_cifar10_c"), tmp_path / "c.pth")
    assert load_generator(tmp_path / "c.pth").arch == ARCH_C
    torch.save(authors.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(UsageError, match="does not say its architecture"):
        load_generator(tmp_path / "bare.pth")


def test_device_and_eval_mode(tmp_path):
    torch.save(authors_generator(ARCH_A).state_dict(), tmp_path / "a.pth")
    gen = load_generator(tmp_path / "a.pth", arch="autogan_cifar10_a", device=torch.device("cpu"))
    assert not gen.training and all(p.device.type == "cpu" for p in gen.parameters())


# --------------------------------------------------------------------------------------------- train checkpoints

def train_checkpoint(arch=ARCH_C) -> dict:
    config = TrainConfig(gf_dim=8, latent_dim=8, bottom_width=2)
    gen, ema = (DerivedGenerator(arch, 8, 8, 2) for _ in range(2))
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    return {"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(config), "arch": list(arch), "iter": 7,
            "gen": gen.state_dict(), "ema": ema.state_dict(), "metrics": None}, ema


def test_train_checkpoint_loads_its_ema_generator_with_its_own_arch(tmp_path):
    state, ema = train_checkpoint()
    torch.save(state, tmp_path / "best.pt")
    loaded = read_generator_file(tmp_path / "best.pt")
    assert (loaded.layout, loaded.weights, loaded.iter) == ("train", "ema", 7)
    assert loaded.generator.arch == ARCH_C and not loaded.generator.training
    for name, tensor in ema.state_dict().items():
        assert torch.equal(loaded.generator.state_dict()[name], tensor), name
    assert load_generator(tmp_path / "best.pt", arch="autogan_cifar10_c").arch == ARCH_C  # the same one: fine
    with pytest.raises(UsageError, match=r"holds a generator of architecture 1 1 1 1 .*not the 1 0 1 1"):
        load_generator(tmp_path / "best.pt", arch="autogan_cifar10_a")


# --------------------------------------------------------------------------------------------- refused input

def write_foreign(path):
    torch.save({"avg_gen_state_dict": {}, "args": Foreign()}, path)


def write_numpy_int(path):
    save_as_torch1({**full_checkpoint(authors_generator(ARCH_A)), "epoch": np.int64(320)}, path)


class ShellCommand:
    """Pickles as a call of os.system: what a malicious checkpoint holds (never run here)."""

    def __reduce__(self):
        return os.system, ("echo this must never run",)


def write_malicious_pickle(path):
    path.write_bytes(pickle.dumps({"avg_gen_state_dict": ShellCommand()}))  # pickle.dump's default protocol


def write_malicious_torch_file(path):
    torch.save({**authors_generator(ARCH_A).state_dict(), "hook": ShellCommand()}, path)


@pytest.mark.parametrize("write, arch, expected, reason", [
    (lambda p: torch.save(authors_generator(ARCH_C).state_dict(), p), ARCH_A, "unexpected key 'cell1.n1.weight'",
     "BN entries of a cell whose arch has no norm (a strict load_state_dict would accept them)"),
    (lambda p: torch.save(authors_generator(ARCH_A).state_dict(), p), ARCH_C, "missing key 'cell1.n1.weight'",
     "an arch with BN in cell 1 needs its entries"),
    (lambda p: torch.save(authors_generator(ARCH_A).state_dict(), p), ARCH_B, "missing key 'cell3.c_sc.weight'",
     "b has a shortcut in cell 3"),
    (lambda p: torch.save({**authors_generator(ARCH_A).state_dict(), "cell2.c1.weight": torch.zeros(8, 8, 1, 1)},
                          p), ARCH_A, "'cell2.c1.weight' has shape (8, 8, 1, 1), the generator needs (8, 8, 3, 3)",
     "a tensor of the wrong shape"),
    (lambda p: torch.save(authors_generator(ARCH_A).state_dict(), p), (0, *ARCH_A[1:]), "post-activation",
     "AutoGAN's derived cells are pre-activation only"),
    (lambda p: torch.save({"epoch": 3, "weights": [1, 2]}, p), ARCH_A, "matches no generator layout",
     "a dict of neither layout"),
    (lambda p: torch.save({"format": "autogan_fast.search/2"}, p), None, "not a checkpoint of autogan_fast.train",
     "a search checkpoint holds no trained generator"),
    (lambda p: torch.save({"avg_gen_state_dict": [1, 2]}, p), ARCH_A, "is not a state dict of tensors",
     "a full checkpoint whose generator is not a state dict"),
    (write_foreign, ARCH_A, "refusing to load", "a pickle holding an arbitrary class (weights_only)"),
    (write_numpy_int, ARCH_A, "refusing to load", "numpy types beyond float64 are not allowed"),
    (write_malicious_pickle, ARCH_A, f"it names the global {os.system.__module__}.system",
     "a plain pickle calling os.system: named, not called corrupt (torch's own error does not name it)"),
    (write_malicious_torch_file, ARCH_A, f"it names the global {os.system.__module__}.system",
     "a torch file calling os.system"),
    (lambda p: p.write_bytes(b"not a checkpoint"), ARCH_A, "corrupt checkpoint", "garbage bytes"),
    (lambda p: None, ARCH_A, "no checkpoint at", "a missing file"),
], ids=["bn-keys-under-no-norm", "missing-bn", "missing-shortcut", "shape", "post-act", "neither", "search",
        "bad-avg", "foreign-class", "numpy-int64", "malicious-pickle", "malicious-torch-file", "garbage", "missing"])
def test_refused_files_are_one_line_usage_errors_naming_the_file(write, arch, expected, reason, tmp_path):
    path = tmp_path / "gen.pth"
    write(path)
    with pytest.raises(UsageError) as info:
        load_generator(path, arch=arch)
    message = str(info.value)
    assert expected in message, f"{reason}: {message}"
    assert "\n" not in message and str(path) in message, f"{reason}: {message}"
    assert "False" not in message, f"{reason}: never torch's advice to load with weights_only=False: {message}"


@pytest.mark.parametrize("spec, expected", [
    ("autogan_cifar10_z", "unknown architecture 'autogan_cifar10_z'"),
    ("1 0 1 1", "14 integers"),
    ([1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 9], "skip-ins"),
    ("1 0 1 1 1 0 0 1 1 1 0 1 0 x", "unknown architecture"),
])
def test_resolve_arch_refuses_bad_specs(spec, expected):
    with pytest.raises(UsageError, match=expected):
        resolve_arch(spec)
