"""Nearest x2 upsample + 3x3 conv (padding 1), with fused pre-activation, bias and residual.

    y = conv2d(interpolate(act(x), scale_factor=2, mode="nearest"), weight, bias, padding=1) + residual
    act(x) = x | relu(x) | x * scale[c] + shift[c] | relu(x * scale[c] + shift[c])

The upsampled tensor is never built. Output pixel (2i+py, 2j+px) of the x2 grid only sees input rows
{i-1, i} (py=0) or {i, i+1} (py=1), and the same for columns, so the 3x3 kernel collapses to one 2x2
kernel per output phase (py, px): rows for py=0 are (w[0], w[1]+w[2]) at (i-1, i), for py=1
(w[0]+w[1], w[2]) at (i, i+1). Four 2x2 convolutions on the small input do 16 instead of 36
multiply-adds per (output pixel of the small grid, C_in, C_out): 2.25x fewer.

What runs where:
- phase weights (torch, `_phase_weights`): one einsum turns the 3x3 weight into (4 phases, 4 taps,
  C_in, C_out), rounded to TF32 once in TF32 mode (rounding inside the loop would put it between
  shared memory and every MMA), cached per weight version and shared by the forward and both
  backward kernels (saved for the backward, never recomputed there).
- forward, `_upsample_conv2d_fwd_kernel`: implicit GEMM, M = N*H*W small-grid pixels, N = C_out,
  K = 4 taps x C_in in ONE runtime loop (pipelined by Triton, nothing unrolled). A program owns one
  row phase py and computes BOTH column phases (two accumulators), so its store writes output columns
  2j and 2j+1 together: whole rows, no stride-2 stores. The pre-activation is applied on the load
  (the zero padding stays zero after it), bias and residual are added in the store.
- grad of the activation, `_upsample_conv2d_bwd_input_kernel`: the transposed four-phase conv as one
  GEMM with K = 8 (py, dy, dx) x C_out x 2 (px); for fixed (py, dy, dx) the two px read adjacent
  grad_y columns, so each grad_y tile reads whole sectors. Chain rule through relu / affine in the
  epilogue: grad_x is stored and per-block partial sums of grad_scale / grad_shift are written
  (summed by torch, deterministic, no atomics).
- grad of the weight, `_upsample_conv2d_bwd_weight_kernel`: per (py, dy, dx) and channel tile, the
  two phase-taps (px = 0, 1) as act(x) shifted^T @ grad_y, reduced over a split of the pixels
  (split-K partials, summed by torch); the activation is recomputed on the load, not saved. The
  programs of channel block 0 and tap (0, 0) also write the split's grad_bias partials (one more pass
  over the grad_y rows they just read, from L2): no separate reduction over grad_y. Torch scatters
  the 2x2 phase-weight gradients back into the 3x3 gradient (one einsum).
- Forward and backward launchers are registered as custom ops (`autogan_fast::upsample_conv2d_fwd`
  / `_bwd`, with fake impls) under a `torch.autograd.Function`, so `torch.compile(fullgraph=True)`
  keeps the op in its graph; CUDA graphs capture the launches directly.

Dot precision follows cuDNN's conv setting (torch's `fp32_precision` API, else `allow_tf32`): "tf32"
(operands rounded to nearest TF32, as cuDNN does) or, with TF32 off, "tf32x3" (three TF32 MMAs,
~fp32 accuracy at tensor-core speed: the exact "ieee" FMA path cannot hold these tiles in 255
registers on sm_80). The interpreter computes "ieee".

Tuned for the AutoGAN generator cells: fp32, C 64-256, spatial 4-32 -> 8-64, batch 64-128. A small
`triton.autotune` set per kernel and precision (keyed on channels, pixels and precision; timed once
per key on first use, so warm up before CUDA-graph capture), every member checked ahead of time for
sm_90 and sm_80 by `autogan_fast.kernels.resources` (shared memory, <= 255 registers, no spills).
The sets were chosen from those resource numbers, before any GPU timing (see "Where it loses").
Flags (pre-activation, bias, residual, which gradients) are runtime arguments: one compiled kernel
per (precision, config), whatever the architecture asks for. Offsets are int32 (64-bit pointer math
costs registers in every tile): tensors of 2^31 elements or more take the reference.

Where it loses, measured (one H200, torch 2.11, triton 3.6; benchmarks/results/nvidia-h200.json): to
cuDNN on the materialized upsample at EVERY AutoGAN shape, 0.17-0.32x forward and 0.23-0.40x forward +
backward (33-41 TFLOP/s against cuDNN's 80-200): the 2.25x fewer multiply-adds do not make up for tiles
that reach a fifth of cuDNN's throughput. `auto` times both once per shape (`autoselect.py`) and runs
the faster; `--kernels torch` (or `use_backend("torch")`) forces the reference. On paper it also loses where
the grad-weight kernel reads every activation 8 times (twice per (py, dy, dx);
L2-resident at these sizes), so at large C x spatial (C >= 512, 64 x 64 inputs) cuDNN on the
materialized upsample can win; batch-1 / tiny-channel calls are launch bound either way (capture
them in CUDA graphs; the custom-op dispatch adds some 10-20 us of CPU per eager call). float16 /
bfloat16 inputs are upcast to fp32 around the kernels (untuned); float64 inputs run the reference.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections import OrderedDict

import torch
import torch.nn.functional as F

from ._dispatch import (
    check_same_device,
    check_tensor,
    get_backend,
    on_tensor_device,
    triton_available,
    triton_interpreter,
    use_triton,
)
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
    def _round_to_tf32(v):
        """fp32 -> nearest TF32 (10-bit mantissa, ties to even), kept in fp32 storage. NaNs pass unchanged:
        CUDA's canonical NaN 0x7FFFFFFF would otherwise carry into the sign bit and round to -0."""
        bits = v.to(tl.int32, bitcast=True)
        rounded = (bits + (((bits >> 13) & 1) + 0xFFF)) & -8192  # -8192 = ~0x1FFF: drop 13 low bits
        bits = tl.where((bits & 0x7FFFFFFF) > 0x7F800000, bits, rounded)
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _dot(a, b, acc, INPUT_PRECISION: tl.constexpr):
        """acc + a @ b, where b was rounded to TF32 on the host (phase weights) or is exact.

        TF32 tensor cores drop the low mantissa bits of fp32 operands (truncation, biased toward zero);
        rounding `a` first makes the error unbiased, as in cuDNN's TF32 convs. `a` is the register
        operand (it was just loaded and activated anyway); `b` goes to the MMA straight from shared
        memory, so it must be rounded before the kernel: see `_phase_weights`.
        """
        if INPUT_PRECISION == "tf32":
            a = _round_to_tf32(a)
        return tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    @triton.jit
    def _tf32_if(v, INPUT_PRECISION: tl.constexpr):
        """Round a loaded tile to TF32 in tf32 mode (the weight-grad kernel's second operand is data)."""
        if INPUT_PRECISION == "tf32":
            v = _round_to_tf32(v)
        return v

    @triton.jit
    def _activate(a, mask, sc, sh, relu, SCALE_AXIS: tl.constexpr):
        """act(a) = relu?(a * sc + sh) on a loaded tile, sc = 1 and sh = 0 without an affine (exact).
        The conv pads act(x) with zeros, so masked entries stay zero after the affine."""
        if SCALE_AXIS == 1:
            a = tl.where(mask, a * sc[None, :] + sh[None, :], 0.0)
        else:
            a = tl.where(mask, a * sc[:, None] + sh[:, None], 0.0)
        if relu:
            a = tl.maximum(a, 0.0, propagate_nan=tl.PropagateNan.ALL)  # relu(NaN) = NaN, as torch's
        return a

    @triton.jit(do_not_specialize=["has_affine", "relu", "has_bias", "has_residual"])
    def _upsample_conv2d_fwd_kernel(
        x_ptr,  # (N, C_in, H, W) input, before the pre-activation
        wp_ptr,  # (4, 4, C_in, C_out) fp32 phase weights [py*2+px, dy*2+dx, c, co], TF32-rounded in tf32 mode
        bias_ptr,  # (C_out,) bias (read only when has_bias)
        scale_ptr,  # (C_in,) affine scale (read only when has_affine)
        shift_ptr,  # (C_in,) affine shift (read only when has_affine)
        res_ptr,  # (N, C_out, 2H, 2W) residual (read only when has_residual)
        y_ptr,  # (N, C_out, 2H, 2W) output
        N,  # batch
        C_in,  # input channels
        H,  # input height
        W,  # input width
        C_out,  # output channels
        has_affine,  # 1: x * scale + shift on the load (runtime flags: no compile per combination)
        relu,  # 1: relu on the load (after the affine)
        has_bias,  # 1: add bias in the store
        has_residual,  # 1: add residual in the store
        INPUT_PRECISION: tl.constexpr,  # "tf32", "tf32x3" (fp32-accurate on GPUs) or "ieee" (interpreter)
        BLOCK_M: tl.constexpr,  # input pixels per program (each gives 2 output pixels: px = 0, 1)
        BLOCK_N: tl.constexpr,  # output channels per program
        BLOCK_K: tl.constexpr,  # input channels per dot
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        py = tl.program_id(2)  # output row phase; both column phases are computed here
        HW = H * W
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < N * HW
        mask_n = offs_n < C_out
        n = offs_m // HW
        i = (offs_m % HW) // W
        j = offs_m % W
        x_img = n * C_in * HW
        w_phase0 = wp_ptr + (py * 2) * 4 * C_in * C_out  # phase (py, px=0); px=1 follows 4 taps later

        acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # column phase px = 0
        acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # column phase px = 1
        n_kb = tl.cdiv(C_in, BLOCK_K)
        for kb in range(0, 4 * n_kb):  # K = 4 taps x C_in, one runtime loop (pipelined, not unrolled)
            tap = kb // n_kb
            offs_k = (kb - tap * n_kb) * BLOCK_K + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C_in
            ii = i + py - 1 + tap // 2
            jj0 = j - 1 + tap % 2  # px = 0 reads columns (j-1, j); px = 1 reads (j, j+1)
            row_ok = mask_m & (ii >= 0) & (ii < H)
            a_rows = (x_img + ii * W)[:, None] + offs_k[None, :] * HW
            m0 = (row_ok & (jj0 >= 0))[:, None] & mask_k[None, :]
            m1 = (row_ok & (jj0 + 1 < W))[:, None] & mask_k[None, :]
            # a runtime flag as a bound (C_in * 0 = 0: load nothing, keep scale 1 and shift 0)
            sc = tl.load(scale_ptr + offs_k, mask=offs_k < C_in * has_affine, other=1.0).to(tl.float32)
            sh = tl.load(shift_ptr + offs_k, mask=offs_k < C_in * has_affine, other=0.0).to(tl.float32)
            a0 = tl.load(x_ptr + a_rows + jj0[:, None], mask=m0, other=0.0).to(tl.float32)
            a1 = tl.load(x_ptr + a_rows + (jj0 + 1)[:, None], mask=m1, other=0.0).to(tl.float32)
            a0 = _activate(a0, m0, sc, sh, relu, 1)
            a1 = _activate(a1, m1, sc, sh, relu, 1)
            w_offs = (tap * C_in + offs_k[:, None]) * C_out + offs_n[None, :]
            w_mask = mask_k[:, None] & mask_n[None, :]
            w0 = tl.load(w_phase0 + w_offs, mask=w_mask, other=0.0)
            w1 = tl.load(w_phase0 + 4 * C_in * C_out + w_offs, mask=w_mask, other=0.0)
            acc0 = _dot(a0, w0, acc0, INPUT_PRECISION)
            acc1 = _dot(a1, w1, acc1, INPUT_PRECISION)

        # Epilogue: both column phases of each output row in one store (x offsets 2j, 2j + 1 adjacent).
        if has_bias:
            b = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
            acc0 += b
            acc1 += b
        acc = tl.join(acc0, acc1)  # (BLOCK_M, BLOCK_N, 2): last axis is px
        px = tl.arange(0, 2)
        y_offs = (n * C_out * 4 * HW + (2 * i + py) * 2 * W + 2 * j)[:, None, None] \
            + offs_n[None, :, None] * 4 * HW + px[None, None, :]
        y_mask = (mask_m[:, None] & mask_n[None, :])[:, :, None] & (px < 2)[None, None, :]
        if has_residual:
            acc += tl.load(res_ptr + y_offs, mask=y_mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + y_offs, acc, mask=y_mask)

    @triton.jit(do_not_specialize=["has_affine", "relu", "need_affine_grad"])
    def _upsample_conv2d_bwd_input_kernel(
        g_ptr,  # (N, C_out, 2H, 2W) grad of y
        wp_ptr,  # (4, 4, C_in, C_out) phase weights [py*2+px, dy*2+dx, c, co], the forward's
        x_ptr,  # (N, C_in, H, W) input (for the relu mask and grad_scale)
        scale_ptr,  # (C_in,) affine scale (read only when has_affine)
        shift_ptr,  # (C_in,) affine shift (read only when has_affine)
        gx_ptr,  # (N, C_in, H, W) grad of x
        gss_ptr,  # (2, cdiv(N*H*W, BLOCK_M), C_in) partial grad_scale, grad_shift per pixel block
        N,  # batch
        C_in,  # input channels
        H,  # input height
        W,  # input width
        C_out,  # output channels
        has_affine,  # 1: the forward applied x * scale + shift
        relu,  # 1: the forward applied relu after the affine
        need_affine_grad,  # 1: write the grad_scale / grad_shift partials
        INPUT_PRECISION: tl.constexpr,  # "tf32", "tf32x3" (fp32-accurate on GPUs) or "ieee" (interpreter)
        BLOCK_M: tl.constexpr,  # input pixels per program
        BLOCK_N: tl.constexpr,  # input channels per program
        BLOCK_K: tl.constexpr,  # output channels per step; the dot's K is 2 x BLOCK_K (both px)
    ):
        # grad_act[n, c, i, j] = sum over (py, dy, dx), px and co of
        #   g[n, co, 2 oi + py, 2 oj + px] * wp[py, px, dy, dx][c, co],  oi = i + 1 - py - dy, oj = j + 1 - px - dx.
        # For fixed (py, dy, dx) the two px read g columns 2j + 2 - 2dx and 2j + 1 - 2dx: adjacent, so
        # one (BLOCK_M, 2 BLOCK_K) tile with K = (co, px) pairs reads both halves of every sector.
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
        g_img = n * C_out * 4 * HW
        kk = tl.arange(0, 2 * BLOCK_K)
        k_co = kk // 2  # output channel of each K entry, within the block
        k_px = kk % 2  # its column phase

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        n_kb = tl.cdiv(C_out, BLOCK_K)
        for kb in range(0, 8 * n_kb):  # K = 8 (py, dy, dx) x C_out x 2 px, one runtime loop
            combo = kb // n_kb
            co = (kb - combo * n_kb) * BLOCK_K + k_co
            mask_co = co < C_out
            py = combo // 4
            dy = (combo // 2) % 2
            dx = combo % 2
            oi = r + 1 - py - dy
            oj = s[:, None] + 1 - k_px[None, :] - dx  # (BLOCK_M, 2 BLOCK_K)
            g_mask = (mask_m & (oi >= 0) & (oi < H))[:, None] & (oj >= 0) & (oj < W) & mask_co[None, :]
            g_offs = (g_img + (2 * oi + py) * 2 * W)[:, None] + 2 * oj + k_px[None, :] \
                + co[None, :] * 4 * HW
            gt = tl.load(g_ptr + g_offs, mask=g_mask, other=0.0).to(tl.float32)
            pt = ((py * 2 + k_px) * 4 + dy * 2 + dx) * C_in  # (2 BLOCK_K,) phase-tap of each K entry
            w_offs = (pt[:, None] + offs_n[None, :]) * C_out + co[:, None]
            w = tl.load(wp_ptr + w_offs, mask=mask_co[:, None] & mask_n[None, :], other=0.0)
            acc = _dot(gt, w, acc, INPUT_PRECISION)

        # chain rule through act(x) = relu?(x * sc + sh): acc is the grad of the activation
        xy_mask = mask_m[:, None] & mask_n[None, :]
        x_offs = (n * C_in * HW + r * W + s)[:, None] + offs_n[None, :] * HW
        x_needed = (offs_n < C_in * (has_affine | relu))[None, :]  # x only matters through relu / affine
        x = tl.load(x_ptr + x_offs, mask=xy_mask & x_needed, other=0.0).to(tl.float32)
        sc = tl.load(scale_ptr + offs_n, mask=offs_n < C_in * has_affine, other=1.0).to(tl.float32)
        sh = tl.load(shift_ptr + offs_n, mask=offs_n < C_in * has_affine, other=0.0).to(tl.float32)
        if relu:
            acc = tl.where(x * sc[None, :] + sh[None, :] > 0.0, acc, 0.0)
        tl.store(gx_ptr + x_offs, acc * sc[None, :], mask=xy_mask)
        if need_affine_grad:
            num_m = tl.num_programs(0)
            tl.store(gss_ptr + pid_m * C_in + offs_n, tl.sum(acc * x, axis=0), mask=mask_n)
            tl.store(gss_ptr + (num_m + pid_m) * C_in + offs_n, tl.sum(acc, axis=0), mask=mask_n)

    @triton.jit(do_not_specialize=["pix_per_split", "has_affine", "relu", "need_bias"])
    def _upsample_conv2d_bwd_weight_kernel(
        x_ptr,  # (N, C_in, H, W) input; the activation is recomputed on the load
        scale_ptr,  # (C_in,) affine scale (read only when has_affine)
        shift_ptr,  # (C_in,) affine shift (read only when has_affine)
        g_ptr,  # (N, C_out, 2H, 2W) grad of y
        gwp_ptr,  # (SPLIT, 4, 4, C_in, C_out) partial phase-weight grads [split, phase, tap, c, co]
        gb_ptr,  # (SPLIT, 2, C_out) partial bias grads [split, py, co] (written only when need_bias)
        N,  # batch
        C_in,  # input channels
        H,  # input height
        W,  # input width
        C_out,  # output channels
        pix_per_split,  # small-grid pixels reduced per program
        has_affine,  # 1: x * scale + shift on the load
        relu,  # 1: relu on the load
        need_bias,  # 1: the (c-block 0, dy = dx = 0) programs also write grad_bias partials
        INPUT_PRECISION: tl.constexpr,  # "tf32", "tf32x3" (fp32-accurate on GPUs) or "ieee" (interpreter)
        BLOCK_M: tl.constexpr,  # input channels per program
        BLOCK_N: tl.constexpr,  # output channels per program
        BLOCK_K: tl.constexpr,  # pixels per dot
    ):
        # One program: a (C_in, C_out) tile of the two phase-taps (py, px = 0, 1, dy, dx), reduced over
        # one split of the pixels. Both px read the same g rows in the same iteration (adjacent columns).
        pid = tl.program_id(0)
        combo = tl.program_id(1)  # py * 4 + dy * 2 + dx
        split = tl.program_id(2)
        num_n = tl.cdiv(C_out, BLOCK_N)
        pid_m = pid // num_n
        pid_n = pid % num_n
        py = combo // 4
        dy = (combo // 2) % 2
        dx = combo % 2
        HW = H * W
        P = N * HW
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = offs_m < C_in
        mask_n = offs_n < C_out
        sc = tl.load(scale_ptr + offs_m, mask=offs_m < C_in * has_affine, other=1.0).to(tl.float32)
        sh = tl.load(shift_ptr + offs_m, mask=offs_m < C_in * has_affine, other=0.0).to(tl.float32)
        x_chan = offs_m[:, None] * HW
        g_chan = offs_n[None, :] * 4 * HW

        acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # px = 0
        acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # px = 1
        start = split * pix_per_split
        end = tl.minimum(start + pix_per_split, P)
        for p0 in range(start, end, BLOCK_K):
            offs_k = p0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < end
            n = offs_k // HW
            i = (offs_k % HW) // W
            j = offs_k % W
            ii = i + py - 1 + dy
            jj0 = j - 1 + dx  # px = 0; px = 1 reads jj0 + 1
            row_ok = mask_k & (ii >= 0) & (ii < H)
            a_cols = (n * C_in * HW + ii * W + jj0)[None, :]
            m0 = mask_m[:, None] & (row_ok & (jj0 >= 0))[None, :]
            m1 = mask_m[:, None] & (row_ok & (jj0 + 1 < W))[None, :]
            a0 = tl.load(x_ptr + x_chan + a_cols, mask=m0, other=0.0).to(tl.float32)
            a1 = tl.load(x_ptr + x_chan + a_cols + 1, mask=m1, other=0.0).to(tl.float32)
            a0 = _activate(a0, m0, sc, sh, relu, 0)
            a1 = _activate(a1, m1, sc, sh, relu, 0)
            g_pix = n * C_out * 4 * HW + (2 * i + py) * 2 * W + 2 * j
            g_mask = mask_k[:, None] & mask_n[None, :]
            g0 = tl.load(g_ptr + g_pix[:, None] + g_chan, mask=g_mask, other=0.0).to(tl.float32)
            g1 = tl.load(g_ptr + g_pix[:, None] + 1 + g_chan, mask=g_mask, other=0.0).to(tl.float32)
            acc0 = _dot(a0, _tf32_if(g0, INPUT_PRECISION), acc0, INPUT_PRECISION)
            acc1 = _dot(a1, _tf32_if(g1, INPUT_PRECISION), acc1, INPUT_PRECISION)

        out_mask = mask_m[:, None] & mask_n[None, :]
        out = gwp_ptr + ((split * 16 + (py * 2) * 4 + dy * 2 + dx) * C_in + offs_m[:, None]) * C_out \
            + offs_n[None, :]
        tl.store(out, acc0, mask=out_mask)
        tl.store(out + 4 * C_in * C_out, acc1, mask=out_mask)  # phase (py, 1) is 4 phase-taps later
        if (need_bias != 0) & (pid_m == 0) & (dy == 0) & (dx == 0):
            # grad_bias partial of this split and row phase: the g rows this program just read, again
            # (from L2) in a light loop, so the main loop carries no extra accumulator registers
            g_sum = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
            for p0 in range(start, end, BLOCK_K):
                offs_k = p0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < end
                n = offs_k // HW
                g_pix = n * C_out * 4 * HW + (2 * ((offs_k % HW) // W) + py) * 2 * W + 2 * (offs_k % W)
                g_mask = mask_k[:, None] & mask_n[None, :]
                g_sum += tl.load(g_ptr + g_pix[:, None] + g_chan, mask=g_mask, other=0.0).to(tl.float32)
                g_sum += tl.load(g_ptr + g_pix[:, None] + 1 + g_chan, mask=g_mask, other=0.0).to(tl.float32)
            tl.store(gb_ptr + (split * 2 + py) * C_out + offs_n, tl.sum(g_sum, axis=0), mask=mask_n)


# ---------------------------------------------------------------------------------------------
# Launchers

_BWD_INPUT_BLOCK_M = 64  # pixels per grad-input program, fixed: the grad_scale partials are per block
_SPLIT_GRANULE = 64  # the grad-weight split-K hands out pixels in multiples of this


def _autotune_configs(rows: list[tuple[int, int, int, int, int]]) -> list:
    """triton.Config list from (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) rows."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for m, n, k, w, s in rows]


# Autotune sets, keyed on channels, pixels and dot precision; one set per precision, chosen by the
# pruner. Every member must pass the ahead-of-time resource check on sm_90 and sm_80
# (`python -m autogan_fast.kernels.resources`, tests/test_kernel_resources.py): shared memory per stage
# is (2 BLOCK_M BLOCK_K + 2 BLOCK_K BLOCK_N) x 4 B in the forward and the grad-weight kernel (an operand
# pair per column phase) and (BLOCK_M + BLOCK_N) x 2 BLOCK_K x 4 B in the grad-input kernel, far below
# the limits; registers are what binds (two accumulators per program; "tf32x3" splits every operand
# into two TF32 halves), so the fp32-accurate sets use smaller tiles. The first row of a set is what
# the interpreter runs (it cannot time configs). Rows: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages).
FWD_CONFIGS = {
    "tf32": _autotune_configs([(64, 64, 16, 8, 2), (64, 64, 32, 8, 2), (64, 128, 32, 8, 2), (32, 64, 32, 4, 2)]),
    "tf32x3": _autotune_configs([(32, 64, 16, 4, 3), (64, 32, 16, 4, 2)]),
}
BWD_INPUT_CONFIGS = {
    "tf32": _autotune_configs([(_BWD_INPUT_BLOCK_M, 64, 16, 4, 3), (_BWD_INPUT_BLOCK_M, 64, 32, 8, 3),
                               (_BWD_INPUT_BLOCK_M, 128, 16, 8, 3)]),
    "tf32x3": _autotune_configs([(_BWD_INPUT_BLOCK_M, 32, 16, 4, 3), (_BWD_INPUT_BLOCK_M, 64, 16, 8, 2)]),
}
BWD_WEIGHT_CONFIGS = {
    "tf32": _autotune_configs([(64, 64, 16, 8, 3), (32, 64, 16, 4, 3), (64, 128, 16, 8, 2)]),
    "tf32x3": _autotune_configs([(32, 64, 16, 4, 3), (64, 32, 16, 4, 2)]),
}
_AUTOTUNE_KEY = ["C_in", "C_out", "N", "H", "W", "INPUT_PRECISION"]
# the grad_scale partials are laid out per block of _BWD_INPUT_BLOCK_M pixels, whatever the config
assert all(c.kwargs["BLOCK_M"] == _BWD_INPUT_BLOCK_M for configs in BWD_INPUT_CONFIGS.values() for c in configs)


def _config_pruner(sets: dict[str, list]):
    """early_config_prune: the set of the call's precision ("ieee", the interpreter's, takes the
    fp32-accurate set); on the interpreter only its first config, since nothing can be timed there."""

    def prune(configs, named_args, **kwargs):
        chosen = sets.get(kwargs.get("INPUT_PRECISION"), sets["tf32x3"])
        return chosen[:1] if triton_interpreter() else chosen

    return prune


def _autotuned(kernel, sets: dict[str, list]):
    return triton.autotune([c for configs in sets.values() for c in configs], key=_AUTOTUNE_KEY,
                           prune_configs_by={"early_config_prune": _config_pruner(sets)})(kernel)


if triton is not None:
    _upsample_conv2d_fwd = _autotuned(_upsample_conv2d_fwd_kernel, FWD_CONFIGS)
    _upsample_conv2d_bwd_input = _autotuned(_upsample_conv2d_bwd_input_kernel, BWD_INPUT_CONFIGS)
    _upsample_conv2d_bwd_weight = _autotuned(_upsample_conv2d_bwd_weight_kernel, BWD_WEIGHT_CONFIGS)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _weight_grad_split(pixels: int, c_in: int, c_out: int, device: torch.device) -> tuple[int, int]:
    """(splits, pixels per split) of the grad-weight kernel's split-K: about `_target_programs` programs
    in all, whatever the channel count; N = 0 still gets one split (it writes a zero gradient)."""
    tiles = _cdiv(c_in, 64) * _cdiv(c_out, 64)  # the first config's tiles: an estimate
    want = _cdiv(_target_programs(device), 8 * tiles)
    split = max(1, min(_cdiv(pixels, _SPLIT_GRANULE), want))
    pix_per_split = max(1, _cdiv(_cdiv(pixels, split), _SPLIT_GRANULE)) * _SPLIT_GRANULE
    return max(1, _cdiv(pixels, pix_per_split)), pix_per_split


_programs_by_device: dict[torch.device, int] = {}  # a plain dict: torch.compile traces it (not functools caches)


def _target_programs(device: torch.device) -> int:
    """Grad-weight split-K aims for about 4 programs per SM; 32 on the interpreter keeps tests quick.
    Cached: every call of the op asks (its int32 bound and the backward launcher)."""
    programs = _programs_by_device.get(device)
    if programs is None:
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8
        programs = _programs_by_device[device] = 4 * sms
    return programs


def _fp32_precision_setting() -> str:
    """cuDNN conv's fp32 mode: torch >= 2.9's `fp32_precision` ("none" defers to the parent setting;
    all "none" means exact fp32), else the legacy `allow_tf32` (reading it raises on new torch once
    the new API was used)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    chain = [getattr(conv, "fp32_precision", None), getattr(torch.backends.cudnn, "fp32_precision", None),
             getattr(torch.backends, "fp32_precision", None)]
    if chain[0] is None:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    return next((p for p in chain if p not in (None, "none")), "ieee")


def _input_precision(t: torch.Tensor) -> str:
    """The dot precision: TF32 on CUDA when the eager conv would use it, else "tf32x3" (three TF32
    MMAs, error ~2^-21 relative, fp32-like at tensor-core speed: the "ieee" FMA path needs 255+
    registers at these tiles on sm_80); exact fp32 ("ieee") on the interpreter."""
    if not t.is_cuda:
        return "ieee"
    return "tf32" if _fp32_precision_setting() == "tf32" else "tf32x3"


def _fold_taps(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Axis `dim` of 3 taps -> (2 phases, 2 taps) at `dim`: phase 0 weighs (w0, w1 + w2), phase 1 (w0 + w1, w2).

    Plain adds, exact in fp32: no matmul, so neither autocast nor TF32 matmul settings touch it."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack((torch.stack((w0, w1 + w2), dim), torch.stack((w0 + w1, w2), dim)), dim)


def _unfold_taps(g: torch.Tensor, phase_dim: int, tap_dim: int) -> torch.Tensor:
    """The adjoint of `_fold_taps`: gradients of (2 phases, 2 taps) -> 3 taps, at `phase_dim` (tap_dim > phase_dim)."""
    def at(p, d):
        return g.select(tap_dim, d).select(phase_dim, p)

    return torch.stack((at(0, 0) + at(1, 0), at(0, 1) + at(1, 0), at(0, 1) + at(1, 1)), phase_dim)


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """fp32 -> nearest TF32 value (10-bit mantissa, ties to even), as the kernels' `_round_to_tf32`."""
    bits = t.contiguous().view(torch.int32)
    rounded = (bits + (((bits >> 13) & 1) + 0xFFF)) & -8192
    return torch.where((bits & 0x7FFFFFFF) > 0x7F800000, bits, rounded).view(torch.float32)  # NaNs kept


_phase_cache: OrderedDict[tuple[int, str], tuple[weakref.ref, tuple, torch.Tensor]] = OrderedDict()
_PHASE_CACHE_SIZE = 64  # weights, not versions: a generator has ~3-6 upsample convs (x2 with an EMA copy)


def invalidate_weight_caches() -> None:
    """Forget every cached phase weight. Call it after code that changes weights in place without bumping
    their autograd version, which the cache is keyed on: a CUDA-graph replay of an optimizer step."""
    _phase_cache.clear()


def _phase_weights(weight: torch.Tensor, precision: str) -> torch.Tensor:
    """(C_out, C_in, 3, 3) -> fp32 (4, 4, C_in, C_out) [py*2+px, dy*2+dx, c, co], rounded to TF32 in
    tf32 mode (once here, not per MMA in the kernels). Shared by the forward and both backward kernels.

    Cached per weight object and precision, valid while the weight's version is unchanged: reward
    scoring calls the generator many times between two optimizer steps; a step (in place) bumps the
    version and the entry is replaced, so the cache holds one tensor per live weight. Never cached
    while a CUDA graph is being captured or torch.compile traces: the captured / traced graph must
    recompute it on every replay, after the optimizer's in-place step.
    """
    key = stamp = None
    # not while capturing or tracing (see above); not on a side stream either (a CUDA-graph warm-up):
    # the entry would be allocated on that stream and read later on another one
    side_stream = weight.is_cuda and torch.cuda.current_stream(weight.device) != torch.cuda.default_stream(
        weight.device)
    if not torch.compiler.is_compiling() and not side_stream and not (
            weight.is_cuda and torch.cuda.is_current_stream_capturing()):
        with contextlib.suppress(RuntimeError):  # inference tensors have no version counter
            key = (id(weight), precision)
            stamp = (weight._version, weight.data_ptr(), tuple(weight.shape), weight.dtype)
    if key is not None:
        hit = _phase_cache.get(key)
        if hit is not None and hit[0]() is weight and hit[1] == stamp:
            _phase_cache.move_to_end(key)
            return hit[2]
    with torch.autocast(weight.device.type, enabled=False):
        folded = _fold_taps(_fold_taps(weight.detach().float(), 2), 4)  # [co, c, py, dy, px, dx]
    c_out, c_in = weight.shape[:2]
    wp = folded.permute(2, 4, 3, 5, 1, 0).reshape(4, 4, c_in, c_out).contiguous()
    if precision == "tf32":
        wp = round_to_tf32(wp)
    if key is not None:
        _phase_cache[key] = (weakref.ref(weight), stamp, wp)
        _phase_cache.move_to_end(key)
        if len(_phase_cache) > _PHASE_CACHE_SIZE:
            _phase_cache.popitem(last=False)
    return wp


@on_tensor_device
def upsample_conv2d_forward(x, wp, bias=None, scale=None, shift=None, relu=False, residual=None,
                            precision="ieee"):
    """Launch the forward kernel on phase weights `wp` (`_phase_weights`); arguments already validated.
    Returns y (N, C_out, 2H, 2W)."""
    n, c_in, h, w = x.shape
    c_out = wp.shape[3]
    y = torch.empty(n, c_out, 2 * h, 2 * w, device=x.device, dtype=x.dtype)
    grid = lambda meta: (triton.cdiv(n * h * w, meta["BLOCK_M"]), triton.cdiv(c_out, meta["BLOCK_N"]), 2)
    _upsample_conv2d_fwd[grid](
        x, wp,
        bias if bias is not None else wp,
        scale if scale is not None else wp,
        shift if shift is not None else wp,
        residual if residual is not None else y,
        y,
        n, c_in, h, w, c_out, int(scale is not None), int(relu), int(bias is not None), int(residual is not None),
        INPUT_PRECISION=precision,
    )
    return y


@on_tensor_device
def upsample_conv2d_backward(
    grad_y, x, wp, scale=None, shift=None, relu=False, precision="ieee", *,
    need_x=True, need_weight=True, need_bias=True, need_affine=True,
):
    """Gradients of `upsample_conv2d` except grad_residual (= grad_y), from the forward's phase weights.

    Returns (grad_x, grad_weight (fp32), grad_bias, grad_scale, grad_shift); an entry is None when not
    asked for (or, for grad_scale / grad_shift, when there is no affine). grad_bias comes out of the
    grad-weight kernel when that runs (no second pass over grad_y).
    """
    grad_y = grad_y.contiguous()
    n, c_in, h, w = x.shape
    c_out = wp.shape[3]
    has_affine = scale is not None
    need_affine = need_affine and has_affine
    grad_x = grad_weight = grad_bias = grad_scale = grad_shift = None
    dummy = grad_y

    if need_x or need_affine:
        grad_x = torch.empty_like(x)
        blocks_m = triton.cdiv(n * h * w, _BWD_INPUT_BLOCK_M)
        gss = torch.empty(2, blocks_m, c_in, device=x.device, dtype=torch.float32) if need_affine else dummy
        grid = lambda meta: (blocks_m, triton.cdiv(c_in, meta["BLOCK_N"]))
        _upsample_conv2d_bwd_input[grid](
            grad_y, wp, x,
            scale if has_affine else dummy,
            shift if has_affine else dummy,
            grad_x, gss,
            n, c_in, h, w, c_out, int(has_affine), int(relu), int(need_affine),
            INPUT_PRECISION=precision,
        )
        if need_affine:
            grad_scale, grad_shift = gss[0].sum(0).to(scale.dtype), gss[1].sum(0).to(shift.dtype)
        if not need_x:
            grad_x = None

    if need_weight:
        split, pix_per_split = _weight_grad_split(n * h * w, c_in, c_out, x.device)
        gwp = torch.empty(split, 4, 4, c_in, c_out, device=x.device, dtype=torch.float32)
        gb = torch.empty(split, 2, c_out, device=x.device, dtype=torch.float32) if need_bias else gwp
        grid = lambda meta: (triton.cdiv(c_in, meta["BLOCK_M"]) * triton.cdiv(c_out, meta["BLOCK_N"]), 8, split)
        _upsample_conv2d_bwd_weight[grid](
            x,
            scale if has_affine else dummy,
            shift if has_affine else dummy,
            grad_y, gwp, gb,
            n, c_in, h, w, c_out, pix_per_split, int(has_affine), int(relu), int(need_bias),
            INPUT_PRECISION=precision,
        )
        gwp = gwp.sum(0).reshape(2, 2, 2, 2, c_in, c_out)  # [py, px, dy, dx, c, co]
        rows = _unfold_taps(gwp, 0, 2)  # [ky, px, dx, c, co]
        grad_weight = _unfold_taps(rows, 1, 2).permute(3, 2, 0, 1)  # [ky, kx, c, co] -> [co, c, ky, kx]
        if need_bias:
            grad_bias = gb.sum((0, 1)).to(grad_y.dtype)
    elif need_bias:
        grad_bias = grad_y.sum((0, 2, 3))
    return grad_x, grad_weight, grad_bias, grad_scale, grad_shift


# ---------------------------------------------------------------------------------------------
# Autograd


# Registered as opaque custom ops so `torch.compile` keeps them in one graph (fake impls give the
# shapes) and CUDA graphs capture them as they are. Not `triton_op`: its tracing goes through
# `wrap_triton`, which cannot trace interpreter kernels, so the CPU tests could not cover it.


@torch.library.custom_op("autogan_fast::upsample_conv2d_fwd", mutates_args=())
def _fwd_op(
    x: torch.Tensor, wp: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None,
    shift: torch.Tensor | None, relu: bool, residual: torch.Tensor | None, precision: str,
) -> torch.Tensor:
    return upsample_conv2d_forward(x, wp, bias, scale, shift, relu, residual, precision)


@_fwd_op.register_fake
def _(x, wp, bias, scale, shift, relu, residual, precision):
    n, _, h, w = x.shape
    return x.new_empty(n, wp.shape[3], 2 * h, 2 * w)


@torch.library.custom_op("autogan_fast::upsample_conv2d_bwd", mutates_args=())
def _bwd_op(
    grad_y: torch.Tensor, x: torch.Tensor, wp: torch.Tensor, scale: torch.Tensor | None,
    shift: torch.Tensor | None, relu: bool, precision: str, need_x: bool, need_weight: bool, need_bias: bool,
    need_affine: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients that were not asked for come back as empty tensors (custom ops cannot return None)."""
    grads = upsample_conv2d_backward(grad_y, x, wp, scale, shift, relu, precision, need_x=need_x,
                                     need_weight=need_weight, need_bias=need_bias, need_affine=need_affine)
    return tuple(g if g is not None else x.new_empty(0) for g in grads)


@_bwd_op.register_fake
def _(grad_y, x, wp, scale, shift, relu, precision, need_x, need_weight, need_bias, need_affine):
    c_in, c_out = wp.shape[2], wp.shape[3]
    affine = need_affine and scale is not None
    return (x.new_empty(x.shape if need_x else 0), wp.new_empty((c_out, c_in, 3, 3) if need_weight else 0),
            grad_y.new_empty(c_out if need_bias else 0),
            x.new_empty(c_in if affine else 0), x.new_empty(c_in if affine else 0))


def _fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is None or t.dtype == torch.float32 else t.float()


class _UpsampleConv2dFunction(torch.autograd.Function):
    """The kernels are fp32 only: float16 / bfloat16 arguments are upcast around them (untuned; AutoGAN
    trains in fp32), which keeps one compiled kernel per precision and autotune config."""

    @staticmethod
    def forward(ctx, x, weight, bias, scale, shift, residual, relu):
        dtype = x.dtype
        x, bias, scale, shift, residual = map(_fp32, (x, bias, scale, shift, residual))
        precision = _input_precision(x)
        wp = _phase_weights(weight, precision)  # one tensor for the forward and both backward kernels
        ctx.save_for_backward(x, wp, scale, shift)
        ctx.relu, ctx.precision, ctx.dtype = relu, precision, dtype
        return _fwd_op(x, wp, bias, scale, shift, relu, residual, precision).to(dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, wp, scale, shift = ctx.saved_tensors
        need = ctx.needs_input_grad
        need_affine = scale is not None and (need[3] or need[4])
        grads = _bwd_op(_fp32(grad_y), x, wp, scale, shift, ctx.relu, ctx.precision, need[0], need[1], need[2],
                        need_affine)
        grad_x, grad_weight, grad_bias, grad_scale, grad_shift = (g.to(ctx.dtype) for g in grads)
        return (grad_x if need[0] else None, grad_weight if need[1] else None,
                grad_bias if need[2] else None, grad_scale if need_affine else None,
                grad_shift if need_affine else None, grad_y if need[5] else None, None)


# ---------------------------------------------------------------------------------------------
# Public API and reference

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_ELEMENTS = 2**31  # int32 offsets in the kernels (64-bit pointer math costs registers in every tile)


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


def _options(relu: bool, tensors) -> dict[str, object]:
    """The `auto` key's fields beyond shapes (which say which optional tensors are given): the activation,
    and whether a backward follows (the timing then includes it)."""
    return {"relu": relu, "backward": backward_follows(tensors)}


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
    Float32 / float16 / bfloat16 run the Triton kernels (fp32; half inputs are upcast around them) where
    `use_triton` says so; float64, and tensors of 2^31 elements or more, run the reference (a forced
    "triton" backend raises instead).
    """
    _check_args(x, weight, bias, scale, shift, relu, residual)
    if use_triton(x, weight, bias, scale, shift, residual):
        n, c_in, h, w = x.shape
        c_out = weight.shape[0]
        splits = _weight_grad_split(n * h * w, c_in, c_out, x.device)[0]
        largest = max(n * c_in * h * w, n * c_out * 4 * h * w, splits * 16 * c_in * c_out)  # x, y, partials
        reason = None
        if x.dtype not in _TRITON_DTYPES:
            reason = f"the kernels take {_TRITON_DTYPES}, not {x.dtype}"
        elif largest >= _MAX_ELEMENTS:
            reason = f"the kernels index with int32 and a tensor would have {largest} >= 2^31 elements"
        if reason is None:
            tensors = (x, weight, bias, scale, shift, residual)
            if keep_fused("upsample_conv2d", tensors, timed_call(_UpsampleConv2dFunction.apply, *tensors, relu),
                          timed_call(upsample_conv2d_ref, x, weight, bias, scale=scale, shift=shift, relu=relu,
                                     residual=residual), _options(relu, tensors)):
                return _UpsampleConv2dFunction.apply(*tensors, relu)
        elif get_backend() == "triton":
            raise RuntimeError(f"backend 'triton' was forced but {reason}")
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


# ---------------------------------------------------------------------------------------------
# Launch cases for the ahead-of-time resource check (`autogan_fast.kernels.resources`)


def resource_cases(channels=(64, 128, 256)) -> list:
    """Every launch the op can make at these channel counts: forward and backward, each dot precision,
    all flags on (flags are runtime arguments: one compile serves every combination),
    every autotune config (the check records them all). Meta tensors: nothing is allocated or run."""
    cases = []
    dtype = torch.float32  # the only dtype the launchers see (see _UpsampleConv2dFunction)
    for c_in, c_out in itertools.product(channels, repeat=2):
        for precision in ("tf32", "tf32x3"):  # what `_input_precision` picks on CUDA
            def run(c_in=c_in, c_out=c_out, precision=precision):
                x = torch.empty(64, c_in, 16, 16, device="meta", dtype=dtype)
                wp = torch.empty(4, 4, c_in, c_out, device="meta")
                vec_in, vec_out = torch.empty(c_in, device="meta", dtype=dtype), torch.empty(c_out, device="meta",
                                                                                             dtype=dtype)
                res = torch.empty(64, c_out, 32, 32, device="meta", dtype=dtype)
                upsample_conv2d_forward(x, wp, vec_out, vec_in, vec_in, True, res, precision)
                upsample_conv2d_backward(res, x, wp, vec_in, vec_in, True, precision)
            cases.append((f"upconv {c_in}->{c_out} {precision}", run))
    return cases
