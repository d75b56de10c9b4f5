"""A deleted node's IPAM records (what `calicoctl delete node` takes apart, as Calico's node deletion
does): which allocations are the node's, and the release of its block affinities. Addresses are
released through `repair.release_allocations` (keyed by handle, block, ordinal and sequence number,
so an address released and reused meanwhile is never freed); each affinity release is one
compare-and-swap commit. Nothing here prints: callers report what the results say.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore, IpamSnapshot
from calico_cni.model import keys
from calico_cni.model.records import CorruptRecord
from calico_ipam import blocks as blk
from calico_ipam import inventory, repair
from calico_ipam.inventory import Allocation

# The handles Calico's node agent allocates its tunnel addresses under (`<prefix><node>`).
TUNNEL_HANDLE_PREFIXES = ("ipip-tunnel-addr-", "vxlan-tunnel-addr-", "vxlan-v6-tunnel-addr-", "wireguard-tunnel-addr-", "wireguard-v6-tunnel-addr-")


def tunnel_handles(node: str) -> set[str]:
    """The handles of the node's tunnel addresses."""
    return {prefix + node for prefix in TUNNEL_HANDLE_PREFIXES}


def endpoints_of(snapshot: IpamSnapshot, node: str) -> list[str]:
    """The "namespace/name" of each of the node's workload endpoints (spec.node), sorted."""
    return sorted(f"{w.namespace}/{w.name}" for w in snapshot.endpoints if w.node == node)


@dataclass(frozen=True)
class NodeAllocation:
    """An allocation of the node and why it is the node's: `endpoints` (of this node) claim it, or
    `tunnel` (its handle or the Node's spec names it a tunnel address), else its attributes record
    the node."""

    allocation: Allocation
    endpoints: tuple[str, ...] = ()
    tunnel: bool = False


@dataclass(frozen=True)
class Foreign:
    """An address that looks like the node's but that another node's records also claim: left
    alone, `reason` says why."""

    allocation: Allocation
    reason: str


def node_allocations(snapshot: IpamSnapshot, node: str) -> tuple[list[NodeAllocation], list[Foreign]]:
    """The allocations that are the node's: those recorded for it (attributes `node`), those under
    its tunnel handles or at a tunnel address its Node records, and those its workload endpoints
    claim (spec.ipNetworks) that no other node's records claim. Returns (the node's, the addresses
    its endpoints claim that are another node's)."""
    mine_eps = set(endpoints_of(snapshot, node))
    spec_tunnels = {a for a, n in inventory.tunnel_addresses(snapshot).items() if n == node}
    handles = tunnel_handles(node)
    mine: list[NodeAllocation] = []
    foreign: list[Foreign] = []
    for a in inventory.allocations(snapshot):
        ours = tuple(e for e in a.endpoints if e in mine_eps)
        others = [e for e in a.endpoints if e not in mine_eps]
        recorded_here = a.node == node
        tunnel = a.handle in handles or (a.address in spec_tunnels and a.node in (None, node))
        if not (recorded_here or tunnel or (ours and a.node is None)):
            if ours:
                foreign.append(Foreign(a, f"workload endpoint {', '.join(ours)} of node {node} claims it, but it is allocated to node {a.node}"))
            continue
        if others:
            # Another node's endpoint uses the address too: whoever is right, freeing it could
            # hand a live pod's address out again.
            foreign.append(Foreign(a, f"it is recorded as node {node}'s, but workload endpoint {', '.join(others)} of another node claims it too"))
            continue
        mine.append(NodeAllocation(a, ours, tunnel))
    return mine, foreign


def release(store: Datastore, allocations: list[NodeAllocation]) -> list[NodeAllocation]:
    """Release these allocations (`repair.release_allocations`); returns those actually released
    (one released and reused since the snapshot is left alone and not returned)."""
    done = {(r.block, r.ordinal) for r in repair.release_allocations(store, [n.allocation for n in allocations])}
    return [n for n in allocations if (n.allocation.block, n.allocation.ordinal) in done]


def affine_blocks(snapshot: IpamSnapshot, node: str) -> list[str]:
    """CIDRs of the blocks the node has an affinity record for or that name it as their affinity."""
    cidrs = {a.cidr for a in snapshot.affinities if a.node == node} | {b.cidr for b in snapshot.blocks if b.affine_node == node}
    return sorted(cidrs, key=lambda c: (keys.family_of(c), ipaddress.ip_network(c)))


@dataclass(frozen=True)
class AffinityReleased:
    """What releasing the node's affinity to one block did: `outcome` is "deleted" (the block was
    empty and is gone), "kept" (the block still holds addresses, `held` in use and `cooling` cooling
    down, and is now affine to no node), "stray" (only an affinity record, to a block that is
    missing or affine to `owner`, was deleted), "corrupt" (the block does not parse: nothing done)
    or "none" (nothing was left to do)."""

    cidr: str
    outcome: str
    held: int = 0
    cooling: int = 0
    owner: str | None = None


def release_affinity(store: Datastore, node: str, cidr: str) -> AffinityReleased:
    """Release the node's affinity to the block `cidr` as Calico's release of host affinities does:
    an empty block is deleted, a block still holding addresses loses its affinity and stays; the
    affinity record goes in the same commit. An affinity to a block that is missing or affine to
    another node is deleted alone (`repair.delete_stray_affinity`); one to a block that does not
    parse is left for a person ("corrupt")."""

    def step(attempt: int) -> AffinityReleased:
        try:
            block = store.block(cidr)
        except CorruptRecord:
            return AffinityReleased(cidr, "corrupt")
        affinity = next((a for a in store.affinities(node, keys.family_of(cidr)) if a.cidr == cidr), None)
        if block is None or block.affine_node != node:
            owner = block.affine_node if block is not None else None
            return AffinityReleased(cidr, "stray" if repair.delete_stray_affinity(store, node, cidr) else "none", owner=owner)
        blk.cleanup(block, store.ipam_config().ip_cooldown_seconds, time.time())
        deletes = [affinity] if affinity is not None else []
        if blk.is_empty(block):
            if not store.commit(deletes=[block, *deletes]):
                raise Conflict()
            return AffinityReleased(cidr, "deleted")
        block.affinity = None
        if not store.commit(puts=[block], deletes=deletes):
            raise Conflict()
        held = blk.in_use(block)
        return AffinityReleased(cidr, "kept", held=held, cooling=inventory.cooling(block))

    return with_retries(f"releasing the affinity of {node} to block {cidr}", step)
