"""The FID Inception-v3: shapes, the TF1 resize, strict weight loading in both published key formats,
and equality with torch-fidelity's implementation given the same (random) weights.

No real weights exist on test machines, so the network gets seeded random weights scaled to keep
activations O(1) through all 94 layers (He-normal convs, BN near identity): with PyTorch's default
init the features would shrink towards zero and every comparison below would pass trivially.
Kept fast on 2 CPUs: at most two images per forward (one 299x299 forward is ~0.5 s).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from autogan_fast.errors import UsageError
from autogan_fast.metrics.inception import (
    WEIGHTS_FILES,
    InceptionV3FeatureNet,
    load_inception_v3,
    resize_bilinear_tf1x,
)

TORCH_FIDELITY_NAME, PYTORCH_FID_NAME = WEIGHTS_FILES  # the two published file names
# Same operations in the same order give bit-identical results (measured: max difference 0.0); the
# slack only covers a BLAS choosing other blockings on another machine. Architecture slips are far
# above it: counting padding in the average pools moves features by 4e-2 of their maximum, an average
# instead of a max pool in Mixed_7c by 2e-1, a half-pixel resize by 2e-2.
REL_TOL = 1e-5


def _randomize(net: InceptionV3FeatureNet, seed: int) -> InceptionV3FeatureNet:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("conv.weight"):
                t.normal_(0, (2 / t[0].numel()) ** 0.5, generator=g)  # He: keeps ReLU activations O(1)
            elif name.endswith(("bn.weight", "running_var")):
                t.uniform_(0.8, 1.2, generator=g)
            elif name.endswith(("bn.bias", "running_mean")):
                t.normal_(0, 0.1, generator=g)
            elif name == "fc.weight":
                t.normal_(0, 2048 ** -0.5, generator=g)
            elif name == "fc.bias":
                t.normal_(0, 1, generator=g)  # large, so logits that included it would differ
    return net


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    err = (actual - expected).abs().max().item()
    assert err <= REL_TOL * expected.abs().max().item(), err


@pytest.fixture(scope="module")
def net() -> InceptionV3FeatureNet:
    return _randomize(InceptionV3FeatureNet(), seed=0)


@pytest.fixture(scope="module")
def cifar_pair() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def pair_outputs(net: InceptionV3FeatureNet, cifar_pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return net(cifar_pair)


# --- forward ---------------------------------------------------------------------------------------


def test_class_attributes() -> None:
    assert (InceptionV3FeatureNet.name, InceptionV3FeatureNet.num_features,
            InceptionV3FeatureNet.num_classes) == ("inception-v3-compat", 2048, 1008)


@pytest.mark.parametrize("shape", [
    (1, 3, 299, 299),  # the network's own size: the resize is skipped
    (1, 3, 17, 40),    # non-square and odd: the TF1 resize takes any H and W
])
def test_shapes_dtypes_and_health(net: InceptionV3FeatureNet, shape: tuple[int, ...]) -> None:
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    features, logits = net(images)
    assert features.shape == (shape[0], 2048) and logits.shape == (shape[0], 1008)
    assert features.dtype == logits.dtype == torch.float32
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()
    assert (features >= 0).all()  # average of ReLU outputs
    assert features.std() > 0.1 and logits.std() > 0.1  # not degenerate, so comparisons mean something


def test_logits_are_unbiased(net: InceptionV3FeatureNet, pair_outputs) -> None:
    features, logits = pair_outputs
    assert torch.equal(logits, features.mm(net.fc.weight.T))
    assert not torch.allclose(logits, net.fc(features), atol=0.1)  # the bias (std 1) is really left out


def test_batch_size_independence(net: InceptionV3FeatureNet, cifar_pair, pair_outputs) -> None:
    features, logits = net(cifar_pair[1:])
    _close(features, pair_outputs[0][1:])
    _close(logits, pair_outputs[1][1:])


def test_rejects_non_uint8(net: InceptionV3FeatureNet) -> None:
    with pytest.raises(ValueError, match="uint8"):
        net(torch.zeros(1, 3, 32, 32))


# --- TF1 resize ------------------------------------------------------------------------------------


def test_resize_tf1_upsample_known_values() -> None:
    """TF1 (align_corners=False): output i samples input i * in/out, no half-pixel offset, so a row
    [a, b] doubled is [a, (a+b)/2, b, b]: anchored top-left, the last sample repeats the border."""
    x = torch.tensor([[10.0, 30.0], [50.0, 90.0]]).view(1, 1, 2, 2)
    expected = torch.tensor([[10, 20, 30, 30], [30, 45, 60, 60], [50, 70, 90, 90], [50, 70, 90, 90.0]])
    assert torch.equal(resize_bilinear_tf1x(x, (4, 4))[0, 0], expected)
    # PyTorch's half-pixel resize differs, which is why the TF1 one exists at all.
    assert not torch.allclose(F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)[0, 0],
                              expected)


def test_resize_tf1_downsample_matches_float64_formula() -> None:
    x = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = resize_bilinear_tf1x(x.float(), (4, 5)).double()

    def taps(n_in: int, n_out: int) -> torch.Tensor:  # (n_out, n_in) interpolation matrix
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        for i in range(n_out):
            pos = i * n_in / n_out
            lo = int(pos)
            m[i, lo] += 1 - (pos - lo)
            m[i, min(lo + 1, n_in - 1)] += pos - lo
        return m

    expected = taps(7, 4) @ x @ taps(9, 5).T
    assert (out - expected).abs().max() < 1e-5  # float32 coordinates and arithmetic on values < 1


# --- torch-fidelity reference ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_fidelity() -> Iterator[types.SimpleNamespace]:
    """torch-fidelity's Inception modules, imported without its package __init__.

    `import torch_fidelity` imports torchvision (for its CLIP, DINOv2 and VGG extractors), which is not
    installable beside our torch; its Inception extractor itself needs only torch. So a stand-in
    package object pointing at the installed folder lets the two modules import, and
    `pytest.importorskip("torch_fidelity")` would wrongly skip here. Skipped only when torch-fidelity
    is not installed at all (`pip install --no-deps torch-fidelity==0.4.0`).
    """
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torch-fidelity not installed (pip install --no-deps torch-fidelity==0.4.0)")
    before = set(sys.modules)
    stub = types.ModuleType("torch_fidelity")
    stub.__path__ = list(spec.submodule_search_locations)
    with pytest.MonkeyPatch.context() as mp:
        if "torch_fidelity" not in sys.modules:
            mp.setitem(sys.modules, "torch_fidelity", stub)
        yield types.SimpleNamespace(
            extractor=importlib.import_module("torch_fidelity.feature_extractor_inceptionv3"),
            interpolate=importlib.import_module("torch_fidelity.interpolate_compat_tensorflow"),
        )
    for name in set(sys.modules) - before:  # leave no half-imported package behind
        if name.startswith("torch_fidelity"):
            del sys.modules[name]


def test_resize_equals_torch_fidelity_bit_exact(torch_fidelity) -> None:
    x = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(4)).float()
    ref = torch_fidelity.interpolate.interpolate_bilinear_2d_like_tensorflow1x(
        x, size=(299, 299), align_corners=False)
    assert torch.equal(resize_bilinear_tf1x(x, (299, 299)), ref)  # same ops in the same order


def test_equals_torch_fidelity(net, cifar_pair, pair_outputs, torch_fidelity, tmp_path: Path) -> None:
    path = tmp_path / TORCH_FIDELITY_NAME
    torch.save(dict(net.state_dict()), path)
    ref = torch_fidelity.extractor.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path))
    ref_features, ref_logits = ref(cifar_pair[:1])  # one image keeps it fast; batching is tested above
    _close(pair_outputs[0][:1], ref_features)
    _close(pair_outputs[1][:1], ref_logits)


# --- weights -----------------------------------------------------------------------------------------


def _bn_prefixes(state: dict[str, torch.Tensor]) -> list[str]:
    return [k[: -len("running_mean")] for k in state if k.endswith(".bn.running_mean")]


def _as_torch_fidelity(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch-fidelity's converter output: a plain dict, the four BN tensors, no counters."""
    return dict(state)


def _as_pytorch_fid(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pytorch-fid's file: a torchvision Inception3 state dict, so every BN also has its counter."""
    out = dict(state)
    for prefix in _bn_prefixes(state):
        out[prefix + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Random weights saved in both formats; pytorch-fid's in the legacy (pre-1.6) serialization its
    2019 file uses, torch-fidelity's in the zip format."""
    folder = tmp_path_factory.mktemp("weights")
    state = _randomize(InceptionV3FeatureNet(), seed=5).state_dict()
    torch.save(_as_torch_fidelity(state), folder / TORCH_FIDELITY_NAME)
    torch.save(_as_pytorch_fid(state), folder / PYTORCH_FID_NAME, _use_new_zipfile_serialization=False)
    return {"state": state, TORCH_FIDELITY_NAME: folder / TORCH_FIDELITY_NAME,  # type: ignore[dict-item]
            PYTORCH_FID_NAME: folder / PYTORCH_FID_NAME}


def _assert_loaded(net: InceptionV3FeatureNet, state: dict[str, torch.Tensor]) -> None:
    loaded = net.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert not net.training and not any(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("name", [TORCH_FIDELITY_NAME, PYTORCH_FID_NAME])
def test_loads_both_formats_by_path(weights, name: str) -> None:
    _assert_loaded(load_inception_v3(weights[name]), weights["state"])


@pytest.mark.parametrize("name", [TORCH_FIDELITY_NAME, PYTORCH_FID_NAME])
def test_finds_both_files_in_torch_home(weights, name: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / name).symlink_to(weights[name])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _assert_loaded(load_inception_v3(), weights["state"])
    _assert_loaded(load_inception_v3(checkpoints), weights["state"])  # a folder given explicitly


def test_missing_weights_message_says_what_to_put_where(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UsageError) as info:
        load_inception_v3()
    message = str(info.value)
    assert TORCH_FIDELITY_NAME in message and PYTORCH_FID_NAME in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "\n" not in message
    with pytest.raises(UsageError, match=re.escape(str(tmp_path / "w.pth"))):
        load_inception_v3(tmp_path / "w.pth")
    with pytest.raises(UsageError, match=re.escape(TORCH_FIDELITY_NAME)):
        load_inception_v3(tmp_path)  # a folder without either file


def _edit_missing(s: dict) -> None:
    del s["Mixed_6b.branch7x7_2.conv.weight"]


def _edit_unexpected(s: dict) -> None:
    s["AuxLogits.fc.weight"] = torch.zeros(1000, 768)


def _edit_shape(s: dict) -> None:
    s["fc.weight"] = s["fc.weight"][:1000]


def _edit_wrapper(s: dict) -> None:
    s["blocks.0.0.conv.weight"] = s.pop("Conv2d_1a_3x3.conv.weight")


@pytest.mark.parametrize("edit, expected", [
    (_edit_missing, r"missing keys \[Mixed_6b\.branch7x7_2\.conv\.weight\]"),  # a layer short
    (_edit_unexpected, r"unexpected keys \[AuxLogits\.fc\.weight\]"),           # torchvision's aux head
    (_edit_shape, r"fc\.weight \(1000, 2048\) != \(1008, 2048\)"),              # ImageNet-1000 classifier
    (_edit_wrapper, r"pytorch-fid's InceptionV3 wrapper"),                     # hint for a common mix-up
])
def test_strict_loading(weights, tmp_path: Path, edit, expected: str) -> None:
    state = _as_pytorch_fid(weights["state"])
    edit(state)
    path = tmp_path / PYTORCH_FID_NAME
    torch.save(state, path)
    with pytest.raises(UsageError, match=rf"{re.escape(str(path))}.*{expected}"):
        load_inception_v3(path)


class _NotAllowed:
    """Any class outside torch's weights-only allowlist stands for code a checkpoint might smuggle in."""


@pytest.mark.parametrize("content", [
    b"not a checkpoint at all",      # garbage
    b"",                             # empty download
    "list",                          # a pickle of the wrong thing
    "object",                        # an arbitrary object: refused by the weights-only unpickler
])
def test_unreadable_weights_name_the_file(tmp_path: Path, content) -> None:
    path = tmp_path / TORCH_FIDELITY_NAME
    if content == "list":
        torch.save([torch.zeros(1)], path)
    elif content == "object":
        torch.save({"fc.weight": _NotAllowed()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=re.escape(str(path))):
        load_inception_v3(path)
