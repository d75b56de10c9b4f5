"""dataplane.conntrack against the real kernel (ctnetlink), in namespaces this test makes; Debian's
`conntrack` tool is only the tests' own client: it creates entries (`-I`) and lists them (`-L`).

    peer (198.19.78.1, 198.19.78.3, fd00:198:19:78::1, fd00:198:19:78::3) -- veth -- node (198.19.78.2, fd00:198:19:78::2)

The node namespace tracks connections (an nft table with a `ct state` rule makes the kernel track
in that namespace). Flows in both directions for X (198.19.78.1 / fd00:198:19:78::1) and Y (.3 /
::3): X and Y open TCP connections to the node, and the node sends UDP to X and Y (so X and Y are
reply sources there). Flushing X removes every entry naming X and leaves Y's. Entries the traffic
cannot make (a DNAT's, zones', hundreds of addresses) are inserted with `conntrack -I`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from calico_cni.dataplane import conntrack
from calico_cni.dataplane.conntrack import ConntrackError
from calico_cni.dataplane.rtnl import Rtnl
from tests import netns

NODE4, X4, Y4 = "198.19.78.2", "198.19.78.1", "198.19.78.3"
NODE6, X6, Y6 = "fd00:198:19:78::2", "fd00:198:19:78::1", "fd00:198:19:78::3"
TRACK = """table inet cttest {
	chain input { type filter hook input priority 0; policy accept; ct state new counter; }
	chain output { type filter hook output priority 0; policy accept; ct state new counter; }
}
"""


def ip_(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.fixture
def pair():
    tag = os.getpid()
    node, peer = f"{netns.PREFIX}ctnode-{tag}", f"{netns.PREFIX}ctpeer-{tag}"
    try:
        netns.add(node)
        netns.add(peer)
        netns.ip("link", "add", "ctn0", "netns", node, "type", "veth", "peer", "name", "ctp0", "netns", peer)
        for ns, dev, addrs in ((node, "ctn0", (NODE4, NODE6)), (peer, "ctp0", (X4, Y4, X6, Y6))):
            for addr in addrs:
                plen = "24" if "." in addr else "64"
                netns.ip("-n", ns, "addr", "add", f"{addr}/{plen}", "dev", dev, "nodad")
            netns.ip("-n", ns, "link", "set", dev, "up")
        subprocess.run(["ip", "netns", "exec", node, "nft", "-f", "-"], input=TRACK, text=True, check=True)
        yield node, peer
    finally:
        netns.delete(node)
        netns.delete(peer)


@pytest.fixture
def scratch():
    """An empty namespace for entries inserted with `conntrack -I` (no traffic needed)."""
    name = f"{netns.PREFIX}ctscratch-{os.getpid()}"
    try:
        yield netns.add(name)
    finally:
        netns.delete(name)


def _entries(ns: str) -> list[str]:
    """`conntrack -L` in namespace `ns`, both families, one line per entry."""
    lines = []
    for family in ("ipv4", "ipv6"):
        proc = subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-L", "-f", family], capture_output=True, text=True, check=True)
        lines += proc.stdout.splitlines()
    return lines


def _insert(ns: str, *specs: str) -> None:
    """`conntrack -I <spec>` for each spec, in namespace `ns` (one shell for all of them)."""
    script = "\n".join(f"conntrack -I {spec} >/dev/null 2>&1 || {{ echo 'failed: {spec}' >&2; exit 1; }}" for spec in specs)
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-e"], input=script, text=True, check=True)


def tcp(src: str, dst: str, sport: int = 1000, dport: int = 80, extra: str = "") -> str:
    """An established TCP entry's `conntrack -I` arguments."""
    return f"-p tcp -s {src} -d {dst} --sport {sport} --dport {dport} --state ESTABLISHED -u SEEN_REPLY -t 300 {extra}".strip()


def udp(src: str, dst: str, sport: int = 2000, dport: int = 53, extra: str = "") -> str:
    """A UDP entry's `conntrack -I` arguments."""
    return f"-p udp -s {src} -d {dst} --sport {sport} --dport {dport} -t 300 {extra}".strip()


def _names(line: str, address: str) -> bool:
    return re.search(rf"(src|dst)={re.escape(address)}(\s|$)", line) is not None


def _original(line: str) -> tuple[str, str]:
    """An entry's original source and destination (the first src= and dst= of the line)."""
    return re.search(r"src=(\S+)", line).group(1), re.search(r"dst=(\S+)", line).group(1)


def _flows(node: str, peer: str) -> list[socket.socket]:
    """TCP from X and Y to the node (listener in the node), UDP from the node to X and Y; both
    families. The sockets stay open so the TCP entries stay ESTABLISHED."""
    kept = []
    with netns.inside(node):
        listeners = {}
        for family, addr in ((socket.AF_INET, NODE4), (socket.AF_INET6, NODE6)):
            server = socket.socket(family, socket.SOCK_STREAM)
            server.bind((addr, 0))
            server.listen(8)
            listeners[addr] = server
            kept.append(server)
        for family, src, dst in ((socket.AF_INET, NODE4, X4), (socket.AF_INET, NODE4, Y4), (socket.AF_INET6, NODE6, X6), (socket.AF_INET6, NODE6, Y6)):
            sender = socket.socket(family, socket.SOCK_DGRAM)
            sender.bind((src, 0))
            sender.sendto(b"hello", (dst, 9))
            kept.append(sender)
    with netns.inside(peer):
        for family, src, dst in ((socket.AF_INET, X4, NODE4), (socket.AF_INET, Y4, NODE4), (socket.AF_INET6, X6, NODE6), (socket.AF_INET6, Y6, NODE6)):
            client = socket.socket(family, socket.SOCK_STREAM)
            client.bind((src, 0))
            client.settimeout(5)
            client.connect((dst, listeners[dst].getsockname()[1]))
            kept.append(client)
    return kept


# Addresses with no entry, to flush many at once: the one dump serves them all.
IDLE = [ip_(f"198.18.250.{i}") for i in range(1, 11)]


@pytest.mark.parametrize("extra", [[], IDLE], ids=["two-addresses", "twelve-addresses"])
def test_flush_removes_the_addresses_entries_in_both_directions_and_keeps_the_others(pair, extra):
    node, peer = pair
    kept = _flows(node, peer)
    try:
        before = _entries(node)
        for address in (X4, Y4, X6, Y6):
            # One TCP entry where the address is the original source, one UDP entry where it is
            # the reply source.
            assert any(line.startswith("tcp") and _original(line)[0] == address for line in before), (address, before)
            assert any(line.startswith("udp") and _original(line)[1] == address for line in before), (address, before)
        with netns.inside(node):
            started = time.perf_counter()
            conntrack.flush_addresses([ip_(X4), ip_(X6), *extra])
            elapsed = time.perf_counter() - started
        after = _entries(node)
        assert not [line for line in after if _names(line, X4) or _names(line, X6)], after
        for address in (Y4, Y6):
            assert [line for line in after if line.startswith("tcp") and _names(line, address)], (address, after)
            assert [line for line in after if line.startswith("udp") and _names(line, address)], (address, after)
        # Nothing left to delete is success too.
        with netns.inside(node):
            conntrack.flush_addresses([ip_(X4), ip_(X6), *extra])
        print(f"flush of {2 + len(extra)} addresses: {elapsed * 1000:.1f} ms")
    finally:
        for sock in kept:
            sock.close()


def test_a_dnatted_flows_reply_source_and_zoned_entries_are_flushed(scratch):
    pod, other, node, client = "198.18.7.5", "198.18.7.6", "198.19.7.1", "198.19.7.9"
    pod6, other6 = "fd00:198:18:7::5", "fd00:198:18:7::6"
    _insert(
        scratch,
        # A hostPort: the client reached the node's address, DNAT'd to the pod (reply source).
        tcp(client, node, 40000, 8080, f"-r {pod} -q {client} --reply-port-src 80 --reply-port-dst 40000"),
        tcp(client, node, 40001, 8080, f"-r {other} -q {client} --reply-port-src 80 --reply-port-dst 40001"),
        # Zones: both directions (CTA_ZONE), the original direction's only, the reply's only.
        udp(pod, node, 2001, 53, "-w 7"),
        udp(pod, node, 2002, 53, "--orig-zone 8"),
        udp(pod, node, 2003, 53, "--reply-zone 9"),
        udp(other, node, 2001, 53, "-w 7"),
        tcp(pod6, "fd00:198:19:7::1", extra="-w 7"),
        tcp(other6, "fd00:198:19:7::1", extra="-w 7"),
    )
    assert len(_entries(scratch)) == 8
    with netns.inside(scratch):
        conntrack.flush_addresses([ip_(pod), ip_(pod6)])
    left = _entries(scratch)
    assert not [line for line in left if _names(line, pod) or _names(line, pod6)], left
    assert len(left) == 3, left
    assert all(_names(line, other) or _names(line, other6) for line in left), left


def test_many_addresses_take_one_dump_and_several_sends_of_deletes(scratch):
    # More matching entries than one send carries (PER_SEND), of 150 addresses; 20 others stay.
    gone = [f"198.18.{8 + i // 200}.{i % 200 + 1}" for i in range(150)]
    stay = [f"198.18.20.{i + 1}" for i in range(20)]
    _insert(
        scratch,
        *[tcp(a, "198.19.8.1") for a in gone + stay],
        *[
            udp("198.19.8.1", "198.19.8.2", 3000 + i, 53, f"-r {a} -q 198.19.8.1 --reply-port-src 53 --reply-port-dst {3000 + i}")
            for i, a in enumerate(gone[:30])
        ],
    )
    assert 180 > conntrack.PER_SEND
    assert len(_entries(scratch)) == 200
    with netns.inside(scratch):
        started = time.perf_counter()
        conntrack.flush_addresses([ip_(a) for a in gone])
        elapsed = time.perf_counter() - started
    left = _entries(scratch)
    assert sorted(_original(line)[0] for line in left) == sorted(stay), left
    print(f"flush of 150 addresses (180 entries): {elapsed * 1000:.1f} ms")


def test_nothing_to_flush_is_success(scratch):
    _insert(scratch, tcp("198.18.9.1", "198.19.9.1"))
    with netns.inside(scratch):
        conntrack.flush_addresses([ip_("198.18.9.2"), ip_("fd00:198:18:9::2")])
        conntrack.flush_addresses([])
    assert len(_entries(scratch)) == 1


def test_an_entry_gone_between_the_dump_and_its_delete_is_success(scratch):
    _insert(scratch, tcp("198.18.10.1", "198.19.10.1", 1001), tcp("198.18.10.1", "198.19.10.1", 1002), tcp("198.18.10.1", "198.19.10.1", 1003))
    with netns.inside(scratch), Rtnl.open(conntrack.NETLINK_NETFILTER) as nl:
        entries = conntrack.list_matching(nl, [ip_("198.18.10.1")])
        assert len(entries) == 3
        # Someone else deletes one (a DEL's flush racing the pass's, or the entry expiring).
        subprocess.run(["conntrack", "-D", "-p", "tcp", "-s", "198.18.10.1", "--sport", "1002"], capture_output=True, check=True)
        assert conntrack.delete(nl, entries) == 2
        assert conntrack.delete(nl, entries) == 0
    assert _entries(scratch) == []


def test_the_flush_acts_in_the_calling_threads_namespace_only(pair, scratch):
    node, peer = pair
    _insert(node, tcp(X4, NODE4))
    _insert(scratch, tcp(X4, NODE4))
    errors = []

    def in_node() -> None:
        try:
            with netns.inside(node):
                conntrack.flush_addresses([ip_(X4)])
        except (ConntrackError, OSError) as exc:  # reported to the test's thread
            errors.append(exc)

    # Another thread enters the node namespace; this one stays where it is (setns is per thread).
    with netns.inside(scratch):
        worker = threading.Thread(target=in_node)
        worker.start()
        worker.join()
    assert not errors, errors
    assert not [line for line in _entries(node) if _names(line, X4)]
    assert [line for line in _entries(scratch) if _names(line, X4)]


def test_a_kernel_refusal_is_one_line_and_deletes_nothing_else(scratch):
    _insert(scratch, tcp("198.18.11.1", "198.19.11.1"), tcp("198.18.11.2", "198.19.11.1"))
    with netns.inside(scratch), Rtnl.open(conntrack.NETLINK_NETFILTER) as nl:
        (entry,) = conntrack.list_matching(nl, [ip_("198.18.11.1")])
        # A family ctnetlink does not know: the kernel refuses the tuple (EOPNOTSUPP) before any lookup.
        bogus = conntrack.Entry(socket.AF_UNSPEC, entry.orig, entry.zone)
        with pytest.raises(ConntrackError) as caught:
            conntrack.delete(nl, [bogus])
    message = str(caught.value)
    assert message == f"deleting the conntrack entry proto 6 src=198.18.11.1 dst=198.19.11.1 sport=1000 dport=80: {os.strerror(errno.EOPNOTSUPP)}", message
    assert "\n" not in message
    assert len(_entries(scratch)) == 2


def test_the_deadline_bounds_the_flush(scratch):
    _insert(scratch, tcp("198.18.12.1", "198.19.12.1"))
    with netns.inside(scratch), pytest.raises(ConntrackError, match=r"^listing conntrack entries did not finish within 0 s$"):
        conntrack.flush_addresses([ip_("198.18.12.1")], timeout=0)
    assert len(_entries(scratch)) == 1


def test_flushes_in_a_namespace_reuse_one_socket_and_a_failed_flush_does_not_keep_its_own(scratch, monkeypatch):
    """Closing a netfilter socket waits out nf_tables' pending destruction (an RCU grace period)
    after a commit that deleted chains, as calico-node's pass for a DEL does: the socket stays open
    from one flush to the next in its namespace. One that failed (answers maybe unread) is closed."""
    opened: list[Rtnl] = []
    original = Rtnl.open.__func__

    def counting(cls, protocol: int = conntrack.NETLINK_NETFILTER) -> Rtnl:
        nl = original(cls, protocol)
        opened.append(nl)
        return nl

    monkeypatch.setattr(Rtnl, "open", classmethod(counting))
    _insert(scratch, tcp("198.18.13.1", "198.19.13.1"), tcp("198.18.13.2", "198.19.13.1"), tcp("198.18.13.3", "198.19.13.1"))
    with netns.inside(scratch):
        conntrack.flush_addresses([ip_("198.18.13.1")])
        conntrack.flush_addresses([ip_("198.18.13.2")])
        assert len(opened) == 1 and opened[0].sock.fileno() != -1
        with pytest.raises(ConntrackError, match="did not finish within 0 s"):
            conntrack.flush_addresses([ip_("198.18.13.3")], timeout=0)
        assert opened[0].sock.fileno() == -1
        assert len(_entries(scratch)) == 1
        conntrack.flush_addresses([ip_("198.18.13.3")])
        assert len(opened) == 2
    assert _entries(scratch) == []
