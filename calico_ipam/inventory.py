"""Who holds what, derived from an `IpamSnapshot`: pure functions shared by show, check, release
and pool deletion."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterator

from calico_cni.model.records import Block, IPAddress, IPPool, parse_time
from calico_cni.datastore.store import IpamSnapshot


@dataclass
class Allocation:
    """One allocated address: which handle holds it, where, and since when."""

    address: IPAddress
    handle: str
    block: str
    ordinal: int
    sequence: int | None
    attributes: dict[str, Any]
    endpoints: list[str] = field(default_factory=list)

    @property
    def secondary(self) -> dict[str, Any]:
        return self.attributes.get("secondary") or {}

    @property
    def node(self) -> str | None:
        return self.secondary.get("node")

    @property
    def timestamp(self) -> str | None:
        return self.secondary.get("timestamp")

    def age(self, now: float) -> float | None:
        """Seconds since the allocation (None when it records no readable timestamp)."""
        t = parse_time(self.timestamp)
        return None if t is None else now - t

    @property
    def key(self) -> tuple[str, str, int, int | None]:
        """What identifies this allocation even after its address is released and reused."""
        return (self.handle, self.block, self.ordinal, self.sequence)


def block_allocations(block: Block) -> Iterator[Allocation]:
    """The ordinals of a block held by a handle (cooling-down ones are not allocations)."""
    for o in range(block.size):
        attr = block.attribute(o)
        if attr is not None and attr.get("handle_id") is not None:
            yield Allocation(block.address(o), attr["handle_id"], block.cidr, o, block.seq_for_alloc.get(str(o)), attr)


def cooling(block: Block) -> int:
    """Ordinals released but not yet free again."""
    return sum(1 for o in range(block.size) if (attr := block.attribute(o)) is not None and "handle_id" not in attr)


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


def allocations(snapshot: IpamSnapshot) -> list[Allocation]:
    """Every allocation of every block, with the workload endpoints that claim its address."""
    used = endpoint_addresses(snapshot)
    out = []
    for block in sorted(snapshot.blocks, key=lambda b: (b.network.version, b.network)):
        for a in block_allocations(block):
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


def in_pool(cidr: str, pool: IPPool) -> bool:
    """Whether a block, address range or single address lies in the pool."""
    net = ipaddress.ip_network(cidr)
    return net.version == pool.cidr.version and net.subnet_of(pool.cidr)


def pool_of(pools: list[IPPool], cidr: str) -> IPPool | None:
    """The pool a block, address range or single address lies in."""
    return next((p for p in pools if in_pool(cidr, p)), None)


def block_containing(snapshot: IpamSnapshot, address: IPAddress) -> Block | None:
    return next((b for b in snapshot.blocks if b.network.version == address.version and address in b.network), None)
