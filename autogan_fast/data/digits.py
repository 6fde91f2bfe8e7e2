"""The embedded default data: scikit-learn's bundled handwritten digits (1,797 grey 8x8 images).

They ship inside scikit-learn, so the project runs and tests itself with no download.
"""

from __future__ import annotations

import numpy as np
import torch

DIGITS_RESOLUTION = 8
DIGITS_MAX_VALUE = 16  # sklearn stores the digits as integers 0..16


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 8, 8) in 0..255, labels int64 (N,)) in scikit-learn's order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = np.rint(bunch.images * (255.0 / DIGITS_MAX_VALUE)).astype(np.uint8)
    return grey, bunch.target.astype(np.int64)


def load_digits_images() -> torch.Tensor:
    """The digits as uint8 RGB images (N, 3, 8, 8): the grey plane repeated."""
    grey, _ = load_digits_arrays()
    return torch.from_numpy(grey)[:, None].repeat(1, 3, 1, 1).contiguous()
