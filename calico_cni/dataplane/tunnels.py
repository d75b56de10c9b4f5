"""Tunnel devices calico-node programs itself: `vxlan.calico` / `vxlan-v6.calico` and `tunl0`, and
the permanent neighbour and FDB entries that point a VXLAN device at the other nodes' VTEPs.

Every function makes the kernel match what is wanted and returns the changes it made, in words,
for the caller to log (an empty list: nothing changed). Only devices of the expected kind are ever
changed or removed: a foreign link under one of these names is reported, never deleted (design
rule 26).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane import rtnl_tunnels
from calico_cni.dataplane.rtnl import IPAddress, IPInterface, Link, NetlinkError, Rtnl
from calico_cni.dataplane.rtnl_tunnels import AF_BRIDGE, VxlanInfo

# The devices' names, as Calico names them (defined here once; the rest of calico-node imports them).
VXLAN_DEVICE = {4: "vxlan.calico", 6: "vxlan-v6.calico"}
IPIP_DEVICE = "tunl0"


class TunnelError(DataplaneError):
    """A tunnel device that cannot be made as wanted (foreign link, port taken, no kernel module)."""


@dataclass(frozen=True)
class VxlanDevice:
    """A VXLAN device as calico-node wants it: learning off, no remote (peers come from the FDB)."""

    name: str
    vni: int
    port: int
    local: IPAddress  # the node's address: the source of encapsulated packets
    parent_index: int  # the link that address is on (0: none)
    mac: str
    mtu: int
    address: IPInterface | None  # the tunnel address, as /32 or /128 (None: no address)


def _differences(link: Link, have: VxlanInfo | None, want: VxlanDevice) -> list[str]:
    """What of a VXLAN device can only change by recreating it (Calico's rule), in words."""
    if have is None:  # a vxlan link whose data the kernel did not report: treat it as wrong
        return ["vxlan settings unknown"]
    out = []
    for what, old, new in (
        ("vni", have.vni, want.vni),
        ("port", have.port, want.port),
        ("local", have.local, want.local),
        ("parent", have.parent_index, want.parent_index),
        ("mac", link.mac, want.mac.lower()),
        ("learning", have.learning, False),
    ):
        if old != new:
            out.append(f"{what} {old} -> {new}")
    return out


def _name_taken(rtnl: Rtnl, want: VxlanDevice) -> TunnelError | None:
    """The error for a creation refused because a link named `want.name` appeared meanwhile (None
    when no link has the name now: then the port was the cause)."""
    link = rtnl.link(want.name)
    if link is None:
        return None
    return TunnelError(
        f"cannot create {want.name}: a {link.kind or 'plain'} link of that name (index {link.index}) appeared while "
        f"calico-node was creating it; is another program (a second calico-node?) managing it? The next pass "
        f"takes it over if it is a VXLAN device, else remove it (`ip link del {want.name}`)"
    )


def _port_conflict(rtnl: Rtnl, want: VxlanDevice, exc: NetlinkError) -> TunnelError:
    """The error for a device the kernel refused because another VXLAN device holds the port."""
    on_port = [(link, info) for link, info in rtnl_tunnels.vxlan_links(rtnl) if info.port == want.port and link.name != want.name]
    # The kernel refuses a second device with the same VNI and port: name those first.
    same_vni = [(link, info) for link, info in on_port if info.vni == want.vni]
    named = ", ".join(f"{link.name} (VNI {info.vni})" for link, info in same_vni or on_port) or "no VXLAN device found here"
    return TunnelError(
        f"cannot create {want.name} with VNI {want.vni} on UDP port {want.port}: another VXLAN device already uses "
        f"them: {named}; set FelixConfiguration vxlanPort/vxlanVNI to a free port and VNI, or remove that device "
        f"(kernel: {exc.strerror})"
    )


def ensure_vxlan(rtnl: Rtnl, want: VxlanDevice) -> list[str]:
    """Make the VXLAN device `want.name` exactly as wanted; returns the changes made.

    Created when missing; deleted and recreated when its VNI, port, source address, parent, MAC or
    learning differ; MTU and up state set in place; its global addresses made exactly
    {want.address} (IPv6 link-local addresses the kernel adds are left alone). Raises `TunnelError`
    when a foreign (non-VXLAN) link has the name (or takes it while the device is being created),
    or another VXLAN device holds the port.
    """
    changes: list[str] = []
    link, have = rtnl_tunnels.vxlan_link(rtnl, want.name) or (None, None)
    if link is not None and link.kind != "vxlan":
        raise TunnelError(
            f"a {link.kind or 'plain'} link named {want.name} exists (index {link.index}) and it is not calico-node's "
            f"VXLAN device: remove or rename it (`ip link del {want.name}`) so VXLAN can be programmed"
        )
    if link is not None and (diff := _differences(link, have, want)):
        rtnl.delete_link(link.index)
        changes.append(f"deleted {want.name} to recreate it ({', '.join(diff)})")
        link = None
    if link is None:
        try:
            rtnl_tunnels.add_vxlan(rtnl, want.name, want.vni, want.port, want.local, want.parent_index, want.mac, want.mtu)
        except NetlinkError as exc:
            if exc.errno == errno.EEXIST and (taken := _name_taken(rtnl, want)) is not None:
                raise taken from None  # EEXIST is also the answer to a name taken since the check above
            if exc.errno in (errno.EEXIST, errno.EADDRINUSE):
                raise _port_conflict(rtnl, want, exc) from None
            raise TunnelError(f"cannot create {want.name}: {exc.strerror}") from None
        link = rtnl.link(want.name)
        if link is None:
            raise TunnelError(f"{want.name} vanished right after it was created: is another program deleting it?")
        changes.append(f"created {want.name} (VNI {want.vni}, port {want.port}, local {want.local}, mac {want.mac})")
    if link.mtu != want.mtu:
        rtnl.set_link(link.index, mtu=want.mtu)
        changes.append(f"set {want.name} MTU {link.mtu} -> {want.mtu}")
    if not link.up:
        try:
            rtnl.set_link(link.index, up=True)
        except NetlinkError as exc:
            # The UDP socket is bound when the device comes up: a port held by another kind of
            # socket or VXLAN device (other flags) only fails here.
            if exc.errno in (errno.EEXIST, errno.EADDRINUSE):
                raise _port_conflict(rtnl, want, exc) from None
            raise
        changes.append(f"set {want.name} up")
    changes += _exact_address(rtnl, link, want.address)
    return changes


def _exact_address(rtnl: Rtnl, link: Link, want: IPInterface | None) -> list[str]:
    """Make `link`'s global addresses exactly {want} (IPv6 link-local ones are the kernel's)."""
    changes = []
    present = False
    for address in rtnl.addresses(link.index):
        if address.address.version == 6 and address.address.ip.is_link_local:
            continue
        if address.address == want:
            present = True
            continue
        if rtnl.delete_address(link.index, address.address):
            changes.append(f"removed address {address.address} from {link.name}")
    if want is not None and not present:
        rtnl.add_address(link.index, want, nodad=want.version == 6)
        changes.append(f"added address {want} to {link.name}")
    return changes


def remove_device(rtnl: Rtnl, name: str, kind: str = "vxlan") -> bool:
    """Delete the link `name` if it exists and is of `kind`; False when nothing was deleted (missing,
    or another kind's: not ours to delete)."""
    link = rtnl.link(name)
    if link is None or link.kind != kind:
        return False
    return rtnl.delete_link(link.index)


def ensure_ipip(rtnl: Rtnl, mtu: int, address: IPInterface | None) -> list[str]:
    """Make `tunl0` (kind ipip) up, with `mtu` and exactly `address`; returns the changes made.

    Raises `TunnelError` when the kernel has no ipip support, or a foreign link is named tunl0.
    """
    changes: list[str] = []
    link = rtnl.link(IPIP_DEVICE)
    if link is not None and link.kind != "ipip":
        raise TunnelError(f"a {link.kind or 'plain'} link named {IPIP_DEVICE} exists and is not an ipip device: remove it so IPIP can be programmed")
    if link is None:
        try:
            # Loading the ipip module creates tunl0 by itself; this only runs when it is absent.
            rtnl_tunnels.add_link_of_kind(rtnl, IPIP_DEVICE, "ipip", mtu)
        except NetlinkError as exc:
            if exc.errno == errno.EOPNOTSUPP:
                raise TunnelError("cannot create tunl0: the kernel has no ipip module; load it (`modprobe ipip`) or use vxlanMode instead of ipipMode") from None
            raise TunnelError(f"cannot create {IPIP_DEVICE}: {exc.strerror}") from None
        link = rtnl.link(IPIP_DEVICE)
        if link is None:
            raise TunnelError(f"{IPIP_DEVICE} vanished right after it was created")
        changes.append(f"created {IPIP_DEVICE}")
    if link.mtu != mtu:
        rtnl.set_link(link.index, mtu=mtu)
        changes.append(f"set {IPIP_DEVICE} MTU {link.mtu} -> {mtu}")
    if not link.up:
        rtnl.set_link(link.index, up=True)
        changes.append(f"set {IPIP_DEVICE} up")
    changes += _exact_address(rtnl, link, address)
    return changes


# --------------------------------------------------------------------------------------------
# Neighbour and FDB entries of a VXLAN device


def permanent_neighbours(rtnl: Rtnl, index: int, version: int) -> dict[IPAddress, str]:
    """The permanent ARP (4) or ND (6) entries of a link: remote tunnel address -> VTEP MAC."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    return {n.ip: n.mac for n in rtnl_tunnels.neighbours(rtnl, index, family) if n.permanent and n.ip is not None}


def fdb_entries(rtnl: Rtnl, index: int) -> set[tuple[str, IPAddress]]:
    """The permanent FDB entries of a VXLAN device that name a remote: (VTEP MAC, node address)
    pairs (a MAC may have several remotes, hence pairs rather than a mapping)."""
    return {(n.mac, n.ip) for n in rtnl_tunnels.neighbours(rtnl, index, AF_BRIDGE) if n.permanent and n.ip is not None}


def sync_vteps(rtnl: Rtnl, link: Link, version: int, want: dict[IPAddress, tuple[str, IPAddress]]) -> list[str]:
    """Make a VXLAN device's permanent neighbour and FDB entries exactly `want`: remote tunnel
    address -> (its VTEP MAC, the remote node's address). Returns the changes made.

    Every permanent entry on the device is the daemon's (nobody else programs calico's devices), so
    the ones not wanted are removed.
    """
    changes: list[str] = []
    wanted_fdb = {(mac.lower(), node) for mac, node in want.values()}
    for mac, node in fdb_entries(rtnl, link.index) - wanted_fdb:
        if rtnl_tunnels.delete_fdb(rtnl, link.index, mac, node):
            changes.append(f"removed fdb {mac} dst {node} from {link.name}")
    have_fdb = fdb_entries(rtnl, link.index)
    for mac, node in sorted(wanted_fdb - have_fdb, key=str):
        rtnl_tunnels.set_fdb(rtnl, link.index, mac, node)
        changes.append(f"set fdb {mac} dst {node} on {link.name}")
    neighbours = permanent_neighbours(rtnl, link.index, version)
    for ip in neighbours.keys() - want.keys():
        if rtnl_tunnels.delete_neighbour(rtnl, link.index, ip):
            changes.append(f"removed neighbour {ip} from {link.name}")
    for ip, (mac, _node) in sorted(want.items(), key=lambda item: str(item[0])):
        if neighbours.get(ip) != mac.lower():
            rtnl_tunnels.set_neighbour(rtnl, link.index, ip, mac)
            changes.append(f"set neighbour {ip} lladdr {mac} on {link.name}")
    return changes
