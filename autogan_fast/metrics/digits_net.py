"""The embedded feature network: a small classifier trained on scikit-learn's digits.

It plays the role Inception-v3 plays for natural images (as MNIST GAN papers score with an MNIST
classifier): IS from its logits, FID from its penultimate features. Training is deterministic
(fixed seed, full-batch, CPU, under a forked RNG so callers' random streams are untouched), takes a
few seconds, and the result is cached under `$XDG_CACHE_HOME/autogan_fast/` (written atomically).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..safe_load import load_weights_only
from .feature_net import FeatureNet, check_uint8_images

DIGITS_NET_VERSION = 1  # bump when the architecture or the training recipe changes
INPUT_SIZE = 8


@dataclass(frozen=True)
class DigitsNetRecipe:
    """How the classifier is trained; part of the cache key through DIGITS_NET_VERSION."""

    hidden: int = 128  # width of the first hidden layer
    features: int = 64  # width of the penultimate layer (the FID features)
    steps: int = 400  # full-batch Adam steps
    lr: float = 3e-3  # Adam learning rate
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    holdout_fraction: float = 0.25  # share of each class held out to measure accuracy
    seed: int = 0  # initialization and split seed


class DigitsFeatureNet(FeatureNet):
    """uint8 RGB images of any size -> grey 8x8 in [0, 1] -> MLP -> (64 features, 10 logits)."""

    name = "digits-mlp-v1"
    num_classes = 10

    def __init__(self, recipe: DigitsNetRecipe = DigitsNetRecipe()):
        super().__init__()
        self.num_features = recipe.features
        self.body = nn.Sequential(
            nn.Linear(INPUT_SIZE * INPUT_SIZE, recipe.hidden), nn.ReLU(),
            nn.Linear(recipe.hidden, recipe.features), nn.ReLU(),
        )
        self.head = nn.Linear(recipe.features, self.num_classes)
        self.register_buffer("holdout_accuracy", torch.zeros(()))

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> float (N, 64): grey, resized to 8x8 with antialiasing, in [0, 1]."""
        check_uint8_images(images)
        grey = images.float().mean(dim=1, keepdim=True) / 255.0
        if grey.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            grey = F.interpolate(grey, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                 align_corners=False, antialias=True)
        return grey.flatten(1)

    def forward_flat(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(flat)
        return features, self.head(features)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_flat(self.preprocess(images))


def train_digits_net(recipe: DigitsNetRecipe = DigitsNetRecipe()) -> DigitsFeatureNet:
    """Train deterministically on the CPU; stores the held-out accuracy in the returned net."""
    from sklearn.model_selection import train_test_split

    from ..data.digits import load_digits_arrays, load_digits_images

    _, labels = load_digits_arrays()
    flat = DigitsFeatureNet.preprocess(load_digits_images())
    labels_t = torch.from_numpy(labels)
    train_idx, test_idx = train_test_split(torch.arange(len(labels)).numpy(), test_size=recipe.holdout_fraction,
                                           stratify=labels, random_state=recipe.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = DigitsFeatureNet(recipe)
        optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        x_train, y_train = flat[train_idx], labels_t[train_idx]
        for _ in range(recipe.steps):
            loss = F.cross_entropy(net.forward_flat(x_train)[1], y_train)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = net.forward_flat(flat[test_idx])[1].argmax(1)
        net.holdout_accuracy.fill_((predicted == labels_t[test_idx]).float().mean())
    return net.eval().requires_grad_(False)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autogan_fast"


def load_digits_net(device: torch.device | str = "cpu", cache_dir: Path | None = None) -> DigitsFeatureNet:
    """The cached classifier, trained on first use. A corrupt cache file is retrained and replaced."""
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    path = cache_dir / f"digits_net_v{DIGITS_NET_VERSION}.pt"
    with torch.random.fork_rng(devices=[]):  # building the module draws initial weights
        net = DigitsFeatureNet()
    try:
        net.load_state_dict(load_weights_only(path, "digits classifier cache"))
    except Exception:  # missing or damaged cache (UsageError, or a state dict that does not fit): retrain
        net = train_digits_net()
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            torch.save(net.state_dict(), tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:  # full disk (torch.save's zip writer raises RuntimeError), no rights
            # a cache only saves the next run a few seconds of training: go on with the trained net
            with contextlib.suppress(OSError):
                tmp.unlink()
            print(f"warning: cannot cache the digits classifier in {cache_dir} ({err}); it is retrained next "
                  f"time", file=sys.stderr)
    return net.eval().requires_grad_(False).to(device)
