"""Fused ops of autogan-fast, usable by any PyTorch code.

Each op dispatches to a Triton kernel on CUDA tensors where it timed faster than its PyTorch reference
(once per shape, `autoselect_choices()` lists the choices) and to the reference elsewhere;
`set_backend` / `use_backend` force one side. This package depends on torch and triton only.
"""

from ._dispatch import BACKEND_ENV, BACKENDS, get_backend, set_backend, triton_available, use_backend
from .autoselect import autoselect_choices, reset_autoselect
from .bilinear_upsample import bilinear_upsample, bilinear_upsample_ref
from .inception_stats import InceptionStats, inception_stats_update_ref
from .spectral_norm import (
    SpectralNormGroup,
    remove_spectral_norm,
    spectral_norm,
    spectral_norm_weight,
    spectral_norm_weight_ref,
    spectral_norm_weights,
)
from .upsample_conv import invalidate_weight_caches, upsample_conv2d, upsample_conv2d_ref

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "InceptionStats",
    "SpectralNormGroup",
    "autoselect_choices",
    "bilinear_upsample",
    "bilinear_upsample_ref",
    "get_backend",
    "inception_stats_update_ref",
    "invalidate_weight_caches",
    "remove_spectral_norm",
    "reset_autoselect",
    "set_backend",
    "spectral_norm",
    "spectral_norm_weight",
    "spectral_norm_weight_ref",
    "spectral_norm_weights",
    "triton_available",
    "upsample_conv2d",
    "upsample_conv2d_ref",
    "use_backend",
]
