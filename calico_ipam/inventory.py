"""Who holds what, derived from an `IpamSnapshot`: pure functions shared by show, check, release
and pool deletion (`calicoctl ipam show` prints `utilisation`, `borrowed` and `address_info`)."""

from __future__ import annotations

import ipaddress
from typing import Any, Iterator

from calico_cni.datastore.store import IpamSnapshot
from calico_cni.model.records import Block, IPAddress
from calico_ipam import blocks as blk
# `Allocation` lives with the operations that change one (allocator), below this floor; named here
# too, where show, check and release have always found it.
from calico_ipam.allocator import Allocation
from calico_ipam.pools import pool_of


def block_allocations(block: Block) -> Iterator[Allocation]:
    """The ordinals of a block held by a handle (cooling-down ones are not allocations; those
    without a handle are `unowned_allocations`)."""
    for o in blk.ordinals_in(block, blk.HELD):
        yield Allocation.of(block, o, blk.HELD)


def unowned_allocations(block: Block) -> Iterator[Allocation]:
    """The ordinals of a block allocated without a handle (`blocks.NO_HANDLE` and `blocks.BARE`):
    never leaks, never freed by cleanup or GC; an operator may release them by address."""
    for o in range(block.size):
        state = blk.state(block, o)
        if state in (blk.NO_HANDLE, blk.BARE):
            yield Allocation.of(block, o, state)


def cooling(block: Block) -> int:
    """Ordinals released but not yet free again."""
    return blk.cooling(block)


def endpoint_addresses(snapshot: IpamSnapshot) -> dict[IPAddress, list[str]]:
    """Each address a workload endpoint claims (spec.ipNetworks) -> "namespace/name" of those endpoints."""
    out: dict[IPAddress, list[str]] = {}
    for wep in snapshot.endpoints:
        for net in wep.ip_networks:
            try:
                address = ipaddress.ip_interface(str(net)).ip
            except ValueError:
                continue
            out.setdefault(address, []).append(f"{wep.namespace}/{wep.name}")
    return out


# Where Calico's nodes record the tunnel addresses they hold from IPAM (handles of kind
# "ipip-tunnel-addr-<node>" and the like have no workload endpoint).
_TUNNEL_FIELDS = (("bgp", "ipv4IPIPTunnelAddr"), ("ipv4VXLANTunnelAddr",), ("ipv6VXLANTunnelAddr",), ("wireguard", "interfaceIPv4Address"), ("wireguard", "interfaceIPv6Address"))


def tunnel_addresses(snapshot: IpamSnapshot) -> dict[IPAddress, str]:
    """Tunnel addresses recorded in Node resources -> the node's name."""
    out: dict[IPAddress, str] = {}
    for node in snapshot.nodes:
        for path in _TUNNEL_FIELDS:
            value: Any = node.doc.get("spec") or {}
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, str) and value:
                try:
                    out[ipaddress.ip_interface(value).ip] = node.name
                except ValueError:
                    pass
    return out


def allocations(snapshot: IpamSnapshot, unowned: bool = False) -> list[Allocation]:
    """Every allocation held by a handle of every block (with `unowned`, those without a handle
    instead), with the workload endpoints that claim its address."""
    used = endpoint_addresses(snapshot)
    walk = unowned_allocations if unowned else block_allocations
    out = []
    for block in sorted(snapshot.blocks, key=lambda b: (b.network.version, b.network)):
        for a in walk(block):
            a.endpoints = list(used.get(a.address, []))
            out.append(a)
    return out


def handle_counts(snapshot: IpamSnapshot) -> dict[str, dict[str, int]]:
    """handle -> {block: number of its addresses there}, counted from the blocks (the truth)."""
    out: dict[str, dict[str, int]] = {}
    for block in snapshot.blocks:
        for a in block_allocations(block):
            per = out.setdefault(a.handle, {})
            per[block.cidr] = per.get(block.cidr, 0) + 1
    return out


def block_containing(snapshot: IpamSnapshot, address: IPAddress) -> Block | None:
    """The block of the snapshot that holds `address` (None: no block does)."""
    return next((b for b in snapshot.blocks if b.network.version == address.version and address in b.network), None)


# ------------------------------------------------------------------------------------------------
# What `calicoctl ipam show` reports


def _usage(total: int, in_use: int, cooling: int) -> dict[str, Any]:
    free = total - in_use - cooling
    return {"total": total, "inUse": in_use, "cooling": cooling, "free": free}


def utilisation(snapshot: IpamSnapshot) -> list[dict[str, Any]]:
    """Per pool (and per block within it): total, in use, cooling down and free addresses. Blocks
    outside every pool (their pool was deleted) are grouped under a pool of None."""
    groups: dict[str | None, list] = {p.name: [] for p in snapshot.pools}
    for block in sorted(snapshot.blocks, key=lambda b: (b.network.version, b.network)):
        pool = pool_of(snapshot.pools, block.cidr)
        groups.setdefault(pool.name if pool else None, []).append(
            {"cidr": block.cidr, "affinity": block.affine_node, **_usage(block.size, blk.in_use(block), cooling(block))}
        )
    out = []
    for pool in snapshot.pools:
        blocks = groups[pool.name]
        out.append(
            {
                "name": pool.name,
                "cidr": str(pool.cidr),
                "disabled": pool.disabled,
                **_usage(pool.cidr.num_addresses, sum(b["inUse"] for b in blocks), sum(b["cooling"] for b in blocks)),
                "blocks": blocks,
            }
        )
    if groups.get(None):
        blocks = groups[None]
        out.append({"name": None, "cidr": None, "disabled": None, **_usage(sum(b["total"] for b in blocks), sum(b["inUse"] for b in blocks), sum(b["cooling"] for b in blocks)), "blocks": blocks})
    return out


def borrowed(snapshot: IpamSnapshot) -> list[dict[str, Any]]:
    """Allocations (with or without a handle) whose node is not the block's affine node."""
    blocks = {b.cidr: b for b in snapshot.blocks}
    out = []
    for a in allocations(snapshot) + allocations(snapshot, unowned=True):
        owner = blocks[a.block].affine_node
        if a.node != owner:
            out.append({"address": str(a.address), "node": a.node, "block": a.block, "blockOwner": owner, "handle": a.handle, "endpoints": a.endpoints})
    return out


def address_info(snapshot: IpamSnapshot, address) -> dict[str, Any]:
    """Whether an address is free, cooling down or in use, and by whom."""
    pool = pool_of(snapshot.pools, str(address))
    info: dict[str, Any] = {"address": str(address), "state": "free", "pool": pool.name if pool else None}
    block = block_containing(snapshot, address)
    if block is None:
        if pool is None:
            info["state"] = "not in any IP pool"
        return info
    ordinal = block.ordinal(address)
    info.update(block=block.cidr, blockAffinity=block.affine_node, ordinal=ordinal)
    state = blk.state(block, ordinal)
    if state == blk.FREE:
        info["state"] = "free"
    elif state == blk.RELEASED:
        info.update(state="cooling down", releasedAt=block.attributes[block.allocations[ordinal]].get("releasedAt"))
    elif state == blk.DANGLING:
        info.update(state="in use (owner unknown: its attribute entry is missing)", endpoints=endpoint_addresses(snapshot).get(address, []))
    else:
        a = Allocation.of(block, ordinal, state)
        info.update(
            state=UNOWNED_STATES.get(state, "in use"),
            handle=a.handle,
            attributes=a.secondary,
            sequence=a.sequence,
            endpoints=endpoint_addresses(snapshot).get(address, []),
        )
    return info


# How `address_info` and `ipam check` describe an allocation without a handle.
UNOWNED_STATES = {
    blk.NO_HANDLE: "in use (allocated without a handle)",
    blk.BARE: "in use (no handle and no attributes: probably a released address whose cooldown entry a Calico rewrite stripped)",
}
