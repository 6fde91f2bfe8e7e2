"""Bilinear upsample by an integer factor (align_corners=False), forward and gather backward.

    y = interpolate(x, size=(H * s, W * s), mode="bilinear", align_corners=False),  s = 1, 2, 3, ...

The generator's x2 bilinear upsample and its skip-path resizes (x2, x4; any integer factor works).
PyTorch's NCHW CUDA kernel runs one thread per output pixel and loops over N x C inside it
(pytorch/pytorch#127082): at AutoGAN's 8-32 px outputs that is a few hundred threads for the whole
GPU. Here the grid spans the N x C planes instead.

What is computed, exactly as PyTorch's kernel does: output index d reads source coordinate
src = max((d + 0.5) / s - 0.5, 0), i0 = floor(src), i1 = min(i0 + 1, size - 1), weights (1 - l, l)
with l = src - i0, per axis; y = ly0 (lx0 x00 + lx1 x01) + ly1 (lx0 x10 + lx1 x11). 1 / s is the
factor's reciprocal in the accumulation type (fp32; fp64 for fp64 inputs), as torch's scale in / out.

- forward, `_bilinear_upsample_fwd_kernel`: a program owns a tile of BLOCK_R output rows (rows of
  the N*C*H_out rows of all planes, so one tile spans several planes at small sizes) x BLOCK_W
  output columns. Source indices and weights are computed per row and per column (vectors), the four
  neighbours are gathered (S adjacent lanes read one address: L1 broadcasts), and the store is
  contiguous along W (with the row stride a multiple of the constexpr factor, vectorizable).
- backward, `_bilinear_upsample_bwd_kernel`: a gather, no atomics, deterministic. Input pixel i of an
  axis is read (as i0 or i1) only by the 2s output indices starting at s i - s + floor(s / 2), so a
  program owns BLOCK_R input rows x BLOCK_W input columns and, for each of the 2s output rows of the
  window, loads a (BLOCK_R, BLOCK_W, window) tile of grad_y (each input column's window: 2s
  contiguous output columns), weights it by the forward's own column weights recomputed for that
  window (zero where the output does not read the pixel) and reduces over the window, then weights
  by the row weight. Every grad_y element is read 4 times (L1 / L2), once from DRAM. For factors
  that are not powers of two 1 / s is inexact, an index at a window's edge may round to the next
  pixel, and the window grows by one index on each side (WIN_PAD): the exact adjoint still.
- Registered as custom ops (`autogan_fast::bilinear_upsample_fwd` / `_bwd`, with fake impls) under a
  `torch.autograd.Function`, so `torch.compile(fullgraph=True)` keeps the op in its graph and CUDA
  graphs capture the launches directly.

Compile keys: only the factor (SCALE, with the window pad it implies), the accumulation dtype and
block sizes are constexpr; sizes are runtime arguments, so a new resolution or batch reuses the
kernel of its block configuration. Blocks are picked by the launchers from the output width (forward)
and the input width and factor (backward): ~1,024 outputs per forward program and ~2,048 gathered
elements per backward program (512 in fp64) at 4 warps, num_stages 1 (no loop-carried prefetch: the
kernels have no dot, and the backward loop's loads are L1 / L2 hits after the first window), so no
pipelining buffers in shared memory by design. Every configuration AutoGAN's shapes reach is compiled
ahead of time for sm_90 and sm_80 by `autogan_fast.kernels.resources`; compiled (not run): forward
48-72 registers and no shared memory, backward 32-128 registers and <= 2 KB of shared memory (its
window reduction), no spills. Offsets are int32: tensors of 2^31 elements or more take the
reference. fp32 / fp16 / bf16 compute in fp32 and store in the input dtype; fp64 computes in fp64
(how gradcheck runs through the kernels). Non-contiguous (e.g. channels-last) inputs are copied to
NCHW first and the output is NCHW.

Tuned for: AutoGAN's generator, fp32, N 64-128, C 64-256, 4-16 px inputs, factors 2 and 4 (8 px
skip outputs to 32 px). NOT YET MEASURED ON A GPU: every figure above is a design estimate; the
interpreter checks the maths only. Where it should lose: wide rows (W_out > 128 splits a row over
programs, each recomputing its column weights), tiny tensors (launch bound: capture in a CUDA graph;
the custom-op dispatch costs some CPU per eager call, unmeasured here), channels-last inputs (a copy).

Not fused, for want of a measurement (no GPU was available when it was written): the pre-activation
(BN affine + ReLU on the load, as the four-phase conv does for nearest) and the 3x3 conv after it.
Bilinear x2 then a 3x3 conv is, per output phase, a 3x3 conv on the small input (each output row
reads 2 input rows, three adjacent output rows read 3): the same multiply-adds as the conv on the
upsampled tensor (nearest saves 2.25x, bilinear nothing), with different weights on the border rows
and columns (the clamp), so it would save only the upsampled tensor's write and read and one launch.
What a GPU must measure to decide: per AutoGAN shape (N 64 / 128, C 128, 8->16 and 16->32, the skip
8->32) this kernel's forward and forward+backward against PyTorch's (`bilinear_upsample` against
`bilinear_upsample_ref`, the `bilinear` benchmark rows) and against the BN + ReLU kernels that the
pre-activation fusion would absorb and the cuDNN conv that follows it (a fusion pays only if the
absorbed kernels are a visible share of a bilinear cell); then the stage-2 `gan_unit` rows of
bilinear architectures before and after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dispatch import check_tensor, get_backend, on_tensor_device, triton_available, use_triton
from .autoselect import backward_follows, keep_fused, timed_call

if triton_available():
    import triton
    import triton.language as tl
else:  # pragma: no cover - non-Linux: the reference runs, see `use_triton`
    triton = None


# ---------------------------------------------------------------------------------------------
# Kernels

if triton is not None:

    @triton.jit
    def _source_index(dst, size_in, SCALE: tl.constexpr, ACC_DTYPE: tl.constexpr):
        """PyTorch's align_corners=False source of output index `dst` along an axis of `size_in`:
        (i0, i1, weight of i0, weight of i1)."""
        src = tl.maximum((dst.to(ACC_DTYPE) + 0.5) * (1.0 / SCALE) - 0.5, 0.0)
        i0 = src.to(tl.int32)  # floor: src >= 0
        i1 = tl.minimum(i0 + 1, size_in - 1)
        l1 = src - i0.to(ACC_DTYPE)
        return i0, i1, 1.0 - l1, l1

    @triton.jit
    def _bilinear_upsample_fwd_kernel(
        x_ptr,  # (P, H, W) input planes, P = N * C, contiguous
        y_ptr,  # (P, H * SCALE, W * SCALE) output planes, contiguous
        rows,  # P * H * SCALE: output rows of all planes
        H,  # input height
        W,  # input width
        SCALE: tl.constexpr,  # integer upsampling factor (both axes)
        ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for fp64 inputs
        BLOCK_R: tl.constexpr,  # output rows per program (of all planes, flattened)
        BLOCK_W: tl.constexpr,  # output columns per program
    ):
        pid_r = tl.program_id(0)
        pid_w = tl.program_id(1)
        H_out = H * SCALE
        W_out = W * SCALE
        r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        ox = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
        plane = r // H_out
        oy = r - plane * H_out
        y0, y1, ly0, ly1 = _source_index(oy, H, SCALE, ACC_DTYPE)
        x0, x1, lx0, lx1 = _source_index(ox, W, SCALE, ACC_DTYPE)
        row0 = (plane * H + y0) * W
        row1 = (plane * H + y1) * W
        mask = (r < rows)[:, None] & (ox < W_out)[None, :]
        v00 = tl.load(x_ptr + row0[:, None] + x0[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        v01 = tl.load(x_ptr + row0[:, None] + x1[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        v10 = tl.load(x_ptr + row1[:, None] + x0[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        v11 = tl.load(x_ptr + row1[:, None] + x1[None, :], mask=mask, other=0.0).to(ACC_DTYPE)
        top = lx0[None, :] * v00 + lx1[None, :] * v01
        bottom = lx0[None, :] * v10 + lx1[None, :] * v11
        y = ly0[:, None] * top + ly1[:, None] * bottom
        tl.store(y_ptr + r[:, None] * W_out + ox[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _bilinear_upsample_bwd_kernel(
        g_ptr,  # (P, H * SCALE, W * SCALE) grad of y, contiguous
        gx_ptr,  # (P, H, W) grad of x, contiguous
        rows,  # P * H: input rows of all planes
        H,  # input height
        W,  # input width
        SCALE: tl.constexpr,  # integer upsampling factor (both axes)
        WIN_PAD: tl.constexpr,  # 0 for power-of-two factors (exact 1 / SCALE), else 1: see the header
        ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for fp64 inputs
        BLOCK_R: tl.constexpr,  # input rows per program (of all planes, flattened)
        BLOCK_W: tl.constexpr,  # input columns per program
        BLOCK_K: tl.constexpr,  # power of two >= the window, 2 SCALE + 2 WIN_PAD output indices
    ):
        WINDOW: tl.constexpr = 2 * SCALE + 2 * WIN_PAD
        pid_r = tl.program_id(0)
        pid_w = tl.program_id(1)
        H_out = H * SCALE
        W_out = W * SCALE
        r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        ix = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
        r_ok = r < rows
        ix_ok = ix < W
        plane = r // H
        iy = r - plane * H

        # columns: the window of output columns of each input column, with the forward's weights
        k = tl.arange(0, BLOCK_K)
        ox = (SCALE * ix - SCALE + SCALE // 2 - WIN_PAD)[:, None] + k[None, :]  # (BLOCK_W, BLOCK_K)
        ox_ok = ix_ok[:, None] & (k < WINDOW)[None, :] & (ox >= 0) & (ox < W_out)
        x0, x1, lx0, lx1 = _source_index(ox, W, SCALE, ACC_DTYPE)
        wx = tl.where(x0 == ix[:, None], lx0, 0.0) + tl.where(x1 == ix[:, None], lx1, 0.0)

        oy_start = SCALE * iy - SCALE + SCALE // 2 - WIN_PAD
        g_rows = plane * H_out
        acc = tl.zeros((BLOCK_R, BLOCK_W), dtype=ACC_DTYPE)
        for ky in range(0, WINDOW):
            oy = oy_start + ky
            oy_ok = r_ok & (oy >= 0) & (oy < H_out)
            y0, y1, ly0, ly1 = _source_index(oy, H, SCALE, ACC_DTYPE)
            wy = tl.where(y0 == iy, ly0, 0.0) + tl.where(y1 == iy, ly1, 0.0)
            offs = ((g_rows + oy) * W_out)[:, None, None] + ox[None, :, :]
            m = oy_ok[:, None, None] & ox_ok[None, :, :]
            g = tl.load(g_ptr + offs, mask=m, other=0.0).to(ACC_DTYPE)
            acc += wy[:, None] * tl.sum(g * wx[None, :, :], axis=2)
        mask = r_ok[:, None] & ix_ok[None, :]
        tl.store(gx_ptr + (r * W)[:, None] + ix[None, :], acc.to(gx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers

_FWD_TILE = 1024  # output elements per forward program (8 per thread at 4 warps)
_BWD_TILE = 2048  # gathered grad_y elements per backward program per window row (16 per thread)
_MAX_BLOCK_W = 128  # output columns per forward program; wider rows split over programs
_NUM_WARPS = 4
_NUM_STAGES = 1  # no software pipelining: nothing to prefetch into shared memory (see the header)


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _window_pad(scale: int) -> int:
    """1 / scale is exact in binary for powers of two only; otherwise pad the gather window."""
    return 0 if scale & (scale - 1) == 0 else 1


def fwd_blocks(w_out: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_W) of the forward for an output width."""
    block_w = min(_next_pow2(w_out), _MAX_BLOCK_W)
    return max(1, _FWD_TILE // block_w), block_w


def bwd_blocks(w_in: int, scale: int, dtype: torch.dtype = torch.float32) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_W, BLOCK_K) of the backward for an input width, factor and dtype. fp64 tiles are
    a quarter of the size: at a half or the full size some spill 4-8 B on sm_80 (the resource check)."""
    tile = _BWD_TILE // 4 if dtype == torch.float64 else _BWD_TILE
    block_k = _next_pow2(2 * scale + 2 * _window_pad(scale))
    block_w = min(_next_pow2(w_in), max(1, tile // block_k))
    return max(1, tile // (block_w * block_k)), block_w, block_k


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


@on_tensor_device
def bilinear_upsample_forward(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Launch the forward on a contiguous (N, C, H, W) x; arguments already validated.
    Returns y (N, C, H * scale_factor, W * scale_factor), contiguous, in x's dtype."""
    n, c, h, w = x.shape
    s = scale_factor
    y = torch.empty(n, c, h * s, w * s, device=x.device, dtype=x.dtype)
    rows = n * c * h * s
    if y.numel() == 0:
        return y
    block_r, block_w = fwd_blocks(w * s)
    grid = (triton.cdiv(rows, block_r), triton.cdiv(w * s, block_w))
    _bilinear_upsample_fwd_kernel[grid](
        x, y, rows, h, w,
        SCALE=s, ACC_DTYPE=_acc_dtype(x.dtype), BLOCK_R=block_r, BLOCK_W=block_w,
        num_warps=_NUM_WARPS, num_stages=_NUM_STAGES,
    )
    return y


@on_tensor_device
def bilinear_upsample_backward(grad_y: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Launch the gather backward on a contiguous grad_y (N, C, H * s, W * s).
    Returns grad_x (N, C, H, W) in grad_y's dtype."""
    n, c, h_out, w_out = grad_y.shape
    s = scale_factor
    h, w = h_out // s, w_out // s
    grad_x = torch.empty(n, c, h, w, device=grad_y.device, dtype=grad_y.dtype)
    rows = n * c * h
    if grad_x.numel() == 0:
        return grad_x
    block_r, block_w, block_k = bwd_blocks(w, s, grad_y.dtype)
    grid = (triton.cdiv(rows, block_r), triton.cdiv(w, block_w))
    _bilinear_upsample_bwd_kernel[grid](
        grad_y, grad_x, rows, h, w,
        SCALE=s, WIN_PAD=_window_pad(s), ACC_DTYPE=_acc_dtype(grad_y.dtype),
        BLOCK_R=block_r, BLOCK_W=block_w, BLOCK_K=block_k,
        num_warps=_NUM_WARPS, num_stages=_NUM_STAGES,
    )
    return grad_x


# ---------------------------------------------------------------------------------------------
# Autograd

# Opaque custom ops, as upsample_conv2d's: torch.compile keeps them in its graph (the fake impls give
# the shapes), CUDA graphs capture the launches; `triton_op` cannot trace interpreter kernels.


@torch.library.custom_op("autogan_fast::bilinear_upsample_fwd", mutates_args=())
def _fwd_op(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    return bilinear_upsample_forward(x, scale_factor)


@_fwd_op.register_fake
def _(x, scale_factor):
    n, c, h, w = x.shape
    return x.new_empty(n, c, h * scale_factor, w * scale_factor)


@torch.library.custom_op("autogan_fast::bilinear_upsample_bwd", mutates_args=())
def _bwd_op(grad_y: torch.Tensor, scale_factor: int) -> torch.Tensor:
    return bilinear_upsample_backward(grad_y, scale_factor)


@_bwd_op.register_fake
def _(grad_y, scale_factor):
    n, c, h_out, w_out = grad_y.shape
    return grad_y.new_empty(n, c, h_out // scale_factor, w_out // scale_factor)


class _BilinearUpsampleFunction(torch.autograd.Function):
    """The op is linear: the backward needs only the factor, nothing is saved."""

    @staticmethod
    def forward(ctx, x, scale_factor):
        ctx.scale_factor = scale_factor
        return _fwd_op(x.contiguous(), scale_factor)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        return _bwd_op(grad_y.contiguous(), ctx.scale_factor), None


# ---------------------------------------------------------------------------------------------
# Public API and reference

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_MAX_ELEMENTS = 2**31  # int32 offsets in the kernels


def _check_args(x, scale_factor) -> None:
    """The same ValueError from both backends, naming the argument."""
    check_tensor("x", x, ndim=4, contiguous=False)
    if isinstance(scale_factor, bool) or not isinstance(scale_factor, int):
        raise ValueError(f"scale_factor must be an int, got {type(scale_factor).__name__}")
    if scale_factor < 1:
        raise ValueError(f"scale_factor must be >= 1, got {scale_factor}")
    if min(x.shape[1:]) < 1:  # torch's interpolate refuses these too (N = 0 is fine)
        raise ValueError(f"x must have non-empty C, H and W, got shape {tuple(x.shape)}")


def bilinear_upsample(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Bilinear upsampling of x (N, C, H, W) by an integer factor, align_corners=False.

    Equals `F.interpolate(x, size=(H * f, W * f), mode="bilinear", align_corners=False)`
    (`bilinear_upsample_ref`), differentiable in x (first order). float32 / float16 / bfloat16 /
    float64 run the Triton kernels where `use_triton` says so; tensors of 2^31 elements or more run
    the reference (a forced "triton" backend raises instead).
    """
    _check_args(x, scale_factor)
    if use_triton(x):
        largest = x.numel() * scale_factor * scale_factor
        reason = None
        if x.dtype not in _TRITON_DTYPES:
            reason = f"the kernels take {_TRITON_DTYPES}, not {x.dtype}"
        elif largest >= _MAX_ELEMENTS:
            reason = f"the kernels index with int32 and the output would have {largest} >= 2^31 elements"
        if reason is None:
            if keep_fused("bilinear_upsample", (x,), timed_call(_BilinearUpsampleFunction.apply, x, scale_factor),
                          timed_call(bilinear_upsample_ref, x, scale_factor),  # `auto`: the faster, timed per key
                          {"scale_factor": scale_factor, "backward": backward_follows((x,))}):
                return _BilinearUpsampleFunction.apply(x, scale_factor)
        elif get_backend() == "triton":
            raise RuntimeError(f"backend 'triton' was forced but {reason}")
    return bilinear_upsample_ref(x, scale_factor)


def bilinear_upsample_ref(x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """PyTorch's bilinear interpolate to the integer multiple of x's size (the CPU path and the oracle)."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h * scale_factor, w * scale_factor), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# Launch cases for the ahead-of-time resource check (`autogan_fast.kernels.resources`)

# (factor, input widths): the generator's x2 upsample (cell inputs 2-16 px, demo to paper, and 32 for
# a 64 px output), its skip resizes x2 / x4 (from 2-8 px), and x8 (4 -> 32 px)
RESOURCE_SHAPES = ((2, (2, 4, 8, 16, 32)), (4, (2, 4, 8)), (8, (2, 4)))
# fp32 (training) and fp64 (the most registers) at all of them; fp16 / bf16 compute in fp32 like fp32
# and differ only in the loads and stores: at 8 px (the paper's skip source) x2 and x4
RESOURCE_DTYPES = {torch.float32: RESOURCE_SHAPES, torch.float64: RESOURCE_SHAPES,
                   torch.bfloat16: ((2, (8,)), (4, (8,))), torch.float16: ((2, (8,)), (4, (8,)))}


def resource_cases(channels=(64, 128, 256)) -> list:
    """Forward and backward at each (dtype, factor, input width) above: blocks depend on the width,
    factor and dtype only (`channels` only scales the grid), so these are every block configuration
    AutoGAN's shapes reach. Meta tensors: nothing is allocated or run."""
    cases = []
    c = channels[0]
    for dtype, shapes in RESOURCE_DTYPES.items():
        for s, widths in shapes:
            for w in widths:
                def run(dtype=dtype, s=s, w=w):
                    x = torch.empty(64, c, w, w, device="meta", dtype=dtype)
                    bilinear_upsample_forward(x, s)
                    bilinear_upsample_backward(torch.empty(64, c, w * s, w * s, device="meta", dtype=dtype), s)
                cases.append((f"bilinear x{s} {w}->{w * s}px {dtype}", run))
    return cases
