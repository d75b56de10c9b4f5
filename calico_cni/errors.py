"""The base of every floor's own exceptions: a short sentence a user sees (`msg`) and optional
context (`details`). Each floor defines its own subclasses (`config.ConfigError`,
`datastore.errors`, `dataplane.errors`, `calico_ipam.errors`); only the applications turn them into
CNI error codes (`plugins.errors`) or calicoctl exit codes (`ctl.errors`). Standard library only."""

from __future__ import annotations


class CalicoError(Exception):
    """A failure with a message for the user: `msg`, and `details` that may carry more context."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg
