"""Datasets as uint8 image tensors held on the device, and batches drawn from them by index."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UsageError

DATASETS = ("digits", "cifar10", "stl10", "folder")
STL10_SPLITS = ("unlabeled", "train", "train+unlabeled", "test")


def load_images(dataset: str, data_path: str | None = None, split: str | None = None,
                resolution: int = 32) -> torch.Tensor:
    """Load a dataset as uint8 (N, 3, H, W) on the CPU. `resolution` only sizes image folders."""
    if dataset == "digits":
        from .digits import load_digits_images

        return load_digits_images()
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if not data_path:
        raise UsageError(f"dataset {dataset!r} needs --data-path")
    if dataset == "cifar10":
        from .cifar10 import load_cifar10

        return load_cifar10(data_path, split=split or "train")
    if dataset == "stl10":
        from .stl10 import load_stl10

        return load_stl10(data_path, split=split or "unlabeled")
    from .folder import load_image_folder

    return load_image_folder(data_path, resolution)


def resize_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize uint8 images with antialiased bilinear filtering (as PIL does), rounding back to uint8."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    resized = F.interpolate(images.float(), size=(resolution, resolution), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def quantize_images(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8, the way AutoGAN saves and scores images."""
    return (images * 127.5 + 127.5).clamp_(0.0, 255.0).to(torch.uint8)


class DeviceImageData:
    """A uint8 dataset on the device, resized once per resolution, sampled by index on the device."""

    def __init__(self, images: torch.Tensor, device: torch.device | str):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images.to(device)
        self.device = self.images.device
        self._resized: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def at_resolution(self, resolution: int) -> torch.Tensor:
        """All images as uint8 at `resolution`, cached."""
        if resolution not in self._resized:
            self._resized[resolution] = resize_uint8(self.images, resolution)
        return self._resized[resolution]

    def batches(self, batch_size: int, resolution: int, rows: slice | None = None) -> EpochBatches:
        """Real batches in [-1, 1] from shuffled epochs (see `EpochBatches`); `rows`: this rank's share."""
        return EpochBatches(self.at_resolution(resolution), batch_size, rows)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches in one epoch (see `batches_per_epoch`)."""
        return batches_per_epoch(len(self), batch_size)


def batches_per_epoch(num_images: int, batch_size: int) -> int:
    """len // batch_size: the last partial batch is dropped (see `EpochBatches`); at least one."""
    return max(1, num_images // batch_size)


def gather_batch(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """uint8 images[index] as a float batch in [-1, 1] (on the images' device: no host work)."""
    return images[index].float().div_(127.5).sub_(1.0)


class EpochBatches:
    """Batches of shuffled epochs without replacement, as AutoGAN's shuffled DataLoader gives them.

    Each epoch is a fresh random permutation of the images (drawn on their device: no host sync); its
    last partial batch is dropped so every batch has one static shape (AutoGAN's loader keeps it; a
    static shape is what CUDA graphs need). With fewer images than one batch, an epoch is a single batch
    of several permutations concatenated. `state_dict` / `load_state_dict` resume mid-epoch exactly.

    Under torchrun each rank keeps `rows` of every global batch (`distributed`'s replicated streams);
    the state is the global one, so a run resumes at any world size.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, rows: slice | None = None):
        self.images = images
        self.batch_size = batch_size
        self.rows = slice(None) if rows is None else rows
        self.per_epoch = batches_per_epoch(len(images), batch_size)
        self.perm: torch.Tensor | None = None
        self.position = 0  # batches of the current epoch already handed out

    def _new_epoch(self) -> None:
        n = len(self.images)
        copies = -(-self.batch_size // n)  # ceil: >= 1 batch per epoch even with n < batch_size
        self.perm = torch.cat([torch.randperm(n, device=self.images.device) for _ in range(copies)])
        self.position = 0

    def next_index(self) -> torch.Tensor:
        """The image indices of the next batch, this rank's rows (a view of the epoch's permutation, on the
        device)."""
        if self.perm is None or self.position == self.per_epoch:
            self._new_epoch()
        start = self.position * self.batch_size
        self.position += 1
        return self.perm[start:start + self.batch_size][self.rows]

    def next(self) -> torch.Tensor:
        """The next batch in [-1, 1]."""
        return gather_batch(self.images, self.next_index())

    def state_dict(self) -> dict:
        return {"perm": None if self.perm is None else self.perm.cpu(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.perm = None if state["perm"] is None else state["perm"].to(self.images.device)
        self.position = int(state["position"])
