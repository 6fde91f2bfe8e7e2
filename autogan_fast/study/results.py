"""What a sub-run's folder says: its status, and its result.json as the summary reads it (or why not).

Statuses, from the folder's files alone:
  - done: result.json holds what the summary reads;
  - damaged: result.json is there but does not (not JSON, not an object, a missing or non-finite score);
    the runner sets it aside and resumes the sub-run, which writes it again from its checkpoint;
  - diverged: its log ends in a `diverged` event (a finding, kept);
  - blocked: a sub-run it needs diverged or is blocked;
  - unranked: a training of rank R after a search that ranked fewer than R distinct architectures
    (`--top` beyond what the search kept): nothing to train, counted;
  - pending: none of these (not run yet, or stopped part-way).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..runs.checkpoint import parse_json
from ..runs.folder import LOG, RESULT, JsonlLog
from .plan import SubRun

DAMAGED_SUFFIX = ".damaged"  # a damaged result.json is kept beside the rewritten one under this suffix
# Statuses with no number for the summary: counted in study.json / study.md, never imputed.
MISSING = ("diverged", "blocked")


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def result_damage(result: object, run: SubRun, random_archs: int) -> str | None:
    """Why `result` (a sub-run's parsed result.json) cannot be read as the summary reads it, or None.
    `random_archs` is K, the architectures a proxy rescoring scores."""
    if not isinstance(result, dict):
        return f"a JSON {type(result).__name__}, not an object"
    if run.command == "train":
        tail = result.get("tail_mean")
        if not (isinstance(tail, dict) and is_number(tail.get("inception_score")) and is_number(tail.get("fid"))):
            return "no 'tail_mean' with a finite inception_score and fid"
        return None
    archs = result.get("archs")
    if run.command == "search":
        if not (isinstance(archs, list) and archs and all(
                isinstance(e, dict) and isinstance(e.get("arch"), list) and is_number(e.get("inception_score"))
                for e in archs)):
            return "no list of 'archs' with an 'arch' and a finite inception_score each"
        return None
    if not (isinstance(archs, list) and len(archs) == random_archs
            and all(isinstance(e, dict) and is_number(e.get("proxy_is")) for e in archs)):
        return f"no list of {random_archs} 'archs' with a finite proxy_is each"
    return None


def random_arch_count(plan: dict[str, SubRun]) -> int:
    """K, read off the plan (the random baseline's trainings)."""
    return len({run.arch_index for run in plan.values() if run.arch_index is not None})


def read_result(study_dir: Path, run: SubRun, plan: dict[str, SubRun]) -> tuple[dict | None, str | None]:
    """The sub-run's result.json and None, or None and why it is damaged, or (None, None) without one."""
    path = study_dir / run.name / RESULT
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as err:  # ValueError: not UTF-8
        return None, f"unreadable ({err})"
    try:
        result = parse_json(text)
    except ValueError as err:
        return None, f"not JSON ({getattr(err, 'msg', None) or err})"
    problem = result_damage(result, run, random_arch_count(plan))
    return (None, problem) if problem else (result, None)


def status(study_dir: Path, run: SubRun, plan: dict[str, SubRun]) -> str:
    """done, damaged, diverged, blocked, unranked or pending (see the module's header)."""
    folder = study_dir / run.name
    result, problem = read_result(study_dir, run, plan)
    if result is not None:
        return "done"
    if problem is not None:
        return "damaged"
    if (folder / LOG).is_file():
        counter = "iter" if run.command == "train" else "search_iter"
        events = JsonlLog(folder / LOG, counter).read()
        if events and events[-1].get("event") == "diverged":
            return "diverged"
    needs = [status(study_dir, plan[need], plan) for need in run.needs]
    if any(need in MISSING for need in needs):
        return "blocked"
    if run.rank is not None and needs == ["done"]:
        search, _ = read_result(study_dir, plan[run.needs[0]], plan)
        if run.rank > len(search["archs"]):
            return "unranked"
    return "pending"


def statuses(study_dir: Path, plan: list[SubRun]) -> dict[str, list[str]]:
    """The plan's sub-runs by status (plan order within each)."""
    by_name = {run.name: run for run in plan}
    found: dict[str, list[str]] = {}
    for run in plan:
        found.setdefault(status(study_dir, run, by_name), []).append(run.name)
    return found


__all__ = ["DAMAGED_SUFFIX", "MISSING", "read_result", "result_damage", "status", "statuses"]
