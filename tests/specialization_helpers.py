"""What a Triton kernel compiles a new variant for: its constexpr parameters, and the specialization key of
each launch (constexpr values, tensor dtypes, integer divisibility), recorded through pre-run hooks.

The kernel tests use it to check that per-call values (sizes, strides) are not constexpr and that a new
batch or resolution reuses the kernels compiled for the first."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import pytest
import torch


def constexpr_names(kernel) -> set[str]:
    """The parameters of a `@triton.jit` kernel annotated `tl.constexpr`."""
    annotations = inspect.get_annotations(kernel.fn)
    return {name for name, ann in annotations.items() if "constexpr" in str(ann)}


def specialization_key(kernel, args, kwargs) -> tuple:
    """What Triton keys its compile cache on: constexpr values, dtypes, and integer divisibility."""
    params = inspect.signature(kernel.fn).parameters
    bound = inspect.signature(kernel.fn).bind(*args, **{k: v for k, v in kwargs.items() if k in params})
    constexprs = constexpr_names(kernel)
    key = []
    for name, value in bound.arguments.items():
        if name in constexprs:
            key.append((name, str(value)))
        elif isinstance(value, torch.Tensor):
            key.append((name, value.dtype))
        elif isinstance(value, int):
            key.append((name, value == 1, value % 16 == 0))
        else:
            key.append((name, type(value).__name__))
    return tuple(key)


@contextlib.contextmanager
def recorded_specializations(kernels) -> Iterator[dict[str, list[tuple]]]:
    """{kernel name: [specialization key of each launch]} of the launches made inside the block (the
    interpreter runs the hooks too); skips the test on a Triton without pre-run hooks."""
    if not all(hasattr(k, "add_pre_run_hook") for k in kernels):
        pytest.skip("this Triton has no pre-run hooks")
    seen = {k.__name__: [] for k in kernels}
    hooks = []
    for kernel in kernels:
        def hook(*args, _kernel=kernel, **kwargs):
            seen[_kernel.__name__].append(specialization_key(_kernel, args, kwargs))
        kernel.add_pre_run_hook(hook)
        hooks.append(hook)
    try:
        yield seen
    finally:
        for kernel, hook in zip(kernels, hooks, strict=True):
            kernel.pre_run_hooks.remove(hook)
