"""Inception Score and FID statistics of a stream of Inception outputs, two launches per batch.

What is fused. For a batch of B images with pool features x (B, F) and logits l (B, C), two kernels do
all the per-batch work the two metrics need and add it into float64 running totals on the device (no
host sync):
  - `_inception_stats_softmax_kernel`, one program per BLOCK_R logits rows: softmax of each row, then
    per split k of the images sum_i p_i (C,) and sum_i sum_y p_iy log p_iy (p log p taken as 0 where p
    underflows to 0). The program walks the classes in chunks of BLOCK_C twice: pass 1 keeps an online
    max m and sum of exp s (s rescaled by exp(m_old - m_new) when the max grows), pass 2 forms
    p = exp(l - m) / s and log p = l - m - log s chunk by chunk and adds each split's column sums
    of p straight into the totals. Registers are bounded for any C (no class limit).
  - `_inception_stats_gram_kernel`, one program per tile of the upper block triangle of X^T X
    (T = nb (nb + 1) / 2 tiles, nb = cdiv(F, BLOCK_F); the lower triangle is the mirror and is never
    computed): sum_i (x_i - c)^T (x_i - c) (F, F), and on the diagonal tiles sum_i (x_i - c) (F,), with
    c a fixed shift (below). Each program owns its tile: plain float64 load + store, deterministic.
Splits follow the AutoGAN / OpenAI IS code: image i (numbered in arrival order) is in split k iff
k N // S <= i < (k + 1) N // S, i.e. k = ((i + 1) S - 1) // N; a block of rows may straddle split
borders, so a softmax program loops over the (usually 1-2) splits its rows touch and adds each split's
partial sums with float64 atomics. Those atomics are `sem="relaxed"`: float64 adds commute, nothing
reads the totals inside the launch, so no ordering (and no fence) is needed; the IS totals are
order-nondeterministic in the last bits. The two kernels were one launch with a branch on the program
id; the union of both bodies needed 254-255 registers and spilled, and the grid took two waves.

Precision. The tile products run in fp32 (`tl.dot`, input_precision="tf32x3": three TF32 MMAs per
product, ~fp32 accuracy at tensor-core speed; never plain TF32, whose 2^-11 error would show in FID)
and accumulate over at most MAX_ROWS = 1024 rows (the launcher splits larger batches), then are added
into the float64 totals. Per element the fp32 partial has error <= ~(3 * 2^-22 + k u32) sum_b
|x~_bi x~_bj| (u32 = 6e-8, k the number of accumulation steps: typically ~sqrt(B), at worst ~B / 8 on
tensor cores that truncate the accumulator, as Fasi et al. 2021 measured on V100 / A100), and across
batches float64 adds lose nothing measurable. The catch is cancellation: sigma = (S2 - S1 S1^T / n) /
(n - 1) is small next to S2 when |mean| >> std, and the fp32 error is relative to S2. So the totals
are of x~ = x - c with c the mean of the FIRST batch (stored once, fp32-representable): then S2 ~ n
sigma, S1 ~ 0, and the error stays relative to the covariance itself (~1e-6 typically), whatever the
features' mean; the formula is exact for any c, so the result equals the two-pass float64 np.cov to
~1e-6 relative, far below FID's sampling noise. The error grows by 1 + |mean - c|^2 / var: about 2x if
the first batch is a single image. A running mean (Chan / Welford merges) would track the mean better
but needs an extra (F, F) pass per batch to re-center the totals; a fixed shift costs nothing per
batch. On the GPU the softmax uses ex2.approx (<= 2 ulp) and div.full (<= 2 ulp); the online max adds
one rounded rescale per chunk to s: p is within ~1e-5 relative in the worst case (tests/
test_inception_stats.py states the whole error model next to the GPU tolerances).

Blocks, for the Inception-v3 shapes (F = 2048, C = 1008, B = 100-500) on H100 / H200 (132 SMs). They
were chosen on paper from the ahead-of-time compile (`python -m autogan_fast.kernels.resources --ops
stats`: shared memory, registers), not timed: no GPU timings of these kernels exist yet.
  - Gram: BLOCK_F = 64 (F >= 256), BLOCK_B = 32, 4 warps, 2 stages. 64-wide tiles give nb = 32 and
    T = 528 = 4 x 132 tiles: every SM gets exactly 4 equal tiles, whatever the number resident at
    once. 128-wide tiles give 136 = 132 + 4 (4 SMs run a second tile while 128 idle: ~2x the ideal
    time); 64 x 128 tiles give 272 = 2 x 132 + 8 (~1.5x), 128 x 256 give 72 double-size tiles (~2x).
    The price is 2x the L2 reads of X per output element (each 64 x 64 tile streams two 64-column
    panels). Compiled: 40-48 KiB shared, 146-168 registers on sm_90 (3 blocks per SM, set by the
    registers), 168-187 on sm_80 (2-3), so one tile's float64 epilogue (HBM-bound: the 17 MiB upper
    triangle is read and written per batch) runs under other tiles' MMA loops; with 3 slots per SM the
    fourth tile of each SM runs with fewer neighbours. Small F (the digits net, F = 64): BLOCK_F = 16.
    Features with a column stride other than 1 are copied first (one (B, F) copy): the column-major
    tile loads compiled to 250-255 registers and spilled on sm_80.
  - Softmax: BLOCK_C = min(next_pow2(C), 256), BLOCK_R = clamp(1024 // BLOCK_C, 4, 16), 4 warps: at
    C = 1008 4 rows x 256 classes (4 chunks, the last 240 wide), 56-64 registers, so the grid is
    cdiv(B, 4) <= 256 light programs, all resident at once (one wave) for B <= MAX_ROWS.
The softmax launch goes first and is short (B x C x 2 reads); the two launches no longer overlap.
Where it loses: the float64 (F, F) upper triangle (~17 MiB at F = 2048) is read and written on every
update, so small batches (B < ~64) are bound by that traffic and cost nearly what B = 256 does: feed
the largest batches you have. Small F (the digits feature net) is launch-bound either way. On an A100
(108 SMs) the 528 tiles are 4.9 per SM: the last of five rounds is 89% full.

Float64 inputs run the PyTorch reference (under the "auto" backend), which is also the CPU path and
the test oracle: `inception_stats_update_ref`.
"""

from typing import NamedTuple

import numpy as np
import torch

from ._dispatch import check_same_device, check_tensor, get_backend, on_tensor_device, triton_available, use_triton
from .autoselect import keep_fused

if triton_available():
    import triton
    import triton.language as tl
else:  # no Triton on this platform: define the kernels against a stand-in, only the reference runs

    class _NoTriton:
        constexpr = int

        @staticmethod
        def jit(fn=None, **_kwargs):
            return fn if fn is not None else (lambda f: f)

    triton = tl = _NoTriton()

MAX_ROWS = 1024  # rows per launch: bounds the fp32 partial sums of X^T X (see the header)
GRAM_STAGES = 2  # software-pipeline depth of the gram tiles (shared memory: see the header)


class InceptionTotals(NamedTuple):
    """Running totals of one `InceptionStats`, all float64 on one device.

    `xtx` is authoritative on and above the diagonal only (the kernel writes the upper block triangle);
    read it through `InceptionStats.fid_stats`, which mirrors it.
    """

    shift: torch.Tensor  # (F,) c: mean features of the first batch, subtracted from every x
    feat_sum: torch.Tensor  # (F,) sum_i (x_i - c)
    xtx: torch.Tensor  # (F, F) sum_i (x_i - c)^T (x_i - c), upper triangle
    p_sum: torch.Tensor  # (S, C) per split: sum_i softmax(l_i)
    plogp_sum: torch.Tensor  # (S,) per split: sum_i sum_y p_iy log p_iy


# ---------------------------------------------------------------------------------------------
# Triton kernels


@triton.jit(do_not_specialize=["n_rows"])
def _inception_stats_gram_kernel(
    x_ptr,  # (B, F) features, fp32 / fp16 / bf16
    shift_ptr,  # (F,) float64 shift c
    feat_sum_ptr,  # (F,) float64 running sum of x - c, updated in place
    xtx_ptr,  # (F, F) float64 running sum of (x - c)^T (x - c), contiguous, upper block triangle
    n_rows,  # B, changes per call: not specialized
    n_feat,  # F
    stride_xb,  # features row stride
    stride_xf,  # features column stride
    BLOCK_F: tl.constexpr,  # tile edge in features (the M and N of the MMA)
    BLOCK_B: tl.constexpr,  # rows per tl.dot step (the K of the MMA)
):
    # One program per tile of the upper block triangle. tile -> (i, j), j <= i, enumerating the lower
    # triangle row by row: tile = i (i + 1) / 2 + j, so neighbouring programs share column panel i in
    # L2. The fp32 square root may be off by one near perfect squares; the two corrections fix that.
    tile = tl.program_id(0)
    i = ((tl.sqrt(8.0 * tile + 1.0) - 1.0) * 0.5).to(tl.int32)
    i = tl.where(i * (i + 1) // 2 > tile, i - 1, i)
    i = tl.where((i + 1) * (i + 2) // 2 <= tile, i + 1, i)
    j = tile - i * (i + 1) // 2
    # Output tile: feature rows from block j, feature columns from block i (upper triangle).
    offs_m = j * BLOCK_F + tl.arange(0, BLOCK_F)
    offs_n = i * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_m = offs_m < n_feat
    mask_n = offs_n < n_feat
    c_m = tl.load(shift_ptr + offs_m, mask=mask_m, other=0.0).to(tl.float32)
    c_n = tl.load(shift_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)

    acc = tl.zeros((BLOCK_F, BLOCK_F), dtype=tl.float32)
    col_sum = tl.zeros((BLOCK_F,), dtype=tl.float32)
    for b0 in range(0, n_rows, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B)
        mask_b = rows < n_rows
        row_ptr = x_ptr + rows.to(tl.int64)[:, None] * stride_xb
        mask_a = mask_b[:, None] & mask_m[None, :]
        a = tl.load(row_ptr + offs_m[None, :] * stride_xf, mask=mask_a, other=0.0)
        a = tl.where(mask_a, a.to(tl.float32) - c_m[None, :], 0.0)
        mask_c = mask_b[:, None] & mask_n[None, :]
        b = tl.load(row_ptr + offs_n[None, :] * stride_xf, mask=mask_c, other=0.0)
        b = tl.where(mask_c, b.to(tl.float32) - c_n[None, :], 0.0)
        acc = tl.dot(tl.trans(a), b, acc, input_precision="tf32x3")
        col_sum += tl.sum(b, axis=0)

    # Per-batch fp32 partial -> float64 total. This program owns the tile: plain load + store, no
    # atomics, so the FID totals are deterministic.
    out = xtx_ptr + offs_m.to(tl.int64)[:, None] * n_feat + offs_n[None, :]
    mask_o = mask_m[:, None] & mask_n[None, :]
    total = tl.load(out, mask=mask_o, other=0.0)
    tl.store(out, total + acc.to(tl.float64), mask=mask_o)
    # Each feature block has exactly one diagonal tile (offs_m == offs_n): that one adds the feature sums.
    mask_s = mask_n & (offs_m == offs_n)
    fsum = tl.load(feat_sum_ptr + offs_n, mask=mask_s, other=0.0)
    tl.store(feat_sum_ptr + offs_n, fsum + col_sum.to(tl.float64), mask=mask_s)


@triton.jit(do_not_specialize=["n_rows", "row_offset"])
def _inception_stats_softmax_kernel(
    logits_ptr,  # (B, C) logits, fp32 / fp16 / bf16
    p_sum_ptr,  # (S, C) float64 running per-split sum of p, atomically updated
    plogp_sum_ptr,  # (S,) float64 running per-split sum of sum_y p log p, atomically updated
    n_rows,  # B, changes per call: not specialized
    n_cls,  # C
    row_offset,  # image index of row 0 of this batch, changes per call: not specialized
    num_images,  # N
    num_splits,  # S
    stride_lb,  # logits row stride
    stride_lc,  # logits column stride
    BLOCK_R: tl.constexpr,  # logits rows per program
    BLOCK_C: tl.constexpr,  # classes per chunk; the program loops over cdiv(C, BLOCK_C) chunks twice
):
    block = tl.program_id(0)
    rows = block * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = rows < n_rows
    row_ptr = logits_ptr + rows.to(tl.int64)[:, None] * stride_lb

    # Pass 1: online max and sum of exp over the chunks, s rescaled whenever the max grows. A row
    # whose logits so far are all -inf subtracts 0 instead of m = -inf (no -inf - -inf = nan).
    m = tl.full((BLOCK_R,), -float("inf"), dtype=tl.float32)
    s = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for c0 in range(0, n_cls, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = mask_r[:, None] & (cols < n_cls)[None, :]
        l = tl.load(row_ptr + cols[None, :] * stride_lc, mask=mask, other=-float("inf")).to(tl.float32)
        l = tl.where(mask_r[:, None], l, 0.0)  # padding rows: finite, ignored below
        m_new = tl.maximum(m, tl.max(l, axis=1))
        m_sub = tl.where(m_new == -float("inf"), 0.0, m_new)
        s = s * tl.exp(m - m_sub) + tl.sum(tl.exp(l - m_sub[:, None]), axis=1)
        m = m_new
    log_s = tl.log(s)

    # Split of each row, and the range of splits this block's valid rows touch.
    image = (row_offset + rows).to(tl.int64)
    split = ((image + 1) * num_splits - 1) // num_images
    first = (row_offset + block * BLOCK_R).to(tl.int64)
    last = (row_offset + tl.minimum(block * BLOCK_R + BLOCK_R, n_rows) - 1).to(tl.int64)
    k_first = (((first + 1) * num_splits - 1) // num_images).to(tl.int32)
    k_last = (((last + 1) * num_splits - 1) // num_images).to(tl.int32)

    # Pass 2: p = exp(l - m) / s and log p = l - m - log s per chunk; per-split column sums of p go
    # straight out, sum_y p log p is kept per row until the end. Float64 adds commute: "relaxed"
    # atomics (no fences), the totals are order-nondeterministic in the last bits only.
    plogp = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for c0 in range(0, n_cls, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask_c = cols < n_cls
        mask = mask_r[:, None] & mask_c[None, :]
        l = tl.load(row_ptr + cols[None, :] * stride_lc, mask=mask, other=-float("inf")).to(tl.float32)
        l = tl.where(mask_r[:, None], l, 0.0)
        z = l - m[:, None]
        p = tl.exp(z) / s[:, None]
        log_p = z - log_s[:, None]
        plogp += tl.sum(p * tl.where(p > 0.0, log_p, 0.0), axis=1)  # lim p->0 p log p = 0
        for k in range(k_first, k_last + 1):
            sel = mask_r & (split == k)
            p_k = tl.sum(tl.where(sel[:, None], p, 0.0), axis=0)
            tl.atomic_add(p_sum_ptr + k * n_cls + cols, p_k.to(tl.float64), mask=mask_c, sem="relaxed")
    for k in range(k_first, k_last + 1):
        h_k = tl.sum(tl.where(mask_r & (split == k), plogp, 0.0), axis=0)
        tl.atomic_add(plogp_sum_ptr + k, h_k.to(tl.float64), sem="relaxed")


# ---------------------------------------------------------------------------------------------
# Launcher


class _Blocks(NamedTuple):
    """Launch configuration of both kernels: a function of F and C only, never of B."""

    block_f: int  # gram tile edge
    block_b: int  # gram rows per MMA step
    gram_warps: int
    gram_stages: int
    block_r: int  # softmax rows per program
    block_c: int  # softmax classes per chunk
    softmax_warps: int


def _blocks(num_features: int, num_classes: int) -> _Blocks:
    """Blocks for F and C (see the header for why these)."""
    block_f = 64 if num_features >= 256 else 16
    block_c = min(triton.next_power_of_2(num_classes), 256)
    block_r = min(16, max(4, 1024 // block_c))
    return _Blocks(block_f, 32, 4, GRAM_STAGES, block_r, block_c, 4)


@on_tensor_device
def inception_stats_update(
    features: torch.Tensor, logits: torch.Tensor, totals: InceptionTotals, row_offset: int, num_images: int
) -> None:
    """Add one batch into `totals` in place with the Triton kernels (arguments already validated).

    Batches of more than MAX_ROWS rows are added in chunks of MAX_ROWS, two launches each.
    """
    n_rows, n_feat = features.shape
    n_cls = logits.shape[1]
    num_splits = totals.p_sum.shape[0]
    if features.stride(1) != 1:  # one (B, F) copy: the gram tiles need row-major panels (see the header)
        features = features.contiguous()
    blk = _blocks(n_feat, n_cls)
    nb = triton.cdiv(n_feat, blk.block_f)
    n_tiles = nb * (nb + 1) // 2
    for start in range(0, n_rows, MAX_ROWS):
        x = features[start:start + MAX_ROWS]
        l = logits[start:start + MAX_ROWS]
        rows = x.shape[0]
        _inception_stats_softmax_kernel[(triton.cdiv(rows, blk.block_r),)](
            l, totals.p_sum, totals.plogp_sum, rows, n_cls, row_offset + start, num_images, num_splits,
            l.stride(0), l.stride(1),
            BLOCK_R=blk.block_r, BLOCK_C=blk.block_c, num_warps=blk.softmax_warps,
        )
        _inception_stats_gram_kernel[(n_tiles,)](
            x, totals.shift, totals.feat_sum, totals.xtx, rows, n_feat, x.stride(0), x.stride(1),
            BLOCK_F=blk.block_f, BLOCK_B=blk.block_b, num_warps=blk.gram_warps, num_stages=blk.gram_stages,
        )


# ---------------------------------------------------------------------------------------------
# PyTorch reference (the CPU path and the test oracle)


def split_of(image: torch.Tensor, num_images: int, splits: int) -> torch.Tensor:
    """Split index k of image i: k N // S <= i < (k + 1) N // S (the AutoGAN / OpenAI IS slicing)."""
    return ((image + 1) * splits - 1) // num_images


def inception_stats_update_ref(
    features: torch.Tensor, logits: torch.Tensor, totals: InceptionTotals, row_offset: int, num_images: int
) -> InceptionTotals:
    """One update step in float64: returns new totals, `totals` is left as is.

    features (B, F), logits (B, C): any float dtype, upcast. row_offset: image index of row 0.
    """
    x = features.to(torch.float64) - totals.shift
    log_p = torch.log_softmax(logits.to(torch.float64), dim=1)
    p = log_p.exp()
    plogp = torch.where(p > 0, p * log_p, 0.0).sum(dim=1)
    image = torch.arange(row_offset, row_offset + features.shape[0], device=features.device)
    split = split_of(image, num_images, totals.p_sum.shape[0])
    return InceptionTotals(
        shift=totals.shift,
        feat_sum=totals.feat_sum + x.sum(dim=0),
        xtx=torch.addmm(totals.xtx, x.T, x),
        p_sum=totals.p_sum.index_add(0, split, p),
        plogp_sum=totals.plogp_sum.index_add(0, split, plogp),
    )


# ---------------------------------------------------------------------------------------------
# The accumulator users hold


class InceptionStats:
    """Streaming Inception Score and FID statistics of `num_images` images.

    Feed (features, logits) batches with `update` in any batch sizes; images are numbered in arrival
    order and split for IS as the AutoGAN / OpenAI code does. Totals live on `device` (default: the
    device of the first batch) in float64; `update` never syncs the host. `inception_score` and
    `fid_stats` need all `num_images` images and read the totals back (one host sync each).
    """

    def __init__(
        self,
        num_images: int,
        num_features: int = 2048,
        num_classes: int = 1008,
        splits: int = 10,
        device: torch.device | str | None = None,
    ) -> None:
        for name, value, low in (("num_features", num_features, 1), ("num_classes", num_classes, 1),
                                 ("splits", splits, 1), ("num_images", num_images, splits)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.num_images = num_images
        self.num_features = num_features
        self.num_classes = num_classes
        self.splits = splits
        self.num_seen = 0
        self.device: torch.device | None = None
        self._totals: InceptionTotals | None = None
        if device is not None:
            self._allocate(torch.device(device))

    def _allocate(self, device: torch.device) -> None:
        kw = {"dtype": torch.float64, "device": device}
        f, c, s = self.num_features, self.num_classes, self.splits
        self._totals = InceptionTotals(torch.zeros(f, **kw), torch.zeros(f, **kw), torch.zeros(f, f, **kw),
                                       torch.zeros(s, c, **kw), torch.zeros(s, **kw))
        self.device = self._totals.shift.device

    @property
    def totals(self) -> InceptionTotals | None:
        """The running float64 totals (None before the first update on a lazily placed object)."""
        return self._totals

    def reset(self) -> None:
        """Forget every image; the totals stay allocated on their device."""
        self.num_seen = 0
        if self._totals is not None:
            for t in self._totals:
                t.zero_()

    def update(self, features: torch.Tensor, logits: torch.Tensor, start: int | None = None) -> None:
        """Add a batch: features (B, num_features), logits (B, num_classes), on one device.

        `start` is the index of row 0 among all `num_images` images (which IS split each row is in);
        by default the images are numbered in arrival order. A process that scores a share of the
        images passes each batch's place in the whole set, then `all_reduce`s the totals.
        """
        check_tensor("features", features, ndim=2, contiguous=False)
        check_tensor("logits", logits, ndim=2, contiguous=False)
        check_same_device(features=features, logits=logits)
        if features.shape[1] != self.num_features:
            raise ValueError(f"features must have num_features={self.num_features} columns, got shape "
                             f"{tuple(features.shape)}")
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have num_classes={self.num_classes} columns, got shape "
                             f"{tuple(logits.shape)}")
        if logits.shape[0] != features.shape[0]:
            raise ValueError(f"features and logits must have the same number of rows, got "
                             f"{tuple(features.shape)} and {tuple(logits.shape)}")
        n = features.shape[0]
        if self.num_seen + n > self.num_images:
            raise ValueError(f"features has {n} images but only {self.num_images - self.num_seen} of "
                             f"num_images={self.num_images} remain ({self.num_seen} arrived)")
        row_offset = self.num_seen if start is None else start
        if not 0 <= row_offset <= self.num_images - n:
            raise ValueError(f"start={start} places the {n} rows outside the num_images={self.num_images} "
                             f"images")
        if self._totals is None:
            self._allocate(features.device)
        elif features.device != self.device:
            raise ValueError(f"features is on {features.device} but the statistics live on {self.device}")
        if n == 0:
            return
        features, logits = features.detach(), logits.detach()
        totals = self._totals
        if self.num_seen == 0:  # the shift c (see the header), fp32-representable
            totals.shift.copy_(features.to(torch.float32).mean(dim=0))
        if self._run_triton(features, logits, row_offset):
            inception_stats_update(features, logits, totals, row_offset, self.num_images)
        else:
            self._totals = inception_stats_update_ref(features, logits, totals, row_offset, self.num_images)
        self.num_seen += n

    def recenter_(self, shift: torch.Tensor) -> None:
        """Re-express the totals about another shift c' (exact algebra, rounded once in float64).

        With d = c - c' and n images: sum (x - c') = S1 + n d and sum (x - c')(x - c')^T =
        S2 + d S1^T + S1 d^T + n d d^T (only the upper triangle of S2 is meaningful, and stays so).
        """
        t = self._totals
        if t is None:
            raise ValueError("recenter_ needs the totals allocated (give device, or update first)")
        d = t.shift - shift.to(t.shift)
        n = float(self.num_seen)
        s1 = t.feat_sum
        t.xtx.add_(torch.outer(d, s1) + torch.outer(s1, d) + n * torch.outer(d, d))
        s1.add_(n * d)
        t.shift.copy_(shift)

    def all_reduce(self) -> None:
        """Sum the totals of every rank of the default `torch.distributed` process group, each of which
        fed its own share of the images (with `start`): afterwards every rank holds the statistics of
        all of them, as one process feeding every image would (to float64 rounding). The totals are
        first re-expressed about rank 0's shift (`recenter_`), then summed in float64, in one collective.
        """
        import torch.distributed as dist

        t = self._totals
        if t is None:
            raise ValueError("all_reduce needs the totals allocated on every rank (give device)")
        shift = t.shift.clone()
        dist.broadcast(shift, src=0)
        self.recenter_(shift)
        sums = t[1:]  # feat_sum, xtx, p_sum, plogp_sum: everything but the shift
        flat = torch.cat([x.reshape(-1) for x in sums] + [t.shift.new_tensor([self.num_seen])])
        dist.all_reduce(flat)
        offset = 0
        for x in sums:
            x.copy_(flat[offset:offset + x.numel()].view_as(x))
            offset += x.numel()
        self.num_seen = int(flat[-1].item())  # host sync

    def _run_triton(self, features: torch.Tensor, logits: torch.Tensor, row_offset: int) -> bool:
        if not use_triton(features, logits):
            return False
        if torch.float64 in (features.dtype, logits.dtype):
            if get_backend() == "triton":
                raise RuntimeError("backend 'triton' was forced but the kernel does not take float64 inputs "
                                   "(the kernel sums in fp32 tiles)")
            return False
        scratch: list[InceptionTotals] = []  # totals to time into (made once, only if timed): not the real ones

        def totals() -> InceptionTotals:
            if not scratch:
                scratch.append(InceptionTotals(*(t.clone() for t in self._totals)))
            return scratch[0]

        return keep_fused(
            "inception_stats_update", (features, logits),
            lambda: inception_stats_update(features, logits, totals(), row_offset, self.num_images),
            lambda: inception_stats_update_ref(features, logits, totals(), row_offset, self.num_images))

    def _require_all(self, what: str) -> InceptionTotals:
        if self.num_seen != self.num_images or self._totals is None:
            raise ValueError(f"{what} needs all num_images={self.num_images} images, "
                             f"{self.num_seen} arrived")
        return self._totals

    def split_sizes(self) -> list[int]:
        """Number of images in each IS split."""
        n, s = self.num_images, self.splits
        return [(k + 1) * n // s - k * n // s for k in range(s)]

    def inception_score(self) -> tuple[float, float]:
        """(mean, std) over splits of exp(E_i KL(p_i || pbar)); std is the population std (np.std)."""
        t = self._require_all("inception_score")
        count = torch.tensor(self.split_sizes(), dtype=torch.float64, device=t.p_sum.device)
        p_bar = t.p_sum / count[:, None]
        kl = t.plogp_sum / count - torch.special.xlogy(p_bar, p_bar).sum(dim=1)
        scores = torch.exp(kl).cpu().numpy()  # host sync
        return float(np.mean(scores)), float(np.std(scores))

    def fid_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (F,), sigma (F, F)) float64, as pytorch-fid: mean and np.cov(rowvar=False) (n - 1)."""
        t = self._require_all("fid_stats")
        n = self.num_seen
        if n < 2:
            raise ValueError(f"fid_stats needs at least 2 images for a covariance, num_images={n}")
        upper = torch.triu(t.xtx)
        s2 = upper + torch.triu(t.xtx, diagonal=1).T
        mu = t.shift + t.feat_sum / n
        sigma = (s2 - torch.outer(t.feat_sum, t.feat_sum) / n) / (n - 1)
        return mu.cpu().numpy(), sigma.cpu().numpy()  # host sync


__all__ = ["MAX_ROWS", "InceptionStats", "InceptionTotals", "inception_stats_update",
           "inception_stats_update_ref", "split_of"]


# ---------------------------------------------------------------------------------------------
# Launch cases for the ahead-of-time resource check (`autogan_fast.kernels.resources`)


def resource_cases(channels=()) -> list:
    """Launches of the feature / class counts the project scores with: Inception-v3 (2048, 1008) and
    the digits classifier (64, 10), in every input dtype the kernels take. Block sizes depend on F and C
    only, and each kernel reads one input, so mixed feature / logits dtypes add no compilation. Column-
    strided views (`update` accepts them) compile apart from unit strides, which Triton specializes.
    Meta tensors: nothing runs."""
    cases = []
    for n_feat, n_cls in ((2048, 1008), (64, 10)):
        def run(n_feat=n_feat, n_cls=n_cls):
            kw = {"device": "meta", "dtype": torch.float64}
            totals = InceptionTotals(torch.empty(n_feat, **kw), torch.empty(n_feat, **kw),
                                     torch.empty(n_feat, n_feat, **kw), torch.empty(10, n_cls, **kw),
                                     torch.empty(10, **kw))
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                x = torch.empty(500, n_feat, device="meta", dtype=dtype)
                l = torch.empty(500, n_cls, device="meta", dtype=dtype)
                inception_stats_update(x, l, totals, 0, 5000)
            x = torch.empty(n_feat, 500, device="meta").t()  # column stride 500: copied by the launcher
            l = torch.empty(n_cls, 500, device="meta").t()  # row stride 1
            inception_stats_update(x, l, totals, 0, 5000)
            l = torch.empty(500, 2 * n_cls, device="meta")[:, ::2]  # neither stride 1
            inception_stats_update(x, l, totals, 0, 5000)
        cases.append((f"stats F={n_feat} C={n_cls}", run))
    return cases
