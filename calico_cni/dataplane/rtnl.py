"""A small rtnetlink client: links, addresses and routes, over one NETLINK_ROUTE socket.

A netlink socket acts in the network namespace it was created in, whichever thread uses it later;
`netns.Netns.rtnl()` creates one inside a given namespace. Only the messages this project needs are
encoded, with the standard library alone: importing pyroute2 costs 150 to 200 ms per exec (its
package imports every netlink family), and its `IPRoute(netns=...)` forks a child process to create
the socket, which is slow and unsafe next to gRPC's threads. What only calico-node sends (VXLAN
devices, neighbour and FDB entries) is in `rtnl_tunnels`: every plugin exec imports this module.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

from calico_cni.timing import timed

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

# Message types.
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

# Header flags.
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # on NLMSG_ERROR: only the request's header is echoed
NLM_F_ACK_TLVS = 0x200  # on NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1

# Link attributes.
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_LOWER_UP = 0x10000

# Address attributes and flags.
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40

# Route attributes and constants.
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_TABLE = 15
RTNH_F_ONLINK = 4  # rtm_flags: the gateway is on the link even though no route says so
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
# Routes BIRD installs (`proto bird`), and those calico-node programs itself (Felix's number, 80):
# the daemon's, never a workload's, so a pod's ADD may take their place (design rule 26).
RTPROT_BIRD = 12
RTPROT_CALICO = 80
DAEMON_PROTOCOLS = (RTPROT_BIRD, RTPROT_CALICO)
# The metric of the routes calico-node programs itself (VXLAN, IPIP, blackholes): above 0 so that
# the plugin's conflict check and `ip route` tell them from a pod's route, and above 1024 (what an
# IPv6 route without a metric gets) so that a pod's own /32 or /128 always wins over them.
CALICO_METRIC = 2048
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RT_SCOPE_NOWHERE = 255
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
ROUTE_TYPES = {
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
    11: "xresolve",
}

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_RECV_BUFFER = 1 << 17


class NetlinkError(OSError):
    """The kernel refused a request; `errno` is the kernel's error, the message adds its extended ack."""


@dataclass(frozen=True)
class Link:
    """One network interface as the kernel reports it."""

    index: int
    name: str
    flags: int
    mtu: int
    mac: str
    alias: str
    kind: str
    operstate: int
    peer_index: int

    @property
    def up(self) -> bool:
        """Whether the link is administratively up."""
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True)
class Address:
    """One address on an interface (`address` carries its prefix length)."""

    index: int
    address: IPInterface
    flags: int
    scope: int

    @property
    def tentative(self) -> bool:
        """Whether the address is not usable yet (duplicate address detection running) or failed it."""
        return bool(self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))


@dataclass(frozen=True)
class Route:
    """One route of a routing table."""

    dst: IPNetwork
    oif: int
    gateway: IPAddress | None
    table: int
    scope: int
    type: int
    protocol: int
    priority: int
    flags: int = 0  # rtm_flags (RTNH_F_ONLINK...)

    @property
    def onlink(self) -> bool:
        """Whether the gateway is declared on the link (`onlink`)."""
        return bool(self.flags & RTNH_F_ONLINK)

    @property
    def type_name(self) -> str:
        """The route type as `ip route` names it (unicast, blackhole...)."""
        return ROUTE_TYPES.get(self.type, str(self.type))


# --------------------------------------------------------------------------------------------
# Encoding and decoding


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _str(text: str) -> bytes:
    return text.encode() + b"\0"


def _u32(value: int) -> bytes:
    return _U32.pack(value)


def parse_attrs(data: bytes | memoryview, offset: int = 0) -> dict[int, bytes]:
    """The attributes in `data` from `offset`, by type (flag bits stripped; the last one wins)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            break
        out[kind & 0x3FFF] = bytes(data[offset + _RTATTR.size : offset + length])
        offset += (length + 3) & ~3
    return out


def _text(raw: bytes | None) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw else ""


def _mac_text(raw: bytes | None) -> str:
    return ":".join(f"{b:02x}" for b in raw) if raw else ""


def mac_bytes(mac: str) -> bytes:
    """ "ee:ee:ee:ee:ee:ee" -> 6 bytes."""
    return bytes(int(part, 16) for part in mac.split(":"))


def decode_link(payload: bytes) -> Link:
    """A link from the payload of an RTM_NEWLINK message."""
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    attrs = parse_attrs(payload, _IFINFOMSG.size)
    kind = ""
    if IFLA_LINKINFO in attrs:
        kind = _text(parse_attrs(attrs[IFLA_LINKINFO]).get(IFLA_INFO_KIND))
    return Link(
        index=index,
        name=_text(attrs.get(IFLA_IFNAME)),
        flags=flags,
        mtu=_U32.unpack(attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0,
        mac=_mac_text(attrs.get(IFLA_ADDRESS)),
        alias=_text(attrs.get(IFLA_IFALIAS)),
        kind=kind,
        operstate=attrs[IFLA_OPERSTATE][0] if IFLA_OPERSTATE in attrs else 0,
        peer_index=_U32.unpack(attrs[IFLA_LINK])[0] if IFLA_LINK in attrs else 0,
    )


def decode_address(payload: bytes) -> Address:
    """An address from the payload of an RTM_NEWADDR message."""
    family, prefixlen, flags, scope, index = _IFADDRMSG.unpack_from(payload)
    attrs = parse_attrs(payload, _IFADDRMSG.size)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS) or b""
    if IFA_FLAGS in attrs:
        flags = _U32.unpack(attrs[IFA_FLAGS])[0]
    ip = ipaddress.ip_address(raw)
    return Address(index, ipaddress.ip_interface(f"{ip}/{prefixlen}"), flags, scope)


def decode_route(payload: bytes) -> Route:
    """A route from the payload of an RTM_NEWROUTE message (no RTA_DST: the default route)."""
    family, dst_len, _src_len, _tos, table, protocol, scope, rtype, rflags = _RTMSG.unpack_from(payload)
    attrs = parse_attrs(payload, _RTMSG.size)
    if RTA_TABLE in attrs:
        table = _U32.unpack(attrs[RTA_TABLE])[0]
    if RTA_DST in attrs:
        dst = ipaddress.ip_network(f"{ipaddress.ip_address(attrs[RTA_DST])}/{dst_len}", strict=False)
    else:
        dst = ipaddress.ip_network("0.0.0.0/0" if family == socket.AF_INET else "::/0")
    gateway = ipaddress.ip_address(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
    return Route(
        dst=dst,
        oif=_U32.unpack(attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0,
        gateway=gateway,
        table=table,
        scope=scope,
        type=rtype,
        protocol=protocol,
        priority=_U32.unpack(attrs[RTA_PRIORITY])[0] if RTA_PRIORITY in attrs else 0,
        flags=rflags,
    )


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


# --------------------------------------------------------------------------------------------
# The socket


class Rtnl:
    """Requests over one NETLINK_ROUTE socket (it acts in the namespace it was created in).

    `deadline` (a `time.monotonic()` instant, None: no deadline) bounds every wait for an answer:
    past it a receive raises TimeoutError, whatever the socket's own timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        self.deadline: float | None = None

    @classmethod
    def open(cls, protocol: int = NETLINK_ROUTE) -> "Rtnl":
        """A socket in the calling thread's network namespace (`protocol`: another netlink family
        speaking the same framing, e.g. NETLINK_NETFILTER for nftables' generation)."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        except OSError:
            pass  # older kernels: plain error codes
        sock.settimeout(10)
        sock.bind((0, 0))
        return cls(sock)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------------

    def _messages(self) -> Iterator[tuple[int, int, int, memoryview]]:
        while True:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(errno.ETIMEDOUT, "no netlink answer before the deadline")
                self.sock.settimeout(left)
            data = memoryview(self.sock.recv(_RECV_BUFFER))
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                yield mtype, flags, seq, data[offset + _NLMSGHDR.size : offset + length]
                offset += (length + 3) & ~3

    @staticmethod
    def _error(payload: memoryview, flags: int, what: str) -> NetlinkError:
        code = -struct.unpack_from("=i", payload)[0]
        detail = ""
        if flags & NLM_F_ACK_TLVS:
            inner_len = _NLMSGHDR.unpack_from(payload, 4)[0]
            tlv_offset = 4 + (_NLMSGHDR.size if flags & NLM_F_CAPPED else inner_len)
            detail = _text(parse_attrs(payload, tlv_offset).get(NLMSGERR_ATTR_MSG))
        text = f"{what}: {os.strerror(code)}" + (f" ({detail})" if detail else "")
        return NetlinkError(code, text)

    @timed("netlink")
    def request(self, mtype: int, body: bytes, flags: int = 0, what: str = "netlink request") -> list[tuple[int, bytes]]:
        """Send one request and return the messages of its answer (type, payload).

        Without NLM_F_DUMP in `flags` an acknowledgement is requested and awaited; a kernel error
        raises `NetlinkError`. A dump interrupted by a concurrent change is repeated.
        """
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        for _attempt in range(5):
            self.seq += 1
            seq = self.seq
            hdr_flags = NLM_F_REQUEST | flags | (0 if dump else NLM_F_ACK)
            self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, hdr_flags, seq, 0) + body)
            out: list[tuple[int, bytes]] = []
            interrupted = False
            for rtype, rflags, rseq, payload in self._messages():
                if rseq != seq:
                    continue
                if rflags & NLM_F_DUMP_INTR:
                    interrupted = True
                if rtype == NLMSG_ERROR:
                    if struct.unpack_from("=i", payload)[0] == 0:
                        return out
                    raise self._error(payload, rflags, what)
                if rtype == NLMSG_DONE:
                    break
                out.append((rtype, bytes(payload)))
            if not interrupted:
                return out
        raise NetlinkError(errno.EAGAIN, f"{what}: dump kept being interrupted by concurrent changes")

    def dump(self, mtype: int, body: bytes, what: str = "netlink dump") -> Iterator[tuple[int, memoryview]]:
        """Send one NLM_F_DUMP request and yield its messages (type, payload) as they arrive,
        without holding them all: for tables too large to keep twice (a node's conntrack table).

        Unlike `request`, a dump the kernel marks interrupted by a concurrent change is not run
        again: it raises NetlinkError(EAGAIN) at its end, after what it yielded. A kernel error
        raises `NetlinkError`."""
        self.seq += 1
        seq = self.seq
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        interrupted = False
        for rtype, rflags, rseq, payload in self._messages():
            if rseq != seq:
                continue
            interrupted |= bool(rflags & NLM_F_DUMP_INTR)
            if rtype == NLMSG_ERROR:
                if struct.unpack_from("=i", payload)[0] == 0:
                    break
                raise self._error(payload, rflags, what)
            if rtype == NLMSG_DONE:
                break
            yield rtype, payload
        if interrupted:
            raise NetlinkError(errno.EAGAIN, f"{what}: interrupted by a concurrent change")

    def request_each(self, requests: Sequence[tuple[int, bytes]], what: str = "netlink request", per_send: int = 64) -> list[NetlinkError | None]:
        """Send `requests` (type, body), each acknowledged, `per_send` messages to a send, and
        return each one's outcome in order: None, or the kernel's refusal.

        The kernel handles the messages of one send one after the other, each answered by its own
        acknowledgement or error, a failure not stopping the next (netlink_rcv_skb). `per_send`
        keeps those answers within the socket's receive buffer: one that does not fit is dropped
        and the next receive fails with ENOBUFS."""
        out: list[NetlinkError | None] = []
        for start in range(0, len(requests), max(1, per_send)):
            chunk = requests[start : start + max(1, per_send)]
            first = self.seq + 1
            packet = b"".join(
                _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, NLM_F_REQUEST | NLM_F_ACK, first + i, 0) + body for i, (mtype, body) in enumerate(chunk)
            )
            self.seq += len(chunk)
            self.sock.send(packet)
            answers: dict[int, NetlinkError | None] = {}
            for rtype, rflags, rseq, payload in self._messages():
                if rtype != NLMSG_ERROR or not first <= rseq < first + len(chunk):
                    continue
                answers[rseq] = None if struct.unpack_from("=i", payload)[0] == 0 else self._error(payload, rflags, what)
                if len(answers) == len(chunk):
                    break
            out += [answers[first + i] for i in range(len(chunk))]
        return out

    # -- links --------------------------------------------------------------------------------

    def link(self, name: str | None = None, index: int = 0) -> Link | None:
        """One link by name or index; None when it does not exist."""
        body = _IFINFOMSG.pack(0, 0, index, 0, 0) + (attr(IFLA_IFNAME, _str(name)) if name else b"")
        try:
            msgs = self.request(RTM_GETLINK, body, what=f"reading link {name or index}")
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return next((decode_link(p) for t, p in msgs if t == RTM_NEWLINK), None)

    def links(self) -> list[Link]:
        """Every link of the namespace."""
        msgs = self.request(RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0), NLM_F_DUMP, "listing links")
        return [decode_link(p) for t, p in msgs if t == RTM_NEWLINK]

    def add_veth(self, name: str, peer_name: str, mtu: int, peer_mac: str, peer_netns_fd: int) -> None:
        """Create a veth pair: `name` here, `peer_name` (with `peer_mac`) in the namespace of `peer_netns_fd`.

        Fails with EEXIST, creating nothing, when either name is taken in its namespace.
        """
        peer = _IFINFOMSG.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(peer_name)) + attr(IFLA_MTU, _u32(mtu))
        peer += attr(IFLA_ADDRESS, mac_bytes(peer_mac)) + attr(IFLA_NET_NS_FD, _u32(peer_netns_fd))
        info = attr(IFLA_INFO_KIND, _str("veth")) + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _str(name)) + attr(IFLA_MTU, _u32(mtu)) + attr(IFLA_LINKINFO, info)
        self.request(RTM_NEWLINK, body, NLM_F_CREATE | NLM_F_EXCL, f"creating veth pair {name}/{peer_name}")

    def set_link(
        self,
        index: int,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        alias: str | None = None,
        netns_fd: int | None = None,
    ) -> None:
        """Change a link's state, MTU, MAC, alias or namespace."""
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        attrs = b""
        if mtu is not None:
            attrs += attr(IFLA_MTU, _u32(mtu))
        if mac is not None:
            attrs += attr(IFLA_ADDRESS, mac_bytes(mac))
        if alias is not None:
            attrs += attr(IFLA_IFALIAS, alias.encode())
        if netns_fd is not None:
            attrs += attr(IFLA_NET_NS_FD, _u32(netns_fd))
        self.request(RTM_SETLINK, _IFINFOMSG.pack(0, 0, index, flags, change) + attrs, what=f"changing link {index}")

    def delete_link(self, index: int) -> bool:
        """Delete a link (a veth takes its peer with it); False when it was already gone."""
        try:
            self.request(RTM_DELLINK, _IFINFOMSG.pack(0, 0, index, 0, 0), what=f"deleting link {index}")
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    # -- addresses ----------------------------------------------------------------------------

    def addresses(self, index: int = 0, version: int = 0) -> list[Address]:
        """Addresses of one link (index 0: every link), of one IP version (0: both)."""
        fam = _family(version) if version else socket.AF_UNSPEC
        msgs = self.request(RTM_GETADDR, _IFADDRMSG.pack(fam, 0, 0, 0, 0), NLM_F_DUMP, "listing addresses")
        out = [decode_address(p) for t, p in msgs if t == RTM_NEWADDR]
        return [a for a in out if not index or a.index == index]

    def add_address(self, index: int, address: IPInterface, nodad: bool = False) -> None:
        """Add an address (with its prefix length) to a link."""
        fam = _family(address.version)
        flags = IFA_F_NODAD if nodad else 0
        raw = address.ip.packed
        body = _IFADDRMSG.pack(fam, address.network.prefixlen, flags, RT_SCOPE_UNIVERSE, index)
        body += attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw) + attr(IFA_FLAGS, _u32(flags))
        self.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL, f"adding address {address} to link {index}")

    def delete_address(self, index: int, address: IPInterface) -> bool:
        """Remove an address (with its prefix length) from a link; False when it was not there."""
        raw = address.ip.packed
        body = _IFADDRMSG.pack(_family(address.version), address.network.prefixlen, 0, 0, index)
        body += attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
        try:
            self.request(RTM_DELADDR, body, what=f"removing address {address} from link {index}")
        except NetlinkError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV, errno.ESRCH):
                return False
            raise
        return True

    # -- routes -------------------------------------------------------------------------------

    def routes(self, version: int, table: int = RT_TABLE_MAIN, protocol: int | None = None) -> list[Route]:
        """The routes of one IP version in one table (of one protocol, when given)."""
        body = _RTMSG.pack(_family(version), 0, 0, 0, 0, 0, 0, 0, 0)
        msgs = self.request(RTM_GETROUTE, body, NLM_F_DUMP, "listing routes")
        out = [decode_route(p) for t, p in msgs if t == RTM_NEWROUTE]
        return [r for r in out if r.table == table and (protocol is None or r.protocol == protocol)]

    @staticmethod
    def _route_body(
        dst: IPNetwork,
        oif: int,
        gateway: IPAddress | None,
        scope: int,
        table: int,
        priority: int | None = None,
        protocol: int = RTPROT_BOOT,
        route_type: int = RTN_UNICAST,
        flags: int = 0,
    ) -> bytes:
        # rtm_table is one byte: tables above 255 travel in RTA_TABLE.
        body = _RTMSG.pack(_family(dst.version), dst.prefixlen, 0, 0, table if table < 256 else 0, protocol, scope, route_type, flags)
        if table >= 256:
            body += attr(RTA_TABLE, _u32(table))
        if dst.prefixlen:
            body += attr(RTA_DST, dst.network_address.packed)
        if oif:
            body += attr(RTA_OIF, _u32(oif))
        if gateway is not None:
            body += attr(RTA_GATEWAY, gateway.packed)
        if priority is not None:
            body += attr(RTA_PRIORITY, _u32(priority))
        return body

    def add_route(
        self,
        dst: IPNetwork,
        oif: int,
        gateway: IPAddress | None = None,
        scope: int = RT_SCOPE_UNIVERSE,
        priority: int | None = None,
        table: int = RT_TABLE_MAIN,
        replace: bool = False,
        *,
        protocol: int = RTPROT_BOOT,
        route_type: int = RTN_UNICAST,
        onlink: bool = False,
    ) -> None:
        """Add a route; EEXIST when the table already has one for `dst` with this metric, unless
        `replace` (then that route is replaced).

        `route_type` RTN_BLACKHOLE makes a blackhole (`oif` and `gateway` are then ignored: it has
        neither); `onlink` declares the gateway reachable on `oif` without a route to it (a remote
        VTEP's tunnel address on vxlan.calico).
        """
        if route_type == RTN_BLACKHOLE:
            oif, gateway, where = 0, None, "blackhole "
        else:
            where = ""
        via = f" via {gateway}" if gateway else ""
        on = f" on link {oif}" if oif else ""
        self.request(
            RTM_NEWROUTE,
            self._route_body(dst, oif, gateway, scope, table, priority, protocol, route_type, RTNH_F_ONLINK if onlink else 0),
            NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL),
            f"{'replacing' if replace else 'adding'} {where}route {dst}{via}{on}",
        )

    def delete_route(self, route: Route) -> bool:
        """Delete exactly `route` (as listed by `routes`: its destination, table, protocol, metric,
        type, device and gateway must all match); False when no such route exists any more."""
        body = self._route_body(route.dst, route.oif, route.gateway, route.scope, route.table, route.priority or None, route.protocol, route.type)
        try:
            self.request(RTM_DELROUTE, body, what=f"deleting route {route.dst} ({route.type_name}, proto {route.protocol}, metric {route.priority})")
        except NetlinkError as exc:
            if exc.errno in (errno.ESRCH, errno.ENOENT):
                return False
            raise
        return True
