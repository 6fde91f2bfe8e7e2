"""InceptionStats: the fused IS / FID statistics pass against numpy float64 formulas on all images.

The numpy oracles are the AutoGAN / OpenAI `inception_score` (softmax, 10 splits sliced as
k N // S : (k + 1) N // S, KL to the split mean) and pytorch-fid's `mu = mean`, `sigma = np.cov`.
Shapes are tiny: without CUDA the Triton kernel runs on the CPU under the interpreter; with CUDA the
same tests run the compiled kernel on the GPU.
"""

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
    pytest.param("triton", 1e-6, id="triton"),  # fp32 softmax and fp32 tile sums of <= 60 rows, ~1e-7
]

# (N, F, C, splits, batches)
SCHEDULES = [
    pytest.param(10, 16, 5, 10, [1] * 10, id="batch1"),  # minimal: one image per batch and per split
    pytest.param(37, 24, 11, 10, [5, 9, 12, 11], id="straddle"),  # prime N, N % splits != 0; cross borders
    pytest.param(60, 24, 11, 10, [17, 43], id="batch-gt-split"),  # 6-image splits: one row block, many splits
    pytest.param(23, 17, 7, 3, [23], id="one-batch-prime"),  # everything at once; prime N, F, C
    pytest.param(48, 40, 10, 10, [16, 32], id="3-feature-blocks"),  # F > 2 BLOCK_F: 6 tiles, partial edge
    pytest.param(20, 8, 3, 1, [7, 13], id="one-split"),  # splits=1, F < BLOCK_F
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


def test_batch_size_does_not_specialize_the_kernel():
    # The interpreter has no compile cache, so replay each launch's arguments through the binder a
    # compiled JITFunction uses to build its cache key (triton 3.x internals: skip if they moved).
    jit = pytest.importorskip("triton.runtime.jit")
    compiler = pytest.importorskip("triton.backends.compiler")
    if not triton_interpreter():
        pytest.skip("compiled Triton: test_gpu_compile_cache_bounded checks the real cache")
    kernel = ops._inception_stats_update_kernel
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


def _kernel_cache(kernel):
    device = torch.cuda.current_device()
    if hasattr(kernel, "device_caches"):
        return kernel.device_caches[device][0]
    return kernel.cache[device]  # older triton


@pytest.mark.gpu
def test_gpu_compile_cache_bounded():
    kernel = ops._inception_stats_update_kernel
    stats = InceptionStats(1000, num_features=64, num_classes=10, splits=10, device="cuda")
    stats.update(torch.randn(5, 64, device="cuda"), torch.randn(5, 10, device="cuda"))
    before = len(_kernel_cache(kernel))
    for b in (1, 16, 7, 32, 13, 100, 250):
        stats.update(torch.randn(b, 64, device="cuda"), torch.randn(b, 10, device="cuda"))
    torch.cuda.synchronize()
    assert len(_kernel_cache(kernel)) == before


@pytest.mark.gpu
@pytest.mark.parametrize("batches", [[100] * 5, [500], [1, 499], [300, 200]], ids=str)
def test_gpu_inception_shapes_match_numpy(batches):
    # The real shapes: F 2048, C 1008, post-ReLU-like features; tf32x3 tiles, float64 totals.
    n, f, c = 500, 2048, 1008
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.relu(torch.randn(n, f, device="cuda", generator=g) + 0.5)
    lg = torch.randn(n, c, device="cuda", generator=g) * 4
    stats = InceptionStats(n, f, c, splits=10, device="cuda")
    with use_backend("triton"):
        _feed(stats, x, lg, batches)
    x64 = x.double().cpu().numpy()
    sigma32 = torch.cov(x.T).double().cpu().numpy()
    want_sigma = np.cov(x64, rowvar=False)
    _assert_close("sigma", stats.fid_stats()[1], want_sigma, sigma32, 1e-6)
    _assert_close("mu", stats.fid_stats()[0], x64.mean(0), x.mean(0).double().cpu().numpy(), 1e-6)
    want_is = _inception_score_np(lg.double().cpu().numpy(), 10)
    eager_is = _inception_score_np(lg.cpu().numpy(), 10)  # numpy fp32
    _assert_close("IS", stats.inception_score(), want_is, eager_is, 1e-6)
