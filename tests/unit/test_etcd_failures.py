"""What each failed etcd call means (`datastore.failures`), row by row, without etcd: the gRPC
status code's name and etcd's text decide whether the client fails over, authenticates again or
reports the failure, and which message the user reads. The etcd tests reach some rows through a real
etcd; these reach every one, including those a test etcd cannot be made to answer (an OTHER
failure, a token refused after authenticating again, a plain-http endpoint talking to TLS)."""

from __future__ import annotations

import pytest

from calico_cni.datastore import failures
from calico_cni.datastore.errors import DatastoreCredentialsError, DatastoreRequestFailed, DatastoreUnavailable
from calico_cni.datastore.failures import Failure


@pytest.mark.parametrize(
    "code, detail, authenticating, expected",
    [
        ("UNAVAILABLE", "connection refused", False, Failure.ENDPOINT_DOWN),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", True, Failure.ENDPOINT_DOWN),
        # An unreachable endpoint stays ENDPOINT_DOWN whatever its text says.
        ("UNAVAILABLE", "etcdserver: invalid auth token", False, Failure.ENDPOINT_DOWN),
        ("FAILED_PRECONDITION", "etcdserver: authentication is not enabled", True, Failure.AUTH_NOT_ENABLED),
        ("INVALID_ARGUMENT", "etcdserver: authentication failed, invalid user ID or password", True, Failure.BAD_PASSWORD),
        ("UNKNOWN", "Authentication Failed", True, Failure.BAD_PASSWORD),
        # Outside Authenticate, the same texts are not about the password.
        ("FAILED_PRECONDITION", "etcdserver: authentication is not enabled", False, Failure.OTHER),
        ("UNAUTHENTICATED", "etcdserver: invalid auth token", False, Failure.REAUTHENTICATE),
        ("INVALID_ARGUMENT", "etcdserver: invalid auth token", False, Failure.REAUTHENTICATE),
        ("FAILED_PRECONDITION", "etcdserver: revision of auth store is old", False, Failure.REAUTHENTICATE),
        ("INVALID_ARGUMENT", "etcdserver: user name is empty", False, Failure.NO_USER),
        ("PERMISSION_DENIED", "etcdserver: permission denied", False, Failure.PERMISSION),
        ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded", False, Failure.OTHER),
    ],
)
def test_classify(code, detail, authenticating, expected):
    assert failures.classify(code, detail, authenticating) is expected


def test_points_at_tls():
    assert failures.points_at_tls("Ssl handshake failed")
    assert failures.points_at_tls("TSI_DATA_CORRUPTED")
    assert not failures.points_at_tls("failed to connect to all addresses; connection refused")


def test_unreachable_names_the_deadline_the_last_failure_and_what_tls_found():
    err = failures.unreachable(("http://a:2379", "http://b:2379"), "b:2379: refused", "deadline of 5s exceeded", [])
    assert isinstance(err, DatastoreUnavailable)
    assert err.msg == "etcd is unreachable at http://a:2379, http://b:2379; try again later"
    assert err.details == "deadline of 5s exceeded: b:2379: refused"
    tls = DatastoreCredentialsError("etcd at https://a:2379 does not speak TLS")
    assert failures.unreachable(("https://a:2379",), "x", "limit", [tls]).details == "limit: x; etcd at https://a:2379 does not speak TLS"


def test_unreachable_hints_at_https_when_a_plain_endpoint_closes_the_socket():
    """A TLS-only etcd closes the socket of a plain-http client: the hint says which scheme to use."""
    err = failures.unreachable(("http://a:2379",), "http://a:2379: Socket closed", "limit", [])
    assert err.details.endswith(" (if etcd serves TLS there, use an https:// endpoint)")
    assert "if etcd serves TLS" not in failures.unreachable(("https://a:2379",), "https://a:2379: Socket closed", "limit", []).details
    # Over etcd's JSON gateway the TLS port's answer to plain HTTP may arrive before it closes.
    said = "Endpoint(http://a:2379): HTTP 400 from an endpoint that is not etcd's gateway: Client sent an HTTP request to an HTTPS server."
    assert failures.unreachable(("http://a:2379",), said, "limit", []).details.endswith("use an https:// endpoint)")


def test_gateway_code_numbers_name_grpcs_status_codes():
    """etcd's JSON gateway gives the gRPC code as a number: the names are gRPC's own."""
    import grpc

    for status in grpc.StatusCode:
        assert failures.code_name(status.value[0]) == status.name
    assert failures.code_name(17) == failures.code_name(-1) == "UNKNOWN"


def test_reported_failures_name_the_setting_never_the_password():
    refused = failures.bad_password("calico", "authentication failed")
    assert isinstance(refused, DatastoreCredentialsError) and "'calico'" in refused.msg and "ETCD_PASSWORD" in refused.details
    assert failures.token_refused("invalid auth token").msg == "etcd refused the authentication token"
    assert "etcd_username" in failures.no_user().details
    denied = failures.permission_denied(None, "permission denied")
    assert isinstance(denied, DatastoreRequestFailed) and "this client" in denied.msg
    assert "etcd user 'nobody'" in failures.permission_denied("nobody", "x").msg
    other = failures.request_failed("RESOURCE_EXHAUSTED", "database space exceeded")
    assert isinstance(other, DatastoreRequestFailed) and other.msg == "etcd request failed: RESOURCE_EXHAUSTED"
