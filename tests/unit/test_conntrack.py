"""dataplane.conntrack without a kernel: which dumped entries match (messages encoded here the way
ctnetlink_fill_info lays them out), what a delete carries, the request it sends and its deadline
(over a socket pair nobody answers). The kernel itself is in tests/namespaces/test_conntrack.py."""

from __future__ import annotations

import ipaddress
import socket
import struct
import time

import pytest

from calico_cni.dataplane import conntrack
from calico_cni.dataplane.conntrack import ConntrackError, Entry
from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane.rtnl import NLM_F_DUMP, NLM_F_REQUEST, Rtnl, attr

POD4, POD6 = ipaddress.ip_address("198.18.0.5"), ipaddress.ip_address("fd00:198:18::5")
NODE4, NODE6 = ipaddress.ip_address("198.19.0.1"), ipaddress.ip_address("fd00:198:19::1")
NESTED = 0x8000  # NLA_F_NESTED, as the kernel sets it on nests
CTA_TUPLE_ZONE = 3


def tuple_(src, dst, sport: int, dport: int, proto: int = 6, zone: int | None = None) -> bytes:
    """A CTA_TUPLE_ORIG/REPLY payload: addresses, protocol and ports, then a direction's zone."""
    v4 = src.version == 4
    ip = attr(conntrack.CTA_IP_V4_SRC if v4 else conntrack.CTA_IP_V6_SRC, src.packed)
    ip += attr(conntrack.CTA_IP_V4_DST if v4 else conntrack.CTA_IP_V6_DST, dst.packed)
    pr = attr(conntrack.CTA_PROTO_NUM, bytes([proto])) + attr(conntrack.CTA_PROTO_SRC_PORT, struct.pack(">H", sport))
    pr += attr(conntrack.CTA_PROTO_DST_PORT, struct.pack(">H", dport))
    out = attr(conntrack.CTA_TUPLE_IP | NESTED, ip) + attr(conntrack.CTA_TUPLE_PROTO | NESTED, pr)
    return out + (attr(CTA_TUPLE_ZONE, struct.pack(">H", zone)) if zone is not None else b"")


def message(orig: bytes, reply: bytes, family: int = socket.AF_INET, zone: int | None = None) -> memoryview:
    """An IPCTNL_MSG_CT_NEW payload as dumped: nfgenmsg, both tuples, the zone, then the rest."""
    body = struct.pack("=BBH", family, 0, 0) + attr(conntrack.CTA_TUPLE_ORIG | NESTED, orig) + attr(conntrack.CTA_TUPLE_REPLY | NESTED, reply)
    if zone is not None:
        body += attr(conntrack.CTA_ZONE, struct.pack(">H", zone))
    body += attr(3, struct.pack(">I", 0x18)) + attr(7, struct.pack(">I", 120))  # CTA_STATUS, CTA_TIMEOUT
    return memoryview(body)


def test_an_entry_matches_by_its_original_source_and_keeps_its_tuple_as_dumped():
    orig = tuple_(POD4, NODE4, 40000, 80, zone=8)
    entry = conntrack.matching(message(orig, tuple_(NODE4, POD4, 80, 40000)), {POD4.packed})
    assert entry == Entry(socket.AF_INET, orig, None)
    assert entry.describe() == "proto 6 src=198.18.0.5 dst=198.19.0.1 sport=40000 dport=80"


def test_an_entry_matches_by_its_reply_source_after_a_dnat_with_its_zone():
    client = ipaddress.ip_address("198.19.0.9")
    # The client reached the node's address; the pod answers (a hostPort).
    orig = tuple_(client, NODE4, 40000, 8080, proto=17)
    msg = message(orig, tuple_(POD4, client, 80, 40000, proto=17), zone=7)
    entry = conntrack.matching(msg, {POD4.packed})
    assert entry == Entry(socket.AF_INET, orig, struct.pack(">H", 7))
    # Neither source is the address: the original destination is not one of Felix's fields.
    assert conntrack.matching(msg, {NODE4.packed}) is None


def test_ipv6_entries_match_their_own_family_only():
    msg = message(tuple_(POD6, NODE6, 1, 2), tuple_(NODE6, POD6, 2, 1), family=socket.AF_INET6)
    entry = conntrack.matching(msg, {POD6.packed, POD4.packed})
    assert entry is not None and entry.family == socket.AF_INET6
    assert entry.describe() == "proto 6 src=fd00:198:18::5 dst=fd00:198:19::1 sport=1 dport=2"
    assert conntrack.matching(msg, {POD4.packed}) is None


def test_a_message_without_an_original_tuple_or_truncated_is_skipped():
    reply_only = struct.pack("=BBH", socket.AF_INET, 0, 0) + attr(conntrack.CTA_TUPLE_REPLY, tuple_(POD4, NODE4, 1, 2))
    assert conntrack.matching(memoryview(reply_only), {POD4.packed}) is None
    whole = bytes(message(tuple_(POD4, NODE4, 1, 2), tuple_(NODE4, POD4, 2, 1)))
    assert conntrack.matching(memoryview(whole[:20]), {POD4.packed}) is None


@pytest.fixture
def pair():
    """An Rtnl over one end of a socket pair: what it sends arrives at the other end, and nobody answers."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs.setblocking(False)
    with Rtnl(ours) as nl, theirs:
        yield nl, theirs


def test_a_delete_without_an_original_tuple_is_refused_before_anything_is_sent(pair):
    nl, theirs = pair
    with pytest.raises(ConntrackError, match="it would flush the table"):
        conntrack.delete(nl, [Entry(socket.AF_INET, b"")])
    with pytest.raises(BlockingIOError):
        theirs.recv(4096)
    assert issubclass(ConntrackError, DataplaneError)


def test_the_dump_is_one_request_for_both_families_and_waits_until_the_deadline_only(pair):
    nl, theirs = pair
    nl.deadline = time.monotonic() + 0.3
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        conntrack.list_matching(nl, [POD4, POD6])
    elapsed = time.monotonic() - started
    # A generous bound (a loaded machine): it only tells the deadline from the socket's 10 s.
    assert 0.25 < elapsed < 5, elapsed
    packet = theirs.recv(4096)
    length, mtype, flags, _seq, _pid = struct.unpack_from("=IHHII", packet)
    assert (length, mtype, flags) == (len(packet), conntrack.CT_GET, NLM_F_REQUEST | NLM_F_DUMP)
    assert packet[16:] == struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
    with pytest.raises(BlockingIOError):
        theirs.recv(4096)  # one request, not one per address or family


def test_each_delete_carries_the_family_the_original_tuple_as_dumped_and_the_zone(pair):
    nl, theirs = pair
    nl.deadline = time.monotonic() + 0.2
    orig = tuple_(POD4, NODE4, 40000, 80, zone=8)
    entries = [Entry(socket.AF_INET, orig, None), Entry(socket.AF_INET6, tuple_(POD6, NODE6, 1, 2), struct.pack(">H", 7))]
    with pytest.raises(TimeoutError):  # nobody acknowledges
        conntrack.delete(nl, entries)
    packet = theirs.recv(65536)  # both in one send
    first_len = struct.unpack_from("=I", packet)[0]
    first, second = packet[:first_len], packet[first_len:]
    assert struct.unpack_from("=HH", first, 4) == (conntrack.CT_DELETE, NLM_F_REQUEST | 0x4)  # NLM_F_ACK
    assert first[16:] == struct.pack("=BBH", socket.AF_INET, 0, 0) + attr(conntrack.CTA_TUPLE_ORIG, orig)
    assert second[16:20] == struct.pack("=BBH", socket.AF_INET6, 0, 0)
    assert second.endswith(attr(conntrack.CTA_ZONE, struct.pack(">H", 7)))
