"""The study's plots (`autogan_fast.study.plots`) drawn from small synthetic summaries: every file written and a
valid PNG, the degenerate cases (no values, n < 3, values that diverged) drawn without error, and a clear
UsageError when matplotlib is missing."""

import json
import math
import sys

import pytest

from autogan_fast.errors import UsageError
from autogan_fast.runs.checkpoint import strict_json
from autogan_fast.study.plots import draw_plots

ARCH = [1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3]  # cell 2 skips in from cell 1, cell 3 from cells 1 and 2
PLAIN_ARCH = [0, 1, 2, 0, 0, 2, 1, 1, 0, 1, 0, 0, 1, 0]  # no skip edges
NAN = math.nan
FILES = ["quality.png", "proxy_vs_final.png", "proxy_curve.png", "architectures.png"]


def interval(values: list[float]) -> dict:
    """The summary's interval entry; a fixed half-width stands in for the bootstrap one (the plot only draws it)."""
    if not values:
        return {"mean": NAN, "low": NAN, "high": NAN, "n": 0}
    mean = sum(values) / len(values)
    half = NAN if len(values) < 2 else 0.5
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(values)}


def search(seed: int, final_is: float | None, final_fid: float | None, curve_length: int = 12) -> dict:
    return {"seed": seed, "run": f"search/x-seed{seed}", "finding": True, "collapsed_stages": [],
            "proxy_curve": [1.5 + 0.1 * i + 0.05 * seed for i in range(curve_length)], "top1_arch": ARCH,
            "final_is": final_is, "final_fid": final_fid}


def arm(searches: list[dict], best_arch: list[int] | None) -> dict:
    scored = [s for s in searches if s["final_is"] is not None]
    best = max(scored, key=lambda s: s["final_is"], default=None)
    return {"searches": searches, "final_is": interval([s["final_is"] for s in scored]),
            "final_fid": interval([s["final_fid"] for s in scored]), "best_arch": best_arch,
            "best_final_is": best and best["final_is"]}


def spearman(n: int) -> dict:
    if n < 3:
        return {"rho": NAN, "low": NAN, "high": NAN, "n": n, "p": NAN}
    return {"rho": 0.43, "low": 0.1, "high": 0.7, "n": n, "p": 0.02}


def make_summary(proxy_points: int = 5) -> dict:
    """Three arms of 3 searches (one training diverged, one search's curve shorter), one arm with no searches,
    5 random architectures (one diverged), `proxy_points` of them with a proxy score."""
    randoms = [{"arch": PLAIN_ARCH, "final_is": 4.0 + 0.2 * i, "final_fid": 40.0 - i} for i in range(4)]
    randoms.append({"arch": ARCH, "final_is": None, "final_fid": None})
    proxies = [{"arch": a["arch"], "proxy_is": 2.0 + 0.1 * i if i < proxy_points else None,
                "final_is": a["final_is"], "final_fid": a["final_fid"]} for i, a in enumerate(randoms)]
    return {
        "settings": {"arms": ["mlas", "slas", "random", "mlas-no-reset"], "grow_steps": [4, 8]},
        "arms": {
            "mlas": arm([search(1, 5.2, 31.0), search(2, 5.8, 28.0), search(3, None, None)], ARCH),
            "slas": arm([search(1, 4.9, 33.0), search(2, 5.0, 32.0), search(3, 4.4, 36.0, curve_length=9)],
                        PLAIN_ARCH),
            "random": arm([search(1, 4.5, 35.0), search(2, 4.1, 38.0), search(3, 4.7, 34.0)], ARCH),
            "mlas-no-reset": arm([], None),
        },
        "random_baseline": {"archs": randoms, "final_is": interval([4.0, 4.2, 4.4, 4.6]),
                            "final_fid": interval([40.0, 39.0, 38.0, 37.0]), "median_is": 4.3, "median_fid": 38.5},
        "proxy_vs_final": {"searches": ["proxy/mlas-seed1", "proxy/mlas-seed2"], "archs": proxies,
                           "spearman_is": spearman(min(proxy_points, 4)),
                           "spearman_fid": spearman(min(proxy_points, 4)), "anchor": 0.779},
    }


def empty_summary() -> dict:
    """A study before any sub-run finished: every list empty, every number missing."""
    return {"settings": {"arms": ["mlas"], "grow_steps": []},
            "arms": {"mlas": arm([], None)},
            "random_baseline": {"archs": [], "final_is": interval([]), "final_fid": interval([]),
                                "median_is": None, "median_fid": None},
            "proxy_vs_final": {"searches": [], "archs": [], "spearman_is": spearman(0), "spearman_fid": spearman(0),
                               "anchor": 0.779}}


def texts(fig) -> str:
    """Every title and text of a figure, one string."""
    parts = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        parts += [ax.get_title(loc) for loc in ("left", "center", "right")]
        parts += [t.get_text() for t in ax.texts]
        parts += [t.get_text() for t in ax.get_xticklabels()]
    return "\n".join(parts)


@pytest.mark.parametrize("summary", [
    # the normal case: several arms, a diverged training, an arm without searches, curves of unequal length
    pytest.param(make_summary(), id="full"),
    # the same after study.json's round trip: NaN becomes null, tuples lists
    pytest.param(json.loads(json.dumps(strict_json(make_summary()))), id="through-json"),
    # Spearman undefined: fewer than 3 architectures with both a proxy and a final score
    pytest.param(make_summary(proxy_points=2), id="n-below-3"),
    # nothing finished yet: every plot still drawn, with a note instead of data
    pytest.param(empty_summary(), id="empty"),
])
def test_every_plot_is_written_as_a_png(summary, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    out_dir = tmp_path / "plots" / "nested"  # created if missing, parents included
    written = draw_plots(summary, out_dir)
    assert [p.name for p in written] == FILES
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(FILES)  # nothing else left behind
    for path in written:
        assert path.stat().st_size > 5000, path  # a drawn figure, not an empty canvas
        with Image.open(path) as image:
            assert image.format == "PNG"
            image.verify()
            assert min(image.size) > 200


def test_figures_are_closed(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = set(plt.get_fignums())
    draw_plots(make_summary(), tmp_path)
    assert set(plt.get_fignums()) == before


def test_quality_draws_intervals_from_n_4_only():
    """make_summary's arms have 2 and 3 scored searches (each with an interval entry, which the plot must not
    trust below MIN_INTERVAL_N), the random architectures 4: one error bar per panel, the random column's."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    from autogan_fast.study.plots import quality_figure

    fig = quality_figure(make_summary())
    try:
        for ax, key in zip(fig.axes, ("final_is", "final_fid"), strict=True):
            bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
            assert len(bars) == 1, key
            (x,), (y,) = bars[0].lines[0].get_data()
            assert x == pytest.approx(4 + 0.2)  # the fifth column: the random architectures
            assert y == pytest.approx(make_summary()["random_baseline"][key]["mean"])
    finally:
        plt.close(fig)


@pytest.mark.parametrize("proxy_points, expected", [
    # 4 pairs: the summary's rho with its interval, the paper's value beside it
    pytest.param(5, "Spearman ρ = 0.43 [0.10, 0.70], n = 4 (paper: 0.779)", id="rho"),
    # 2 pairs: no rho to report
    pytest.param(2, "Spearman ρ: n too small, n = 2 (paper: 0.779)", id="n-too-small"),
])
def test_proxy_vs_final_titles(proxy_points, expected):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from autogan_fast.study.plots import proxy_vs_final_figure

    fig = proxy_vs_final_figure(make_summary(proxy_points))
    try:
        is_title, fid_title = (ax.get_title(loc="left") for ax in fig.axes)
        assert is_title == expected
        assert fid_title.startswith("Spearman ρ(proxy IS, −FID)")
        if proxy_points < 3:
            assert "n too small" in fid_title
    finally:
        plt.close(fig)


def test_quality_has_a_column_per_arm_then_the_random_baseline():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from autogan_fast.study.plots import quality_figure

    fig = quality_figure(make_summary())
    try:
        for ax in fig.axes:
            labels = [t.get_text() for t in ax.get_xticklabels()]
            # the diverged training is left out of mlas' n; the empty arm keeps its column
            assert labels == ["mlas\nn = 2", "slas\nn = 3", "random\nn = 3", "mlas-no-reset\nn = 0",
                              "random archs\nn = 4"]
        assert "no values" in texts(fig)
        assert "random archs' median (4.30)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    finally:
        plt.close(fig)


def test_architectures_draw_cells_and_skip_edges():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from autogan_fast.study.plots import architectures_figure

    fig = architectures_figure(make_summary())
    try:
        assert len(fig.axes) == 3  # mlas-no-reset has no best architecture: no row
        mlas, slas = fig.axes[0], fig.axes[1]
        for ax, skips in ((mlas, 3), (slas, 0)):  # ARCH: 1 -> 2, 1 -> 3, 2 -> 3; PLAIN_ARCH: none
            gids = [p.get_gid() for p in ax.patches]
            assert gids.count("next") == 2 and gids.count("skip") == skips
        text = "\n".join(t.get_text() for t in mlas.texts)
        assert "mlas\nfinal IS 5.80" in text
        assert "pre-activation conv\nno normalization\nnearest upsampling\nshortcut" in text  # cell 1 of ARCH
    finally:
        plt.close(fig)


def test_missing_matplotlib_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(UsageError, match=r"matplotlib: pip install 'autogan-fast\[plot\]'"):
        draw_plots(make_summary(), tmp_path / "plots")
    assert not (tmp_path / "plots").exists()  # nothing half-written


def test_proxy_vs_final_draws_a_row_per_proxy_arm():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from autogan_fast.study.plots import proxy_vs_final_figure

    summary = make_summary()
    proxy = summary["proxy_vs_final"]
    summary["proxy_vs_final"] = {**proxy, "headline": "slas", "by_arm": {"slas": proxy, "mlas": proxy}}
    fig = proxy_vs_final_figure(summary)
    try:
        assert len(fig.axes) == 4  # two proxy arms, IS and FID each
        assert fig.axes[0].get_xlabel().startswith("proxy IS on slas's shared GANs")
        assert fig.axes[2].get_xlabel().startswith("proxy IS on mlas's shared GANs")
    finally:
        plt.close(fig)
