"""Reconciliation of one network on one node against its live attachments (CNI GC, and
`calicoctl ipam gc`).

Allocations are read at one etcd revision (`ipam_snapshot`) and each is released with
`release_exact`: a compare-and-swap on the block that also requires the ordinal to still carry the
allocation's sequence number, so an address released and allocated again meanwhile is never freed.
Membership is decided from the allocation's attributes (`secondary.network`, `secondary.node`,
`secondary.ifname`) and the handle id `<network>.<containerID>` built from the live list, never by
parsing handle strings (a network name or container ID may contain dots). Only allocations held
by a handle are considered (`inventory.block_allocations`): one without a handle is never ours to
free. Workload endpoints are
deleted with a CAS on the revision they were read at; `cali*` links are found by their alias (which
names the attachment, so a link is never judged by its hashed name). Nothing of another network or
node is touched. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Iterable

from calico_cni.model.keys import attachment_handle
from calico_cni.model.records import NETWORK_ANNOTATION, parse_time
from calico_cni.workload import ALIAS_PREFIX
from calico_ipam.allocator import Assigned, release_exact
from calico_ipam.inventory import block_allocations

log = logging.getLogger(__name__)


@dataclass
class Live:
    """The live attachments: (containerID, ifname); ifname None means every interface."""

    pairs: set[tuple[str, str | None]] = field(default_factory=set)

    @classmethod
    def of(cls, items: Iterable[tuple[str, str | None]]) -> "Live":
        """The live attachments of (containerID, ifname) pairs; an empty ifname means every interface."""
        return cls({(c, i or None) for c, i in items})

    def __contains__(self, item: tuple[str, str | None]) -> bool:
        cid, ifname = item
        return (cid, None) in self.pairs or (ifname is not None and (cid, ifname) in self.pairs) or (
            ifname is None and any(c == cid for c, _ in self.pairs)
        )

    def handle_ids(self, network: str) -> dict[str, str]:
        """handle id -> container id, for the live containers of `network`."""
        return {attachment_handle(network, cid): cid for cid, _ in self.pairs}


@dataclass
class GcReport:
    """What one reconciliation did."""

    released: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    held_files: int = 0
    young: int = 0

    def summary(self) -> str:
        """One line saying what the reconciliation did."""
        return (
            f"released {len(self.released)} address(es), deleted {len(self.endpoints)} endpoint(s) and {len(self.links)} link(s)"
            + (f"; {self.young} younger than the grace period left alone" if self.young else "")
        )


def _young(stamp: str | None, grace: float, now: float) -> bool:
    if grace <= 0:
        return False
    t = parse_time(stamp)
    return t is not None and now - t < grace  # no readable age: judged like `ipam check` does


def endpoint_network(endpoint, network_addresses: set) -> bool | None:
    """Whether an endpoint belongs to the network: its annotation says so, or (older endpoints)
    a plain-CNI endpoint's profile is the network name, or one of its addresses is allocated to the
    network. None when it cannot be told."""
    meta = endpoint.doc.get("metadata") or {}
    annotated = (meta.get("annotations") or {}).get(NETWORK_ANNOTATION)
    if annotated is not None:
        return annotated
    spec = endpoint.spec
    for net in endpoint.ip_networks:
        try:
            if ipaddress.ip_interface(net).ip in network_addresses:
                return True
        except ValueError:
            continue
    if spec.get("orchestrator") == "cni" and len(spec.get("profiles") or []) == 1:
        return spec["profiles"][0]
    return None


def reconcile(
    store,
    network: str,
    node: str,
    live: Live | Iterable[tuple[str, str | None]],
    *,
    ipam: bool = True,
    endpoints: bool = True,
    host=None,
    journal=None,
    grace_seconds: float = 0.0,
) -> GcReport:
    """Release everything of `network` on `node` whose attachment is not in `live` (a `Live`, or
    (containerID, ifname) pairs as `protocol.gc.valid_attachments` reads them from a GC request).

    `ipam`: release allocations; `endpoints`: delete workload endpoints; `host`: the node's
    namespace (a `Netns`) whose `cali*` links to delete, or None; `journal`: drop the held-state
    files of dead attachments. `grace_seconds` > 0 leaves alone anything younger: a reconciliation
    without the runtime's word that no ADD is in flight (`calicoctl ipam gc`) must not take an
    address from a pod that is still starting. `DatastoreNotReady` while the datastore is locked
    for a migration (nothing is changed then).
    """
    live = live if isinstance(live, Live) else Live.of(live)
    report = GcReport()
    now = time.time()
    store.present([], ready_check=True)  # a datastore locked for a migration is left alone
    snapshot = store.ipam_snapshot()
    live_handles = live.handle_ids(network)
    young_attachments: set[tuple[str, str | None]] = set()
    dead: dict[str, list[Assigned]] = {}
    network_addresses = set()
    for block in snapshot.blocks:
        for a in block_allocations(block):
            ifname = a.secondary.get("ifname")
            if a.secondary.get("network") != network or a.node != node:
                continue
            network_addresses.add(a.address)
            cid = live_handles.get(a.handle)
            if cid is not None and (cid, ifname) in live:
                continue
            if _young(a.timestamp, grace_seconds, now):
                report.young += 1
                young_attachments.add((a.handle, ifname))
                continue
            dead.setdefault(a.handle, []).append(Assigned(a.address, a.block, a.ordinal, a.sequence))
    if ipam:
        for handle_id, items in sorted(dead.items()):
            for a in release_exact(store, handle_id, items):
                report.released.append(str(a.address))
            log.info("GC released %s of %s", ", ".join(str(a.address) for a in items), handle_id)

    young_containers: set[tuple[str, str | None]] = set()
    if endpoints:
        for ep in snapshot.endpoints:
            spec = ep.spec
            if spec.get("node") != node or endpoint_network(ep, network_addresses) not in (network, True):
                continue
            cid, ifname = spec.get("containerID"), spec.get("endpoint")
            if not cid or (cid, ifname) in live:
                continue
            if _young((ep.doc.get("metadata") or {}).get("creationTimestamp"), grace_seconds, now) or (attachment_handle(network, cid), ifname) in young_attachments:
                report.young += 1
                young_containers.add((cid, ifname))
                continue
            if store.commit(deletes=[ep]):
                report.endpoints.append(f"{ep.doc['metadata'].get('namespace')}/{ep.doc['metadata'].get('name')}")
            else:
                log.info("endpoint %s changed during GC: left for the next run", ep.key)

    if host is not None:
        report.links = _remove_links(host, network, live, young_attachments, young_containers, grace_seconds > 0)

    if journal is not None:
        for path, doc in journal.held_entries():
            if doc.get("network") == network and (doc.get("containerID"), doc.get("ifname")) not in live:
                if (doc.get("handle"), doc.get("ifname")) in young_attachments:
                    continue
                try:
                    os.unlink(path)
                    report.held_files += 1
                except FileNotFoundError:
                    pass
    log.info("GC of network %s on node %s: %s", network, node, report.summary())
    return report


def _remove_links(host, network: str, live: Live, young_attachments, young_containers, cautious: bool) -> list[str]:
    """Delete the `cali*` links whose alias names a dead attachment of `network` (their container
    ends and routes go with them)."""
    prefix = f"{ALIAS_PREFIX}{network}/"
    removed = []
    rtnl = host.rtnl()
    for link in rtnl.links():
        if not link.name.startswith("cali") or not link.alias.startswith(prefix):
            continue
        parts = link.alias[len(prefix) :].split("/")
        if len(parts) != 2:
            continue
        cid, ifname = parts
        if (cid, ifname) in live:
            continue
        if cautious and ((attachment_handle(network, cid), ifname) in young_attachments or (cid, ifname) in young_containers):
            continue
        if rtnl.delete_link(link.index):
            removed.append(link.name)
    return removed
