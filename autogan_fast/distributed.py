"""Past one process with torchrun: the `World` a command runs in, on PyTorch's own distributed engine.

`torchrun --nproc-per-node N -m autogan_fast.<command>` starts N processes (ranks); `start_world` joins
them into one process group (NCCL on CUDA, Gloo on the CPU). Without torchrun, or with N = 1, the
world is a single process and nothing here does any work: every method below is then a no-op.

The design, shared by `train`, `evaluate` and `search`:
- Replicated random streams. Every rank seeds the same global generators and draws the same numbers:
  the whole global batch of noise and the same epoch permutations, each rank then keeping its own
  rows (`World.rows`). So W ranks compute exactly the global batch one process does, the controller
  samples the same architectures on every rank without a broadcast, and a checkpoint's random state
  (rank 0's) resumes at any world size. Work whose draws differ between ranks (each rank scoring other
  architectures) is followed by `sync_random_state`, which copies rank 0's streams to every rank.
- Global batch sizes keep AutoGAN's meaning: rank r takes rows [r B / W, (r + 1) B / W) of each
  batch of B; a world size that does not divide a batch is a usage error before any work.
- Rank 0 alone writes files (run folder, logs, checkpoints, samples, result); `on_main` runs such a
  step there and hands its result, or its error, to every rank, so a bad `--out` stops all ranks
  with the same one-line message instead of leaving the others waiting in a collective.
- A rank that fails otherwise exits non-zero with its traceback; torchrun then stops the other ranks
  (no hang), and the process group's timeout (`TIMEOUT`) bounds any collective as a last resort.
"""

from __future__ import annotations

import datetime
import gc
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import UsageError

T = TypeVar("T")
# A collective waiting longer than this fails the job (a rank that died without torchrun noticing). Long
# enough for rank 0 to compute a dataset's reference statistics while the others wait (`main_first`).
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0  # this process's rank, 0 .. size - 1
    size: int = 1  # number of processes (torchrun's WORLD_SIZE)
    local_rank: int = 0  # rank on this machine: the CUDA device this process uses

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that writes files and prints."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch of `batch_size` (all of them in a single process)."""
        per_rank = batch_size // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def batch_starts(self, count: int, batch_size: int) -> range:
        """First indices of this rank's batches of items 0 .. count - 1: batch k (items k B .. (k + 1) B - 1)
        is rank k % size's, so the ranks' shares are disjoint and cover every item (all batches in one
        process)."""
        return range(self.rank * batch_size, count, self.size * batch_size)

    def check_divides(self, **batch_sizes: int) -> None:
        """Usage error unless the world size divides every named global batch size."""
        for name, value in batch_sizes.items():
            if value % self.size:
                raise UsageError(f"--{name.replace('_', '-')} {value} is not divisible by the world size "
                                 f"{self.size}: each of the {self.size} ranks takes an equal share of the batch")

    def device(self, device: torch.device) -> torch.device:
        """The CUDA device of this rank (`local_rank`) when `device` is CUDA; `device` otherwise."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    # --- collectives (no-ops in a single process) --------------------------------------------------

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def all_gather_floats(self, values: dict[int, float], count: int) -> list[float]:
        """Merge {index: value} maps whose keys partition range(count) across the ranks (float64 sum)."""
        merged = torch.zeros(count, dtype=torch.float64, device=self._collective_device())
        for index, value in values.items():
            merged[index] = value
        return self.all_reduce_(merged).tolist()  # host sync

    def broadcast_object(self, value: T) -> T:
        """Rank 0's `value` on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def on_main(self, step: Callable[[], T]) -> T:
        """Run `step` on rank 0 only and return its result on every rank; its UsageError is raised on
        every rank (so all stop with rank 0's message, none waits for the others)."""
        result = error = None
        if self.is_main:
            try:
                result = step()
            except UsageError as err:
                error = str(err)
        result, error = self.broadcast_object((result, error))
        if error is not None:
            raise UsageError(error)
        return result

    def main_first(self, step: Callable[[], T]) -> T:
        """`step` on rank 0, then on the other ranks (a cache rank 0 fills is then read by the others)."""
        if self.is_main:
            result = step()
        self.barrier()
        if not self.is_main:
            result = step()
        return result

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def average_gradients(self, module: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
        """Average `module`'s gradients over the ranks, and `loss` with them (one all-reduce of one flat
        buffer); returns the averaged loss. For networks whose used parameters change every step (the
        shared GAN's sampled paths), where DDP would need `find_unused_parameters`. Every rank ran the same
        architecture, so the same parameters hold gradients everywhere."""
        if not self.distributed:
            return loss
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0].dtype)])
        self.all_reduce_(flat).div_(self.size)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()
        return flat[-1].to(loss.dtype)

    def sync_random_state(self) -> None:
        """Copy rank 0's global random streams (CPU, and this rank's CUDA device) to every rank."""
        if not self.distributed:
            return
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        states = self.broadcast_object((torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None))
        torch.set_rng_state(states[0])
        if cuda and states[1] is not None:
            torch.cuda.set_rng_state(states[1])

    def _collective_device(self) -> torch.device:
        """Where collectives' tensors live: this rank's GPU under NCCL, the CPU under Gloo."""
        if self.distributed and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


SINGLE = World()


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of a sum that every rank uses is the sum of
    the ranks' gradients (what `nn.SyncBatchNorm` does; torch.distributed.nn's version is deprecated)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the ranks of the default process group, with gradients (see `_AllReduceSum`)."""
    return _AllReduceSum.apply(tensor)


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` as DistributedDataParallel, its buffers not synced at every forward: ours (SN vectors,
    batch-norm statistics) are computed identically on every rank. Torch >= 2.13 names that flag
    `forward_sync_buffers` (`broadcast_buffers` is deprecated there)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=device_ids, **no_sync)


def start_world(device: torch.device) -> World:
    """Join torchrun's ranks into one process group (NCCL for CUDA `device`, Gloo otherwise); a single
    process (no torchrun, or one process) starts nothing and gets `SINGLE`."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            gpus = torch.cuda.device_count()
            if world.local_rank >= gpus:
                raise UsageError(f"torchrun started more processes on this machine than it has GPUs ({gpus}): "
                                 f"use --nproc-per-node {gpus} or fewer, or --device cpu")
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend, timeout=TIMEOUT)
    return world


def stop_world(world: World, finished: bool = True) -> None:
    """Leave the process group at the end of a command: once every rank has `finished` (a barrier; skipped
    after an error, when a peer may be gone), with nothing left holding it (DDP reducers sit in reference
    cycles: a process group freed during interpreter shutdown can abort the process in Gloo's threads)."""
    if world.distributed and dist.is_initialized():
        if finished:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()


__all__ = ["SINGLE", "TIMEOUT", "World", "all_reduce_sum", "data_parallel", "start_world", "stop_world"]
