"""calicoctl's one table from exceptions to exit codes and one-line messages.

Every failure of a command ends as "Error: <one line>" on stderr and an exit code, never a
traceback. The lower floors raise their own exceptions (`calico_cni.errors.CalicoError` and its
subclasses, whose text is the message a user reads); only this table decides which exit code each
one gets. To give an exception its own code or message, add a row above the more general row that
would otherwise match it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import click

from calico_cni.datastore.resources import Unreadable
from calico_cni.errors import CalicoError
from calico_cni.protocol.errors import CniError

# Exit codes: 1 an operation failed, 2 the command line is wrong (click's), 3 `ipam check` found problems.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PROBLEMS = 3


class CtlError(Exception):
    """A failure found by calicoctl itself (a bad argument, an unreadable input file), reported as
    one line on stderr with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Row:
    """Exceptions of class `kind` exit with `exit_code` (a number, or a function of the exception
    for those that carry their own) and print `message(exc)`."""

    kind: type[BaseException]
    exit_code: int | Callable[[BaseException], int]
    message: Callable[[BaseException], str] = str


def _own_exit_code(exc: BaseException) -> int:
    return exc.exit_code  # type: ignore[attr-defined]


def _usage(exc: BaseException) -> str:
    assert isinstance(exc, click.UsageError)
    where = exc.ctx.command_path if exc.ctx else "calicoctl"
    return f"{exc.format_message()} (see '{where} --help')"


def _click_message(exc: BaseException) -> str:
    assert isinstance(exc, click.ClickException)
    return exc.format_message()


def _unexpected(exc: BaseException) -> str:
    """An exception no row knows: its class name and text, so the user can still tell what failed."""
    name = type(exc).__name__
    return f"{name}: {exc}" if str(exc) else name


def _os_error(exc: BaseException) -> str:
    assert isinstance(exc, OSError)
    if exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return _unexpected(exc)


# Most specific first: the first row whose class the exception is an instance of decides.
EXIT_CODES: tuple[Row, ...] = (
    Row(click.UsageError, EXIT_USAGE, _usage),
    Row(click.ClickException, _own_exit_code, _click_message),
    Row(click.Abort, EXIT_ERROR, lambda exc: "aborted"),
    Row(CtlError, _own_exit_code),
    # A stored record calicoctl cannot parse: its message names the key.
    Row(Unreadable, EXIT_ERROR),
    # Every floor's own exception (config.ConfigError, datastore.errors, dataplane.errors,
    # calico_ipam.errors): its text is written for the user, and a failed operation exits 1.
    Row(CalicoError, EXIT_ERROR),
    # Still raised by some lower code (and by the CNI wire format's own parsers).
    Row(CniError, EXIT_ERROR),
    Row(OSError, EXIT_ERROR, _os_error),
    Row(Exception, EXIT_ERROR, _unexpected),
)


def failure(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) of a command's failure: the first matching row of `EXIT_CODES`."""
    for row in EXIT_CODES:
        if isinstance(exc, row.kind):
            code = row.exit_code(exc) if callable(row.exit_code) else row.exit_code
            return row.message(exc), code
    return _unexpected(exc), EXIT_ERROR
