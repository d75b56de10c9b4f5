"""The CNI plugins' one table from the lower floors' exceptions to CNI error codes
(`calico_cni.plugins.errors`): each row gives its code, and the message and details reach the
runtime unchanged."""

from __future__ import annotations

import pytest

from calico_cni.config import ConfigError
from calico_cni.dataplane.bird import BirdError
from calico_cni.dataplane.errors import DataplaneError, MtuError, NamespaceError
from calico_cni.dataplane.conntrack import ConntrackError
from calico_cni.dataplane.nftables import NftError
from calico_cni.dataplane.tunnels import TunnelError
from calico_cni.datastore.watch import WatchLost
from calico_cni.datastore.errors import DatastoreCredentialsError, DatastoreNotReady, DatastoreRequestFailed, DatastoreUnavailable, TooManyConflicts
from calico_cni.errors import CalicoError
from calico_cni.node.autodetect import AutodetectError
from calico_cni.node.settings import SettingsError
from calico_cni.node.startup import StartupError
from calico_cni.node.tunnel_addresses import TunnelAddressError
from calico_cni.plugins.dispatch import translate
from calico_cni.plugins.errors import CNI_CODES, cni_error
from calico_cni.protocol.errors import (
    DATAPLANE_FAILURE,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    IO_FAILURE,
    IPAM_CONFLICT,
    IPAM_EXHAUSTED,
    TRY_AGAIN_LATER,
    CniError,
)
from calico_cni.resources.errors import ResourceError
from calico_ipam.errors import AddressConflict, AddressesExhausted, InvalidReport, PoolRefused, RepairRefused


# One exception of each row's class, with the code the runtime must see.
ROWS = [
    (ConfigError("etcd_timeout must be a number", "got 'x'"), INVALID_CONFIG),
    (DatastoreNotReady(), TRY_AGAIN_LATER),
    (DatastoreUnavailable(["http://127.0.0.1:1"], "connection refused"), TRY_AGAIN_LATER),
    (TooManyConflicts("writing endpoint ns/ep: gave up after 100 attempts"), TRY_AGAIN_LATER),
    (DatastoreCredentialsError("etcd refused the authentication token"), INVALID_CONFIG),
    (DatastoreRequestFailed("etcd request failed: PERMISSION_DENIED", "no access"), IO_FAILURE),
    (NamespaceError("CNI_NETNS '/x' is not a network namespace"), INVALID_ENVIRONMENT),
    (MtuError("mtu must be between 68 and 65535", "got 1"), INVALID_CONFIG),
    (DataplaneError("cannot set net.ipv4.ip_forward to 1", "Permission denied"), DATAPLANE_FAILURE),
    (AddressesExhausted("no address left in the IPv4 pools"), IPAM_EXHAUSTED),
    (AddressConflict("10.0.0.1 is held by another handle"), IPAM_CONFLICT),
]


@pytest.mark.parametrize("exc, code", ROWS, ids=[type(exc).__name__ for exc, _ in ROWS])
def test_each_row_gives_its_code_and_keeps_the_text(exc, code):
    err = cni_error(exc)
    assert isinstance(err, CniError)
    assert (err.code, err.msg, err.details) == (code, exc.msg, exc.details)
    # The exec'd plugin's runner reaches the table through dispatch.translate.
    assert translate(exc).code == code


def test_every_row_is_tested():
    assert [cls for cls, _ in CNI_CODES] == [type(exc) for exc, _ in ROWS]


def _leaves(cls: type) -> set[type]:
    subs = cls.__subclasses__()
    return set().union(*map(_leaves, subs)) if subs else {cls}


# The IPAM floor's refusals only calicoctl raises (no CNI verb repairs, checks reports or changes
# pools): the table leaves them out, so one reaching a verb is reported as an internal error.
# The resource verbs' failures: only calicoctl manages resources (no CNI verb raises them).
CALICOCTL_ONLY = {RepairRefused, InvalidReport, PoolRefused, *_leaves(ResourceError)}


# What only calico-node raises (its settings, start-up, address detection, watch and BIRD): no CNI verb
# does, so none has a row.
DAEMON_ONLY = {*_leaves(WatchLost), *_leaves(BirdError), *_leaves(SettingsError), *_leaves(StartupError), *_leaves(AutodetectError), *_leaves(TunnelError), *_leaves(TunnelAddressError), *_leaves(NftError), *_leaves(ConntrackError)}

# Row classes that also have subclasses of their own (raised directly as well).
PARENT_ROWS = {
    DatastoreUnavailable,  # etcd unreachable; its subclass DatastoreNotReady is a lock
    DataplaneError,  # its subclass BirdError is calico-node's only
}


def test_every_floor_exception_has_a_row_or_is_calicoctls():
    # A new exception class of a lower floor needs a row (or a reason no CNI verb raises it).
    leaves = {cls for cls in _leaves(CalicoError) if cls.__module__.startswith(("calico_cni.", "calico_ipam."))}
    assert leaves - CALICOCTL_ONLY - DAEMON_ONLY == {cls for cls, _ in CNI_CODES} - PARENT_ROWS


def test_a_datastore_lock_reads_as_calicos_not_ready_and_as_unavailable():
    """Everything that handles an unreachable etcd (ADD's try-again-later, DEL's journal) handles
    the migration lock the same way; the message is Calico's, then ours naming the lock."""
    err = DatastoreNotReady()
    assert isinstance(err, DatastoreUnavailable)
    assert str(err).startswith("Calico is currently not ready to process requests: the datastore is locked")
    assert "calicoctl datastore migrate unlock" in str(err)


def test_a_cni_error_passes_unchanged_and_others_are_unknown():
    err = CniError(TRY_AGAIN_LATER, "updating: gave up")
    assert cni_error(err) is err
    assert cni_error(RuntimeError("boom")) is None
    assert cni_error(RepairRefused("10.0.0.1 is not allocated; nothing released")) is None
