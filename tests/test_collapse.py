"""Collapse detection in the search: the rule, and a forced collapse detected and marked end to end."""

import json

import pytest
from cli_helpers import run_cli_captured

from autogan_fast.nas import loop as search_loop
from autogan_fast.nas.collapse import COLLAPSE_IS, stage_collapsed
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
def test_the_rule(means, collapsed):
    assert stage_collapsed(means) is collapsed


def search_with_rewards(base, monkeypatch, capsys, out, *extra):
    """A tiny search whose every reward is `base` (+ 0.01 per sample, so rankings are defined)."""
    monkeypatch.setattr(search_loop, "score_archs",
                        lambda state, archs, *a, **k: [base + 0.01 * i for i in range(len(archs))])
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
