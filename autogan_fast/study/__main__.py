"""`python -m autogan_fast.study`: the paper's research questions, measured with statistics, in one command.

Does the search find better generators than chance? Does multi-level search beat single-level, the
controller beat uniform sampling, dynamic reset help? Does the proxy predict the final score? Every arm
searches over `--seeds` seeds at equal budget, the top architectures are trained from scratch, and `K`
uniformly random architectures are trained the same way and rescored on finished searches' shared GANs.
Each sub-run is an ordinary run folder under the study folder; `--resume DIR` continues a stopped study,
skipping what is done. The summary (study.json, study.md, plots/) is recomputed from the sub-runs' files.
Under torchrun the ranks take whole sub-runs and rank 0 writes the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
import typing
from pathlib import Path

import torch

from ..cli import run_cli
from ..config import PRESET_NAMES, InputSettings, field_docs, flag
from ..distributed import SINGLE, World
from ..errors import DivergedError, UsageError
from ..flags import ArgumentParser, add_config_flags
from ..runs.checkpoint import parse_json, write_json
from ..runs.folder import CONFIG, create_run_dir, locked_run_dir
from .plan import ARMS, SHARED_INPUTS, StudySettings, SubRun, build_plan, check_settings, settings_from_dict
from .runner import POLL_SECONDS, run_plan
from .summary import markdown, summarize

STUDY_JSON, STUDY_MD, PLOTS = "study.json", "study.md", "plots"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m autogan_fast.study", description=__doc__.splitlines()[0])
    docs = field_docs(StudySettings)
    hints = typing.get_type_hints(StudySettings)
    defaults = StudySettings()
    for field in dataclasses.fields(StudySettings):
        if field.name == "inputs":  # one flag per shared input setting, below
            continue
        help_text = f"{docs.get(field.name, '')} (default: {getattr(defaults, field.name)})"
        if field.name in ("arms", "proxy_arms"):
            parser.add_argument(f"--{flag(field.name)}", nargs="+", choices=ARMS, default=None, help=help_text)
            continue
        kind = hints[field.name]
        kind = str if kind == str | None else kind
        parser.add_argument(f"--{flag(field.name)}", dest=field.name, type=kind, default=None, help=help_text,
                            choices=PRESET_NAMES if field.name == "preset" else None)
    shared = parser.add_argument_group("shared inputs", "given to every sub-run (default: the preset's)")
    add_config_flags(shared, InputSettings, only=SHARED_INPUTS, show_defaults=False)
    parser.add_argument("--out", help="study folder to create (default: a new numbered folder under runs/)")
    parser.add_argument("--resume", metavar="DIR", help="continue the study in DIR with the settings saved there "
                        "(with --arms: add those arms to it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def rank_world() -> World:
    """This process's place among torchrun's ranks, read from its variables. The study runs no collective
    (its ranks share only files), so it joins no process group: a rank may wait hours on another's sub-run."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def saved_settings(study_dir: Path) -> StudySettings:
    try:
        data = parse_json((study_dir / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--resume {study_dir}: no {CONFIG} there (not a study folder)") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"--resume {study_dir}: its {CONFIG} cannot be read ({err})") from None
    if not isinstance(data, dict) or data.get("command") != "study":
        raise UsageError(f"--resume {study_dir}: its {CONFIG} is not a study's (a search or training run?)")
    try:
        return settings_from_dict(data.get("settings"))
    except UsageError as err:
        raise UsageError(f"--resume {study_dir}: {err}") from None


def open_study(args: argparse.Namespace, world: World) -> tuple[Path, StudySettings, list[SubRun]]:
    """The study folder, its settings and the plan they make (checked): a new folder (rank 0 makes it, the
    others wait for it), or the `--resume`d one with its saved settings."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(StudySettings)
             if f.name != "inputs" and getattr(args, f.name) is not None}
    inputs = {name: getattr(args, name) for name in SHARED_INPUTS if getattr(args, name) is not None}
    if args.resume:
        added_arms = given.pop("arms", None)
        if given or inputs:
            name = sorted({*given, *inputs})[0]
            raise UsageError(f"--{flag(name)} cannot change when resuming {args.resume}: a study's settings make its "
                             f"plan")
        settings = saved_settings(Path(args.resume))
        if added_arms is not None:
            settings = with_added_arms(settings, added_arms, args.resume)
        runs = build_plan(settings)
        try:
            check_settings(settings, runs)  # a study folder made before the check
        except UsageError as err:
            raise UsageError(f"--resume {args.resume}: {err}") from None
        return Path(args.resume), settings, runs
    for name in ("arms", "proxy_arms"):
        if name in given:
            given[name] = tuple(given[name])
    settings = StudySettings(**given, inputs=inputs).validate()
    runs = build_plan(settings)
    check_settings(settings, runs)  # every sub-run's settings, before the folder exists
    if world.is_main:
        return create_run_dir(args.out, plan_record(settings, runs)), settings, runs
    if args.out is None:
        raise UsageError("under torchrun give the study folder with --out (every rank must know it)")
    while not (Path(args.out) / CONFIG).is_file():  # rank 0 is making it
        time.sleep(POLL_SECONDS)
    return Path(args.out), settings, runs


def with_added_arms(settings: StudySettings, arms: list[str], study_dir: str) -> StudySettings:
    """`settings` with the `--arms` given to a `--resume` appended to its arms: a study grows by whole arms (their
    searches, proxies and trainings at the study's seeds; every finished sub-run is kept), and never loses one."""
    dropped = [arm for arm in settings.arms if arm not in arms]
    if dropped:
        raise UsageError(f"--arms on --resume {study_dir} adds arms to the study's ({', '.join(settings.arms)}): it "
                         f"cannot drop {dropped[0]}")
    added = tuple(arm for arm in arms if arm not in settings.arms)
    return dataclasses.replace(settings, arms=settings.arms + added).validate()


def plan_record(settings: StudySettings, runs: list[SubRun]) -> dict:
    """What a study folder's config.json holds: the settings and the plan they make (`build_plan`'s `runs`)."""
    plan = [{"name": run.name, "command": run.command, "settings": run.settings, "needs": list(run.needs),
             **({"arch": list(run.arch)} if run.arch is not None else {})} for run in runs]
    return {"command": "study", "settings": dataclasses.asdict(settings), "plan": plan}


def write_summary(study_dir: Path, settings: StudySettings, runs: list[SubRun]) -> dict:
    """study.json, study.md and the plots, from the sub-runs' files (`runs`: the settings' plan)."""
    summary = summarize(study_dir, settings, runs)
    write_json(study_dir / STUDY_JSON, summary)
    report = markdown(summary)
    try:
        from .plots import draw_plots

        drawn = draw_plots(summary, study_dir / PLOTS)
        report += "\n" + "\n".join(f"![{path.stem}]({PLOTS}/{path.name})" for path in drawn) + "\n"
    except UsageError as err:  # matplotlib is an optional extra: the numbers stand without the pictures
        print(f"note: {err}", file=sys.stderr)
    (study_dir / STUDY_MD).write_text(report, encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    world = rank_world()
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise UsageError("--out and --resume name different folders; --resume continues in place")
    study_dir, settings, runs = open_study(args, world)
    if world.distributed and torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)  # a rank's sub-runs use its own GPU
    started = time.perf_counter()
    with locked_run_dir(study_dir) if world.is_main else contextlib.nullcontext():
        # read again under the lock: the arms saved now, not when the study was opened
        if args.resume and world.is_main and settings.arms != saved_settings(study_dir).arms:
            write_json(study_dir / CONFIG, plan_record(settings, runs))  # the grown plan (atomic: old or new)
        if not args.quiet and world.is_main:
            print(f"study folder: {study_dir}", file=sys.stderr)
        run_plan(study_dir, settings, runs, world, args.quiet)
        if not world.is_main:
            return 0
        summary = write_summary(study_dir, settings, runs)
    for question in summary["questions"]:
        print(question["title"])
        for row in question["rows"]:
            if "rho" in row:  # proxy vs final
                print(f"  proxy on {row['arm']}'s shared GANs vs final {row['metric']}: Spearman {row['rho']:.2f}, "
                      f"n = {row['n']}: {row['verdict']}")
            else:
                p = "" if row["p"] is None else f", p = {row['p']:.3g}"
                print(f"  {row['a']} vs {row['b']} ({row['metric']}): {row['verdict']}{p}")
    print(f"study: {study_dir / STUDY_MD} ({time.perf_counter() - started:.0f} s this session)")
    return report_gaps(summary, settings)


def named(names: list[str], shown: int = 4) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def report_gaps(summary: dict, settings: StudySettings) -> int:
    """Say on stderr which sub-runs have no numbers (study.json's `sub_runs` lists them all); the exit
    status: 3 (a diverged run's) when a question lost data to a diverged or blocked sub-run, else 0."""
    sub_runs = summary["sub_runs"]
    short = [f"{search['run']} ranked {search['ranked']}" for entry in summary["arms"].values()
             for search in entry["searches"] if search["ranked"] is not None and search["ranked"] < settings.top]
    if short:  # only the per-search top lists are shorter: the questions read the top-1
        print(f"note: --top {settings.top} is more than some searches ranked ({named(short)} distinct "
              f"architectures): trained what they ranked; {len(sub_runs['unranked'])} planned training(s) had "
              f"nothing to train", file=sys.stderr)
    diverged, blocked = sub_runs["diverged"], sub_runs["blocked"]
    if not diverged and not blocked:
        return 0
    print(f"warning: {len(diverged)} of {sub_runs['total']} sub-runs diverged ({named(diverged)}) and "
          f"{len(blocked)} are blocked by them{f' ({named(blocked)})' if blocked else ''}: the questions lack "
          f"their numbers (counted in study.json and study.md, never imputed)", file=sys.stderr)
    return DivergedError.exit_status


if __name__ == "__main__":
    run_cli(main)
