"""The study's plots, drawn from its summary (study.json) alone, into the study folder's plots/.

  - quality.png: final IS and FID of each search's top-1 per arm beside the random architectures, every value
    a dot, the mean with its 95% bootstrap interval (from MIN_INTERVAL_N values on; below, the dots alone): the
    effect sizes and their spread, which the tests' verdicts hide;
  - proxy_vs_final.png: the proxy (the shared GAN's IS) against the final score, with Spearman's rho and the
    paper's value: whether ranking by the proxy can find good architectures at all;
  - proxy_curve.png: the mean reward per search iteration per arm, the grow iterations marked: how each
    search progressed, and what a grow or a reset does to it;
  - architectures.png: each arm's best architecture drawn like the AutoGAN paper's figure, so the arms'
    choices can be compared at a glance.
A value that is None (a diverged or blocked training; or NaN once written to JSON) is left out, never imputed.
matplotlib is the optional `plot` extra: without it `draw_plots` raises UsageError and the numbers stand alone.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..search_space import (
    CONV_OPS,
    NORM_OPS,
    SHORTCUT_NONE,
    SHORTCUT_OPS,
    SHORTCUT_YES,
    UP_OPS,
    CellChoice,
    decode_arch,
)
from .statistics import MIN_INTERVAL_N

DPI = 120
QUALITY, PROXY_VS_FINAL, PROXY_CURVE, ARCHITECTURES = ("quality.png", "proxy_vs_final.png", "proxy_curve.png",
                                                       "architectures.png")
RANDOM_LABEL = "random archs"
RANDOM_COLOR, MEDIAN_COLOR, MUTED, GRID = "#7f7f7f", "#3c3c3c", "#8c8c8c", "#e1e1e1"
ARM_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")  # the arm's place in the study
JITTER_SEED = 0  # the dots' horizontal jitter is drawn the same every time: a redrawn plot does not move
MISSING_MATPLOTLIB = ("drawing the study's plots needs matplotlib: pip install 'autogan-fast[plot]' "
                      "(study.json and study.md are written without them)")


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, never a window); UsageError when it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError(MISSING_MATPLOTLIB) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------------
# Reading the summary: study.json writes NaN as null, so both mean "no value"


def number(value) -> float | None:
    """`value` as a float, or None when it is missing or not finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def present(values) -> list[float]:
    return [v for v in (number(x) for x in values) if v is not None]


def arm_color(index: int) -> str:
    return ARM_COLORS[index % len(ARM_COLORS)]


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def grow_steps(summary: dict) -> list[int]:
    return [int(g) for g in summary.get("settings", {}).get("grow_steps") or []]


# --------------------------------------------------------------------------------------------------
# quality.png


def draw_column(ax, column: int, values: list[float], interval: dict | None, color: str,
                rng: np.random.Generator) -> None:
    """One column of the quality plot: every value a dot left of the column's centre, the mean and its interval
    right of it (the interval is the summary's, the one study.md reports)."""
    if values:
        ax.scatter(column - 0.12 + rng.uniform(-0.1, 0.1, len(values)), values, s=22, color=color, alpha=0.45,
                   edgecolors="none", zorder=3)
    interval = interval or {}
    mean = number(interval.get("mean"))
    if mean is None:
        ax.text(column, 0.5, "no values", transform=ax.get_xaxis_transform(), ha="center", fontsize=8,
                color=MUTED)
        return
    low, high = number(interval.get("low")), number(interval.get("high"))
    if interval.get("n", 0) < MIN_INTERVAL_N or low is None or high is None:
        return  # too few values for an interval (statistics.MIN_INTERVAL_N): the dots alone say it
    ax.errorbar([column + 0.2], [mean], yerr=[[mean - low], [high - mean]], fmt="D", color=color, markersize=7,
                capsize=5, elinewidth=1.6, markeredgecolor="black", markeredgewidth=0.6, zorder=4)


def quality_figure(summary: dict):
    """Final IS (left) and FID (right) per arm, the random architectures as the last column; returns the Figure."""
    plt = pyplot()
    arms, baseline = summary.get("arms", {}), summary.get("random_baseline", {})
    random_archs = baseline.get("archs", [])
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 2.6 * (len(arms) + 1)), 4.8), dpi=DPI)
    for ax, key, metric, better, median_key in ((axes[0], "final_is", "IS", "higher is better", "median_is"),
                                                 (axes[1], "final_fid", "FID", "lower is better", "median_fid")):
        rng = np.random.default_rng(JITTER_SEED)
        labels = []
        for column, (arm, entry) in enumerate(arms.items()):
            values = present(s.get(key) for s in entry.get("searches", []))
            draw_column(ax, column, values, entry.get(key), arm_color(column), rng)
            labels.append(f"{arm}\nn = {len(values)}")
        values = present(a.get(key) for a in random_archs)
        draw_column(ax, len(arms), values, baseline.get(key), RANDOM_COLOR, rng)
        labels.append(f"{RANDOM_LABEL}\nn = {len(values)}")
        median = number(baseline.get(median_key))
        if median is not None:  # the "chance" line every arm is tested against
            ax.axhline(median, linestyle="--", color=MEDIAN_COLOR, linewidth=1.1, zorder=2,
                       label=f"random archs' median ({fmt(median)})")
            ax.legend(fontsize=8, loc="best")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylabel(f"final {metric} ({better})")
        ax.set_title(f"Final {metric}", fontsize=10, loc="left")
        ax.grid(axis="y", color=GRID, linewidth=0.8)
        ax.set_axisbelow(True)
    fig.suptitle("Each search's top-1 architecture trained from scratch: a dot per search (n per arm = its "
                 f"searches with a score),\nthe mean with its 95% bootstrap interval from n = {MIN_INTERVAL_N} on",
                 fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# proxy_vs_final.png


def spearman_title(rho: dict | None, against: str, anchor: float | None) -> str:
    """The panel's title from the summary's Spearman entry; "n too small" where rho is undefined (n < 3)."""
    rho = rho or {}
    n = int(rho.get("n") or 0)
    name = "Spearman ρ" if against == "IS" else f"Spearman ρ(proxy IS, {against})"
    paper = "" if anchor is None else (f" (paper: {anchor})" if against == "IS" else f" (paper, IS: {anchor})")
    estimate = number(rho.get("rho"))
    if estimate is None:
        why = "n too small" if n < 3 else "undefined (a constant ranking)"
        return f"{name}: {why}, n = {n}{paper}"
    low, high = number(rho.get("low")), number(rho.get("high"))
    bounds = "" if low is None or high is None else f" [{low:.2f}, {high:.2f}]"
    return f"{name} = {estimate:.2f}{bounds}, n = {n}{paper}"


def proxy_vs_final_figure(summary: dict):
    """The proxy IS of each random architecture against its final IS (left) and FID (right), a row per proxy
    arm (the headline first); returns the Figure."""
    plt = pyplot()
    proxy = summary.get("proxy_vs_final", {})
    anchor = number(proxy.get("anchor"))
    rows = list(proxy.get("by_arm", {}).items()) or [(None, proxy)]  # a summary without by_arm: one row
    arm_order = list(summary.get("arms", {}))
    fig, axes = plt.subplots(len(rows), 2, figsize=(12.0, 4.3 * len(rows)), dpi=DPI, squeeze=False)
    for (arm, entry), row_axes in zip(rows, axes, strict=True):
        color = arm_color(arm_order.index(arm) if arm in arm_order else 0)
        archs = entry.get("archs", [])
        for ax, key, against, rho_key, metric in ((row_axes[0], "final_is", "IS", "spearman_is",
                                                   "final IS (higher is better)"),
                                                  (row_axes[1], "final_fid", "−FID", "spearman_fid",
                                                   "final FID (lower is better)")):
            pairs = [(number(a.get("proxy_is")), number(a.get(key))) for a in archs]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            if pairs:
                xs, ys = zip(*pairs, strict=True)
                ax.scatter(xs, ys, s=28, color=color, alpha=0.7, edgecolors="black", linewidths=0.4, zorder=3)
            else:
                ax.text(0.5, 0.5, "no architecture with both scores yet", transform=ax.transAxes, ha="center",
                        fontsize=9, color=MUTED)
            searches = len(entry.get("searches", []))
            source = f"{arm}'s" if arm is not None else "the"
            ax.set_xlabel(f"proxy IS on {source} shared GANs (mean over {searches} search(es))")
            ax.set_ylabel(metric)
            ax.set_title(spearman_title(entry.get(rho_key), against, anchor), fontsize=9, loc="left")
            ax.grid(color=GRID, linewidth=0.8)
            ax.set_axisbelow(True)
    count = len(rows[0][1].get("archs", []))
    fig.suptitle(f"Proxy vs final score: {count} random architectures rescored on each proxy arm's finished searches",
                 fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.4 / fig.get_figheight()))  # 0.4 in for the title, at any row count
    return fig


# --------------------------------------------------------------------------------------------------
# proxy_curve.png


def mean_curve(curves: list[list[float]]) -> np.ndarray:
    """The mean of the curves over their common prefix, ignoring missing points (NaN where all are)."""
    length = min(len(c) for c in curves)
    stacked = np.array([c[:length] for c in curves], dtype=np.float64)
    counts = np.isfinite(stacked).sum(axis=0)
    sums = np.where(np.isfinite(stacked), stacked, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(length, np.nan), where=counts > 0)


def proxy_curve_figure(summary: dict):
    """The mean reward per search iteration: a thin line per search, a thick one per arm; returns the Figure."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10.0, 4.8), dpi=DPI)
    drawn = False
    for index, (arm, entry) in enumerate(summary.get("arms", {}).items()):
        # a point that is None (not finite once in JSON) stays a gap in its line
        curves = [[math.nan if v is None else float(v) for v in s.get("proxy_curve") or []]
                  for s in entry.get("searches", [])]
        curves = [c for c in curves if c]
        if not curves:
            continue
        color = arm_color(index)
        for curve in curves:
            ax.plot(range(len(curve)), curve, color=color, linewidth=0.8, alpha=0.35)
        mean = mean_curve(curves)
        ax.plot(range(len(mean)), mean, color=color, linewidth=2.6, label=f"{arm} (mean of {len(curves)})")
        drawn = True
    for stage, step in enumerate(grow_steps(summary), start=1):  # the first iteration of stage 1, 2
        ax.axvline(step, linestyle=":", color=MEDIAN_COLOR, linewidth=1.2)
        ax.text(step, 1.0, f" grow: stage {stage}", transform=ax.get_xaxis_transform(), va="top", fontsize=8,
                color=MEDIAN_COLOR)
    if drawn:
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no search iteration logged yet", transform=ax.transAxes, ha="center", fontsize=9,
                color=MUTED)
    ax.set_xlabel("search iteration")
    ax.set_ylabel("mean proxy IS (the iteration's mean reward)")
    grows = " (dotted: the multi-level arms' grow iterations)" if grow_steps(summary) else ""
    ax.set_title(f"Proxy IS during the search: a thin line per search, thick: the arm's mean{grows}", fontsize=10,
                 loc="left")
    ax.grid(color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# architectures.png

# Layout of one row in data coordinates: the label, then the cells left to right; the room above the boxes
# is where the skip edges arc.
LABEL_RIGHT, CELL_LEFT, CELL_WIDTH, CELL_GAP = 1.7, 2.3, 2.4, 0.9
BOX_LOW, BOX_HIGH, ROW_TOP = 0.25, 2.05, 3.2


def cell_lines(cell_number: int, cell: CellChoice) -> list[str]:
    """A cell's box: its number, then each decision's label (search_space's registry)."""
    return [f"cell {cell_number}", CONV_OPS[cell.conv], NORM_OPS[cell.norm], UP_OPS[cell.up],
            SHORTCUT_OPS[SHORTCUT_YES if cell.shortcut else SHORTCUT_NONE]]


def draw_architecture(ax, cells: list[CellChoice], label: str, color: str) -> None:
    """One architecture: a box per cell listing its decisions, an arrow from each cell to the next and a curved
    arrow for each skip edge from an earlier cell (above the boxes, as in the AutoGAN paper's figure)."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    ax.text(LABEL_RIGHT, (BOX_LOW + BOX_HIGH) / 2, label, ha="right", va="center", fontsize=9)
    lefts = [CELL_LEFT + i * (CELL_WIDTH + CELL_GAP) for i in range(len(cells))]
    middle = (BOX_LOW + BOX_HIGH) / 2
    for cell_number, (left, cell) in enumerate(zip(lefts, cells, strict=True), start=1):
        ax.add_patch(FancyBboxPatch((left, BOX_LOW), CELL_WIDTH, BOX_HIGH - BOX_LOW, boxstyle="round,pad=0.04",
                                    facecolor=color, alpha=0.15, edgecolor=color, linewidth=1.4))
        lines = cell_lines(cell_number, cell)
        ax.text(left + CELL_WIDTH / 2, BOX_HIGH - 0.18, lines[0], ha="center", va="top", fontsize=8.5,
                fontweight="bold")
        ax.text(left + CELL_WIDTH / 2, BOX_HIGH - 0.5, "\n".join(lines[1:]), ha="center", va="top", fontsize=7.5,
                linespacing=1.35)
    for left, next_left in itertools.pairwise(lefts):  # each cell feeds the next
        ax.add_patch(FancyArrowPatch((left + CELL_WIDTH + 0.06, middle), (next_left - 0.06, middle),
                                     arrowstyle="-|>", mutation_scale=12, color="black", linewidth=1.2, gid="next"))
    for target, cell in enumerate(cells):
        for source in cell.skip_from:  # 1-based earlier cells; an arc from the source's top to the target's top
            # a longer skip leaves further right, lands further left and arcs higher (arc3's height grows with
            # the distance): two skips from or into one cell stay apart
            reach = target + 1 - source
            start = (lefts[source - 1] + CELL_WIDTH * (0.4 + 0.2 * reach), BOX_HIGH + 0.06)
            end = (lefts[target] + CELL_WIDTH * (0.6 - 0.2 * reach), BOX_HIGH + 0.06)
            ax.add_patch(FancyArrowPatch(start, end, connectionstyle="arc3,rad=-0.2",
                                         arrowstyle="-|>", mutation_scale=11, color=color, linewidth=1.2,
                                         linestyle="--", gid="skip"))
    ax.text(CELL_LEFT - 0.35, middle, "z", ha="right", va="center", fontsize=9, style="italic")
    ax.add_patch(FancyArrowPatch((CELL_LEFT - 0.3, middle), (CELL_LEFT - 0.06, middle), arrowstyle="-|>",
                                 mutation_scale=10, color="black", linewidth=1.0))


def architectures_figure(summary: dict):
    """Each arm's best architecture (its top-1 with the highest final IS), a row per arm; returns the Figure."""
    plt = pyplot()
    rows = [(index, arm, entry) for index, (arm, entry) in enumerate(summary.get("arms", {}).items())
            if entry.get("best_arch")]
    width = CELL_LEFT + 3 * (CELL_WIDTH + CELL_GAP)
    fig, axes = plt.subplots(max(1, len(rows)), 1, figsize=(10.5, 1.9 * max(1, len(rows)) + 0.5), dpi=DPI,
                             squeeze=False)
    for ax in axes[:, 0]:
        ax.set_xlim(0, width)
        ax.set_ylim(0, ROW_TOP)
        ax.axis("off")
    if not rows:
        axes[0, 0].text(width / 2, ROW_TOP / 2, "no architecture trained yet", ha="center", fontsize=9,
                        color=MUTED)
    for ax, (index, arm, entry) in zip(axes[:, 0], rows, strict=False):
        label = f"{arm}\nfinal IS {fmt(number(entry.get('best_final_is')))}"
        draw_architecture(ax, decode_arch(entry["best_arch"]), label, arm_color(index))
    fig.suptitle("Each arm's best architecture (its search top-1 with the highest final IS); dashed: skip edges",
                 fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------


FIGURES = ((QUALITY, quality_figure), (PROXY_VS_FINAL, proxy_vs_final_figure), (PROXY_CURVE, proxy_curve_figure),
           (ARCHITECTURES, architectures_figure))


def draw_plots(summary: dict, out_dir: Path) -> list[Path]:
    """Draw every plot of a study summary into out_dir (created if missing); return the paths written."""
    plt = pyplot()  # before the folder: without matplotlib nothing is created
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in FIGURES:
        fig = build(summary)
        try:
            fig.savefig(out_dir / name, dpi=DPI, facecolor="white")
        finally:
            plt.close(fig)  # a long study redraws its plots: no figure may stay open
        written.append(out_dir / name)
    return written


__all__ = ["architectures_figure", "draw_plots", "proxy_curve_figure", "proxy_vs_final_figure", "quality_figure"]
