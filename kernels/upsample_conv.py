"""Nearest x2 upsample + 3x3 conv (padding 1), with fused pre-activation, bias and residual.

    y = conv2d(interpolate(act(x), scale_factor=2, mode="nearest"), weight, bias, padding=1) + residual
    act(x) = x | relu(x) | x * scale[c] + shift[c] | relu(x * scale[c] + shift[c])

The upsampled tensor is never built. Output pixel (2i+py, 2j+px) of the x2 grid only sees input rows
{i-1, i} (py=0) or {i, i+1} (py=1), and the same for columns, so the 3x3 kernel collapses to one 2x2
kernel per output phase (py, px): rows for py=0 are (w[0], w[1]+w[2]) at (i-1, i), for py=1
(w[0]+w[1], w[2]) at (i, i+1). Four 2x2 convolutions on the small input do 16 instead of 36
multiply-adds per (output pixel of the small grid, C_in, C_out): 2.25x fewer.

What runs where:
- every dot product: `tl.dot` on fp32 tiles; in TF32 mode the operands are rounded to TF32 first
  (tensor cores would truncate them, which biases the sums toward zero).
- forward, Triton `_upsample_conv2d_fwd_kernel`: implicit GEMM, M = N*H*W pixels of one phase,
  N = C_out, K = 4 taps x C_in. The pre-activation is applied on the load
  (the zero padding stays zero after it), bias and residual are added in the store.
- grad of the activation, Triton `_upsample_conv2d_bwd_input_kernel`: the transposed four-phase conv
  (each input pixel gathers a 4x4 window of grad_y at stride 2, K = 16 x C_out), with the chain rule
  through relu / affine in the epilogue: grad_x is stored and per-block partial sums of grad_scale /
  grad_shift are written (summed by torch, deterministic, no atomics).
- grad of the weight, Triton `_upsample_conv2d_bwd_weight_kernel`: for each of the 16 (phase, tap)
  pairs, act(x) shifted^T @ grad_y phase, reduced over N*H*W with split-K partials; the activation is
  recomputed on the load, not saved. Torch then sums the splits and scatters the 2x2 phase weights
  back into the 3x3 gradient (one einsum on a (16, C_in, C_out) tensor).
- torch: the phase weights (one einsum on the weight), grad_bias = grad_y.sum((0, 2, 3)),
  grad_residual = grad_y. No cuDNN conv runs in the backward; nothing of size (2H, 2W, C_in) exists.
- Forward and backward launchers are registered as custom ops (`autogan_fast::upsample_conv2d_fwd`
  / `_bwd`, with fake impls) under a `torch.autograd.Function`, so `torch.compile(fullgraph=True)`
  keeps the op in its graph; CUDA graphs capture the launches directly.

Tuned for the AutoGAN generator cells: fp32 with TF32 dot products (when
`torch.backends.cudnn.allow_tf32`, the flag the eager cuDNN conv follows; else "ieee"), C 64-256,
spatial 4-32 -> 8-64, batch 64-128; blocks 64 x 64 x 32, no autotuning (an architecture search pays
for every compile). Where it loses: the grad-weight kernel reads every activation 16 times (L2
resident at these sizes) and the phase stores are stride-2 in W, so at large C x spatial (C >= 512,
64 x 64 inputs) cuDNN on the materialized upsample can win; batch-1 / tiny-channel calls are launch
bound either way (capture them in CUDA graphs; the custom-op dispatch adds some 10-20 us of CPU per
eager call). float16 / bfloat16 inputs run the kernels with fp32 accumulation (untuned); float64
inputs run the reference.

Per-call sizes are plain int arguments (never `tl.constexpr`); only block sizes, the feature flags
HAS_BIAS / HAS_AFFINE / RELU / HAS_RESIDUAL / NEED_AFFINE_GRAD and the dot precision specialize.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ._dispatch import check_same_device, check_tensor, get_backend, triton_available, use_triton

if triton_available():
    import triton
    import triton.language as tl
else:  # pragma: no cover - non-Linux: the reference runs, see `use_triton`
    triton = None


# ---------------------------------------------------------------------------------------------
# Kernels

if triton is not None:

    @triton.jit
    def _round_to_tf32(v):
        """fp32 -> nearest TF32 (10-bit mantissa, ties to even), kept in fp32 storage."""
        bits = v.to(tl.int32, bitcast=True)
        bits = (bits + (((bits >> 13) & 1) + 0xFFF)) & -8192  # -8192 = ~0x1FFF: drop 13 low bits
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _dot(a, b, acc, INPUT_PRECISION: tl.constexpr):
        """acc + a @ b. TF32 tensor cores drop the low mantissa bits of fp32 operands (truncation,
        biased toward zero); rounding first makes the error unbiased, as in cuDNN's TF32 convs."""
        if INPUT_PRECISION == "tf32":
            a = _round_to_tf32(a)
            b = _round_to_tf32(b)
        return tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    @triton.jit
    def _upsample_conv2d_fwd_kernel(
        x_ptr,  # (N, C_in, H, W) input, before the pre-activation
        wp_ptr,  # (4, 4, C_in, C_out) phase weights [py*2+px, dy*2+dx, c, co]
        bias_ptr,  # (C_out,) bias (unused unless HAS_BIAS)
        scale_ptr,  # (C_in,) affine scale (unused unless HAS_AFFINE)
        shift_ptr,  # (C_in,) affine shift (unused unless HAS_AFFINE)
        res_ptr,  # (N, C_out, 2H, 2W) residual (unused unless HAS_RESIDUAL)
        y_ptr,  # (N, C_out, 2H, 2W) output
        N,  # batch
        C_in,  # input channels
        H,  # input height
        W,  # input width
        C_out,  # output channels
        HAS_BIAS: tl.constexpr,  # add bias in the store
        HAS_AFFINE: tl.constexpr,  # x * scale + shift on the load
        RELU: tl.constexpr,  # relu on the load (after the affine)
        HAS_RESIDUAL: tl.constexpr,  # add residual in the store
        INPUT_PRECISION: tl.constexpr,  # "tf32" or "ieee"
        BLOCK_M: tl.constexpr,  # pixels of one phase per program
        BLOCK_N: tl.constexpr,  # output channels per program
        BLOCK_K: tl.constexpr,  # input channels per dot
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        phase = tl.program_id(2)
        py = phase // 2
        px = phase % 2
        HW = H * W
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < N * HW
        mask_n = offs_n < C_out
        n = offs_m // HW
        i = (offs_m % HW) // W
        j = offs_m % W
        x_img = n.to(tl.int64) * C_in * HW

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for c0 in range(0, C_in, BLOCK_K):
            offs_k = c0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C_in
            if HAS_AFFINE:
                sc = tl.load(scale_ptr + offs_k, mask=mask_k, other=0.0).to(tl.float32)
                sh = tl.load(shift_ptr + offs_k, mask=mask_k, other=0.0).to(tl.float32)
            for t in tl.static_range(4):
                ii = i + py - 1 + t // 2
                jj = j + px - 1 + t % 2
                valid = mask_m & (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
                a_mask = valid[:, None] & mask_k[None, :]
                a_ptrs = x_ptr + (x_img + ii * W + jj)[:, None] + offs_k[None, :].to(tl.int64) * HW
                a = tl.load(a_ptrs, mask=a_mask, other=0.0).to(tl.float32)
                if HAS_AFFINE:
                    # the conv pads act(x) with zeros, so padding must stay zero after the affine
                    a = tl.where(a_mask, a * sc[None, :] + sh[None, :], 0.0)
                if RELU:
                    a = tl.maximum(a, 0.0)
                w_ptrs = wp_ptr + ((phase * 4 + t) * C_in + offs_k[:, None]) * C_out + offs_n[None, :]
                w = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
                acc = _dot(a, w, acc, INPUT_PRECISION)

        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        oy = 2 * i + py
        ox = 2 * j + px
        y_offs = (n.to(tl.int64) * C_out * 4 * HW + oy * 2 * W + ox)[:, None] \
            + offs_n[None, :].to(tl.int64) * 4 * HW
        y_mask = mask_m[:, None] & mask_n[None, :]
        if HAS_RESIDUAL:
            acc += tl.load(res_ptr + y_offs, mask=y_mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + y_offs, acc, mask=y_mask)

    @triton.jit
    def _upsample_conv2d_bwd_input_kernel(
        g_ptr,  # (N, C_out, 2H, 2W) grad of y
        wt_ptr,  # (4, 4, C_out, C_in) phase weights [py*2+px, dy*2+dx, co, c]
        x_ptr,  # (N, C_in, H, W) input (for the relu mask and grad_scale)
        scale_ptr,  # (C_in,) affine scale (unused unless HAS_AFFINE)
        shift_ptr,  # (C_in,) affine shift (unused unless HAS_AFFINE)
        gx_ptr,  # (N, C_in, H, W) grad of x
        gss_ptr,  # (2, cdiv(N*H*W, BLOCK_M), C_in) partial grad_scale, grad_shift per pixel block
        N,  # batch
        C_in,  # input channels
        H,  # input height
        W,  # input width
        C_out,  # output channels
        HAS_AFFINE: tl.constexpr,  # the forward applied x * scale + shift
        RELU: tl.constexpr,  # the forward applied relu after the affine
        NEED_AFFINE_GRAD: tl.constexpr,  # write the grad_scale / grad_shift partials
        INPUT_PRECISION: tl.constexpr,  # "tf32" or "ieee"
        BLOCK_M: tl.constexpr,  # input pixels per program
        BLOCK_N: tl.constexpr,  # input channels per program
        BLOCK_K: tl.constexpr,  # output channels per dot
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        HW = H * W
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < N * HW
        mask_n = offs_n < C_in
        n = offs_m // HW
        r = (offs_m % HW) // W
        s = offs_m % W
        g_img = n.to(tl.int64) * C_out * 4 * HW

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for c0 in range(0, C_out, BLOCK_K):
            offs_k = c0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C_out
            g_chan = offs_k[None, :].to(tl.int64) * 4 * HW
            # input row r feeds output rows 2r-1+ty, ty = 0..3, through phase py = 1 - ty % 2 and
            # tap dy = 1 - ty // 2 (weights w[2], w[1]+w[2], w[0]+w[1], w[0]); columns alike.
            for ty in tl.static_range(4):
                oy = 2 * r - 1 + ty
                for tx in tl.static_range(4):
                    ox = 2 * s - 1 + tx
                    valid = mask_m & (oy >= 0) & (oy < 2 * H) & (ox >= 0) & (ox < 2 * W)
                    g_ptrs = g_ptr + (g_img + oy * 2 * W + ox)[:, None] + g_chan
                    gt = tl.load(g_ptrs, mask=valid[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
                    pt = ((1 - ty % 2) * 2 + (1 - tx % 2)) * 4 + (1 - ty // 2) * 2 + (1 - tx // 2)
                    w_ptrs = wt_ptr + (pt * C_out + offs_k[:, None]) * C_in + offs_n[None, :]
                    w = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
                    acc = _dot(gt, w, acc, INPUT_PRECISION)

        # chain rule through act(x): acc is the grad of the activation
        xy_mask = mask_m[:, None] & mask_n[None, :]
        x_offs = (n.to(tl.int64) * C_in * HW + r * W + s)[:, None] + offs_n[None, :].to(tl.int64) * HW
        if HAS_AFFINE:
            x = tl.load(x_ptr + x_offs, mask=xy_mask, other=0.0).to(tl.float32)
            sc = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
            if RELU:
                sh = tl.load(shift_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
                acc = tl.where(x * sc[None, :] + sh[None, :] > 0.0, acc, 0.0)
            tl.store(gx_ptr + x_offs, acc * sc[None, :], mask=xy_mask)
            if NEED_AFFINE_GRAD:
                num_m = tl.num_programs(0)
                tl.store(gss_ptr + pid_m * C_in + offs_n, tl.sum(acc * x, axis=0), mask=mask_n)
                tl.store(gss_ptr + (num_m + pid_m) * C_in + offs_n, tl.sum(acc, axis=0), mask=mask_n)
        else:
            if RELU:
                x = tl.load(x_ptr + x_offs, mask=xy_mask, other=0.0).to(tl.float32)
                acc = tl.where(x > 0.0, acc, 0.0)
            tl.store(gx_ptr + x_offs, acc, mask=xy_mask)

    @triton.jit
    def _upsample_conv2d_bwd_weight_kernel(
        x_ptr,  # (N, C_in, H, W) input; the activation is recomputed on the load
        scale_ptr,  # (C_in,) affine scale (unused unless HAS_AFFINE)
        shift_ptr,  # (C_in,) affine shift (unused unless HAS_AFFINE)
        g_ptr,  # (N, C_out, 2H, 2W) grad of y
        gwp_ptr,  # (SPLIT, 4, 4, C_in, C_out) partial phase-weight grads [split, phase, tap, c, co]
        N,  # batch
        C_in,  # input channels
        H,  # input height
        W,  # input width
        C_out,  # output channels
        pix_per_split,  # pixels of one phase reduced per program (a multiple of BLOCK_K)
        HAS_AFFINE: tl.constexpr,  # x * scale + shift on the load
        RELU: tl.constexpr,  # relu on the load
        INPUT_PRECISION: tl.constexpr,  # "tf32" or "ieee"
        BLOCK_M: tl.constexpr,  # input channels per program
        BLOCK_N: tl.constexpr,  # output channels per program
        BLOCK_K: tl.constexpr,  # pixels per dot
    ):
        pid = tl.program_id(0)
        pt = tl.program_id(1)  # phase * 4 + tap
        split = tl.program_id(2)
        num_n = tl.cdiv(C_out, BLOCK_N)
        pid_m = pid // num_n
        pid_n = pid % num_n
        phase = pt // 4
        tap = pt % 4
        oy0 = phase // 2  # py
        ox0 = phase % 2  # px
        dy = oy0 - 1 + tap // 2  # input row offset of this tap
        dx = ox0 - 1 + tap % 2
        HW = H * W
        P = N * HW
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < C_in
        mask_n = offs_n < C_out
        if HAS_AFFINE:
            sc = tl.load(scale_ptr + offs_m, mask=mask_m, other=0.0).to(tl.float32)
            sh = tl.load(shift_ptr + offs_m, mask=mask_m, other=0.0).to(tl.float32)
        x_chan = offs_m[:, None].to(tl.int64) * HW
        g_chan = offs_n[None, :].to(tl.int64) * 4 * HW

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        start = split * pix_per_split
        end = tl.minimum(start + pix_per_split, P)
        for p0 in range(start, end, BLOCK_K):
            offs_k = p0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < end
            n = offs_k // HW
            i = (offs_k % HW) // W
            j = offs_k % W
            ii = i + dy
            jj = j + dx
            valid = mask_k & (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
            a_mask = mask_m[:, None] & valid[None, :]
            a_ptrs = x_ptr + x_chan + (n.to(tl.int64) * C_in * HW + ii * W + jj)[None, :]
            a = tl.load(a_ptrs, mask=a_mask, other=0.0).to(tl.float32)
            if HAS_AFFINE:
                a = tl.where(a_mask, a * sc[:, None] + sh[:, None], 0.0)
            if RELU:
                a = tl.maximum(a, 0.0)
            g_pix = n.to(tl.int64) * C_out * 4 * HW + (2 * i + oy0) * 2 * W + 2 * j + ox0
            g_ptrs = g_ptr + g_pix[:, None] + g_chan
            gt = tl.load(g_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
            acc = _dot(a, gt, acc, INPUT_PRECISION)

        out = gwp_ptr + ((split * 16 + pt) * C_in + offs_m[:, None]).to(tl.int64) * C_out + offs_n[None, :]
        tl.store(out, acc, mask=mask_m[:, None] & mask_n[None, :])


# ---------------------------------------------------------------------------------------------
# Launchers

_BLOCK_PIX = 64  # pixels per program in the forward / grad-input kernels
_BLOCK_PIX_K = 32  # pixels per dot in the grad-weight kernel
_MAX_BLOCK_C = 64  # channel block; tl.dot needs >= 16


def _channel_block(c: int) -> int:
    return max(16, min(_MAX_BLOCK_C, triton.next_power_of_2(c)))


@functools.cache
def _target_programs(device: torch.device) -> int:
    """Grad-weight split-K aims for about 4 programs per SM; 32 on the interpreter keeps tests quick."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 32


def _input_precision(t: torch.Tensor) -> str:
    """TF32 on CUDA when the eager conv would use it; exact fp32 on the interpreter."""
    if t.is_cuda and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


@functools.cache
def _phase_map(device: torch.device) -> torch.Tensor:
    """(3, 2, 2) 0/1 map M[k, p, d]: 3x3 tap k contributes to tap d of phase p (rows or columns).

    Cached per device, so calls after the first (eager warm-up) launch nothing to build it.
    """
    m = torch.zeros(3, 2, 2)
    m[0, 0, 0] = 1  # p=0: taps (i-1, i) weigh (w0, w1 + w2)
    m[1, 0, 1] = m[2, 0, 1] = 1
    m[0, 1, 0] = m[1, 1, 0] = 1  # p=1: taps (i, i+1) weigh (w0 + w1, w2)
    m[2, 1, 1] = 1
    return m.to(device)


def _phase_weights(weight: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> (4, 4, C_in, C_out) [py*2+px, dy*2+dx, c, co] (or co, c when transposed)."""
    m = _phase_map(weight.device)
    spec = "apd,bqe,ocab->pqdeoc" if transpose else "apd,bqe,ocab->pqdeco"
    wp = torch.einsum(spec, m, m, weight)
    return wp.reshape(4, 4, *wp.shape[-2:]).contiguous()


def upsample_conv2d_forward(x, weight, bias=None, scale=None, shift=None, relu=False, residual=None):
    """Launch the forward kernel; arguments already validated. Returns y (N, C_out, 2H, 2W)."""
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    y = torch.empty(n, c_out, 2 * h, 2 * w, device=x.device, dtype=x.dtype)
    wp = _phase_weights(weight.float())
    block_n, block_k = _channel_block(c_out), _channel_block(c_in)
    grid = (triton.cdiv(n * h * w, _BLOCK_PIX), triton.cdiv(c_out, block_n), 4)
    _upsample_conv2d_fwd_kernel[grid](
        x, wp,
        bias if bias is not None else wp,
        scale if scale is not None else wp,
        shift if shift is not None else wp,
        residual if residual is not None else y,
        y,
        n, c_in, h, w, c_out,
        HAS_BIAS=bias is not None, HAS_AFFINE=scale is not None, RELU=bool(relu),
        HAS_RESIDUAL=residual is not None, INPUT_PRECISION=_input_precision(x),
        BLOCK_M=_BLOCK_PIX, BLOCK_N=block_n, BLOCK_K=block_k,
    )
    return y


def upsample_conv2d_backward(
    grad_y, x, weight, scale=None, shift=None, relu=False, *,
    need_x=True, need_weight=True, need_bias=True, need_affine=True,
):
    """Gradients of `upsample_conv2d` except grad_residual (= grad_y).

    Returns (grad_x, grad_weight, grad_bias, grad_scale, grad_shift); an entry is None when not asked
    for (or, for grad_scale / grad_shift, when there is no affine).
    """
    grad_y = grad_y.contiguous()
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    precision = _input_precision(x)
    has_affine = scale is not None
    need_affine = need_affine and has_affine
    grad_x = grad_weight = grad_bias = grad_scale = grad_shift = None
    dummy = grad_y

    if need_x or need_affine:
        grad_x = torch.empty_like(x)
        wt = _phase_weights(weight.float(), transpose=True)
        block_n, block_k = _channel_block(c_in), _channel_block(c_out)
        grid = (triton.cdiv(n * h * w, _BLOCK_PIX), triton.cdiv(c_in, block_n))
        gss = torch.empty(2, grid[0], c_in, device=x.device, dtype=torch.float32) if need_affine else dummy
        _upsample_conv2d_bwd_input_kernel[grid](
            grad_y, wt, x,
            scale if has_affine else dummy,
            shift if has_affine else dummy,
            grad_x, gss,
            n, c_in, h, w, c_out,
            HAS_AFFINE=has_affine, RELU=bool(relu), NEED_AFFINE_GRAD=need_affine,
            INPUT_PRECISION=precision, BLOCK_M=_BLOCK_PIX, BLOCK_N=block_n, BLOCK_K=block_k,
        )
        if need_affine:
            grad_scale, grad_shift = gss[0].sum(0).to(scale.dtype), gss[1].sum(0).to(shift.dtype)
        if not need_x:
            grad_x = None

    if need_weight:
        block_m, block_n = _channel_block(c_in), _channel_block(c_out)
        tiles = triton.cdiv(c_in, block_m) * triton.cdiv(c_out, block_n)
        pixels = n * h * w
        want = triton.cdiv(_target_programs(x.device), 16 * tiles)
        split = max(1, min(triton.cdiv(pixels, _BLOCK_PIX_K), want))
        pix_per_split = max(1, triton.cdiv(triton.cdiv(pixels, split), _BLOCK_PIX_K)) * _BLOCK_PIX_K
        split = max(1, triton.cdiv(pixels, pix_per_split))  # N = 0 still writes a zero gradient
        gwp = torch.empty(split, 4, 4, c_in, c_out, device=x.device, dtype=torch.float32)
        _upsample_conv2d_bwd_weight_kernel[(tiles, 16, split)](
            x,
            scale if has_affine else dummy,
            shift if has_affine else dummy,
            grad_y, gwp,
            n, c_in, h, w, c_out, pix_per_split,
            HAS_AFFINE=has_affine, RELU=bool(relu), INPUT_PRECISION=precision,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=_BLOCK_PIX_K,
        )
        m = _phase_map(x.device)
        gwp = gwp.sum(0).reshape(2, 2, 2, 2, c_in, c_out)  # [py, px, dy, dx, c, co]
        grad_weight = torch.einsum("apd,bqe,pqdeco->ocab", m, m, gwp).to(weight.dtype)

    if need_bias:
        grad_bias = grad_y.sum((0, 2, 3))
    return grad_x, grad_weight, grad_bias, grad_scale, grad_shift


# ---------------------------------------------------------------------------------------------
# Autograd


# Registered as opaque custom ops so `torch.compile` keeps them in one graph (fake impls give the
# shapes) and CUDA graphs capture them as they are. Not `triton_op`: its tracing goes through
# `wrap_triton`, which cannot trace interpreter kernels, so the CPU tests could not cover it.


@torch.library.custom_op("autogan_fast::upsample_conv2d_fwd", mutates_args=())
def _fwd_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None,
    shift: torch.Tensor | None, relu: bool, residual: torch.Tensor | None,
) -> torch.Tensor:
    return upsample_conv2d_forward(x, weight, bias, scale, shift, relu, residual)


@_fwd_op.register_fake
def _(x, weight, bias, scale, shift, relu, residual):
    n, _, h, w = x.shape
    return x.new_empty(n, weight.shape[0], 2 * h, 2 * w)


@torch.library.custom_op("autogan_fast::upsample_conv2d_bwd", mutates_args=())
def _bwd_op(
    grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None,
    shift: torch.Tensor | None, relu: bool, need_x: bool, need_weight: bool, need_bias: bool,
    need_affine: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients that were not asked for come back as empty tensors (custom ops cannot return None)."""
    grads = upsample_conv2d_backward(grad_y, x, weight, scale, shift, relu, need_x=need_x,
                                     need_weight=need_weight, need_bias=need_bias, need_affine=need_affine)
    return tuple(g if g is not None else x.new_empty(0) for g in grads)


@_bwd_op.register_fake
def _(grad_y, x, weight, scale, shift, relu, need_x, need_weight, need_bias, need_affine):
    affine = need_affine and scale is not None
    return (x.new_empty(x.shape if need_x else 0), weight.new_empty(weight.shape if need_weight else 0),
            weight.new_empty(weight.shape[0] if need_bias else 0),
            x.new_empty(x.shape[1] if affine else 0), x.new_empty(x.shape[1] if affine else 0))


class _UpsampleConv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, scale, shift, residual, relu):
        ctx.save_for_backward(x, weight, scale, shift)
        ctx.relu = relu
        return _fwd_op(x, weight, bias, scale, shift, relu, residual)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, weight, scale, shift = ctx.saved_tensors
        need = ctx.needs_input_grad
        need_affine = scale is not None and (need[3] or need[4])
        grad_x, grad_weight, grad_bias, grad_scale, grad_shift = _bwd_op(
            grad_y, x, weight, scale, shift, ctx.relu, need[0], need[1], need[2], need_affine)
        return (grad_x if need[0] else None, grad_weight if need[1] else None,
                grad_bias if need[2] else None, grad_scale if need_affine else None,
                grad_shift if need_affine else None, grad_y if need[5] else None, None)


# ---------------------------------------------------------------------------------------------
# Public API and reference

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_args(x, weight, bias, scale, shift, relu, residual) -> None:
    """The same ValueError from both backends, naming the argument."""
    check_tensor("x", x, ndim=4)
    check_tensor("weight", weight, ndim=4)
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    if tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"weight must be (C_out, C_in, 3, 3), got shape {tuple(weight.shape)}")
    if weight.shape[1] != c_in:
        raise ValueError(f"weight has C_in={weight.shape[1]} but x has {c_in} channels")
    if bias is not None:
        check_tensor("bias", bias, ndim=1)
        if bias.shape[0] != c_out:
            raise ValueError(f"bias must have C_out={c_out} entries, got {bias.shape[0]}")
    if (scale is None) != (shift is None):
        given, missing = ("scale", "shift") if shift is None else ("shift", "scale")
        raise ValueError(f"{given} was given without {missing}: pass both or neither")
    for name, t in (("scale", scale), ("shift", shift)):
        if t is not None:
            check_tensor(name, t, ndim=1)
            if t.shape[0] != c_in:
                raise ValueError(f"{name} must have C_in={c_in} entries, got {t.shape[0]}")
    if residual is not None:
        check_tensor("residual", residual, ndim=4)
        if tuple(residual.shape) != (n, c_out, 2 * h, 2 * w):
            raise ValueError(f"residual must have shape {(n, c_out, 2 * h, 2 * w)}, "
                             f"got {tuple(residual.shape)}")
    if not isinstance(relu, bool):
        raise ValueError(f"relu must be a bool, got {type(relu).__name__}")
    for name, t in (("weight", weight), ("bias", bias), ("scale", scale), ("shift", shift),
                    ("residual", residual)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but x has {x.dtype}")
    check_same_device(x=x, weight=weight, bias=bias, scale=scale, shift=shift, residual=residual)


def upsample_conv2d(x, weight, bias=None, *, scale=None, shift=None, relu=False, residual=None):
    """y = conv2d(up2(act(x)), weight, bias, padding=1) + residual, without building up2(act(x)).

    Args:
        x: (N, C_in, H, W) input, contiguous.
        weight: (C_out, C_in, 3, 3) conv weight.
        bias: (C_out,) or None.
        scale, shift: (C_in,) each, or both None: act(x) = x * scale + shift (a folded BatchNorm).
        relu: apply relu after the affine (or to x when there is no affine).
        residual: (N, C_out, 2H, 2W) added to the output, or None.
    Returns:
        (N, C_out, 2H, 2W), differentiable in every tensor argument (first order).
    Float32 / float16 / bfloat16 run the Triton kernels (fp32 accumulation) where `use_triton` says so;
    float64 runs the reference (a forced "triton" backend raises instead).
    """
    _check_args(x, weight, bias, scale, shift, relu, residual)
    if use_triton(x, weight, bias, scale, shift, residual):
        if x.dtype in _TRITON_DTYPES:
            return _UpsampleConv2dFunction.apply(x, weight, bias, scale, shift, residual, relu)
        if get_backend() == "triton":
            raise RuntimeError(f"backend 'triton' was forced but the kernels take {_TRITON_DTYPES}, "
                               f"not {x.dtype}")
    return upsample_conv2d_ref(x, weight, bias, scale=scale, shift=shift, relu=relu, residual=residual)


def upsample_conv2d_ref(x, weight, bias=None, *, scale=None, shift=None, relu=False, residual=None):
    """Literal reference: act(x), nearest x2 interpolate, 3x3 conv (padding 1), + residual."""
    a = x
    if scale is not None:
        a = a * scale[None, :, None, None] + shift[None, :, None, None]
    if relu:
        a = F.relu(a)
    y = F.conv2d(F.interpolate(a, scale_factor=2, mode="nearest"), weight, bias, padding=1)
    if residual is not None:
        y = y + residual
    return y
