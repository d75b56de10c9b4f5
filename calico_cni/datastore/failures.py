"""What a failed etcd call means, decided in one place.

etcd answers a failed request with a gRPC status code and a text. Some conditions have their own
code; etcd 3.4 reports others only in the text (etcdserver/api/v3rpc/rpctypes), so the fragments of
server text we look for are listed here and nowhere else. Standard library only: the client passes
the status code's name, so this module needs no gRPC. The errors the client raises for each
failure are built here too, so every message about a failed call is in one place.
"""

from __future__ import annotations

import enum
from typing import Sequence

from calico_cni.datastore.errors import DatastoreCredentialsError, DatastoreError, DatastoreRequestFailed, DatastoreUnavailable


class Failure(enum.Enum):
    """What the client does about a failed call."""

    ENDPOINT_DOWN = "endpoint down"  # unreachable or too slow: fail over, retry until the deadline
    AUTH_NOT_ENABLED = "authentication not enabled"  # Authenticate: send requests without a token
    BAD_PASSWORD = "credentials"  # Authenticate refused the user name or password
    REAUTHENTICATE = "reauthenticate"  # the token is invalid or stale (expired, etcd restarted)
    NO_USER = "no user"  # etcd requires authentication and the request carried no token
    PERMISSION = "permission"  # the user has no role that allows the request
    OTHER = "other"


# Fragments of gRPC status details that point at the TLS layer rather than a dead endpoint.
TLS_MARKERS = ("ssl", "tls", "tsi_", "handshake", "certificate")
# etcd 3.4 status details that mean "authenticate again".
REAUTH_MARKERS = ("invalid auth token", "auth store is old", "revision of auth store is old")
# Authenticate's answer when etcd has authentication disabled.
AUTH_NOT_ENABLED_MARKER = "authentication is not enabled"
# Authenticate's answer to a wrong user name or password.
AUTH_FAILED_MARKER = "authentication failed"
# A request without a token to an etcd that requires one.
NO_USER_MARKER = "user name is empty"

# The gRPC status codes (by name) of an endpoint that did not answer in time.
_ENDPOINT_DOWN_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")

# gRPC's status codes by number (google.golang.org/grpc/codes): etcd's JSON gateway gives the number.
_CODE_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


def code_name(number: int) -> str:
    """The name of a gRPC status code given by number (UNKNOWN for a number gRPC does not define)."""
    return _CODE_NAMES[number] if 0 <= number < len(_CODE_NAMES) else "UNKNOWN"


def classify(code: str, detail: str, authenticating: bool) -> Failure:
    """The meaning of a failed call: `code` is the gRPC status code's name, `detail` etcd's text,
    `authenticating` whether the call was Authenticate itself."""
    lowered = detail.lower()
    if code in _ENDPOINT_DOWN_CODES:
        return Failure.ENDPOINT_DOWN
    if authenticating:
        if AUTH_NOT_ENABLED_MARKER in lowered:
            return Failure.AUTH_NOT_ENABLED
        if code == "INVALID_ARGUMENT" or AUTH_FAILED_MARKER in lowered:
            return Failure.BAD_PASSWORD
    if code == "UNAUTHENTICATED" or any(m in lowered for m in REAUTH_MARKERS):
        return Failure.REAUTHENTICATE
    if NO_USER_MARKER in lowered:
        return Failure.NO_USER
    if code == "PERMISSION_DENIED":
        return Failure.PERMISSION
    return Failure.OTHER


def points_at_tls(detail: str) -> bool:
    """True when an unreachable endpoint's status text names the TLS layer (worth a diagnosis)."""
    lowered = detail.lower()
    return any(m in lowered for m in TLS_MARKERS)


def unreachable(endpoints: Sequence[str], last: str, limit: str, tls_problems: Sequence[DatastoreError]) -> DatastoreUnavailable:
    """The deadline passed without an answer: `last` is the last endpoint's failure, `limit` says
    which deadline passed ("the invocation's deadline (add_timeout) was reached", "deadline of 5s
    exceeded"), `tls_problems` what `tls.diagnose_tls` found on endpoints that failed in TLS."""
    detail = f"{limit}: {last}"
    if tls_problems:
        detail += "; " + "; ".join(str(e) for e in tls_problems)
    elif ("socket closed" in last.lower() or "http request to an https server" in last.lower()) and "http://" in last:
        detail += " (if etcd serves TLS there, use an https:// endpoint)"
    return DatastoreUnavailable(endpoints, detail)


def bad_password(username: str | None, detail: str) -> DatastoreCredentialsError:
    """Authenticate refused the user name or password."""
    return DatastoreCredentialsError(
        f"etcd refused the user name or password of etcd user {username!r}",
        "check etcd_username/etcd_password (or ETCD_USERNAME/ETCD_PASSWORD); etcd said: " + detail,
    )


def token_refused(detail: str) -> DatastoreCredentialsError:
    """etcd refused the token even after authenticating again (or no user is configured)."""
    return DatastoreCredentialsError("etcd refused the authentication token", detail)


def no_user() -> DatastoreCredentialsError:
    """etcd requires authentication and no etcd user is configured."""
    return DatastoreCredentialsError(
        "etcd requires authentication and no etcd user is configured",
        "set etcd_username and etcd_password (or ETCD_USERNAME and ETCD_PASSWORD)",
    )


def permission_denied(username: str | None, detail: str) -> DatastoreRequestFailed:
    """The user (or, without authentication, this client) may not do the request."""
    who = f"etcd user {username!r}" if username else "this client"
    return DatastoreRequestFailed(
        f"etcd denied the request (permission denied for {who})",
        f"grant it a role with readwrite on the /calico/ prefix; etcd said: {detail}",
    )


def request_failed(code: str, detail: str) -> DatastoreRequestFailed:
    """Any other failure etcd answered with."""
    return DatastoreRequestFailed(f"etcd request failed: {code}", detail)
