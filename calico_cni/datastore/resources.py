"""Calico's v3 resources of every kind, read by their typed description (`model.schema.Kind`):
one resource by its key, several in one round trip, or every one of a kind.

Reads keep every field of the stored record (design rule 15). Writes of these resources go through
`Datastore.commit`, a compare-and-swap on each key's revision (`Resource` is a record it takes)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from calico_cni.datastore.etcd import Range
from calico_cni.datastore.store import Datastore
from calico_cni.model import resource as naming
from calico_cni.model.resource import Resource
from calico_cni.model.kinds.policy import DEFAULT_ALLOW_PROFILE
from calico_cni.model.schema import Kind


@dataclass(frozen=True)
class Ref:
    """Which resource: its kind, name and (namespaced kinds) namespace."""

    kind: Kind
    name: str
    namespace: str | None = None

    @property
    def key(self) -> str:
        """The etcd key."""
        return naming.key(self.kind, self.name, self.namespace)

    @property
    def identifier(self) -> str:
        """`Kind(name)`, as Calico's messages name it."""
        return naming.identifier(self.kind, self.name, self.namespace)


# Calico's built-in profile: every read of profiles shows it, though it is never stored (Calico's
# etcd backend adds it the same way); endpoints name it to allow all traffic.


def builtin(kind: Kind, name: str) -> Resource | None:
    """The built-in resource `name` of `kind` (only Calico's default-allow profile), at revision 1."""
    if kind.name != "Profile" or name != DEFAULT_ALLOW_PROFILE:
        return None
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": DEFAULT_ALLOW_PROFILE},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]},
    }
    return Resource(kind, doc, 1)


log = logging.getLogger(__name__)


class Unreadable(ValueError):
    """A stored record that is not a JSON object (nothing Calico writes)."""


def _parse(kind: Kind, key: str, value: bytes, revision: int) -> Resource:
    try:
        return Resource.from_stored(kind, value, revision)
    except ValueError:
        raise Unreadable(f"the record at {key} cannot be read as {kind.name}: it is not a JSON object") from None


def read(store: Datastore, refs: Sequence[Ref], unreadable: Callable[[str], None] | None = None) -> tuple[list[Resource | None], int]:
    """The resources `refs` name (None for each that does not exist), read in one round trip at one
    revision, and that revision. A stored record that cannot be parsed raises `Unreadable`; with
    `unreadable` (a deleter's report), it is told that and gets a stand-in holding only the name and
    the record's revision, so the record can still be deleted by its key."""
    if not refs:
        return [], 0
    results, revision = store.client.read([Range(r.key) for r in refs])
    out: list[Resource | None] = []
    for ref, kvs in zip(refs, results):
        if not kvs:
            out.append(builtin(ref.kind, ref.name))
            continue
        try:
            out.append(_parse(ref.kind, kvs[0].key, kvs[0].value, kvs[0].mod_revision))
        except Unreadable as exc:
            if unreadable is None:
                raise
            unreadable(f"{exc}; deleting it by its key")
            meta = {"name": ref.name, **({"namespace": ref.namespace} if ref.namespace else {})}
            out.append(Resource(ref.kind, {"metadata": meta}, kvs[0].mod_revision))
    return out, revision


def get(store: Datastore, ref: Ref) -> Resource | None:
    """The resource `ref` names, or None."""
    kv = store.client.get(ref.key)
    return _parse(ref.kind, kv.key, kv.value, kv.mod_revision) if kv else builtin(ref.kind, ref.name)


def list_kind(store: Datastore, kind: Kind, namespace: str | None = None) -> tuple[list[Resource], int]:
    """Every resource of `kind` (in `namespace`, or in every namespace when None), in key order, and
    the revision they were read at."""
    (kvs,), revision = store.client.read([Range(naming.prefix(kind, namespace), prefix=True)])
    # A namespaced prefix without a namespace lists every namespace; deeper keys are not resources.
    depth = 2 if kind.namespaced and not namespace else 1
    prefix = naming.prefix(kind, namespace)
    out = []
    for kv in kvs:
        if kv.key[len(prefix) :].count("/") != depth - 1:
            continue
        try:
            out.append(_parse(kind, kv.key, kv.value, kv.mod_revision))
        except Unreadable as exc:
            # Calico's list skips what it cannot parse; one bad record must not hide the others.
            log.error("skipping %s %s: %s", kind.name, kv.key[len(prefix) :], exc)
    default_allow = builtin(kind, DEFAULT_ALLOW_PROFILE)
    if default_allow is not None and all(r.name != DEFAULT_ALLOW_PROFILE for r in out):
        out.append(default_allow)
    return out, revision
