"""Spectral norm: the grouped Triton kernels against torch.nn.utils.spectral_norm and a float64 oracle.

Without CUDA the kernels run under the Triton interpreter (tests/conftest.py), so shapes stay tiny;
they still cover partial tiles, layers split over several programs of every kind, one-element
layers, the plan cache (checks once per group, pinned plans under graph capture) and the refusal of
a group that lists a buffer twice.
"""

import importlib
import math
import re
from collections import OrderedDict

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

# Weight shapes (out, in[, kh, kw]). The mat-vec kernels tile 16..32 rows x 16..128 columns; the
# elementwise ones take chunks of 1024-element blocks.
SHAPES = [
    pytest.param((1, 1), id="minimal"),  # one row, one column: sigma = |w|, gradient exactly 0
    pytest.param((7, 13), id="prime"),  # prime sizes: every tile partial
    pytest.param((5, 3, 3, 3), id="stem-3x3"),  # AutoGAN D stem conv (128, 3, 3, 3) scaled down, K = 27
    pytest.param((24, 17, 3, 3), id="conv3x3-2-col-tiles"),  # K = 153: two 128-column programs, 4 chunks
    pytest.param((40, 12, 1, 1), id="shortcut-1x1-2-row-tiles"),  # 1x1 shortcut; H = 40: two 32-row programs
    pytest.param((1, 48), id="linear-head"),  # AutoGAN D final Linear(ch, 1): one row
]

# The shapes of an AutoGAN discriminator (ch=128: (128,3,3,3), (128,128,3,3), (128,128,1,1), (1,128)),
# channels scaled 128 -> 8 so that the interpreter stays fast; 11 SN layers as in the real model.
D_SHAPES = [(8, 3, 3, 3), (8, 8, 3, 3), (8, 3, 1, 1)] + [(8, 8, 3, 3), (8, 8, 3, 3), (8, 8, 1, 1)] * 2 + [
    (8, 8, 3, 3), (1, 8)]

# Error model. fp32 throughout; the kernels divide and take square roots IEEE-rounded (div_rn, sqrt_rn),
# like torch, so kernel and eager differ only in the order of their sums. Reordering a sum of n terms
# moves it by about sqrt(n) ulp of its magnitude (independent roundings; n ulp at worst); the power
# step's normalizations keep relative errors, sigma is one more sum, W / sigma and the gradient take
# sigma's relative error. So: kernel error vs float64 <= 2 x eager's error vs float64 (same model,
# another order) + atol, with atol = ULPS ulp of the compared quantity's scale for the case where
# eager happens to be exact (e.g. one-element layers). ULPS = 16 covers sqrt(153) ~ 12 for the CPU
# shapes (K <= 153); `_ulps(n)` = 2 sqrt(n) for the full-size GPU shapes.
ULPS = 16
EPS32 = torch.finfo(torch.float32).eps


def _ulps(n_terms):
    return max(ULPS, 2 * math.ceil(math.sqrt(n_terms)))


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


def _assert_close_to_oracle(name, ours, eager, oracle, scale, ulps=ULPS):
    """Kernel error against float64 <= 2 x eager's error + `ulps` ulp of `scale` (see the error model)."""
    err = (ours.double() - oracle).abs().max().item()
    err_eager = (eager.double() - oracle).abs().max().item()
    bound = 2 * err_eager + ulps * EPS32 * scale
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


KERNELS = {  # short name -> kernel attribute of the module
    "vt": "_spectral_norm_fwd_vt_kernel",  # v_raw = W^T u, per (layer, column block)
    "wv": "_spectral_norm_fwd_wv_kernel",  # v = normalize(v_raw), t = W v, per (layer, row block)
    "scale": "_spectral_norm_fwd_scale_kernel",  # u, sigma, W / sigma, per (layer, chunk): once per forward
    "bwd_dot": "_spectral_norm_bwd_dot_kernel",  # partial <g, W_sn>, per (layer, chunk)
    "bwd": "_spectral_norm_bwd_kernel",  # dL/dW, per (layer, chunk): once per backward
}


@pytest.fixture(autouse=True)
def fresh_plans(monkeypatch):
    """Each test starts with an empty plan cache (and pinned set), restored afterwards."""
    monkeypatch.setattr(sn, "_plans", OrderedDict())
    monkeypatch.setattr(sn, "_pinned", {})


@pytest.fixture
def launches(monkeypatch):
    """Records launches of every kernel: {short name: _Recorder}."""
    recorders = {}
    for short, attr in KERNELS.items():
        recorders[short] = _Recorder(getattr(sn, attr))
        monkeypatch.setattr(sn, attr, recorders[short])
    return recorders


def _forward_launches(n_power_iterations, training):
    """Launches per kind of one forward: 2 per power step and the scale kernel (eval: wv + scale)."""
    n = n_power_iterations if training else 0
    return {"vt": n, "wv": max(n, 1), "scale": 1}


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
    counts = {k: len(r.launches) for k, r in launches.items()}  # the kernels really ran
    assert counts == {**_forward_launches(n_power_iterations, training), "bwd_dot": 1, "bwd": 1}

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
        assert len(launches["scale"].launches) == 1 and len(launches["bwd"].launches) == 1
        for i, (w, u, v) in enumerate(layers):
            weight = w.clone().requires_grad_(True)
            single = spectral_norm_weight(weight, u, v, 2, training=training)
            (single_grad,) = torch.autograd.grad(single, weight, grads[i])
            # tiles and chunks differ (the group's blocks fit its largest layer): other sum order
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
    fwd, bwd = launches["scale"], launches["bwd"]
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
    assert len(launches["scale"].launches) == 1
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
        "group-layer": (lambda: spectral_norm_weights([w, w.clone()], [u, torch.randn(3)], [v, v.clone()]), "u[1]"),
        "group-same-u": (lambda: spectral_norm_weights([w, w.clone()], [u, u], [v, v.clone()]), "u[1]"),
        "u-is-v": (lambda: spectral_norm_weight(torch.randn(4, 4), u, u), "v"),  # one buffer as both
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
    # one family: rows 1..16 and columns 17..32 give the same (16, 32) blocks, and every H * K is odd
    # (ALIGNED false); n, eps, train / eval, and so the programs and chunks, vary
    family = [((3, 17), 1, True), ((13, 3, 3, 3), 2, True), ((11, 29), 1, False), ((1, 31), 3, True)]
    for i, (shape, n, training) in enumerate(family):
        w, u, v = _layer(shape, seed=i, trained=False)
        weight = w.requires_grad_(True)
        with use_backend("triton"):
            out = spectral_norm_weight(weight, u, v, n, eps=10.0 ** -(6 + i), training=training)
        out.sum().backward()
    assert len(launches["scale"].launches) == len(family) == len(launches["bwd"].launches)
    for name, recorder in launches.items():
        assert len(_specialization_keys(recorder.kernel, recorder.launches)) == 1, name


# ---------------------------------------------------------------------------------------------
# Dispatch.


def test_non_fp32_takes_reference_or_raises_when_forced():
    w, u, v = (t.double() for t in _layer((4, 6), seed=0, trained=True))
    with use_backend("auto"):
        torch.testing.assert_close(spectral_norm_weight(w, u.clone(), v.clone(), training=False),
                                   spectral_norm_weight_ref(w, u, v, training=False), rtol=0, atol=0)
    with use_backend("triton"), pytest.raises(RuntimeError, match="fp32"):
        spectral_norm_weight(w, u, v)


# ---------------------------------------------------------------------------------------------
# Programs: layers split over several programs of every kind; alignment variants.


@pytest.mark.parametrize("sms", [
    pytest.param(132, id="one-block-chunks"),  # the nominal H100: every chunk is one 1024-element block
    pytest.param(1, id="multi-block-chunks"),  # one SM: chunks of several blocks, a loop per program
])
@pytest.mark.parametrize(("n_power_iterations", "training"), [
    pytest.param(1, True, id="train-1"),  # u from the buffer
    pytest.param(3, True, id="train-3"),  # u from the previous step's t, normalized on the load
    pytest.param(1, False, id="eval"),  # stored u, v; no update
])
def test_multi_program_layers_match_oracle(sms, n_power_iterations, training, monkeypatch, launches):
    """rows > BLOCK_H, cols > BLOCK_K, W > one chunk: each layer spans several programs of each kind."""
    monkeypatch.setattr(sn, "_NOMINAL_SMS", sms)
    shapes = [(40, 17, 3, 3),  # H = 40: 2 row programs (BLOCK_H 32); K = 153: 2 column programs (BLOCK_K 128)
              (7, 13),  # a small layer after a large one: offsets in every packed buffer
              (33, 2, 1, 1)]  # H = 33: a row program of one row; H * K = 66
    layers = [_layer(shape, seed=10 + i, trained=not training) for i, shape in enumerate(shapes)]
    u0s, v0s = [u.clone() for _, u, _ in layers], [v.clone() for _, _, v in layers]
    weights = [w.clone().requires_grad_(True) for w, _, _ in layers]
    us, vs = [u for _, u, _ in layers], [v for _, _, v in layers]
    grads = [torch.randn(s, generator=torch.Generator().manual_seed(i)).to(DEVICE) for i, s in enumerate(shapes)]
    with use_backend("triton"):
        ours = spectral_norm_weights(weights, us, vs, n_power_iterations, training=training)
    ours_grads = torch.autograd.grad(ours, weights, grads)

    (plan,) = sn._plans.values()
    per_layer = {kind: [layer for layer, _ in table] for kind, table in
                 (("k", plan.prog_k), ("h", plan.prog_h), ("e", plan.prog_e))}
    assert per_layer["k"].count(0) == 2 and per_layer["h"].count(0) == 2 and per_layer["h"].count(2) == 2
    assert per_layer["e"].count(0) == math.ceil(40 * 153 / plan.chunk) >= 3
    assert plan.chunk == (1024 if sms == 132 else 2048)  # 6 + 1 + 1 blocks over 4 programs per SM: 2 each
    assert all(launch[0] == (plan.n_e,) for launch in launches["scale"].launches)

    for i, (w, _, _) in enumerate(layers):
        eager, eager_w, eager_u, eager_v = _torch_sn(w, u0s[i], v0s[i], n_power_iterations, training)
        (eager_grad,) = torch.autograd.grad(eager, eager_w, grads[i])
        oracle, oracle_w, oracle_u, oracle_v = _torch_sn(w.double(), u0s[i].double(), v0s[i].double(),
                                                         n_power_iterations, training)
        (oracle_grad,) = torch.autograd.grad(oracle, oracle_w, grads[i].double())
        sigma = (w.double() / oracle).flatten()[0].abs().item()
        _assert_close_to_oracle(f"W_sn[{i}]", ours[i], eager, oracle, scale=oracle.abs().max().item())
        _assert_close_to_oracle(f"u[{i}]", us[i], eager_u, oracle_u, scale=1.0)
        _assert_close_to_oracle(f"v[{i}]", vs[i], eager_v, oracle_v, scale=1.0)
        _assert_close_to_oracle(f"grad W[{i}]", ours_grads[i], eager_grad, oracle_grad,
                                scale=grads[i].abs().max().item() / sigma)


@pytest.mark.parametrize(("offset", "shape", "aligned"), [
    pytest.param(0, (4, 6), True, id="aligned"),  # fresh storage (16-byte aligned), H * K = 24
    pytest.param(1, (4, 6), False, id="offset-view"),  # W starts 4 bytes into its storage
    pytest.param(0, (3, 5), False, id="odd-size"),  # H * K = 15: the next layer's packed offset is odd
])
def test_alignment_claimed_only_when_verified(offset, shape, aligned):
    """ALIGNED (tl.multiple_of on W and the packed offsets) only where the plan checked it; both
    variants give the same results (the interpreter ignores the hints; the GPU test compiles both)."""
    rows, cols = shape
    storage = torch.randn(rows * cols + offset, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    w = storage[offset:].view(rows, cols)
    u = F.normalize(torch.randn(rows, generator=torch.Generator().manual_seed(1)), dim=0).to(DEVICE)
    v = F.normalize(torch.randn(cols, generator=torch.Generator().manual_seed(2)), dim=0).to(DEVICE)
    ref_u, ref_v = u.clone(), v.clone()
    with use_backend("triton"):
        ours = spectral_norm_weight(w, u, v)
    (plan,) = sn._plans.values()
    assert plan.aligned is aligned
    ref = spectral_norm_weight_ref(w.clone(), ref_u, ref_v)
    torch.testing.assert_close(ours, ref, rtol=0, atol=ULPS * EPS32 * ref.abs().max().item())


# ---------------------------------------------------------------------------------------------
# Plan cache: checks once per group; a group must not list a buffer twice; pinned under capture.


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_cache_hit_skips_checks_and_key_guards_them(backend, monkeypatch):
    calls = []
    check_layer = sn._check_layer
    monkeypatch.setattr(sn, "_check_layer", lambda *args: calls.append(args[0]) or check_layer(*args))
    layers = [_layer(shape, seed=i, trained=True) for i, shape in enumerate([(4, 6), (6, 6), (3, 2, 2, 2)])]
    weights, us, vs = ([layer[j] for layer in layers] for j in range(3))
    with use_backend(backend):
        for _ in range(3):
            spectral_norm_weights(weights, us, vs)
        assert calls == [0, 1, 2]  # checked when the plan was built, never again
        spectral_norm_weights(weights[:2], us[:2], vs[:2])  # another group: another plan, checked
        assert calls == [0, 1, 2, 0, 1]
        # same addresses and shapes, other strides or dtype: the key differs, the checks run and refuse
        square = weights[1]
        with pytest.raises(ValueError, match=r"^weight\[1\] must be contiguous"):
            spectral_norm_weights([weights[0], square.t(), weights[2]], us, vs)
        with pytest.raises(ValueError, match=r"^weight\[1\] must be a floating-point"):
            spectral_norm_weights([weights[0], square.view(torch.int32), weights[2]], us, vs)
        # the single-layer function shares the cache (a group of one)
        calls.clear()
        spectral_norm_weight(weights[0], us[0], vs[0])
        spectral_norm_weight(weights[0], us[0], vs[0])
        assert calls == [None]


def _duplicate_groups():
    """(weights, us, vs) of groups listing a buffer twice, with the two names the error must give."""
    w, u, v = _layer((4, 6), seed=0, trained=True)
    w2, u2, v2 = _layer((4, 6), seed=1, trained=True)
    storage = torch.randn(7, device=DEVICE)
    return {
        "same-W": (([w, w], [u, u2], [v, v2]), ("weight[1]", "weight[0]")),  # one module listed twice
        "same-u": (([w, w2], [u, u], [v, v2]), ("u[1]", "u[0]")),  # both layers would update one u
        "overlapping-u": (([w, w2], [storage[:4], storage[3:]], [v, v2]), ("u[1]", "u[0]")),  # views
        "v-inside-W": (([w, w2], [u, u2], [w.view(-1)[6:12], v2]), ("weight[0]", "v[0]")),  # W would move
    }


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", list(_duplicate_groups()))
def test_group_listing_a_buffer_twice_is_refused(case, backend):
    (weights, us, vs), names = _duplicate_groups()[case]
    with use_backend(backend), pytest.raises(ValueError, match="shares memory") as info:
        spectral_norm_weights(weights, us, vs)
    assert all(name in str(info.value) for name in names), str(info.value)
    assert not sn._plans  # nothing cached: the next call checks again


def test_plan_used_under_capture_is_pinned(monkeypatch):
    """A plan whose tables a (here simulated) CUDA graph captured outlives the LRU cache; a new plan
    inside a capture is refused (its tables would need a host copy during capture)."""
    capturing = [False]
    monkeypatch.setattr(sn, "_capturing", lambda device: capturing[0])
    monkeypatch.setattr(sn, "_MAX_PLANS", 2)
    w, u, v = _layer((5, 7), seed=0, trained=True)
    with use_backend("triton"):
        spectral_norm_weight(w, u, v, training=False)  # warm-up: builds the plan and its tables
        (plan,) = sn._plans.values()
        tables = plan.tables
        capturing[0] = True
        spectral_norm_weight(w, u, v, training=False)  # "captured": pins the plan
        assert list(sn._pinned.values()) == [plan]
        other = [_layer((3, 4), seed=i, trained=True) for i in range(1, 4)]
        with pytest.raises(RuntimeError, match="before capturing"):
            spectral_norm_weight(*other[0], training=False)
        capturing[0] = False
        for layer in other:  # evict the plan from the LRU cache
            spectral_norm_weight(*layer, training=False)
        assert plan not in sn._plans.values() and list(sn._pinned.values()) == [plan]
        assert plan.tables is tables  # alive: a replay reads them by address
        spectral_norm_weight(w, u, v, training=False)
        assert next(reversed(sn._plans.values())) is plan  # the pinned plan is found again, not rebuilt


def test_resource_cases_cover_every_block_choice():
    """The resource check's cases reach each (BLOCK_H, BLOCK_K) choice with ALIGNED true and false
    (resource_cases raises when the plan picks otherwise). Here on the CPU the launches really run,
    under the interpreter, on weights of ones: only the coverage is checked."""
    pytest.importorskip("triton")
    cases = sn.resource_cases(channels=())
    labels = [label for label, _ in cases]
    assert len(labels) == len(sn._BLOCK_H_CHOICES) * len(sn._BLOCK_K_CHOICES) * 2
    with use_backend("triton"):
        for _, run in cases[:2]:  # one block pair, both ALIGNED variants (the interpreter is slow)
            run()


def _d_group(ch, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(shape, generator=gen).to(device) for shape in sn._d_shapes(ch)]
    us = [F.normalize(torch.randn(w.shape[0], generator=gen), dim=0).to(device) for w in weights]
    vs = [F.normalize(torch.randn(w[0].numel(), generator=gen), dim=0).to(device) for w in weights]
    for w, u, v in zip(weights, us, vs, strict=True):  # a few steps, as after some training (sigma >> 0)
        spectral_norm_weight_ref(w, u, v, n_power_iterations=3)
    return weights, us, vs


@pytest.mark.gpu
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gpu_full_size_discriminator(training):
    """All 11 SN layers of AutoGAN's D at ch = 128 (K up to 1152) on CUDA, against eager and float64."""
    weights, us, vs = _d_group(128, "cuda")
    u0s, v0s = [u.clone() for u in us], [v.clone() for v in vs]
    params = [w.clone().requires_grad_(True) for w in weights]
    grads = [torch.randn_like(w) for w in weights]
    with use_backend("triton"):
        ours = spectral_norm_weights(params, us, vs, 1, training=training)
    ours_grads = torch.autograd.grad(ours, params, grads)
    (plan,) = sn._plans.values()
    assert plan.aligned and plan.n_e > 132  # AutoGAN's layers take the vectorized variant, all SMs busy
    for i, w in enumerate(weights):
        ulps = _ulps(w[0].numel() + w.shape[0])  # see the error model: sums of up to K + H terms
        eager, eager_w, eager_u, eager_v = _torch_sn(w, u0s[i], v0s[i], 1, training)
        (eager_grad,) = torch.autograd.grad(eager, eager_w, grads[i])
        oracle, oracle_w, oracle_u, oracle_v = _torch_sn(w.double(), u0s[i].double(), v0s[i].double(), 1,
                                                         training)
        (oracle_grad,) = torch.autograd.grad(oracle, oracle_w, grads[i].double())
        sigma = (w.double() / oracle).flatten()[0].abs().item()
        _assert_close_to_oracle(f"W_sn[{i}]", ours[i], eager, oracle, oracle.abs().max().item(), ulps)
        _assert_close_to_oracle(f"u[{i}]", us[i], eager_u, oracle_u, 1.0, ulps)
        _assert_close_to_oracle(f"v[{i}]", vs[i], eager_v, oracle_v, 1.0, ulps)
        _assert_close_to_oracle(f"grad W[{i}]", ours_grads[i], eager_grad, oracle_grad,
                                grads[i].abs().max().item() / sigma, ulps)


@pytest.mark.gpu
def test_gpu_cuda_graph_replays_after_plan_eviction(monkeypatch):
    """A captured forward keeps working after its plan left the LRU cache (it is pinned)."""
    monkeypatch.setattr(sn, "_MAX_PLANS", 2)
    weights, us, vs = _d_group(64, "cuda")
    with use_backend("triton"), torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: compiles, builds the plan and its tables
            spectral_norm_weights(weights, us, vs, training=False)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = spectral_norm_weights(weights, us, vs, training=False)
        assert len(sn._pinned) == 1
        for i in range(4):  # evict it, and reuse freed memory
            w = torch.randn(3 + i, 5, device="cuda")
            spectral_norm_weights([w], [torch.randn(3 + i, device="cuda")], [torch.randn(5, device="cuda")])
        for w in weights:
            w.mul_(2)  # the replay must see the new weights: W_sn is unchanged, sigma doubles
        graph.replay()
        torch.cuda.synchronize()
    for w, u, v, out in zip(weights, us, vs, outs, strict=True):
        ref = spectral_norm_weight_ref(w, u, v, training=False)
        torch.testing.assert_close(out, ref, rtol=0, atol=_ulps(w[0].numel() + w.shape[0]) * EPS32
                                   * ref.abs().max().item())


@pytest.mark.gpu
def test_gpu_real_compile_cache():
    """The JIT's real caches: one compiled kernel per (blocks, ALIGNED) across a family of sizes."""
    family = [(3, 17), (11, 29), (15, 31), (9, 21)]  # blocks (16, 32); every H * K odd: ALIGNED false
    with use_backend("triton"):
        sizes = []
        for rows, cols in family:
            w = torch.randn(rows, cols, device="cuda", requires_grad=True)
            u, v = torch.randn(rows, device="cuda"), torch.randn(cols, device="cuda")
            spectral_norm_weight(w, u, v, rows % 3 + 1, eps=1e-12 * rows).sum().backward()
            device = torch.cuda.current_device()
            sizes.append([len(getattr(sn, attr).device_caches[device][0]) for attr in KERNELS.values()])
    assert sizes[1:] == sizes[:1] * (len(family) - 1), sizes  # the first call compiles; the others reuse
