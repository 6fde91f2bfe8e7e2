"""autogan-fast: AutoGAN's generator architecture search and derived training in PyTorch, fast on one GPU.

`load_generator` gives a trained generator (AutoGAN's released files or this project's `train`
checkpoints); the command lines are `python -m autogan_fast.search`, `.train` and `.evaluate`; the
fused ops are `autogan_fast.kernels`.
"""

__all__ = ["load_generator"]


def __getattr__(name: str):
    # Lazy, so `import autogan_fast.kernels` (torch and triton only) does not load the models too.
    if name == "load_generator":
        from .pretrained import load_generator

        return load_generator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
