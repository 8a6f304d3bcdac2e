"""Errors that report a mistake the user can fix.

`LrctlError` is the base of every error that says something is wrong with what the user gave
lrctl (an unknown name, a number out of range, a missing or malformed suite, config or
controller file, a missing optional package) rather than with lrctl itself. Its message names
the input, the problem and the fix. The `lrctl` command prints one as a single line
`lrctl: error: ...` and exits with status 2; any other exception is a bug and shows its
traceback.

Where lrctl used to raise a built-in error for the same mistake, the subclass keeps it as a
second base (`UsageError` is a `ValueError`, `UnknownNameError` a `KeyError`, ...), so callers
that catch the built-in keep working. This module imports nothing: the runtime controller
(torch and numpy only) uses it too.
"""

from __future__ import annotations


class LrctlError(Exception):
    """A mistake the user can fix; the message says what and how. The CLI prints it as one
    line and exits with status 2."""


class UsageError(LrctlError, ValueError):
    """A bad argument: a number out of range, options that do not go together, a folder that
    is not what the command needs."""


class UnknownNameError(LrctlError, KeyError):
    """A name that is not among the known ones (a task family of a suite); the message lists
    them."""

    def __str__(self) -> str:
        # KeyError's own str() shows the repr of its argument (quotes, escaped newlines).
        return str(self.args[0]) if self.args else ""


class ConfigError(LrctlError, ValueError):
    """A training config (a `TrainConfig` JSON file or its fields) is missing, malformed, from
    a newer lrctl, or holds a value out of range."""


class MissingDependencyError(LrctlError, ImportError):
    """A package lrctl needs for this feature is not installed; the message gives the pip
    command."""
