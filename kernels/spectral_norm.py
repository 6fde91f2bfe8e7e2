"""Spectral normalization of a group of layers in a few launches: power iteration, sigma and W / sigma.

What is fused. `torch.nn.utils.spectral_norm` runs about 13 small kernels per layer per forward (two
mat-vecs, two norms, two divides, two clones, a dot, the final divide); an AutoGAN discriminator has
11 SN layers and is called 2-3 times per step. Here the whole group takes 2 n + 1 forward launches
(n = `n_power_iterations`; 2 in eval) and 2 backward launches, each spread over the GPU:
1. `_spectral_norm_fwd_vt_kernel`, one program per (layer, block of BLOCK_K columns): v_raw = W^T u
   over all rows of its columns (no partial sums, no atomics). From the second power step on, u is
   t / max(||t||, eps) of the previous step, normalized on the load.
2. `_spectral_norm_fwd_wv_kernel`, one program per (layer, block of BLOCK_H rows): every program
   reduces ||v_raw|| itself (same order in each: identical results), v = v_raw / max(||v_raw||, eps)
   (the layer's first program writes v in place and the packed copy the backward uses), and
   t = W[rows] v. In eval v is the stored buffer, unchanged.
3. `_spectral_norm_fwd_scale_kernel`, one program per (layer, chunk of W's elements): u = t / max(
   ||t||, eps) (eval: the stored u), sigma = u . t = u . (W v) as torch computes it, the layer's first
   program writes u in place, its copy and sigma; every program writes its chunk of W_sn = W / sigma.
Backward, per (layer, chunk): partial <g, W_sn> per program (`_spectral_norm_bwd_dot_kernel`), then
each program sums its layer's partials in a fixed order and writes dL/dW = (g - <g, W_sn> u v^T) /
sigma (`_spectral_norm_bwd_kernel`). u, v are constants of the backward, as in torch. Everything is
deterministic (no atomics). Divisions and square roots are IEEE-rounded (`div_rn`, `sqrt_rn`), so
results differ from torch's only by summation order.

The plan. Layers are found through tables a `_Plan` builds once per group of tensors and caches (LRU,
256): int32 rows (H, K, packed offsets) and int32 program tables (layer, start) for the three kinds
of programs, and an int64 table of the W, u, v addresses. Argument checks (dims, lengths, dtypes,
contiguity, one device, no buffer listed twice) run when a plan is built; the cache key holds every
tensor's address, shape, strides, dtype and device, so a hit describes tensors that passed them, and
a call costs the key (about 15 us of Python for 11 layers, measured on a CPU; a build with its checks
about 100 us), one allocation and the launches. Elementwise programs claim 16-byte
alignment (`tl.multiple_of`, for 128-bit accesses) only in the ALIGNED variant, which a plan picks
when it verified every W address is 16-byte aligned and every H * K a multiple of 4; the mat-vec
tiles (row stride K, e.g. 27 for the RGB stem) claim nothing.

Tuned on paper (then measured on one H200: 3.7-7.4x eager forward, 4.0x forward + backward), for
fp32 layers of 1..256 rows and K = in*kh*kw up to 128*9 = 1152 (the AutoGAN / SN-GAN discriminators):
mat-vec tiles BLOCK_H x BLOCK_K of up to 32 x 128
fp32 (powers of two of the largest layer, clamped: the only constexprs, with ALIGNED, so new layer
sizes reuse the compiled kernels); elementwise chunks of 1024-element blocks sized so the group makes
about 4 programs per SM. For AutoGAN's D at ch = 64 / 128 / 256 (11 layers) the three forward
phases launch 39 / 67 / 132, 21 / 41 / 81 and 260 / 516 / 515 programs (the backward kernels as many
as the last), where one program per layer used 11 of 132 SMs.

Where it loses. Launch bound: 3 forward + 2 backward launches (each with Triton's host-side launch
cost, unmeasured here) for a few MB of traffic; capture the step in a CUDA graph to hide them. Each
mat-vec program walks its layer's whole K (phase 2: 9 steps of 32 x 128 at K = 1152) or whole H
(phase 1) in a serial loop, so load latency, not bandwidth, bounds it; splitting K with partial sums
would shorten that at the cost of another pass. Every program re-reduces its layer's vector norm (H
or K floats: cheap next to its tile) and W is read 3 times per forward (L2-resident at AutoGAN
sizes). Few-column, many-row layers (e.g. 4096 x 16) give phase 1 one program looping over all rows;
cuBLAS mat-vecs would do better there. fp32 only (other
dtypes take the reference). Not registered with `torch.library.triton_op`: the kernels write u, v
through addresses from the table, which functionalization cannot see, so `torch.compile` should not
trace through it. CUDA graphs: the kernels read the plan's tables by address, so a plan used while a
stream is capturing is pinned (kept for the life of the process, never evicted); build it before
capture (one eager warm-up call: a new plan inside a capture raises, its tables need a host copy).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import torch
import torch.nn.functional as F

from ._dispatch import check_same_device, check_tensor, get_backend, on_tensor_device, use_triton
from .autoselect import backward_follows, keep_fused, timed_call

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton is Linux-only; the reference runs without it.
    triton = None

__all__ = [
    "SpectralNormGroup",
    "remove_spectral_norm",
    "spectral_norm",
    "spectral_norm_backward",
    "spectral_norm_forward",
    "spectral_norm_weight",
    "spectral_norm_weight_ref",
    "spectral_norm_weights",
]

_BLOCK_H_CHOICES = (16, 32)  # rows per mat-vec tile: power of two of the largest layer's rows, clamped
_BLOCK_K_CHOICES = (16, 32, 64, 128)  # columns per mat-vec tile, likewise from the largest layer's K
_BLOCK_V = 1024  # elements per step of the vector reductions and of the elementwise chunks
_PROGRAMS_PER_SM = 4  # elementwise programs a group aims at per SM (each 4 warps)
_NOMINAL_SMS = 132  # H100 / H200, for plans of non-CUDA tensors (the interpreter, the resource check)
_ALIGN = 4  # fp32 / int32 elements in 16 bytes: packed sections start 16-byte aligned

# ---------------------------------------------------------------------------------------------
# Triton kernels.

if triton is not None:

    @triton.jit
    def _norm_denom(x_ptr, n, eps, BLOCK: tl.constexpr):
        """max(||x[:n]||, eps): F.normalize's denominator, IEEE-rounded square root."""
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for i0 in range(0, n, BLOCK):
            i = i0 + tl.arange(0, BLOCK)
            x = tl.load(x_ptr + i, mask=i < n, other=0.0)
            acc += x * x
        return tl.maximum(tl.sqrt_rn(tl.sum(acc, axis=0)), eps)

    @triton.jit(do_not_specialize=["from_t"])
    def _spectral_norm_fwd_vt_kernel(
        prog_ptr,  # (P, 2) int32: layer, first column of this program's BLOCK_K columns
        layer_ptr,  # (L, 8) int32: H, K, off W_sn, off u, off v, first e-program, e-programs, 0
        addr_ptr,  # (L, 4) int64: addresses of W (H, K), u (H,), v (K,); 0
        t_ptr,  # (sum H,) fp32: t = W v of the previous power step, packed (read when from_t)
        vraw_ptr,  # (sum K,) fp32 out: v_raw = W^T u, not normalized, packed
        from_t,  # 0: u is the u buffer; 1: u = t / max(||t||, eps) (second and later power steps)
        eps,  # F.normalize's eps: x / max(||x||, eps)
        BLOCK_H: tl.constexpr,  # rows per step, power of two
        BLOCK_K: tl.constexpr,  # columns per program, power of two
        BLOCK_V: tl.constexpr,  # elements per step of the norm of t
    ):
        pid = tl.program_id(0)
        layer = tl.load(prog_ptr + 2 * pid)
        k0 = tl.load(prog_ptr + 2 * pid + 1)
        H = tl.load(layer_ptr + layer * 8)
        K = tl.load(layer_ptr + layer * 8 + 1)
        off_u = tl.load(layer_ptr + layer * 8 + 3)
        off_v = tl.load(layer_ptr + layer * 8 + 4)
        w_ptr = tl.load(addr_ptr + layer * 4).to(tl.pointer_type(tl.float32))
        x_ptr = tl.load(addr_ptr + layer * 4 + 1).to(tl.pointer_type(tl.float32))
        denom = tl.full([], 1.0, tl.float32)  # u buffer: x / 1 is exact
        if from_t != 0:
            x_ptr = t_ptr + off_u
            denom = _norm_denom(x_ptr, H, eps, BLOCK_V)

        k = k0 + tl.arange(0, BLOCK_K)
        k_mask = k < K
        acc = tl.zeros([BLOCK_H, BLOCK_K], dtype=tl.float32)
        for h0 in range(0, H, BLOCK_H):
            h = h0 + tl.arange(0, BLOCK_H)
            h_mask = h < H
            u = tl.div_rn(tl.load(x_ptr + h, mask=h_mask, other=0.0), denom)
            w = tl.load(w_ptr + h[:, None] * K + k[None, :], mask=h_mask[:, None] & k_mask[None, :], other=0.0)
            acc += w * u[:, None]
        tl.store(vraw_ptr + off_v + k, tl.sum(acc, axis=0), mask=k_mask)

    @triton.jit(do_not_specialize=["training"])
    def _spectral_norm_fwd_wv_kernel(
        prog_ptr,  # (P, 2) int32: layer, first row of this program's BLOCK_H rows
        layer_ptr,  # (L, 8) int32: H, K, off W_sn, off u, off v, first e-program, e-programs, 0
        addr_ptr,  # (L, 4) int64: addresses of W (H, K), u (H,), v (K,); 0
        vraw_ptr,  # (sum K,) fp32: v_raw = W^T u of this power step, packed (read when training)
        t_ptr,  # (sum H,) fp32 out: t = W v, packed
        v_out_ptr,  # (sum K,) fp32 out: the v used (torch's clone), packed
        training,  # 1: v = v_raw / max(||v_raw||, eps), written in place; 0: v is the v buffer
        eps,  # F.normalize's eps
        BLOCK_H: tl.constexpr,  # rows per program, power of two
        BLOCK_K: tl.constexpr,  # columns per step, power of two
        BLOCK_V: tl.constexpr,  # elements per step of the norm of v_raw
    ):
        pid = tl.program_id(0)
        layer = tl.load(prog_ptr + 2 * pid)
        h0 = tl.load(prog_ptr + 2 * pid + 1)
        H = tl.load(layer_ptr + layer * 8)
        K = tl.load(layer_ptr + layer * 8 + 1)
        off_u = tl.load(layer_ptr + layer * 8 + 3)
        off_v = tl.load(layer_ptr + layer * 8 + 4)
        w_ptr = tl.load(addr_ptr + layer * 4).to(tl.pointer_type(tl.float32))
        v_ptr = tl.load(addr_ptr + layer * 4 + 2).to(tl.pointer_type(tl.float32))
        x_ptr = v_ptr
        denom = tl.full([], 1.0, tl.float32)
        if training != 0:
            x_ptr = vraw_ptr + off_v
            denom = _norm_denom(x_ptr, K, eps, BLOCK_V)
        # the layer's first program writes v's copy, and v in place when training (bounds, not masks
        # and-ed with a scalar: the interpreter refuses those)
        copy_end = tl.where(h0 == 0, K, 0)
        write_end = tl.where((h0 == 0) & (training != 0), K, 0)

        h = h0 + tl.arange(0, BLOCK_H)
        h_mask = h < H
        acc = tl.zeros([BLOCK_H, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            k_mask = k < K
            v = tl.div_rn(tl.load(x_ptr + k, mask=k_mask, other=0.0), denom)
            tl.store(v_out_ptr + off_v + k, v, mask=k < copy_end)
            tl.store(v_ptr + k, v, mask=k < write_end)  # in training no program reads the v buffer
            w = tl.load(w_ptr + h[:, None] * K + k[None, :], mask=h_mask[:, None] & k_mask[None, :], other=0.0)
            acc += w * v[None, :]
        tl.store(t_ptr + off_u + h, tl.sum(acc, axis=1), mask=h_mask)

    @triton.jit(do_not_specialize=["training", "chunk"])
    def _spectral_norm_fwd_scale_kernel(
        prog_ptr,  # (P, 2) int32: layer, first element of this program's chunk of W
        layer_ptr,  # (L, 8) int32: H, K, off W_sn, off u, off v, first e-program, e-programs, 0
        addr_ptr,  # (L, 4) int64: addresses of W (H, K), u (H,), v (K,); 0
        t_ptr,  # (sum H,) fp32: t = W v, packed
        w_sn_ptr,  # (sum H*K,) fp32 out: W / sigma, packed
        u_out_ptr,  # (sum H,) fp32 out: the u sigma used (torch's clone), packed
        sigma_ptr,  # (L,) fp32 out: sigma = u . (W v)
        training,  # 1: u = t / max(||t||, eps), written in place; 0: u is the u buffer
        eps,  # F.normalize's eps
        chunk,  # elements per program, a multiple of BLOCK_V
        ALIGNED: tl.constexpr,  # the plan verified: W 16-byte aligned, H * K a multiple of 4
        BLOCK_V: tl.constexpr,  # elements per step
    ):
        pid = tl.program_id(0)
        layer = tl.load(prog_ptr + 2 * pid)
        e0 = tl.multiple_of(tl.load(prog_ptr + 2 * pid + 1), BLOCK_V)  # a multiple of chunk by construction
        H = tl.load(layer_ptr + layer * 8)
        K = tl.load(layer_ptr + layer * 8 + 1)
        off_w = tl.load(layer_ptr + layer * 8 + 2)
        off_u = tl.load(layer_ptr + layer * 8 + 3)
        w_ptr = tl.load(addr_ptr + layer * 4).to(tl.pointer_type(tl.float32))
        u_ptr = tl.load(addr_ptr + layer * 4 + 1).to(tl.pointer_type(tl.float32))
        x_ptr = u_ptr
        denom = tl.full([], 1.0, tl.float32)
        if training != 0:
            x_ptr = t_ptr + off_u
            denom = _norm_denom(x_ptr, H, eps, BLOCK_V)
        first = e0 == 0  # the layer's first program writes u's copy, sigma, and u in place when training
        copy_end = tl.where(first, H, 0)
        write_end = tl.where(first & (training != 0), H, 0)

        acc = tl.zeros([BLOCK_V], dtype=tl.float32)  # sigma = u . t, as torch's dot(u, mv(W, v))
        for i0 in range(0, H, BLOCK_V):
            i = i0 + tl.arange(0, BLOCK_V)
            mask = i < H
            u = tl.div_rn(tl.load(x_ptr + i, mask=mask, other=0.0), denom)
            acc += u * tl.load(t_ptr + off_u + i, mask=mask, other=0.0)
            tl.store(u_out_ptr + off_u + i, u, mask=i < copy_end)
            tl.store(u_ptr + i, u, mask=i < write_end)  # in training no program reads the u buffer
        sigma = tl.sum(acc, axis=0)
        tl.store(sigma_ptr + layer, sigma, mask=first)

        n_el = H * K
        if ALIGNED:
            w_ptr = tl.multiple_of(w_ptr, 16)
            off_w = tl.multiple_of(off_w, 4)
            n_el = tl.multiple_of(n_el, 4)
        for j in range(0, tl.cdiv(tl.minimum(chunk, n_el - e0), BLOCK_V)):  # W_sn = W / sigma
            i = e0 + j * BLOCK_V + tl.arange(0, BLOCK_V)
            mask = i < n_el
            w = tl.load(w_ptr + i, mask=mask, other=0.0)
            tl.store(w_sn_ptr + off_w + i, tl.div_rn(w, sigma), mask=mask)

    @triton.jit(do_not_specialize=["chunk"])
    def _spectral_norm_bwd_dot_kernel(
        prog_ptr,  # (P, 2) int32: layer, first element of this program's chunk of W
        layer_ptr,  # (L, 8) int32: H, K, off W_sn, off u, off v, first e-program, e-programs, 0
        grad_ptr,  # (sum H*K,) fp32: dL/dW_sn, packed
        w_sn_ptr,  # (sum H*K,) fp32: forward output W / sigma, packed
        partial_ptr,  # (P,) fp32 out: <g, W_sn> over this program's chunk
        chunk,  # elements per program, a multiple of BLOCK_V
        ALIGNED: tl.constexpr,  # the plan verified: H * K (so every offset) a multiple of 4
        BLOCK_V: tl.constexpr,  # elements per step
    ):
        pid = tl.program_id(0)
        layer = tl.load(prog_ptr + 2 * pid)
        e0 = tl.multiple_of(tl.load(prog_ptr + 2 * pid + 1), BLOCK_V)
        n_el = tl.load(layer_ptr + layer * 8) * tl.load(layer_ptr + layer * 8 + 1)
        off_w = tl.load(layer_ptr + layer * 8 + 2)
        if ALIGNED:
            off_w = tl.multiple_of(off_w, 4)
            n_el = tl.multiple_of(n_el, 4)
        grad_ptr += off_w
        w_sn_ptr += off_w
        acc = tl.zeros([BLOCK_V], dtype=tl.float32)
        for j in range(0, tl.cdiv(tl.minimum(chunk, n_el - e0), BLOCK_V)):
            i = e0 + j * BLOCK_V + tl.arange(0, BLOCK_V)
            mask = i < n_el
            acc += tl.load(grad_ptr + i, mask=mask, other=0.0) * tl.load(w_sn_ptr + i, mask=mask, other=0.0)
        tl.store(partial_ptr + pid, tl.sum(acc, axis=0))

    @triton.jit(do_not_specialize=["chunk"])
    def _spectral_norm_bwd_kernel(
        prog_ptr,  # (P, 2) int32: layer, first element of this program's chunk of W
        layer_ptr,  # (L, 8) int32: H, K, off W_sn, off u, off v, first e-program, e-programs, 0
        grad_ptr,  # (sum H*K,) fp32: dL/dW_sn, packed
        u_ptr,  # (sum H,) fp32: u of the forward, packed
        v_ptr,  # (sum K,) fp32: v of the forward, packed
        sigma_ptr,  # (L,) fp32: sigma of the forward
        partial_ptr,  # (P,) fp32: <g, W_sn> per program of the dot kernel
        grad_w_ptr,  # (sum H*K,) fp32 out: dL/dW = (g - <g, W_sn> u v^T) / sigma, packed
        chunk,  # elements per program, a multiple of BLOCK_V
        ALIGNED: tl.constexpr,  # the plan verified: H * K (so every offset) a multiple of 4
        BLOCK_V: tl.constexpr,  # elements per step
    ):
        pid = tl.program_id(0)
        layer = tl.load(prog_ptr + 2 * pid)
        e0 = tl.multiple_of(tl.load(prog_ptr + 2 * pid + 1), BLOCK_V)
        K = tl.load(layer_ptr + layer * 8 + 1)
        n_el = tl.load(layer_ptr + layer * 8) * K
        off_w = tl.load(layer_ptr + layer * 8 + 2)
        u_ptr += tl.load(layer_ptr + layer * 8 + 3)
        v_ptr += tl.load(layer_ptr + layer * 8 + 4)
        p_first = tl.load(layer_ptr + layer * 8 + 5)
        p_count = tl.load(layer_ptr + layer * 8 + 6)
        if ALIGNED:
            off_w = tl.multiple_of(off_w, 4)
            n_el = tl.multiple_of(n_el, 4)

        acc = tl.zeros([BLOCK_V], dtype=tl.float32)  # <g, W_sn>: the layer's partials, same order everywhere
        for p0 in range(0, p_count, BLOCK_V):
            p = p0 + tl.arange(0, BLOCK_V)
            acc += tl.load(partial_ptr + p_first + p, mask=p < p_count, other=0.0)
        s = tl.sum(acc, axis=0)
        sigma = tl.load(sigma_ptr + layer)

        for j in range(0, tl.cdiv(tl.minimum(chunk, n_el - e0), BLOCK_V)):
            i = e0 + j * BLOCK_V + tl.arange(0, BLOCK_V)
            mask = i < n_el
            h = i // K
            u = tl.load(u_ptr + h, mask=mask, other=0.0)
            v = tl.load(v_ptr + (i - h * K), mask=mask, other=0.0)
            g = tl.load(grad_ptr + off_w + i, mask=mask, other=0.0)
            tl.store(grad_w_ptr + off_w + i, tl.div_rn(g - s * u * v, sigma), mask=mask)


# ---------------------------------------------------------------------------------------------
# The plan: validated layers, packed layout, blocks, program tables.


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pad(n: int) -> int:
    """n rounded up to whole 16-byte groups of 4-byte elements."""
    return _cdiv(n, _ALIGN) * _ALIGN


def _block(n: int, choices: tuple[int, ...]) -> int:
    """The power of two >= n, clamped to the choices (which are every power of two in their range)."""
    return min(max(1 << max(n - 1, 0).bit_length(), choices[0]), choices[-1])


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return _NOMINAL_SMS


def _capturing(device: torch.device) -> bool:
    """Whether launches on `device` are being captured into a CUDA graph right now."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


class _Plan:
    """One validated group of (W, u, v) tensors: packed layout, block sizes, program tables.

    Built (and the group checked) once per cache key; holds no tensor of the group, only addresses.
    The device tables are built on the first Triton launch and held here: the kernels read them by
    address, so a CUDA graph that launched with them needs this plan alive (see `_tables`).
    """

    def __init__(self, key, weights, us, vs, indexed: bool) -> None:
        _check_group(weights, us, vs, indexed)
        self.key = key
        self.device = weights[0].device
        self.dtypes = sorted({str(t.dtype) for t in (*weights, *us, *vs)})
        self.fp32 = self.dtypes == [str(torch.float32)]
        self.shapes = [tuple(w.shape) for w in weights]
        self.rows = [w.shape[0] for w in weights]
        self.cols = [w.numel() // max(w.shape[0], 1) for w in weights]
        self.sizes = [w.numel() for w in weights]
        self.addrs = [(w.data_ptr(), u.data_ptr(), v.data_ptr(), 0) for w, u, v in zip(weights, us, vs, strict=True)]
        # ALIGNED: 16-byte W rows of the elementwise kernels and packed offsets in whole 16-byte groups
        self.aligned = all(a[0] % 16 == 0 and n % _ALIGN == 0 for a, n in zip(self.addrs, self.sizes, strict=True))
        self.block_h = _block(max(self.rows), _BLOCK_H_CHOICES)
        self.block_k = _block(max(self.cols), _BLOCK_K_CHOICES)
        blocks = sum(_cdiv(max(n, 1), _BLOCK_V) for n in self.sizes)
        self.chunk = _BLOCK_V * _cdiv(blocks, _PROGRAMS_PER_SM * _sm_count(self.device))

        # layer rows and the three program tables, (layer, start) each; every layer gets at least one
        # program of each kind (an empty layer still writes its u, v and sigma, as torch does)
        self.layer_rows, self.prog_k, self.prog_h, self.prog_e = [], [], [], []
        off_w = off_u = off_v = 0
        for layer, (h, k, n) in enumerate(zip(self.rows, self.cols, self.sizes, strict=True)):
            e_first = len(self.prog_e)
            self.prog_k += [(layer, k0) for k0 in range(0, max(k, 1), self.block_k)]
            self.prog_h += [(layer, h0) for h0 in range(0, max(h, 1), self.block_h)]
            self.prog_e += [(layer, e0) for e0 in range(0, max(n, 1), self.chunk)]
            self.layer_rows.append((h, k, off_w, off_u, off_v, e_first, len(self.prog_e) - e_first, 0))
            off_w, off_u, off_v = off_w + n, off_u + h, off_v + k
        self.total_w, self.total_u, self.total_v = off_w, off_u, off_v
        self.n_k, self.n_h, self.n_e = len(self.prog_k), len(self.prog_h), len(self.prog_e)
        # one allocation per call, split into 16-byte aligned sections (aligned pointer arguments keep
        # Triton's specialization, so the compiled kernels, the same from call to call)
        self.fwd_sizes = [_pad(n) for n in (off_w, off_u, off_v, len(weights), off_v, off_u)]  # W_sn, u, v,
        self.bwd_sizes = [_pad(off_w), _pad(self.n_e)]  # sigma, then scratch v_raw, t; backward: grad W, partials
        self.split_sizes = [*self.sizes, _pad(off_w) - off_w]
        self.tables: tuple[torch.Tensor, ...] | None = None

    def build_tables(self) -> tuple[torch.Tensor, ...]:
        """(layers, prog_k, prog_h, prog_e, addr) on the device: one int32 and one int64 tensor."""
        if max(self.total_w, self.n_e) >= 2 ** 31:
            raise ValueError(f"weights: {self.total_w} elements in one group; the kernels index with int32")
        sections = [[x for row in self.layer_rows for x in row],
                    *([x for row in prog for x in row] for prog in (self.prog_k, self.prog_h, self.prog_e))]
        flat = [x for s in sections for x in s + [0] * (_pad(len(s)) - len(s))]
        ints = torch.tensor(flat, dtype=torch.int32).to(self.device)
        layers, prog_k, prog_h, prog_e = ints.split([_pad(len(s)) for s in sections])
        addr = torch.tensor(self.addrs, dtype=torch.int64).to(self.device)
        return layers, prog_k, prog_h, prog_e, addr

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer views of a packed (W-sized) section."""
        parts = flat.split(self.split_sizes)
        return [parts[i].view(shape) for i, shape in enumerate(self.shapes)]


def _plan_key(weights, us, vs) -> tuple:
    """Everything the checks depend on, per tensor: equal keys mean equally valid tensors."""
    return tuple((t.data_ptr(), t.shape, t.stride(), t.dtype, t.device) for ts in (weights, us, vs) for t in ts)


_plans: OrderedDict[tuple, _Plan] = OrderedDict()  # LRU of the last _MAX_PLANS groups
_MAX_PLANS = 256
# Plans used while a stream was capturing a CUDA graph: the graph reads their tables by address on every
# replay and nothing tells us when it is destroyed, so they live as long as the process. A training
# script captures a handful of groups; call `_pinned.clear()` only once no graph can replay.
_pinned: dict[tuple, _Plan] = {}


def _plan(weights, us, vs, indexed: bool = True) -> _Plan:
    """The group's plan: a cache hit skips every check (the key guarantees they passed); a miss runs
    `_check_group`, which raises ValueError naming the argument (indexed: `u[3]`; else `u`)."""
    try:
        key = _plan_key(weights, us, vs)
    except (AttributeError, TypeError, RuntimeError):  # not (dense) tensors: let the checks name it
        return _Plan(None, weights, us, vs, indexed)
    plan = _plans.get(key)
    if plan is not None:
        _plans.move_to_end(key)
        return plan
    plan = _pinned.get(key) or _Plan(key, weights, us, vs, indexed)
    _plans[key] = plan
    if len(_plans) > _MAX_PLANS:
        _plans.popitem(last=False)  # a pinned plan stays alive in _pinned
    return plan


def _tables(plan: _Plan) -> tuple[torch.Tensor, ...]:
    """The plan's device tables for a launch; pins the plan when the launch is being captured."""
    capturing = _capturing(plan.device)
    if plan.tables is None:
        if capturing:
            raise RuntimeError("spectral norm: this group's plan is new inside a CUDA graph capture; its "
                               "tables need a host-to-device copy: run one eager call before capturing")
        plan.tables = plan.build_tables()
    if capturing and plan.key is not None:
        _pinned[plan.key] = plan
    return plan.tables


# ---------------------------------------------------------------------------------------------
# Launchers.


@on_tensor_device
def spectral_norm_forward(weights, us, vs, n_power_iterations: int, eps: float, training: bool,
                          plan: _Plan | None = None):
    """Launch the grouped forward; returns (W_sn packed, u packed, v packed, sigma, plan).

    Updates every u, v in place when training. The group is checked when its plan is built (pass the
    plan `_plan` returned to skip the lookup).
    """
    if plan is None:
        plan = _plan(weights, us, vs)
    layers, prog_k, prog_h, prog_e, addr = _tables(plan)
    w_sn, u_out, v_out, sigma, v_raw, t = torch.empty(
        sum(plan.fwd_sizes), device=plan.device, dtype=torch.float32).split(plan.fwd_sizes)
    n_iter = n_power_iterations if training else 0
    eps = float(eps)
    blocks = {"BLOCK_H": plan.block_h, "BLOCK_K": plan.block_k, "BLOCK_V": _BLOCK_V, "num_warps": 4}
    for step in range(n_iter):
        _spectral_norm_fwd_vt_kernel[(plan.n_k,)](prog_k, layers, addr, t, v_raw, int(step > 0), eps, **blocks)
        _spectral_norm_fwd_wv_kernel[(plan.n_h,)](prog_h, layers, addr, v_raw, t, v_out, 1, eps, **blocks)
    if n_iter == 0:  # eval: t = W v with the stored v
        _spectral_norm_fwd_wv_kernel[(plan.n_h,)](prog_h, layers, addr, v_raw, t, v_out, 0, eps, **blocks)
    _spectral_norm_fwd_scale_kernel[(plan.n_e,)](
        prog_e, layers, addr, t, w_sn, u_out, sigma, int(n_iter > 0), eps, plan.chunk,
        ALIGNED=plan.aligned, BLOCK_V=_BLOCK_V, num_warps=4)
    if n_iter > 0:  # the kernels wrote u, v through raw addresses: tell autograd, as an `out=` would
        _increment_version([*us, *vs])
    return w_sn, u_out, v_out, sigma, plan


@on_tensor_device
def spectral_norm_backward(plan: _Plan, grad: torch.Tensor, w_sn: torch.Tensor, u: torch.Tensor,
                           v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Launch the grouped backward on packed fp32 tensors (as the forward returned them, grad of
    W_sn's length); returns dL/dW packed in a section like W_sn's (split it with `plan.split`)."""
    layers, _, _, prog_e, _ = _tables(plan)
    grad_w, partial = torch.empty(sum(plan.bwd_sizes), device=plan.device,
                                  dtype=torch.float32).split(plan.bwd_sizes)
    options = {"ALIGNED": plan.aligned, "BLOCK_V": _BLOCK_V, "num_warps": 4}
    _spectral_norm_bwd_dot_kernel[(plan.n_e,)](prog_e, layers, grad, w_sn, partial, plan.chunk, **options)
    _spectral_norm_bwd_kernel[(plan.n_e,)](prog_e, layers, grad, u, v, sigma, partial, grad_w, plan.chunk,
                                           **options)
    return grad_w


def _increment_version(tensors: list[torch.Tensor]) -> None:
    fn = getattr(torch.autograd.graph, "increment_version", None)
    if fn is None:  # older torch
        for t in tensors:
            torch._C._increment_version(t)
        return
    try:
        fn(tensors)  # one call for the list where torch takes an iterable
    except TypeError:
        for t in tensors:
            fn(t)


# ---------------------------------------------------------------------------------------------
# Autograd.


class _SpectralNormFunction(torch.autograd.Function):
    """Grouped W / sigma(W) with u, v constants in the backward (as torch's spectral_norm)."""

    @staticmethod
    def forward(ctx, uvp, n_power_iterations, eps, training, *weights):
        us, vs, plan = uvp
        w_sn, u, v, sigma, _ = spectral_norm_forward(weights, us, vs, n_power_iterations, eps, training, plan)
        ctx.save_for_backward(w_sn, u, v, sigma)
        ctx.plan = plan
        ctx.set_materialize_grads(False)  # an unused layer keeps grad None, as with torch's hooks
        return tuple(plan.split(w_sn))

    @staticmethod
    def backward(ctx, *grads):
        w_sn, u, v, sigma = ctx.saved_tensors
        grad = torch.cat([w_sn.new_zeros(n) if g is None else g.reshape(-1).to(torch.float32)
                          for g, n in zip(grads, ctx.plan.sizes, strict=True)])
        grad_ws = ctx.plan.split(spectral_norm_backward(ctx.plan, grad, w_sn, u, v, sigma))
        return (None, None, None, None,
                *(None if g is None else gw for g, gw in zip(grads, grad_ws, strict=True)))


def _kernel_runs(plan: _Plan, weights, us, vs, n_power_iterations: int, eps: float, training: bool) -> bool:
    """Dispatch: Triton where it can run, the dtype is fp32 (the kernel's only dtype) and, under `auto`,
    it timed faster than the reference for this group's shapes (`autoselect.keep_fused`)."""
    if not use_triton(weights[0]):
        return False
    if not plan.fp32:
        if get_backend() == "triton":
            raise RuntimeError(f"backend 'triton' was forced but the spectral-norm kernel is fp32 only, got "
                               f"{plan.dtypes}")
        return False
    scratch: list = []  # u, v copies for the timing (made once, only if timed): the real u, v must not move

    def copies():
        if not scratch:
            scratch.extend(([u.clone() for u in us], [v.clone() for v in vs]))
        return scratch

    def fused(*ws):
        us_c, vs_c = copies()
        return _SpectralNormFunction.apply((us_c, vs_c, _plan(ws, us_c, vs_c)), n_power_iterations, eps, training,
                                           *ws)

    def reference(*ws):
        us_c, vs_c = copies()
        return [spectral_norm_weight_ref(w, u, v, n_power_iterations, eps, training)
                for w, u, v in zip(ws, us_c, vs_c, strict=True)]

    options = {"training": training, "n_power_iterations": n_power_iterations,
               "backward": backward_follows(weights)}
    return keep_fused("spectral_norm", weights, timed_call(fused, *weights), timed_call(reference, *weights), options)


# ---------------------------------------------------------------------------------------------
# Argument checks (both backends), run once per plan.


def _check_layer(i: int | None, weight, u, v) -> None:
    at = "" if i is None else f"[{i}]"
    check_tensor(f"weight{at}", weight, ndim=(2, 3, 4, 5))
    check_tensor(f"u{at}", u, ndim=1)
    check_tensor(f"v{at}", v, ndim=1)
    check_same_device(**{f"weight{at}": weight, f"u{at}": u, f"v{at}": v})
    out = weight.shape[0]
    cols = weight.numel() // max(out, 1)
    if u.numel() != out:
        raise ValueError(f"u{at} must have length {out} (weight.shape[0]), got {u.numel()}")
    if v.numel() != cols:
        raise ValueError(f"v{at} must have length {cols} (weight[0].numel()), got {v.numel()}")
    for name, t in ((f"u{at}", u), (f"v{at}", v)):
        if t.dtype != weight.dtype:
            raise ValueError(f"{name} must have the dtype of weight{at} ({weight.dtype}), got {t.dtype}")


def _check_group(weights, us, vs, indexed: bool) -> None:
    """Every layer checked, one device, and no two of the group's buffers sharing memory."""
    for i, (w, u, v) in enumerate(zip(weights, us, vs, strict=True)):
        _check_layer(i if indexed else None, w, u, v)
        check_same_device(**{"weights[0]": weights[0], f"weights[{i}]": w})
    # Two programs updating one u (or v) buffer in place would race on a GPU (the interpreter runs
    # programs in order and hides it), and a W aliasing a u or v would change under the power step.
    spans = []
    for name, tensors in (("weight", weights), ("u", us), ("v", vs)):
        for i, t in enumerate(tensors):
            if t.device.type != "meta" and t.numel():  # meta tensors have no memory to share
                label = f"{name}[{i}]" if indexed else name
                spans.append((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size(), label))
    spans.sort()
    for (_, end_a, a), (start_b, _, b) in itertools.pairwise(spans):
        if start_b < end_a:
            raise ValueError(f"{b} shares memory with {a}: a group must list each W, u and v buffer once "
                             "(in-place updates of one buffer from two layers would race)")


def _check_options(n_power_iterations, eps, training) -> None:
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) \
            or n_power_iterations < 0:
        raise ValueError(f"n_power_iterations must be an int >= 0, got {n_power_iterations!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a float >= 0, got {eps!r}")
    if not isinstance(training, bool):
        raise ValueError(f"training must be a bool, got {training!r}")


# ---------------------------------------------------------------------------------------------
# PyTorch reference: exactly `torch.nn.utils.spectral_norm`'s compute_weight (dim=0). Also the CPU
# path and the test oracle.


def spectral_norm_weight_ref(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                             n_power_iterations: int = 1, eps: float = 1e-12,
                             training: bool = True) -> torch.Tensor:
    """weight / sigma(weight); in training, first `n_power_iterations` power steps update u, v in place.

    In the weight's dtype even under autocast (mixed-precision training): a bf16 power iteration
    would drift u, v and sigma, and the layer casts W / sigma to its compute dtype anyway."""
    if torch.is_autocast_enabled(weight.device.type):
        with torch.autocast(weight.device.type, enabled=False):
            return spectral_norm_weight_ref(weight, u, v, n_power_iterations, eps, training)
    weight_mat = weight.reshape(weight.shape[0], -1)
    if training and n_power_iterations > 0:
        with torch.no_grad():
            for _ in range(n_power_iterations):
                v = F.normalize(torch.mv(weight_mat.t(), u), dim=0, eps=eps, out=v)
                u = F.normalize(torch.mv(weight_mat, v), dim=0, eps=eps, out=u)
            # torch clones so that a later forward's in-place update cannot corrupt this backward
            u = u.clone(memory_format=torch.contiguous_format)
            v = v.clone(memory_format=torch.contiguous_format)
    sigma = torch.dot(u, torch.mv(weight_mat, v))
    return weight / sigma


# ---------------------------------------------------------------------------------------------
# Public functions: validate (same ValueError from both backends), then dispatch.


def spectral_norm_weight(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                         n_power_iterations: int = 1, eps: float = 1e-12,
                         training: bool = True) -> torch.Tensor:
    """`torch.nn.utils.spectral_norm`'s normalized weight for buffers u (out,), v (weight[0].numel(),).

    weight is viewed as (out, -1). When training, `n_power_iterations` steps of
    v = normalize(W^T u), u = normalize(W v) update u and v in place first. Returns W / (u . W v);
    its gradient treats u, v as constants, like torch's.
    """
    _check_options(n_power_iterations, eps, training)
    plan = _plan((weight,), (u,), (v,), indexed=False)  # checks the layer unless the plan is cached
    if _kernel_runs(plan, (weight,), (u,), (v,), n_power_iterations, eps, training):
        (out,) = _SpectralNormFunction.apply(([u], [v], plan), n_power_iterations, eps, training, weight)
        return out
    return spectral_norm_weight_ref(weight, u, v, n_power_iterations, eps, training)


def spectral_norm_weights(weights, us, vs, n_power_iterations: int = 1, eps: float = 1e-12,
                          training: bool = True) -> list[torch.Tensor]:
    """`spectral_norm_weight` for a list of layers; on the Triton path, one set of launches for all.

    A group must list each W, u, v buffer once (ValueError otherwise). The checks run once per group
    of tensors (same addresses, shapes, strides, dtypes, devices): later calls reuse the cached plan.
    """
    _check_options(n_power_iterations, eps, training)
    weights, us, vs = list(weights), list(us), list(vs)
    if not weights or not len(weights) == len(us) == len(vs):
        raise ValueError(f"weights, us, vs must be non-empty lists of one length, got "
                         f"{len(weights)}, {len(us)}, {len(vs)}")
    plan = _plan(weights, us, vs)  # checks every layer unless the plan is cached
    if _kernel_runs(plan, weights, us, vs, n_power_iterations, eps, training):
        return list(_SpectralNormFunction.apply((us, vs, plan), n_power_iterations, eps, training, *weights))
    return [spectral_norm_weight_ref(w, u, v, n_power_iterations, eps, training)
            for w, u, v in zip(weights, us, vs, strict=True)]


# ---------------------------------------------------------------------------------------------
# Module API: drop-in for torch.nn.utils.spectral_norm / remove_spectral_norm (dim=0).


class _SpectralNormHook:
    """Forward pre-hook: sets module.<name> = W_orig / sigma before each forward."""

    _version = 1  # torch's SpectralNorm._version: weight_orig, weight_u, weight_v; no stored weight

    def __init__(self, name: str, n_power_iterations: int, eps: float) -> None:
        self.name = name
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        self.pending = False  # set by SpectralNormGroup.update: the next forward uses its weight
        self.handles = []

    def tensors(self, module: torch.nn.Module):
        return (getattr(module, self.name + "_orig"), getattr(module, self.name + "_u"),
                getattr(module, self.name + "_v"))

    def compute(self, module: torch.nn.Module, training: bool) -> torch.Tensor:
        weight, u, v = self.tensors(module)
        return spectral_norm_weight(weight, u, v, self.n_power_iterations, self.eps, training)

    def __call__(self, module: torch.nn.Module, inputs) -> None:
        if self.pending:
            self.pending = False
            return
        setattr(module, self.name, self.compute(module, module.training))

    def state_dict_hook(self, module, state_dict, prefix, local_metadata) -> None:
        # same metadata as torch's SpectralNormStateDictHook, so torch loads our checkpoints as new ones
        local_metadata.setdefault("spectral_norm", {})[self.name + ".version"] = self._version


def _find_hook(module: torch.nn.Module, name: str | None = None) -> tuple[int, _SpectralNormHook]:
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, _SpectralNormHook) and (name is None or hook.name == name):
            return key, hook
    raise ValueError(f"module {type(module).__name__} has no autogan_fast spectral_norm"
                     + ("" if name is None else f" on {name!r}"))


def spectral_norm(module: torch.nn.Module, name: str = "weight", n_power_iterations: int = 1,
                  eps: float = 1e-12, dim: int | None = None) -> torch.nn.Module:
    """Drop-in for `torch.nn.utils.spectral_norm(module, name, n_power_iterations, eps)` with dim=0.

    Registers `<name>_orig` (parameter), `<name>_u`, `<name>_v` (buffers) like torch, so state
    dicts interchange both ways; u, v start as torch's (normal_ then normalize, same RNG calls).
    Each forward then runs `spectral_norm_weight` (through the dispatch) from a pre-hook.
    """
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if dim not in (None, 0):
        raise ValueError(f"dim: only dim=0 (output channels first) is supported, got {dim!r}")
    if isinstance(module, (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
        raise ValueError("module: transposed convolutions normalize along dim=1, which is not supported")
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) \
            or n_power_iterations <= 0:
        raise ValueError(f"n_power_iterations must be a positive int, got {n_power_iterations!r}")
    _check_options(n_power_iterations, eps, True)
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, _SpectralNormHook) and hook.name == name:
            raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
    weight = module._parameters.get(name)
    if weight is None:
        raise ValueError(f"name: module has no parameter {name!r}")
    check_tensor(name, weight, ndim=(2, 3, 4, 5))

    with torch.no_grad():
        weight_mat = weight.reshape(weight.shape[0], -1)
        h, w = weight_mat.size()
        u = F.normalize(weight.new_empty(h).normal_(0, 1), dim=0, eps=eps)
        v = F.normalize(weight.new_empty(w).normal_(0, 1), dim=0, eps=eps)

    hook = _SpectralNormHook(name, n_power_iterations, eps)
    delattr(module, name)
    module.register_parameter(name + "_orig", weight)
    setattr(module, name, weight.data)
    module.register_buffer(name + "_u", u)
    module.register_buffer(name + "_v", v)
    hook.handles = [module.register_forward_pre_hook(hook),
                    module._register_state_dict_hook(hook.state_dict_hook)]
    return module


def remove_spectral_norm(module: torch.nn.Module, name: str = "weight") -> torch.nn.Module:
    """Undo `spectral_norm`: `<name>` becomes a plain parameter holding W_orig / sigma (no power step)."""
    _, hook = _find_hook(module, name)
    with torch.no_grad():
        weight = hook.compute(module, training=False)
    for handle in hook.handles:
        handle.remove()
    delattr(module, name)
    delattr(module, name + "_u")
    delattr(module, name + "_v")
    delattr(module, name + "_orig")
    module.register_parameter(name, torch.nn.Parameter(weight.detach()))
    return module


class SpectralNormGroup:
    """Normalizes the weights of several `spectral_norm` modules with one grouped call.

    Call `update()` once per forward of the model that owns the modules (e.g. at the top of the
    discriminator's forward); each module's next forward then uses the weight computed here and its
    own hook does nothing. A module run without a preceding `update()` falls back to its own hook.
    """

    def __init__(self, modules) -> None:
        self.modules = list(modules)
        if not self.modules:
            raise ValueError("modules must be a non-empty list of spectral_norm modules")
        self.hooks = [_find_hook(m)[1] for m in self.modules]
        first = self.hooks[0]
        for hook in self.hooks:
            if (hook.n_power_iterations, hook.eps) != (first.n_power_iterations, first.eps):
                raise ValueError("modules must share n_power_iterations and eps to be grouped")
        self.n_power_iterations = first.n_power_iterations
        self.eps = first.eps

    def update(self, training: bool | None = None) -> list[torch.Tensor]:
        """Compute every normalized weight (power step only when training); returns them."""
        if training is None:
            modes = {m.training for m in self.modules}
            if len(modes) != 1:
                raise ValueError("training: modules disagree on train/eval mode; pass training=")
            training = modes.pop()
        parts = [hook.tensors(m) for hook, m in zip(self.hooks, self.modules, strict=True)]
        weights = spectral_norm_weights([p[0] for p in parts], [p[1] for p in parts],
                                        [p[2] for p in parts], self.n_power_iterations, self.eps, training)
        for hook, module, w in zip(self.hooks, self.modules, weights, strict=True):
            setattr(module, hook.name, w)
            hook.pending = True
        return weights


# ---------------------------------------------------------------------------------------------
# Launch cases for the ahead-of-time resource check (`autogan_fast.kernels.resources`)


def _d_shapes(ch: int) -> list[tuple[int, ...]]:
    """The SN layers of AutoGAN's discriminator at width ch (stage 2 uses all 11)."""
    block = [(ch, ch, 3, 3), (ch, ch, 3, 3)]
    return [(ch, 3, 3, 3), (ch, ch, 3, 3), (ch, 3, 1, 1), *block, (ch, ch, 1, 1), *block, *block, (1, ch)]


def resource_cases(channels=(64, 128, 256)) -> list:
    """Every launch the launchers can make: each (BLOCK_H, BLOCK_K) of `_BLOCK_H_CHOICES` x
    `_BLOCK_K_CHOICES` (a BLOCK_H x BLOCK_K layer makes `_Plan` pick exactly those) with ALIGNED
    true and false (a W one element into its storage is not 16-byte aligned), each forward path (two
    power steps: u from the buffer, then from t; eval) and the backward; plus the discriminator's real
    group at each channel count. CPU tensors: a plan needs real, distinct addresses; nothing runs."""
    def run_group(weights, expect=None):
        us = [torch.ones(w.shape[0]) for w in weights]
        vs = [torch.ones(w[0].numel()) for w in weights]
        plan = _plan(weights, us, vs)
        if expect is not None and (plan.block_h, plan.block_k, plan.aligned) != expect:
            raise RuntimeError(f"resource case expected blocks / ALIGNED {expect}, the plan picked "
                               f"{(plan.block_h, plan.block_k, plan.aligned)}: update resource_cases")
        for n_iter, training in ((2, True), (1, False)):
            w_sn, u, v, sigma, _ = spectral_norm_forward(weights, us, vs, n_iter, 1e-12, training)
        spectral_norm_backward(plan, w_sn, w_sn, u, v, sigma)

    cases = []
    for block_h in _BLOCK_H_CHOICES:
        for block_k in _BLOCK_K_CHOICES:
            for aligned in (True, False):
                def run(block_h=block_h, block_k=block_k, aligned=aligned):
                    storage = torch.ones(block_h * block_k + 1)
                    w = (storage[:-1] if aligned else storage[1:]).view(block_h, block_k)
                    run_group([w], (block_h, block_k, aligned))
                cases.append((f"sn BLOCK_H={block_h} BLOCK_K={block_k} ALIGNED={aligned}", run))
    for ch in channels:
        def run_d(ch=ch):
            run_group([torch.ones(shape) for shape in _d_shapes(ch)])
        cases.append((f"sn discriminator ch={ch}", run_d))
    return cases
