import numpy as np
import pytest
import torch

from autogan_fast.data import load_images, resize_uint8
from autogan_fast.kernels import InceptionStats
from autogan_fast.metrics import load_feature_net
from autogan_fast.metrics.digits_net import DigitsFeatureNet, load_digits_net


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return load_digits_net(cache_dir=tmp_path_factory.mktemp("cache"))


def test_heldout_accuracy_is_at_least_95_percent(net):
    assert net.holdout_accuracy.item() >= 0.95


def test_corrupt_cache_is_retrained_deterministically_without_touching_the_rng(net, tmp_path):
    (tmp_path / "digits_net_v1.pt").write_bytes(b"not a checkpoint")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    retrained = load_digits_net(cache_dir=tmp_path)  # trains again
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    for key, value in net.state_dict().items():
        assert torch.equal(value, retrained.state_dict()[key]), key  # bit-identical training
    cached = load_digits_net(cache_dir=tmp_path)  # now from the file just written
    assert torch.equal(cached.head.weight, net.head.weight)


def inception_score_of(net: DigitsFeatureNet, images: torch.Tensor) -> float:
    stats = InceptionStats(len(images), net.num_features, net.num_classes, splits=10)
    stats.update(*net(images))
    return stats.inception_score()[0]


@pytest.mark.parametrize("resolution", [4, 8, 16, 32])  # every stage's output size, and CIFAR's
def test_real_digits_score_high_at_every_resolution(net, resolution):
    images = resize_uint8(load_images("digits"), resolution)
    score = inception_score_of(net, images)
    # 10 balanced classes, ~97% accurate: IS of real data near 10 (measured 9.2-9.8); at 4 px (the
    # demo's stage-0 size) half the pixels are gone and it drops to about 4.3, still far above noise.
    assert score > (3.5 if resolution == 4 else 8.5)


def test_noise_scores_low(net):
    torch.manual_seed(0)
    noise = torch.randint(0, 256, (500, 3, 8, 8), dtype=torch.uint8)
    assert inception_score_of(net, noise) < 3.0


def test_interface_and_registry(net):
    features, logits = net(load_images("digits")[:5])
    assert features.shape == (5, net.num_features) and logits.shape == (5, 10)
    assert load_feature_net("digits").name == net.name
    with pytest.raises(ValueError, match="uint8"):
        net(torch.zeros(2, 3, 8, 8))
    assert np.isfinite(features.numpy()).all()


@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),  # a full disk as the file system reports it
    RuntimeError("[enforce fail at inline_container.cc] . unexpected pos"),  # ... as torch.save's zip writer does
])
def test_a_cache_that_cannot_be_written_is_a_warning_not_a_crash(failure, tmp_path, monkeypatch, capsys):
    """The cache only spares the next run a few seconds of training: a full disk there used to be a traceback."""
    from autogan_fast.metrics import digits_net

    monkeypatch.setattr(digits_net, "train_digits_net", DigitsFeatureNet)  # an untrained net: the test is the write

    def refuse(state, path):
        open(path, "wb").close()  # a temporary file left behind by the failed write
        raise failure

    monkeypatch.setattr(digits_net.torch, "save", refuse)
    net = load_digits_net(cache_dir=tmp_path / "cache")
    assert isinstance(net, DigitsFeatureNet) and not net.training
    err = capsys.readouterr().err
    assert err.startswith("warning: cannot cache the digits classifier") and len(err.strip().splitlines()) == 1
    assert list((tmp_path / "cache").iterdir()) == []  # no temporary file, no cache file
