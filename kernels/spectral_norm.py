"""Spectral normalization of a group of layers in one launch: power iteration, sigma and W / sigma.

What is fused. `torch.nn.utils.spectral_norm` runs about 13 small kernels per layer per forward (two
mat-vecs, two norms, two divides, two clones, a dot, the final divide); an AutoGAN discriminator has
11 SN layers and is called 2-3 times per step. Here ONE forward launch does, for every layer of a
group, with one program per layer: `n_power_iterations` steps of v = normalize(W^T u, eps),
u = normalize(W v, eps) (in place on the u, v buffers, as torch does), sigma = u . (W v), the copies
of u, v the backward needs (torch's clones), and W_sn = W / sigma. ONE backward launch computes
dL/dW = (g - <g, W_sn> u v^T) / sigma for every layer (u, v constants, as in torch): the grouped
backward is a Triton kernel too; the incoming gradients are packed with one `torch.cat`.
Layers are found through a per-group int64 table (addresses of W, u, v; rows; columns; offsets of the
layer in the packed outputs), built once per set of addresses and cached, so a module's parameters
and buffers cost no host work after the first call. Outputs are views of one packed buffer.

Tuned for fp32 layers of 1..256 rows and in*kh*kw up to 128*9 = 1152 (the AutoGAN / SN-GAN
discriminators): tiles of up to 32 x 128 fp32, loops over the rest; block sizes are the only
constexprs (powers of two of the largest layer, clamped), so new layer sizes reuse the compiled kernel.

Where it loses. One program per layer: a group of few large layers (e.g. 1024 x 4608) uses few SMs
and reads W about 2n + 2 times from L2, where cuBLAS mat-vecs would spread each layer over the GPU;
for such layers the reference is likely faster. Block sizes and num_warps are unmeasured guesses (this
was written without a GPU). fp32 only (other dtypes take the reference). Not registered
with `torch.library.triton_op`: the kernel writes u, v through addresses from the table, which
functionalization cannot see, so `torch.compile` should not trace through it (CUDA graphs are fine).
The address table is built on the host the first time a set of addresses is seen: do that before
graph capture (one eager warm-up step); the last 256 tables are kept, and a captured graph needs its
table alive.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

from ._dispatch import check_same_device, check_tensor, get_backend, use_triton

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

_META = 8  # int64 fields per layer in the table: addr W, addr u, addr v, H, K, off W_sn, off u, off v
_MAX_BLOCK_H = 32
_MAX_BLOCK_K = 128
_MIN_BLOCK = 16

# ---------------------------------------------------------------------------------------------
# Triton kernels.

if triton is not None:

    @triton.jit
    def _mv_t(w_ptr, x_ptr, y_ptr, H, K, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
        """y = W^T x for a row-major (H, K) W; returns ||y||^2."""
        offs_h = tl.arange(0, BLOCK_H)
        offs_k = tl.arange(0, BLOCK_K)
        sq = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + offs_k
            acc = tl.zeros([BLOCK_K], dtype=tl.float32)
            for h0 in range(0, H, BLOCK_H):
                h = h0 + offs_h
                w = tl.load(w_ptr + h[:, None] * K + k[None, :],
                            mask=(h[:, None] < H) & (k[None, :] < K), other=0.0)
                x = tl.load(x_ptr + h, mask=h < H, other=0.0)
                acc += tl.sum(w * x[:, None], axis=0)
            tl.store(y_ptr + k, acc, mask=k < K)
            sq += acc * acc
        return tl.sum(sq, axis=0)

    @triton.jit
    def _mv(w_ptr, x_ptr, H, K, h, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
        """(W x)[h] for one block of BLOCK_H row indices h (rows >= H give 0)."""
        offs_k = tl.arange(0, BLOCK_K)
        acc = tl.zeros([BLOCK_H], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + offs_k
            w = tl.load(w_ptr + h[:, None] * K + k[None, :],
                        mask=(h[:, None] < H) & (k[None, :] < K), other=0.0)
            x = tl.load(x_ptr + k, mask=k < K, other=0.0)
            acc += tl.sum(w * x[None, :], axis=1)
        return acc

    @triton.jit
    def _divide_(x_ptr, n, denom, BLOCK: tl.constexpr):
        """x[:n] /= denom, in place."""
        for i0 in range(0, n, BLOCK):
            i = i0 + tl.arange(0, BLOCK)
            x = tl.load(x_ptr + i, mask=i < n, other=0.0)
            tl.store(x_ptr + i, x / denom, mask=i < n)

    @triton.jit(do_not_specialize=["n_iter"])
    def _spectral_norm_fwd_kernel(
        meta_ptr,  # (L, 8) int64: addr W (H, K), addr u (H,), addr v (K,), H, K, off W_sn, off u, off v
        w_sn_ptr,  # (sum H*K,) fp32 out: W / sigma of every layer, packed
        u_out_ptr,  # (sum H,) fp32 out: the u sigma used (torch's clone), packed
        v_out_ptr,  # (sum K,) fp32 out: the v sigma used, packed
        sigma_ptr,  # (L,) fp32 out: sigma = u . (W v)
        n_iter,  # power iterations, updating u, v in place (0 in eval)
        eps,  # F.normalize's eps: x / max(||x||, eps)
        BLOCK_H: tl.constexpr,  # rows per tile, power of two
        BLOCK_K: tl.constexpr,  # columns per tile, power of two
    ):
        pid = tl.program_id(0)
        meta = meta_ptr + pid * 8
        w_ptr = tl.load(meta + 0).to(tl.pointer_type(tl.float32))
        u_ptr = tl.load(meta + 1).to(tl.pointer_type(tl.float32))
        v_ptr = tl.load(meta + 2).to(tl.pointer_type(tl.float32))
        H = tl.load(meta + 3)
        K = tl.load(meta + 4)
        w_sn_ptr += tl.load(meta + 5)
        u_out_ptr += tl.load(meta + 6)
        v_out_ptr += tl.load(meta + 7)
        offs_h = tl.arange(0, BLOCK_H)
        offs_k = tl.arange(0, BLOCK_K)

        # Power iteration on the buffers themselves (torch's `out=u`, `out=v`). The barriers make
        # each pass's stores visible to the whole program before the next pass reads them.
        for _ in range(n_iter):
            sq = _mv_t(w_ptr, u_ptr, v_ptr, H, K, BLOCK_H, BLOCK_K)  # v = W^T u
            tl.debug_barrier()
            _divide_(v_ptr, K, tl.maximum(tl.sqrt(sq), eps), BLOCK_K)
            tl.debug_barrier()
            sq_u = tl.zeros([BLOCK_H], dtype=tl.float32)
            for h0 in range(0, H, BLOCK_H):  # u = W v
                h = h0 + offs_h
                t = _mv(w_ptr, v_ptr, H, K, h, BLOCK_H, BLOCK_K)
                tl.store(u_ptr + h, t, mask=h < H)
                sq_u += t * t
            tl.debug_barrier()
            _divide_(u_ptr, H, tl.maximum(tl.sqrt(tl.sum(sq_u, axis=0)), eps), BLOCK_H)
            tl.debug_barrier()

        # sigma = u . (W v), recomputed like torch; keep the u, v it used for the backward.
        sig = tl.zeros([BLOCK_H], dtype=tl.float32)
        for h0 in range(0, H, BLOCK_H):
            h = h0 + offs_h
            t = _mv(w_ptr, v_ptr, H, K, h, BLOCK_H, BLOCK_K)
            u = tl.load(u_ptr + h, mask=h < H, other=0.0)
            tl.store(u_out_ptr + h, u, mask=h < H)
            sig += u * t
        sigma = tl.sum(sig, axis=0)
        tl.store(sigma_ptr + pid, sigma)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + offs_k
            tl.store(v_out_ptr + k, tl.load(v_ptr + k, mask=k < K), mask=k < K)

        for h0 in range(0, H, BLOCK_H):  # W_sn = W / sigma
            h = h0 + offs_h
            for k0 in range(0, K, BLOCK_K):
                k = k0 + offs_k
                idx = h[:, None] * K + k[None, :]
                mask = (h[:, None] < H) & (k[None, :] < K)
                w = tl.load(w_ptr + idx, mask=mask, other=0.0)
                tl.store(w_sn_ptr + idx, w / sigma, mask=mask)

    @triton.jit
    def _spectral_norm_bwd_kernel(
        meta_ptr,  # (L, 8) int64: as in the forward (uses H, K and the offsets)
        grad_ptr,  # (sum H*K,) fp32: dL/dW_sn, packed
        w_sn_ptr,  # (sum H*K,) fp32: forward output W / sigma, packed
        u_ptr,  # (sum H,) fp32: u of the forward, packed
        v_ptr,  # (sum K,) fp32: v of the forward, packed
        sigma_ptr,  # (L,) fp32: sigma of the forward
        grad_w_ptr,  # (sum H*K,) fp32 out: dL/dW = (g - <g, W_sn> u v^T) / sigma, packed
        BLOCK_H: tl.constexpr,  # rows per tile, power of two
        BLOCK_K: tl.constexpr,  # columns per tile, power of two
    ):
        pid = tl.program_id(0)
        meta = meta_ptr + pid * 8
        H = tl.load(meta + 3)
        K = tl.load(meta + 4)
        off_w = tl.load(meta + 5)
        grad_ptr += off_w
        w_sn_ptr += off_w
        grad_w_ptr += off_w
        u_ptr += tl.load(meta + 6)
        v_ptr += tl.load(meta + 7)
        sigma = tl.load(sigma_ptr + pid)
        offs_h = tl.arange(0, BLOCK_H)
        offs_k = tl.arange(0, BLOCK_K)

        dot = tl.zeros([BLOCK_H, BLOCK_K], dtype=tl.float32)  # <g, W_sn> = sigma * <g, W> / sigma^2
        for h0 in range(0, H, BLOCK_H):
            h = h0 + offs_h
            for k0 in range(0, K, BLOCK_K):
                k = k0 + offs_k
                idx = h[:, None] * K + k[None, :]
                mask = (h[:, None] < H) & (k[None, :] < K)
                g = tl.load(grad_ptr + idx, mask=mask, other=0.0)
                w = tl.load(w_sn_ptr + idx, mask=mask, other=0.0)
                dot += g * w
        s = tl.sum(tl.sum(dot, axis=1), axis=0)

        for h0 in range(0, H, BLOCK_H):
            h = h0 + offs_h
            u = tl.load(u_ptr + h, mask=h < H, other=0.0)
            for k0 in range(0, K, BLOCK_K):
                k = k0 + offs_k
                idx = h[:, None] * K + k[None, :]
                mask = (h[:, None] < H) & (k[None, :] < K)
                g = tl.load(grad_ptr + idx, mask=mask, other=0.0)
                v = tl.load(v_ptr + k, mask=k < K, other=0.0)
                tl.store(grad_w_ptr + idx, (g - s * u[:, None] * v[None, :]) / sigma, mask=mask)


# ---------------------------------------------------------------------------------------------
# Launchers.


def _block(n: int, cap: int) -> int:
    return min(max(triton.next_power_of_2(n), _MIN_BLOCK), cap)


class _Plan:
    """The layer table of one group of (W, u, v) addresses, and how the packed outputs split."""

    def __init__(self, weights, us, vs) -> None:
        self.shapes = [tuple(w.shape) for w in weights]
        self.rows = [w.shape[0] for w in weights]
        self.cols = [w.numel() // w.shape[0] for w in weights]
        self.sizes = [w.numel() for w in weights]
        rows = []
        off_w = off_u = off_v = 0
        for w, u, v, h, k in zip(weights, us, vs, self.rows, self.cols, strict=True):
            rows.append([w.data_ptr(), u.data_ptr(), v.data_ptr(), h, k, off_w, off_u, off_v])
            off_w, off_u, off_v = off_w + h * k, off_u + h, off_v + k
        self.total_w, self.total_u, self.total_v = off_w, off_u, off_v
        self.meta = torch.tensor(rows, dtype=torch.int64).to(weights[0].device)
        self.block_h = _block(max(self.rows), _MAX_BLOCK_H)
        self.block_k = _block(max(self.cols), _MAX_BLOCK_K)

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [part.view(shape) for part, shape in zip(flat.split(self.sizes), self.shapes, strict=True)]


_plans: OrderedDict[tuple, _Plan] = OrderedDict()
_MAX_PLANS = 256


def _plan(weights, us, vs) -> _Plan:
    """Cached by the addresses it holds: a hit always describes the given tensors."""
    layers = zip(weights, us, vs, strict=True)
    key = (weights[0].device,
           *((w.data_ptr(), tuple(w.shape), u.data_ptr(), v.data_ptr()) for w, u, v in layers))
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _Plan(weights, us, vs)
        if len(_plans) > _MAX_PLANS:
            _plans.popitem(last=False)
    else:
        _plans.move_to_end(key)
    return plan


def spectral_norm_forward(weights, us, vs, n_power_iterations: int, eps: float, training: bool):
    """Launch the grouped forward; returns (W_sn packed, u packed, v packed, sigma, plan).

    Updates every u, v in place when training. Arguments must already be checked (fp32, contiguous).
    """
    plan = _plan(weights, us, vs)
    dev = weights[0].device
    w_sn = torch.empty(plan.total_w, device=dev, dtype=torch.float32)
    u_out = torch.empty(plan.total_u, device=dev, dtype=torch.float32)
    v_out = torch.empty(plan.total_v, device=dev, dtype=torch.float32)
    sigma = torch.empty(len(weights), device=dev, dtype=torch.float32)
    n_iter = n_power_iterations if training else 0
    _spectral_norm_fwd_kernel[(len(weights),)](
        plan.meta, w_sn, u_out, v_out, sigma, n_iter, float(eps),
        BLOCK_H=plan.block_h, BLOCK_K=plan.block_k, num_warps=4)
    if n_iter > 0:  # the kernel wrote u, v through raw addresses: tell autograd, as an `out=` would
        for t in (*us, *vs):
            _increment_version(t)
    return w_sn, u_out, v_out, sigma, plan


def spectral_norm_backward(plan: _Plan, grad: torch.Tensor, w_sn: torch.Tensor, u: torch.Tensor,
                           v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Launch the grouped backward on packed fp32 tensors; returns dL/dW packed."""
    grad_w = torch.empty_like(w_sn)
    _spectral_norm_bwd_kernel[(len(plan.rows),)](
        plan.meta, grad, w_sn, u, v, sigma, grad_w,
        BLOCK_H=plan.block_h, BLOCK_K=plan.block_k, num_warps=4)
    return grad_w


def _increment_version(t: torch.Tensor) -> None:
    fn = getattr(torch.autograd.graph, "increment_version", None)
    if fn is not None:
        fn(t)
    else:  # older torch
        torch._C._increment_version(t)


# ---------------------------------------------------------------------------------------------
# Autograd.


class _SpectralNormFunction(torch.autograd.Function):
    """Grouped W / sigma(W) with u, v constants in the backward (as torch's spectral_norm)."""

    @staticmethod
    def forward(ctx, uv, n_power_iterations, eps, training, *weights):
        us, vs = uv
        w_sn, u, v, sigma, plan = spectral_norm_forward(weights, us, vs, n_power_iterations, eps, training)
        ctx.save_for_backward(w_sn, u, v, sigma)
        ctx.plan = plan
        ctx.set_materialize_grads(False)  # an unused layer keeps grad None, as with torch's hooks
        return tuple(plan.split(w_sn))

    @staticmethod
    def backward(ctx, *grads):
        w_sn, u, v, sigma = ctx.saved_tensors
        grad = torch.cat([w_sn.new_zeros(n) if g is None else g.reshape(-1).to(torch.float32)
                          for g, n in zip(grads, ctx.plan.sizes, strict=True)])
        grad_w = spectral_norm_backward(ctx.plan, grad, w_sn, u, v, sigma)
        grad_ws = ctx.plan.split(grad_w)
        return (None, None, None, None,
                *(None if g is None else gw for g, gw in zip(grads, grad_ws, strict=True)))


def _kernel_runs(tensors) -> bool:
    """Dispatch: Triton where it can run and the dtype is fp32 (the kernel's only dtype)."""
    if not use_triton(*tensors):
        return False
    if any(t.dtype != torch.float32 for t in tensors):
        if get_backend() == "triton":
            raise RuntimeError("backend 'triton' was forced but the spectral-norm kernel is fp32 only, got "
                               f"{sorted({str(t.dtype) for t in tensors})}")
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Argument checks (both backends).


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
    """weight / sigma(weight); in training, first `n_power_iterations` power steps update u, v in place."""
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
    _check_layer(None, weight, u, v)
    if _kernel_runs((weight, u, v)):
        (out,) = _SpectralNormFunction.apply(([u], [v]), n_power_iterations, eps, training, weight)
        return out
    return spectral_norm_weight_ref(weight, u, v, n_power_iterations, eps, training)


def spectral_norm_weights(weights, us, vs, n_power_iterations: int = 1, eps: float = 1e-12,
                          training: bool = True) -> list[torch.Tensor]:
    """`spectral_norm_weight` for a list of layers; on the Triton path, one launch for all of them."""
    _check_options(n_power_iterations, eps, training)
    weights, us, vs = list(weights), list(us), list(vs)
    if not weights or not len(weights) == len(us) == len(vs):
        raise ValueError(f"weights, us, vs must be non-empty lists of one length, got "
                         f"{len(weights)}, {len(us)}, {len(vs)}")
    for i, (w, u, v) in enumerate(zip(weights, us, vs, strict=True)):
        _check_layer(i, w, u, v)
        check_same_device(**{"weights[0]": weights[0], f"weights[{i}]": w})
    if _kernel_runs((*weights, *us, *vs)):
        return list(_SpectralNormFunction.apply((us, vs), n_power_iterations, eps, training, *weights))
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


def resource_cases(channels=(64, 128, 256)) -> list:
    """Every block size the launcher can pick (BLOCK_H 16..32 x BLOCK_K 16..128), forward with and
    without power steps, and backward. CPU tensors: the plan table needs distinct addresses."""
    cases = []
    for rows in (16, 32):
        for cols in (16, 32, 64, 128):
            def run(rows=rows, cols=cols):
                w, u, v = torch.zeros(rows, cols), torch.ones(rows), torch.ones(cols)
                for training in (True, False):
                    w_sn, u_o, v_o, sigma, plan = spectral_norm_forward([w], [u], [v], 1, 1e-12, training)
                spectral_norm_backward(plan, w_sn, w_sn, u_o, v_o, sigma)
            cases.append((f"sn rows={rows} cols={cols}", run))
    return cases
