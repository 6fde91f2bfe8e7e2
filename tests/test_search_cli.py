"""End-to-end runs of `python -m autogan_fast.search` on the embedded digits, at toy sizes."""

import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from cli_helpers import full_disk_for, lock_held_elsewhere, run_cli_captured, run_to_success, without_collapse_warnings

from autogan_fast.config import preset_config
from autogan_fast.nas import loop
from autogan_fast.search import main
from autogan_fast.search_space import validate_arch

# Three iterations (one per stage), two controller steps each: every event type appears.
TINY = ["--gf-dim", "4", "--df-dim", "4", "--latent-dim", "8", "--max-search-iter", "3", "--grow-step1", "1",
        "--grow-step2", "2", "--shared-epoch", "1", "--dis-bs", "300", "--gen-bs", "16", "--ctrl-step", "2",
        "--rl-num-eval-img", "40", "--eval-batch-size", "20", "--num-candidate", "3", "--topk", "2",
        "--num-grid-images", "4", "--seed", "3", "--quiet"]


def run(argv, capsys):
    return run_cli_captured(main, argv, capsys)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted tiny search, shared by the tests that read its files."""
    out = tmp_path_factory.mktemp("runs") / "full"
    run_to_success(main, [*TINY, "--out", out, "--json"])
    return out


def controller_rewards(run_dir):
    lines = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
    return [(ln["search_iter"], ln["arch"], ln["inception_score"]) for ln in lines if ln["event"] == "controller_step"]


def test_run_folder_holds_every_file(full_run):
    assert {p.name for p in full_run.iterdir()} == {"config.json", "log.jsonl", "checkpoint.pt", "samples",
                                                    "result.json", ".lock"}
    modes = {p.stat().st_mode for p in full_run.rglob("*") if p.is_file()}
    assert len(modes) == 1  # atomic writes (checkpoint, results, grids) get the umask's mode, as the log does
    assert sorted(p.name for p in (full_run / "samples").iterdir()) == [f"iter_00{i}.png" for i in range(3)]
    config = json.loads((full_run / "config.json").read_text())
    assert config["gf_dim"] == 4 and config["preset"] == "demo" and config["ctrl_lr"] == 3e-3
    result = json.loads((full_run / "result.json").read_text())
    assert set(result) == {"archs", "search_mode", "finding", "collapsed_stages", "wall_seconds", "device",
                           "kernel_choices"}
    assert result["kernel_choices"] == []  # auto on CPU tensors: the reference, nothing timed
    assert result["search_mode"] == "mlas" and result["device"] == "cpu" and len(result["archs"]) == 2
    scores = [entry["inception_score"] for entry in result["archs"]]
    assert scores == sorted(scores, reverse=True) and all(1.0 <= s <= 10.0 for s in scores)
    for entry in result["archs"]:
        validate_arch(entry["arch"], stage=2)


def test_log_has_every_event_with_its_iteration(full_run):
    events = [json.loads(ln) for ln in (full_run / "log.jsonl").read_text().splitlines()]
    assert all({"event", "search_iter"} <= set(e) for e in events)
    kinds = [e["event"] for e in events]
    assert kinds.count("shared_train") == kinds.count("iteration") == 3
    assert kinds.count("controller_step") == 6 and kinds.count("grow") == 2 and kinds[-1] == "done"
    grows = [e for e in events if e["event"] == "grow"]
    assert [g["stage"] for g in grows] == [1, 2] and all(len(g["topk"]) <= 2 for g in grows)
    # the stage-2 controller continues from a beam: every stage-2 arch starts with a kept stage-1 arch
    kept = {tuple(t["arch"]) for t in grows[1]["topk"]}
    assert all(tuple(arch[:9]) in kept for it, arch, _ in controller_rewards(full_run) if it == 2)


def test_checkpoint_loads_weights_only(full_run):
    state = torch.load(full_run / "checkpoint.pt", weights_only=True)
    assert state["search_iter"] == 3 and state["stage"] == 2


def test_resume_reproduces_the_uninterrupted_run(full_run, tmp_path, capsys):
    out = tmp_path / "resumed"
    code, _, err = run([*TINY, "--out", str(out), "--stop-after", "0"], capsys)
    assert code == 0 and "--resume" in err and not (out / "result.json").exists()
    code, stdout, _ = run(["--resume", str(out), "--quiet", "--json"], capsys)  # the saved settings alone
    assert code == 0
    resumed = json.loads(stdout)
    full = json.loads((full_run / "result.json").read_text())
    assert [a["arch"] for a in resumed["archs"]] == [a["arch"] for a in full["archs"]]
    assert [a["inception_score"] for a in resumed["archs"]] == [a["inception_score"] for a in full["archs"]]
    assert controller_rewards(out) == controller_rewards(full_run)


def test_resume_after_a_crash_drops_the_unfinished_iterations_log(full_run, tmp_path, capsys):
    out = tmp_path / "crashed"
    assert run([*TINY, "--out", str(out), "--stop-after", "1"], capsys)[0] == 0
    with open(out / "log.jsonl", "a") as log:  # what a crash inside iteration 2 would leave behind
        log.write(json.dumps({"event": "shared_train", "search_iter": 2}) + "\n")
    assert run(["--resume", str(out), "--quiet"], capsys)[0] == 0
    assert controller_rewards(out) == controller_rewards(full_run)
    assert sum(1 for ln in (out / "log.jsonl").read_text().splitlines() if '"shared_train"' in ln) == 3


def iteration_events(run_dir):
    return [(e["search_iter"], e["mean_inception_score"]) for e in map(json.loads, (run_dir / "log.jsonl").read_text(
        ).splitlines()) if e["event"] == "iteration"]


def test_a_kill_right_after_a_checkpoint_keeps_the_iterations_event(full_run, tmp_path, capsys, monkeypatch):
    """The study's proxy curve reads the `iteration` events: a kill right after iteration 0's checkpoint must
    leave its event logged (it is written before the checkpoint; the resume goes on from iteration 1)."""
    real_save = loop.save_checkpoint

    def save_then_kill(path, state):
        real_save(path, state)
        raise KeyboardInterrupt  # as a kill right after the checkpoint's os.replace

    monkeypatch.setattr(loop, "save_checkpoint", save_then_kill)
    out = tmp_path / "killed"
    assert run([*TINY, "--out", str(out)], capsys)[0] == 130
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["search_iter"] == 1
    assert run(["--resume", str(out), "--quiet"], capsys)[0] == 0
    assert iteration_events(out) == iteration_events(full_run)  # each iteration once, bit-identical


def test_single_level_search_decides_all_cells_at_once(tmp_path, capsys):
    code, stdout, _ = run([*TINY, "--search-mode", "slas", "--max-search-iter", "1", "--out",
                           str(tmp_path / "slas"), "--json"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result["search_mode"] == "slas"
    assert all(len(entry["arch"]) == 14 for entry in result["archs"])


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--dataset", "cifar10"], "needs --data-path"),
    (["--dataset", "cifar10", "--data-path", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--gen-bs", "0"], "--gen-bs must be positive"),
    (["--g-lr", "-1"], "--g-lr must be positive"),
    (["--topk", "7", "--num-candidate", "6"], "--topk (7) must not exceed --num-candidate (6)"),
    (["--grow-step1", "5", "--grow-step2", "3"], "0 < --grow-step1 < --grow-step2"),
    (["--search-mode", "greedy"], "--search-mode must be one of"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda"),
    (["--gf-dim", "abc"], "invalid int value"),
    (["--preset", "huge"], "invalid choice"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--engine", "fast"], "--engine must be one of"),
    pytest.param(["--engine", "graph"], "needs a CUDA device", id="graph-engine-without-cuda",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    (["--graph-cache-size", "0"], "--graph-cache-size must be positive"),
    (["--reward-precision", "fp16"], "--reward-precision must be one of"),
    # settings that used to fail mid-run, leaving a folder with config.json alone
    (["--beta1", "1.5"], "--beta1 must be in [0, 1)"),
    (["--beta2", "-0.1"], "--beta2 must be in [0, 1)"),
    (["--bottom-width", "1"], "--bottom-width must be at least 2"),
    (["--entropy-coeff", "inf"], "--entropy-coeff must be a finite number"),
    (["--g-lr", "inf"], "--g-lr must be a finite number"),  # passes "must be positive"
    (["--d-lr", "1e400"], "--d-lr must be a finite number"),  # parses as inf
    (["--dynamic-reset-threshold", "nan"], "--dynamic-reset-threshold must be a finite number"),
    (["--ctrl-lr", "1e39"], "--ctrl-lr must be a finite number"),  # beyond float32: Adam's step was a traceback
    (["--max-search", "3"], "unrecognized arguments: --max-search"),  # no abbreviations (a prefix becomes ambiguous)
    (["--baseline-decay", "2"], "--baseline-decay must be in [0, 1]"),
    (["--max-search-iter", "10"], "--grow-step2 (10) must be below --max-search-iter (10)"),  # no 14-int arch
    (["--seed", str(2**63)], "--seed must be in 0..9223372036854775807"),
    (["--seed", "-1"], "--seed must be in 0.."),
])
def test_bad_input_is_one_line_and_status_2(argv, message, tmp_path, capsys):
    out = tmp_path / "never"
    code, _stdout, stderr = run([*argv, "--out", str(out)], capsys)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and message in stderr and "Traceback" not in stderr
    assert not out.exists()  # nothing written


def test_existing_run_folder_is_not_overwritten(full_run, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in full_run.iterdir()}
    code, _, stderr = run([*TINY, "--out", str(full_run)], capsys)
    assert code == 2 and "--resume" in stderr and len(stderr.strip().splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in full_run.iterdir()} == before


@pytest.mark.parametrize("content, message", [
    (None, "no checkpoint at"),                   # folder without checkpoint.pt
    (b"garbage", "corrupt checkpoint"),            # damaged file
    (b"", "corrupt checkpoint"),                  # truncated to nothing
])
def test_resume_needs_a_valid_checkpoint(content, message, tmp_path, capsys):
    if content is not None:
        (tmp_path / "checkpoint.pt").write_bytes(content)
    code, _, stderr = run(["--resume", str(tmp_path)], capsys)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_resume_refuses_a_checkpoint_of_an_older_version(full_run, tmp_path, capsys):
    state = torch.load(full_run / "checkpoint.pt", weights_only=True)
    state["format"] = "autogan_fast.search/1"  # per-stage to-RGB heads: weights that no longer fit
    torch.save(state, tmp_path / "checkpoint.pt")
    before = (tmp_path / "checkpoint.pt").read_bytes()
    code, _, stderr = run(["--resume", str(tmp_path)], capsys)
    assert code == 2 and "autogan_fast.search/1" in stderr and len(stderr.strip().splitlines()) == 1
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def stopped_run(tmp_path, capsys, stop_after="0"):
    out = tmp_path / "run"
    assert run([*TINY, "--out", str(out), "--stop-after", stop_after], capsys)[0] == 0
    return out


def snapshot(run_dir):
    """Every file of a run folder with its content and time, but the lock file (each run writes its pid)."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_second_resume_of_a_running_search_is_refused(tmp_path, capsys):
    out = stopped_run(tmp_path, capsys)
    with lock_held_elsewhere(out) as running:
        before = snapshot(out)
        code, _, stderr = run(["--resume", str(out), "--quiet"], capsys)
        after = snapshot(out)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert f"{out} is in use by another run (pid {running.pid} on " in stderr
    assert after == before  # nothing logged twice, nothing overwritten


def test_resume_after_a_kill_mid_write(full_run, tmp_path, capsys):
    """A kill while logging leaves a cut-off last log line, and a kill while checkpointing leaves the
    atomic writer's temporary file: the resume drops the one with a one-line warning, removes the
    other, and goes on as if nothing happened."""
    out = stopped_run(tmp_path, capsys, stop_after="1")
    with open(out / "log.jsonl", "a") as log:
        log.write('{"event": "shared_train", "search_it')
    stale = out / ".checkpoint.pt.k2j3h4g5.tmp"
    stale.write_bytes(b"half a checkpoint")
    code, _, stderr = run(["--resume", str(out), "--quiet"], capsys)
    assert code == 0, stderr
    stderr = without_collapse_warnings(stderr)
    assert stderr.strip().splitlines() == [stderr.strip()] and f"{out / 'log.jsonl'} line" in stderr
    assert "cut off" in stderr and not stale.exists()
    assert controller_rewards(out) == controller_rewards(full_run)


def test_resume_refuses_a_damaged_log_naming_the_line(tmp_path, capsys):
    out = stopped_run(tmp_path, capsys, stop_after="1")
    lines = (out / "log.jsonl").read_text().splitlines()
    lines[2] = lines[2][:10]  # damage in the middle: not what a kill leaves
    (out / "log.jsonl").write_text("".join(ln + "\n" for ln in lines))
    before = snapshot(out)
    code, _, stderr = run(["--resume", str(out), "--quiet"], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert f"{out / 'log.jsonl'} line 3 is not a logged event" in stderr
    assert snapshot(out) == before


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_resume_refuses_a_malicious_checkpoint_naming_its_global(protocol, tmp_path, capsys):
    """A checkpoint that would run a shell command: refused by name in one line, never 'corrupt', never
    with torch's advice to load it with weights_only=False (nor its warning about the pickle protocol)."""
    marker = tmp_path / "executed"

    class ShellCommand:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps({"format": ShellCommand()}, protocol=protocol))
    code, _, stderr = run(["--resume", str(tmp_path)], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert f"it names the global {os.system.__module__}.system" in stderr
    assert "corrupt" not in stderr and "False" not in stderr and not marker.exists()


def test_resuming_a_finished_search_prints_its_result_and_writes_nothing(full_run, tmp_path, capsys):
    out = tmp_path / "finished"
    shutil.copytree(full_run, out)
    before = snapshot(out)
    code, stdout, stderr = run(["--resume", str(out), "--json"], capsys)
    assert code == 0 and len(stderr.strip().splitlines()) == 1 and "is finished" in stderr
    assert json.loads(stdout) == {**json.loads((full_run / "result.json").read_text()), "run_dir": str(out)}
    assert snapshot(out) == before


def test_text_result_ends_with_the_train_command(tmp_path, capsys):
    code, out, _ = run([*TINY, "--search-mode", "slas", "--max-search-iter", "1", "--out", str(tmp_path / "r")], capsys)
    assert code == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("train the best from scratch: python -m autogan_fast.train --preset demo --arch-from ")
    assert str(tmp_path / "r" / "result.json") in last


def test_resume_refuses_to_change_the_shape_of_a_run(full_run, capsys):
    code, _, stderr = run(["--resume", str(full_run), "--gf-dim", "8"], capsys)
    assert code == 2 and "--gf-dim cannot change" in stderr


def test_module_entry_point(tmp_path):
    done = subprocess.run([sys.executable, "-m", "autogan_fast.search", "--topk", "9", "--num-candidate", "2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--topk" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_search_on_an_image_folder(tmp_path, capsys):
    """Other datasets plug in by flag; images are resized to the generator's final size (16 px here)."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for i in range(12):
        pixels = torch.randint(0, 256, (20, 24, 3), dtype=torch.uint8, generator=generator).numpy()
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    code, stdout, _ = run([*TINY, "--dataset", "folder", "--data-path", str(folder), "--feature-net", "digits",
                           "--dis-bs", "6", "--search-mode", "slas", "--max-search-iter", "1", "--out",
                           str(tmp_path / "run"), "--json"], capsys)
    assert code == 0 and len(json.loads(stdout)["archs"]) == 2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"] == "folder" and config["feature_net"] == "digits"


def test_paper_preset_says_which_inception_file_is_missing(tmp_path, capsys, monkeypatch):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    code, _, stderr = run(["--preset", "paper", "--dataset", "folder", "--data-path", str(folder),
                           "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "pt_inception-2015-12-05-6726825d.pth" in stderr and "torch_home" in stderr
    assert not (tmp_path / "run").exists()


def test_top_k_keeps_duplicates_as_autogan_and_the_result_is_distinct(monkeypatch):
    """A controller that always samples one architecture fills every beam with it (AutoGAN's top-k is
    over candidates); each candidate is scored on its own, and the result list shows it once."""
    import torch

    from autogan_fast.config import preset_config
    from autogan_fast.nas import loop as search_loop

    config = preset_config("demo", gf_dim=4, df_dim=4, latent_dim=8, num_candidate=4, topk=3).validate()
    state = search_loop.SearchState.create(config, torch.device("cpu"))
    with torch.no_grad():
        for decoder in state.controller.decoders:  # always the last choice of every decision
            decoder.weight.zero_()
            decoder.bias.copy_(torch.arange(decoder.bias.numel(), dtype=torch.float32) * 100.0)
    scores = iter([1.0, 3.0, 2.0, 4.0])
    calls = []
    monkeypatch.setattr(search_loop, "score", lambda *a: calls.append(1) or next(scores))
    ranked, beams = search_loop.top_k_archs(state, feature_net=None, device=torch.device("cpu"))
    assert len(calls) == 4  # every candidate scored, repeats too
    assert [value for _, value in ranked] == [4.0, 3.0, 2.0]
    assert len({tuple(arch) for arch, _ in ranked}) == 1 and beams.archs.shape[0] == 3
    assert search_loop.distinct(ranked) == [(ranked[0][0], 4.0)]


def test_tensorboard_curves(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, _ = run([*TINY, "--out", str(tmp_path / "r"), "--tensorboard"], capsys)
    assert code == 0
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"controller/reward", "controller/baseline", "controller/entropy", "shared_gan/d_loss",
            "shared_gan/g_loss", "search/mean_inception_score"} <= tags
    assert len(events.Scalars("controller/reward")) == 3 * 2  # 3 iterations x 2 controller steps
    assert [s.step for s in events.Scalars("search/mean_inception_score")] == [0, 1, 2]


def test_tensorboard_missing_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    code, _, stderr = run([*TINY, "--out", str(tmp_path / "r"), "--tensorboard"], capsys)
    assert code == 2 and "autogan-fast[tb]" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.gpu
def test_graph_engine_search_resumes(tmp_path, capsys):
    """--engine graph: stop after iteration 1, resume: the graphs are rebuilt from the checkpointed state
    and the run finishes with every iteration logged once (bit equality with an uninterrupted run is not
    promised: a resumed run warms each graph up eagerly where the uninterrupted one replays)."""
    out = tmp_path / "g"
    code, _, err = run([*TINY, "--engine", "graph", "--out", out, "--stop-after", "1"], capsys)
    assert code == 0, err
    code, stdout, err = run(["--resume", out, "--json"], capsys)
    assert code == 0, err
    events = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    assert [e["search_iter"] for e in events if e["event"] == "iteration"] == [0, 1, 2]
    caches = [e for e in events if e["event"] == "graph_cache"]
    assert len(caches) == 3 and caches[-1]["captures"] > 0
    assert len(json.loads(stdout)["archs"]) >= 1


@pytest.fixture()
def kernels_backend():
    """The fused-op backend is process-wide: give it back as found."""
    from autogan_fast.kernels import get_backend, set_backend

    before = get_backend()
    yield get_backend
    set_backend(before)


def test_kernels_from_the_environment_or_the_flag(tmp_path, capsys, monkeypatch, kernels_backend):
    """$AUTOGAN_FAST_KERNELS picks the fused ops' backend when --kernels is not given; config.json logs it."""
    monkeypatch.setenv("AUTOGAN_FAST_KERNELS", "torch")
    code, _, err = run([*TINY, "--out", tmp_path / "env", "--stop-after", "0"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "env" / "config.json").read_text())["kernels"] == "torch"
    assert kernels_backend() == "torch"
    code, _, err = run(["--resume", tmp_path / "env", "--kernels", "auto", "--stop-after", "1"], capsys)
    assert code == 0, err  # a resumed run may switch back (the maths is the same)
    assert kernels_backend() == "auto"


@pytest.mark.parametrize("argv, env, message", [
    pytest.param(["--kernels", "cuda"], None, "--kernels (or $AUTOGAN_FAST_KERNELS) must be one of",
                 id="unknown-flag-value"),
    pytest.param([], "fast", "got 'fast'", id="unknown-env-value"),
    pytest.param(["--kernels", "triton"], None, "--kernels triton runs the Triton kernels on CUDA tensors",
                 id="triton-without-cuda"),
])
def test_bad_kernels_choice_is_one_line(tmp_path, capsys, monkeypatch, kernels_backend, argv, env, message):
    if env is not None:
        monkeypatch.setenv("AUTOGAN_FAST_KERNELS", env)
    if "triton" in argv and torch.cuda.is_available():
        pytest.skip("CUDA present: --kernels triton is valid here")
    code, _, stderr = run([*TINY, "--out", tmp_path / "r", *argv], capsys)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------- damage and full disks

def test_a_run_killed_before_its_first_checkpoint_resumes_as_a_fresh_start(full_run, tmp_path, capsys, monkeypatch):
    """A kill (here Ctrl-C) before the first checkpoint leaves config.json and part of a log: --resume
    starts the run afresh with the saved settings and gets the uninterrupted run's result; --out says so."""
    from autogan_fast.nas import loop as search_loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(search_loop, "train_controller", interrupted)
        code, _, stderr = run([*TINY, "--out", out], capsys)
    assert code == 130 and not (out / "checkpoint.pt").exists() and (out / "log.jsonl").exists()
    code, _, stderr = run([*TINY, "--out", out], capsys)
    assert code == 2 and f"use --resume {out}" in stderr
    code, stdout, stderr = run(["--resume", out, "--quiet", "--json"], capsys)
    assert code == 0, stderr
    assert json.loads(stdout)["archs"] == json.loads((full_run / "result.json").read_text())["archs"]
    assert controller_rewards(out) == controller_rewards(full_run)  # the killed start's events are gone


def test_resuming_an_unstarted_run_refuses_to_change_its_shape(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"gf_dim": 4, "preset": "demo"}))
    before = snapshot(out)
    code, _, stderr = run(["--resume", out, "--gf-dim", "8"], capsys)
    assert code == 2 and "--gf-dim cannot change" in stderr and snapshot(out) == before
    (out / "config.json").write_text("{not json")
    code, _, stderr = run(["--resume", out], capsys)
    assert code == 2 and "config.json is not readable" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("damage, message", [
    (lambda s: s["config"].update(gf_dim="abc"), "saved config: gf_dim must be int, got 'abc'"),
    (lambda s: s["config"].update(g_lr=float("nan")), "are refused: --g-lr must be a finite number"),
    (lambda s: s.pop("rng"), "it has no 'rng' entry"),
    (lambda s: s["rng"].update(cpu=torch.zeros(3)), "RNG state must be a torch.ByteTensor"),
    (lambda s: s["gan"]["dis"].update({"l5.weight_orig": torch.zeros(3, 3)}), "size mismatch for l5.weight_orig"),
    (lambda s: s.update(stage=7), "at stage 7"),
    (lambda s: s.update(search_iter="1"), "its 'search_iter' entry is a str"),
    (lambda s: s.update(beams=None), "no beams at stage 1"),
], ids=["config-type", "config-nan", "no-rng", "rng-type", "d-shape", "stage", "iter-type", "no-beams"])
def test_resume_refuses_a_checkpoint_whose_contents_do_not_fit(damage, message, tmp_path, capsys):
    """Files torch loads whose contents are wrong: one line naming the file, nothing written."""
    out = stopped_run(tmp_path, capsys, stop_after="1")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    damage(state)
    torch.save(state, out / "checkpoint.pt")
    before = snapshot(out)
    code, _, stderr = run(["--resume", out, "--quiet"], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert message in stderr and str(out / "checkpoint.pt") in stderr
    assert snapshot(out) == before


def test_out_under_a_file_or_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, stderr = run([*TINY, "--out", tmp_path / "file" / "run"], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "cannot create run folder" in stderr
    code, _, stderr = run([*TINY, "--out", tmp_path / "file"], capsys)
    assert code == 2 and "is a file, not a folder" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_read_only_out_is_one_line_and_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """Tests run as root, where permission bits do not stop writes: the file system's refusal is
    simulated where every run-folder file is made (the atomic writer's temporary file)."""
    import errno

    from autogan_fast.runs import checkpoint as run_files

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(run_files.tempfile, "mkstemp", refused)
    code, _, stderr = run([*TINY, "--out", tmp_path / "a" / "b" / "run"], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert f"cannot write {tmp_path / 'a' / 'b' / 'run' / 'config.json'}: Permission denied" in stderr
    assert list(tmp_path.iterdir()) == []  # the folders made for it are gone again


def test_a_full_disk_keeps_the_previous_checkpoint_and_the_run_resumes(full_run, tmp_path, capsys, monkeypatch):
    out = stopped_run(tmp_path, capsys)
    before = (out / "checkpoint.pt").read_bytes()
    with monkeypatch.context() as patch:
        full_disk_for(patch, "checkpoint.pt")
        code, _, stderr = run(["--resume", out, "--quiet"], capsys)
    stderr = without_collapse_warnings(stderr)
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert (f"cannot write {out / 'checkpoint.pt'}: No space left on device; the previous checkpoint.pt is intact"
            in stderr)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [p for p in out.rglob("*.tmp")]
    code, _, _ = run(["--resume", out, "--quiet"], capsys)  # once there is room again
    assert code == 0 and controller_rewards(out) == controller_rewards(full_run)


def test_the_random_arm_searches_on_mlas_schedule_without_learning(tmp_path, capsys):
    """--search-mode random: the same shared training and reward budget as MLAS, decisions uniform, no
    controller update (its steps log rewards with no baseline), a full architecture at the end."""
    out = tmp_path / "random"
    code, stdout, stderr = run([*TINY, "--search-mode", "random", "--out", out, "--json"], capsys)
    assert code == 0, stderr
    events = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "controller_step"]
    assert len(steps) == 3 * 2 and all(e["baseline"] is None and e["reward"] == e["inception_score"] for e in steps)
    assert [e["stage"] for e in events if e["event"] == "grow"] == [1, 2]
    result = json.loads(stdout)
    assert result["search_mode"] == "random" and all(len(e["arch"]) == 14 for e in result["archs"])


@pytest.mark.parametrize("keeps, mean_is, restarts_g", [
    (False, 1.0, True),   # AutoGAN's reset (the paper preset): always both nets
    (False, 4.0, True),
    (True, 1.74, True),   # below the near-collapse line: G has sunk, so it restarts too
    (True, 1.75, False),  # at the line and above: D alone (the line itself counts as healthy, as in collapse.py)
    (True, 4.0, False),
])
def test_which_nets_a_dynamic_reset_restarts(keeps, mean_is, restarts_g):
    config = preset_config("demo", reset_keeps_healthy_g=keeps)
    assert loop.reset_generator(config, mean_is) == restarts_g


@pytest.mark.parametrize("fresh", [
    True,   # the demo: each grow starts the whole shared GAN afresh
    False,  # AutoGAN: the grown GAN keeps its weights
])
def test_a_fresh_gan_at_each_grow(fresh, tmp_path, capsys, monkeypatch):
    """With --fresh-gan-at-grow each of the two grows re-initializes G and D (both) and logs it; with
    dynamic resets off (threshold 0) nothing else re-initializes the GAN."""
    calls = []
    reinitialize = loop.SharedGAN.reinitialize

    def recording(self, config, world=loop.SINGLE, generator=True):
        calls.append(generator)
        reinitialize(self, config, world, generator)

    monkeypatch.setattr(loop.SharedGAN, "reinitialize", recording)
    flag = "--fresh-gan-at-grow" if fresh else "--no-fresh-gan-at-grow"
    out = tmp_path / "run"
    code, _, stderr = run([*TINY, flag, "--dynamic-reset-threshold", "0", "--out", out], capsys)
    assert code == 0, stderr
    events = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    assert [e["fresh_gan"] for e in events if e["event"] == "grow"] == [fresh, fresh]
    assert calls == ([True, True] if fresh else [])
