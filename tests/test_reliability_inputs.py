"""Hostile sizes and hostile JSON at the command lines: each is one line on stderr, exit status 2, and no
run folder (sizes no machine holds used to crash on allocation in a folder whose resume crashed again;
JSON nested 100,000 deep used to end in a RecursionError traceback)."""

import dataclasses
import json

import pytest
from cli_helpers import run_cli_captured

from autogan_fast import evaluate, search, train
from autogan_fast.config import (
    GAN_SIZE_LIMITS,
    OPTIONAL_SEARCH_SIZE_LIMITS,
    SEARCH_SIZE_LIMITS,
    SearchConfig,
    TrainConfig,
    preset_config,
)
from autogan_fast.errors import UsageError
from autogan_fast.runs.checkpoint import parse_json
from autogan_fast.runs.folder import CONFIG, RESULT, JsonlLog, finished_result
from autogan_fast.study.__main__ import main as study_main
from autogan_fast.study.plan import MAX_RANDOM_ARCHS

HUGE = 10**12  # --gf-dim 1000000000000 and its kind: far past any machine's memory
DEEP = "[" * 100_000  # deeper than json.loads recurses: RecursionError, not JSONDecodeError

MAINS = {"search": search.main, "train": train.main, "evaluate": evaluate.main, "study": study_main}


def refused_in_one_line(command: str, argv: list, capsys) -> str:
    """Run `command` with `argv`; it must exit 2 with one line on stderr and nothing on stdout. Returns it."""
    code, stdout, stderr = run_cli_captured(MAINS[command], argv, capsys)
    assert (code, stdout) == (2, ""), stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr


# --------------------------------------------------------------------------------------------- the lock

# Toy settings, so that a run the lock fails to refuse ends in seconds (and the test fails, not hangs).
TOY_SEARCH = dict(gf_dim=4, df_dim=4, latent_dim=8, max_search_iter=3, grow_step1=1, grow_step2=2, shared_epoch=1,
                  dis_bs=300, gen_bs=16, ctrl_step=1, rl_num_eval_img=20, eval_batch_size=20, num_candidate=2, topk=1,
                  num_grid_images=4)
TOY_TRAIN = dict(gf_dim=4, df_dim=4, latent_dim=8, gen_bs=8, dis_bs=8, n_critic=1, max_iter=2, val_freq=2,
                 num_eval_imgs=20, eval_batch_size=20, num_grid_images=4)


@pytest.mark.parametrize("command, settings", [
    ("search", lambda: {**dataclasses.asdict(preset_config("demo", **TOY_SEARCH)), "preset": "demo"}),
    ("train", lambda: {**dataclasses.asdict(preset_config("demo", TrainConfig, **TOY_TRAIN)),
                       "arch": list(train.PAPER_ARCH), "preset": "demo"}),
], ids=["search", "train"])
def test_resume_refuses_a_lock_that_is_a_symbolic_link_and_leaves_its_target(command, settings, tmp_path, capsys):
    """A run folder (here one stopped before its first checkpoint) whose .lock links to a file of the user's:
    taking the lock used to truncate that file and write "pid host" into it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG).write_text(json.dumps(settings()))
    victim = tmp_path / "notes.txt"
    victim.write_text("mine\n")
    (run / ".lock").symlink_to(victim)
    stderr = refused_in_one_line(command, ["--resume", run, "--quiet"], capsys)
    assert f"cannot lock run folder {run}: {run / '.lock'} is a symbolic link, not a lock file" in stderr
    assert victim.read_text() == "mine\n"
    assert sorted(p.name for p in run.iterdir()) == [".lock", CONFIG]


# --------------------------------------------------------------------------------------------- sizes

SIZE_CASES = [
    # every bounded size of the search, the optional ones (unset by default) included
    *[("search", name) for name in [*GAN_SIZE_LIMITS, *SEARCH_SIZE_LIMITS, *OPTIONAL_SEARCH_SIZE_LIMITS]],
    *[("train", name) for name in GAN_SIZE_LIMITS],  # train shares the GAN's sizes
]


@pytest.mark.parametrize("command, name", SIZE_CASES, ids=[f"{c}:--{n.replace('_', '-')}" for c, n in SIZE_CASES])
def test_a_size_no_machine_holds_is_refused_before_any_folder(command, name, tmp_path, capsys):
    flag = f"--{name.replace('_', '-')}"
    out = tmp_path / "never"
    stderr = refused_in_one_line(command, [flag, HUGE, "--out", out, "--quiet"], capsys)
    assert f"{flag} must be at most " in stderr and f"got {HUGE:,}" in stderr
    assert not out.exists()


@pytest.mark.parametrize("limits", [GAN_SIZE_LIMITS, SEARCH_SIZE_LIMITS], ids=["gan", "search"])
def test_the_bounds_are_far_above_the_paper_presets(limits):
    """Twice the paper's sizes (the field defaults: AutoGAN's search and derived training) pass each bound."""
    for config in (SearchConfig(), TrainConfig()):
        for name, limit in limits.items():
            if hasattr(config, name):
                assert 2 * getattr(config, name) <= limit, (type(config).__name__, name)


@pytest.mark.parametrize("argv, flag", [
    (["--save-stats", "{tmp}/s.npz", "--resolution", HUGE], "--resolution"),  # images resized to it: HUGE**2 px
    (["--save-stats", "{tmp}/s.npz", "--batch-size", HUGE], "--batch-size"),  # one batch of HUGE images
], ids=["resolution", "batch-size"])
def test_evaluate_refuses_sizes_no_machine_holds(argv, flag, tmp_path, capsys):
    stderr = refused_in_one_line("evaluate", [str(a).format(tmp=tmp_path) for a in argv], capsys)
    assert f"{flag} must be at most" in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", [
    "--random-archs",  # 10**9 used to hang drawing the plan, silently
    "--seeds",  # 10**9 searches per arm: the same hang
    "--train-seeds",  # 10**9 trainings per architecture
    "--top",  # 10**9 trainings per search
])
def test_study_refuses_plan_sizes_beyond_their_bound(flag, tmp_path, capsys):
    out = tmp_path / "never"
    stderr = refused_in_one_line("study", [flag, 10**9, "--out", out, "--quiet"], capsys)
    assert f"{flag} must be at most" in stderr
    assert not out.exists()


def test_study_random_archs_bound_is_the_documented_one(tmp_path, capsys):
    stderr = refused_in_one_line("study", ["--random-archs", MAX_RANDOM_ARCHS + 1, "--out", tmp_path / "n"], capsys)
    assert f"--random-archs must be at most {MAX_RANDOM_ARCHS:,}" in stderr


# --------------------------------------------------------------------------------------------- deep JSON

def test_json_nested_too_deeply_is_a_value_error_like_any_malformed_json():
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json(DEEP)


def test_a_deeply_nested_last_log_line_is_dropped_as_cut_off(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"event": "start", "iter": 0}) + "\n" + DEEP + "\n")
    assert JsonlLog(log, "iter").read() == [{"event": "start", "iter": 0}]
    assert "line 2 is cut off" in capsys.readouterr().err


def test_a_deeply_nested_log_line_before_the_last_names_it(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(DEEP + "\n" + json.dumps({"event": "start", "iter": 0}) + "\n")
    with pytest.raises(UsageError, match=r"log.jsonl line 1 is not a logged event \(nested too deeply to read\)"):
        JsonlLog(log, "iter").read()


def test_a_deeply_nested_result_json_is_no_finished_result(tmp_path):
    (tmp_path / RESULT).write_text(DEEP)
    (tmp_path / "log.jsonl").write_text(json.dumps({"event": "done", "iter": 4}) + "\n")
    assert finished_result(tmp_path, "iter", 4) is None  # resuming completes the run, which rewrites it


def test_train_arch_from_a_deeply_nested_file_names_it(tmp_path, capsys):
    deep = tmp_path / "result.json"
    deep.write_text(DEEP)
    stderr = refused_in_one_line("train", ["--arch-from", deep, "--out", tmp_path / "never", "--quiet"], capsys)
    assert f"--arch-from {deep}: not a search result.json (nested too deeply to read)" in stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("command", ["search", "train"])
def test_resuming_a_run_whose_config_json_is_nested_too_deeply_names_it(command, tmp_path, capsys):
    """A run folder without a checkpoint resumes from its config.json."""
    (tmp_path / CONFIG).write_text(DEEP)
    stderr = refused_in_one_line(command, ["--resume", tmp_path, "--quiet"], capsys)
    assert f"cannot resume {tmp_path}: it holds no checkpoint, and its {CONFIG} is not readable (nested too " \
           f"deeply to read)" in stderr
    assert [p.name for p in tmp_path.iterdir()] == [CONFIG]  # nothing written


def test_resuming_a_study_whose_config_json_is_nested_too_deeply_names_it(tmp_path, capsys):
    (tmp_path / CONFIG).write_text(DEEP)
    stderr = refused_in_one_line("study", ["--resume", tmp_path, "--quiet"], capsys)
    assert f"--resume {tmp_path}: its {CONFIG} cannot be read (nested too deeply to read)" in stderr
