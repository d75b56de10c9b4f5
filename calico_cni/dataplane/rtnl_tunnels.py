"""rtnetlink messages only calico-node sends: VXLAN devices (created, and their settings read),
links of a kind that needs no settings (ipip's tunl0), and neighbour (ARP/ND) and FDB entries.

They are kept out of `rtnl` because every CNI plugin exec imports that module and a pod's setup
never needs these: each dataclass and codec here would be paid for by every exec. Everything is
built on `Rtnl.request` and rtnl's attribute helpers; the functions take the `Rtnl` to use (a socket
acts in the namespace it was created in).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass

# rtnl's private codec helpers are this package's own: shared here rather than copied.
from calico_cni.dataplane.rtnl import (
    _IFINFOMSG,
    _U32,
    IFLA_ADDRESS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MTU,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    RTM_GETLINK,
    RTM_NEWLINK,
    IPAddress,
    Link,
    NetlinkError,
    Rtnl,
    _family,
    _mac_text,
    _str,
    _text,
    _u32,
    attr,
    decode_link,
    mac_bytes,
    parse_attrs,
)

RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

# VXLAN link data (IFLA_INFO_DATA when IFLA_INFO_KIND is "vxlan"; include/uapi/linux/if_link.h).
IFLA_VXLAN_ID = 1
IFLA_VXLAN_LINK = 3
IFLA_VXLAN_LOCAL = 4
IFLA_VXLAN_LEARNING = 7
IFLA_VXLAN_PORT = 15  # big-endian, unlike every other integer here
IFLA_VXLAN_LOCAL6 = 17

# Neighbour (ARP/ND) and FDB entries.
AF_BRIDGE = 7  # the family of FDB entries (`bridge fdb`)
NDA_DST = 1
NDA_LLADDR = 2
NUD_PERMANENT = 0x80
NTF_SELF = 0x02  # an FDB entry of the device itself (a vxlan's), not of a bridge it is enslaved to

_NDMSG = struct.Struct("=BxxxiHBB")
_BE16 = struct.Struct(">H")


@dataclass(frozen=True)
class VxlanInfo:
    """What the kernel reports of a VXLAN device (`ip -d link show`)."""

    vni: int
    port: int
    local: IPAddress | None
    parent_index: int
    learning: bool


@dataclass(frozen=True)
class Neighbour:
    """A neighbour (ARP/ND) entry, or for family AF_BRIDGE an FDB entry: then `ip` is its NDA_DST,
    the remote VTEP a VXLAN device sends that MAC's frames to (None when the entry has none)."""

    index: int
    ip: IPAddress | None
    mac: str
    state: int
    flags: int
    family: int

    @property
    def permanent(self) -> bool:
        """Whether the entry is permanent (set by someone, never aged out or probed)."""
        return bool(self.state & NUD_PERMANENT)


# --------------------------------------------------------------------------------------------
# Codecs


def decode_vxlan(data: bytes) -> VxlanInfo:
    """The VXLAN settings in a link's IFLA_INFO_DATA (absent attributes: the kernel's zero values)."""
    attrs = parse_attrs(data)
    local = attrs.get(IFLA_VXLAN_LOCAL) or attrs.get(IFLA_VXLAN_LOCAL6)
    return VxlanInfo(
        vni=_U32.unpack(attrs[IFLA_VXLAN_ID])[0] if IFLA_VXLAN_ID in attrs else 0,
        port=_BE16.unpack(attrs[IFLA_VXLAN_PORT])[0] if IFLA_VXLAN_PORT in attrs else 0,
        local=ipaddress.ip_address(local) if local else None,
        parent_index=_U32.unpack(attrs[IFLA_VXLAN_LINK])[0] if IFLA_VXLAN_LINK in attrs else 0,
        learning=bool(attrs[IFLA_VXLAN_LEARNING][0]) if IFLA_VXLAN_LEARNING in attrs else False,
    )


def encode_vxlan(vni: int, port: int, local: IPAddress | None, parent_index: int, learning: bool = False) -> bytes:
    """The IFLA_INFO_DATA of a VXLAN device (no remote or group: every peer comes from the FDB)."""
    data = attr(IFLA_VXLAN_ID, _u32(vni)) + attr(IFLA_VXLAN_PORT, _BE16.pack(port))
    data += attr(IFLA_VXLAN_LEARNING, bytes([1 if learning else 0]))
    if parent_index:
        data += attr(IFLA_VXLAN_LINK, _u32(parent_index))
    if local is not None:
        data += attr(IFLA_VXLAN_LOCAL if local.version == 4 else IFLA_VXLAN_LOCAL6, local.packed)
    return data


def link_vxlan(payload: bytes) -> VxlanInfo | None:
    """The VXLAN settings of a link from the payload of an RTM_NEWLINK message; None when the link
    is not a vxlan one or the kernel reported no settings."""
    attrs = parse_attrs(payload, _IFINFOMSG.size)
    if IFLA_LINKINFO not in attrs:
        return None
    info = parse_attrs(attrs[IFLA_LINKINFO])
    if _text(info.get(IFLA_INFO_KIND)) != "vxlan" or IFLA_INFO_DATA not in info:
        return None
    return decode_vxlan(info[IFLA_INFO_DATA])


def decode_neighbour(payload: bytes) -> Neighbour:
    """A neighbour or FDB entry from the payload of an RTM_NEWNEIGH message."""
    family, index, state, flags, _type = _NDMSG.unpack_from(payload)
    attrs = parse_attrs(payload, _NDMSG.size)
    dst = attrs.get(NDA_DST)
    return Neighbour(
        index=index,
        ip=ipaddress.ip_address(dst) if dst and len(dst) in (4, 16) else None,
        mac=_mac_text(attrs.get(NDA_LLADDR)),
        state=state,
        flags=flags,
        family=family,
    )


def encode_neighbour(family: int, index: int, ip: IPAddress | None, mac: str | None, state: int, flags: int) -> bytes:
    """The body of an RTM_NEWNEIGH/RTM_DELNEIGH request."""
    body = _NDMSG.pack(family, index, state, flags, 0)
    if ip is not None:
        body += attr(NDA_DST, ip.packed)
    if mac is not None:
        body += attr(NDA_LLADDR, mac_bytes(mac))
    return body


# --------------------------------------------------------------------------------------------
# Links


def vxlan_link(rtnl: Rtnl, name: str) -> tuple[Link, VxlanInfo | None] | None:
    """The link `name` with its VXLAN settings (None for a link of another kind); None when no
    link has that name."""
    body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(name))
    try:
        msgs = rtnl.request(RTM_GETLINK, body, what=f"reading link {name}")
    except NetlinkError as exc:
        if exc.errno in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return next(((decode_link(p), link_vxlan(p)) for t, p in msgs if t == RTM_NEWLINK), None)


def vxlan_links(rtnl: Rtnl) -> list[tuple[Link, VxlanInfo]]:
    """Every VXLAN device of the namespace, with its settings."""
    msgs = rtnl.request(RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0), NLM_F_DUMP, "listing links")
    out = []
    for mtype, payload in msgs:
        if mtype == RTM_NEWLINK and (info := link_vxlan(payload)) is not None:
            out.append((decode_link(payload), info))
    return out


def add_vxlan(rtnl: Rtnl, name: str, vni: int, port: int, local: IPAddress | None, parent_index: int, mac: str, mtu: int) -> None:
    """Create a VXLAN device with learning off, sending from `local` over link `parent_index` to UDP
    `port` of the VTEPs its FDB names (it is left down).

    Fails with EEXIST when the name is taken, or when another VXLAN device already has this VNI and
    port (the kernel's extended ack says which).
    """
    info = attr(IFLA_INFO_KIND, _str("vxlan")) + attr(IFLA_INFO_DATA, encode_vxlan(vni, port, local, parent_index))
    body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(name)) + attr(IFLA_MTU, _u32(mtu))
    body += attr(IFLA_ADDRESS, mac_bytes(mac)) + attr(IFLA_LINKINFO, info)
    rtnl.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL, f"creating vxlan device {name} (VNI {vni}, port {port})")


def add_link_of_kind(rtnl: Rtnl, name: str, kind: str, mtu: int | None = None) -> None:
    """Create a link of a kind that needs no settings (`ip link add NAME type KIND`), e.g. ipip's
    tunl0. EOPNOTSUPP when the kernel does not know the kind (its module is not loaded)."""
    body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(name))
    if mtu is not None:
        body += attr(IFLA_MTU, _u32(mtu))
    body += attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, _str(kind)))
    rtnl.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL, f"creating {kind} device {name}")


# --------------------------------------------------------------------------------------------
# Neighbour and FDB entries


def neighbours(rtnl: Rtnl, index: int = 0, family: int = socket.AF_INET) -> list[Neighbour]:
    """The neighbour entries of one link (index 0: every link): ARP (AF_INET) or ND (AF_INET6)
    entries, or FDB entries (AF_BRIDGE; a VXLAN device's carry their remote VTEP as `ip`)."""
    msgs = rtnl.request(RTM_GETNEIGH, _NDMSG.pack(family, 0, 0, 0, 0), NLM_F_DUMP, "listing neighbours")
    out = [decode_neighbour(p) for t, p in msgs if t == RTM_NEWNEIGH]
    return [n for n in out if n.family == family and (not index or n.index == index)]


def set_neighbour(rtnl: Rtnl, index: int, ip: IPAddress, mac: str) -> None:
    """Create or replace a permanent neighbour entry `ip` -> `mac` on a link (`ip neigh replace`)."""
    body = encode_neighbour(_family(ip.version), index, ip, mac, NUD_PERMANENT, 0)
    rtnl.request(RTM_NEWNEIGH, body, NLM_F_CREATE | NLM_F_REPLACE, f"setting neighbour {ip} lladdr {mac} on link {index}")


def _delete(rtnl: Rtnl, body: bytes, what: str) -> bool:
    """Send an RTM_DELNEIGH; False when the entry was not there."""
    try:
        rtnl.request(RTM_DELNEIGH, body, what=what)
    except NetlinkError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            return False
        raise
    return True


def delete_neighbour(rtnl: Rtnl, index: int, ip: IPAddress) -> bool:
    """Delete the neighbour entry for `ip` on a link; False when there was none."""
    body = encode_neighbour(_family(ip.version), index, ip, None, 0, 0)
    return _delete(rtnl, body, f"deleting neighbour {ip} on link {index}")


def set_fdb(rtnl: Rtnl, index: int, mac: str, dst: IPAddress) -> None:
    """Create or replace a device's own permanent FDB entry `mac` -> remote VTEP `dst`
    (`bridge fdb replace MAC dev DEV dst DST self permanent`)."""
    body = encode_neighbour(AF_BRIDGE, index, dst, mac, NUD_PERMANENT, NTF_SELF)
    rtnl.request(RTM_NEWNEIGH, body, NLM_F_CREATE | NLM_F_REPLACE, f"setting fdb entry {mac} dst {dst} on link {index}")


def delete_fdb(rtnl: Rtnl, index: int, mac: str, dst: IPAddress | None = None) -> bool:
    """Delete a device's own FDB entry for `mac` (only its remote `dst`, when given); False when
    there was none."""
    body = encode_neighbour(AF_BRIDGE, index, dst, mac, 0, NTF_SELF)
    return _delete(rtnl, body, f"deleting fdb entry {mac}{f' dst {dst}' if dst else ''} on link {index}")
