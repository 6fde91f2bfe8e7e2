"""The exception types the command lines turn into a single line on stderr and an exit status."""


class UsageError(ValueError):
    """Bad input from the user: a flag, a path, a file's contents, a folder that cannot be written.
    The message names the culprit; the command exits with `exit_status`."""

    exit_status = 2


class DivergedError(UsageError):
    """Training diverged: a loss, a reward or a weight is no longer finite. The message names the step,
    the settings that drive it (the learning rates) and the last good checkpoint, which is left intact.

    Its own exit status, so a script can tell a run that diverged (its folder holds the checkpoints
    written before) from bad input (nothing written)."""

    exit_status = 3
