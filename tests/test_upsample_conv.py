"""upsample_conv2d: the four-phase Triton kernels against the interpolate + conv2d reference.

Without CUDA the kernels run under the Triton interpreter (tests/conftest.py), which costs about half a
millisecond per tile operation, so shapes stay tiny; the real AutoGAN shapes run in the GPU tests.
"""


import pytest
import torch
from specialization_helpers import constexpr_names, recorded_specializations

from autogan_fast.kernels import triton_available, upsample_conv2d, upsample_conv2d_ref, use_backend
from autogan_fast.kernels import upsample_conv as uc

if triton_available():
    import triton
    import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

PREACTS = ["none", "relu", "affine", "affine_relu"]

SHAPES = [  # (N, C_in, C_out, H, W)
    pytest.param(1, 1, 1, 1, 1, id="minimal"),  # 1x1 input: 5 of the 9 taps of every output hit padding
    pytest.param(1, 3, 5, 4, 3, id="batch1-prime-C"),  # batch 1, prime channels, non-square
    pytest.param(2, 7, 2, 3, 5, id="prime-C-odd-HW"),  # C_out < C_in, odd spatial, masks on every axis
    pytest.param(3, 6, 5, 5, 5, id="non-pow2-multi-block"),  # 75 pixels: two pixel blocks, split-K of 2
    pytest.param(2, 8, 8, 4, 4, id="autogan-scaled"),  # AutoGAN cell 4x4 -> 8x8 (real: N 64-128, C 256)
]

# Tolerance, per STYLE.md: both the kernel and eager fp32 are compared with a float64 reference on the
# same (fp32-representable) inputs, and kernel error <= 2 x eager error + atol. The kernel sums the
# same products in another order (and folds taps w[0]+w[1] first), so its error may exceed eager's
# when eager is (near) exact, e.g. a 1-channel conv; atol covers that: fp32 eps (1.2e-7) x sqrt of
# the <= 16 x 65 terms per sum here (~32) is 4e-6 of the result's magnitude, 1e-5 with headroom. A
# wrong tap, phase or mask gives errors of order 1 x magnitude, so this cannot pass by accident.
ATOL_REL = 1e-5
# TF32 error model (the GPU path and the interpreter's emulation of it alike): operands are rounded
# to nearest TF32, unit roundoff u = 2^-11, so each product a*w is off by <= 2u |a w|; over the K =
# 16 C_in products of an output the errors add with random signs, ~2u sqrt(sum (a w)^2), which is
# 2u times the typical |y|. Taken against max |y| over a whole output (both tails of ~10^5-10^6
# Gaussian-like values), a factor 2 covers the worst output: 4u = 1.95e-3. Accumulation is fp32
# (negligible next to u). Any indexing error is of order 1 x magnitude, far above it.
ATOL_REL_TF32 = 4 * 2.0**-11
# With TF32 off, CUDA runs "tf32x3": each operand is split into two TF32 halves and three MMAs drop
# only lo*lo, ~3 u^2 = 7e-7 relative per product, below fp32 accumulation noise: ATOL_REL holds.


@pytest.fixture(autouse=True)
def _fp32_dots(monkeypatch):
    """Compare at fp32 precision on CUDA too (TF32 is cuDNN's default); the TF32 tests opt back in."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def _make(n, c_in, c_out, h, w, preact, *, bias=True, residual=True, seed=0):
    """fp64 leaves holding fp32-representable values, so both precisions see the same inputs."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).float().double().to(DEVICE)

    args = {
        "x": rand(n, c_in, h, w),
        "weight": rand(c_out, c_in, 3, 3) / 3.0,
        "bias": rand(c_out) if bias else None,
        "scale": rand(c_in) if preact.startswith("affine") else None,
        "shift": rand(c_in) if preact.startswith("affine") else None,
        "residual": rand(n, c_out, 2 * h, 2 * w) if residual else None,
    }
    grad_y = rand(n, c_out, 2 * h, 2 * w)
    return args, grad_y, preact in ("relu", "affine_relu")


def _run(fn, args, grad_y, relu, dtype):
    """{"y": output, "grad_<name>": gradient} for every tensor argument that is not None."""
    leaves = {k: (v.to(dtype).requires_grad_() if v is not None else None) for k, v in args.items()}
    y = fn(leaves["x"], leaves["weight"], leaves["bias"], scale=leaves["scale"], shift=leaves["shift"],
           relu=relu, residual=leaves["residual"])
    present = [k for k, v in leaves.items() if v is not None]
    grads = torch.autograd.grad(y, [leaves[k] for k in present], grad_y.to(dtype))
    out = {"y": y.detach()}
    out.update({f"grad_{k}": g for k, g in zip(present, grads, strict=True)})
    return out


def _check_against_fp64(args, grad_y, relu, atol_rel=ATOL_REL, dtype=torch.float32):
    exact = _run(upsample_conv2d_ref, args, grad_y, relu, torch.float64)
    eager = _run(upsample_conv2d_ref, args, grad_y, relu, dtype)
    with use_backend("triton"):
        kernel = _run(upsample_conv2d, args, grad_y, relu, dtype)
    assert kernel.keys() == exact.keys()
    for name, ref in exact.items():
        atol = atol_rel * max(1.0, ref.abs().max().item())
        err_kernel = (kernel[name].double() - ref).abs().max().item()
        err_eager = (eager[name].double() - ref).abs().max().item()
        assert kernel[name].dtype == dtype, name
        assert err_kernel <= 2 * err_eager + atol, f"{name}: kernel {err_kernel:.3g}, eager {err_eager:.3g}"
        # and so against the fp32 reference itself, by the triangle inequality
        torch.testing.assert_close(kernel[name], eager[name], atol=3 * err_eager + atol, rtol=0, msg=name)


@pytest.mark.parametrize("preact", PREACTS)
@pytest.mark.parametrize(("n", "c_in", "c_out", "h", "w"), SHAPES)
def test_matches_reference(n, c_in, c_out, h, w, preact):
    _check_against_fp64(*_make(n, c_in, c_out, h, w, preact))


@pytest.mark.parametrize("preact", ["none", "affine_relu"])
@pytest.mark.parametrize(("bias", "residual"), [(False, False), (True, False), (False, True)])
def test_optional_bias_and_residual(bias, residual, preact):
    _check_against_fp64(*_make(2, 3, 4, 3, 2, preact, bias=bias, residual=residual, seed=1))


@pytest.mark.parametrize(
    ("dtype", "atol_rel"),
    [
        # fp16 storage, fp32 accumulation in the kernel: rounding the result to fp16 alone costs up
        # to half an ulp, 4.9e-4 of the magnitude; the inputs are fp16 for eager too
        pytest.param(torch.float16, 2e-3, id="fp16"),
        # bf16 has an 8-bit mantissa (eps 7.8e-3); the interpreter has no bf16, so CUDA only
        pytest.param(torch.bfloat16, 1.6e-2, id="bf16", marks=pytest.mark.gpu),
    ],
)
def test_half_precision(dtype, atol_rel):
    args, grad_y, relu = _make(2, 3, 4, 3, 2, "affine_relu", seed=6)
    args = {k: v.to(dtype).double() for k, v in args.items()}  # representable in dtype
    _check_against_fp64(args, grad_y.to(dtype).double(), relu, atol_rel=atol_rel, dtype=dtype)


if triton_available():

    @triton.jit
    def _round_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + offs, mask=offs < n)
        tl.store(y_ptr + offs, uc._round_to_tf32(v), mask=offs < n)


def test_round_to_tf32_is_round_to_nearest_even():
    gen = torch.Generator().manual_seed(8)
    ulp_of_one = 2.0**-10
    ties = 1.0 + torch.arange(0, 64, dtype=torch.float64) * ulp_of_one + ulp_of_one / 2  # exact halves
    x = torch.cat([torch.randn(4000, generator=gen) * 10.0 ** torch.randint(-6, 6, (4000,), generator=gen),
                   ties.float(), -ties.float(), torch.tensor([0.0, -0.0, 1.9999999, 65504.0])])
    x = x.to(DEVICE)
    y = torch.empty_like(x)
    _round_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    x = x.cpu()
    xd = x.double()
    ulp = torch.exp2(torch.floor(torch.log2(xd.abs().clamp_min(1e-30))) - 10)
    expected = (torch.round(xd / ulp) * ulp).float()  # torch.round: halves to even
    assert torch.equal(y.cpu(), expected)


def test_tf32_mode_rounds_the_operands(monkeypatch):
    """The TF32 path (CUDA default) rounds dot operands to 10 mantissa bits. The interpreter's dot is
    exact, so forcing the mode here shows the rounding is wired in: the error rises above fp32 noise
    and stays within the TF32 bound."""
    args, grad_y, relu = _make(2, 8, 8, 3, 3, "affine_relu", seed=7)
    monkeypatch.setattr(uc, "_input_precision", lambda t: "tf32")
    _check_against_fp64(args, grad_y, relu, atol_rel=ATOL_REL_TF32)
    exact = _run(upsample_conv2d_ref, args, grad_y, relu, torch.float64)
    with use_backend("triton"):
        tf32 = _run(upsample_conv2d, args, grad_y, relu, torch.float32)
    for name in ("y", "grad_x", "grad_weight"):
        rel = ((tf32[name].double() - exact[name]).abs().max() / exact[name].abs().max()).item()
        assert 2**-16 < rel < 2**-9, f"{name}: relative error {rel:.3g} is not TF32-like"


def test_channels_beyond_one_block():
    # 65 channels: the kernels loop over two 64-wide channel blocks and grid over two along C
    _check_against_fp64(*_make(1, 65, 65, 2, 1, "affine_relu", seed=2))


def test_empty_batch():
    # N = 0: empty launch grids; the weight gradient must still come back as zeros, not garbage
    args, grad_y, relu = _make(0, 3, 4, 2, 2, "affine_relu")
    eager = _run(upsample_conv2d_ref, args, grad_y, relu, torch.float32)
    with use_backend("triton"):
        kernel = _run(upsample_conv2d, args, grad_y, relu, torch.float32)
    for name, ref in eager.items():
        torch.testing.assert_close(kernel[name], ref, atol=0, rtol=0, msg=name)


@pytest.mark.parametrize("needed", [
    "x",  # grad-input kernel alone
    "weight",  # grad-weight kernel alone
    "scale",  # grad-input kernel for the affine partials only
    "bias",  # no grad-weight kernel to fuse into: grad_bias from torch
])
def test_only_some_gradients(needed):
    """Each backward kernel also runs alone, when autograd asks for part of the gradients."""
    args, grad_y, relu = _make(2, 3, 4, 3, 3, "affine_relu", seed=3)
    args = {k: v.float() for k, v in args.items()}
    grads = []
    for fn, backend in ((upsample_conv2d_ref, "torch"), (upsample_conv2d, "triton")):
        leaf = args[needed].clone().requires_grad_()
        with use_backend(backend):
            y = fn(**{**args, needed: leaf}, relu=relu)
        grads.append(torch.autograd.grad(y, leaf, grad_y.float())[0])
    ref, got = grads
    torch.testing.assert_close(got, ref, atol=ATOL_REL * max(1.0, ref.abs().max().item()), rtol=0)


def test_torch_compile_sees_one_graph():
    """The custom ops and their fake impls let torch.compile trace forward and backward fullgraph."""
    args, grad_y, relu = _make(2, 3, 4, 3, 2, "affine_relu", seed=5)
    args = {k: v.float().requires_grad_() for k, v in args.items()}

    def loss(x, weight, bias, scale, shift, residual):
        y = upsample_conv2d(x, weight, bias, scale=scale, shift=shift, relu=relu, residual=residual)
        return (y * grad_y.float()).sum()

    with use_backend("triton"):
        expected = torch.autograd.grad(loss(**args), list(args.values()))
        compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
        got = torch.autograd.grad(compiled(**args), list(args.values()))
    for name, g, e in zip(args, got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-6, msg=name)  # same kernels: ~exact


def test_float64_takes_the_reference():
    x = torch.randn(1, 2, 2, 2, device=DEVICE, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, device=DEVICE, dtype=torch.float64)
    torch.testing.assert_close(upsample_conv2d(x, w), upsample_conv2d_ref(x, w), atol=0, rtol=0)
    with use_backend("triton"), pytest.raises(RuntimeError, match="float64"):
        upsample_conv2d(x, w)


@pytest.mark.gpu
def test_auto_backend_runs_the_faster_side_on_cuda():
    """`auto` on CUDA times both sides with CUDA events once per key (kernels/autoselect.py) and runs the
    faster: whichever it is, the call's autograd node is that side's."""
    from autogan_fast.kernels import autoselect_choices
    from autogan_fast.kernels.autoselect import autoselect_override

    x = torch.randn(1, 2, 2, 2, device="cuda", requires_grad=True)
    with autoselect_override():  # the real timer, a fresh registry
        y = upsample_conv2d(x, torch.randn(3, 2, 3, 3, device="cuda"))
        (choice,) = autoselect_choices()
    assert choice["fused_seconds"] > 0 and choice["reference_seconds"] > 0 and choice["note"] == "timed"
    assert ("UpsampleConv2d" in type(y.grad_fn).__name__) == (choice["backend"] == "triton")


# ---------------------------------------------------------------------------------------------
# Argument checks: the same ValueError, naming the argument, from both backends.


def _good():
    return {
        "x": torch.randn(2, 3, 4, 4, device=DEVICE),
        "weight": torch.randn(5, 3, 3, 3, device=DEVICE),
        "bias": torch.randn(5, device=DEVICE),
        "scale": torch.randn(3, device=DEVICE),
        "shift": torch.randn(3, device=DEVICE),
        "residual": torch.randn(2, 5, 8, 8, device=DEVICE),
    }


BAD = [  # (argument to replace, replacement built from the good arguments, text the error must name)
    pytest.param("x", lambda a: a["x"][0], "x must have 4 dims", id="x-rank"),
    pytest.param("weight", lambda a: a["weight"][..., 0], "weight must have 4 dims", id="weight-rank"),
    pytest.param("weight", lambda a: torch.randn(5, 3, 2, 2), "weight must be", id="weight-not-3x3"),
    pytest.param("weight", lambda a: torch.randn(5, 4, 3, 3), "weight has C_in=4", id="weight-C_in"),
    pytest.param("bias", lambda a: torch.randn(4), "bias must have C_out=5", id="bias-length"),
    pytest.param("bias", lambda a: torch.randn(5, 1), "bias must have 1 dims", id="bias-rank"),
    pytest.param("scale", lambda a: torch.randn(4), "scale must have C_in=3", id="scale-length"),
    pytest.param("shift", lambda a: torch.randn(2), "shift must have C_in=3", id="shift-length"),
    pytest.param("shift", lambda a: None, "scale was given without shift", id="scale-without-shift"),
    pytest.param("scale", lambda a: None, "shift was given without scale", id="shift-without-scale"),
    pytest.param("residual", lambda a: torch.randn(2, 5, 8, 7), "residual must have shape",
                 id="residual-shape"),
    pytest.param("x", lambda a: a["x"].transpose(2, 3), "x must be contiguous", id="x-noncontiguous"),
    pytest.param("weight", lambda a: a["weight"].transpose(2, 3), "weight must be contiguous",
                 id="weight-noncontiguous"),
    pytest.param("residual", lambda a: a["residual"].transpose(2, 3), "residual must be contiguous",
                 id="residual-noncontiguous"),
    pytest.param("bias", lambda a: a["bias"].double(), "bias has dtype", id="bias-dtype"),
    pytest.param("x", lambda a: a["x"].long(), "x must be a floating-point", id="x-integer"),
    pytest.param("relu", lambda a: 1, "relu must be a bool", id="relu-not-bool"),
]


def _replace(args, key, make):
    """Replacements are built on the CPU, then moved next to the others."""
    value = make(args)
    if isinstance(value, torch.Tensor):
        value = value.to(DEVICE)
    return {**args, key: value}


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize(("key", "make", "message"), BAD)
def test_bad_argument_raises(backend, key, make, message):
    args = _replace(_good(), key, make)
    relu = args.pop("relu", True)
    with use_backend(backend), pytest.raises(ValueError, match=message):
        upsample_conv2d(args.pop("x"), args.pop("weight"), args.pop("bias"), relu=relu, **args)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("key", ["weight", "bias", "scale", "residual"])
def test_mixed_devices_raise(backend, key):
    args = _good()
    args[key] = args[key].cpu()
    with use_backend(backend), pytest.raises(ValueError, match=f"{key} is on cpu"):
        upsample_conv2d(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)


# ---------------------------------------------------------------------------------------------
# Compile cache: per-call sizes must not specialize the kernels.

KERNELS = [uc._upsample_conv2d_fwd_kernel, uc._upsample_conv2d_bwd_input_kernel,
           uc._upsample_conv2d_bwd_weight_kernel]
FLAGS = {"HAS_BIAS", "HAS_AFFINE", "RELU", "HAS_RESIDUAL", "NEED_AFFINE_GRAD", "INPUT_PRECISION"}


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.__name__)
def test_only_blocks_and_flags_are_constexpr(kernel):
    names = constexpr_names(kernel)
    assert names, "no constexpr found: the annotation check itself is broken"
    allowed = FLAGS | {"BLOCK_M", "BLOCK_N", "BLOCK_K"}
    assert names <= allowed, f"per-call values marked constexpr: {names - allowed}"


# One family: the AutoGAN cell shape at growing resolution and batch, with channels that keep the
# block sizes. None of the sizes is 1 or a multiple of 16 (Triton's integer specializations; they
# give a bounded number of variants), so every call must hit the kernels compiled by the first.
FAMILY = [(2, 5, 6, 3, 3), (3, 7, 6, 5, 2), (5, 6, 7, 2, 7)]  # (N, C_in, C_out, H, W)


def _call_family_member(n, c_in, c_out, h, w):
    args, grad_y, relu = _make(n, c_in, c_out, h, w, "affine_relu")
    with use_backend("triton"):
        _run(upsample_conv2d, args, grad_y, relu, torch.float32)


def test_new_sizes_do_not_add_specializations():
    """Runs under the interpreter too: records the specialization key of every launch."""
    with recorded_specializations(KERNELS) as seen:
        _call_family_member(*FAMILY[0])
        first = {name: set(keys) for name, keys in seen.items()}
        for shape in FAMILY[1:]:
            _call_family_member(*shape)
    for name, keys in seen.items():
        assert len(keys) == len(FAMILY), f"{name} launched {len(keys)} times"
        assert set(keys) == first[name], f"{name}: new sizes added specializations"


def _compiled_count(kernel):
    caches = getattr(kernel, "device_caches", None)
    if caches is not None:  # triton >= 3.1: device -> (kernel_cache, ...)
        return sum(len(entry[0]) for entry in caches.values())
    return sum(len(cache) for cache in kernel.cache.values())


@pytest.mark.gpu
def test_compile_cache_does_not_grow_on_gpu():
    _call_family_member(*FAMILY[0])
    before = [_compiled_count(k) for k in KERNELS]
    assert all(count >= 1 for count in before), before
    for shape in FAMILY[1:]:
        _call_family_member(*shape)
    assert [_compiled_count(k) for k in KERNELS] == before


# ---------------------------------------------------------------------------------------------
# GPU: the real AutoGAN shapes, with TF32 as training runs them and with exact fp32.

AUTOGAN_SHAPES = [
    pytest.param(64, 256, 256, 4, 4, id="cell1-4to8"),  # first generator cell
    pytest.param(64, 256, 256, 16, 16, id="cell3-16to32"),  # last cell, CIFAR-10 32x32 output
    pytest.param(128, 64, 64, 32, 32, id="narrow-32to64"),  # narrow search space, batch 128
]


@pytest.mark.gpu
@pytest.mark.parametrize("tf32", [True, False], ids=["tf32", "ieee"])
@pytest.mark.parametrize(("n", "c_in", "c_out", "h", "w"), AUTOGAN_SHAPES)
def test_autogan_shapes_on_gpu(n, c_in, c_out, h, w, tf32, monkeypatch):
    # eager cuDNN follows the same flag, so "2 x eager error + atol" scales with the precision used
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    _check_against_fp64(*_make(n, c_in, c_out, h, w, "affine_relu", seed=4),
                        atol_rel=ATOL_REL_TF32 if tf32 else ATOL_REL)


# ---------------------------------------------------------------------------------------------
# Every autotune config computes the same thing. The interpreter runs only the first config of a
# set (it cannot time them), so each config is forced here in turn: block sizes change the masks,
# the K-loop trip counts and the split of pixels between programs.

TUNED = [(uc._upsample_conv2d_fwd, uc.FWD_CONFIGS), (uc._upsample_conv2d_bwd_input, uc.BWD_INPUT_CONFIGS),
         (uc._upsample_conv2d_bwd_weight, uc.BWD_WEIGHT_CONFIGS)]
CONFIG_CASES = [pytest.param(precision, i, id=f"{precision}-{i}")
                for precision in ("tf32", "tf32x3")
                for i in range(max(len(sets[precision]) for _, sets in TUNED))]


@pytest.mark.parametrize(("precision", "index"), CONFIG_CASES)
def test_every_autotune_config_matches_the_reference(precision, index, monkeypatch):
    for tuner, sets in TUNED:
        members = sets[precision]
        monkeypatch.setitem(sets, precision, [members[index % len(members)]])
        monkeypatch.setattr(tuner, "cache", {})  # forget configs chosen by earlier calls
    # "tf32" rounds operands (interpreter dots are exact otherwise); "tf32x3" is what a CUDA machine
    # runs with TF32 off, and the interpreter computes it exactly, like "ieee"
    monkeypatch.setattr(uc, "_input_precision", lambda t: precision)
    atol = ATOL_REL_TF32 if precision == "tf32" else ATOL_REL
    # 70 pixels, 33 / 18 channels: partial pixel and channel blocks and >1 K step for every config
    _check_against_fp64(*_make(2, 33, 18, 5, 7, "affine_relu", seed=9), atol_rel=atol)


def test_phase_weights_are_cached_per_weight_version():
    w = torch.randn(4, 3, 3, 3)
    first = uc._phase_weights(w, "ieee")
    assert uc._phase_weights(w, "ieee") is first  # same object, same version: no recompute
    assert uc._phase_weights(w, "tf32") is not first  # the precision is part of the key
    with torch.no_grad():
        w.mul_(2.0)  # an optimizer step: in place, bumps the version
    second = uc._phase_weights(w, "ieee")
    assert second is not first
    torch.testing.assert_close(second, 2.0 * first, atol=0, rtol=0)
    clone = w.clone()  # equal values, another tensor: never served from w's entry
    assert uc._phase_weights(clone, "ieee") is not second


def test_phase_weights_in_tf32_mode_are_rounded_once():
    w = torch.randn(5, 4, 3, 3, dtype=torch.float64).float()
    exact = uc._phase_weights(w, "ieee")
    rounded = uc._phase_weights(w, "tf32")
    torch.testing.assert_close(rounded, uc.round_to_tf32(exact), atol=0, rtol=0)
    assert not torch.equal(rounded, exact)  # random fp32 values are not TF32-representable


def test_torch_round_to_tf32_matches_the_kernel():
    x = torch.randn(4096, generator=torch.Generator().manual_seed(11)) * 1e3
    y = torch.empty_like(x)
    _round_kernel[(triton.cdiv(x.numel(), 1024),)](x.to(DEVICE), y.to(DEVICE), x.numel(), BLOCK=1024)
    torch.testing.assert_close(uc.round_to_tf32(x), y.cpu(), atol=0, rtol=0)


@pytest.mark.parametrize(("settings", "expected"), [
    ({"conv": "tf32"}, "tf32"),  # torch >= 2.9 default for cuDNN convs
    ({"conv": "ieee"}, "ieee"),  # set with the new API: reading allow_tf32 would raise here
    ({"conv": "none", "cudnn": "tf32"}, "tf32"),  # "none" defers to the cuDNN-wide setting
    ({"conv": "none", "cudnn": "none", "global": "none"}, "ieee"),  # nothing says TF32: exact
])
def test_precision_follows_the_new_fp32_precision_api(settings, expected, monkeypatch):
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip("this torch has no fp32_precision API")
    targets = {"conv": conv, "cudnn": torch.backends.cudnn, "global": torch.backends}
    for name, value in settings.items():
        monkeypatch.setattr(targets[name], "fp32_precision", value)
    assert uc._fp32_precision_setting() == expected


def test_legacy_allow_tf32_flag_is_still_followed(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert uc._fp32_precision_setting() == "tf32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert uc._fp32_precision_setting() == "ieee"


def test_tf32_rounding_keeps_nans():
    """CUDA's canonical NaN is 0x7FFFFFFF: the rounding carry would turn it into -0.0 without the guard."""
    nans = torch.tensor([0x7FFFFFFF, -1, 0x7FC00000, 0x7F800001], dtype=torch.int32).view(torch.float32)
    x = torch.cat([nans, torch.tensor([float("inf"), -float("inf"), 1.0])])
    y = torch.empty_like(x)
    _round_kernel[(1,)](x.to(DEVICE), y.to(DEVICE), x.numel(), BLOCK=16)
    for got in (y.cpu(), uc.round_to_tf32(x)):
        assert torch.isnan(got[:4]).all() and got[4:].tolist() == [float("inf"), -float("inf"), 1.0]


def test_phase_weights_stay_fp32_and_exact_under_autocast():
    """Folding the taps is plain adds: autocast (which would run an einsum's matmul in bf16) and TF32
    matmul settings do not touch it, and the result keeps its (4, 4, C_in, C_out) shape."""
    w = torch.randn(8, 5, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        wp = uc._phase_weights(w, "ieee")
    assert wp.dtype == torch.float32 and wp.shape == (4, 4, 5, 8)
    # the same fp32 adds in the same order (rows, then columns): bit-equal; an einsum under autocast
    # would be bf16 (2^-9), one under TF32 2^-11
    rows = [(w[:, :, 0], w[:, :, 1] + w[:, :, 2]), (w[:, :, 0] + w[:, :, 1], w[:, :, 2])]
    for py in range(2):
        for px in range(2):
            for dy in range(2):
                for dx in range(2):
                    r = rows[py][dy]  # (co, c, kx)
                    cols = [(r[..., 0], r[..., 1] + r[..., 2]), (r[..., 0] + r[..., 1], r[..., 2])]
                    expected = cols[px][dx].T  # (c, co)
                    torch.testing.assert_close(wp[py * 2 + px, dy * 2 + dx], expected, atol=0, rtol=0)
