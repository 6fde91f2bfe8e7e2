"""What the command lines (`search`, `train`, `evaluate`, `study`) share besides their flags (`flags`): the run
request, a job run from the command line, and one-line errors with their exit statuses."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import UsageError
from .jobs.driver import Job, RunRequest, run_job

__all__ = ["run_cli", "run_command", "run_request"]


def run_request(args: argparse.Namespace) -> RunRequest:
    """The run request of a command line's `add_run_flags`; `--out` may only repeat `--resume`'s folder."""
    resume = Path(args.resume) if args.resume else None
    if resume is not None and args.out and Path(args.out).resolve() != resume.resolve():
        raise UsageError("--out and --resume name different folders; --resume continues in place")
    return RunRequest(args.out, resume, args.stop_after, args.quiet, args.json, args.tensorboard)


def run_command(args: argparse.Namespace, make_job: Callable[[Path | None], Job]) -> int:
    """A command line's run: the job `make_job` builds (a new run, or the `--resume`d folder's), driven in
    its torchrun world (a single process without torchrun)."""
    request = run_request(args)
    job = make_job(request.resume)
    request.check()
    run_job(job, request)
    return 0


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a command line's main: bad input becomes one line on stderr and exit status 2 (a diverged run:
    exit status 3, `DivergedError`)."""
    spec = main.__globals__.get("__spec__")  # names the module also when it runs as `python -m`
    prog = spec.name if spec is not None else main.__module__
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: say which rank failed, and tell
        from torch.distributed.elastic.multiprocessing.errors import record  # torchrun its error message

        prog = f"{prog} (rank {os.environ.get('RANK', '?')})"
        main = record(main)
    try:
        code = main(argv)
    except UsageError as err:  # bad input (2), a run that diverged (3, DivergedError)
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = err.exit_status
    except OSError as err:  # the file system refused (a read-only or full disk): one line, as bad input
        print(f"{prog}: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the last checkpoint is intact (continue with --resume)", file=sys.stderr)
        code = 130
    sys.exit(code)
