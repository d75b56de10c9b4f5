"""Addresses and routes of a workload: the container's /32 and /128 with routes via the host,
the node's routes to the container, and the host veth's IPv6 link-local, read back from the kernel
rather than assumed because the container's IPv6 default route must name the address it really has."""

from __future__ import annotations

import errno
import ipaddress
import time
from typing import Sequence

from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane import sysctl
from calico_cni.dataplane.netns import Netns
from calico_cni.dataplane.rtnl import DAEMON_PROTOCOLS, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, IPAddress, IPInterface, IPNetwork, Link, NetlinkError, Rtnl, mac_bytes

GATEWAY_V4 = ipaddress.IPv4Address("169.254.1.1")
GATEWAY_V4_NET = ipaddress.IPv4Network("169.254.1.1/32")
DEFAULT = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
LINK_LOCAL_WAIT = 2.0
# Metric base of the routes of a container's second (third...) interface: above IPv6's default 1024.
SECONDARY_METRIC = 2048


def host_route(address: IPInterface) -> IPNetwork:
    """The /32 or /128 route of an address."""
    return ipaddress.ip_network(address.ip)


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """The link-local address addr_gen_mode 0 derives from a MAC."""
    b = mac_bytes(mac)
    iid = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + iid)


# --------------------------------------------------------------------------------------------
# Container side


def configure_container_v4(rtnl: Rtnl, link: Link, addresses: Sequence[IPInterface], routes: Sequence[IPNetwork]) -> None:
    """The /32 addresses, `169.254.1.1 dev <if> scope link`, then the default (and any IPAM)
    routes via 169.254.1.1, which the host end answers by proxy ARP."""
    for address in addresses:
        rtnl.add_address(link.index, address)
    add_container_route(rtnl, link, GATEWAY_V4_NET, None, RT_SCOPE_LINK)
    for dst in with_default(routes, 4):
        add_container_route(rtnl, link, dst, GATEWAY_V4)


def configure_container_v6(rtnl: Rtnl, link: Link, addresses: Sequence[IPInterface], routes: Sequence[IPNetwork], gateway: IPAddress) -> None:
    """The /128 addresses (no DAD), then the default (and any IPAM) routes via the host's link-local."""
    for address in addresses:
        rtnl.add_address(link.index, address, nodad=True)
    for dst in with_default(routes, 6):
        add_container_route(rtnl, link, dst, gateway)


def add_container_route(rtnl: Rtnl, link: Link, dst: IPNetwork, gateway: IPAddress | None, scope: int = RT_SCOPE_UNIVERSE) -> None:
    """Add a container route with the kernel's default metric; when another interface of the same
    container (a second attachment: another CNI_IFNAME on the same network) already has that route,
    add this interface's with a metric of its own, so the first interface's route stays preferred."""
    try:
        rtnl.add_route(dst, link.index, gateway, scope)
    except NetlinkError as exc:
        if exc.errno != errno.EEXIST:
            raise
        rtnl.add_route(dst, link.index, gateway, scope, priority=SECONDARY_METRIC + link.index)


def with_default(routes: Sequence[IPNetwork], version: int) -> list[IPNetwork]:
    """The container routes of one IP version: the default route first, then the IPAM routes of that version."""
    out = [DEFAULT[version]]
    out += [r for r in routes if r.version == version and r != DEFAULT[version]]
    return out


# --------------------------------------------------------------------------------------------
# Host side


def route_owner(rtnl: Rtnl, route) -> str:
    """Where a route leads, for a message: "dev <name>", or its type when it has no device ("a blackhole route")."""
    if route.oif:
        link = rtnl.link(index=route.oif)
        return f"dev {link.name if link else route.oif}"
    return f"a {route.type_name} route"


def add_host_routes(rtnl: Rtnl, link: Link, addresses: Sequence[IPInterface]) -> None:
    """`<ip>/32 dev <host veth>` (and /128) for each address. A route to the same address on any
    other interface is never replaced (the ADD fails naming it), except one of the node daemon's
    (`proto bird`, or its own protocol): a borrowed /32 learned from a peer that has not yet been
    withdrawn must not refuse the ADD that reuses the address here, and this node's route to its
    own pod is the right one."""
    by_version: dict[int, list] = {}
    for address in addresses:
        dst = host_route(address)
        if dst.version not in by_version:
            by_version[dst.version] = rtnl.routes(dst.version)
        routes = [r for r in by_version[dst.version] if r.dst == dst]
        for route in routes:
            if route.oif != link.index and route.protocol not in DAEMON_PROTOCOLS:
                _conflict(rtnl, dst, route, link)
        if any(r.oif == link.index and r.protocol not in DAEMON_PROTOCOLS for r in routes):
            continue
        scope = RT_SCOPE_LINK if dst.version == 4 else RT_SCOPE_UNIVERSE
        try:
            rtnl.add_route(dst, link.index, scope=scope, replace=any(r.protocol in DAEMON_PROTOCOLS for r in routes))
        except NetlinkError as exc:
            if exc.errno != errno.EEXIST:
                raise
            # Someone added a route to dst since we listed: BIRD (replace it) or a workload (refuse).
            for route in rtnl.routes(dst.version):
                if route.dst == dst and route.oif != link.index and route.protocol not in DAEMON_PROTOCOLS:
                    _conflict(rtnl, dst, route, link)
            rtnl.add_route(dst, link.index, scope=scope, replace=True)


def _conflict(rtnl: Rtnl, dst: IPNetwork, route, link: Link):
    raise DataplaneError(
        f"the node already has a route to {dst} via {route_owner(rtnl, route)}",
        f"refusing to take it over for {link.name}: another workload may hold this address "
        "(check for a leaked or duplicate allocation with calicoctl ipam check)",
    )


def host_link_local(host: Netns, link: Link, wait: float = LINK_LOCAL_WAIT) -> ipaddress.IPv6Address:
    """The host veth's actual IPv6 link-local address, read back after link-up.

    With addr_gen_mode 0 it must be the EUI-64 address of the MAC; if it is missing or wrong the
    link is toggled once and read again.
    """
    rtnl = host.rtnl()
    mode = host.run(sysctl.read, f"net/ipv6/conf/{link.name}/addr_gen_mode")
    expected = eui64_link_local(link.mac) if mode == "0" else None
    found: list[ipaddress.IPv6Address] = []
    for attempt in range(2):
        if attempt:
            rtnl.set_link(link.index, up=False)
            rtnl.set_link(link.index, up=True)
        deadline = time.monotonic() + wait
        delay = 0.0005
        while True:
            found = [
                a.address.ip
                for a in rtnl.addresses(link.index, 6)
                if a.address.ip.is_link_local and not a.tentative
            ]
            if found and (expected is None or expected in found):
                return expected or found[0]
            if found or time.monotonic() > deadline:
                break  # wrong address, or none in time: toggle
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    what = f"has {', '.join(map(str, found))} instead of {expected}" if found else "has no IPv6 link-local address"
    raise DataplaneError(
        f"host interface {link.name} {what}",
        f"addr_gen_mode is {mode}; the container's IPv6 default route needs the host end's link-local address",
    )
