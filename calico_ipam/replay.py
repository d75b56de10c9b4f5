"""Finishing the releases the node-local journal records (`calico_cni.journal`): DELs, and
rollbacks of failed ADDs, that found etcd unreachable. The journal only stores the entries; this
module releases what they name.

An entry with its exact allocations is released with `allocator.release_exact` on those (block,
ordinal, sequence number) triples, so an address released and given to another pod meanwhile is
never freed; its endpoint is deleted only while its uid is still the recorded one, so a newer
sandbox's endpoint of the same name is kept. An entry without them (no held file was found) is
resolved at one revision, conservatively: only allocations older than the entry, and nothing
while the container has an endpoint again. Replaying an entry twice changes nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

from calico_cni.datastore.errors import DatastoreUnavailable
from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore
from calico_cni.journal import Journal, read_entry
from calico_cni.model.records import parse_time
from calico_cni.workload import endpoint_of
from calico_ipam import allocator
from calico_ipam import blocks as blk

log = logging.getLogger(__name__)


def replay(store: Datastore, journal: Journal) -> int:
    """Finish every pending release of `journal`; returns how many were finished. An entry whose
    replay fails stays for the next invocation. Entries are not filtered by the etcd endpoints they
    record (a DEL may have found etcd down under another URL): a replay on the wrong cluster would
    need the same block, ordinal and nanosecond sequence number to free anything."""
    done = 0
    pending = journal.pending()
    if pending:
        # Nothing is finished while the datastore is locked for a migration (it raises, as an
        # unreachable etcd does, and the entries wait for the unlock).
        store.present([], ready_check=True)
    for path in pending:
        doc = read_entry(path)
        if doc is None:
            continue
        replay_entry(store, doc)
        journal.forget_pending(path)
        done += 1
        log.info("replayed pending release of %s/%s (%s)", doc.get("handle"), doc.get("ifname"), os.path.basename(path))
    return done


def _resolve(store: Datastore, doc: dict[str, Any]) -> list[allocator.Assigned]:
    """The allocations of an entry that recorded none: those of (handle, ifname) older than the
    entry, read now."""
    handle_id = doc["handle"]
    handle = store.handle(handle_id)
    wanted = []
    if handle is not None:
        for cidr, block in store.blocks(sorted(handle.blocks)).items():
            for o in blk.ordinals_of(block, handle_id, doc.get("ifname")):
                stamp = parse_time(((block.attribute(o) or {}).get("secondary") or {}).get("timestamp"))
                if stamp is not None and stamp < float(doc.get("recordedAt") or 0):
                    wanted.append(allocator.Assigned(block.address(o), cidr, o, block.seq_for_alloc.get(str(o))))
    return wanted


def replay_entry(store: Datastore, doc: dict[str, Any]) -> None:
    """Release what one pending entry names; safe to repeat."""
    handle_id = doc["handle"]
    allocations = doc.get("allocations")
    endpoint = doc.get("endpoint") or None
    if allocations is None:
        # No record of the exact allocations: resolve them now, conservatively.
        if endpoint is None and _container_has_endpoint(store, doc):
            log.info("pending release of %s: the container has an endpoint again; left alone", handle_id)
            return
        assigned = _resolve(store, doc)
    else:
        assigned = [allocator.Assigned(ipaddress.ip_address(a["address"]), a["block"], int(a["ordinal"]), a.get("sequence")) for a in allocations]
    if endpoint:
        _delete_endpoint(store, endpoint)  # first: an endpoint never names an address that is free
    if assigned:
        allocator.release_exact(store, handle_id, assigned)


def _delete_endpoint(store: Datastore, endpoint: dict[str, Any]) -> None:
    """Delete the recorded endpoint while it still has the recorded uid (a newer sandbox's endpoint
    of the same name is kept), as a compare-and-swap; an endpoint changed meanwhile is read again.
    `Conflict` (the entry stays for the next replay) when it keeps changing."""

    def step(attempt: int) -> None:
        ep = store.workload_endpoint(endpoint["namespace"], endpoint["name"])
        if ep is None or not endpoint.get("uid") or (ep.doc.get("metadata") or {}).get("uid") != endpoint.get("uid"):
            return
        if not store.commit(deletes=[ep]):
            raise Conflict()

    with_retries(f"deleting endpoint {endpoint['namespace']}/{endpoint['name']}", step)


def _container_has_endpoint(store: Datastore, doc: dict[str, Any]) -> bool:
    return any(endpoint_of(ep, doc.get("containerID"), doc.get("ifname")) for ep in store.workload_endpoints())


def replay_quietly(store: Datastore, journal: Journal) -> None:
    """Replay the pending releases of `journal`; call it BEFORE a verb's own datastore work, so that an ADD of an attachment with a pending release never gets
    the stale allocation back as "already held".

    Cheap when nothing is pending (one scandir). etcd being unreachable is raised (the verb could
    not work either); any other failure is logged and left for the next invocation.
    """
    try:
        if journal.pending():
            replay(store, journal)
    except DatastoreUnavailable:
        raise
    except Exception:  # noqa: BLE001 - the journal is retried by the next invocation
        log.exception("replaying the release journal failed; the next invocation tries again")
