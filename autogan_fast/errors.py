"""The one exception type the command lines turn into a single line on stderr and exit status 2."""


class UsageError(ValueError):
    """Bad input from the user: a flag, a path, a file's contents. The message names the culprit."""
