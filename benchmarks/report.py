"""Committed benchmark results -> the README's performance table and a speed-up bar chart.

    python -m benchmarks.report                       # every benchmarks/results/*.json -> README.md + PNG
    python -m benchmarks.report benchmarks/results/nvidia-h100-80gb-hbm3.json --png /tmp/speedup.png
    python -m benchmarks.report --check               # exit 1 when README.md's block is out of date

Input: pytest-benchmark JSON files (`--benchmark-json`) committed under `benchmarks/results/`. Each
entry of `benchmarks` carries `stats` (seconds) and `extra_info` with at least `row`, `variant` and
`label`; files that are not pytest-benchmark results (no `machine_info` / `benchmarks`) are skipped
with a message on stderr. Numbers are only ever compared inside one file (one card, one driver).

Speed-up of an entry vs X = median of variant X with the same row and label / the entry's median.
The baseline "eager" of the `reward` row is its eager fp32 reward (variant `eager`; the `fp32`
precision variant stands in when no `eager` entry exists).

Targets. An entry's speed-up targets are its `extra_info.target` (`{"min_speedup", "vs"}`,
or a list of them) when the key is present, otherwise the defaults below; two conditions that are not
speed-ups are always added:

| row | variant | target |
| --- | --- | --- |
| `sn` | `triton` | >= 5x eager |
| `upconv` | `triton`, 16 -> 32 px, 128 ch, batch 64 / 128 | >= 1.5x eager |
| `stats` | `triton` | >= 3x eager |
| `gan_unit` | `graph` | >= 4x eager and >= 1.3x compile |
| `reward` | the fastest precision ranking as fp32 does | >= 5x eager fp32, `spearman_vs_fp32` >= 0.98 |
| `stage_stream` | the graph-engine variants at stage 2 | >= 4x eager (the row's own `target`) |
| projection | every non-eager stream variant | the projected paper search <= 30 min |
| `search_iteration` (old files) | every non-eager variant | `projected_paper_search_seconds` <= 30 min |

The projected paper search (`benchmarks/projection.py`, whose header has the formula) is built from the
`stage_stream` rows (mean seconds per D step, captures) and the per-stage `reward` rows (mean seconds per
reward) of one file, and shown beside eager's projection from the same file. Files from before those rows
(the `search_iteration` row's 1%-slice projection) render as they did.

A missed target keeps its row, marked **missed**; why, and what is next, is the hand-written paragraph
below the generated block in the README. With no results the block says so and holds no number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .projection import MAX_SEARCH_SECONDS, Projection, project, rows_from_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_README = ROOT / "README.md"
DEFAULT_PNG = RESULTS_DIR / "speedup.png"
BEGIN = "<!-- benchmarks:begin -->"
END = "<!-- benchmarks:end -->"
REPRODUCE = "OUT=/tmp/gpu bash benchmarks/gpu_check.sh"

PRECISIONS = ("fp32", "tf32", "bf16")  # variants of the reward row
MIN_SPEARMAN = 0.98  # reward: rank correlation of a faster precision's rewards with fp32's
# Table order of the variants inside one (row, label); others follow in the file's order.
VARIANT_ORDER = ("eager", "compile", "triton", "graph", "graph+auto", "graph+bf16", *PRECISIONS)


@dataclass(frozen=True)
class Target:
    min_speedup: float
    vs: str = "eager"


def _upconv_target_label(label: str) -> bool:
    """The target's upconv shapes: 16 -> 32 px, 128 channels, batch 64 or 128 (forward+backward)."""
    numbers = {int(n) for n in re.findall(r"\d+", label)}
    fwd_only = "fwd" in label.lower() and "bwd" not in label.lower()
    return {16, 32, 128} <= numbers <= {16, 32, 64, 128} and not fwd_only


# (row, variant) -> (targets, which labels); the reward row's is given to its best precision only.
DEFAULT_TARGETS = {
    ("sn", "triton"): ((Target(5.0),), None),
    ("upconv", "triton"): ((Target(1.5),), _upconv_target_label),
    ("stats", "triton"): ((Target(3.0),), None),
    ("gan_unit", "graph"): ((Target(4.0), Target(1.3, "compile")), None),
}
REWARD_TARGET = (Target(5.0),)


class NotResults(ValueError):
    """A file that is not a pytest-benchmark results file."""


@dataclass
class Entry:
    row: str
    label: str
    variant: str
    median_s: float | None  # None: skipped or not measured
    iqr_s: float | None
    mean_s: float | None
    extra: dict
    skipped: str | None = None
    speedups: dict = field(default_factory=dict)  # vs variant -> speed-up
    targets: tuple = ()
    checks: list = field(default_factory=list)  # (text, ok: True / False / None)

    @property
    def status(self) -> str:
        if self.skipped is not None:
            return "skipped"
        oks = [ok for _, ok in self.checks]
        if not oks:
            return ""
        if False in oks:
            return "missed"
        if None in oks:
            return "not measured"
        return "met"


@dataclass
class Results:
    path: Path
    machine: dict
    commit: dict
    datetime: str
    entries: list
    projections: dict = field(default_factory=dict)  # stream variant -> Projection (files with stream rows)

    @property
    def gpu(self) -> str:
        m = self.machine
        cpu = m.get("cpu") if isinstance(m.get("cpu"), dict) else {}
        return str(m.get("gpu") or "CPU " + str(cpu.get("brand_raw") or m.get("processor") or m.get("node") or "?"))


# --------------------------------------------------------------------------------------------------
# Reading and computing


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def load_results(path: Path) -> Results:
    """Read one pytest-benchmark JSON file; NotResults when it is something else."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotResults(f"not readable as JSON ({e.__class__.__name__})") from None
    if not (isinstance(data, dict) and isinstance(data.get("benchmarks"), list)
            and isinstance(data.get("machine_info"), dict)):
        raise NotResults("not a pytest-benchmark results file (no 'machine_info' and 'benchmarks' list)")
    entries = []
    for b in data["benchmarks"]:
        if not isinstance(b, dict):
            continue
        extra = b.get("extra_info") if isinstance(b.get("extra_info"), dict) else {}
        stats = b.get("stats") if isinstance(b.get("stats"), dict) else {}
        name = str(b.get("name", "?"))
        skipped = extra.get("skipped_reason")
        median = None if skipped else _num(stats.get("median"))
        entries.append(Entry(
            row=str(extra.get("row") or b.get("group") or name), label=str(extra.get("label") or name),
            variant=str(extra.get("variant") or ""), median_s=median if median and median > 0 else None,
            iqr_s=None if skipped else _num(stats.get("iqr")), mean_s=None if skipped else _num(stats.get("mean")),
            extra=extra,
            skipped=None if skipped is None else str(skipped)))
    _order(entries)
    _evaluate(entries)
    return Results(Path(path), data["machine_info"], data.get("commit_info") or {}, str(data.get("datetime") or ""),
                   entries, project(rows_from_json(data["benchmarks"])))


def _order(entries: list) -> None:
    """Rows and labels in the file's order; inside one (row, label) the variants in VARIANT_ORDER."""
    rows, labels = {}, {}
    for e in entries:
        rows.setdefault(e.row, len(rows))
        labels.setdefault((e.row, e.label), len(labels))
    rank = {v: i for i, v in enumerate(VARIANT_ORDER)}
    first = {id(e): i for i, e in enumerate(entries)}
    entries.sort(key=lambda e: (rows[e.row], labels[(e.row, e.label)], rank.get(e.variant, len(rank)), first[id(e)]))


def _parse_targets(raw) -> tuple:
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    out = []
    for t in items:
        if isinstance(t, dict) and _num(t.get("min_speedup")) is not None:
            out.append(Target(float(t["min_speedup"]), str(t.get("vs") or "eager")))
    return tuple(out)


def _best_reward(entries: list) -> set:
    """The fastest measured precision of each reward label whose ranking agrees with fp32's."""
    best = {}
    for label in {e.label for e in entries if e.row == "reward"}:
        cands = [e for e in entries if e.row == "reward" and e.label == label and e.variant in PRECISIONS
                 and e.median_s is not None]
        good = [e for e in cands
                if e.variant == "fp32" or (_num(e.extra.get("spearman_vs_fp32")) or -1.0) >= MIN_SPEARMAN]
        pool = good or cands
        if pool:
            best[label] = id(min(pool, key=lambda e: e.median_s))
    return set(best.values())


def _evaluate(entries: list) -> None:
    """Speed-ups against every other variant of the same row and label, the targets, and their checks."""
    medians = {(e.row, e.label, e.variant): e.median_s for e in entries}
    present = {(e.row, e.label, e.variant) for e in entries}
    best_reward = _best_reward(entries)
    for e in entries:
        for (row, label, variant), m in medians.items():
            if row == e.row and label == e.label and m is not None and e.median_s is not None:
                e.speedups[variant] = m / e.median_s
        if e.row == "reward" and (e.row, e.label, "eager") not in present and "fp32" in e.speedups:
            e.speedups["eager"] = e.speedups["fp32"]  # the fp32 precision stands in for the eager fp32 reward
        if e.variant == "eager":
            continue
        if "target" in e.extra:
            e.targets = _parse_targets(e.extra["target"])
        elif e.row == "reward":
            e.targets = REWARD_TARGET if id(e) in best_reward else ()
        elif (e.row, e.variant) in DEFAULT_TARGETS:
            targets, applies = DEFAULT_TARGETS[(e.row, e.variant)]
            e.targets = targets if applies is None or applies(e.label) else ()
        for t in e.targets:
            s = e.speedups.get(t.vs)
            e.checks.append((f">= {t.min_speedup:g}x {t.vs}", None if s is None else s >= t.min_speedup))
        if e.row == "reward" and e.targets:
            rho = _num(e.extra.get("spearman_vs_fp32"))
            if e.variant == "fp32" and rho is None:
                rho = 1.0  # fp32 is the reference ranking itself
            e.checks.append((f"rank corr. >= {MIN_SPEARMAN:g} ({'?' if rho is None else f'{rho:.3f}'})",
                             None if rho is None else rho >= MIN_SPEARMAN))
        secs = _num(e.extra.get("projected_paper_search_seconds"))
        if e.row == "search_iteration" or secs is not None:
            e.checks.append((f"paper search <= {MAX_SEARCH_SECONDS // 60} min ({_fmt_duration(secs)})",
                             None if secs is None else secs <= MAX_SEARCH_SECONDS))


def collect(paths: list, err=None) -> list:
    """Every readable results file of `paths`, sorted by name; others are reported on `err` and skipped."""
    err = err or sys.stderr
    out = []
    for p in sorted(Path(p) for p in paths):
        try:
            out.append(load_results(p))
        except NotResults as e:
            print(f"report: skipping {p}: {e}", file=err)
    return out


# --------------------------------------------------------------------------------------------------
# Formatting


def _sig(x: float, digits: int = 3) -> str:
    """`digits` significant figures, never in exponent form."""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def _fmt_x(x: float) -> str:
    return f"{_sig(x, 3 if x < 100 else 4)}x"


def _fmt_ms(s: float | None) -> str:
    return "" if s is None else _sig(s * 1e3)


def _fmt_bytes(n) -> str:
    n = _num(n)
    if n is None:
        return ""
    return f"{_sig(n / 2**30)} GiB" if n >= 2**30 else f"{_sig(n / 2**20)} MiB"


def _fmt_duration(s: float | None) -> str:
    if s is None:
        return "not measured"
    return f"{_sig(s / 60)} min" if s < 3 * 3600 else f"{_sig(s / 3600)} h"


def _cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _tflops(e: Entry, machine: dict) -> tuple:
    tf = _num(e.extra.get("tflops"))
    flop = _num(e.extra.get("flop"))
    if tf is None and flop is not None and e.median_s:
        tf = flop / e.median_s / 1e12
    frac = _num(e.extra.get("peak_fraction"))
    peak = _num(machine.get("peak_tflops"))
    if frac is None and tf is not None and peak:
        frac = tf / peak
    return ("" if tf is None else _sig(tf), "" if frac is None else f"{_sig(frac * 100, 2)}%")


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def results_table(res: Results, base: Path) -> str:
    """The Markdown of one results file: a header naming the GPU, versions and command, then the table."""
    m, c = res.machine, res.commit
    commit = str(c.get("id") or (m.get("git") if isinstance(m.get("git"), str) else "") or "")[:12]
    versions = ", ".join(f"{k} {m[k]}" for k in ("torch", "triton", "cuda", "cudnn", "driver") if m.get(k))
    lines = [f"### {_cell(res.gpu)}", "",
             f"`{_rel(res.path, base)}`, measured {res.datetime[:16].replace('T', ' ') or 'at an unknown date'}"
             + (f" at commit `{commit}`" if commit else "") + (f"; {versions}" if versions else "") + ".",
             f"Reproduce on the same GPU: `{REPRODUCE}`, commit `$OUT/bench.json` as "
             f"`benchmarks/results/{m.get('gpu_slug') or res.path.stem}.json`, then `python -m benchmarks.report`.",
             ""]
    if not res.entries:
        return "\n".join([*lines, "The file holds no benchmark entries.", ""])
    lines += ["| row | label | variant | median (ms) | spread (IQR, ms) | speed-up vs eager | TFLOP/s | % of peak "
              "| peak memory | target | met |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for e in res.entries:
        tf, frac = _tflops(e, m)
        if e.skipped is not None:
            target = "; ".join(text for text, _ in e.checks)
            cells = [e.row, e.label, e.variant, "skipped", "", "", "", "", "", target, f"skipped: {e.skipped}"]
        else:
            s = e.speedups.get("eager")
            speed = "baseline" if e.variant == "eager" else ("no eager baseline" if s is None else _fmt_x(s))
            vs_compile = e.speedups.get("compile")
            if e.variant not in ("eager", "compile") and vs_compile is not None:
                speed += f" ({_fmt_x(vs_compile)} compile)"
            target = "; ".join(text for text, _ in e.checks)
            status = {"missed": "**missed**"}.get(e.status, e.status)
            cells = [e.row, e.label, e.variant, "not measured" if e.median_s is None else _fmt_ms(e.median_s),
                     _fmt_ms(e.iqr_s), speed, tf, frac, _fmt_bytes(e.extra.get("peak_memory_bytes")), target, status]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    missed = [e for e in res.entries if e.status == "missed"]
    lines.append("")
    if missed:
        lines.append("Missed: " + ", ".join(f"{e.row} {e.label} {e.variant}" for e in missed)
                     + " (why, and what is next: below).")
        lines.append("")
    return "\n".join(lines)


def projection_check(p: Projection) -> tuple[str, bool | None]:
    """The target text and whether it is met (None: not projected)."""
    total = p.total_s
    return (f"<= {MAX_SEARCH_SECONDS // 60} min", None if total is None else total <= MAX_SEARCH_SECONDS)


def projection_table(res: Results) -> str:
    """The projected paper search of every stream variant of one file, beside eager's from the same file."""
    if not res.projections:
        return ""
    eager = res.projections.get("eager")
    base = None if eager is None else eager.total_s
    lines = ["Projected paper search (65 iterations; `benchmarks/projection.py`): T = sum over stages of "
             "I_s x 11,715 x t_step + K_s x c + R_s x t_reward, from the mean step and reward times above.",
             "",
             "| variant | reward | shared training | captures | rewards | projected search | vs eager (this file) "
             "| target | met |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for p in res.projections.values():
        total = p.total_s
        target, ok = projection_check(p)
        if total is None:
            cells = [p.variant, p.reward_variant, "", "", "", "not projected", "", "" if p.variant == "eager" else
                     target, f"skipped: {p.skipped}" if p.skipped else "missing: " + ", ".join(p.missing)]
        else:
            if p.variant == "eager":
                vs, target, status = "baseline", "", ""
            else:
                vs = "eager not projected" if not base else _fmt_x(base / total)
                status = "met" if ok else "**missed**"
            cells = [p.variant, p.reward_variant, _fmt_duration(sum(p.shared_s)), _fmt_duration(sum(p.capture_s)),
                     _fmt_duration(sum(p.reward_s)), _fmt_duration(total), vs, target, status]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return "\n".join([*lines, ""])


def render_block(results: list, base: Path, png: Path | None) -> str:
    """Everything between the README markers (without them)."""
    head = "<!-- generated by `python -m benchmarks.report` from benchmarks/results/*.json: do not edit -->"
    if not results:
        return "\n".join(["", head, "",
                          "No GPU results have been committed yet; the tables appear here once a GPU session's",
                          "results file is committed under `benchmarks/results/` and `python -m benchmarks.report`",
                          "is run. No speed-up is claimed until then.", ""])
    parts = ["", head, ""]
    if png is not None:
        parts += [f"![speed-up vs eager per row]({_rel(png, base)})", ""]
    for r in results:
        parts.append(results_table(r, base))
        if r.projections:
            parts.append(projection_table(r))
    return "\n".join(parts)


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the markers replaced by `block`; ValueError without the markers."""
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"expected one {BEGIN} ... {END} pair")
    return text[: i + len(BEGIN)] + block + text[j:]


# --------------------------------------------------------------------------------------------------
# The chart (matplotlib: the `plot` extra)

MET, MISSED, NO_TARGET = "#2ca02c", "#d62728", "#4c78a8"
ONE_X, TARGET_TICK, MUTED = "#3c3c3c", "#000000", "#8c8c8c"
WIDTH_IN, ROW_IN, PANEL_EXTRA_IN, DPI = 11.0, 0.22, 0.9, 100


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "~"


def chart(results: list):
    """One panel per results file: a bar per non-eager (row, label, variant), log speed-up vs eager, the
    eager-relative targets as black ticks; returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    # measured entries only (the table lists the skipped ones with their reasons)
    panels = [(r, [e for e in r.entries if e.variant != "eager" and e.skipped is None]) for r in results]
    heights = [max(1, len(es)) * ROW_IN + PANEL_EXTRA_IN for _, es in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(WIDTH_IN, sum(heights)), dpi=DPI, squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (res, es) in zip(axes[:, 0], panels, strict=True):
        values = [v for e in es for v in [e.speedups.get("eager"), *(t.min_speedup for t in e.targets)] if v]
        ax.set_xscale("log")
        ax.set_xlim(min([0.5, *values]) / 1.25, max([10.0, *values]) * 6)  # room for the notes on the right
        ax.set_ylim(len(es) - 0.5, -0.5)
        ax.set_yticks(range(len(es)), [_short(f"{e.row} {e.label}") + f" {e.variant}" for e in es], fontsize=7)
        ax.axvline(1.0, color=ONE_X, linewidth=1.5)
        ax.grid(axis="x", color="#e1e1e1", linewidth=0.8)
        ax.set_axisbelow(True)
        for k, e in enumerate(es):
            s = e.speedups.get("eager")
            if e.skipped is not None or s is None:
                ax.text(1.05, k, "skipped" if e.skipped is not None else "not measured", va="center",
                        fontsize=7, color=MUTED)
                continue
            color = {"met": MET, "missed": MISSED}.get(e.status, NO_TARGET)
            ax.barh(k, s - 1.0, left=1.0, height=0.7, color=color)
            label = _fmt_x(s)
            if e.status == "missed":
                label += "   missed: " + "; ".join(text for text, ok in e.checks if ok is False)
            ax.text(max(s, 1.0) * 1.04, k, label, va="center", fontsize=7,
                    color=MISSED if e.status == "missed" else "#141414")
            for t in e.targets:
                if t.vs == "eager":
                    ax.plot([t.min_speedup] * 2, [k - 0.45, k + 0.45], color=TARGET_TICK, linewidth=2.5)
        ax.set_title(f"Speed-up vs eager (log scale): {res.gpu}, {res.datetime[:10]}", fontsize=10, loc="left")
        ax.legend(handles=[Patch(color=MET, label="target met"), Patch(color=MISSED, label="missed"),
                           Patch(color=NO_TARGET, label="no target"),
                           Patch(color=TARGET_TICK, label="target (eager-relative)")],
                  fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def save_chart(results: list, png: Path) -> None:
    """Write the chart to `png`; RuntimeError (one line) when matplotlib is missing."""
    try:
        fig = chart(results)
    except ImportError:
        raise RuntimeError("the chart needs matplotlib: pip install 'autogan-fast[plot]'") from None
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, facecolor="white")
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Command line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="results files (default: benchmarks/results/*.json)")
    p.add_argument("--readme", type=Path, default=DEFAULT_README, help="README whose marked block is replaced")
    p.add_argument("--png", type=Path, default=DEFAULT_PNG, help="bar chart, written only when results exist")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the README block (or the chart's presence) is out of date")
    args = p.parse_args(argv)

    missing = [f for f in args.files if not f.is_file()]
    if missing:
        print(f"report: no such file: {missing[0]}", file=sys.stderr)
        return 2
    files = args.files or sorted(RESULTS_DIR.glob("*.json"))
    results = collect(files)
    try:
        old = args.readme.read_text()
        new = replace_block(old, render_block(results, args.readme.parent, args.png if results else None))
    except (OSError, ValueError) as e:
        print(f"report: {args.readme}: {e}", file=sys.stderr)
        return 2
    rows = sum(len(r.entries) for r in results)
    if args.check:
        stale = []
        if new != old:
            stale.append(f"{args.readme}'s benchmarks block is out of date")
        if results and not args.png.is_file():
            stale.append(f"{args.png} is missing")
        for s in stale:
            print(f"report: {s}; run `python -m benchmarks.report`", file=sys.stderr)
        if not stale:
            print(f"report: {args.readme} is up to date ({len(results)} results files, {rows} entries)",
                  file=sys.stderr)
        return 1 if stale else 0
    if new != old:
        tmp = args.readme.with_name(args.readme.name + ".tmp")
        tmp.write_text(new)
        os.replace(tmp, args.readme)
    print(f"report: {args.readme}: {len(results)} results files, {rows} entries", file=sys.stderr)
    if results:
        try:
            save_chart(results, args.png)
        except RuntimeError as e:
            print(f"report: {e}", file=sys.stderr)
            return 2
        print(f"report: wrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
