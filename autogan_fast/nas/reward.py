"""The search reward as a captured pipeline: generate -> uint8 -> feature network -> IS statistics.

Per batch of `batch_size` images, over static buffers:
  1. the generator step (one captured graph per architecture and batch): noise drawn on the device
     into the noise buffer (`normal_`, as `torch.randn` draws it), `gen` in eval mode, quantized to
     uint8 exactly as real images are stored (`quantize_images`) into the uint8 image buffer of that
     resolution;
  2. the feature step (one captured graph per batch, precision and resolution: the resolution
     changes with the search stage, and a graph reads the image buffer it was captured with): the
     feature network (which resizes internally, e.g. Inception's TF1-style resize to 299) writes
     float32 features and logits into their buffers;
  3. `InceptionStats.update(features[:r], logits[:r])`, eagerly (it launches without a host sync;
     r = images still wanted: every batch draws and generates a full batch, the last one is cut).
Feature batches (`feature_batch`): the feature network may take several generator batches at once
(Inception-v3 at 299 px fills a GPU only at batches of hundreds): each generator batch is copied into
its slot of a (k * batch_size)-image buffer and the feature step runs once per k generator batches,
k = feature_batch // batch_size (at least 1, at most the reward's batches). The noise stream and the
images are those of k = 1, so only the feature network's batch changes. Default (None): 500 images on
CUDA (chosen for the GPU: Inception-v3's activations at 500 images are ~6 GB in fp32), one generator
batch elsewhere (the CPU path and its rewards unchanged).
Keys in the `GraphCache`: ("reward-gen", arch_key(arch), batch_size) and ("reward-features", feature
rows, precision, (H, W)): the architecture's key is `search_space.arch_key`, the graph engine's too. One
cache may serve one `RewardPipeline` (its graphs hold this pipeline's buffers), next to any other steps
of the search.
Without a cache the same steps run eagerly; with `GraphCache(CaptureBackend(), ...)` (the CPU) the
same code runs through the cache.

Host reads. `score` reads the device once: `InceptionStats.inception_score()` at its end. "Between
its two reads" (the previous reward's final read and this one's) nothing reads a device value:
`accumulate` (everything but the read) runs under `NoHostSync` (tests/sync_guard.py) in tests/test_reward.py,
and under `torch.cuda.set_sync_debug_mode("error")` in the GPU test.

Random stream. The eager reward (`metrics.scoring.inception_score`) draws `torch.randn(batch_size, latent)`
per batch, full batches cut after generation; this pipeline draws the same full batches in the same
order with `normal_` on its noise buffer, so uncaptured in fp32 on the CPU it gives the same float
bit for bit (a test). Captured on a GPU the draws are the same Philox stream (graph-safe RNG).

Precision (`--reward-precision`), of the feature step only; the generator always runs as the
training runs it:
  - fp32: exact fp32 matmuls and convolutions (TF32 off for cuBLAS and cuDNN, and oneDNN pinned to
    IEEE where torch has that switch), set around the feature step and restored after;
  - tf32: TF32 allowed for cuBLAS and cuDNN (CPU kernels ignore it);
  - bf16: the feature network under `torch.autocast(device_type, torch.bfloat16)`, the uint8 image
    buffer in channels-last memory format (cuDNN's fast layout; the generator's output is copied into
    it, no extra pass), fp32 leftovers in TF32; features / logits are stored as fp32 for the stats.
DEFAULT (to be measured). Until a GPU run measures it, the default is "fp32". The benchmark must
compute the reward of >= 20 architectures at every precision, the Spearman rank correlation of each
precision's rewards with fp32's (`spearman`), and the time per reward; the default then moves to
the fastest precision whose correlation with fp32 is >= 0.98 (`pick_precision`): the controller
only needs the ranking of architectures, not the reward's last digits. The correlation counts only with
trained weights (random ones give every architecture IS ~1 + 1e-7): `python -m benchmarks.rank_gate`
measures it on the trained digits classifier on a CPU (bf16 = CPU autocast) and, given the weights
file, on Inception-v3 on a GPU; results in benchmarks/results/rank-gate-*.json.
Not built: overlapping the generator's next batch with the feature network's current one (two streams).
Whether it pays depends on the generator's share of a reward: large on the one H200 run while
PyTorch's bilinear was slow (0.9 s per reward without bilinear cells, 2.3-2.5 s with), to be measured
again with the bilinear kernel. The recording backend cannot show concurrency, so a CPU test could only
check the order of events; it waits for a GPU profile.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from ..config import REWARD_PRECISIONS
from ..data import quantize_images
from ..engines.cuda_graphs import GraphCache
from ..engines.precision import fp32_precision
from ..kernels import InceptionStats
from ..metrics.feature_net import FeatureNet
from ..search_space import arch_key

DEFAULT_REWARD_PRECISION = "fp32"  # until the benchmark measures otherwise (see the header)
DEFAULT_CUDA_FEATURE_BATCH = 500  # images per feature-network call on CUDA when not given (see the header)
MIN_RANK_CORRELATION = 0.98  # a precision may replace fp32 when its rewards rank architectures this alike


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """The context the feature network runs in for `precision` (one of REWARD_PRECISIONS).

    bf16 autocast runs with `cache_enabled=False`, as CUDA-graph capture requires (a cast cached
    across the capture boundary would be replayed from freed memory); each weight is used once per
    forward, so the cache saved nothing."""
    if precision not in REWARD_PRECISIONS:
        raise ValueError(f"precision must be one of {REWARD_PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        with fp32_precision("tf32"), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                                    cache_enabled=False):
            yield
    else:
        with fp32_precision("ieee" if precision == "fp32" else "tf32"):
            yield


# ---------------------------------------------------------------------------------------------
# Choosing the default by measurement


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two reward lists over the same architectures (NaN if one is constant)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two lists of the same length >= 2, got {len(a)} and {len(b)}")
    from scipy.stats import spearmanr  # scipy is a dependency; imported here, not with the search

    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan  # undefined (scipy warns and returns NaN)
    rho, _ = spearmanr(a, b)
    return float(rho)


def pick_precision(seconds: dict[str, float], correlation_with_fp32: dict[str, float],
                   threshold: float = MIN_RANK_CORRELATION) -> str:
    """The fastest precision whose rewards rank like fp32's (correlation >= threshold); fp32 qualifies."""
    if "fp32" not in seconds:
        raise ValueError("seconds must include the fp32 baseline")
    qualified = [p for p in seconds if p == "fp32" or correlation_with_fp32.get(p, math.nan) >= threshold]
    return min(qualified, key=lambda p: (seconds[p], REWARD_PRECISIONS.index(p)))


# ---------------------------------------------------------------------------------------------
# The pipeline


class RewardPipeline:
    """Inception Score of `num_images` generated images, in batches of `batch_size`, over static buffers.

    `score(gen, arch)` is the reward of architecture `arch` of `gen` (the shared generator: `gen(z, arch)`);
    `accumulate(gen, arch)` does all of it but the final host read and returns the filled `InceptionStats`.
    `gen` runs in eval mode (its mode is restored after).
    """

    def __init__(self, feature_net: FeatureNet, num_images: int, batch_size: int, splits: int, latent_dim: int,
                 device: torch.device | str, precision: str = DEFAULT_REWARD_PRECISION,
                 cache: GraphCache | None = None, feature_batch: int | None = None):
        if precision not in REWARD_PRECISIONS:
            raise ValueError(f"precision must be one of {REWARD_PRECISIONS}, got {precision!r}")
        given_feature_batch = 1 if feature_batch is None else feature_batch  # None: the device's default
        for name, value in (("batch_size", batch_size), ("latent_dim", latent_dim),
                            ("feature_batch", given_feature_batch)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.feature_net = feature_net
        self.num_images, self.batch_size, self.splits = num_images, batch_size, splits
        self.latent_dim = latent_dim
        self.device = torch.device(device)
        self.precision = precision
        self.cache = cache
        if feature_batch is None:
            feature_batch = DEFAULT_CUDA_FEATURE_BATCH if self.device.type == "cuda" else batch_size
        # generator batches per feature step: whole batches, no more than one reward has
        self.gen_batches_per_feature = max(1, min(feature_batch // batch_size, math.ceil(num_images / batch_size)))
        self.feature_rows = self.gen_batches_per_feature * batch_size
        self.stats = InceptionStats(num_images, feature_net.num_features, feature_net.num_classes, splits,
                                    device=self.device)  # allocated once, reset per score
        # Static buffers: every captured step reads and writes these and nothing else that outlives it.
        self.noise = torch.empty(batch_size, latent_dim, device=self.device)
        self.features = torch.empty(self.feature_rows, feature_net.num_features, device=self.device)
        self.logits = torch.empty(self.feature_rows, feature_net.num_classes, device=self.device)
        # uint8 (rows, 3, H, W), one per (rows, resolution): the generator's and (k > 1) the feature step's
        self.images: dict[tuple[int, ...], torch.Tensor] = {}
        self._gen_images: dict[tuple, torch.Tensor] = {}  # gen cache key -> the image buffer it writes
        self._feature_steps: dict[tuple[int, ...], Callable[[], None]] = {}

    # -- the two steps -------------------------------------------------------------------------

    def _image_buffer(self, shape: torch.Size) -> torch.Tensor:
        """The uint8 buffer of this image shape, created on first use (in a step's eager warm-up)."""
        shape = tuple(shape)
        buffer = self.images.get(shape)
        if buffer is None:
            layout = torch.channels_last if self.precision == "bf16" else torch.contiguous_format
            buffer = torch.empty(shape, dtype=torch.uint8, device=self.device, memory_format=layout)
            self.images[shape] = buffer
        return buffer

    def _gen_step(self, gen: nn.Module, arch: Sequence[int], gen_key: tuple) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                self.noise.normal_()  # = torch.randn(batch_size, latent_dim): the same stream
                images = quantize_images(gen(self.noise, arch))
                buffer = self._image_buffer(images.shape)
                buffer.copy_(images)
            # Python-side memo, written when the step runs in Python (eagerly, at warm-up or capture),
            # the same at every run of this key: which buffer the (replayed) step fills.
            self._gen_images[gen_key] = buffer

        return step

    def _feature_step(self, images: torch.Tensor) -> Callable[[], None]:
        step = self._feature_steps.get(tuple(images.shape))
        if step is None:
            def step() -> None:
                with torch.no_grad(), precision_context(self.precision, self.device):
                    features, logits = self.feature_net(images)
                    self.features.copy_(features)  # bf16 -> fp32 where autocast ran
                    self.logits.copy_(logits)

            self._feature_steps[tuple(images.shape)] = step
        return step

    def _run(self, key: tuple, step: Callable[[], None]) -> None:
        if self.cache is None:
            step()
        else:
            self.cache.run(key, step)

    # -- the reward ----------------------------------------------------------------------------

    def gen_key(self, arch: Sequence[int]) -> tuple:
        return ("reward-gen", arch_key(arch), self.batch_size)

    def feature_key(self, resolution: tuple[int, int]) -> tuple:
        return ("reward-features", self.feature_rows, self.precision, tuple(resolution))

    def accumulate(self, gen: nn.Module, arch: Sequence[int]) -> InceptionStats:
        """Generate and score all `num_images` images of `arch` into `self.stats`; no host read of a device
        value."""
        stats = self.stats
        stats.reset()
        gen_key = self.gen_key(arch)
        gen_step = self._gen_step(gen, arch, gen_key)
        was_training = gen.training
        gen.eval()
        k, batch = self.gen_batches_per_feature, self.batch_size
        try:
            slot, scored = 0, 0  # generator batches in the feature buffer; images already in the stats
            for start in range(0, self.num_images, batch):
                self._run(gen_key, gen_step)
                images = self._gen_images[gen_key]
                if k > 1:  # into its slot of the feature batch (eager, outside the graphs: a uint8 copy)
                    feature_images = self._image_buffer((self.feature_rows, *images.shape[1:]))
                    feature_images[slot * batch:(slot + 1) * batch].copy_(images)
                    images = feature_images
                slot += 1
                if slot < k and start + batch < self.num_images:
                    continue
                self._run(self.feature_key(images.shape[2:]), self._feature_step(images))
                wanted = min(slot * batch, self.num_images - scored)  # host ints only; stale rows are cut
                stats.update(self.features[:wanted], self.logits[:wanted])
                scored += wanted
                slot = 0
        finally:
            gen.train(was_training)
        return stats

    def score(self, gen: nn.Module, arch: Sequence[int]) -> float:
        """The reward: mean IS over splits of `num_images` images of architecture `arch` of `gen` (eval mode)."""
        return self.accumulate(gen, arch).inception_score()[0]  # host sync: the one read per reward


__all__ = ["DEFAULT_REWARD_PRECISION", "MIN_RANK_CORRELATION", "REWARD_PRECISIONS", "RewardPipeline",
           "fp32_precision", "pick_precision", "precision_context", "spearman"]
