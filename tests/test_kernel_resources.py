"""Every Triton launch the fused ops can make fits the GPUs we target, checked without a GPU.

`python -m autogan_fast.kernels.resources` compiles each distinct launch (every kernel, every
autotune config its pruner keeps, every constexpr combination the launchers reach at AutoGAN's
channel counts 64 / 128 / 256) ahead of time for sm_90 (H100 / H200) and sm_80 (A100) and reads
shared memory per block, registers and spill stack. The interpreter that runs the other kernel
tests hides all three, so this module is the gate for kernel changes. It runs the tool in a
subprocess: compiling needs real `@triton.jit` functions, and tests/conftest.py has set
TRITON_INTERPRET=1 in this process. Run `pytest -s` to see the table.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from autogan_fast.kernels import triton_available

pytestmark = pytest.mark.skipif(not triton_available(), reason="needs triton (Linux)")

ARCHS = (90, 80)


def _run(args, tmp_path, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = os.environ.get("TRITON_CACHE_DIR") or str(tmp_path / "triton-cache")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def usage(tmp_path_factory):
    """Rows of the tool's JSON for both targets (one subprocess; ~20-40 s on 2 CPUs, compiles in parallel)."""
    tmp = tmp_path_factory.mktemp("resources")
    out = tmp / "resources.json"
    proc = _run(["-m", "autogan_fast.kernels.resources", "--json", str(out)], tmp)
    print("\n" + proc.stdout)  # the table, shown with -s
    assert out.exists(), f"the resource check crashed:\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text()), proc


@pytest.mark.parametrize("arch", ARCHS, ids=[f"sm_{a}" for a in ARCHS])
def test_every_launch_fits(usage, arch):
    rows = [r for r in usage[0] if r["arch"] == arch]
    assert rows, f"no launches were compiled for sm_{arch}"
    bad = [f"{r['kernel']} [{r['config']}]: {'; '.join(r['problems'])}" for r in rows if not r["ok"]]
    assert not bad, "\n".join(bad)


def test_tool_exit_status_reflects_the_rows(usage):
    rows, proc = usage
    assert proc.returncode == (0 if all(r["ok"] for r in rows) else 1), proc.stderr[-2000:]


def test_every_kernel_and_autotune_config_is_covered(usage):
    """The launch cases reach every kernel of the three ops and every member of each autotune set."""
    from autogan_fast.kernels import upsample_conv as uc

    rows = usage[0]
    for arch in ARCHS:
        kernels = {r["kernel"] for r in rows if r["arch"] == arch}
        for name in ("_upsample_conv2d_fwd_kernel", "_upsample_conv2d_bwd_input_kernel",
                     "_upsample_conv2d_bwd_weight_kernel"):
            assert name in kernels, (arch, name)
        assert any("spectral_norm" in k for k in kernels), arch
        assert any("inception_stats" in k for k in kernels), arch
        for kernel, sets in (("_upsample_conv2d_fwd_kernel", uc.FWD_CONFIGS),
                             ("_upsample_conv2d_bwd_input_kernel", uc.BWD_INPUT_CONFIGS),
                             ("_upsample_conv2d_bwd_weight_kernel", uc.BWD_WEIGHT_CONFIGS)):
            configs = [r["config"] for r in rows if r["arch"] == arch and r["kernel"] == kernel]
            for precision, members in sets.items():
                for c in members:
                    want = (f"INPUT_PRECISION={precision} " + " ".join(f"{k}={v}" for k, v in c.kwargs.items())
                            + f" warps={c.num_warps} stages={c.num_stages}")
                    assert any(cfg.startswith(want) for cfg in configs), f"sm_{arch} {kernel}: {want} not compiled"


def test_every_bilinear_block_configuration_is_covered(usage):
    """Both bilinear kernels at every (dtype, factor, width) of `resource_cases`, with the blocks the
    launchers pick there (a launcher change that reaches a new configuration shows up here)."""
    import importlib

    bu = importlib.import_module("autogan_fast.kernels.bilinear_upsample")
    short = {"torch.float32": "fp32", "torch.float64": "fp64", "torch.bfloat16": "bf16", "torch.float16": "fp16"}
    for arch in ARCHS:
        configs = {(r["kernel"], r["config"]) for r in usage[0] if r["arch"] == arch}
        for dtype, shapes in bu.RESOURCE_DTYPES.items():
            ptr, acc = short[str(dtype)], "fp64" if dtype == torch.float64 else "fp32"
            for s, widths in shapes:
                for w in widths:
                    r, bw = bu.fwd_blocks(w * s)
                    want = {("_bilinear_upsample_fwd_kernel",
                             f"SCALE={s} ACC_DTYPE={acc} BLOCK_R={r} BLOCK_W={bw} warps=4 stages=1 ptrs={ptr}")}
                    r, bw, bk = bu.bwd_blocks(w, s, dtype)
                    want.add(("_bilinear_upsample_bwd_kernel", f"SCALE={s} WIN_PAD={bu._window_pad(s)} ACC_DTYPE={acc} "
                              f"BLOCK_R={r} BLOCK_W={bw} BLOCK_K={bk} warps=4 stages=1 ptrs={ptr}"))
                    assert want <= configs, f"sm_{arch}: {want - configs} not compiled"


# A kernel that cannot fit: num_stages buffers of two 256 x 256 fp32 tiles in the loop (~1.5 MB of
# shared memory), the pattern that broke the first upsample + conv kernels on Hopper.
_OVERSIZED = textwrap.dedent('''
    import json, sys
    import torch, triton, triton.language as tl
    from autogan_fast.kernels import resources

    @triton.jit
    def big_kernel(a_ptr, b_ptr, c_ptr, K, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
        for k in range(0, K, BLOCK):
            a = tl.load(a_ptr + offs[:, None] * K + k + offs[None, :])
            b = tl.load(b_ptr + (k + offs[:, None]) * BLOCK + offs[None, :])
            acc = tl.dot(a, b, acc)
        tl.store(c_ptr + offs[:, None] * BLOCK + offs[None, :], acc)

    arch = int(sys.argv[1])
    a = torch.empty(256, 1024, device="meta")
    with resources.capture_launches(resources.GPUTarget("cuda", arch, 32)) as launches:
        big_kernel[(1,)](a, a, a, 1024, BLOCK=256, num_stages=3)
    usage = resources.compile_usage(launches[0], arch)
    print(json.dumps({"shared": usage.shared, "problems": usage.problems}))
''')


def test_the_check_catches_an_oversized_kernel(tmp_path):
    script = tmp_path / "oversized.py"
    script.write_text(_OVERSIZED)
    proc = _run([str(script), "90"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shared"] > 232_448, result
    assert any(p.startswith("shared") for p in result["problems"]), result


def test_refuses_to_run_under_the_interpreter(tmp_path):
    env_run = subprocess.run([sys.executable, "-m", "autogan_fast.kernels.resources", "--arch", "90"],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "TRITON_INTERPRET": "1"})
    assert env_run.returncode == 2
    assert "TRITON_INTERPRET=1" in env_run.stderr
