"""What this node's encapsulation dataplane should hold, planned from a `ClusterView` as Felix's
VXLAN and IPIP managers plan it (Calico v3.30), with no kernel access:

- a VXLAN device per family whose pools use VXLAN, once this node has its tunnel address:
  `vxlan.calico` (IPv4) / `vxlan-v6.calico` (IPv6), VNI and port from FelixConfiguration, the
  node address as source and its interface as parent, the MAC the Node names or the one Calico
  derives, MTU from FelixConfiguration or the parent's minus the encapsulation's overhead;
- per remote node with a tunnel address (a VTEP): a permanent neighbour entry (tunnel address ->
  its MAC) and an FDB entry (its MAC -> its node address);
- per remote block of an encapsulated pool: a route via the remote tunnel address on the VXLAN
  device (onlink), or via the remote node address on `tunl0` for IPIP; CrossSubnet pools route
  natively (via the remote node address on this node's uplink, onlink) when the remote node
  address is inside this node's own subnet; addresses borrowed from a block by another node get
  a /32 (/128) the same way, towards the node that holds them; this node's own blocks get a
  blackhole, so an unused address of them never leaves the node;
- the pod MTU: the smallest MTU among the encapsulations in use, else the host's (Felix writes it
  whatever is in use, so a cluster that stops using VXLAN gives its new pods the full MTU again).

Pure: standard library, `node.cluster_view`, and the device names of `dataplane.tunnels`.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from calico_cni.dataplane.tunnels import IPIP_DEVICE, VXLAN_DEVICE
from calico_cni.node.cluster_view import ClusterView, IPAddress, IPNetwork, NodeInfo, Pool

# Encapsulation overheads (Felix): VXLAN over IPv4 50 bytes, over IPv6 70; IPIP 20.
VXLAN_OVERHEAD = {4: 50, 6: 70}
IPIP_OVERHEAD = 20


def vtep_mac(nodename: str, family: int) -> str:
    """The MAC Calico derives for a node's VTEP: 0x66 (locally administered, unicast), then the
    first five bytes of SHA-1 of the node name (of `<name>-v6` for IPv6)."""
    digest = hashlib.sha1((nodename if family == 4 else f"{nodename}-v6").encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x66, *digest[:5]))


@dataclass(frozen=True)
class Uplink:
    """The interface holding this node's address of one family: the tunnels' parent."""

    index: int
    name: str


@dataclass(frozen=True)
class VxlanPlan:
    """The VXLAN device of one family."""

    family: int
    name: str
    vni: int
    port: int
    local: IPAddress
    parent: Uplink
    mac: str
    mtu: int
    address: IPAddress  # the tunnel address (/32 or /128 on the device)


@dataclass(frozen=True)
class Vtep:
    """A remote node's tunnel endpoint of one family."""

    node: str
    family: int
    tunnel_address: IPAddress
    mac: str
    node_address: IPAddress


@dataclass(frozen=True)
class PlannedRoute:
    """One route: `device` None with `blackhole`; `gateway` None for a device route."""

    dst: IPNetwork
    device: str | None
    gateway: IPAddress | None = None
    onlink: bool = False
    blackhole: bool = False

    def __str__(self) -> str:
        if self.blackhole:
            return f"blackhole {self.dst}"
        via = f" via {self.gateway}" if self.gateway else ""
        return f"{self.dst}{via} dev {self.device}{' onlink' if self.onlink else ''}"


@dataclass
class Plan:
    """Everything the encapsulation controller makes true, and what it cannot."""

    vxlan: dict[int, VxlanPlan] = field(default_factory=dict)
    vteps: list[Vtep] = field(default_factory=list)
    routes: list[PlannedRoute] = field(default_factory=list)
    # The families whose pools use VXLAN (a device of a family in use is kept while it cannot be
    # planned, e.g. waiting for the tunnel address: Felix keeps it and retries).
    vxlan_in_use: set[int] = field(default_factory=set)
    # tunl0: wanted (its MTU and address) when an IPIP pool exists and this node has its address.
    ipip: tuple[int, ipaddress.IPv4Address] | None = None
    ipip_pools: tuple[str, ...] = ()
    pod_mtu: int | None = None  # None: no Node resource yet
    problems: list[str] = field(default_factory=list)

    def routes_on(self, device: str) -> list[PlannedRoute]:
        """The planned routes through `device`."""
        return [r for r in self.routes if r.device == device]


def _mtu(configured: int | None, host_mtu: int, overhead: int) -> int:
    return configured if configured else host_mtu - overhead


def _vxlan_device(view: ClusterView, me: NodeInfo, family: int, uplinks: dict[int, Uplink], mtu: int, plan: Plan) -> VxlanPlan | None:
    address, tunnel = me.address(family), me.vxlan_address(family)
    if address is None:
        plan.problems.append(f"IPv{family} pools use VXLAN but node {me.name} has no IPv{family} address (set IP{'6' if family == 6 else ''} of calico-node); no {VXLAN_DEVICE[family]}")
        return None
    uplink = uplinks.get(family)
    if uplink is None:
        plan.problems.append(f"no interface holds node address {address.ip}; {VXLAN_DEVICE[family]} has no parent and is not created")
        return None
    if tunnel is None:
        plan.problems.append(f"waiting for node {me.name}'s IPv{family} VXLAN tunnel address (from a pool that allows Tunnel and selects the node); {VXLAN_DEVICE[family]} is not created yet")
        return None
    felix = view.felix
    return VxlanPlan(
        family=family,
        name=VXLAN_DEVICE[family],
        vni=felix.vxlan_vni,
        port=felix.vxlan_port,
        local=address.ip,
        parent=uplink,
        mac=me.vxlan_mac_override(family) or vtep_mac(me.name, family),
        mtu=mtu,
        address=tunnel,
    )


def _vteps(view: ClusterView, family: int) -> dict[str, Vtep]:
    out = {}
    for node in view.nodes.values():
        if node.name == view.nodename:
            continue
        address, tunnel = node.address(family), node.vxlan_address(family)
        if address is None or tunnel is None:
            continue
        mac = node.vxlan_mac_override(family) or vtep_mac(node.name, family)
        out[node.name] = Vtep(node.name, family, tunnel, mac, address.ip)
    return out


def _same_subnet(me: NodeInfo, node: NodeInfo | None, family: int) -> bool:
    mine, theirs = me.address(family), node.address(family) if node is not None else None
    return mine is not None and theirs is not None and theirs.ip in mine.network


def _route_to(
    dst: IPNetwork, pool: Pool, node_name: str, view: ClusterView, me: NodeInfo, plan: Plan, vteps: dict[str, Vtep], uplinks: dict[int, Uplink]
) -> PlannedRoute | None:
    """The route to `dst` (a block or an address) held by remote node `node_name`, or None."""
    family = dst.version
    node = view.nodes.get(node_name)
    if pool.cross_subnet and node is not None and _same_subnet(me, node, family) and family in uplinks:
        return PlannedRoute(dst, uplinks[family].name, node.address(family).ip, onlink=True)  # type: ignore[union-attr]
    if pool.encapsulation == "vxlan":
        vtep = vteps.get(node_name)
        if vtep is None or family not in plan.vxlan:
            return None
        if dst.prefixlen == dst.max_prefixlen and dst.network_address == vtep.tunnel_address:
            return PlannedRoute(dst, VXLAN_DEVICE[family])  # the VTEP's own address: the neighbour entry answers
        return PlannedRoute(dst, VXLAN_DEVICE[family], vtep.tunnel_address, onlink=True)
    if node is None or node.ipv4 is None or family != 4:
        return None
    return PlannedRoute(dst, IPIP_DEVICE, node.ipv4.ip, onlink=True)


def plan(view: ClusterView, uplinks: dict[int, Uplink], host_mtu: int) -> Plan:
    """The plan for `view`'s node; `uplinks`: the interface holding the node address, by family;
    `host_mtu`: the MTU of the node's network, the encapsulations' MTUs are derived from (Felix's
    rule)."""
    out = Plan()
    me = view.me
    if me is None:
        out.problems.append(f"node {view.nodename} has no Node resource yet; nothing is programmed")
        return out
    vteps_by_family: dict[int, dict[str, Vtep]] = {}
    mtus: list[int] = []
    # The pod MTU follows the encapsulations the pools enable, whether or not their devices exist
    # yet (Felix's rule): a pod made while the tunnel address is pending keeps its MTU for good.
    for family in (4, 6):
        if not view.encapsulated_pools("vxlan", family):
            continue
        out.vxlan_in_use.add(family)
        configured = view.felix.vxlan_mtu if family == 4 else view.felix.vxlan_mtu_v6
        mtus.append(_mtu(configured, host_mtu, VXLAN_OVERHEAD[family]))
        device = _vxlan_device(view, me, family, uplinks, mtus[-1], out)
        if device is not None:
            out.vxlan[family] = device
            vteps_by_family[family] = _vteps(view, family)
            out.vteps.extend(vteps_by_family[family][name] for name in sorted(vteps_by_family[family]))
    ipip_pools = view.encapsulated_pools("ipip", 4)
    if ipip_pools:
        out.ipip_pools = tuple(p.name for p in ipip_pools)
        mtus.append(_mtu(view.felix.ipip_mtu, host_mtu, IPIP_OVERHEAD))
        if me.ipip_v4 is not None and 4 in uplinks:
            out.ipip = (mtus[-1], me.ipip_v4)
    out.routes = _routes(view, me, out, vteps_by_family, uplinks)
    out.pod_mtu = min(mtus) if mtus else host_mtu
    return out


def _routes(view: ClusterView, me: NodeInfo, out: Plan, vteps: dict[int, dict[str, Vtep]], uplinks: dict[int, Uplink]) -> list[PlannedRoute]:
    routes: dict[IPNetwork, PlannedRoute] = {}
    for block in sorted(view.blocks, key=lambda b: (b.cidr.version, b.cidr)):
        pool = view.pool_of(block.cidr)
        if pool is None or pool.encapsulation is None:
            continue  # unencapsulated pools are BIRD's (or nobody's, with the vxlan backend)
        family = block.cidr.version
        if block.node == me.name:
            routes[block.cidr] = PlannedRoute(block.cidr, None, blackhole=True)
        elif block.node is not None:
            route = _route_to(block.cidr, pool, block.node, view, me, out, vteps.get(family, {}), uplinks)
            if route is not None:
                routes[block.cidr] = route
        for address, holder in block.addresses:
            if holder is None or holder == block.node or holder == me.name:
                continue  # the block's route covers it, or it is a local pod (the plugin's route)
            dst = ipaddress.ip_network(address)
            route = _route_to(dst, pool, holder, view, me, out, vteps.get(family, {}), uplinks)
            if route is not None:
                routes[dst] = route
    return [routes[dst] for dst in sorted(routes, key=lambda n: (n.version, n))]
