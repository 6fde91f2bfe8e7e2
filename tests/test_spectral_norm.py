"""Spectral norm: the grouped Triton kernel against torch.nn.utils.spectral_norm and a float64 oracle.

Without CUDA the kernels run under the Triton interpreter (tests/conftest.py), so shapes stay tiny;
they still cover partial tiles, several row / column tiles and one-element layers.
"""

import importlib
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autogan_fast.kernels import (
    SpectralNormGroup,
    remove_spectral_norm,
    spectral_norm,
    spectral_norm_weight,
    spectral_norm_weight_ref,
    spectral_norm_weights,
    use_backend,
)

# `autogan_fast.kernels.spectral_norm` the attribute is the function; the module is needed for its
# kernels and launchers.
sn = importlib.import_module("autogan_fast.kernels.spectral_norm")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Weight shapes (out, in[, kh, kw]). The kernel tiles 16..32 rows x 16..128 columns.
SHAPES = [
    pytest.param((1, 1), id="minimal"),  # one row, one column: sigma = |w|, gradient exactly 0
    pytest.param((7, 13), id="prime"),  # prime sizes: every tile partial
    pytest.param((5, 3, 3, 3), id="stem-3x3"),  # AutoGAN D stem conv (128, 3, 3, 3) scaled down, K = 27
    pytest.param((24, 17, 3, 3), id="conv3x3-2-col-tiles"),  # K = 153: two 128-column tiles, H not pow2
    pytest.param((40, 12, 1, 1), id="shortcut-1x1-2-row-tiles"),  # 1x1 shortcut; H = 40: two 32-row tiles
    pytest.param((1, 48), id="linear-head"),  # AutoGAN D final Linear(ch, 1): one row
]

# The shapes of an AutoGAN discriminator (ch=128: (128,3,3,3), (128,128,3,3), (128,128,1,1), (1,128)),
# channels scaled 128 -> 8 so that the interpreter stays fast; 11 SN layers as in the real model.
D_SHAPES = [(8, 3, 3, 3), (8, 8, 3, 3), (8, 3, 1, 1)] + [(8, 8, 3, 3), (8, 8, 3, 3), (8, 8, 1, 1)] * 2 + [
    (8, 8, 3, 3), (1, 8)]

# fp32 only (the kernel's dtype). atol = 16 ulp of the compared quantity's scale: kernel and torch sum
# the mat-vecs of up to 153 terms in different orders, which spreads results by about sqrt(153) ~ 12
# ulp, while eager's own error against float64 may happen to be 0 (e.g. for one-element layers).
ULPS = 16
EPS32 = torch.finfo(torch.float32).eps


def _layer(shape, seed, trained):
    """W and torch-initialized u, v; `trained` runs 3 power steps first, as after some training."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen)
    u = F.normalize(torch.randn(shape[0], generator=gen), dim=0, eps=1e-12)
    v = F.normalize(torch.randn(w[0].numel(), generator=gen), dim=0, eps=1e-12)
    if trained:  # eval with random u, v gives sigma ~ 0 and an ill-conditioned comparison
        spectral_norm_weight_ref(w, u, v, n_power_iterations=3)
    return w.to(DEVICE), u.to(DEVICE), v.to(DEVICE)


def _torch_sn(weight, u, v, n_power_iterations, training, eps=1e-12):
    """torch.nn.utils.spectral_norm's own compute_weight on copies of (W, u, v); returns (W_sn, W, u, v)."""
    holder = nn.Module()
    holder.weight = nn.Parameter(weight.detach().clone())
    nn.utils.spectral_norm(holder, n_power_iterations=n_power_iterations, eps=eps)
    with torch.no_grad():
        holder.weight_u.copy_(u)
        holder.weight_v.copy_(v)
    (fn,) = holder._forward_pre_hooks.values()
    w_sn = fn.compute_weight(holder, do_power_iteration=training)
    return w_sn, holder.weight_orig, holder.weight_u, holder.weight_v


def _assert_close_to_oracle(name, ours, eager, oracle, scale):
    """Kernel error against float64 <= 2 x eager's error + ULPS ulp of `scale`."""
    err = (ours.double() - oracle).abs().max().item()
    err_eager = (eager.double() - oracle).abs().max().item()
    bound = 2 * err_eager + ULPS * EPS32 * scale
    assert err <= bound, f"{name}: error {err:.3e} > 2 x eager {err_eager:.3e} + atol (bound {bound:.3e})"


class _Recorder:
    """Wraps a kernel to record the arguments of every launch (`kernel[grid](*args, **kwargs)`)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.launches = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((grid, args, kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch


@pytest.fixture
def launches(monkeypatch):
    """Records launches of the forward and backward kernels."""
    fwd = _Recorder(sn._spectral_norm_fwd_kernel)
    bwd = _Recorder(sn._spectral_norm_bwd_kernel)
    monkeypatch.setattr(sn, "_spectral_norm_fwd_kernel", fwd)
    monkeypatch.setattr(sn, "_spectral_norm_bwd_kernel", bwd)
    return fwd, bwd


# ---------------------------------------------------------------------------------------------
# Numerics.


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("n_power_iterations", [1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_torch_and_float64(shape, n_power_iterations, training, launches):
    w, u, v = _layer(shape, seed=sum(shape), trained=not training)
    u0, v0 = u.clone(), v.clone()
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)

    weight = w.clone().requires_grad_(True)
    with use_backend("triton"):
        ours = spectral_norm_weight(weight, u, v, n_power_iterations, training=training)
    (ours_grad,) = torch.autograd.grad(ours, weight, grad_out)
    assert len(launches[0].launches) == 1 and len(launches[1].launches) == 1  # the kernels really ran

    eager, eager_w, eager_u, eager_v = _torch_sn(w, u0, v0, n_power_iterations, training)
    (eager_grad,) = torch.autograd.grad(eager, eager_w, grad_out)
    oracle, oracle_w, oracle_u, oracle_v = _torch_sn(w.double(), u0.double(), v0.double(),
                                                     n_power_iterations, training)
    (oracle_grad,) = torch.autograd.grad(oracle, oracle_w, grad_out.double())

    sigma = (w.double() / oracle).flatten()[0].abs().item()
    _assert_close_to_oracle("W_sn", ours, eager, oracle, scale=oracle.abs().max().item())
    _assert_close_to_oracle("u", u, eager_u, oracle_u, scale=1.0)
    _assert_close_to_oracle("v", v, eager_v, oracle_v, scale=1.0)
    # the gradient's two terms are each of size |g| / sigma; the result may be ~0 (shape (1, 1))
    _assert_close_to_oracle("grad W", ours_grad, eager_grad, oracle_grad,
                            scale=grad_out.abs().max().item() / sigma)
    if training:
        # the checks above compare against torch's updated u, v; make sure those moved at all
        assert not torch.equal(v, v0) or shape == (1, 1)  # (1x1: v = +-1 may stay)
    else:
        assert torch.equal(u, u0) and torch.equal(v, v0)  # eval: no update


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3]])
def test_reference_is_torch(shape, training):
    """The reference (CPU path, oracle) runs torch's exact operations: bitwise equal results."""
    w, u, v = _layer(shape, seed=3, trained=not training)
    eager, eager_w, eager_u, eager_v = _torch_sn(w, u, v, 2, training)
    weight = w.clone().requires_grad_(True)
    with use_backend("torch"):
        ours = spectral_norm_weight(weight, u, v, 2, training=training)
    grad_out = torch.randn_like(w)
    assert torch.equal(ours, eager)
    assert torch.equal(u, eager_u) and torch.equal(v, eager_v)
    assert torch.equal(torch.autograd.grad(ours, weight, grad_out)[0],
                       torch.autograd.grad(eager, eager_w, grad_out)[0])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_grouped_equals_per_layer(training, launches):
    """All layers in one forward and one backward launch give the per-layer results."""
    layers = [_layer(p.values[0], seed=i, trained=True) for i, p in enumerate(SHAPES)]
    grads = [torch.randn(w.shape, generator=torch.Generator().manual_seed(i)).to(DEVICE)
             for i, (w, _, _) in enumerate(layers)]
    weights = [w.clone().requires_grad_(True) for w, _, _ in layers]
    us, vs = [u.clone() for _, u, _ in layers], [v.clone() for _, _, v in layers]
    with use_backend("triton"):
        grouped = spectral_norm_weights(weights, us, vs, 2, training=training)
        grouped_grads = torch.autograd.grad(grouped, weights, grads)
        fwd, bwd = launches
        assert len(fwd.launches) == 1 and len(bwd.launches) == 1
        for i, (w, u, v) in enumerate(layers):
            weight = w.clone().requires_grad_(True)
            single = spectral_norm_weight(weight, u, v, 2, training=training)
            (single_grad,) = torch.autograd.grad(single, weight, grads[i])
            # tiles differ (the group's blocks fit its largest layer): same maths, other sum order
            scale = single.abs().max().item()
            torch.testing.assert_close(grouped[i], single, rtol=0, atol=ULPS * EPS32 * scale)
            torch.testing.assert_close(us[i], u, rtol=0, atol=ULPS * EPS32)
            torch.testing.assert_close(vs[i], v, rtol=0, atol=ULPS * EPS32)
            scale = grads[i].abs().max().item() / (w / single.detach()).flatten()[0].abs().item()
            torch.testing.assert_close(grouped_grads[i], single_grad, rtol=0, atol=ULPS * EPS32 * scale)


def test_unused_layer_keeps_grad_none():
    """As with torch's per-module hooks, a layer the loss does not use gets no gradient (not zeros:
    Adam skips parameters whose grad is None, but would move them on zeros)."""
    layers = [_layer(shape, seed=i, trained=True) for i, shape in enumerate([(4, 6), (3, 5)])]
    weights = [w.clone().requires_grad_(True) for w, _, _ in layers]
    with use_backend("triton"):
        used, _ = spectral_norm_weights(weights, [u for _, u, _ in layers], [v for _, _, v in layers])
    used.sum().backward()
    assert weights[0].grad is not None and weights[1].grad is None


def test_two_forwards_before_backward(launches):
    """GAN pattern D(real) + D(fake): the second power step must not corrupt the first backward."""
    w, u, v = _layer((7, 13), seed=5, trained=False)
    weight = w.clone().requires_grad_(True)
    eager_w = w.clone().requires_grad_(True)
    eager_u, eager_v = u.clone(), v.clone()
    with use_backend("triton"):
        loss = spectral_norm_weight(weight, u, v).square().sum() + spectral_norm_weight(weight, u, v).sum()
    loss.backward()
    with use_backend("torch"):
        eager_loss = (spectral_norm_weight(eager_w, eager_u, eager_v).square().sum()
                      + spectral_norm_weight(eager_w, eager_u, eager_v).sum())
    eager_loss.backward()
    torch.testing.assert_close(weight.grad, eager_w.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(u, eager_u, rtol=0, atol=ULPS * EPS32)


# ---------------------------------------------------------------------------------------------
# Modules: drop-in spectral_norm, state dicts, SpectralNormGroup.


def _make_d(wrap, seed):
    """A small SN discriminator: conv stem, conv, 1x1 shortcut-like conv, linear head."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 5, 3, padding=1), nn.Conv2d(5, 7, 1),
              nn.Linear(7, 1)]
    return [wrap(layer).to(DEVICE) for layer in layers]  # u, v drawn on the CPU, as torch would


def _run_d(layers, x):
    h = F.relu(layers[0](x))
    h = F.relu(layers[1](h))
    h = layers[2](h).sum(dim=(2, 3))
    return layers[3](h)


def test_module_init_and_state_dict_interchange():
    ours = _make_d(spectral_norm, seed=0)
    theirs = _make_d(nn.utils.spectral_norm, seed=0)
    for a, b in zip(ours, theirs, strict=True):
        assert list(a.state_dict()) == list(b.state_dict())  # weight_orig, weight_u, weight_v (+ bias)
        for key, value in a.state_dict().items():  # same RNG calls as torch: same initial u, v
            assert torch.equal(value, b.state_dict()[key]), key
    x = torch.randn(2, 3, 5, 5, device=DEVICE)
    with use_backend("torch"):
        _run_d(ours, x)  # one training step changes u, v
    # ours -> torch
    for a, b in zip(ours, theirs, strict=True):
        b.load_state_dict(a.state_dict())
    # torch -> a fresh one of ours
    fresh = _make_d(spectral_norm, seed=1)
    for a, b in zip(fresh, theirs, strict=True):
        a.load_state_dict(b.state_dict())
    for layers in (ours, theirs, fresh):
        for layer in layers:
            layer.eval()
    with use_backend("torch"):
        expected = _run_d(theirs, x)
        assert torch.equal(_run_d(ours, x), expected)
        assert torch.equal(_run_d(fresh, x), expected)


@pytest.mark.parametrize(("backend", "ulps"), [
    ("torch", 0),  # the reference runs torch's own operations: bitwise equal
    ("triton", ULPS),  # the kernel sums in another order (see ULPS)
])
def test_remove_spectral_norm_matches_torch(backend, ulps):
    ours = _make_d(spectral_norm, seed=2)
    theirs = _make_d(nn.utils.spectral_norm, seed=2)
    for a, b in zip(ours, theirs, strict=True):
        with use_backend(backend):
            remove_spectral_norm(a)
        nn.utils.remove_spectral_norm(b)
        assert list(a.state_dict()) == list(b.state_dict()) == ["bias", "weight"]
        assert isinstance(a.weight, nn.Parameter)
        atol = ulps * EPS32 * b.weight.abs().max().item()
        torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=atol)
        assert not a._forward_pre_hooks and not a._state_dict_hooks


def test_group_matches_torch_modules(launches):
    """One launch per D forward; gradients reach every weight_orig; eval does not move u, v."""
    ours = _make_d(spectral_norm, seed=4)
    theirs = _make_d(nn.utils.spectral_norm, seed=4)
    group = SpectralNormGroup(ours)
    x_real, x_fake = torch.randn(2, 3, 4, 4, device=DEVICE), torch.randn(2, 3, 4, 4, device=DEVICE)
    with use_backend("triton"):
        group.update()
        loss = _run_d(ours, x_real).mean()
        group.update()
        loss = loss - _run_d(ours, x_fake).mean()
        loss.backward()
    fwd, bwd = launches
    assert len(fwd.launches) == 2 and len(bwd.launches) == 2  # per-module hooks did no work
    eager_loss = _run_d(theirs, x_real).mean() - _run_d(theirs, x_fake).mean()
    eager_loss.backward()
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.weight_u, b.weight_u, rtol=0, atol=ULPS * EPS32)
        torch.testing.assert_close(a.weight_v, b.weight_v, rtol=0, atol=ULPS * EPS32)
        assert a.weight_orig.grad is not None
        torch.testing.assert_close(a.weight_orig.grad, b.weight_orig.grad, rtol=1e-4, atol=1e-5)

    for layer in ours + theirs:
        layer.eval()
    before = [layer.weight_u.clone() for layer in ours]
    with use_backend("triton"), torch.no_grad():
        group.update()
        out = _run_d(ours, x_real)
    assert all(torch.equal(b, layer.weight_u) for b, layer in zip(before, ours, strict=True))
    with torch.no_grad():
        torch.testing.assert_close(out, _run_d(theirs, x_real), rtol=1e-5, atol=1e-6)
    # without update(), each module's own hook runs (and never reuses a consumed group weight)
    with use_backend("triton"), torch.no_grad():
        torch.testing.assert_close(_run_d(ours, x_real), out, rtol=1e-5, atol=1e-6)
    assert len(fwd.launches) == 3 + len(ours)


def test_group_real_discriminator_shapes(launches):
    """All 11 layers of a (narrow) AutoGAN D: one launch, same weights as the reference."""
    layers = [_layer(shape, seed=i, trained=False) for i, shape in enumerate(D_SHAPES)]
    weights = [w for w, _, _ in layers]
    us, vs = [u.clone() for _, u, _ in layers], [v.clone() for _, _, v in layers]
    with use_backend("triton"):
        ours = spectral_norm_weights(weights, us, vs)
    assert len(launches[0].launches) == 1
    for (w, u, v), out, u1, v1 in zip(layers, ours, us, vs, strict=True):
        ref = spectral_norm_weight_ref(w, u, v)
        torch.testing.assert_close(out, ref, rtol=0, atol=ULPS * EPS32 * ref.abs().max().item())
        torch.testing.assert_close(u1, u, rtol=0, atol=ULPS * EPS32)
        torch.testing.assert_close(v1, v, rtol=0, atol=ULPS * EPS32)


# ---------------------------------------------------------------------------------------------
# Argument checks: the same ValueError, naming the argument, from both backends.


def _bad_cases():
    w, u, v = torch.randn(4, 3, 2, 2), torch.randn(4), torch.randn(12)
    meta_u = torch.empty(4, device="meta")
    return {
        "rank": (lambda: spectral_norm_weight(torch.randn(4), u, v), "weight"),
        "u-length": (lambda: spectral_norm_weight(w, torch.randn(5), v), "u"),
        "v-length": (lambda: spectral_norm_weight(w, u, torch.randn(11)), "v"),
        "u-rank": (lambda: spectral_norm_weight(w, u[None], v), "u"),
        "device": (lambda: spectral_norm_weight(w, meta_u, v), "u"),
        "non-contiguous": (lambda: spectral_norm_weight(w.transpose(0, 1), torch.randn(3),
                                                        torch.randn(16)), "weight"),
        "int-weight": (lambda: spectral_norm_weight(w.long(), u, v), "weight"),
        "v-dtype": (lambda: spectral_norm_weight(w, u, v.double()), "v"),
        "n_power_iterations": (lambda: spectral_norm_weight(w, u, v, n_power_iterations=-1),
                               "n_power_iterations"),
        "eps": (lambda: spectral_norm_weight(w, u, v, eps=-1.0), "eps"),
        "group-lengths": (lambda: spectral_norm_weights([w, w], [u], [v, v]), "weights"),
        "group-layer": (lambda: spectral_norm_weights([w, w], [u, torch.randn(3)], [v, v]), "u[1]"),
        "module-name": (lambda: spectral_norm(nn.Linear(3, 4), name="nope"), "name"),
        "module-transposed": (lambda: spectral_norm(nn.ConvTranspose2d(3, 4, 3)), "module"),
        "module-dim": (lambda: spectral_norm(nn.Linear(3, 4), dim=1), "dim"),
    }


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_arguments_raise_value_error(case, backend):
    call, name = _bad_cases()[case]
    with use_backend(backend), pytest.raises(ValueError, match=rf"^{re.escape(name)}[ :,]"):
        call()


# ---------------------------------------------------------------------------------------------
# Compile cache: new layer sizes of the same family must not compile new kernels.


def _specialization_keys(kernel, launches):
    """Triton's own cache key (specialization + options) of each recorded launch, computed without a
    GPU: the interpreter never compiles, so this replays the JIT's binder (what `JITFunction.run`
    keys `device_caches` on) with the base backend's argument specialization."""
    jit = pytest.importorskip("triton.runtime.jit", reason="needs triton's JIT internals")
    compiler = pytest.importorskip("triton.backends.compiler")
    if not hasattr(jit, "create_function_from_signature"):
        pytest.skip("this triton has no create_function_from_signature (the GPU test checks the cache)")
    fn = jit.JITFunction(kernel.fn, **getattr(kernel, "kwargs", {})) if not isinstance(
        kernel, jit.JITFunction) else kernel
    binder = jit.create_function_from_signature(fn.signature, fn.params, compiler.BaseBackend)
    keys = set()
    for _, args, kwargs in launches:
        _, specialization, options = binder(*args, **kwargs)
        keys.add(str(specialization) + str(sorted(options.items())))
    return keys


def test_compile_cache_bounded_across_sizes(launches):
    # one family: rows 1..16 and columns 17..32 give the same (16, 32) blocks; n, eps, train/eval vary
    family = [((3, 17), 1, True), ((16, 8, 2, 2), 2, True), ((11, 29), 1, False), ((1, 31), 3, True)]
    for i, (shape, n, training) in enumerate(family):
        w, u, v = _layer(shape, seed=i, trained=False)
        weight = w.requires_grad_(True)
        with use_backend("triton"):
            out = spectral_norm_weight(weight, u, v, n, eps=10.0 ** -(6 + i), training=training)
        out.sum().backward()
    fwd, bwd = launches
    assert len(fwd.launches) == len(family) == len(bwd.launches)
    assert len(_specialization_keys(fwd.kernel, fwd.launches)) == 1
    assert len(_specialization_keys(bwd.kernel, bwd.launches)) == 1


# ---------------------------------------------------------------------------------------------
# Dispatch.


def test_non_fp32_takes_reference_or_raises_when_forced():
    w, u, v = (t.double() for t in _layer((4, 6), seed=0, trained=True))
    with use_backend("auto"):
        torch.testing.assert_close(spectral_norm_weight(w, u.clone(), v.clone(), training=False),
                                   spectral_norm_weight_ref(w, u, v, training=False), rtol=0, atol=0)
    with use_backend("triton"), pytest.raises(RuntimeError, match="fp32"):
        spectral_norm_weight(w, u, v)


@pytest.mark.gpu
def test_gpu_kernel_and_real_compile_cache():
    """Full-size AutoGAN D shapes on CUDA; the JIT's real cache holds one kernel per block pair."""
    torch.manual_seed(0)
    shapes = [(128, 3, 3, 3), (128, 128, 3, 3), (128, 128, 1, 1), (128, 3, 1, 1)] + [(128, 128, 3, 3)] * 6 + [
        (1, 128)]
    weights = [torch.randn(s, device="cuda", requires_grad=True) for s in shapes]
    us = [F.normalize(torch.randn(s[0], device="cuda"), dim=0) for s in shapes]
    vs = [F.normalize(torch.randn(w[0].numel(), device="cuda"), dim=0) for w in weights]
    ref_us, ref_vs = [u.clone() for u in us], [v.clone() for v in vs]
    with use_backend("triton"):
        ours = spectral_norm_weights(weights, us, vs, 1)
    grads = torch.autograd.grad(ours, weights, [torch.ones_like(o) for o in ours])
    for w, out, g, u, v, u1, v1 in zip(weights, ours, grads, ref_us, ref_vs, us, vs, strict=True):
        w_ref = w.detach().clone().requires_grad_(True)
        ref = spectral_norm_weight_ref(w_ref, u, v, 1)
        (g_ref,) = torch.autograd.grad(ref, w_ref, torch.ones_like(ref))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(u1, u, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(v1, v, rtol=1e-4, atol=1e-6)

    cache = sn._spectral_norm_fwd_kernel.device_caches[torch.cuda.current_device()][0]
    sizes = [None]
    for rows, cols in [(3, 17), (11, 29), (16, 30), (9, 20)]:  # one family: blocks (16, 32)
        w = torch.randn(rows, cols, device="cuda")
        u, v = torch.randn(rows, device="cuda"), torch.randn(cols, device="cuda")
        with use_backend("triton"):
            spectral_norm_weight(w, u, v, rows % 3 + 1, eps=1e-12 * rows)
        sizes.append(len(cache))
    assert len(set(sizes[1:])) == 1, sizes  # the first call may compile; the others reuse it
