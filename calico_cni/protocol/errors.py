"""CNI error codes and the exception that carries one to the runner."""

from __future__ import annotations

# Error codes of the CNI specification (SPEC.md, "Error").
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
NOT_AVAILABLE_DEGRADED = 51
# Plugin-specific codes start at 100.
INTERNAL_ERROR = 100
IPAM_EXHAUSTED = 101
IPAM_CONFLICT = 102
CHECK_FAILED = 103
DATAPLANE_FAILURE = 104


class CniError(Exception):
    """An error the plugin reports to the runtime as CNI error JSON on stdout.

    `msg` is the short sentence a user sees; `details` may carry more context.
    """

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict:
        """The error as the CNI spec's error object."""
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

