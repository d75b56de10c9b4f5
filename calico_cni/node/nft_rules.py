"""The daemon's nftables tables, `ip calico` and `ip6 calico`, as ruleset text (pure).

What Felix programs with iptables and ipsets (v3.30 rules/nat.go, rules/static.go,
dataplane/linux/masq_mgr.go), in one table per family that is the daemon's alone (design rule 26:
portmap's and iptables-nft's rules live in `ip nat` / `ip filter` and are never touched):

- sets: `all-ipam-pools` (every pool of the family, disabled ones too), `masq-ipam-pools` (pools
  with natOutgoing), and, while VXLAN of the family is in use, `all-vxlan-net` (the other nodes'
  VTEP parent addresses: their node address, once they have a VXLAN tunnel address);
- `nat-postrouting` (hook postrouting, srcnat): jumps to `nat-outgoing`, which masquerades (or, for
  IPv4, SNATs to FelixConfiguration natOutgoingAddress) traffic from a natOutgoing pool to anything
  outside every pool; node addresses are not exempt, as in Felix. Then, per tunnel device in use
  with a tunnel address on this node, a packet leaving the device from a local address of this
  host that is not one of the device's own is masqueraded, so it leaves from the tunnel address
  and a remote node with strict rp_filter accepts it (workload sources are not local: untouched);
- `filter-input` (hook input): UDP to the VXLAN port of a local address is dropped unless it comes
  from `all-vxlan-net`;
- `filter-prerouting` (hook prerouting): UDP to the VXLAN port arriving from a pod interface
  (`cali*`) is dropped, so a pod injects encapsulated traffic neither into its own node nor into
  another;
- `raw-prerouting` and `raw-output` (hooks prerouting and output, priority raw): UDP to the VXLAN
  port is not tracked, while VXLAN of the family is in use (Felix's raw PREROUTING/OUTPUT NOTRACK:
  the kernel picks VXLAN source ports per flow, so the two directions never pair up and tracking
  would only fill the conntrack table with unreplied entries).

These are `Section`s of node/nft_tables.py's table model, beside the policy sections of
node/nft_policy.py. Everything is sorted: the same inputs give the same text.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from calico_cni.dataplane.tunnels import IPIP_DEVICE, VXLAN_DEVICE
from calico_cni.node.cluster_view import ClusterView, IPNetwork
from calico_cni.node.nft_tables import FAMILIES, Chain, NftSet, Section, Table, address_type

POD_INTERFACES = "cali*"  # Felix's interface prefix for workload interfaces

ALL_POOLS, MASQ_POOLS, VXLAN_SOURCES = "all-ipam-pools", "masq-ipam-pools", "all-vxlan-net"


def _cidrs(nets: Iterable[IPNetwork]) -> tuple[str, ...]:
    """CIDRs merged where they overlap or touch (nft refuses overlapping intervals in one set) and
    sorted."""
    return tuple(str(n) for n in ipaddress.collapse_addresses(sorted(set(nets))))  # type: ignore[type-var]


def vxlan_in_use(view: ClusterView, family: int) -> bool:
    """Whether VXLAN of `family` is in use on this node (a VXLAN pool of the family, as
    `ClusterView.encapsulated_pools` counts them)."""
    return bool(view.encapsulated_pools("vxlan", family))


def vxlan_sources(view: ClusterView, family: int) -> tuple[str, ...]:
    """The other nodes' VTEP parent addresses: node address of `family` of each node with a VXLAN
    tunnel address of that family (Felix's all-vxlan-net), sorted."""
    found = set()
    for node in view.nodes.values():
        address = node.address(family)
        if node.name != view.nodename and address is not None and node.vxlan_address(family) is not None:
            found.add(address.ip)
    return tuple(str(a) for a in sorted(found))


def tunnel_devices(view: ClusterView, family: int) -> list[str]:
    """The tunnel devices of `family` in use with a tunnel address on this node (Felix's list for
    the tunnel-source masquerade)."""
    me = view.me
    devices = []
    if family == 4 and view.encapsulated_pools("ipip", 4) and me is not None and me.ipip_v4 is not None:
        devices.append(IPIP_DEVICE)
    if vxlan_in_use(view, family) and me is not None and me.vxlan_address(family) is not None:
        devices.append(VXLAN_DEVICE[family])
    return devices


def nat_section(view: ClusterView, family: int) -> Section:
    """Pool sets, NAT outgoing and the tunnel-source masquerade."""
    _, match = address_type(family)
    pools = [p for p in view.pools if p.cidr.version == family]
    all_pools = NftSet(ALL_POOLS, _cidrs(p.cidr for p in pools), interval=True)
    masq_pools = NftSet(MASQ_POOLS, _cidrs(p.cidr for p in pools if p.nat_outgoing), interval=True)
    sets = (all_pools, masq_pools)
    chains = []
    if masq_pools.elements:
        address = view.felix.nat_outgoing_address if family == 4 else None
        action = f"snat to {address}" if address is not None else "masquerade"
        chains.append(Chain("nat-outgoing", None, (f"{match} saddr @{MASQ_POOLS} {match} daddr != @{ALL_POOLS} {action}",)))
    postrouting = [f"jump {c.name}" for c in chains]
    for device in tunnel_devices(view, family):
        # `fib saddr . oif type local`: the source is one of the outgoing device's own addresses;
        # `fib saddr type local`: it is an address of this host at all (pods' are not).
        postrouting.append(f'oifname "{device}" fib saddr . oif type != local fib saddr type local masquerade')
    if postrouting:
        chains.insert(0, Chain("nat-postrouting", "type nat hook postrouting priority srcnat; policy accept;", tuple(postrouting)))
    return Section(sets, tuple(chains))


def vxlan_section(view: ClusterView, family: int) -> Section:
    """The VXLAN input filter, the pod VXLAN drop and the VXLAN NOTRACK, while VXLAN of `family`
    is in use."""
    if not vxlan_in_use(view, family):
        return Section()
    _, match = address_type(family)
    port = view.felix.vxlan_port
    sources = NftSet(VXLAN_SOURCES, vxlan_sources(view, family), interval=False)
    input_chain = Chain(
        "filter-input",
        "type filter hook input priority filter; policy accept;",
        (f"udp dport {port} {match} saddr != @{VXLAN_SOURCES} fib daddr type local counter drop",),
    )
    prerouting = Chain(
        "filter-prerouting",
        "type filter hook prerouting priority filter; policy accept;",
        (f'iifname "{POD_INTERFACES}" udp dport {port} counter drop',),
    )
    notrack = tuple(
        Chain(f"raw-{hook}", f"type filter hook {hook} priority raw; policy accept;", (f"udp dport {port} notrack",)) for hook in ("prerouting", "output")
    )
    return Section((sources,), (input_chain, prerouting, *notrack))


def tables(view: ClusterView) -> dict[int, Table]:
    """This node's table per family (4, 6), from `view`."""
    return {family: Table(FAMILIES[family], (nat_section(view, family), vxlan_section(view, family))) for family in FAMILIES}
