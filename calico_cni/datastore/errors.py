"""The datastore floor's exceptions (the CNI plugins map them to codes in `plugins.errors`)."""

from __future__ import annotations

from typing import Sequence

from calico_cni.errors import CalicoError


class DatastoreError(CalicoError):
    """Any failure of the datastore floor."""


class DatastoreUnavailable(DatastoreError):
    """etcd could not be reached before the deadline: try again later."""

    def __init__(self, endpoints: Sequence[str], detail: str) -> None:
        super().__init__("etcd is unreachable at " + ", ".join(endpoints) + "; try again later", detail)


class DatastoreNotReady(DatastoreUnavailable):
    """Calico's ClusterInformation says `datastoreReady: false`: the datastore is locked (a
    migration, `calicoctl datastore migrate lock`). Like an unreachable etcd it means "not now":
    ADD fails with try-again-later and DEL journals its release for after the unlock."""

    def __init__(self, endpoint: object | None = None) -> None:
        # What the read that found the lock also read (a DEL's endpoint), for the journal entry.
        self.endpoint = endpoint
        DatastoreError.__init__(
            self,
            "Calico is currently not ready to process requests",
            "the datastore is locked (ClusterInformation default has datastoreReady: false, e.g. by "
            "calicoctl datastore migrate lock); calicoctl datastore migrate unlock ends it",
        )


class DatastoreCredentialsError(DatastoreError):
    """etcd refused our credentials (TLS client certificate, user name or password), or the TLS
    files are unusable. Not "try again later": the configuration must change. Messages name the
    setting and the file, never a secret."""


class DatastoreRequestFailed(DatastoreError):
    """etcd answered a request with an error (permission denied, or another gRPC failure)."""


class TooManyConflicts(DatastoreError):
    """A compare-and-swap step kept losing races to concurrent writers: try again later."""
