"""The benchmark suite (`pytest benchmarks/`) keeps working, and its pieces count and project correctly.

The suite runs in a subprocess (its conftest must not share this session's TRITON_INTERPRET and plugins):
once as the CPU smoke test `.ci/run` runs, once timed into a JSON file whose schema is checked, with the
torch.compile variants traced by the `aot_eager` backend (seconds, not inductor's minutes).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` puts tests/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks import run as bench_run  # noqa: E402
from benchmarks.flops import FlopCounter, GanFlops, count_flops, feature_net_flops_per_image  # noqa: E402
from benchmarks.machine import peak_tflops, slug  # noqa: E402
from benchmarks.projection import project, rows_from_json  # noqa: E402
from benchmarks.workloads import shared_config  # noqa: E402

MACHINE_KEYS = {"gpu", "gpu_slug", "driver", "cuda", "cudnn", "torch", "triton", "sm_count", "nvml", "peak_tflops",
                "git"}
INFO_KEYS = {"row", "variant", "label", "flop", "tflops", "peak_fraction", "peak_memory_bytes"}


def _suite(*args, timeout=240):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_cpu_smoke_runs_every_row():
    proc = _suite("--benchmark-disable", "-rA")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "failed" not in proc.stdout.splitlines()[-1]
    assert "needs CUDA" in proc.stdout and "torch.compile is off on a CPU" in proc.stdout
    for name in ("test_ops", "test_gan_unit", "test_reward", "test_stage_stream", "test_derived_training"):
        assert re.search(rf"PASSED benchmarks/{name}\.py::", proc.stdout), name


def test_timed_run_writes_the_results_schema(tmp_path):
    out = tmp_path / "bench.json"
    stream_compile = [f"--deselect=benchmarks/test_gan_unit.py::test_gan_unit[stage{s}-stream-compile]"
                      for s in range(3)]
    proc = _suite("--benchmark-json", str(out), "--bench-compile", "on", "--bench-compile-backend", "aot_eager",
                  "-k", "not derived_training and not upconv and not bilinear and not stats and not stage_stream",
                  *stream_compile)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["duration_s"] > 0
    machine = data["machine_info"]
    assert machine.keys() >= MACHINE_KEYS
    assert machine["torch"] == torch.__version__ and machine["nvml"] == {"error": "no CUDA device"}
    assert machine["smoke_test_only"] is True and machine["bench_settings"]["size"] == "tiny"
    rows = {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        rows[info["row"], info["label"], info["variant"]] = b
        if "skipped_reason" in info:
            assert b["stats"] is None and b["fullname"].endswith("(skipped)"), b
            continue
        assert info.keys() >= INFO_KEYS, info
        assert b["stats"]["median"] > 0 and info["flop"] > 0 and info["tflops"] > 0
        assert info["peak_fraction"] is None  # a CPU has no peak in the table
    assert {r for r, _, _ in rows} == {"sn", "gan_unit", "reward"}

    unit = {v: b["extra_info"] for (r, label, v), b in rows.items() if r == "gan_unit" and label.endswith("one arch")}
    assert set(unit) == {"eager", "triton", "graph", "compile"}
    assert unit["compile"]["compile_seconds"] >= 0 and unit["compile"]["recompiles"] >= 1
    assert "needs CUDA" in unit["graph"]["skipped_reason"]
    assert {"min_speedup": 1.3, "vs": "compile"} in unit["graph"]["target"]
    assert unit["eager"]["unit"] == "D steps" and unit["eager"]["items_per_call"] == 5

    reward = {v: b["extra_info"] for (r, label, v), b in rows.items() if r == "reward" and label.startswith("stage 2")
              and b["extra_info"]["search_batch"]}
    assert set(reward) == {"eager", "fp32", "tf32", "bf16"}
    assert reward["fp32"]["spearman_vs_fp32"] == 1.0
    assert reward["fp32"]["max_rel_err_vs_eager"] <= 1e-12  # the pipeline, uncaptured in fp32, is the eager reward
    assert -1.0 <= reward["bf16"]["spearman_vs_fp32"] <= 1.0 and reward["bf16"]["unit"] == "images"

    sn = {(label, v): b["extra_info"] for (r, label, v), b in rows.items() if r == "sn"}
    compiled = [info for (label, v), info in sn.items() if v == "compile"]
    assert compiled and all(info["max_rel_err_vs_eager"] <= 1e-12 for info in compiled)
    assert any(info.get("target") == {"min_speedup": 5.0, "vs": "eager"} for info in sn.values())


# ---------------------------------------------------------------------------------------------
# The session's deadline and the op rows' TF32 switches (CUDA-session paths, checked on the CPU)


def test_deadline_interrupts_only_a_running_test():
    """Past the budget, SIGALRM raises BudgetExceeded into a running test's call, never outside one."""
    import time

    from benchmarks.harness import BudgetExceeded, Deadline, Settings

    settings = Settings(device=torch.device("cpu"), size="tiny", timing=True, compile=False,
                        compile_skip_reason=None, budget_s=0.0)
    deadline = Deadline(settings, grace_s=0.2, repeat_s=0.1)
    deadline.arm()
    try:
        time.sleep(0.5)  # the deadline passes with no test running: nothing raised, the sleep completes
        assert not settings.deadline_hit
        with pytest.raises(BudgetExceeded), deadline.watching():
            end = time.perf_counter() + 10
            while time.perf_counter() < end:
                pass
        assert settings.deadline_hit and not deadline.active
    finally:
        deadline.disarm()
    assert not deadline.armed


def test_sigterm_still_writes_the_results_file(tmp_path):
    """gpu_check.sh's step timeout sends SIGTERM: pytest stops as on Ctrl-C and writes the JSON file."""
    import signal
    import time

    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
                             "--benchmark-json", str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None and not (out.exists() and out.stat().st_size):
            time.sleep(0.05)  # the first partial write: the session (and its SIGTERM handler) has started
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    data = json.loads(out.read_text())
    if data["complete"]:  # the whole (fast) smoke suite wrote its file before the signal came (which may
        # still land in pytest's teardown and set the exit status): then no interruption is recorded
        assert "terminated_by_signal" not in data
    else:
        assert data["complete"] is False and data["terminated_by_signal"] == signal.SIGTERM
        assert data["benchmarks"] and "machine_info" in data


def test_op_flags_restore_the_tf32_state_inside_a_reward_precision():
    """torch >= 2.9 raises reading a legacy TF32 flag inside the reward's fp32 context (new API): the op
    rows' switch and the machine info must not."""
    from autogan_fast.nas.reward import fp32_precision
    from benchmarks.machine import op_flags, tf32_flags

    start = tf32_flags()
    with fp32_precision("ieee"):
        before = tf32_flags()
        with op_flags():
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
            assert torch.backends.cudnn.benchmark
        assert tf32_flags() == before
    with op_flags():
        pass
    assert tf32_flags() == start


# ---------------------------------------------------------------------------------------------
# FLOP counts


def test_flop_counter_counts_convs_linears_and_the_fused_upsample_conv():
    x = torch.randn(2, 4, 5, 5)
    with FlopCounter() as c:
        F.conv2d(x, torch.randn(6, 4, 3, 3), padding=1)
    assert c.flop == 2 * 2 * 6 * 5 * 5 * 4 * 9
    with FlopCounter() as c:
        F.conv_transpose2d(x, torch.randn(4, 3, 2, 2), stride=2)
    assert c.flop == 2 * 2 * 4 * 5 * 5 * 3 * 4
    with torch.no_grad(), FlopCounter() as c:
        nn.Linear(7, 3)(torch.randn(10, 7))
    assert c.flop == 2 * 10 * 7 * 3
    with FlopCounter() as c:  # the output requires grad: forward + backward, 3x
        nn.Linear(7, 3)(torch.randn(10, 7))
    assert c.flop == 3 * 2 * 10 * 7 * 3
    from autogan_fast.kernels import upsample_conv2d

    w = torch.randn(6, 4, 3, 3)
    with torch.no_grad():  # counted as the 3x3 conv on the upsampled 10x10 input it replaces
        assert count_flops(lambda: upsample_conv2d(x, w)) == 2 * 2 * 6 * 10 * 10 * 4 * 9


def test_flop_counter_agrees_with_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 4, 2, stride=2),
                        nn.Flatten(), nn.Linear(4 * 16 * 16, 10))
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        mine = count_flops(lambda: net(x))
        with FlopCounterMode(display=False) as ref:
            net(x)
    assert mine == ref.get_total_flops()


def test_inception_v3_counts_its_published_5_7_gmac():
    from autogan_fast.metrics.inception import InceptionV3FeatureNet

    flop = feature_net_flops_per_image(InceptionV3FeatureNet(), 299, torch.device("cpu"))
    assert flop == pytest.approx(2 * 5.7e9, rel=0.03)


def test_a_paper_d_step_is_about_100_gflop():
    """DESIGN.md section 4's cost model: ~100 GFLOP per D step at 32 px (gf 128, df 64, batch 64)."""
    from autogan_fast.engines.eager import SharedGAN

    config = shared_config("full")
    gan = SharedGAN.create(config, torch.device("cpu"))
    flops = GanFlops(gan.gen, gan.dis, 2, config.latent_dim, config.dis_bs, config.gen_bs, config.n_critic,
                     torch.device("cpu"))
    arch = [1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3]
    assert 50e9 < flops.d_step(arch) < 150e9
    assert flops.g_step(arch) > flops.d_step(arch)  # G step: G and D forward + backward at batch 128


def _stream(variant, stage, step_ms, captures=0, overhead_ms=None, key_space=1440, reward="fp32", skipped=None):
    extra = {"row": "stage_stream", "variant": variant, "stage": stage, "mean_step_seconds": step_ms / 1e3,
             "captures": captures, "key_space": key_space, "reward_variant": reward}
    if overhead_ms is not None:
        extra["capture_overhead_seconds"] = overhead_ms / 1e3
    if skipped:
        extra["skipped_reason"] = skipped
    return {"extra_info": extra, "stats": None if skipped else {"mean": 50 * step_ms / 1e3, "median": 1.0}}


def _reward(variant, stage, seconds, search_batch=True):
    return {"extra_info": {"row": "reward", "variant": variant, "stage": stage, "search_batch": search_batch},
            "stats": {"mean": seconds, "median": 99.0}}  # a median unlike the mean: the projection takes means


def test_projection_of_the_paper_search():
    """The README's formula on made-up rows: sum over stages of I_s x 11,715 x t_step + K_s x c + R_s x t_reward,
    with I = 15, 20, 30, R_s = 30 I_s + 10, K_s the stage's key space when the engine captured."""
    rows = [_stream("eager", s, ms, key_space=k, reward="eager") for s, ms, k in ((0, 2.0, 72), (1, 4.0, 720),
                                                                                 (2, 8.0, 1440))]
    rows += [_stream("graph", s, ms, captures=5, overhead_ms=30.0, key_space=k)
             for s, ms, k in ((0, 1.0, 72), (1, 2.0, 720), (2, 4.0, 1440))]
    rows += [_stream("graph+bf16", s, 1.0, skipped="not built yet") for s in (0, 1, 2)]
    rows += [_reward("eager", s, 3.0) for s in (0, 1, 2)] + [_reward("fp32", s, 2.0) for s in (0, 1, 2)]
    rows += [_reward("fp32", 2, 0.5, search_batch=False)]  # another feature batch: not the search's
    out = project(rows_from_json(rows))
    steps = 15 * 781
    eager = (15 * steps * 2e-3 + 20 * steps * 4e-3 + 30 * steps * 8e-3) + (460 + 610 + 910) * 3.0
    graph = ((15 * steps * 1e-3 + 20 * steps * 2e-3 + 30 * steps * 4e-3) + (72 + 720 + 1440) * 0.03
             + (460 + 610 + 910) * 2.0)
    assert out["eager"].total_s == pytest.approx(eager, rel=1e-12)
    assert out["graph"].total_s == pytest.approx(graph, rel=1e-12)
    assert out["graph"].capture_s == pytest.approx([72 * 0.03, 720 * 0.03, 1440 * 0.03])
    assert out["graph+bf16"].total_s is None and out["graph+bf16"].skipped == "not built yet"
    del rows[3]  # graph's stage-0 stream row: no total, and the gap is named instead of guessed
    out = project(rows_from_json(rows))
    assert out["graph"].total_s is None and out["graph"].missing == ["stage_stream stage 0 graph"]


@pytest.mark.parametrize(("name", "tf32"), [
    ("NVIDIA H100 80GB HBM3", 494.7), ("NVIDIA H200", 494.7), ("NVIDIA H100 PCIe", 378.0),
    ("NVIDIA A100-SXM4-80GB", 156.0), ("NVIDIA GeForce RTX 4090", None), (None, None)])
def test_peak_table(name, tf32):
    peaks = peak_tflops(name)
    assert (peaks and peaks["tf32"]) == tf32 or (peaks is None and tf32 is None)


def test_run_wrapper_builds_the_pytest_command(tmp_path):
    args = bench_run.pytest_args(["--quick", "--", "-k", "sn"])
    assert "--benchmark-disable" in args and args[-2:] == ["-k", "sn"]
    args = bench_run.pytest_args(["--out", str(tmp_path / "x.json")])
    assert args[args.index("--benchmark-json") + 1] == str(tmp_path / "x.json")
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert bench_run.default_out().parent == bench_run.RESULTS_DIR


# ---------------------------------------------------------------------------------------------
# benchmarks/gpu_check.sh: the one script a GPU session runs must fit its budget and its file limit.

GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"
DEVICE_SECONDS = 8 * 60  # the script's share of a 15-minute device session (issue 23), leaving room for a rerun
DEVICE_FILES = 6  # a device call returns at most 8 files; keep two spare
SETUP_STEPS = ("nvidia-smi", "install", "pip-freeze")


def _gpu_check_steps(text):
    """{name: (full seconds, dry-run seconds)} of every step / bench line, and the default GPU sections."""
    steps = {}
    for m in re.finditer(r'^ *(?:wanted \S+ && )?(?:step|bench) (\S+) (?:"\$\(secs (\d+) (\d+)\)"|(\d+)) ', text, re.M):
        full = int(m.group(2) or m.group(4))
        steps[m.group(1)] = (full, int(m.group(3) or full))
    default = re.search(r'^ *SECTIONS="\$\{SECTIONS:-([^}]*)\}"\n *fi', text, re.M).group(1).split()
    return steps, default


def test_gpu_check_timeouts_fit_the_budget():
    text = GPU_CHECK.read_text()
    grace = int(re.search(r"^KILL_GRACE=(\d+)", text, re.M).group(1))
    steps, default = _gpu_check_steps(text)
    assert default[:4] == ["stream", "reward", "ops", "profile"], "the issue's order of value"
    assert "stream01" in default, "the projection needs every stage's stream"
    assert set(default) <= set(steps) and "rows" in steps and "rows" not in default
    run = [*SETUP_STEPS, *default]
    assert len(run) >= 8, "parsed too few steps: the parser is out of date with the script"
    assert sum(steps[n][0] for n in run) + grace * (len(run) - 1) <= DEVICE_SECONDS
    for m in re.finditer(r'^ *wanted (\S+) && bench \S+ "\$\(secs (\d+) (\d+)\)" "\$\(secs (\d+) (\d+)\)"',
                         text, re.M):
        timeout, budget = int(m.group(2)), int(m.group(4))
        assert budget <= timeout - 15, f"{m.group(1)}: the suite's own budget must end before its timeout"


def _fake_tools(tmp_path, pytest_rc=0, with_nvidia_smi=True, cuda=True):
    """A PATH with a stand-in python (records what it ran; writes the files the real commands write) and,
    optionally, nvidia-smi."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "fakepython"
    python.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = "-c" ]; then echo {"cuda" if cuda else "cpu"}; exit 0; fi\n'
        'if [ "$2" = benchmarks.merge ]; then echo "{}" > "$3"; echo "merged $*"; exit 0; fi\n'
        'if [ "$2" = benchmarks.profile_step ]; then echo profile > "$4"; exit 0; fi\n'
        'if [ "$2" = pytest ]; then\n'
        '  case " $* " in *" benchmarks "*)\n'
        '    prev=""; for a in "$@"; do [ "$prev" = --benchmark-json ] && echo "{}" > "$a"; prev=$a; done\n'
        '    echo "benchmarked $*"; exit 0;;\n'
        f"  *) echo tests ran; exit {pytest_rc};;\n  esac\nfi\n"
        'echo "$*"\n')
    python.chmod(0o755)
    if with_nvidia_smi:
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/usr/bin/env bash\necho 'NVIDIA H100 80GB HBM3'\n")
        smi.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(python),
            "OUT": str(tmp_path / "out")}


@pytest.mark.parametrize(("pytest_rc", "with_smi", "cuda", "expected_rc"), [
    pytest.param(0, True, True, 0, id="all-pass"),
    pytest.param(1, True, True, 1, id="gpu-test-failure-is-the-exit-status"),
    pytest.param(0, False, True, 0, id="missing-nvidia-smi-is-no-failure"),
    pytest.param(0, False, False, 0, id="cpu-runs-the-dry-run"),
])
def test_gpu_check_files_and_exit_status(tmp_path, pytest_rc, with_smi, cuda, expected_rc):
    env = _fake_tools(tmp_path, pytest_rc, with_smi, cuda)
    env.pop("DRY_RUN", None)
    proc = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == expected_rc, proc.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["bench.json", "bench.log", "env.txt", "gpu_tests.log", "profile.txt", "status.txt"]
    assert len(files) <= DEVICE_FILES
    status = [line.split() for line in (tmp_path / "out" / "status.txt").read_text().splitlines()]
    names = [n for n, _ in status]
    sections = ["stream", "reward", "ops", "profile", "stream01", "gpu-tests-kernels"]
    dry_run_only = ["gpu-tests-engine", "precision", "rows"]  # a GPU session's second call
    assert names == ([*SETUP_STEPS, *sections] if cuda else [*SETUP_STEPS, *sections, *dry_run_only])
    assert dict(status)["stream"] == "0", "the benchmarks run whatever the tests do"
    log = (tmp_path / "out" / "bench.log").read_text()
    assert log.count("merged") == len([n for n in names if n in ("stream", "reward", "ops", "stream01", "rows")])
    if cuda:
        assert "--bench-size" not in log and "stage_stream and stage2" in log
    else:
        assert "--bench-size tiny" in log and "dry run" in (tmp_path / "out" / "env.txt").read_text()


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_section(tmp_path):
    """DRY_RUN=1: the GPU script's sections for real, at tiny shapes on the CPU with short deadlines; any
    section that fails (or runs past its deadline) fails this test. The `rows` section is the suite's
    smoke form, which .ci/run and test_cpu_smoke_runs_every_row run already, and the GPU tests skip on a CPU:
    left out here for time (test_gpu_check_files_and_exit_status covers their steps' plumbing)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(DRY_RUN="1", OUT=str(tmp_path / "out"), PYTHON=sys.executable,
               SECTIONS="stream reward ops profile stream01")
    proc = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=420)
    out = tmp_path / "out"
    status = dict(line.split() for line in (out / "status.txt").read_text().splitlines())
    assert proc.returncode == 0 and set(status.values()) == {"0"}, (status, proc.stderr[-3000:])
    assert list(status) == ["stream", "reward", "ops", "profile", "stream01"]
    data = json.loads((out / "bench.json").read_text())
    assert data["machine_info"]["bench_settings"]["size"] == "tiny" and len(data["machine_info"]["merged_from"]) == 4
    entries = [b["extra_info"] for b in data["benchmarks"]]
    assert {e["stage"] for e in entries if e["row"] == "stage_stream"} == {0, 1, 2}
    stream = {e["variant"]: e for e in entries if e["row"] == "stage_stream" and e["stage"] == 2}
    assert set(stream) == {"eager", "graph", "graph+auto", "graph+bf16"}  # stage 2, triton left to "rows"
    assert stream["eager"]["mean_step_seconds"] > 0 and stream["eager"]["captures"] == 0
    graph = stream["graph"]
    assert graph["first_pass_steps"] == graph["stream_steps"] and graph["captures"] > 0
    assert 0 < graph["hit_rate"] < 1 and graph["hit_rate_first_pass"] < graph["hit_rate"]
    assert {(e["stage"], e["variant"]) for e in entries if e["row"] == "reward"} >= {
        (s, v) for s in (0, 1, 2) for v in ("eager", "fp32", "bf16")}
    assert {e["row"] for e in entries} == {"stage_stream", "reward", "upconv"} | (
        {"bilinear"} if any(e["row"] == "bilinear" for e in entries) else set())
    projection = data["projection"]
    assert projection["eager"]["total_seconds"] > 0 and projection["graph"]["total_seconds"] > 0
    assert "projected paper search" in (out / "bench.log").read_text()
    assert "costliest kernels" in (out / "profile.txt").read_text()
