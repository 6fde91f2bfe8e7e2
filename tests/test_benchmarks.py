"""The benchmark script keeps working: `python -m benchmarks.run --quick --device cpu`, run in-process.

Only the eager rows are timed here (tiny shapes, 10 ms per measurement); Triton rows must be skipped
on the CPU even though this session runs the kernels under the interpreter (see conftest.py).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` puts tests/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks import run as bench  # noqa: E402

MACHINE_KEYS = {"device", "name", "slug", "gpu", "driver", "cuda_runtime", "cuda_driver", "nvml", "cpu", "torch",
                "triton", "python", "tf32"}
ROW_KEYS = {"op", "shape", "label", "variant", "fwd_us", "fwd_bwd_us", "iqr", "speedup_vs_eager", "target", "met",
            "skipped", "reason", "max_rel_err_vs_eager"}


def _flags():
    return (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark)


def _run(tmp_path, capsys, *args):
    out = tmp_path / "results" / "bench.json"
    flags, rng = _flags(), torch.get_rng_state()
    assert bench.main(["--quick", "--device", "cpu", "--out", str(out), *args]) == 0
    assert _flags() == flags, "the run must restore the TF32 / cuDNN flags it sets"
    assert torch.equal(torch.get_rng_state(), rng), "the run must leave the caller's RNG as it was"
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"], "atomic write left a temporary file"
    return json.loads(out.read_text()), capsys.readouterr().out


def test_quick_cpu_run_writes_every_row(tmp_path, capsys):
    result, table = _run(tmp_path, capsys)

    assert result["complete"] is True and result["settings"]["quick"] is True
    assert isinstance(result["date"], str) and result["duration_s"] > 0
    machine = result["machine"]
    assert machine.keys() >= MACHINE_KEYS
    assert machine["device"] == "cpu" and machine["gpu"] is None and machine["nvml"] is None
    assert machine["torch"] == torch.__version__ and machine["python"]
    assert machine["tf32"]["cudnn.allow_tf32"] is True and machine["tf32"]["cuda.matmul.allow_tf32"] is True

    rows = result["rows"]
    assert {r["op"] for r in rows} == set(bench.OPS)
    for row in rows:
        assert row.keys() >= ROW_KEYS, row
    by_case = {}
    for row in rows:
        by_case.setdefault((row["op"], row["label"]), []).append(row["variant"])
    assert all(variants == list(bench.VARIANTS) for variants in by_case.values()), by_case

    for row in rows:
        if row["variant"] == "eager":
            assert not row["skipped"] and row["reason"] is None, row
            assert row["fwd_us"] > 0 and row["iqr"]["fwd_us"] >= 0
            assert row["speedup_vs_eager"]["fwd"] == 1.0
            if row["op"] == "stats":  # no backward
                assert row["fwd_bwd_us"] is None
            else:
                assert row["fwd_bwd_us"] > 0  # no ratio check: timings of a loaded CI machine are noise
        elif row["variant"] == "triton":
            assert row["skipped"] and "needs CUDA" in row["reason"], row
            assert row["fwd_us"] is None and row["met"] is None
            assert row["target"]["min_speedup"] in (bench.SN_TARGET, bench.UPCONV_TARGET, bench.STATS_TARGET)
        else:
            assert row["skipped"] and "--quick" in row["reason"], row

    for op in bench.OPS:
        assert f"\n{op} " in table
    assert "needs CUDA" in table and str(tmp_path) in table


def test_compile_rows_trace_and_match_eager(tmp_path, capsys):
    # aot_eager: dynamo and AOTAutograd trace the references (what inductor would get) in seconds, not minutes
    try:
        result, _ = _run(tmp_path, capsys, "--ops", "sn,stats", "--compile", "on", "--compile-backend", "aot_eager")
    finally:
        torch._dynamo.reset()
    rows = [r for r in result["rows"] if r["variant"] == "compile"]
    assert {r["op"] for r in rows} == {"sn", "stats"}
    for row in rows:
        assert not row["skipped"] and row["reason"] is None, row
        assert row["fwd_us"] > 0 and row["speedup_vs_eager"]["fwd"] > 0
        # the same ops from the same state (u, v included): equal up to op reordering
        assert row["max_rel_err_vs_eager"] <= 1e-12
    assert next(r for r in rows if r["op"] == "sn")["fwd_bwd_us"] > 0


def test_speedups_and_targets():
    case = bench.Case("upconv", "N=64", {}, build=None, flatten=None, target=1.5)
    eager, triton, compiled = (bench.new_row(case, v) for v in ("eager", "triton", "compile"))
    eager.update(fwd_us=300.0, fwd_bwd_us=900.0)
    triton.update(fwd_us=100.0, fwd_bwd_us=450.0)  # 3x forward, 2x forward+backward
    compiled.update(fwd_us=600.0, fwd_bwd_us=None)
    rows = [eager, triton, compiled]
    bench.add_speedups(rows, quick=False)
    assert triton["speedup_vs_eager"] == {"fwd": 3.0, "fwd_bwd": 2.0}
    assert triton["target"] == {"min_speedup": 1.5, "metric": "fwd_bwd_us", "vs": "eager"} and triton["met"] is True
    assert compiled["speedup_vs_eager"] == {"fwd": 0.5, "fwd_bwd": None}
    assert compiled["target"] is None and compiled["met"] is None

    triton["fwd_bwd_us"] = 700.0  # 1.29x: below the target
    bench.add_speedups(rows, quick=False)
    assert triton["met"] is False
    bench.add_speedups(rows, quick=True)  # tiny shapes say nothing about the targets
    assert triton["met"] is None


def test_default_out_is_named_after_the_machine():
    assert bench.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert bench.default_out({"slug": "nvidia-h200"}, quick=False) == bench.RESULTS_DIR / "nvidia-h200.json"
    assert bench.default_out({"slug": "amd-epyc"}, quick=True).name == "amd-epyc-quick.json"


@pytest.mark.parametrize("argv", [["--ops", "sn,nope"], ["--ops", ""], ["--min-run-time", "0"]], ids=str)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--device", "cpu", *argv])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# benchmarks/gpu_check.sh: the one script a GPU session runs must fit its budget and its file limit.

GPU_CHECK = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"
DEVICE_SECONDS = 7 * 60  # the script's share of a 15-minute device session, leaving room for a rerun
DEVICE_FILES = 6  # a device call returns at most 8 files; keep two spare


def test_gpu_check_timeouts_fit_the_budget():
    text = GPU_CHECK.read_text()
    grace = int(re.search(r"^KILL_GRACE=(\d+)", text, re.M).group(1))
    steps = [int(m.group(1)) for m in re.finditer(r"^step \S+ (\d+) ", text, re.M)]
    assert len(steps) >= 4, "parsed too few steps: the parser is out of date with the script"
    assert sum(steps) + grace * len(steps) <= DEVICE_SECONDS
    bench = re.search(r"^step benchmarks (\d+) .*?--max-seconds (\d+)", text, re.M | re.S)
    assert int(bench.group(2)) <= int(bench.group(1)) - 20, "the benchmark's own budget must end before its timeout"


def _fake_tools(tmp_path, pytest_rc=0, with_nvidia_smi=True):
    """A PATH with a stand-in python (records what it ran) and, optionally, nvidia-smi."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "fakepython"
    python.write_text(
        "#!/usr/bin/env bash\n"
        f'case "$2" in pytest) echo tests ran; exit {pytest_rc};;\n'  # $1 is -m
        '  benchmarks.run) echo "{}" > "${@: -1}"; echo benchmarked;;\n'
        "  *) echo \"$*\";;\nesac\n")
    python.chmod(0o755)
    if with_nvidia_smi:
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/usr/bin/env bash\necho 'NVIDIA H100 80GB HBM3'\n")
        smi.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(python),
            "OUT": str(tmp_path / "out")}


@pytest.mark.parametrize(("pytest_rc", "with_smi", "expected_rc"), [
    pytest.param(0, True, 0, id="all-pass"),
    pytest.param(1, True, 1, id="gpu-test-failure-is-the-exit-status"),
    pytest.param(0, False, 0, id="missing-nvidia-smi-is-no-failure"),
])
def test_gpu_check_files_and_exit_status(tmp_path, pytest_rc, with_smi, expected_rc):
    env = _fake_tools(tmp_path, pytest_rc, with_smi)
    proc = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == expected_rc, proc.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["bench.json", "bench.log", "env.txt", "gpu_tests.log", "status.txt"]
    assert len(files) <= DEVICE_FILES
    status = dict(line.split() for line in (tmp_path / "out" / "status.txt").read_text().splitlines())
    assert status["benchmarks"] == "0", "the benchmarks must run even when the GPU tests fail"
