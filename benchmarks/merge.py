"""Merge the results files of one GPU session's runs into the one file that is committed.

    python -m benchmarks.merge OUT.json first.json second.json ... --commit SHA [--note TEXT]

A session may run the suite more than once (the prepared script, then the rows its budget left out);
every run writes its own pytest-benchmark JSON. The merged file keeps the first file's `machine_info`
(the same machine: refused otherwise) and takes each entry from the LAST file that measured it; an
entry that a file only skipped replaces nothing measured. `machine_info.merged_from` lists the files
(with their start times) and `machine_info.git` the commit they measured, so the report names it;
`projection` is recomputed from the merged rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .projection import project, rows_from_json, summary_lines

SAME_MACHINE_KEYS = ("gpu", "driver", "torch", "triton")


def measured(entry: dict) -> bool:
    return not (entry.get("extra_info") or {}).get("skipped_reason") and bool(entry.get("stats"))


def merge(files: list[dict], names: list[str], commit: str | None = None, note: str | None = None) -> dict:
    """The merged results of `files` (parsed JSON, in run order)."""
    first = files[0]
    for name, data in zip(names[1:], files[1:], strict=True):
        for key in SAME_MACHINE_KEYS:
            if data["machine_info"].get(key) != first["machine_info"].get(key):
                raise ValueError(f"{name}: {key} {data['machine_info'].get(key)!r} differs from "
                                 f"{names[0]}'s {first['machine_info'].get(key)!r}: not one machine's runs")
    entries: dict[str, dict] = {}
    for data in files:
        for entry in data["benchmarks"]:
            held = entries.get(entry["name"])
            if held is None or measured(entry) or not measured(held):
                entries[entry["name"]] = entry
    machine = dict(first["machine_info"])
    machine["merged_from"] = [{"file": n, "datetime": d.get("datetime"), "complete": d.get("complete")}
                              for n, d in zip(names, files, strict=True)]
    if commit:
        machine["git"] = commit
    if note:
        machine["merge_note"] = note
    order = [e["name"] for data in files for e in data["benchmarks"]]
    ranked = sorted(entries.values(), key=lambda e: order.index(e["name"]))
    commit_info = dict(first.get("commit_info") or {})
    if commit:
        commit_info["id"] = commit
    projections = project(rows_from_json(ranked))  # the merged rows' projection, not the first file's
    choices = []  # each run's `--kernels auto` choices, once each
    for data in files:
        choices += [c for c in data.get("kernel_choices", []) if c not in choices]
    return {**first, "machine_info": machine, "commit_info": commit_info, "benchmarks": ranked,
            "projection": {v: p.as_dict() for v, p in projections.items()}, "kernel_choices": choices,
            "complete": all(d.get("complete") for d in files),
            "duration_s": sum(d.get("duration_s") or 0 for d in files)}


def _readable(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        print(f"merge: leaving out {path}: {type(e).__name__}", file=sys.stderr)
        return False
    if not (isinstance(data, dict) and isinstance(data.get("benchmarks"), list) and "machine_info" in data):
        print(f"merge: leaving out {path}: not a results file", file=sys.stderr)
        return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.merge", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="merged results file to write")
    p.add_argument("inputs", nargs="+", type=Path, help="results files, in the order they ran")
    p.add_argument("--commit", help="the commit the runs measured (recorded as machine_info.git)")
    p.add_argument("--note", help="a line on how the runs relate (recorded as machine_info.merge_note)")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="leave out (with a line on stderr) inputs that are missing, empty or not JSON: a run killed "
                        "before or while writing its file (gpu_check.sh merges after every section)")
    args = p.parse_args(argv)
    inputs = args.inputs
    if args.skip_unreadable:
        inputs = [f for f in inputs if _readable(f)]
        if not inputs:
            print("merge: no readable results file; nothing written", file=sys.stderr)
            return 2
    try:
        files = [json.loads(f.read_text()) for f in inputs]
        merged = merge(files, [f.name for f in inputs], args.commit, args.note)
    except (OSError, ValueError, KeyError) as e:
        print(f"merge: {e}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"merge: wrote {args.out}: {len(merged['benchmarks'])} entries from {len(files)} files", file=sys.stderr)
    projections = project(rows_from_json(merged["benchmarks"]))
    if projections:
        print("projected paper search (benchmarks/projection.py), beside eager of these runs:", file=sys.stderr)
        print("\n".join(summary_lines(projections)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
