"""autogan-fast: AutoGAN neural architecture search, fast on one GPU."""

import sys
from pathlib import Path

from setuptools import setup

install_requires = [
    "torch>=2.4",
    "numpy",
    "scipy>=1.15",  # stats.bootstrap(rng=...)
    "pillow",
    "tqdm",
    "scikit-learn",  # ships the embedded default data (handwritten digits)
]
if sys.platform.startswith("linux"):
    install_requires.append("triton>=3.0")

setup(
    name="autogan-fast",
    version="0.1.0",
    description="AutoGAN (neural architecture search for GANs) with fused Triton kernels and CUDA graphs",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # `kernels/` is installed as `autogan_fast.kernels`: PyPI has an unrelated top-level `kernels`.
    packages=["autogan_fast", "autogan_fast.models", "autogan_fast.metrics", "autogan_fast.data", "autogan_fast.nas",
              "autogan_fast.engines", "autogan_fast.study", "autogan_fast.runs", "autogan_fast.jobs",
              "autogan_fast.training",
              "autogan_fast.kernels"],
    package_dir={"autogan_fast.kernels": "kernels"},
    install_requires=install_requires,
    extras_require={
        # tensorboard and matplotlib: their tests
        "dev": ["pytest", "pytest-benchmark", "nvidia-ml-py", "ruff", "tensorboard", "matplotlib"],
        "tb": ["tensorboard"],
        "plot": ["matplotlib"],  # every plot the project draws (the benchmark chart)
    },
)
