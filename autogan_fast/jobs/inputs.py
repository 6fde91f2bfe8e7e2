"""What a run opens before it writes anything: its device (and the torchrun world it runs in), the fused-op
backend, the dataset and the feature network. Every refusal here is a UsageError, so a job opens its
inputs before it makes or touches its run folder."""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..config import default_feature_net
from ..data import DeviceImageData, load_images
from ..distributed import SINGLE, World, start_world, stop_world
from ..errors import UsageError
from ..kernels import set_backend, triton_available
from ..metrics import FeatureNet, load_feature_net


@dataclass
class Inputs:
    """A run's opened inputs."""

    device: torch.device  # the device it runs on (a torchrun rank's own GPU)
    data: DeviceImageData | None  # the training images on the device (None: a job that only scores)
    feature_net: FeatureNet  # the IS / FID feature network
    engine: str = "eager"  # the resolved engine (eager or graph)
    reference: tuple[np.ndarray, np.ndarray] | None = None  # FID reference statistics (training only)


def select_kernels(name: str, device: torch.device) -> None:
    """Run every fused op through backend `name` (--kernels) from now on; `triton` needs CUDA here."""
    if name == "triton" and not (device.type == "cuda" and triton_available()):
        raise UsageError(f"--kernels triton runs the Triton kernels on CUDA tensors, and this run is on "
                         f"{device.type}{'' if triton_available() else ' without triton installed'}; use "
                         f"--kernels auto or torch")
    set_backend(name)
    if device.type == "cuda":  # cuDNN times its algorithms per shape (in the engines' eager warm-ups)
        torch.backends.cudnn.benchmark = True


def resolve_device(name: str, world: World = SINGLE) -> torch.device:
    """auto = CUDA when present, else CPU; asking for CUDA without it is a usage error. Under torchrun a
    CUDA device is the rank's own GPU (`World.device`)."""
    if name == "auto":
        return world.device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    return world.device(torch.device(name))


@contextlib.contextmanager
def torchrun_world(device_name: str) -> Iterator[World]:
    """The `World` this process runs in (joined under torchrun, see `distributed`), left at the end."""
    world = start_world(resolve_device(device_name))
    finished = False
    try:
        yield world
        finished = True
    finally:
        stop_world(world, finished)


def open_inputs(config: typing.Any, resolution: int, world: World = SINGLE,
                ) -> tuple[torch.device, DeviceImageData, FeatureNet]:
    """Device, dataset (on the device) and feature network of a run, after seeding every random stream.

    `config` is any config with the shared settings (`InputSettings`: dataset, data_path, split,
    feature_net, inception_weights, kernels, device, seed). `resolution` only sizes image folders.
    Under torchrun every rank seeds alike (replicated streams) and uses its own GPU.
    """
    device = resolve_device(config.device, world)
    select_kernels(config.kernels, device)
    torch.manual_seed(config.seed)
    images = load_images(config.dataset, config.data_path, config.split, resolution=resolution)
    feature_net = load_feature_net(default_feature_net(config.dataset, config.feature_net), device,
                                   config.inception_weights, world)
    return device, DeviceImageData(images, device), feature_net


__all__ = ["Inputs", "open_inputs", "resolve_device", "select_kernels", "torchrun_world"]
