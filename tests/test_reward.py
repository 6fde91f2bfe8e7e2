"""The captured reward pipeline (autogan_fast/nas/reward.py) and the no-host-sync guard (sync_guard.py).

Tiny shapes throughout: the shared generator at latent 8, gf 4, bottom width 2 (4 px at stage 0,
8 px at stage 1) scored by the embedded digits classifier (trained once per test session).
"""

import math

import pytest
import torch
from capture_helpers import RecordingBackend
from sync_guard import HostSyncError, NoHostSync

from autogan_fast.data import quantize_images
from autogan_fast.engines.cuda_graphs import CaptureBackend, GraphCache
from autogan_fast.kernels import InceptionStats
from autogan_fast.metrics.digits_net import load_digits_net
from autogan_fast.metrics.inception import InceptionV3FeatureNet
from autogan_fast.metrics.scoring import inception_score
from autogan_fast.models import SharedGenerator, init_weights
from autogan_fast.nas.reward import (
    DEFAULT_REWARD_PRECISION,
    REWARD_PRECISIONS,
    RewardPipeline,
    fp32_precision,
    pick_precision,
    spearman,
)
from autogan_fast.search_space import ARCH_LENGTHS, arch_key, decision_sizes

LATENT, BATCH, SPLITS = 8, 16, 2
CPU = torch.device("cpu")
ARCH_A = (1, 1, 1, 1)  # pre-activation, BatchNorm, nearest (the fused upsample conv), shortcut
ARCH_B = (0, 2, 0, 0)  # post-activation, InstanceNorm, bilinear, no shortcut


@pytest.fixture(scope="module")
def net():
    return load_digits_net()


@pytest.fixture()
def gen():
    torch.manual_seed(0)
    g = SharedGenerator(latent_dim=LATENT, gf_dim=4, bottom_width=2)
    init_weights(g)
    return g


def seeded(seed, fn, *args, **kwargs):
    torch.manual_seed(seed)
    return fn(*args, **kwargs)


def random_archs(count, stage, seed):
    rng = torch.Generator().manual_seed(seed)
    archs = []
    for _ in range(count):
        arch = []
        for cell in range(stage + 1):
            arch += [int(torch.randint(size, (1,), generator=rng)) for size in decision_sizes(cell)]
        assert len(arch) == ARCH_LENGTHS[stage]
        archs.append(tuple(arch))
    return archs


# ---------------------------------------------------------------------------------------------
# The guard itself


@pytest.mark.parametrize("read", [
    lambda t: t.sum().item(),                       # Tensor.item
    lambda t: torch.ops.aten._local_scalar_dense(t[0]),  # what .item() dispatches to
    lambda t: t.tolist(),                           # never reaches the dispatcher
    lambda t: t.numpy(),                            # neither
    lambda t: bool(t[1]),                           # `if t:`
    lambda t: float(t[1]),
    lambda t: range(10)[t[1].long()],               # __index__
    lambda t: torch.nonzero(t),
    lambda t: torch.where(t > 1),                   # one-argument where = nonzero
    lambda t: t[t > 1],                             # boolean-mask indexing (nonzero inside the kernel)
    lambda t: t.masked_fill(t > 1, 0).unique(),
    lambda t: torch.equal(t, t),
    lambda t: t.repeat_interleave(torch.ones(4, dtype=torch.long)),  # output size read from repeats
    lambda t: t.to("meta"),                         # a cross-device copy (device -> host on a GPU)
    lambda t: torch.empty(4, device="meta").copy_(t),
    lambda t: torch.tensor(0.5, device=t.device),   # a host -> device copy on a GPU, none on the CPU
    lambda t: torch.as_tensor([0.5], device="cpu"),  # the same through as_tensor
], ids=["item", "local_scalar_dense", "tolist", "numpy", "bool", "float", "index", "nonzero", "where",
        "mask-index", "unique", "equal", "repeat_interleave", "to-device", "copy-device", "tensor-device",
        "as_tensor-device"])
def test_guard_catches_host_reads(read):
    t = torch.arange(4.0)
    with pytest.raises(HostSyncError), NoHostSync():
        read(t)


def test_guard_lets_pure_device_work_pass_and_restores_tensor_methods():
    t = torch.arange(4.0)
    with NoHostSync():
        u = (t * 2).softmax(0).cumsum(0)
        u = torch.where(t > 1, u, 0.0)  # three-argument where: no read
        t.repeat_interleave(torch.ones(4, dtype=torch.long), output_size=4)  # sized by the caller
        buf = torch.empty(4)
        buf.copy_(u)  # same device
        buf.normal_()
        t.cpu()  # a no-op for a CPU tensor: the guard cannot see a device -> host copy written so (docs)
        torch.full((), 0.5, device=t.device)  # a constant made on the device: a fill kernel, no copy
        torch.tensor([1.0, 2.0])  # a host tensor stays on the host
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0] and bool(t[1]) and float(t[2]) == 2.0 and t.sum().item() == 6.0
    assert t.numpy().shape == (4,)


def test_guard_restores_after_an_error():
    t = torch.arange(2.0)
    with pytest.raises(HostSyncError), NoHostSync():
        t.tolist()
    assert t.tolist() == [0.0, 1.0]


# ---------------------------------------------------------------------------------------------
# The pipeline, uncaptured


def reference_score(gen, net, num_images, batch_size):
    """The pipeline's maths written out eagerly: full batches through the feature net, cut after."""
    stats = InceptionStats(num_images, net.num_features, net.num_classes, SPLITS, device=CPU)
    gen.eval()
    with torch.no_grad():
        for start in range(0, num_images, batch_size):
            features, logits = net(quantize_images(gen(torch.randn(batch_size, LATENT), ARCH_A)))
            wanted = min(batch_size, num_images - start)
            stats.update(features[:wanted], logits[:wanted])
    return stats.inception_score()[0]


def test_uncaptured_pipeline_equals_engine_reward_bit_for_bit(net, gen):
    num_images = 4 * BATCH  # the engine cuts before the feature net; with whole batches nothing is cut
    pipeline = RewardPipeline(net, num_images, BATCH, SPLITS, LATENT, CPU)
    expected = seeded(1, inception_score, gen, ARCH_A, net, num_images, LATENT, BATCH, SPLITS, CPU)
    assert seeded(1, pipeline.score, gen, ARCH_A) == expected
    assert seeded(1, pipeline.score, gen, ARCH_A) == expected  # the stats are reset per score
    assert seeded(2, pipeline.score, gen, ARCH_A) != expected  # and the noise is drawn, not fixed


def test_last_batch_is_cut(net, gen):
    num_images = 3 * BATCH + 5  # 4 batches drawn and generated in full, the last one cut to 5 images
    pipeline = RewardPipeline(net, num_images, BATCH, SPLITS, LATENT, CPU)
    got = seeded(1, pipeline.score, gen, ARCH_A)
    assert pipeline.stats.num_seen == num_images
    # Exactly the eager maths with the feature net on whole batches, cut after.
    assert got == seeded(1, reference_score, gen, net, num_images, BATCH)
    # The engine cuts before the feature net: its GEMM on 5 rows instead of 16 may block (and so round)
    # differently, ~1e-7 relative per logit (fp32), and the IS follows the logits: 7e-11 to 1e-8 measured
    # on 2-core machines, depending on the GEMM kernel picked. Same random stream: another noise draw
    # moves the IS of this generator by ~1e-2 (measured), 10^4 times the tolerance.
    eager = seeded(1, inception_score, gen, ARCH_A, net, num_images, LATENT, BATCH, SPLITS, CPU)
    assert got == pytest.approx(eager, rel=1e-6, abs=0)


@pytest.mark.parametrize("training", [True, False])
def test_scores_in_eval_mode_and_restores_the_mode(net, gen, training):
    gen.train(training)
    running_mean = gen.cells[0].pre1.norms.bn.running_mean.clone()
    pipeline = RewardPipeline(net, BATCH, BATCH, SPLITS, LATENT, CPU)
    score = pipeline.score(gen, ARCH_A)
    assert gen.training == training and math.isfinite(score) and score >= 1.0
    assert torch.equal(gen.cells[0].pre1.norms.bn.running_mean, running_mean)  # eval: BN stats untouched


def test_accumulate_never_reads_the_device(net, gen):
    """Between its two reads (the previous reward's and this one's) the pipeline reads nothing."""
    cache = GraphCache(RecordingBackend(), max_graphs=8)
    pipeline = RewardPipeline(net, 2 * BATCH + 3, BATCH, SPLITS, LATENT, CPU, cache=cache)
    for _ in range(2):  # warm-up + capture, then replays
        with NoHostSync():
            stats = pipeline.accumulate(gen, ARCH_A)
        assert math.isfinite(stats.inception_score()[0])  # the read, outside the guard
    uncached = RewardPipeline(net, 2 * BATCH + 3, BATCH, SPLITS, LATENT, CPU)
    with NoHostSync():
        uncached.accumulate(gen, ARCH_A)


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return InceptionV3FeatureNet().eval()  # random weights: the ops are what is tested, not the scores


def test_inception_reward_is_capturable(inception, gen):
    """The reward through Inception-v3 (TF1-style resize to 299 included) reads nothing back and copies
    no host data to the device, in its warm-up, capture and replays; and replays give the eager score."""
    cache = GraphCache(RecordingBackend(), max_graphs=4)
    pipeline = RewardPipeline(inception, 4, 2, SPLITS, LATENT, CPU, cache=cache)
    for _ in range(2):  # warm-up + capture of both steps in the first batch, replays after
        torch.manual_seed(1)
        with NoHostSync():
            stats = pipeline.accumulate(gen, ARCH_A)
        captured = stats.inception_score()[0]
    assert cache.stats.captures == 2 and cache.stats.hits == 6
    eager = seeded(1, RewardPipeline(inception, 4, 2, SPLITS, LATENT, CPU).score, gen, ARCH_A)
    assert captured == eager and math.isfinite(eager)


def test_rejects_unknown_precision(net):
    with pytest.raises(ValueError, match="precision"):
        RewardPipeline(net, BATCH, BATCH, SPLITS, LATENT, CPU, precision="fp16")


# ---------------------------------------------------------------------------------------------
# Through the graph cache


def test_through_the_cache_same_score_and_keys(net, gen):
    num_images = 4 * BATCH
    backend = RecordingBackend()
    cache = GraphCache(backend, max_graphs=8)
    pipeline = RewardPipeline(net, num_images, BATCH, SPLITS, LATENT, CPU, cache=cache)
    eager = RewardPipeline(net, num_images, BATCH, SPLITS, LATENT, CPU)

    first = seeded(1, pipeline.score, gen, ARCH_A)
    assert first == seeded(1, eager.score, gen, ARCH_A)
    gen_key_a = ("reward-gen", arch_key(ARCH_A), BATCH)  # the graph engine's key of the architecture
    feature_key_4px = ("reward-features", BATCH, "fp32", (4, 4))
    assert list(cache.graphs) == [gen_key_a, feature_key_4px]
    # First batch: each step warmed up then captured; the other 3 batches replay both.
    assert backend.events == ["warmup", "capture"] * 2 + ["replay"] * 6
    assert (cache.stats.warmups, cache.stats.captures, cache.stats.hits) == (2, 2, 6)
    buffers = [pipeline.noise.data_ptr(), pipeline.features.data_ptr(), pipeline.images[(BATCH, 3, 4, 4)].data_ptr()]

    # The same architecture again: all hits, the same static buffers, the same score for the same seed.
    assert seeded(1, pipeline.score, gen, ARCH_A) == first
    assert (cache.stats.warmups, cache.stats.hits) == (2, 14)
    assert buffers == [pipeline.noise.data_ptr(), pipeline.features.data_ptr(),
                       pipeline.images[(BATCH, 3, 4, 4)].data_ptr()]

    # Another architecture of the same stage: a new generator graph, the feature graph is shared.
    second = seeded(1, pipeline.score, gen, ARCH_B)
    assert second == seeded(1, eager.score, gen, ARCH_B) and second != first
    assert ("reward-gen", arch_key(ARCH_B), BATCH) in cache.graphs
    assert len(cache.graphs) == 3 and (cache.stats.warmups, cache.stats.hits) == (3, 21)

    # Stage 1 (8 px): a new generator graph and a feature graph for the new resolution.
    stage1 = (*ARCH_A, 1, 1, 1, 1, 1)
    third = seeded(1, pipeline.score, gen, stage1)
    assert third == seeded(1, eager.score, gen, stage1)
    assert ("reward-features", BATCH, "fp32", (8, 8)) in cache.graphs and len(cache.graphs) == 5


# ---------------------------------------------------------------------------------------------
# Precision


def head_dtypes(net):
    seen = []
    return seen, net.head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))


def test_fp32_and_tf32_paths(net, gen):
    """CPU kernels ignore the CUDA TF32 switches: both give the fp32 reward exactly, in fp32."""
    scores = {}
    for precision in ("fp32", "tf32"):
        seen, hook = head_dtypes(net)
        try:
            scores[precision] = seeded(1, RewardPipeline(net, 2 * BATCH, BATCH, SPLITS, LATENT, CPU,
                                                         precision=precision).score, gen, ARCH_A)
        finally:
            hook.remove()
        assert set(seen) == {torch.float32}
    assert scores["fp32"] == scores["tf32"]


def test_bf16_path_runs_the_feature_net_in_bf16_channels_last(net, gen):
    seen, hook = head_dtypes(net)
    try:
        pipeline = RewardPipeline(net, 2 * BATCH, BATCH, SPLITS, LATENT, CPU, precision="bf16",
                                  cache=GraphCache(CaptureBackend(), 4))
        with NoHostSync():
            pipeline.accumulate(gen, ARCH_A)
        score = pipeline.stats.inception_score()[0]
    finally:
        hook.remove()
    assert set(seen) == {torch.bfloat16} and pipeline.features.dtype == torch.float32
    assert pipeline.images[(BATCH, 3, 4, 4)].is_contiguous(memory_format=torch.channels_last)
    assert math.isfinite(score) and score >= 1.0
    assert not torch.is_autocast_enabled("cpu")  # left as found


def legacy_or_new_switches():
    backends = torch.backends
    conv = getattr(backends.cudnn, "conv", None)
    if hasattr(backends.cuda.matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        return backends.cuda.matmul.fp32_precision, conv.fp32_precision
    return backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32


@pytest.mark.parametrize("mode", ["ieee", "tf32"])
def test_fp32_precision_switch_sets_and_restores(mode):
    before = legacy_or_new_switches()
    with fp32_precision(mode):
        from autogan_fast.kernels.upsample_conv import _fp32_precision_setting

        assert _fp32_precision_setting() == mode  # cuDNN conv, resolved ("none" defers to the parents)
        # both APIs agree inside (a mixed state makes torch >= 2.9 raise when cuBLAS checks TF32)
        assert torch.get_float32_matmul_precision() == ("high" if mode == "tf32" else "highest")
    assert legacy_or_new_switches() == before
    # torch >= 2.9 raises on reading the legacy flags after a mix of APIs; after the restore they read
    assert isinstance(torch.backends.cudnn.allow_tf32, bool)


def test_spearman_and_the_choice_of_default():
    assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 35.0, 40.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError):
        spearman([1.0, 2.0], [1.0])
    seconds = {"fp32": 3.0, "tf32": 2.0, "bf16": 1.0}
    assert pick_precision(seconds, {"tf32": 0.99, "bf16": 0.985}) == "bf16"
    assert pick_precision(seconds, {"tf32": 0.99, "bf16": 0.9}) == "tf32"
    assert pick_precision(seconds, {"tf32": 0.5, "bf16": float("nan")}) == "fp32"
    assert DEFAULT_REWARD_PRECISION == "fp32" and REWARD_PRECISIONS == ("fp32", "tf32", "bf16")


def test_rank_correlation_between_precisions_over_architectures(net, gen):
    """What the benchmark records, at toy scale. No claim about bf16's quality on the CPU: only that the
    measurement is well defined, and that fp32 against itself (same seeds) ranks identically."""
    archs = random_archs(6, stage=0, seed=3)
    rewards = {}
    for precision, run in (("fp32", 0), ("fp32", 1), ("bf16", 0)):
        pipeline = RewardPipeline(net, 2 * BATCH, BATCH, SPLITS, LATENT, CPU, precision=precision,
                                  cache=GraphCache(CaptureBackend(), 16))
        scores = []
        for i, arch in enumerate(archs):
            scores.append(seeded(100 + i, pipeline.score, gen, arch))
        rewards[precision, run] = scores
    assert rewards["fp32", 0] == rewards["fp32", 1]
    assert spearman(rewards["fp32", 0], rewards["fp32", 1]) == 1.0
    rho = spearman(rewards["fp32", 0], rewards["bf16", 0])
    print(f"Spearman(fp32, bf16) over {len(archs)} tiny architectures on the CPU: {rho:.3f}")
    assert math.isfinite(rho) and -1.0 <= rho <= 1.0


# ---------------------------------------------------------------------------------------------
# GPU: real CUDA graphs


@pytest.mark.gpu
@pytest.mark.parametrize("precision", REWARD_PRECISIONS)
def test_cuda_graphs_give_the_eager_reward_without_syncs(precision):
    """Captured against uncaptured, same seed. Assumed: the same kernels run in both (the capture
    records what the warm-up ran; cuDNN / cuBLAS pick by heuristics, not benchmarking) on the same
    Philox stream (graph-safe RNG: a replay advances the offset as the eager draw does), so features
    and logits are identical, and only the float64 atomics of the IS totals add in another order
    (~1e-16 relative). rel=1e-9 covers that, and even a GEMM of another blocking (~1e-10 on the IS,
    measured on the CPU in test_last_batch_is_cut); it fails on another noise draw (~1e-2) or a replay
    that reads a stale or wrong buffer. The engine's eager reward is compared in fp32 only: its
    feature net runs under the ambient switches (IEEE matmuls by default; the digits net has no conv)."""
    from autogan_fast.engines.cuda_graphs import CudaGraphBackend

    device = torch.device("cuda")
    net = load_digits_net(device)
    torch.manual_seed(0)
    gen = SharedGenerator(latent_dim=LATENT, gf_dim=4, bottom_width=2)
    init_weights(gen)
    gen.to(device)
    num_images, batch = 4 * 64, 64
    cache = GraphCache(CudaGraphBackend(device), max_graphs=8)
    captured = RewardPipeline(net, num_images, batch, SPLITS, LATENT, device, precision, cache=cache)
    eager = RewardPipeline(net, num_images, batch, SPLITS, LATENT, device, precision)

    first = seeded(1, captured.score, gen, ARCH_A)  # warm-up + capture + replays
    assert cache.stats.captures == 2
    reference = seeded(1, eager.score, gen, ARCH_A)
    assert first == pytest.approx(reference, rel=1e-9, abs=0)
    if precision == "fp32":  # the engine's eager reward: same kernels too (digits net = matmuls, IEEE)
        engine = seeded(1, inception_score, gen, ARCH_A, net, num_images, LATENT, batch, SPLITS, device)
        assert first == pytest.approx(engine, rel=1e-9, abs=0)

    torch.manual_seed(1)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with NoHostSync():
            stats = captured.accumulate(gen, ARCH_A)  # replays only
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert stats.inception_score()[0] == pytest.approx(reference, rel=1e-9, abs=0)
    assert cache.stats.warmups == 2


def _feature_calls(net):
    """Records the batch size of every feature-network call; returns (sizes, hook handle)."""
    sizes = []
    return sizes, net.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))


@pytest.mark.parametrize("num_images, feature_batch, calls", [
    pytest.param(3 * BATCH + 5, 3 * BATCH, [3 * BATCH] * 2, id="three-batches-per-call-last-call-partly-stale"),
    pytest.param(3 * BATCH + 5, 3 * BATCH + 7, [3 * BATCH] * 2, id="rounded-down-to-whole-batches"),
    pytest.param(2 * BATCH, 100 * BATCH, [2 * BATCH], id="clamped-to-the-reward"),
    pytest.param(2 * BATCH, BATCH - 1, [BATCH] * 2, id="below-one-batch-is-one-batch"),
])
def test_feature_batches_score_the_same_images(net, gen, num_images, feature_batch, calls):
    """Several generator batches per feature-network call: the same noise and images as one batch per
    call (the default on a CPU), so the same reward up to the feature net's batch-size rounding."""
    one_per_call = RewardPipeline(net, num_images, BATCH, SPLITS, LATENT, CPU)
    expected = seeded(1, one_per_call.score, gen, ARCH_A)
    pipeline = RewardPipeline(net, num_images, BATCH, SPLITS, LATENT, CPU, feature_batch=feature_batch)
    sizes, hook = _feature_calls(net)
    try:
        got = seeded(1, pipeline.score, gen, ARCH_A)
    finally:
        hook.remove()
    assert sizes == calls and pipeline.stats.num_seen == num_images
    # the GEMMs of another batch size may block (and round) differently: ~1e-7 relative per logit in fp32
    # (see test_last_batch_is_cut); another noise draw moves this IS by ~1e-2
    assert got == pytest.approx(expected, rel=1e-6, abs=0)


def test_feature_batches_through_the_graph_cache(net, gen):
    """Captured: one generator graph and one feature graph (of the whole feature batch), replayed; the
    copy into the feature batch runs outside them, and nothing reads the device."""
    cache = GraphCache(RecordingBackend(), max_graphs=8)
    pipeline = RewardPipeline(net, 4 * BATCH, BATCH, SPLITS, LATENT, CPU, cache=cache, feature_batch=2 * BATCH)
    plain = RewardPipeline(net, 4 * BATCH, BATCH, SPLITS, LATENT, CPU)
    expected = seeded(1, plain.score, gen, ARCH_A)
    for _ in range(2):
        with NoHostSync():
            seeded(1, pipeline.accumulate, gen, ARCH_A)
        assert pipeline.stats.inception_score()[0] == pytest.approx(expected, rel=1e-6, abs=0)
    assert pipeline.feature_key((8, 8))[1] == 2 * BATCH
    assert cache.stats.captures == 2 and cache.stats.warmups == 2  # the gen step and the feature step


def test_default_feature_batch_is_one_generator_batch_on_a_cpu(net):
    pipeline = RewardPipeline(net, 10 * BATCH, BATCH, SPLITS, LATENT, CPU)
    assert pipeline.gen_batches_per_feature == 1 and pipeline.features.shape[0] == BATCH
    with pytest.raises(ValueError, match="feature_batch must be an int >= 1"):
        RewardPipeline(net, 10 * BATCH, BATCH, SPLITS, LATENT, CPU, feature_batch=0)
