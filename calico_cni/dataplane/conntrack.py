"""Conntrack entries of a removed endpoint's addresses, deleted over ctnetlink (the kernel's
conntrack netlink interface) in the calling thread's network namespace: the only code that
removes conntrack entries.

Felix does the same (felix/conntrack): for each address it deletes the entries whose original
source or reply source is that address. Those two fields cover every flow of a local endpoint:
when the endpoint opened the flow it is the original source; when it received the flow, it is the
reply source (also after a DNAT to it, e.g. a hostPort, where the original destination is the
node's address). A pod address is never the target of SNAT, so the original and reply
destinations add no entry these two miss.

A flush is one dump of the namespace's entries, both families, whatever the number of addresses,
then a delete of each entry naming one of them, by its original tuple, PER_SEND deletes to a send.
The kernel walks its whole conntrack hash table for a dump (shared by all namespaces: about 10 ms
for 262,144 buckets on a 2-vCPU Debian 12 machine), and sends every entry of the namespace, each
costing about 5 us here (2 in the kernel and the copy, 3 of Python looking at its two sources);
Debian's `conntrack -D` took two walks per address, and an exec each from the large daemon. What this relies on, read in net/netfilter/nf_conntrack_netlink.c and
nfnetlink.c of Linux 6.x (the 2.6 kernels already dumped every family for AF_UNSPEC):

- IPCTNL_MSG_CT_GET with NLM_F_DUMP and nfgen_family AF_UNSPEC sets no filter
  (ctnetlink_needs_filter is false): ctnetlink_dump_table walks every bucket once and sends each
  entry of the socket's namespace (net_eq with sock_net), of every family. A netlink socket acts in
  the namespace it was created in: the calling thread's (setns is per thread), as the exec'd tool.
- Each entry is an IPCTNL_MSG_CT_NEW message whose nfgen_family is its family, with CTA_TUPLE_ORIG
  and CTA_TUPLE_REPLY first, each nesting CTA_TUPLE_IP (CTA_IP_V4_SRC/DST or CTA_IP_V6_SRC/DST),
  CTA_TUPLE_PROTO and, for a zone of that direction only, CTA_TUPLE_ZONE; then CTA_ZONE when the
  zone covers both directions; no zone attribute in the default zone.
- IPCTNL_MSG_CT_DELETE with the entry's family, its CTA_TUPLE_ORIG sent back as dumped (zone of
  the original direction included) and its CTA_ZONE looks the entry up by tuple and zone and
  deletes it, or answers ENOENT when no entry has that tuple any more (expired, or deleted by
  someone else since the dump): success here. A delete carrying neither tuple flushes the table
  (every entry, or those CTA_MARK/CTA_FILTER select; newer kernels also take CTA_FILTER beside a
  tuple as a flush): every delete sent here carries the tuple, and never CTA_FILTER or CTA_MARK.
- Messages sent together without NFNL_MSG_BATCH_BEGIN are handled one by one (nfnetlink_rcv ->
  netlink_rcv_skb), each answered by its own acknowledgement; a failed one does not stop the rest.
  Measured: 7 us a delete 64 to a send, 11 us one per send.
- CTA_FILTER (5.9 and later) filters a dump on one tuple value: one walk per address and
  direction again, so it is not used.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Iterator

from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane.rtnl import NetlinkError, Rtnl, attr

TIMEOUT = 5.0
NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
CT_NEW = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
CT_GET = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
CT_DELETE = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
# Attributes: an entry's, a tuple's, a tuple's addresses', a tuple's protocol's.
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ZONE = 1, 2, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
# Deletes to one send: their acknowledgements must fit the socket's receive buffer or the excess is
# dropped (net.core.rmem_default, 208 KiB on Debian 12: 250 fitted, 1,000 failed with ENOBUFS).
PER_SEND = 64
# Up to this many addresses, a dumped entry is first searched for their bytes (see list_matching).
SCREEN = 8
# Namespaces whose idle socket is kept (see flush_addresses): calico-node needs one, its own.
MAX_SOCKETS = 4

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_NFGENMSG = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
_PORT = struct.Struct(">H")
_DELETING = "deleting the conntrack entry"


class ConntrackError(DataplaneError):
    """The kernel refused to list or delete conntrack entries, or did not answer in time."""


@dataclass(frozen=True)
class Entry:
    """One conntrack entry as a delete needs it: its family, its original tuple exactly as the
    kernel dumped it (the CTA_TUPLE_ORIG attribute's payload) and its CTA_ZONE payload, if any."""

    family: int
    orig: bytes
    zone: bytes | None = None

    def describe(self) -> str:
        """The original tuple as `conntrack -L` prints it: protocol number, addresses, ports."""
        tuple_attrs = dict(_attrs(self.orig))
        ip = dict(_attrs(tuple_attrs.get(CTA_TUPLE_IP, b"")))
        proto = dict(_attrs(tuple_attrs.get(CTA_TUPLE_PROTO, b"")))
        words = [f"proto {proto[CTA_PROTO_NUM][0] if proto.get(CTA_PROTO_NUM) else '?'}"]
        for name, v4, v6 in (("src", CTA_IP_V4_SRC, CTA_IP_V6_SRC), ("dst", CTA_IP_V4_DST, CTA_IP_V6_DST)):
            raw = ip.get(v4) or ip.get(v6)
            words.append(f"{name}={ipaddress.ip_address(bytes(raw)) if raw else '?'}")
        for name, kind in (("sport", CTA_PROTO_SRC_PORT), ("dport", CTA_PROTO_DST_PORT)):
            if len(proto.get(kind, b"")) == 2:
                words.append(f"{name}={_PORT.unpack(proto[kind])[0]}")
        return " ".join(words)


def _attrs(data: bytes | memoryview, offset: int = 0) -> Iterator[tuple[int, bytes | memoryview]]:
    """(type, payload) of each attribute in `data` from `offset`, in order, flags stripped."""
    end = len(data)
    while offset + _NLA.size <= end:
        length, kind = _NLA.unpack_from(data, offset)
        if length < _NLA.size or offset + length > end:
            return
        yield kind & NLA_TYPE_MASK, data[offset + _NLA.size : offset + length]
        offset += (length + 3) & ~3


def _find(data: memoryview, start: int, end: int, kinds: tuple[int, ...]) -> tuple[int, int] | None:
    """The payload bounds (start, end) of the first attribute of one of `kinds` in data[start:end].
    Offsets into one buffer rather than slices: a dump is parsed entry by entry in Python, and
    most entries are only looked at for their two source addresses."""
    while start + _NLA.size <= end:
        length, kind = _NLA.unpack_from(data, start)
        if length < _NLA.size or start + length > end:
            return None
        if kind & NLA_TYPE_MASK in kinds:
            return start + _NLA.size, start + length
        start += (length + 3) & ~3
    return None


def _source(data: memoryview, bounds: tuple[int, int] | None) -> bytes | None:
    """The source address (4 or 16 bytes) of the dumped tuple (CTA_TUPLE_ORIG or CTA_TUPLE_REPLY)
    whose payload lies at `bounds` in `data`."""
    ip = _find(data, *bounds, (CTA_TUPLE_IP,)) if bounds else None
    src = _find(data, *ip, (CTA_IP_V4_SRC, CTA_IP_V6_SRC)) if ip else None
    return bytes(data[src[0] : src[1]]) if src else None


def matching(entry: memoryview, wanted: set[bytes]) -> Entry | None:
    """The entry of one dumped message (an IPCTNL_MSG_CT_NEW payload) when its original or reply
    source is one of `wanted` (packed addresses), else None."""
    end = len(entry)
    # The kernel writes both tuples first: found in two steps for the usual entry.
    orig = _find(entry, _NFGENMSG.size, end, (CTA_TUPLE_ORIG,))
    reply = _find(entry, _NFGENMSG.size, end, (CTA_TUPLE_REPLY,))
    if orig is None or (_source(entry, orig) not in wanted and _source(entry, reply) not in wanted):
        return None
    zone = _find(entry, _NFGENMSG.size, end, (CTA_ZONE,))
    return Entry(entry[0], bytes(entry[orig[0] : orig[1]]), bytes(entry[zone[0] : zone[1]]) if zone else None)


def list_matching(nl: Rtnl, addresses: Iterable[Address]) -> list[Entry]:
    """The entries of `nl`'s namespace whose original or reply source is one of `addresses`, from
    one dump of both families."""
    wanted = {a.packed for a in addresses}
    # A few addresses: an entry that holds none of their bytes anywhere cannot name one, and that
    # search (in C) costs a fraction of walking its attributes in Python.
    screen = tuple(wanted) if len(wanted) <= SCREEN else ()
    found: dict[Entry, None] = {}
    for mtype, payload in nl.dump(CT_GET, _NFGENMSG.pack(socket.AF_UNSPEC, 0, 0), "listing conntrack entries"):
        if mtype == CT_NEW:
            if screen:
                raw = bytes(payload)
                if not any(packed in raw for packed in screen):
                    continue
            entry = matching(payload, wanted)
            if entry is not None:
                found[entry] = None
    return list(found)


def delete(nl: Rtnl, entries: list[Entry]) -> int:
    """Delete `entries` by their original tuples (and zones); returns how many were still there.
    One already gone (ENOENT) is success; any other refusal raises ConntrackError."""
    requests = []
    for entry in entries:
        # A delete without a tuple would flush the whole table (see the module docstring).
        if not entry.orig:
            raise ConntrackError("refusing to delete a conntrack entry without its original tuple (it would flush the table)")
        body = _NFGENMSG.pack(entry.family, 0, 0) + attr(CTA_TUPLE_ORIG, entry.orig)
        if entry.zone is not None:
            body += attr(CTA_ZONE, entry.zone)
        requests.append((CT_DELETE, body))
    deleted = 0
    for entry, error in zip(entries, nl.request_each(requests, _DELETING, PER_SEND)):
        if error is None:
            deleted += 1
        elif error.errno != errno.ENOENT:
            reason = str(error.strerror).removeprefix(f"{_DELETING}: ")
            raise ConntrackError(f"{_DELETING} {entry.describe()}: {reason}")
    return deleted


# Idle sockets, one per network namespace (dev, inode of /proc/thread-self/ns/net), taken by one
# flush at a time: closing a NETLINK_NETFILTER socket waits for nf_tables' pending destruction
# work, an RCU grace period, whenever a commit deleted chains or rules before it (nf_tables_api.c,
# nft_rcv_nl_event on NETLINK_URELEASE): 11 to 22 ms here, right after calico-node's pass that
# removed a deleted endpoint's chains, on every DEL it served. A kept socket keeps its namespace
# alive, so only the MAX_SOCKETS most recently used are kept.
_idle_lock = threading.Lock()
_idle: OrderedDict[tuple[int, int], Rtnl] = OrderedDict()


def _take(key: tuple[int, int]) -> Rtnl:
    """The namespace's idle socket, or a new one (in the calling thread's namespace, `key`)."""
    with _idle_lock:
        nl = _idle.pop(key, None)
    return nl if nl is not None else Rtnl.open(NETLINK_NETFILTER)


def _give_back(key: tuple[int, int], nl: Rtnl) -> None:
    """Keep `nl` (every answer of its requests read) for the next flush in its namespace."""
    nl.deadline = None
    nl.sock.settimeout(None)
    closing = []
    with _idle_lock:
        if key in _idle:  # a concurrent flush gave its socket back first: one is kept
            closing.append(nl)
        else:
            _idle[key] = nl
            while len(_idle) > MAX_SOCKETS:
                closing.append(_idle.popitem(last=False)[1])
    for extra in closing:
        extra.close()


def flush_addresses(addresses: Iterable[Address], timeout: float = TIMEOUT) -> None:
    """Delete every conntrack entry of the calling thread's network namespace whose original or
    reply source is one of `addresses` (Felix's fields; see the module docstring). No entry to
    delete is success. Raises ConntrackError when the kernel refuses, or when the whole flush does
    not finish within `timeout` seconds."""
    unique = list(dict.fromkeys(addresses))
    if not unique:
        return
    step = "opening a netfilter netlink socket"
    nl: Rtnl | None = None
    try:
        info = os.stat("/proc/thread-self/ns/net")
        key = (info.st_dev, info.st_ino)
        nl = _take(key)
        nl.deadline = time.monotonic() + timeout
        step = "listing conntrack entries"
        entries = list_matching(nl, unique)
        step = "deleting conntrack entries"
        delete(nl, entries)
        kept, nl = nl, None
        _give_back(key, kept)
    except TimeoutError:
        raise ConntrackError(f"{step} did not finish within {timeout:g} s") from None
    except NetlinkError as exc:
        raise ConntrackError(str(exc.strerror)) from None  # it names what was refused already
    except OSError as exc:
        raise ConntrackError(f"{step}: {exc.strerror or exc}") from None
    finally:
        if nl is not None:  # a failed flush may leave answers unread: its socket is not kept
            nl.close()
