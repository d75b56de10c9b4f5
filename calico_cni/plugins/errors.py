"""The one table that turns the lower floors' exceptions into CNI error codes (the runner's
`translate`). Each message reaches the runtime word for word; only the code is chosen here."""

from __future__ import annotations

from calico_cni.config import ConfigError
from calico_cni.dataplane.errors import DataplaneError, MtuError, NamespaceError
from calico_cni.datastore.errors import DatastoreCredentialsError, DatastoreNotReady, DatastoreRequestFailed, DatastoreUnavailable, TooManyConflicts
from calico_cni.errors import CalicoError
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
from calico_ipam.errors import AddressConflict, AddressesExhausted

# Most specific first: the first class the exception is an instance of decides its code.
CNI_CODES: tuple[tuple[type[CalicoError], int], ...] = (
    (ConfigError, INVALID_CONFIG),
    (DatastoreNotReady, TRY_AGAIN_LATER),
    (DatastoreUnavailable, TRY_AGAIN_LATER),
    (TooManyConflicts, TRY_AGAIN_LATER),
    (DatastoreCredentialsError, INVALID_CONFIG),
    (DatastoreRequestFailed, IO_FAILURE),
    (NamespaceError, INVALID_ENVIRONMENT),
    (MtuError, INVALID_CONFIG),
    (DataplaneError, DATAPLANE_FAILURE),
    (AddressesExhausted, IPAM_EXHAUSTED),
    (AddressConflict, IPAM_CONFLICT),
)


def cni_error(exc: BaseException) -> CniError | None:
    """The CNI error for an exception of a lower floor (its message unchanged), or None when the
    table does not know it (the runner then reports an internal error)."""
    if isinstance(exc, CniError):
        return exc
    for cls, code in CNI_CODES:
        if isinstance(exc, cls):
            return CniError(code, exc.msg, exc.details)
    return None
