"""calicoctl's exit table (`calico_cni.ctl.errors`): each floor's exception keeps the exit code and
the one-line message calicoctl printed for it before the table existed."""

from __future__ import annotations

import click
import pytest

from calico_cni.config import ConfigError
from calico_cni.ctl.errors import EXIT_ERROR, EXIT_PROBLEMS, EXIT_USAGE, CtlError, failure
from calico_cni.dataplane.errors import DataplaneError, MtuError, NamespaceError
from calico_cni.datastore.errors import DatastoreCredentialsError, DatastoreRequestFailed, DatastoreUnavailable, TooManyConflicts
from calico_cni.protocol.errors import TRY_AGAIN_LATER, CniError
from calico_ipam.errors import AddressConflict, AddressesExhausted, PoolRefused, RepairRefused


@pytest.mark.parametrize(
    "exc, message",
    [
        (ConfigError("etcd_timeout must be a number", "got 'x'"), "etcd_timeout must be a number: got 'x'"),
        (DatastoreUnavailable(["http://127.0.0.1:1"], "connection refused"), "etcd is unreachable at http://127.0.0.1:1; try again later: connection refused"),
        (DatastoreCredentialsError("etcd refused the authentication token"), "etcd refused the authentication token"),
        (DatastoreRequestFailed("etcd request failed: PERMISSION_DENIED", "no access"), "etcd request failed: PERMISSION_DENIED: no access"),
        (TooManyConflicts("creating IP pool p: gave up after 100 attempts"), "creating IP pool p: gave up after 100 attempts"),
        (AddressesExhausted("no address left"), "no address left"),
        (RepairRefused("10.0.0.1 is not allocated; nothing released"), "10.0.0.1 is not allocated; nothing released"),
        (PoolRefused("IP pool p does not exist"), "IP pool p does not exist"),
        (DataplaneError("cannot set net.ipv4.ip_forward to 1", "Permission denied"), "cannot set net.ipv4.ip_forward to 1: Permission denied"),
        (NamespaceError("CNI_NETNS '/x' is not a network namespace"), "CNI_NETNS '/x' is not a network namespace"),
        (MtuError("mtu must be between 68 and 65535", "got 1"), "mtu must be between 68 and 65535: got 1"),
        (AddressConflict("10.0.0.1 is held by another handle"), "10.0.0.1 is held by another handle"),
        (CniError(TRY_AGAIN_LATER, "updating: gave up"), "updating: gave up"),
    ],
)
def test_floor_errors_print_their_text_and_exit_1(exc, message):
    assert failure(exc) == (message, EXIT_ERROR)


def test_ctl_error_keeps_its_own_exit_code():
    assert failure(CtlError("give at least one label")) == ("give at least one label", EXIT_ERROR)
    assert failure(CtlError("problems found", EXIT_PROBLEMS)) == ("problems found", EXIT_PROBLEMS)


def test_click_errors():
    message, code = failure(click.UsageError("Missing option '--cidr'."))
    assert code == EXIT_USAGE and message == "Missing option '--cidr'. (see 'calicoctl --help')"
    assert failure(click.BadParameter("not a number")) == ("Invalid value: not a number (see 'calicoctl --help')", EXIT_USAGE)
    assert failure(click.ClickException("boom")) == ("boom", 1)
    assert failure(click.Abort()) == ("aborted", EXIT_ERROR)


def test_os_and_unexpected_errors():
    assert failure(FileNotFoundError(2, "No such file or directory", "/x")) == ("No such file or directory: /x", EXIT_ERROR)
    assert failure(OSError("odd")) == ("OSError: odd", EXIT_ERROR)
    assert failure(KeyError("k")) == ("KeyError: 'k'", EXIT_ERROR)
    assert failure(RuntimeError()) == ("RuntimeError", EXIT_ERROR)
