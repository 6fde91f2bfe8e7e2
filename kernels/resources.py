"""GPU resources of every kernel launch the fused ops can make, compiled ahead of time on any machine.

    python -m autogan_fast.kernels.resources                  # table for sm_90 and sm_80
    python -m autogan_fast.kernels.resources --arch 90 --json resources.json

The Triton interpreter hides every limit of a real GPU (shared memory per block, registers, spills).
Triton compiles for a GPU without one, so this module:
1. runs each op's own launchers (`resource_cases()` of every op file: the AutoGAN channel counts and
   every flag combination the public op can reach) under a stand-in driver that reports the target
   GPU, with a `jit_cache_hook` that records each launch's signature, constexprs and options instead
   of compiling or launching it; an autotuned kernel records every config of its autotune list. So a
   new block size, flag or autotune config is covered without editing this file;
2. compiles each distinct launch for the target (`triton.compile(ASTSource(...), target=GPUTarget)`)
   and reads shared memory per block from the compiled metadata (what Triton checks at launch) and
   registers / spill stack from `cuobjdump -res-usage` on the cubin.
It must run without `TRITON_INTERPRET=1` (interpreted kernels cannot be compiled): the tests call it
in a subprocess. Launchers are called on meta tensors (no memory, no maths) except where an op needs
real addresses (spectral norm's layer table).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.autotuner import Autotuner

# Per-block limits of the GPUs we target: Triton refuses a launch whose metadata.shared exceeds the
# device's opt-in maximum (sharedMemPerBlockOptin).
TARGETS = {
    90: {"name": "sm_90 (H100 / H200)", "max_shared": 232_448},
    80: {"name": "sm_80 (A100)", "max_shared": 166_912},
}
MAX_REGISTERS = 255  # per thread, any NVIDIA GPU since sm_35
MAX_SPILL_BYTES = 0  # no spill stack at all: a spill in an inner loop costs more than a smaller tile

ResourceCase = tuple[str, Callable[[], None]]  # (label, thunk that calls one op's launchers)


@dataclasses.dataclass(frozen=True)
class Launch:
    """One distinct compilation a launcher asked for."""

    kernel: str  # kernel function name
    config: str  # constexprs and options that specialize it, readable
    fn: object = dataclasses.field(compare=False, repr=False)  # the JITFunction
    signature: tuple = dataclasses.field(compare=False, repr=False)  # ((arg, type), ...)
    constants: tuple = dataclasses.field(compare=False, repr=False)  # ((path, value), ...)
    attrs: tuple = dataclasses.field(compare=False, repr=False)  # ((path, attributes), ...)
    num_warps: int = 4
    num_stages: int = 3


@dataclasses.dataclass
class Usage:
    """What one compiled launch needs per block / thread."""

    kernel: str
    config: str
    arch: int
    shared: int  # bytes of dynamic shared memory per block (metadata.shared)
    registers: int  # per thread
    spill_stack: int  # bytes of per-thread stack (spills and local arrays)
    problems: list[str]  # limits it breaks; empty when it fits

    @property
    def ok(self) -> bool:
        return not self.problems


class _TargetDriver:
    """Stands in for the CUDA driver: reports the target; nothing ever launches. The device id is the
    arch, so each target gets its own per-device binder cache in every JITFunction."""

    def __init__(self, target: GPUTarget) -> None:
        self.target = target

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_current_device(self) -> int:
        return self.target.arch

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("meta")


def _config_label(constants: dict, num_warps: int, num_stages: int) -> str:
    """"NAME=value ... warps=W stages=S": the constexprs (and ints Triton specialized to constants)."""
    return " ".join([*(f"{k}={v}" for k, v in constants.items()), f"warps={num_warps}", f"stages={num_stages}"])


@contextlib.contextmanager
def capture_launches(target: GPUTarget) -> Iterator[list[Launch]]:
    """Record, instead of compiling or running, every Triton launch made inside the block."""
    from triton import knobs

    records: list[Launch] = []
    names = {}

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        jit = fn.jit_function
        names.setdefault(jit, [p.name for p in jit.params])
        constants = {names[jit][k[0]] if isinstance(k, tuple) and len(k) == 1 else k: v
                     for k, v in compile["constants"].items()}
        dtypes = sorted({t[1:] for t in compile["signature"].values() if isinstance(t, str) and t[:1] == "*"})
        records.append(Launch(
            kernel=jit.__name__,
            config=_config_label(constants, compile["num_warps"], compile["num_stages"])
            + f" ptrs={'/'.join(dtypes)}",
            fn=jit,
            signature=tuple(compile["signature"].items()),
            constants=tuple(compile["constants"].items()),
            attrs=tuple(compile["configs"][0].items()),
            num_warps=compile["num_warps"],
            num_stages=compile["num_stages"],
        ))
        return True  # "handled": Triton neither compiles nor launches

    def every_config(self, *args, **kwargs):  # Autotuner.run: record each config it may pick, time none
        self.nargs = dict(zip(self.arg_names, args, strict=False))
        for config in self.prune_configs(kwargs):
            self.fn.run(*args, **kwargs, **config.all_kwargs())
        self.nargs = None

    previous_hook = knobs.runtime.jit_cache_hook
    previous_run = Autotuner.run
    previous_driver = triton.runtime.driver._active  # reset_active() would look for a real GPU
    triton.runtime.driver.set_active(_TargetDriver(target))
    knobs.runtime.jit_cache_hook = hook
    Autotuner.run = every_config
    try:
        yield records
    finally:
        Autotuner.run = previous_run
        knobs.runtime.jit_cache_hook = previous_hook
        triton.runtime.driver._active = previous_driver


OPS = ("upconv", "sn", "stats", "bilinear")


def all_cases(channels: Iterable[int] = (64, 128, 256), ops: Iterable[str] = OPS) -> list[ResourceCase]:
    """The launch cases of the given ops (each op file's `resource_cases(channels)`)."""
    # import_module: the package's `spectral_norm` attribute is the function, not the module
    modules = {"upconv": "upsample_conv", "sn": "spectral_norm", "stats": "inception_stats",
               "bilinear": "bilinear_upsample"}
    channels = tuple(channels)
    return [case for op in ops
            for case in importlib.import_module(f"{__package__}.{modules[op]}").resource_cases(channels)]


def collect_launches(arch: int, cases: list[ResourceCase]) -> list[Launch]:
    """Distinct launches of all cases for sm_<arch>, in first-seen order."""
    with capture_launches(GPUTarget("cuda", arch, 32)) as records:
        for _, thunk in cases:
            thunk()
    distinct = {(r.kernel, r.config, repr(r.signature), repr(r.constants), repr(r.attrs)): r for r in records}
    return list(distinct.values())


def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_usage(launch: Launch, arch: int) -> Usage:
    """Compile one launch for sm_<arch>; read shared memory, registers and spill stack."""
    target = GPUTarget("cuda", arch, 32)
    src = ASTSource(launch.fn, dict(launch.signature), dict(launch.constants), dict(launch.attrs))
    compiled = triton.compile(src, target=target, options={"num_warps": launch.num_warps,
                                                           "num_stages": launch.num_stages,
                                                           "enable_fp_fusion": True})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        dump = subprocess.run([_cuobjdump(), "-res-usage", f.name], capture_output=True, text=True,
                              check=True).stdout
    regs = re.search(r"REG:(\d+)", dump)
    stack = re.search(r"STACK:(\d+)", dump)
    if regs is None or stack is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no REG/STACK for {launch.kernel}: {dump!r}")
    usage = Usage(launch.kernel, launch.config, arch, int(compiled.metadata.shared), int(regs.group(1)),
                  int(stack.group(1)), [])
    limit = TARGETS[arch]["max_shared"]
    if usage.shared > limit:
        usage.problems.append(f"shared {usage.shared} B > {limit} B")
    if usage.registers > MAX_REGISTERS:
        usage.problems.append(f"registers {usage.registers} > {MAX_REGISTERS}")
    if usage.spill_stack > MAX_SPILL_BYTES:
        usage.problems.append(f"spill stack {usage.spill_stack} B > {MAX_SPILL_BYTES} B")
    return usage


def _compile_one(args: tuple[int, int]) -> Usage:
    arch, index = args
    return compile_usage(_WORKER_LAUNCHES[arch][index], arch)


# The launches of the current `measure` per arch, module-level so forked compile workers inherit them.
_WORKER_LAUNCHES: dict[int, list[Launch]] = {}


def measure(archs: Iterable[int] = (90, 80), channels: Iterable[int] = (64, 128, 256),
            ops: Iterable[str] = OPS, workers: int | None = None) -> list[Usage]:
    """Usage of every distinct launch for each arch; compiles in parallel worker processes."""
    archs, channels, ops = tuple(archs), tuple(channels), tuple(ops)
    cases = all_cases(channels, ops)
    for arch in archs:
        _WORKER_LAUNCHES[arch] = collect_launches(arch, cases)
    jobs = [(arch, i) for arch in archs for i in range(len(_WORKER_LAUNCHES[arch]))]
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        return [_compile_one(job) for job in jobs]
    # fork: workers inherit the collected launches (JITFunctions do not pickle)
    ctx = torch.multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        return list(pool.map(_compile_one, jobs))


def format_table(usages: list[Usage]) -> str:
    rows = [("arch", "kernel", "config", "shared B", "regs", "spill B", "ok")]
    rows += [(f"sm_{u.arch}", u.kernel, u.config, str(u.shared), str(u.registers), str(u.spill_stack),
              "ok" if u.ok else "; ".join(u.problems)) for u in usages]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autogan_fast.kernels.resources",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", choices=sorted(TARGETS),
                        help="compute capability x10 to compile for (repeatable; default: 90 and 80)")
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256],
                        help="channel counts of the launch cases (default: AutoGAN's 64 128 256)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--workers", type=int, default=None, help="compile processes (default: CPU count)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1 is set: interpreted kernels cannot be compiled; unset it")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9's default, stated: no warning
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = sorted(set(ops) - set(OPS))
    if unknown or not ops:
        parser.error(f"--ops: unknown op(s) {unknown or ops}; choose from {','.join(OPS)}")
    usages = measure(args.arch or (90, 80), args.channels, ops, args.workers)
    print(format_table(usages))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([dataclasses.asdict(u) | {"ok": u.ok} for u in usages], f, indent=1)
    bad = [u for u in usages if not u.ok]
    if bad:
        print(f"{len(bad)} of {len(usages)} launches break a limit", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
