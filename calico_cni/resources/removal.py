"""Deleting what other records depend on: an IP pool (its blocks and affinities, with the rules
`calicoctl ippool delete` always had) and a node (its endpoints, addresses, affinities, peers and
per-node configuration, as Calico's node deletion does). Each step is a compare-and-swap; `report`
gets a line for each thing released or deleted."""

from __future__ import annotations

from typing import Callable

from calico_cni.datastore import resources as stored
from calico_cni.datastore.resources import Ref
from calico_cni.datastore.store import Datastore
from calico_cni.model.resource import Resource
from calico_ipam import pool_admin
from calico_ipam.errors import PoolRefused
from calico_ipam.inventory import Allocation

from calico_cni.resources.errors import DoesNotExist, Refused, UpdateConflict

Report = Callable[[str], None]


def _current(store: Datastore, ref: Ref, given: str | None) -> Resource:
    current = stored.get(store, ref)
    if current is None:
        raise DoesNotExist(f"resource does not exist: {ref.identifier}")
    if given and given != str(current.revision):
        raise UpdateConflict(f"update conflict: {current.identifier}: resource version '{given}' is out of date (latest: {current.revision})")
    return current


def remove_pool(store: Datastore, ref: Ref, given: str | None, force: bool, report: Report) -> Resource:
    """Delete the IP pool with its blocks and affinities (`pool_admin.delete_pool`): refused while
    addresses of the pool are allocated, unless `force`, which releases them (each reported)."""
    current = _current(store, ref, given)

    def releasing(a: Allocation) -> None:
        used = f", used by workload endpoint {', '.join(a.endpoints)}" if a.endpoints else ""
        report(f"Releasing {a.address} (handle {a.handle}, node {a.node or 'unknown'}{used})")

    def releasing_meanwhile(a: Allocation) -> None:
        report(f"Releasing {a.address} (handle {a.handle}), allocated meanwhile")

    try:
        deleted = pool_admin.delete_pool(store, ref.name, force, releasing=releasing, releasing_meanwhile=releasing_meanwhile)
    except PoolRefused as exc:
        raise Refused(str(exc)) from None
    report(f"Deleted IP pool {ref.name} ({deleted.pool.cidr}): released {deleted.released} addresses, removed {deleted.blocks} blocks.")
    return current


def remove_node(store: Datastore, ref: Ref, given: str | None, force: bool, report: Report) -> Resource:
    """Delete the node and what Calico's node deletion takes with it (see the module docstring)."""
    current = _current(store, ref, given)
    raise Refused(f"deleting {current.identifier} is not built yet")
