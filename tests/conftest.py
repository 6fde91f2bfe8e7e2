# The Triton interpreter must be chosen before any module defining a @triton.jit kernel is imported:
# it is read when the decorator runs. Without CUDA every kernel test runs on the CPU through it.
import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The embedded digits classifier is cached under $XDG_CACHE_HOME: give the test session its own,
# so tests neither read a stale cache nor write into the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="autogan-fast-test-cache-")

import pytest


def pytest_collection_modifyitems(config, items):
    """GPU-marked tests skip cleanly on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
