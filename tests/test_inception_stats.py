"""InceptionStats: the fused IS / FID statistics pass against numpy float64 formulas on all images.

The numpy oracles are the AutoGAN / OpenAI `inception_score` (softmax, 10 splits sliced as
k N // S : (k + 1) N // S, KL to the split mean) and pytorch-fid's `mu = mean`, `sigma = np.cov`.
Shapes are tiny: without CUDA the Triton kernel runs on the CPU under the interpreter; with CUDA the
same tests run the compiled kernel on the GPU.
"""

import math

import numpy as np
import pytest
import torch

from autogan_fast.kernels import InceptionStats, inception_stats_update_ref, use_backend
from autogan_fast.kernels import inception_stats as ops
from autogan_fast.kernels._dispatch import triton_interpreter

# Where the "triton" backend can run: the GPU when there is one, else the CPU under the interpreter.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# ---------------------------------------------------------------------------------------------
# Oracles


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _inception_score_np(logits: np.ndarray, splits: int) -> tuple[float, float]:
    """The OpenAI / AutoGAN code, in the dtype of `logits`; p log p = 0 where p == 0."""
    p = _softmax(logits)
    n = p.shape[0]
    scores = []
    for k in range(splits):
        part = p[k * n // splits:(k + 1) * n // splits, :]
        py = np.mean(part, axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0)
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def _err(got, want) -> float:
    want = np.asarray(want, dtype=np.float64)
    scale = max(float(np.abs(want).max()), 1e-30)
    return float(np.abs(np.asarray(got, dtype=np.float64) - want).max()) / scale


def _assert_close(name, got, want, eager, atol):
    """Kernel error <= 2 x eager error + atol (max norm, relative to max |want|), as flash-attention."""
    err, err_eager = _err(got, want), _err(eager, want)
    assert err <= 2 * err_eager + atol, f"{name}: error {err:.3g} > 2 x eager {err_eager:.3g} + {atol:g}"


def _data(n, f, c, seed=0, dtype=torch.float32):
    """Features with |mean| = 10 std (a kernel without centering loses ~1e-5 of sigma to
    cancellation and fails), and logits spread enough that p ranges over decades."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g) * 2 + 20 + torch.rand(f, generator=g)
    lg = torch.randn(n, c, generator=g) * 3
    return x.to(DEVICE, dtype), lg.to(DEVICE, dtype)


def _feed(stats, x, lg, batches):
    start = 0
    for b in batches:
        stats.update(x[start:start + b], lg[start:start + b])
        start += b
    assert start == x.shape[0] == stats.num_seen


# (backend, atol): atol is relative to the largest entry of each result.
BACKENDS = [
    pytest.param("torch", 1e-12, id="torch"),  # float64 throughout: summation-order rounding only
    # fp32 softmax and fp32 tile sums of <= 60 rows: ~1e-7 under the interpreter (numpy's correctly
    # rounded exp / log); the GPU path's approximate exp and tensor cores are bounded by the GPU tests.
    pytest.param("triton", 1e-6, id="triton"),
]

# (N, F, C, splits, batches)
SCHEDULES = [
    pytest.param(10, 16, 5, 10, [1] * 10, id="batch1"),  # minimal: one image per batch and per split
    pytest.param(37, 24, 11, 10, [5, 9, 12, 11], id="straddle"),  # prime N, N % splits != 0; cross borders
    pytest.param(60, 24, 11, 10, [17, 43], id="batch-gt-split"),  # 6-image splits: one row block, many splits
    pytest.param(23, 17, 7, 3, [23], id="one-batch-prime"),  # everything at once; prime N, F, C
    pytest.param(48, 40, 10, 10, [16, 32], id="3-feature-blocks"),  # F > 2 BLOCK_F: 6 tiles, partial edge
    pytest.param(20, 8, 3, 1, [7, 13], id="one-split"),  # splits=1, F < BLOCK_F
    # The Inception-size blocks: F >= 256 -> 64-wide tiles (5 blocks, 15 tiles, partial edge);
    # C > 256 -> two class chunks of 256, the second partial; 4-row softmax programs across split borders.
    pytest.param(12, 260, 300, 3, [5, 7], id="real-blocks"),
]


@pytest.mark.parametrize("backend,atol", BACKENDS)
@pytest.mark.parametrize("n,f,c,splits,batches", SCHEDULES)
def test_matches_numpy_float64(n, f, c, splits, batches, backend, atol):
    x, lg = _data(n, f, c)
    stats = InceptionStats(n, num_features=f, num_classes=c, splits=splits)
    with use_backend(backend):
        _feed(stats, x, lg, batches)
    is_mean, is_std = stats.inception_score()
    mu, sigma = stats.fid_stats()

    x64, l64 = x.double().cpu().numpy(), lg.double().cpu().numpy()
    want_is = _inception_score_np(l64, splits)
    want_mu, want_sigma = x64.mean(axis=0), np.cov(x64, rowvar=False)
    if backend == "torch":
        eager_is, eager_mu, eager_sigma = want_is, want_mu, want_sigma
    else:  # what eager fp32 achieves on the same inputs
        eager_is = _inception_score_np(lg.cpu().numpy(), splits)
        eager_mu, eager_sigma = x.mean(dim=0).cpu().numpy(), torch.cov(x.T).cpu().numpy()
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (f, f)
    # (mean, std) together: the std's error is measured on the scale of the scores it spreads.
    _assert_close("IS", (is_mean, is_std), want_is, eager_is, atol)
    _assert_close("mu", mu, want_mu, eager_mu, atol)
    _assert_close("sigma", sigma, want_sigma, eager_sigma, atol)
    np.testing.assert_array_equal(sigma, sigma.T)


@pytest.mark.parametrize("n,f,c,splits,batches", SCHEDULES)
def test_triton_totals_match_reference(n, f, c, splits, batches):
    x, lg = _data(n, f, c, seed=1)
    with use_backend("torch"):
        ref = InceptionStats(n, f, c, splits)
        _feed(ref, x, lg, batches)
    with use_backend("triton"):
        tri = InceptionStats(n, f, c, splits)
        _feed(tri, x, lg, batches)
    a, b = tri.totals, ref.totals
    torch.testing.assert_close(a.shift, b.shift, rtol=0, atol=0)  # same first-batch mean
    for name in ("feat_sum", "p_sum", "plogp_sum"):
        got, want = getattr(a, name), getattr(b, name)
        assert _err(got.cpu().numpy(), want.cpu().numpy()) <= 1e-6, name
    assert _err(torch.triu(a.xtx).cpu().numpy(), torch.triu(b.xtx).cpu().numpy()) <= 1e-6


def test_reference_is_a_pure_function():
    x, lg = _data(7, 8, 5)
    totals = ops.InceptionTotals(x[0].double(), *(torch.zeros(s, dtype=torch.float64, device=DEVICE)
                                                   for s in [(8,), (8, 8), (2, 5), (2,)]))
    before = [t.clone() for t in totals]
    new = inception_stats_update_ref(x, lg, totals, 0, 7)
    for t, t0 in zip(totals, before, strict=True):
        torch.testing.assert_close(t, t0, rtol=0, atol=0)
    # Each row of p sums to 1 and the 2 splits of 7 images hold 3 and 4 of them.
    torch.testing.assert_close(new.p_sum.sum(dim=1), torch.tensor([3.0, 4.0], dtype=torch.float64))


@pytest.mark.parametrize("n,splits", [(10, 10), (15, 10), (37, 10), (60, 7), (101, 3), (5, 1)])
def test_split_of_matches_openai_slicing(n, splits):
    want = torch.empty(n, dtype=torch.int64)
    for k in range(splits):
        want[k * n // splits:(k + 1) * n // splits] = k
    torch.testing.assert_close(ops.split_of(torch.arange(n), n, splits), want, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Known answers


@pytest.mark.parametrize("backend,atol", BACKENDS)
def test_one_hot_logits_score_number_of_classes(backend, atol):
    # 3 splits of 10 images, each split holds classes 0..4 twice: p one-hot (other logits underflow
    # to p = 0 exactly, so p log p = 0 is exercised), pbar uniform on 5 classes -> IS = 5 exactly.
    n, c, k = 30, 7, 5
    labels = torch.arange(n, device=DEVICE) % k
    logits = torch.full((n, c), -1e4, device=DEVICE)
    logits[torch.arange(n, device=DEVICE), labels] = 0.0
    stats = InceptionStats(n, num_features=4, num_classes=c, splits=3)
    with use_backend(backend):
        _feed(stats, torch.randn(n, 4, device=DEVICE), logits, [4, 13, 13])
    mean, std = stats.inception_score()
    assert abs(mean - k) <= 1e-12 * k and std <= 1e-12


@pytest.mark.parametrize("backend,atol", BACKENDS)
def test_uniform_logits_score_one(backend, atol):
    n, c = 20, 11
    stats = InceptionStats(n, num_features=4, num_classes=c, splits=4)
    with use_backend(backend):
        _feed(stats, torch.randn(n, 4, device=DEVICE), torch.full((n, c), 3.7, device=DEVICE), [9, 11])
    mean, std = stats.inception_score()
    assert abs(mean - 1.0) <= atol and std <= atol


@pytest.mark.parametrize("backend,atol", BACKENDS)
def test_statistics_independent_of_batch_sizes(backend, atol):
    n, f, c = 31, 20, 9
    x, lg = _data(n, f, c, seed=2)
    results = []
    for batches in ([31], [1, 30], [7, 7, 7, 7, 3], [16, 15]):
        stats = InceptionStats(n, f, c, splits=5)
        with use_backend(backend):
            _feed(stats, x, lg, batches)
        results.append((stats.inception_score(), *stats.fid_stats()))
    (is0, mu0, sigma0), *rest = results
    for is_, mu, sigma in rest:
        assert _err(is_, is0) <= 2 * atol
        assert _err(mu, mu0) <= 2 * atol and _err(sigma, sigma0) <= 2 * atol


def test_large_batches_are_chunked(monkeypatch):
    # The launcher adds batches of more than MAX_ROWS rows in chunks (bounding the fp32 partials);
    # a small MAX_ROWS makes one 43-row batch take 3 launches at row offsets 0, 16, 32.
    monkeypatch.setattr(ops, "MAX_ROWS", 16)
    n, f, c = 50, 24, 11
    x, lg = _data(n, f, c, seed=3)
    with use_backend("triton"):
        stats = InceptionStats(n, f, c)
        _feed(stats, x, lg, [7, 43])
    x64 = x.double().cpu().numpy()
    assert _err(stats.fid_stats()[1], np.cov(x64, rowvar=False)) <= 1e-6
    assert _err(stats.inception_score(), _inception_score_np(lg.double().cpu().numpy(), 10)) <= 1e-6


# Small blocks for the interpreter: 16-wide gram tiles, 2-row softmax programs, 4-class chunks.
SMALL_BLOCKS = ops._Blocks(block_f=16, block_b=16, gram_warps=4, gram_stages=2, block_r=2, block_c=4,
                           softmax_warps=4)


@pytest.mark.parametrize("case", [
    "max-in-last-chunk",  # the row max arrives in the last chunk: s must be rescaled by exp(m_old - m_new)
    "max-in-first-chunk",  # later chunks only add terms below the max
    "neg-inf-first-chunk",  # -inf logits fill chunk 0 of some rows: no nan from -inf - -inf
])
def test_chunked_softmax(monkeypatch, case):
    # C = 11 in chunks of 4 (4 + 4 + 3): the online max / sum-exp pass and the chunked second pass.
    monkeypatch.setattr(ops, "_blocks", lambda f, c: SMALL_BLOCKS)
    n, f, c = 15, 8, 11
    x, lg = _data(n, f, c, seed=6)
    # +12: the max jumps by ~e^10 between chunks (an unrescaled s would be off by that factor), while
    # the rows keep an entropy fp32 can resolve (at +40, sum p log p ~ 1e-11 is all rounding).
    if case == "max-in-last-chunk":
        lg[::2, -1] += 12.0
    elif case == "max-in-first-chunk":
        lg[:, 0] += 12.0
    else:
        lg[1::3, :4] = -float("inf")
    with use_backend("triton"):
        tri = InceptionStats(n, f, c, splits=4)
        _feed(tri, x, lg, [6, 9])
    with use_backend("torch"):
        ref = InceptionStats(n, f, c, splits=4)
        _feed(ref, x, lg, [6, 9])
    for name in ("p_sum", "plogp_sum"):
        got, want = getattr(tri.totals, name), getattr(ref.totals, name)
        assert torch.isfinite(got).all(), name
        # fp32 softmax of 11 classes vs float64: a few ulp relative to the largest entry
        assert _err(got.cpu().numpy(), want.cpu().numpy()) <= 1e-6, name


def test_many_classes_run_on_triton():
    # C = 16385, one past the old register-tile limit (MAX_CLASSES = 16384): 65 chunks of 256, the
    # last holding one class; forced "triton" takes it instead of refusing.
    n, f, c = 6, 4, 16385
    x, lg = _data(n, f, c, seed=7)
    with use_backend("triton"):
        tri = InceptionStats(n, f, c, splits=2)
        _feed(tri, x, lg, [6])
    assert _err(tri.inception_score(), _inception_score_np(lg.double().cpu().numpy(), 2)) <= 1e-6


def test_inception_blocks_fill_132_sms_evenly():
    # The design in the header: at F = 2048 the gram grid is exactly 4 tiles per SM of an H100 / H200,
    # and the softmax grid of a full MAX_ROWS launch is at most 2 light programs per SM.
    blk = ops._blocks(2048, 1008)
    nb = -(-2048 // blk.block_f)
    assert nb * (nb + 1) // 2 == 4 * 132
    assert -(-ops.MAX_ROWS // blk.block_r) <= 2 * 132
    assert -(-1008 // blk.block_c) == 4


def test_half_inputs_on_triton_and_double_inputs_on_reference():
    n, f, c = 24, 16, 6
    x, lg = _data(n, f, c, seed=4, dtype=torch.float16)
    with use_backend("triton"):
        half = InceptionStats(n, f, c, splits=4)
        _feed(half, x, lg, [10, 14])
    x64, l64 = x.double(), lg.double()
    assert _err(half.fid_stats()[1], np.cov(x64.cpu().numpy(), rowvar=False)) <= 1e-6
    assert _err(half.inception_score(), _inception_score_np(l64.cpu().numpy(), 4)) <= 1e-6
    # float64 under "auto" runs the float64 reference (exact to rounding), forced "triton" refuses it.
    double = InceptionStats(n, f, c, splits=4)
    _feed(double, x64, l64, [10, 14])
    assert _err(double.fid_stats()[1], np.cov(x64.cpu().numpy(), rowvar=False)) <= 1e-12
    with use_backend("triton"), pytest.raises(RuntimeError, match="float64"):
        InceptionStats(n, f, c, splits=4).update(x64, l64)


def test_reset_and_lazy_device():
    n, f, c = 12, 8, 5
    x, lg = _data(n, f, c, seed=5)
    stats = InceptionStats(n, f, c, splits=3)
    assert stats.device is None and stats.totals is None
    _feed(stats, x.flip(0), lg.flip(0), [12])
    assert stats.device == x.device
    stats.reset()
    assert stats.num_seen == 0
    _feed(stats, x, lg, [5, 7])
    fresh = InceptionStats(n, f, c, splits=3, device=x.device)
    _feed(fresh, x, lg, [12])
    assert _err(stats.inception_score(), fresh.inception_score()) <= 1e-6
    assert _err(stats.fid_stats()[1], fresh.fid_stats()[1]) <= 1e-6


# ---------------------------------------------------------------------------------------------
# Errors


def _fresh():
    return InceptionStats(6, num_features=4, num_classes=3, splits=2)


def _meta_stats():
    return InceptionStats(6, num_features=4, num_classes=3, splits=2, device="meta")


@pytest.mark.parametrize("make,features,logits,match", [
    # wrong rank
    (_fresh, torch.zeros(4), torch.zeros(1, 3), "features must have 2 dims"),
    # feature count differs from num_features
    (_fresh, torch.zeros(2, 5), torch.zeros(2, 3), "features must have num_features=4"),
    # class count differs from num_classes
    (_fresh, torch.zeros(2, 4), torch.zeros(2, 4), "logits must have num_classes=3"),
    # row counts differ
    (_fresh, torch.zeros(2, 4), torch.zeros(3, 3), "same number of rows"),
    # integer features
    (_fresh, torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 3), "features must be a floating"),
    # features and logits on different devices
    (_fresh, torch.zeros(2, 4), torch.zeros(2, 3, device="meta"), "logits is on meta"),
    # inputs on another device than the totals
    (_meta_stats, torch.zeros(2, 4), torch.zeros(2, 3), "statistics live on meta"),
    # more than num_images at once
    (_fresh, torch.zeros(7, 4), torch.zeros(7, 3), "only 6 of num_images=6 remain"),
])
def test_update_rejects(make, features, logits, match):
    with pytest.raises(ValueError, match=match):
        make().update(features, logits)


def test_too_many_images_over_several_updates_and_scores_before_all_arrived():
    stats = _fresh()
    stats.update(torch.randn(4, 4), torch.randn(4, 3))
    with pytest.raises(ValueError, match="4 arrived"):
        stats.inception_score()
    with pytest.raises(ValueError, match="4 arrived"):
        stats.fid_stats()
    with pytest.raises(ValueError, match="only 2 of num_images=6 remain"):
        stats.update(torch.randn(3, 4), torch.randn(3, 3))
    assert stats.num_seen == 4  # the rejected batch left nothing behind


@pytest.mark.parametrize("kwargs,match", [
    ({"num_images": 5, "splits": 10}, "num_images must be an int >= 10"),  # a split would be empty
    ({"num_images": 5, "splits": 0}, "splits must be an int >= 1"),
    ({"num_images": 5, "splits": 1, "num_features": 0}, "num_features"),
    ({"num_images": 5.0, "splits": 1}, "num_images"),  # not an int
])
def test_constructor_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InceptionStats(**kwargs)


# ---------------------------------------------------------------------------------------------
# Compile cache: batch size and row offset change every call and must not create new kernels.


KERNELS = [
    pytest.param("_inception_stats_gram_kernel", id="gram"),
    pytest.param("_inception_stats_softmax_kernel", id="softmax"),
]


@pytest.mark.parametrize("name", KERNELS)
def test_batch_size_does_not_specialize_the_kernel(name):
    # The interpreter has no compile cache, so replay each launch's arguments through the binder a
    # compiled JITFunction uses to build its cache key (triton 3.x internals: skip if they moved).
    jit = pytest.importorskip("triton.runtime.jit")
    compiler = pytest.importorskip("triton.backends.compiler")
    if not triton_interpreter():
        pytest.skip("compiled Triton: test_gpu_compile_cache_bounded checks the real cache")
    kernel = getattr(ops, name)
    if not hasattr(kernel, "fn") or not hasattr(jit, "create_function_from_signature"):
        pytest.skip("this triton has no interpreter kernel / binder to inspect")
    compiled = jit.JITFunction(kernel.fn, do_not_specialize=kernel.kwargs["do_not_specialize"])
    binder = jit.create_function_from_signature(compiled.signature, compiled.params, compiler.BaseBackend)
    launches = []
    hook = lambda *args, **kwargs: launches.append((args, kwargs))
    kernel.add_pre_run_hook(hook)
    try:
        stats = InceptionStats(100, num_features=16, num_classes=5, splits=10)
        with use_backend("triton"):
            for b in (1, 16, 7, 32, 13, 2):  # 1 and multiples of 16 are what Triton would specialize on
                stats.update(torch.randn(b, 16), torch.randn(b, 5))
    finally:
        kernel.pre_run_hooks.remove(hook)
    keys = {str(binder(*args, **kwargs)[1]) for args, kwargs in launches}
    assert len(launches) == 6 and len(keys) == 1, keys
    constexprs = [p.name for p in compiled.params if p.is_constexpr]
    assert all(name.startswith("BLOCK_") for name in constexprs), constexprs


# ---------------------------------------------------------------------------------------------
# GPU
#
# Error model of the compiled path; the GPU tolerances below follow from it, not from runs (the
# interpreter's numpy maths says nothing about tensor cores or approximate exp). u = 2^-24.
U32 = 2.0 ** -24
# Gram tiles (tl.dot, input_precision="tf32x3"): x~ = x - c rounds once per factor (2u per product);
# cvt.rna.tf32 splits each factor a = hi + lo (round to nearest, 11 bits, twice), so |a - hi - lo| <=
# 2^-22 |a|, and the product drops lo * lo: <= 3 * 2^-22 |ab| in all.
TF32X3_PRODUCT = 2 * U32 + 3 * 2.0 ** -22
# Softmax on the GPU: ex2.approx.f32 and div.full.f32 are each <= 2 ulp = 4u relative (PTX ISA); logf
# (libdevice) <= 1 ulp = 2u.
APPROX_OP = 4 * U32
F64_SLACK = 2.0 ** -40  # float64 rounding in the totals, in fid_stats / inception_score and in the oracle


def _mma_accumulation(rows: int) -> float:
    """Tensor-core accumulation over `rows` rows: the products are exact, and each wgmma (8 rows) adds
    them to the fp32 accumulator with truncating alignment and rounding toward zero (Fasi et al. 2021
    measured this on V100 / A100; H100 is assumed no better): <= 2 ulp = 2^-22 of the running sum, which
    is <= sum_b |x~_bi x~_bj|, per instruction, 3 instructions (hi hi, hi lo, lo hi) per 8 rows. The
    worst case, linear in the rows of one launch."""
    return 3 * math.ceil(rows / 8) * 2.0 ** -22


def _gpu_fid_bounds(x: torch.Tensor, shift: torch.Tensor, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-element bounds on |mu - mu64| and |sigma - sigma64| for a stream whose largest launch has
    `rows` rows (each launch's error is bounded by its own rows' sums, so the largest bounds them all)."""
    n = x.shape[0]
    a = (x.double() - shift).abs()  # |x~| in float64
    abs_s2 = (a.T @ a).cpu().numpy()  # sum_b |x~_bi x~_bj|
    abs_s1 = a.sum(dim=0).cpu().numpy()  # sum_b |x~_bi|
    # S1: x~ rounding, tl.sum's tree over BLOCK_B = 32 rows (5 levels), one fp32 add per row block.
    g_s1 = (1 + 5 + math.ceil(rows / 32)) * U32
    # S2 = sum x~^T x~ errs by (product + accumulation) x sum |x~ x~|; S1 enters sigma via S1 S1^T / n.
    outer = np.outer(abs_s1, abs_s1) / n
    sigma = ((TF32X3_PRODUCT + _mma_accumulation(rows)) * abs_s2 + 2 * g_s1 * outer
             + F64_SLACK * (abs_s2 + outer)) / (n - 1)
    mu = g_s1 * abs_s1 / n + F64_SLACK * np.abs(shift.cpu().numpy())
    return mu, sigma


def _gpu_softmax_errors(logits: torch.Tensor) -> tuple[float, float, float, float]:
    """(eps_p, eps_logp, g_cls, g_rows): relative error of each p, absolute error of each log p, and the
    relative errors of the fp32 sums over the classes of a row and over the rows of a program."""
    c = logits.shape[1]
    blk = ops._blocks(2048, c)
    chunks = math.ceil(c / blk.block_c)
    l64 = logits.double()
    z_max = float((l64.max(dim=1).values - l64.min(dim=1).values).max())  # the largest |z| = |l - max l|
    # e = exp(z): z = l - m rounds (u |z|), z log2(e) rounds (2u |z| once times ln 2), ex2.approx (4u).
    eps_e = APPROX_OP + 3 * U32 * z_max
    # s = sum_y e_y: its terms (eps_e), a tree over a chunk and one add per chunk, and per chunk a rescale
    # by exp(m_old - m_new) (ex2 + a multiply; the rescale exponents add up to <= z_max: 3u z_max).
    eps_s = eps_e + (math.log2(blk.block_c) + chunks) * U32 + chunks * (APPROX_OP + U32) + 3 * U32 * z_max
    eps_p = eps_e + eps_s + APPROX_OP  # p = div.full(e, s)
    # log p = z - log s: z (u z_max), log s (eps_s, plus 1 ulp of logf: 2u ln C), the difference (u |log p|)
    eps_logp = U32 * z_max + eps_s + 2 * U32 * math.log(c) + U32 * (z_max + math.log(c))
    g_cls = (math.log2(blk.block_c) + chunks + 1) * U32  # sum_y p log p: products, chunk tree, chunk adds
    g_rows = math.ceil(math.log2(blk.block_r)) * U32  # per-split sums over a program's rows: a tree
    return eps_p, eps_logp, g_cls, g_rows


def _kernel_cache(kernel):
    device = torch.cuda.current_device()
    if hasattr(kernel, "device_caches"):
        return kernel.device_caches[device][0]
    return kernel.cache[device]  # older triton


@pytest.mark.gpu
@pytest.mark.parametrize("name", KERNELS)
def test_gpu_compile_cache_bounded(name):
    kernel = getattr(ops, name)
    stats = InceptionStats(1000, num_features=64, num_classes=10, splits=10, device="cuda")
    stats.update(torch.randn(5, 64, device="cuda"), torch.randn(5, 10, device="cuda"))
    before = len(_kernel_cache(kernel))
    for b in (1, 16, 7, 32, 13, 100, 250):
        stats.update(torch.randn(b, 64, device="cuda"), torch.randn(b, 10, device="cuda"))
    torch.cuda.synchronize()
    assert len(_kernel_cache(kernel)) == before


@pytest.mark.gpu
@pytest.mark.parametrize("batches", [
    [100] * 5,  # the evaluation loop's batch
    [500],  # one launch of 500 rows: the largest accumulation bound
    [1, 499],  # one-image first batch: the worst shift c
    [300, 200],  # uneven batches across split borders
    # 8-row launches: the bound shrinks to ~1.6e-6 of sum |x~ x~|, where plain TF32 (~1e-4) would fail,
    # so a lost "tf32x3" shows here.
    [8] * 62 + [4],
], ids=["100x5", "500", "1+499", "300+200", "8x62+4"])
def test_gpu_inception_shapes_match_float64(batches):
    # The real shapes: F 2048, C 1008, post-ReLU-like features; tf32x3 tiles, float64 totals.
    n, f, c, splits = 500, 2048, 1008, 10
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.relu(torch.randn(n, f, device="cuda", generator=g) + 0.5)
    lg = torch.randn(n, c, device="cuda", generator=g) * 4
    stats = InceptionStats(n, f, c, splits=splits, device="cuda")
    ref = InceptionStats(n, f, c, splits=splits, device="cuda")
    with use_backend("triton"):
        _feed(stats, x, lg, batches)
    with use_backend("torch"):
        _feed(ref, x, lg, batches)

    # FID: every element within its bound.
    x64 = x.double().cpu().numpy()
    mu, sigma = stats.fid_stats()
    mu_tol, sigma_tol = _gpu_fid_bounds(x, stats.totals.shift, max(batches))
    for name, got, want, tol in (("mu", mu, x64.mean(axis=0), mu_tol),
                                 ("sigma", sigma, np.cov(x64, rowvar=False), sigma_tol)):
        ratio = float((np.abs(got - want) / tol).max())
        assert ratio <= 1, f"{name}: error up to {ratio:.3g} x its bound"

    # IS totals: each p_sum entry, each split's sum of p log p.
    eps_p, eps_logp, g_cls, g_rows = _gpu_softmax_errors(lg)
    got, want = stats.totals, ref.totals
    p_tol = (eps_p + g_rows) * want.p_sum + F64_SLACK
    assert ((got.p_sum - want.p_sum).abs() <= p_tol).all(), "p_sum"
    count = torch.tensor(stats.split_sizes(), dtype=torch.float64, device="cuda")
    h_tol = (eps_p + g_cls + g_rows) * want.plogp_sum.abs() + count * eps_logp + F64_SLACK
    assert ((got.plogp_sum - want.plogp_sum).abs() <= h_tol).all(), "plogp_sum"
    # IS: ln IS_k = plogp_k / n_k - sum_y pbar ln pbar, so
    # |d ln IS_k| <= h_tol_k / n_k + (eps_p + g_rows) sum_y pbar |ln pbar + 1|; std is 1-Lipschitz in max norm.
    p_bar = want.p_sum / count[:, None]
    d_ln = h_tol / count + (eps_p + g_rows) * (p_bar * (torch.log(p_bar) + 1).abs()).sum(dim=1)
    is_k = torch.exp(want.plogp_sum / count - torch.special.xlogy(p_bar, p_bar).sum(dim=1))
    is_tol = (is_k * torch.expm1(d_ln)).cpu().numpy() + F64_SLACK * is_k.cpu().numpy()
    want_is = _inception_score_np(lg.double().cpu().numpy(), splits)
    got_is = stats.inception_score()
    assert abs(got_is[0] - want_is[0]) <= is_tol.mean(), (got_is, want_is, is_tol)
    assert abs(got_is[1] - want_is[1]) <= is_tol.max(), (got_is, want_is, is_tol)
