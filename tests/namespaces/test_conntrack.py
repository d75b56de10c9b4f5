"""dataplane.conntrack with the real `conntrack` tool and kernel, in two namespaces this test makes:

    peer (198.19.78.1, 198.19.78.3, fd00:198:19:78::1, fd00:198:19:78::3) -- veth -- node (198.19.78.2, fd00:198:19:78::2)

The node namespace tracks connections (an nft table with a `ct state` rule makes the kernel track
in that namespace). Flows in both directions for X (198.19.78.1 / fd00:198:19:78::1) and Y (.3 /
::3): X and Y open TCP connections to the node, and the node sends UDP to X and Y (so X and Y are
reply sources there). Flushing X removes every entry naming X and leaves Y's.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import time

import pytest

from calico_cni.dataplane import conntrack
from tests import netns

NODE4, X4, Y4 = "198.19.78.2", "198.19.78.1", "198.19.78.3"
NODE6, X6, Y6 = "fd00:198:19:78::2", "fd00:198:19:78::1", "fd00:198:19:78::3"
TRACK = """table inet cttest {
	chain input { type filter hook input priority 0; policy accept; ct state new counter; }
	chain output { type filter hook output priority 0; policy accept; ct state new counter; }
}
"""


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


def _entries(node: str) -> list[str]:
    """`conntrack -L` in the node namespace, both families, one line per entry."""
    lines = []
    for family in ("ipv4", "ipv6"):
        proc = subprocess.run(["ip", "netns", "exec", node, "conntrack", "-L", "-f", family], capture_output=True, text=True, check=True)
        lines += proc.stdout.splitlines()
    return lines


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


# Enough addresses that the flush lists the table once and deletes what matched (BATCH).
IDLE = [ipaddress.ip_address(f"198.18.250.{i}") for i in range(1, conntrack.BATCH + 1)]


@pytest.mark.parametrize("extra", [[], IDLE], ids=["per-address", "batch"])
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
            conntrack.flush_addresses([ipaddress.ip_address(X4), ipaddress.ip_address(X6), *extra])
            elapsed = time.perf_counter() - started
        after = _entries(node)
        assert not [line for line in after if _names(line, X4) or _names(line, X6)], after
        for address in (Y4, Y6):
            assert [line for line in after if line.startswith("tcp") and _names(line, address)], (address, after)
            assert [line for line in after if line.startswith("udp") and _names(line, address)], (address, after)
        # Nothing left to delete is success too.
        with netns.inside(node):
            conntrack.flush_addresses([ipaddress.ip_address(X4), ipaddress.ip_address(X6), *extra])
        print(f"flush of {2 + len(extra)} addresses: {elapsed * 1000:.1f} ms")
    finally:
        for sock in kept:
            sock.close()
