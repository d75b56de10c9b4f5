"""Deleting what other records depend on: an IP pool (its blocks and affinities, with the rules
`calicoctl ippool delete` always had) and a node (its endpoints, addresses, affinities, peers, host
endpoints and per-node configuration, as Calico's node deletion does). Each step is a
compare-and-swap; `report` gets a line for each thing released or deleted."""

from __future__ import annotations

from typing import Callable

from calico_cni.datastore import resources as stored
from calico_cni.datastore.resources import Ref
from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore
from calico_cni.errors import CalicoError
from calico_cni.model.kinds.config import FELIX_CONFIGURATION
from calico_cni.model.kinds.endpoints import HOST_ENDPOINT
from calico_cni.model.kinds.routing import BGP_CONFIGURATION, BGP_PEER
from calico_cni.model.resource import Resource
from calico_ipam import node_release, pool_admin
from calico_ipam.errors import PoolRefused
from calico_ipam.inventory import Allocation

from calico_cni.resources.errors import DoesNotExist, Refused, ResourceError, UpdateConflict

Report = Callable[[str], None]


def deletable(ref: Ref, current: Resource | None, given: str | None, source: str = "") -> Resource:
    """The stored resource `ref` (read as `current`) a delete may take: it must exist, at the
    resourceVersion `given` when one is (`source`: the file that named it)."""
    if current is None:
        raise DoesNotExist(f"resource does not exist: {ref.identifier}" + (f" ({source})" if source else ""))
    if given and given != str(current.revision):
        raise UpdateConflict(f"update conflict: {current.identifier}: resource version '{given}' is out of date (latest: {current.revision})")
    return current


def _current(store: Datastore, ref: Ref, given: str | None) -> Resource:
    return deletable(ref, stored.get(store, ref), given)


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
        deleted = pool_admin.delete_pool(
            store, ref.name, force, releasing=releasing, releasing_meanwhile=releasing_meanwhile, expected_revision=int(given) if given else None
        )
    except PoolRefused as exc:
        raise Refused(str(exc)) from None
    report(f"Deleted IP pool {ref.name} ({deleted.pool.cidr}): released {deleted.released} addresses, removed {deleted.blocks} blocks.")
    return current


# ------------------------------------------------------------------------------------------------
# Nodes
#
# As Calico v3.30's node deletion: release the addresses of the node's workload endpoints and its
# tunnel addresses, delete those endpoints, release the node's block affinities (an empty block is
# deleted, a block still holding addresses stays without affinity), delete the BGPPeers, the
# HostEndpoints and the per-node FelixConfiguration and BGPConfiguration of the node, then the Node.
# One difference: it is refused while the node has workload endpoints, unless `force`. Every step
# can run again: a second run after a failure finishes the job.

# How many names a message lists before ", ...".
_NAMED = 3


class Incomplete(ResourceError):
    """A node deletion that stopped part-way: the message says what was done already; running the
    delete again finishes it."""


def _sample(names: list[str]) -> str:
    return ", ".join(names[:_NAMED]) + (", ..." if len(names) > _NAMED else "")


class _Progress:
    """What a node deletion did so far: each thing done is reported and counted."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.counts: dict[str, int] = {}

    def did(self, what: str, line: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        self.report(line)

    def summary(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in self.counts.items())


def _owner(n: node_release.NodeAllocation, name: str) -> str:
    a = n.allocation
    if n.endpoints:
        return f"of workload endpoint {', '.join(n.endpoints)}"
    if n.tunnel:
        return f"tunnel address of node {name} (handle {a.handle})"
    return f"allocated to node {name}, used by no workload endpoint (handle {a.handle})"


def _release_addresses_and_endpoints(store: Datastore, name: str, force: bool, progress: _Progress) -> None:
    """Step 1: the refusal (endpoints without `force`), then the release of the node's addresses and
    the deletion of its workload endpoints (each a compare-and-swap on the revision read)."""
    snap = store.ipam_snapshot()
    endpoints = [w for w in snap.endpoints if w.node == name]
    if endpoints and not force:
        listed = sorted(f"{w.namespace}/{w.name}" for w in endpoints)
        raise Refused(
            f"Node({name}) still has {len(listed)} workload endpoint(s): {_sample(listed)}; "
            "delete them first, or pass --force to delete them too (their addresses are released)"
        )
    mine, foreign = node_release.node_allocations(snap, name)
    for f in foreign:
        a = f.allocation
        progress.report(f"Kept {a.address} (handle {a.handle}): {f.reason}")
    for n in node_release.release(store, mine):
        progress.did("addresses released", f"Released {n.allocation.address} {_owner(n, name)}")
    for wep in sorted(endpoints, key=lambda w: (w.namespace, w.name)):
        if not store.commit(deletes=[wep]):
            if store.workload_endpoint(wep.namespace, wep.name) is None:
                continue
            raise UpdateConflict(f"update conflict: workload endpoint {wep.namespace}/{wep.name} of node {name} changed while the node was being deleted")
        progress.did("workload endpoints deleted", f"Deleted workload endpoint {wep.namespace}/{wep.name}")


def _release_affinities(store: Datastore, name: str, progress: _Progress) -> None:
    """Step 2: the node's block affinities released, its empty blocks deleted."""
    for cidr in node_release.affine_blocks(store.ipam_snapshot(), name):
        r = node_release.release_affinity(store, name, cidr)
        if r.outcome == "deleted":
            progress.did("blocks deleted", f"Released the affinity of node {name} to block {cidr} and deleted the empty block")
        elif r.outcome == "kept":
            cooling = f" ({r.cooling} cooling down)" if r.cooling else ""
            progress.did(
                "blocks kept without affinity",
                f"Released the affinity of node {name} to block {cidr}; the block keeps its {r.held} allocated addresses{cooling}, affine to no node",
            )
        elif r.outcome == "stray":
            why = f"affine to node {r.owner}" if r.owner else "missing"
            progress.did("affinities deleted", f"Deleted the affinity of node {name} to block {cidr} (the block is {why})")
        elif r.outcome == "corrupt":
            progress.report(f"Kept the affinity of node {name} to block {cidr}: the block record does not parse (see calicoctl ipam check)")


def _delete_if(store: Datastore, ref: Ref, still: Callable[[Resource], bool]) -> bool:
    """Delete the resource if it exists and `still(it)` holds, by a compare-and-swap on the revision
    read (a lost race re-reads and checks again); False when there was nothing to delete."""

    def step(attempt: int) -> bool:
        found = stored.get(store, ref)
        if found is None or not still(found):
            return False
        if not store.commit(deletes=[found]):
            raise Conflict()
        return True

    return with_retries(f"deleting {ref.identifier}", step)


def _on_node(name: str) -> Callable[[Resource], bool]:
    return lambda r: (r.doc.get("spec") or {}).get("node") == name


def _delete_dependents(store: Datastore, name: str, progress: _Progress) -> None:
    """Step 3: the node's BGPPeers, per-node FelixConfiguration and BGPConfiguration, and
    HostEndpoints."""
    peers, _ = stored.list_kind(store, BGP_PEER)
    for p in peers:
        if _on_node(name)(p) and _delete_if(store, Ref(BGP_PEER, p.name), _on_node(name)):
            progress.did("BGPPeers deleted", f"Deleted BGPPeer {p.name}")
    for kind in (FELIX_CONFIGURATION, BGP_CONFIGURATION):
        if _delete_if(store, Ref(kind, f"node.{name}"), lambda r: True):
            progress.did(f"{kind.name}s deleted", f"Deleted {kind.name} node.{name}")
    heps, _ = stored.list_kind(store, HOST_ENDPOINT)
    for h in heps:
        if _on_node(name)(h) and _delete_if(store, Ref(HOST_ENDPOINT, h.name), _on_node(name)):
            progress.did("HostEndpoints deleted", f"Deleted HostEndpoint {h.name}")


def _delete_node(store: Datastore, current: Resource, given: str | None) -> None:
    """Step 4: the Node, by a compare-and-swap on the revision read first (or given)."""
    if store.commit(deletes=[current]):
        return
    now = stored.get(store, Ref(current.kind, current.name))
    if now is None:
        return
    if given:
        raise UpdateConflict(f"update conflict: {current.identifier}: resource version '{given}' is out of date (latest: {now.revision})")
    raise UpdateConflict(
        f"update conflict: {current.identifier} changed while its records were being removed (revision {current.revision}, now {now.revision})"
    )


def remove_node(store: Datastore, ref: Ref, given: str | None, force: bool, report: Report) -> Resource:
    """Delete the node and what Calico's node deletion takes with it (see above), reporting each
    thing done. Refused (nothing changed) while the node has workload endpoints, unless `force`.
    Like Calico's, a node whose record is already gone still has its leftovers removed, then
    `DoesNotExist` is raised. A failure part-way says what was done already."""
    try:
        current = _current(store, ref, given)
    except DoesNotExist:
        current = None
    name = ref.name
    progress = _Progress(report)
    try:
        _release_addresses_and_endpoints(store, name, force, progress)
        _release_affinities(store, name, progress)
        _delete_dependents(store, name, progress)
        if current is not None:
            _delete_node(store, current, given)
    except (CalicoError, ValueError) as exc:
        if not progress.counts:
            raise
        done = f"done already: {progress.summary()}; run the delete again to finish"
        if isinstance(exc, UpdateConflict):
            raise UpdateConflict(f"{exc}; {done}") from None
        raise Incomplete(f"deleting {ref.identifier} stopped part-way: {exc}; {done}") from None
    if current is None:
        leftovers = " (its leftover records, listed above, were removed)" if progress.counts else ""
        raise DoesNotExist(f"resource does not exist: {ref.identifier}{leftovers}")
    return current
