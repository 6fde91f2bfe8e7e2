"""Inception Score and FID statistics of a stream of Inception outputs, one fused pass per batch.

What is fused. For a batch of B images with pool features x (B, F) and logits l (B, C), one launch of
`_inception_stats_update_kernel` does all the per-batch work the two metrics need and adds it into
float64 running totals on the device (no host sync):
  - softmax of each logits row (max-subtracted, log-sum-exp form), then per split k of the images:
    sum_i p_i (C,) and sum_i sum_y p_iy log p_iy (p log p taken as 0 where p underflows to 0);
  - sum_i (x_i - c) (F,) and sum_i (x_i - c)^T (x_i - c) (F, F), c a fixed shift (below).
The grid holds two kinds of programs: T = nb (nb + 1) / 2 "gram" programs, one per tile of the upper
block triangle of X^T X (nb = cdiv(F, BLOCK_F); the lower triangle is the mirror and is never
computed), and cdiv(B, BLOCK_R) "softmax" programs, one per block of logits rows. Splits follow the
AutoGAN / OpenAI IS code: image i (numbered in arrival order) is in split k iff
k N // S <= i < (k + 1) N // S, i.e. k = ((i + 1) S - 1) // N; a block of rows may straddle split
borders, so a softmax program loops over the (usually 1-2) splits its rows touch and adds each
split's partial sums with float64 atomics.

Precision. The tile products run in fp32 (`tl.dot`, input_precision="tf32x3": three TF32 MMAs per
product, ~fp32 accuracy at tensor-core speed; never plain TF32, whose 2^-11 error would show in FID)
and accumulate over at most MAX_ROWS = 1024 rows (the launcher splits larger batches), then are added
into the float64 totals. Per element the fp32 partial has error <= ~B u32 sum_b |x~_bi x~_bj|
(u32 = 6e-8; typically ~sqrt(B) u32), and across batches float64 adds lose nothing measurable. The
catch is cancellation: sigma = (S2 - S1 S1^T / n) / (n - 1) is small next to S2 when |mean| >> std,
and the fp32 error is relative to S2. So the totals are of x~ = x - c with c the mean of the FIRST
batch (stored once, fp32-representable): then S2 ~ n sigma, S1 ~ 0, and the error stays relative to
the covariance itself (~1e-6), whatever the features' mean; the formula is exact for any c, so the
result equals the two-pass float64 np.cov to ~1e-6 relative, far below FID's sampling noise. The
error grows by 1 + |mean - c|^2 / var: about 2x if the first batch is a single image. A running mean
(Chan / Welford merges) would track the mean better but needs an extra (F, F) pass per batch to
re-center the totals; a fixed shift costs nothing per batch. Atomic float64 adds make the IS totals
order-nondeterministic in the last bits.

Tuned for the Inception-v3 shapes: F = 2048, C = 1008, B = 100-500 on an H100 (BLOCK_F 128 -> 136
gram tiles, about one wave on 132 SMs; BLOCK_B 32 rows per MMA step); the blocks were chosen on paper,
not yet timed. Where it loses: the upper triangle of the float64 (F, F) totals (~17 MiB at F = 2048)
is read and written on every update, so small batches (B < ~64) are bound by that traffic and cost
nearly what B = 256 does: feed the largest batches you have. Small F (the digits feature net) is
launch-bound either way.

Float64 inputs and C > MAX_CLASSES run the PyTorch reference (under the "auto" backend), which is also
the CPU path and the test oracle: `inception_stats_update_ref`.
"""

from typing import NamedTuple

import numpy as np
import torch

from ._dispatch import check_same_device, check_tensor, get_backend, triton_available, use_triton

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
MAX_CLASSES = 16384  # one register tile per logits row block in the softmax programs


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


@triton.jit
def _inception_stats_gram_tile(
    x_ptr,  # (B, F) features
    shift_ptr,  # (F,) float64 shift c
    feat_sum_ptr,  # (F,) float64 sum of x - c, updated in place
    xtx_ptr,  # (F, F) float64 sum of (x - c)^T (x - c), contiguous, updated in place
    tile,  # index of this tile in the upper block triangle, 0 <= tile < nb (nb + 1) / 2
    n_rows,  # B
    n_feat,  # F
    stride_xb,  # x row stride
    stride_xf,  # x column stride
    BLOCK_F: tl.constexpr,  # tile edge in features
    BLOCK_B: tl.constexpr,  # rows per tl.dot step (the K of the MMA)
):
    # tile -> (i, j), j <= i, enumerating the lower triangle row by row: tile = i (i + 1) / 2 + j.
    # The fp32 square root may be off by one near perfect squares; the two corrections fix that.
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
        mask_a = mask_b[:, None] & mask_m[None, :]
        a = tl.load(x_ptr + rows[:, None] * stride_xb + offs_m[None, :] * stride_xf, mask=mask_a, other=0.0)
        a = tl.where(mask_a, a.to(tl.float32) - c_m[None, :], 0.0)
        mask_c = mask_b[:, None] & mask_n[None, :]
        b = tl.load(x_ptr + rows[:, None] * stride_xb + offs_n[None, :] * stride_xf, mask=mask_c, other=0.0)
        b = tl.where(mask_c, b.to(tl.float32) - c_n[None, :], 0.0)
        acc = tl.dot(tl.trans(a), b, acc, input_precision="tf32x3")
        col_sum += tl.sum(b, axis=0)

    # Per-batch fp32 partial -> float64 total. This program owns the tile: no atomics needed.
    out = xtx_ptr + offs_m[:, None] * n_feat + offs_n[None, :]
    mask_o = mask_m[:, None] & mask_n[None, :]
    total = tl.load(out, mask=mask_o, other=0.0)
    tl.store(out, total + acc.to(tl.float64), mask=mask_o)
    # Each feature block has exactly one diagonal tile (offs_m == offs_n): that one adds the feature sums.
    mask_s = mask_n & (offs_m == offs_n)
    fsum = tl.load(feat_sum_ptr + offs_n, mask=mask_s, other=0.0)
    tl.store(feat_sum_ptr + offs_n, fsum + col_sum.to(tl.float64), mask=mask_s)


@triton.jit
def _inception_stats_softmax_rows(
    logits_ptr,  # (B, C) logits
    p_sum_ptr,  # (S, C) float64 per-split sum of p, atomically updated
    plogp_sum_ptr,  # (S,) float64 per-split sum of sum_y p log p, atomically updated
    block,  # index of this block of BLOCK_R rows
    n_rows,  # B
    n_cls,  # C
    row_offset,  # image index of row 0 of this batch
    num_images,  # N
    num_splits,  # S
    stride_lb,  # logits row stride
    stride_lc,  # logits column stride
    BLOCK_R: tl.constexpr,  # rows per program
    BLOCK_C: tl.constexpr,  # next power of two >= C
):
    rows = block * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    mask_r = rows < n_rows
    mask_c = cols < n_cls
    mask = mask_r[:, None] & mask_c[None, :]
    l = tl.load(logits_ptr + rows[:, None] * stride_lb + cols[None, :] * stride_lc, mask=mask,
                other=-float("inf")).to(tl.float32)
    l = tl.where(mask_r[:, None], l, 0.0)  # padding rows: finite, ignored below
    z = l - tl.max(l, axis=1)[:, None]
    e = tl.exp(z)
    denom = tl.sum(e, axis=1)
    p = e / denom[:, None]
    log_p = z - tl.log(denom)[:, None]
    plogp = tl.sum(p * tl.where(p > 0.0, log_p, 0.0), axis=1)  # (BLOCK_R,); lim p->0 p log p = 0

    # Split of each row, and the range of splits this block's valid rows touch.
    image = (row_offset + rows).to(tl.int64)
    split = ((image + 1) * num_splits - 1) // num_images
    first = (row_offset + block * BLOCK_R).to(tl.int64)
    last = (row_offset + tl.minimum(block * BLOCK_R + BLOCK_R, n_rows) - 1).to(tl.int64)
    k_first = (((first + 1) * num_splits - 1) // num_images).to(tl.int32)
    k_last = (((last + 1) * num_splits - 1) // num_images).to(tl.int32)
    for k in range(k_first, k_last + 1):
        sel = mask_r & (split == k)
        p_k = tl.sum(tl.where(sel[:, None], p, 0.0), axis=0)
        tl.atomic_add(p_sum_ptr + k * n_cls + cols, p_k.to(tl.float64), mask=mask_c)
        h_k = tl.sum(tl.where(sel, plogp, 0.0), axis=0)
        tl.atomic_add(plogp_sum_ptr + k, h_k.to(tl.float64))


@triton.jit(do_not_specialize=["n_rows", "row_offset"])
def _inception_stats_update_kernel(
    x_ptr,  # (B, F) features, fp32 / fp16 / bf16
    logits_ptr,  # (B, C) logits, fp32 / fp16 / bf16
    shift_ptr,  # (F,) float64 shift c
    feat_sum_ptr,  # (F,) float64 running sum of x - c
    xtx_ptr,  # (F, F) float64 running sum of (x - c)^T (x - c), upper block triangle
    p_sum_ptr,  # (S, C) float64 running per-split sum of p
    plogp_sum_ptr,  # (S,) float64 running per-split sum of sum_y p log p
    n_rows,  # B, changes per call: not specialized
    n_feat,  # F
    n_cls,  # C
    row_offset,  # image index of row 0, changes per call: not specialized
    num_images,  # N
    num_splits,  # S
    stride_xb,  # features row stride
    stride_xf,  # features column stride
    stride_lb,  # logits row stride
    stride_lc,  # logits column stride
    n_tiles,  # nb (nb + 1) / 2 gram programs come first in the grid, softmax programs after
    BLOCK_F: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < n_tiles:
        _inception_stats_gram_tile(x_ptr, shift_ptr, feat_sum_ptr, xtx_ptr, pid, n_rows, n_feat,
                                   stride_xb, stride_xf, BLOCK_F, BLOCK_B)
    else:
        _inception_stats_softmax_rows(logits_ptr, p_sum_ptr, plogp_sum_ptr, pid - n_tiles, n_rows, n_cls,
                                      row_offset, num_images, num_splits, stride_lb, stride_lc,
                                      BLOCK_R, BLOCK_C)


# ---------------------------------------------------------------------------------------------
# Launcher


def _blocks(num_features: int, num_classes: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_F, BLOCK_B, BLOCK_R, BLOCK_C, num_warps): a function of F and C only, never of B."""
    block_f = 128 if num_features >= 1024 else 64 if num_features >= 256 else 16
    block_c = triton.next_power_of_2(num_classes)
    block_r = max(1, min(16, 8192 // block_c))
    return block_f, 32, block_r, block_c, 8 if block_f == 128 else 4


def inception_stats_update(
    features: torch.Tensor, logits: torch.Tensor, totals: InceptionTotals, row_offset: int, num_images: int
) -> None:
    """Add one batch into `totals` in place with the Triton kernel (arguments already validated).

    Batches of more than MAX_ROWS rows are added in chunks of MAX_ROWS, one launch each.
    """
    n_rows, n_feat = features.shape
    n_cls = logits.shape[1]
    num_splits = totals.p_sum.shape[0]
    block_f, block_b, block_r, block_c, num_warps = _blocks(n_feat, n_cls)
    nb = triton.cdiv(n_feat, block_f)
    n_tiles = nb * (nb + 1) // 2
    for start in range(0, n_rows, MAX_ROWS):
        x = features[start:start + MAX_ROWS]
        l = logits[start:start + MAX_ROWS]
        rows = x.shape[0]
        grid = (n_tiles + triton.cdiv(rows, block_r),)
        _inception_stats_update_kernel[grid](
            x, l, totals.shift, totals.feat_sum, totals.xtx, totals.p_sum, totals.plogp_sum,
            rows, n_feat, n_cls, row_offset + start, num_images, num_splits,
            x.stride(0), x.stride(1), l.stride(0), l.stride(1), n_tiles,
            BLOCK_F=block_f, BLOCK_B=block_b, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=num_warps,
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

    def update(self, features: torch.Tensor, logits: torch.Tensor) -> None:
        """Add a batch: features (B, num_features), logits (B, num_classes), on one device."""
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
        if self._run_triton(features, logits):
            inception_stats_update(features, logits, totals, self.num_seen, self.num_images)
        else:
            self._totals = inception_stats_update_ref(features, logits, totals, self.num_seen,
                                                      self.num_images)
        self.num_seen += n

    def _run_triton(self, features: torch.Tensor, logits: torch.Tensor) -> bool:
        if not use_triton(features, logits):
            return False
        reason = None
        if torch.float64 in (features.dtype, logits.dtype):
            reason = "float64 inputs (the kernel sums in fp32 tiles)"
        elif self.num_classes > MAX_CLASSES:
            reason = f"num_classes > {MAX_CLASSES}"
        if reason is None:
            return True
        if get_backend() == "triton":
            raise RuntimeError(f"backend 'triton' was forced but the kernel does not take {reason}")
        return False

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
    the digits classifier (64, 10); block sizes depend on F and C only. Meta tensors: nothing runs."""
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
        cases.append((f"stats F={n_feat} C={n_cls}", run))
    return cases
