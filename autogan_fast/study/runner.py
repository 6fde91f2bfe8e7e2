"""Running a study's plan: each sub-run is a job (`jobs`: search, training, proxy rescoring) driven in this
process on its own run folder with its typed settings, as its command would drive it, so a killed study
resumes each where its checkpoint stands and skips what is done.

A sub-run's status is read from its folder alone (`results`: done, damaged, diverged, blocked, unranked
or pending). A damaged result.json is set aside (`result.json.damaged`, named in one line on stderr) and
the sub-run resumed, which writes it again from its checkpoint. Its output (the commands' messages and
warnings) goes to `output/NAME.txt`, so the study's one progress bar stays readable. Under torchrun
the ranks take whole sub-runs (rank r the plan's entries r, r + W, ...), each a single process on the
rank's own device; a rank whose sub-run needs another rank's waits for its
result, and rank 0 waits for every sub-run before it writes the summary.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from ..distributed import World
from ..errors import DivergedError, UsageError
from ..jobs.driver import Job, RunRequest, run_job
from ..jobs.proxy import ProxyJob
from ..jobs.search import SearchJob
from ..jobs.train import TrainJob, arch_from_result
from ..runs.folder import CONFIG, RESULT
from .plan import StudySettings, SubRun, random_archs
from .results import DAMAGED_SUFFIX, read_result, status

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                      "MASTER_PORT")
JOBS = {"search": SearchJob, "train": TrainJob}  # the jobs of the sub-runs that search and train
POLL_SECONDS = 5.0  # how often a rank waiting on another rank's sub-run looks at its folder


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Hide torchrun's variables while a sub-run runs: a study's rank runs whole sub-runs, each as one process."""
    hidden = {name: os.environ.pop(name) for name in TORCHRUN_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


def output_path(study_dir: Path, run: SubRun) -> Path:
    return study_dir / "output" / f"{run.name.replace('/', '_')}.txt"


def sub_run_job(study_dir: Path, run: SubRun, settings: StudySettings, resume: bool) -> Job:
    """The job of a sub-run: a new one from its typed settings, or its folder's (`resume`) continued."""
    folder = study_dir / run.name
    if run.command == "proxy":  # one pass: a folder without its result is scored afresh
        return ProxyJob(study_dir / run.needs[0], random_archs(settings.random_archs, settings.seed), settings.seed)
    job_cls = JOBS[run.command]
    if resume:
        return job_cls.resumed(folder, {}, settings.preset)
    config = job_cls.new_config(settings.preset, run.settings)
    if run.command == "search":
        return job_cls(config, preset=settings.preset)
    arch = run.arch if run.arch is not None else arch_from_result(study_dir / run.needs[0] / RESULT, run.rank)
    return TrainJob(config, arch, preset=settings.preset)


def execute(study_dir: Path, run: SubRun, settings: StudySettings) -> None:
    """Run (or continue) one sub-run to its end. A divergence is the sub-run's result (its log says so); any
    other refusal stops the study, naming the sub-run and where its output is."""
    folder = study_dir / run.name
    output = output_path(study_dir, run)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as stream, contextlib.redirect_stdout(stream), \
            contextlib.redirect_stderr(stream), single_process():
        try:
            resume = (folder / CONFIG).is_file()
            job = sub_run_job(study_dir, run, settings, resume)
            request = RunRequest(out=None if resume else str(folder), resume=folder if resume else None, quiet=True,
                                 as_json=True)
            run_job(job, request)
        except DivergedError as err:
            print(f"diverged: {err}", file=stream)  # its own log ends in the `diverged` event
        except UsageError as err:
            raise UsageError(f"study sub-run {run.name}: {err} (its output: {output})") from None


def wait_until(done: Callable[[], bool], refresh: Callable[[], None]) -> None:
    while not done():
        refresh()
        time.sleep(POLL_SECONDS)


SETTLED = ("done", "diverged", "blocked", "unranked")  # statuses no sub-run of the plan changes any more


def set_aside_damaged(study_dir: Path, run: SubRun, plan: dict[str, SubRun]) -> None:
    """Move a damaged result.json aside (kept, named on stderr) so that resuming the sub-run writes it again."""
    _, problem = read_result(study_dir, run, plan)
    if problem is None:
        return
    path = study_dir / run.name / RESULT
    kept = path.with_name(RESULT + DAMAGED_SUFFIX)
    os.replace(path, kept)
    tqdm.write(f"warning: study sub-run {run.name}: its {RESULT} is damaged ({problem}); kept as {kept}, and the "
               f"sub-run is resumed to write it again", file=sys.stderr)


def run_plan(study_dir: Path, settings: StudySettings, plan: list[SubRun], world: World, quiet: bool) -> None:
    """Run this rank's share of `plan`, skipping finished sub-runs and rerunning damaged ones; rank 0
    returns when every sub-run is settled (done, diverged, blocked or unranked)."""
    by_name = {run.name: run for run in plan}

    def settled(run: SubRun) -> bool:
        return status(study_dir, run, by_name) in SETTLED

    bar = tqdm(total=len(plan), desc="study", unit="run", disable=quiet or not world.is_main, dynamic_ncols=True)

    def refresh() -> None:
        bar.n = sum(settled(run) for run in plan)
        bar.refresh()

    refresh()
    for index, run in enumerate(plan):
        if index % world.size != world.rank or settled(run):
            continue
        wait_until(lambda run=run: all(settled(by_name[need]) for need in run.needs), refresh)
        if settled(run):  # blocked by a need that diverged, or ranked beyond what its search kept
            continue
        bar.set_postfix_str(run.name, refresh=True)
        set_aside_damaged(study_dir, run, by_name)
        execute(study_dir, run, settings)
        _, problem = read_result(study_dir, run, by_name)
        if problem is not None:  # its command wrote it so: waiting for it to settle would wait forever
            raise UsageError(f"study sub-run {run.name}: its {RESULT} is damaged ({problem}) even as written again "
                             f"(its output: {output_path(study_dir, run)})")
        refresh()
    if world.is_main:
        wait_until(lambda: all(settled(run) for run in plan), refresh)
    bar.set_postfix_str("")
    bar.close()


__all__ = ["execute", "run_plan", "status", "sub_run_job"]
