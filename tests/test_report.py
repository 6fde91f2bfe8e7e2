"""`python -m benchmarks.report`: committed pytest-benchmark results -> README table and speed-up chart.

The results files here are written by hand in the pytest-benchmark JSON format (`--benchmark-json`
plus the suite's `extra_info`), so these tests depend on the format only, not on the suite's code.
Medians are chosen so every speed-up is an exact ratio of round numbers.
"""

import json
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` puts tests/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402

README = """# project

## Intro

Hand-written text that the report must not touch.

## Benchmarks

Some words.

<!-- benchmarks:begin -->
stale generated text
<!-- benchmarks:end -->

**What is next.** Hand-written, below the block.

## Layout

More text.
"""


def _entry(row, label, variant, median_ms, iqr_ms=0.01, **extra):
    stats = {"min": median_ms * 0.9e-3, "max": median_ms * 1.2e-3, "mean": median_ms * 1e-3, "stddev": 1e-6,
             "median": median_ms * 1e-3, "iqr": iqr_ms * 1e-3, "rounds": 20, "ops": 1e3 / max(median_ms, 1e-9)}
    info = {"row": row, "variant": variant, "label": label, "items_per_call": 1, "unit": "call", **extra}
    if info.get("skipped_reason"):
        stats = None  # a variant that could not run: no stats
    return {"group": row, "name": f"test_{row}[{label}-{variant}]", "fullname": f"benchmarks/x.py::test_{row}",
            "params": None, "param": None, "extra_info": info, "options": {}, "stats": stats}


def _results(gpu, slug, benchmarks, date="2025-01-02T03:04:05.678901"):
    machine = {"node": "host", "processor": "x86_64", "machine": "x86_64", "python_version": "3.12.3",
               "system": "Linux", "cpu": {"brand_raw": "Some CPU"}, "gpu": gpu, "gpu_slug": slug,
               "driver": "550.54", "cuda": "12.4", "cudnn": 90100, "torch": "2.13.0", "triton": "3.5.0",
               "sm_count": 132, "nvml": {}, "peak_tflops": 400.0, "git": "0123456789abcdef0123"}
    return {"machine_info": machine, "commit_info": {"id": "0123456789abcdef0123", "dirty": False},
            "datetime": date, "version": "5.2.3", "benchmarks": benchmarks}


def _h100():
    return _results("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3", [
        # sn: 6x eager (met), a compile row, and a triton row at df 128 that misses (4x < 5x)
        _entry("sn", "df=64 fwd+bwd", "eager", 1.2),
        _entry("sn", "df=64 fwd+bwd", "triton", 0.2, flop=4e9, peak_memory_bytes=3 * 2**30),
        _entry("sn", "df=64 fwd+bwd", "compile", 0.6),
        _entry("sn", "df=128 fwd+bwd", "eager", 2.0),
        _entry("sn", "df=128 fwd+bwd", "triton", 0.5),
        # upconv: the file's own target (met 2x >= 1.5x), an extra shape without one, a compile row skipped
        _entry("upconv", "N=64 C=128 16->32px", "eager", 1.0),
        _entry("upconv", "N=64 C=128 16->32px", "triton", 0.5, target={"min_speedup": 1.5, "vs": "eager"},
               tflops=12.5, peak_fraction=0.03125),
        _entry("upconv", "N=64 C=128 16->32px", "compile", 0, skipped_reason="compile failed: boom | bang"),
        _entry("upconv", "N=64 C=256 16->32px", "eager", 3.0),
        _entry("upconv", "N=64 C=256 16->32px", "triton", 4.0, target=None),  # slower, no target
        # no `target` key: the default target applies to 16 -> 32 px at 128 channels, not to 8 -> 16 px
        _entry("upconv", "N=128 C=128 16->32px", "eager", 2.0),
        _entry("upconv", "N=128 C=128 16->32px", "triton", 1.6),
        _entry("upconv", "N=64 C=128 8->16px", "eager", 0.5),
        _entry("upconv", "N=64 C=128 8->16px", "triton", 0.25),
        # gan_unit graph: 5x eager (met) but only 1.25x compile (missed: 1.3x needed)
        _entry("gan_unit", "stage 3", "eager", 10.0),
        _entry("gan_unit", "stage 3", "compile", 2.5),
        _entry("gan_unit", "stage 3", "graph", 2.0, captures=4, compile_seconds=12.0),
        # reward: bf16 fastest but ranks badly; tf32 is the best precision that ranks as fp32 does (6x: met)
        _entry("reward", "5000 images", "eager", 600.0),
        _entry("reward", "5000 images", "fp32", 200.0),
        _entry("reward", "5000 images", "tf32", 100.0, spearman_vs_fp32=0.991),
        _entry("reward", "5000 images", "bf16", 50.0, spearman_vs_fp32=0.95),
        # search iteration: projected 25 min (met)
        _entry("search_iteration", "paper iteration", "eager", 60000.0, projected_paper_search_seconds=4000.0),
        _entry("search_iteration", "paper iteration", "graph", 20000.0, projected_paper_search_seconds=1500.0),
    ])


def _h200():
    return _results("NVIDIA H200", "nvidia-h200", [
        _entry("stats", "B=500", "eager", 3.0),
        _entry("stats", "B=500", "triton", 1.5),  # 2x < 3x: missed
        _entry("sn", "df=64 fwd+bwd", "eager", 1.0),
        _entry("sn", "df=64 fwd+bwd", "triton", 0, skipped_reason="needs CUDA"),
    ], date="2025-02-03T00:00:00")


@pytest.fixture
def repo(tmp_path):
    """A README and a results folder holding two machines' files and one file that is not a result."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "nvidia-h100-80gb-hbm3.json").write_text(json.dumps(_h100()))
    (results / "nvidia-h200.json").write_text(json.dumps(_h200()))
    (results / "old-schema.json").write_text(json.dumps({"schema": 1, "rows": []}))
    (tmp_path / "README.md").write_text(README)
    return tmp_path


def _run(repo, *extra):
    files = sorted(str(p) for p in (repo / "benchmarks" / "results").glob("*.json"))
    return report.main([*files, "--readme", str(repo / "README.md"),
                        "--png", str(repo / "benchmarks" / "results" / "speedup.png"), *extra])


def _block(text):
    return text.split(report.BEGIN)[1].split(report.END)[0]


def _tables(block):
    """{GPU name: table rows} of each results file's section."""
    return {part.split("\n")[0]: _rows(part) for part in block.split("\n### ")[1:]}


def _rows(block):
    """Table rows as {(row, label, variant): {column: cell}}."""
    out, header = {}, None
    for line in block.splitlines():
        if not line.startswith("| "):
            header = None if not line.strip() else header
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells[0] == "row":
            header = cells
        elif header and not set(cells[0]) <= {"-", ":"}:
            out[(cells[0], cells[1], cells[2])] = dict(zip(header, cells, strict=True))
    return out


def test_table_speedups_targets_and_skips(repo, capsys):
    assert _run(repo) == 0
    err = capsys.readouterr().err
    assert "skipping" in err and "old-schema.json" in err and "not a pytest-benchmark results file" in err
    text = (repo / "README.md").read_text()
    block = _block(text)
    tables = _tables(block)
    assert list(tables) == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]  # files in name order
    rows = tables["NVIDIA H100 80GB HBM3"]
    # both machines, with the GPU, the date, the versions and the command that reproduces them
    assert "### NVIDIA H100 80GB HBM3" in block and "### NVIDIA H200" in block
    assert block.index("### NVIDIA H100") < block.index("### NVIDIA H200")  # files in name order
    assert "2025-01-02 03:04" in block and "torch 2.13.0" in block and "triton 3.5.0" in block
    assert "`0123456789ab`" in block
    assert block.count("OUT=/tmp/gpu bash benchmarks/gpu_check.sh") == 2
    assert "benchmarks/results/nvidia-h100-80gb-hbm3.json" in block
    assert "old-schema" not in block

    sn = rows[("sn", "df=64 fwd+bwd", "triton")]
    assert sn["speed-up vs eager"] == "6.00x (3.00x compile)"
    assert sn["median (ms)"] == "0.200" and sn["spread (IQR, ms)"] == "0.0100"
    assert sn["TFLOP/s"] == "20.0" and sn["% of peak"] == "5.0%"  # 4 GFLOP in 0.2 ms, of 400 TFLOP/s
    assert sn["peak memory"] == "3.00 GiB"
    assert sn["target"] == ">= 5x eager" and sn["met"] == "met"
    missed = rows[("sn", "df=128 fwd+bwd", "triton")]
    assert missed["speed-up vs eager"] == "4.00x" and missed["met"] == "**missed**"
    assert rows[("sn", "df=64 fwd+bwd", "eager")]["speed-up vs eager"] == "baseline"
    assert rows[("sn", "df=64 fwd+bwd", "eager")]["met"] == ""
    # variants in a fixed order inside one label: eager, compile, triton
    keys = [k for k in rows if k[:2] == ("sn", "df=64 fwd+bwd")]
    assert [k[2] for k in keys] == ["eager", "compile", "triton"]

    up = rows[("upconv", "N=64 C=128 16->32px", "triton")]
    assert up["speed-up vs eager"] == "2.00x" and up["met"] == "met" and up["target"] == ">= 1.5x eager"
    assert up["TFLOP/s"] == "12.5" and up["% of peak"] == "3.1%"
    skipped = rows[("upconv", "N=64 C=128 16->32px", "compile")]
    assert skipped["median (ms)"] == "skipped" and skipped["met"] == "skipped: compile failed: boom \\| bang"
    slow = rows[("upconv", "N=64 C=256 16->32px", "triton")]
    assert slow["speed-up vs eager"] == "0.750x" and slow["target"] == "" and slow["met"] == ""

    default = rows[("upconv", "N=128 C=128 16->32px", "triton")]
    assert default["speed-up vs eager"] == "1.25x" and default["target"] == ">= 1.5x eager"
    assert default["met"] == "**missed**"
    small = rows[("upconv", "N=64 C=128 8->16px", "triton")]
    assert small["speed-up vs eager"] == "2.00x" and small["target"] == "" and small["met"] == ""

    gan = rows[("gan_unit", "stage 3", "graph")]
    assert gan["speed-up vs eager"] == "5.00x (1.25x compile)"
    assert gan["target"] == ">= 4x eager; >= 1.3x compile" and gan["met"] == "**missed**"

    tf32 = rows[("reward", "5000 images", "tf32")]
    assert tf32["speed-up vs eager"] == "6.00x" and tf32["met"] == "met"
    assert tf32["target"] == ">= 5x eager; rank corr. >= 0.98 (0.991)"
    bf16 = rows[("reward", "5000 images", "bf16")]  # faster, but not the best precision: its ranking differs
    assert bf16["speed-up vs eager"] == "12.0x" and bf16["target"] == "" and bf16["met"] == ""
    assert rows[("reward", "5000 images", "fp32")]["speed-up vs eager"] == "3.00x"

    search = rows[("search_iteration", "paper iteration", "graph")]
    assert search["speed-up vs eager"] == "3.00x"
    assert search["target"] == "paper search <= 30 min (25.0 min)" and search["met"] == "met"

    rows = tables["NVIDIA H200"]
    stats = rows[("stats", "B=500", "triton")]
    assert stats["speed-up vs eager"] == "2.00x" and stats["met"] == "**missed**"
    h200_sn = rows[("sn", "df=64 fwd+bwd", "triton")]
    assert h200_sn["median (ms)"] == "skipped" and h200_sn["met"] == "skipped: needs CUDA"
    assert h200_sn["target"] == ">= 5x eager" and h200_sn["speed-up vs eager"] == ""
    assert "Missed: sn df=128 fwd+bwd triton, upconv N=128 C=128 16->32px triton, gan_unit stage 3 graph" in block
    assert "Missed: stats B=500 triton" in block
    assert "![speed-up vs eager per row](benchmarks/results/speedup.png)" in block
    assert "No GPU results" not in block


def test_block_replacement_is_idempotent_and_local(repo):
    assert _run(repo) == 0
    once = (repo / "README.md").read_text()
    assert _run(repo) == 0
    assert (repo / "README.md").read_text() == once
    before, after = README.split(report.BEGIN)[0], README.split(report.END)[1]
    assert once.startswith(before + report.BEGIN) and once.endswith(report.END + after)
    assert "stale generated text" not in once
    assert report.replace_block(once, _block(once)) == once


def test_check_detects_stale_block(repo, capsys):
    assert _run(repo, "--check") == 1  # the README still holds "stale generated text"
    assert "out of date" in capsys.readouterr().err
    assert "stale generated text" in (repo / "README.md").read_text()  # --check writes nothing
    assert not (repo / "benchmarks" / "results" / "speedup.png").exists()
    assert _run(repo) == 0
    assert _run(repo, "--check") == 0
    # a changed result makes the block stale again
    data = _h200()
    data["benchmarks"][1]["stats"]["median"] = 0.5e-3
    (repo / "benchmarks" / "results" / "nvidia-h200.json").write_text(json.dumps(data))
    assert _run(repo, "--check") == 1
    assert _run(repo) == 0
    h200 = _tables(_block((repo / "README.md").read_text()))["NVIDIA H200"]
    assert h200[("stats", "B=500", "triton")]["met"] == "met"
    # a README without the markers is an error, not a silent no-op
    (repo / "README.md").write_text("# no markers\n")
    assert _run(repo) == 2


def test_png(repo):
    """The chart (matplotlib): one horizontal bar per non-eager entry, coloured by its target's status."""
    assert _run(repo) == 0
    png = repo / "benchmarks" / "results" / "speedup.png"
    with Image.open(png) as img:
        img.load()
        assert img.format == "PNG"
        rgb = img.convert("RGB")
    w, h = rgb.size
    assert w == report.WIDTH_IN * report.DPI
    # two panels: the measured non-eager entries, 16 on the H100 and 2 on the H200
    n_bars = 16 + 2
    assert n_bars * report.ROW_IN * report.DPI < h
    counts = rgb.getcolors(maxcolors=w * h)
    colors = {c for _, c in counts}
    assert max(counts)[1] == (255, 255, 255) and max(counts)[0] > 0.5 * w * h  # mostly white
    for hex_color in (report.MET, report.MISSED, report.NO_TARGET):  # bar interiors keep the exact colour
        assert tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5)) in colors, hex_color


def test_no_results(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    not_results = tmp_path / "notes.json"
    not_results.write_text("[1, 2, 3]")
    png = tmp_path / "speedup.png"
    args = [str(not_results), "--readme", str(readme), "--png", str(png)]
    assert report.main([*args, "--check"]) == 1
    assert report.main(args) == 0
    block = _block(readme.read_text())
    assert "No GPU results have been committed yet" in block
    assert not re.search(r"\d+(\.\d+)?x\b", block) and "|" not in block  # no number, no table
    assert not png.exists()
    assert report.main([*args, "--check"]) == 0
    assert "skipping" in capsys.readouterr().err



def test_merge_takes_each_row_from_the_last_run_that_measured_it():
    from benchmarks import merge

    def run(when, entries, gpu="NVIDIA H200"):
        return {"machine_info": {"gpu": gpu, "driver": "1", "torch": "2", "triton": "3"}, "datetime": when,
                "complete": True, "duration_s": 10.0, "commit_info": {"id": "unversioned"},
                "benchmarks": [{"name": n, "stats": None if skip else {"median": m},
                                "extra_info": {"skipped_reason": "budget"} if skip else {}}
                               for n, m, skip in entries]}

    first = run("t1", [("a", 1.0, False), ("b", None, True), ("c", 3.0, False)])
    second = run("t2", [("b", 2.0, False), ("c", None, True), ("d", 4.0, False)])
    third = run("t3", [("a", 1.5, False)])
    merged = merge.merge([first, second, third], ["1.json", "2.json", "3.json"], commit="abc123", note="why")
    medians = {e["name"]: (e["stats"] or {}).get("median") for e in merged["benchmarks"]}
    # a: re-measured later (1.5); b: skipped, then measured; c: a later skip replaces nothing; d: new
    assert medians == {"a": 1.5, "b": 2.0, "c": 3.0, "d": 4.0}
    assert [m["file"] for m in merged["machine_info"]["merged_from"]] == ["1.json", "2.json", "3.json"]
    assert merged["machine_info"]["git"] == merged["commit_info"]["id"] == "abc123"
    assert merged["duration_s"] == 30.0
    assert merged["kernel_choices"] == []  # files from before `auto` timed anything hold none
    choice = {"op": "bilinear", "key": "(64, 128, 16, 16)", "backend": "triton"}
    first["kernel_choices"], third["kernel_choices"] = [choice], [choice, {**choice, "op": "upconv"}]
    merged = merge.merge([first, second, third], ["1.json", "2.json", "3.json"])
    assert merged["kernel_choices"] == [choice, {**choice, "op": "upconv"}]  # each run's choices, once each
    with pytest.raises(ValueError, match="not one machine's runs"):
        merge.merge([first, run("t4", [], gpu="NVIDIA H100")], ["1.json", "4.json"])


def _stream_file():
    """Stream and reward rows of three stages: eager 10 ms a D step and 2 s a reward, graph 1 ms and the fp32
    reward 0.5 s with captures that cost nothing extra, graph+bf16 skipped."""
    rows = []
    for s in (0, 1, 2):
        label = f"stage {s}: 3000-step stream"
        rows += [_entry("stage_stream", label, "eager", 500.0, stage=s, mean_step_seconds=0.01, captures=0,
                        key_space=72, reward_variant="eager"),
                 _entry("stage_stream", label, "graph", 50.0, stage=s, mean_step_seconds=0.001, captures=3,
                        key_space=72, capture_overhead_seconds=0.0, reward_variant="fp32"),
                 _entry("stage_stream", label, "graph+bf16", 0, stage=s, reward_variant="bf16",
                        skipped_reason="not built yet: --precision"),
                 _entry("reward", f"stage {s}: IS", "eager", 2000.0, stage=s, search_batch=True),
                 _entry("reward", f"stage {s}: IS", "fp32", 500.0, stage=s, search_batch=True)]
    return _results("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3", rows)


def test_projection_table_beside_eager_of_the_same_file(repo):
    """A file with stream rows gets the projected search per variant (report.py header's formula via
    benchmarks/projection.py) beside eager's; a file without them (the old search_iteration row) gets none."""
    results = repo / "benchmarks" / "results"
    (results / "nvidia-h100-80gb-hbm3.json").write_text(json.dumps(_stream_file()))
    assert _run(repo) == 0
    block = _block((repo / "README.md").read_text())
    h100 = block.split("\n### ")[1]
    assert "Projected paper search" in h100 and "Projected paper search" not in block.split("\n### ")[2]
    lines = {line.split(" | ")[0].strip("| "): [c.strip() for c in line.strip("|").split(" | ")]
             for line in h100.splitlines() if line.startswith("| eager | eager") or line.startswith("| graph")}
    # eager: 65 x 11,715 x 10 ms + (30 x 65 + 30) x 2 s = 11,574.75 s; graph: 761.475 s + 1,980 x 0.5 s
    assert lines["eager"][5] == "3.22 h" and lines["eager"][6] == "baseline"
    assert lines["graph"][5] == "29.2 min" and lines["graph"][6] == "6.61x" and lines["graph"][8] == "met"
    assert lines["graph+bf16"][5] == "not projected" and "skipped: not built yet" in lines["graph+bf16"][8]
    rows = _tables(block)["NVIDIA H100 80GB HBM3"]
    assert rows[("stage_stream", "stage 2: 3000-step stream", "graph")]["speed-up vs eager"] == "10.0x"
