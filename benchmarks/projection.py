"""The paper search's wall time, projected from the `stage_stream` and `reward` rows of one results file.

    T(variant) = sum over stages s of   I_s x S x t_step(s)          shared training, steady state
                                      + K_s x c(s)                   graph captures (graph engine only)
                                      + R_s x t_reward(s)            rewards
with
    I_s        search iterations at stage s: 15, 20, 30 (the paper's 65, grown at 15 and 35)
    S          D steps per iteration: shared_epoch x (50,000 // dis_bs) = 15 x 781 = 11,715
    t_step(s)  mean seconds per D step (its share of the G steps included) of the variant's
               `stage_stream` row: a steady stream of the stage controller's samples, every key already
               captured (`mean_step_seconds`)
    K_s        keys the stage can capture: D and D + G steps of every architecture it can sample, 72 / 720
               / 1,440 (`key_space`; the cache holds them all, so each is captured at most once a stage);
               0 for the eager engine
    c(s)       seconds a first occurrence costs beyond a replayed step: the stream's first pass minus its
               steps at t_step, per capture (`capture_overhead_seconds`)
    R_s        rewards at stage s: I_s x ctrl_step x ctrl_sample_batch (30 a iteration) + num_candidate (10:
               the grow, or the final top-k, that ends the stage)
    t_reward(s) mean seconds per reward of the `reward` row at stage s, at the search's batch, of the
               reward variant the stream variant pairs with (`reward_variant`: eager -> eager fp32, the
               fused and graph variants -> the default precision's pipeline, bf16 training -> bf16).

Means, not medians: a wall time is a sum. Not counted: the controller's sampling and REINFORCE updates,
checkpoints, sample grids, dynamic resets (the stream runs with the reset off). This module reads plain
dicts (no torch), so `report.py` and the suite's own summary share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STAGES = (0, 1, 2)
ITERATIONS_PER_STAGE = (15, 20, 30)  # the paper preset: 65 iterations, grow at 15 and 35
D_STEPS_PER_ITERATION = 15 * (50_000 // 64)  # shared_epoch x steps per epoch of CIFAR-10 at dis_bs 64
REWARDS_PER_ITERATION = 30  # ctrl_step x ctrl_sample_batch
REWARDS_AT_STAGE_END = 10  # num_candidate: scored at each grow and at the final top-k
STREAM_ROW, REWARD_ROW = "stage_stream", "reward"
MAX_SEARCH_SECONDS = 30 * 60  # the target for one H100 / H200


@dataclass
class Projection:
    """One stream variant's projected paper search (seconds), with its parts per stage."""

    variant: str
    reward_variant: str
    shared_s: list = field(default_factory=list)  # per stage: I_s x S x t_step
    capture_s: list = field(default_factory=list)  # per stage: K_s x c
    reward_s: list = field(default_factory=list)  # per stage: R_s x t_reward
    missing: list = field(default_factory=list)  # the rows it needed and the file lacks
    skipped: str | None = None  # why its stream rows did not run (the first skip reason), if they did not

    @property
    def total_s(self) -> float | None:
        if self.missing:
            return None
        return sum(self.shared_s) + sum(self.capture_s) + sum(self.reward_s)

    def as_dict(self) -> dict:
        return {"variant": self.variant, "reward_variant": self.reward_variant, "total_seconds": self.total_s,
                "shared_seconds_per_stage": self.shared_s, "capture_seconds_per_stage": self.capture_s,
                "reward_seconds_per_stage": self.reward_s, "missing": self.missing, "skipped": self.skipped}


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def rows_from_json(benchmarks: list) -> list[dict]:
    """`project`'s rows from the `benchmarks` list of a pytest-benchmark JSON file (or its entries' dicts)."""
    rows = []
    for b in benchmarks:
        if not isinstance(b, dict):
            continue
        extra = b.get("extra_info") if isinstance(b.get("extra_info"), dict) else {}
        stats = b.get("stats") if isinstance(b.get("stats"), dict) else {}
        mean = None if extra.get("skipped_reason") else _num(stats.get("mean"))
        rows.append({"row": extra.get("row"), "variant": extra.get("variant"), "mean_s": mean, "extra": extra})
    return rows


def project(rows: list[dict]) -> dict[str, Projection]:
    """Projections of every stream variant in `rows`, keyed by variant, in the rows' order.

    A row is `{"row", "variant", "mean_s", "extra"}` (mean seconds per call and the entry's extra_info);
    skipped rows have `mean_s` None. A stream variant lacking a stage's stream or reward row gets
    `missing` (and no total) instead of a guess.
    """
    streams: dict[str, dict[int, dict]] = {}
    rewards: dict[tuple[str, int], float] = {}
    reward_of: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for r in rows:
        extra = r.get("extra") or {}
        stage = extra.get("stage")
        if r.get("row") == STREAM_ROW and stage in STAGES:
            streams.setdefault(r["variant"], {})
            reward_of.setdefault(r["variant"], str(extra.get("reward_variant") or ""))
            if extra.get("skipped_reason"):
                skipped.setdefault(r["variant"], str(extra["skipped_reason"]))
            step = _num(extra.get("mean_step_seconds"))
            if r.get("mean_s") is not None and step is not None:
                streams[r["variant"]][stage] = extra
        elif r.get("row") == REWARD_ROW and stage in STAGES and extra.get("search_batch"):
            mean = _num(r.get("mean_s"))
            if mean is not None:
                rewards[(r["variant"], stage)] = mean
    out = {}
    for variant, by_stage in streams.items():
        p = Projection(variant, reward_of[variant], skipped=skipped.get(variant) if len(by_stage) < len(STAGES)
                       else None)
        for s in STAGES:
            extra = by_stage.get(s)
            t_reward = rewards.get((p.reward_variant, s))
            if extra is None:
                p.missing.append(f"{STREAM_ROW} stage {s} {variant}")
            if t_reward is None:
                p.missing.append(f"{REWARD_ROW} stage {s} {p.reward_variant or '?'}")
            if extra is None or t_reward is None:
                continue
            iters = ITERATIONS_PER_STAGE[s]
            p.shared_s.append(iters * D_STEPS_PER_ITERATION * _num(extra["mean_step_seconds"]))
            keys = _num(extra.get("key_space")) if extra.get("captures") else 0.0
            p.capture_s.append((keys or 0.0) * max(_num(extra.get("capture_overhead_seconds")) or 0.0, 0.0))
            p.reward_s.append((iters * REWARDS_PER_ITERATION + REWARDS_AT_STAGE_END) * t_reward)
        out[variant] = p
    return out


def summary_lines(projections: dict[str, Projection]) -> list[str]:
    """One line per variant, beside eager of the same run: what the suite prints at its end."""
    eager = projections.get("eager")
    base = None if eager is None else eager.total_s
    lines = []
    for p in projections.values():
        total = p.total_s
        if total is None:
            why = f"skipped ({p.skipped})" if p.skipped else f"missing {', '.join(p.missing)}"
            lines.append(f"  {p.variant:<12} not projected: {why}")
            continue
        vs = "" if base is None or p.variant == "eager" else f"  {base / total:.2f}x eager ({base / 3600:.2f} h)"
        if base is None and p.variant != "eager":
            vs = "  (eager not measured in this run)"
        lines.append(f"  {p.variant:<12} {total / 3600:6.2f} h  (shared {sum(p.shared_s) / 3600:.2f} h, captures "
                     f"{sum(p.capture_s) / 60:.1f} min, rewards {sum(p.reward_s) / 3600:.2f} h, reward "
                     f"{p.reward_variant}){vs}")
    return lines
