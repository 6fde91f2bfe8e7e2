"""Running the command lines in-process, as a user's shell would see them."""

import contextlib
import errno
import subprocess
import sys

import pytest

from autogan_fast.cli import run_cli
from autogan_fast.runs import checkpoint as run_files

# A process that takes a run folder's lock, says so, and waits to be killed.
_HOLD_LOCK = """
import sys, time
from autogan_fast.runs.folder import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def run_cli_captured(main, argv, capsys) -> tuple[int, str, str]:
    """Run a CLI's `main` through `run_cli`; returns (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def run_to_success(main, argv) -> None:
    """Run a CLI's `main` through `run_cli` where no capsys is at hand (a module-scoped fixture's run);
    it must exit with status 0."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(a) for a in argv])
    assert exit_info.value.code == 0


@contextlib.contextmanager
def lock_held_elsewhere(run_dir):
    """Another process holding `run_dir`'s lock, as a run going on there does; yields that process,
    which is killed when the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def full_disk_for(monkeypatch, name):
    """The atomic writer's writes of files called `name` fail half-way as on a full disk."""
    real = run_files.atomic_write

    def atomic_write(path, write):
        if path.name != name:
            return real(path, write)

        def half_then_full(handle):
            handle.write(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")

        return real(path, half_then_full)

    monkeypatch.setattr(run_files, "atomic_write", atomic_write)


COLLAPSE_WARNINGS = ("warning: the shared GAN of stage", "warning: the training collapsed")


def without_collapse_warnings(stderr: str) -> str:
    """stderr less the search's and training's collapse warnings (tiny test GANs collapse; the line under test
    remains)."""
    return "\n".join(line for line in stderr.splitlines() if not line.startswith(COLLAPSE_WARNINGS))
