"""`python -m benchmarks.run`: the benchmark suite through pytest (a thin wrapper kept for the old command).

    python -m benchmarks.run               # = pytest benchmarks --benchmark-json benchmarks/results/<gpu_slug>.json
    python -m benchmarks.run --quick       # = pytest benchmarks --benchmark-disable (the smoke form)
    python -m benchmarks.run --out FILE -- -k "gan_unit and stage2"   # pytest arguments after --

The suite itself is `benchmarks/test_*.py` under pytest-benchmark; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

from .machine import cpu_model, slug

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def default_out() -> Path:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_model()
    return RESULTS_DIR / f"{slug(name)}.json"


def pytest_args(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the smoke form: every row once, untimed")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/<gpu_slug>.json)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for pytest, after --")
    args = p.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    base = [str(Path(__file__).resolve().parent), "-p", "no:cacheprovider"]
    if args.quick:
        return [*base, "--benchmark-disable", *rest]
    out = args.out or default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    return [*base, "--benchmark-json", str(out), *rest]


def main(argv: list[str] | None = None) -> int:
    return int(pytest.main(pytest_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
