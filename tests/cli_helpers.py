"""Running the command lines in-process, as a user's shell would see them."""

import pytest

from autogan_fast.cli import run_cli


def run_cli_captured(main, argv, capsys) -> tuple[int, str, str]:
    """Run a CLI's `main` through `run_cli`; returns (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err
