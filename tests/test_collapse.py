"""Collapse detection in the search: the rule, and a forced collapse detected and marked end to end."""

import itertools
import json
import math

import pytest
import torch
from cli_helpers import run_cli_captured

from autogan_fast.nas import loop as search_loop
from autogan_fast.nas.collapse import (
    COLLAPSE_IS,
    COLLAPSED,
    NEAR_COLLAPSE,
    NEAR_COLLAPSE_IS,
    collapse_warning,
    iteration_sampling_error,
    stage_collapsed,
    stage_near_collapse,
    stage_verdict,
    tail_sampling_error,
)
from autogan_fast.search import main

# Three iterations (one per stage), two controller steps each (as tests/test_search_cli.py's TINY).
TINY = ["--gf-dim", "4", "--df-dim", "4", "--latent-dim", "8", "--max-search-iter", "3", "--grow-step1", "1",
        "--grow-step2", "2", "--shared-epoch", "1", "--dis-bs", "300", "--gen-bs", "16", "--ctrl-step", "2",
        "--rl-num-eval-img", "40", "--eval-batch-size", "20", "--num-candidate", "3", "--topk", "2",
        "--num-grid-images", "4", "--seed", "3", "--quiet"]


@pytest.mark.parametrize("means, collapsed", [
    pytest.param([], False, id="no-iteration-yet"),
    pytest.param([1.2], True, id="one-iteration-below"),
    pytest.param([3.0, 1.3, 1.1], True, id="last-two-below"),
    pytest.param([1.1, 1.3, 2.0], False, id="recovered-at-the-end"),
    pytest.param([1.2, 1.6], False, id="last-above"),
    pytest.param([COLLAPSE_IS, COLLAPSE_IS], False, id="at-the-floor-is-not-below"),
])
def test_the_collapse_rule(means, collapsed):
    """The hard rule alone (`stage_collapsed`, which train.py also uses): the last two below the floor."""
    assert stage_collapsed(means) is collapsed


@pytest.mark.parametrize("means, verdict", [
    pytest.param([], None, id="no-iteration-yet"),
    pytest.param([3.0, 1.3, 1.1], COLLAPSED, id="collapsed-wins-over-near"),
    pytest.param([1.4, 1.6, 1.4, 1.6], NEAR_COLLAPSE, id="hovering-escapes-the-hard-rule"),
    pytest.param([1.1, 1.3, 2.0], NEAR_COLLAPSE, id="one-recovery-step-is-not-enough"),
    pytest.param([1.1, 1.3, 2.4, 2.6, 2.5], None, id="recovered"),
    pytest.param([NEAR_COLLAPSE_IS] * 3, None, id="at-the-near-floor-is-not-below"),
    # recorded digits-demo trajectories (mean reward per iteration of one stage; studies/calibration-notes.md)
    pytest.param([1.86, 2.61, 1.84, 2.90, 2.96], None, id="mlas-seed1-stage0-healthy"),
    pytest.param([1.80, 1.68, 1.93, 2.82, 2.36], None, id="mlas-seed1-stage1-dip-then-recovery"),
    pytest.param([1.83, 2.45, 2.08, 2.68, 3.61, 3.85, 5.51, 4.28, 4.65, 5.42], None, id="mlas-seed1-stage2-healthy"),
    pytest.param([1.91, 2.03, 1.78, 1.44, 2.29], None, id="random-seed1001-stage0-healthy-at-4px"),
    pytest.param([1.37, 3.08, 1.91, 1.81, 1.93], None, id="random-seed1001-stage1-old-init-healthy"),
    pytest.param([2.48, 2.02, 1.91, 1.23, 1.95], NEAR_COLLAPSE, id="random-seed1002-stage1-old-init-sinking"),
    # held-out seeds on the final code (2 threads unless said)
    pytest.param([1.74, 1.27, 1.77, 1.32, 1.81], NEAR_COLLAPSE, id="random-seed2003-stage1-hovering"),
    pytest.param([2.38, 2.08, 2.05, 1.82, 1.72], None, id="mlas-seed2003-stage1-close-call-passed"),
    pytest.param([2.04, 1.34, 1.5, 1.89, 1.75, 1.47, 2.11, 1.97, 2.79, 2.12], None,
                 id="random-seed2003-1-thread-stage2-recovered-by-its-end"),
    pytest.param([1.5, 2.33, 2.19, 2.54, 2.67], None, id="mlas-seed2004-stage0-healthy"),
])
def test_the_stage_verdict(means, verdict):
    assert stage_verdict(means) == verdict
    assert stage_near_collapse(means) is (verdict is not None and sum(means[-3:]) / len(means[-3:]) < NEAR_COLLAPSE_IS)


def test_sampling_errors():
    """An iteration's: the sample SD of its rewards over the root of their number; the near-collapse mean's:
    the root of the last 3 iterations' squared errors over 3 (independent draws each iteration)."""
    assert iteration_sampling_error([1.0, 2.0, 3.0]) == pytest.approx(1.0 / math.sqrt(3))
    assert iteration_sampling_error([1.7]) is None  # one architecture scored: no spread to measure it by
    assert tail_sampling_error([9.0, 0.3, 0.4, 0.1]) == pytest.approx(math.sqrt(0.09 + 0.16 + 0.01) / 3)
    assert tail_sampling_error([0.2]) == pytest.approx(0.2) and tail_sampling_error([]) is None
    assert tail_sampling_error([0.3, None, 0.1]) is None  # one unknown error leaves the mean's unknown
    assert tail_sampling_error([None, 0.3, 0.4, 0.1]) is not None  # outside the window
    warning = collapse_warning(0, [2.0, 1.7, 1.7, 1.7], sampling_error=0.14)
    assert "their mean 1.700 +- 0.140" in warning and "nearly collapsed" in warning
    assert "+-" not in collapse_warning(0, [2.0, 1.7, 1.7, 1.7])  # an error not known is not printed


def search_with_rewards(base, monkeypatch, capsys, out, *extra):
    """A tiny search whose every reward is `base` (+ 0.01 per sample, so rankings are defined, and + 0.02 on
    every other call, so the two rewards of an iteration's two controller steps differ by 0.02)."""
    calls = itertools.count()

    def rewards(state, archs, *args, **kwargs):
        offset = 0.02 * (next(calls) % 2)
        return [base + offset + 0.01 * i for i in range(len(archs))]

    monkeypatch.setattr(search_loop, "score_archs", rewards)
    code, stdout, stderr = run_cli_captured(main, [*TINY, "--out", out, *extra], capsys)
    assert code == 0, stderr
    return stdout, stderr


def test_a_collapsed_search_is_detected_and_marked(tmp_path, capsys, monkeypatch):
    """Rewards pinned near 1 (what a one-mode generator earns): every stage is logged as collapsed, warned
    about on stderr even with --quiet, and result.json says the ranking is no finding."""
    out = tmp_path / "collapsed"
    stdout, stderr = search_with_rewards(1.0, monkeypatch, capsys, out)
    result = json.loads((out / "result.json").read_text())
    assert result["finding"] is False and result["collapsed_stages"] == [0, 1, 2]
    assert stderr.count("collapsed") == 3 and "NO FINDING" in stdout
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    collapses = [e for e in events if e["event"] == "collapse"]
    assert [e["stage"] for e in collapses] == [0, 1, 2] and all(e["floor"] == COLLAPSE_IS for e in collapses)
    grows = [e for e in events if e["event"] == "grow"]
    assert all(1 <= e["distinct_beams"] <= 2 for e in grows)


def test_a_healthy_search_is_a_finding(tmp_path, capsys, monkeypatch):
    out = tmp_path / "healthy"
    stdout, stderr = search_with_rewards(4.0, monkeypatch, capsys, out)
    result = json.loads((out / "result.json").read_text())
    assert result["finding"] is True and result["collapsed_stages"] == []
    assert "collapsed" not in stderr and "NO FINDING" not in stdout


def test_collapse_survives_a_resume(tmp_path, capsys, monkeypatch):
    """The stage history is checkpointed: stop inside stage 1, resume, the marks are the same."""
    out = tmp_path / "resumed"
    search_with_rewards(1.0, monkeypatch, capsys, out, "--stop-after", "1")
    code, _, err = run_cli_captured(main, ["--resume", out], capsys)
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["collapsed_stages"] == [0, 1, 2]
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # stage 1's iteration ran before the stop, its check after the resume: its error came through the checkpoint
    errors = [e["sampling_error"] for e in events if e["event"] == "collapse"]
    assert errors == [pytest.approx(iteration_sampling_error([1.0, 1.02]))] * 3


def test_a_search_hovering_near_the_floor_is_marked(tmp_path, capsys, monkeypatch):
    """Rewards pinned at 1.6: above the hard floor (the old rule passed it), below NEAR_COLLAPSE_IS: every
    stage is logged as a near-collapse, warned about, and the result is no finding."""
    out = tmp_path / "near"
    stdout, stderr = search_with_rewards(1.6, monkeypatch, capsys, out)
    result = json.loads((out / "result.json").read_text())
    assert result["finding"] is False and result["collapsed_stages"] == [0, 1, 2]
    assert stderr.count("nearly collapsed") == 3 and "NO FINDING" in stdout
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events if e["event"] == "collapse"] == [NEAR_COLLAPSE] * 3
    # one iteration a stage, its two architectures scored 1.60 and 1.62: SD 0.014, error 0.01
    error = iteration_sampling_error([1.6, 1.62])
    assert [e["sampling_error"] for e in events if e["event"] == "collapse"] == [pytest.approx(error)] * 3
    assert stderr.count(f"+- {error:.3f}") == 3


def test_one_architecture_an_iteration_leaves_the_error_unknown(tmp_path, capsys, monkeypatch):
    """`--ctrl-step 1`: each iteration scores one architecture, so there is no spread to measure: the event's
    error is null and the warning prints none, also for the stage whose history crossed a resume."""
    out = tmp_path / "one"
    search_with_rewards(1.6, monkeypatch, capsys, out, "--ctrl-step", "1", "--stop-after", "1")
    code, _, stderr = run_cli_captured(main, ["--resume", out], capsys)
    assert code == 0, stderr
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["sampling_error"] for e in events if e["event"] == "collapse"] == [None] * 3
    assert "nearly collapsed" in stderr and "+-" not in stderr


def test_a_checkpoint_without_errors_resumes_with_them_unknown(tmp_path, capsys, monkeypatch):
    """A checkpoint written before the errors were kept: the stage it stopped in has its error unknown (its
    first iteration's is missing); the stages after it have theirs."""
    out = tmp_path / "old"
    search_with_rewards(1.6, monkeypatch, capsys, out, "--stop-after", "1")
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    del checkpoint["stage_reward_se"]
    torch.save(checkpoint, out / "checkpoint.pt")
    code, _, stderr = run_cli_captured(main, ["--resume", out], capsys)
    assert code == 0, stderr
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    error = pytest.approx(iteration_sampling_error([1.6, 1.62]))
    assert [e["sampling_error"] for e in events if e["event"] == "collapse"] == [error, None, error]
