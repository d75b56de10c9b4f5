"""The daemon's nftables tables with the real nft and kernel, in namespaces these tests make:
dataplane.nftables (one transaction, absent tables, errors) and the rules node.nft_rules renders,
checked by traffic between a "pod", a "node" and an "outside" namespace:

    pod (198.18.0.5/32, eth0) -- calitest0 | node (198.19.0.1/24, up0) -- up0 | outside (198.19.0.2/24)
    pod (fd00:198:18::5/128)                 | node (fd00:198:19::1/64)      | outside (fd00:198:19::2/64)

The outside has no route back to the pools (of either family), so a pod reaches it only when NAT
outgoing rewrites the source to the node's address; the outside's own tables (`ip observe`, `ip6
observe`, counters) show what arrived.
Both node and outside also carry a `vxlan.calico` device over that link (tunnel addresses
198.18.0.1 and 198.18.1.1) for the tunnel-source masquerade.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from calico_cni.dataplane import nftables
from calico_cni.dataplane.nftables import NftError
from calico_cni.node import rules
from calico_cni.node.nft_rules import tables
from calico_cni.node.nft_tables import script
from calico_cni.node.nft_writer import NftModule
from calico_cni.node.rules import RulesController
from calico_cni.node.syncer import Cache
from tests import netns
from tests.unit.test_nft_rules import ME, felix, node, pool, view

NODE_ADDR, OUTSIDE_ADDR, POD_ADDR = "198.19.0.1", "198.19.0.2", "198.18.0.5"
NODE_TUNNEL, OUTSIDE_TUNNEL = "198.18.0.1", "198.18.1.1"
NODE_ADDR6, OUTSIDE_ADDR6, POD_ADDR6 = "fd00:198:19::1", "fd00:198:19::2", "fd00:198:18::5"
# Calico's host-side veth MAC, and the link-local address the pod's IPv6 default route goes via.
HOST_VETH_MAC, HOST_VETH_LL = "ee:ee:ee:ee:ee:ee", "fe80::ecee:eeff:feee:eeee"
OBSERVE = """table ip observe {}
delete table ip observe
table ip observe {
	chain input {
		type filter hook input priority -10; policy accept;
		ip saddr %(node)s icmp type echo-request counter
		ip saddr %(pod)s icmp type echo-request counter
		iifname "vxlan.calico" ip saddr %(tunnel)s icmp type echo-request counter
		iifname "vxlan.calico" ip saddr %(node)s icmp type echo-request counter
		iifname "vxlan.calico" ip saddr %(pod)s icmp type echo-request counter
		udp dport 4789 counter
	}
}
""" % {"node": NODE_ADDR, "pod": POD_ADDR, "tunnel": NODE_TUNNEL}
OBSERVE6 = """table ip6 observe {}
delete table ip6 observe
table ip6 observe {
	chain input {
		type filter hook input priority -10; policy accept;
		ip6 saddr %(node)s icmpv6 type echo-request counter
		ip6 saddr %(pod)s icmpv6 type echo-request counter
		udp dport 4789 counter
	}
}
""" % {"node": NODE_ADDR6, "pod": POD_ADDR6}


def sh(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {ns}: {proc.stderr.strip()}")
    return proc


@contextlib.contextmanager
def inside(ns: str):
    """Run the block's nft calls (subprocesses inherit the thread's namespace) in `ns`."""
    previous = netns.enter(ns)
    try:
        yield
    finally:
        netns.leave(previous)


def counters(ns: str, family: str, table: str, chain: str) -> list[tuple[str, int]]:
    """(rule text without its counter, packets) per counting rule of a chain."""
    out = []
    for line in sh(ns, "nft", "list", "chain", family, table, chain).stdout.splitlines():
        m = re.search(r"^\s*(.*?)\s*counter packets (\d+) bytes \d+(.*)$", line)
        if m:
            out.append(((m.group(1) + m.group(3)).strip(), int(m.group(2))))
    return out


def reaches(read, expected, attempts: int = 100):
    """`read()` once it gives `expected`, else its last value after `attempts` tries 0.05 s apart
    (a packet crosses a veth in a softirq, not within the sending call): a functional wait, not a
    timing assertion."""
    value = read()
    for _ in range(attempts):
        if value == expected:
            break
        time.sleep(0.05)
        value = read()
    return value


def ping(ns: str, dst: str, *extra: str) -> bool:
    return sh(ns, "ping", "-n", "-c", "1", "-W", "1", *extra, dst, check=False).returncode == 0


def udp_send(ns: str, dst: str, port: int) -> None:
    """One UDP datagram from inside `ns` (the socket belongs to the namespace it was made in)."""
    with inside(ns):
        s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.sendto(b"vxlan?", (dst, port))


@pytest.fixture
def lab():
    """pod, node and outside namespaces wired as the module docstring draws them."""
    tag = os.getpid()
    names = {role: netns.add(f"{netns.PREFIX}nft{role}-{tag}") for role in ("pod", "node", "outside")}
    try:
        n, o, p = names["node"], names["outside"], names["pod"]
        netns.ip("-n", n, "link", "add", "up0", "type", "veth", "peer", "name", "up0", "netns", o)
        netns.ip("-n", n, "addr", "add", f"{NODE_ADDR}/24", "dev", "up0")
        netns.ip("-n", o, "addr", "add", f"{OUTSIDE_ADDR}/24", "dev", "up0")
        netns.ip("-n", n, "addr", "add", f"{NODE_ADDR6}/64", "dev", "up0", "nodad")
        netns.ip("-n", o, "addr", "add", f"{OUTSIDE_ADDR6}/64", "dev", "up0", "nodad")
        for ns in (n, o):
            sh(ns, "sysctl", "-q", "-w", "net.ipv6.conf.up0.accept_dad=0")  # link-local usable at once
            netns.ip("-n", ns, "link", "set", "up0", "up")
        netns.ip("-n", n, "route", "add", "default", "via", OUTSIDE_ADDR)
        netns.ip("-n", n, "-6", "route", "add", "default", "via", OUTSIDE_ADDR6)
        # The pod, wired the Calico way: /32 (/128) on eth0, IPv4 default via 169.254.1.1 answered
        # by proxy ARP, IPv6 default via the host veth's link-local address. No DAD on the veth
        # pair, so the link-local addresses are usable at once.
        netns.ip("-n", n, "link", "add", "calitest0", "address", HOST_VETH_MAC, "type", "veth", "peer", "name", "eth0", "netns", p)
        sh(n, "sysctl", "-q", "-w", "net.ipv6.conf.calitest0.accept_dad=0")
        sh(p, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=0")
        netns.ip("-n", n, "link", "set", "calitest0", "up")
        netns.ip("-n", n, "route", "add", f"{POD_ADDR}/32", "dev", "calitest0")
        netns.ip("-n", n, "-6", "route", "add", f"{POD_ADDR6}/128", "dev", "calitest0")
        netns.ip("-n", p, "addr", "add", f"{POD_ADDR}/32", "dev", "eth0")
        netns.ip("-n", p, "addr", "add", f"{POD_ADDR6}/128", "dev", "eth0", "nodad")
        netns.ip("-n", p, "link", "set", "eth0", "up")
        netns.ip("-n", p, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        netns.ip("-n", p, "route", "add", "default", "via", "169.254.1.1")
        netns.ip("-n", p, "-6", "route", "add", "default", "via", HOST_VETH_LL, "dev", "eth0")
        sh(n, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv4.conf.calitest0.proxy_arp=1", "net.ipv6.conf.all.forwarding=1")
        # A VXLAN pair over up0, as the encapsulation controller would make it.
        for ns, local, remote, mine, theirs, mac, peer_mac in (
            (n, NODE_ADDR, OUTSIDE_ADDR, NODE_TUNNEL, OUTSIDE_TUNNEL, "66:00:00:00:00:01", "66:00:00:00:00:02"),
            (o, OUTSIDE_ADDR, NODE_ADDR, OUTSIDE_TUNNEL, NODE_TUNNEL, "66:00:00:00:00:02", "66:00:00:00:00:01"),
        ):
            netns.ip(
                "-n",
                ns,
                "link",
                "add",
                "vxlan.calico",
                "address",
                mac,
                "type",
                "vxlan",
                "id",
                "4096",
                "local",
                local,
                "dev",
                "up0",
                "dstport",
                "4789",
                "nolearning",
            )
            netns.ip("-n", ns, "addr", "add", f"{mine}/32", "dev", "vxlan.calico")
            netns.ip("-n", ns, "link", "set", "vxlan.calico", "up")
            netns.ip("-n", ns, "neigh", "add", theirs, "lladdr", peer_mac, "dev", "vxlan.calico", "nud", "permanent")
            netns.ip("-n", ns, "route", "add", f"{theirs}/32", "via", theirs, "dev", "vxlan.calico", "onlink")
            subprocess.run(
                ["ip", "netns", "exec", ns, "bridge", "fdb", "add", peer_mac, "dev", "vxlan.calico", "dst", remote, "self", "permanent"],
                check=True,
                capture_output=True,
            )
        subprocess.run(["ip", "netns", "exec", o, "nft", "-f", "-"], input=OBSERVE + OBSERVE6, text=True, check=True, capture_output=True, timeout=30)
        yield names
    finally:
        for name in names.values():
            netns.delete(name)


def observed(lab, family: str = "ip") -> dict[str, int]:
    """What the outside counted (`family` "ip" or "ip6"), by rule text."""
    return dict(counters(lab["outside"], family, "observe", "input"))


def program(ns: str, *items) -> dict[int, str]:
    """Apply this node's rendered tables in `ns`; their listings."""
    with inside(ns):
        listed = {}
        for family, table in tables(view(*items)).items():
            nftables.apply(script(table))
            listed[family] = nftables.list_table(table.family, "calico")
    return listed


# --- dataplane.nftables ----------------------------------------------------------------------


@pytest.fixture
def bare():
    name = netns.add(f"{netns.PREFIX}nftbare-{os.getpid()}")
    try:
        with inside(name):
            yield name
    finally:
        netns.delete(name)


FULL = (
    pool("a", "198.18.0.0/20", natOutgoing=True, vxlanMode="Always"),
    pool("off", "198.18.64.0/20", disabled=True),
    pool("v6", "fd00:198:18::/48", natOutgoing=True, vxlanMode="CrossSubnet"),
    node(ME, "198.19.1.1/24", "fd00:198:19::1/64", ipv4VXLANTunnelAddr="198.18.0.1", ipv6VXLANTunnelAddr="fd00:198:18::1"),
    node("node-b", "198.19.1.2/24", "fd00:198:19::2/64", ipv4VXLANTunnelAddr="198.18.0.65", ipv6VXLANTunnelAddr="fd00:198:18::41"),
)


def test_apply_is_idempotent_and_nft_accepts_every_section(bare):
    assert nftables.list_table("ip", "calico") is None
    rendered = tables(view(*FULL))
    first, again = {}, {}
    for listed in (first, again):
        for family, t in rendered.items():
            nftables.apply(script(t))
            listed[family] = nftables.list_table(t.family, "calico")
    assert first == again
    assert "vxlan-v6.calico" in again[6] and "fd00:198:19::2" in again[6] and "fd00:198:18::/48" in again[6]
    assert "snat" not in again[4] and "198.19.1.2" in again[4]


def test_a_table_changed_by_hand_is_replaced_whole_and_a_bad_script_changes_nothing(bare):
    t = tables(view(*FULL))[4]
    nftables.apply(script(t))
    good = nftables.list_table("ip", "calico")
    subprocess.run(["nft", "add", "rule", "ip", "calico", "filter-input", "tcp", "dport", "22", "drop"], check=True)
    subprocess.run(["nft", "add", "chain", "ip", "calico", "stray"], check=True)
    assert nftables.list_table("ip", "calico") != good
    nftables.apply(script(t))
    assert nftables.list_table("ip", "calico") == good
    # One transaction: the delete of the table does not happen when a later line is refused.
    with pytest.raises(NftError, match=r"^nft refused the ruleset \(nothing of it was applied\): .*Error"):
        nftables.apply(script(t).replace("counter drop", "counter dorp", 1))
    assert nftables.list_table("ip", "calico") == good


def test_foreign_tables_are_left_untouched(bare):
    subprocess.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.0.0/8", "-j", "MASQUERADE"], check=True)
    subprocess.run(
        ["nft", "-f", "-"], input="table ip other {\n chain c {\n  type filter hook input priority 0; policy accept;\n  counter\n }\n}\n", text=True, check=True
    )
    before = {name: nftables.list_table("ip", name) for name in ("nat", "other")}
    assert all(before.values())
    for t in tables(view(*FULL)).values():
        nftables.apply(script(t))
    for family in ("ip", "ip6"):
        nftables.apply(f"table {family} calico {{}}\ndelete table {family} calico\n")
    assert nftables.list_table("ip", "calico") is None
    assert {name: nftables.list_table("ip", name) for name in ("nat", "other")} == before


def test_dropping_chains_names_other_tables_base_chains_that_drop(bare):
    """dataplane.nftables.dropping_chains against the real nft: base chains of other tables on the
    forward and input hooks whose policy is drop, in any family and however they were made
    (iptables-nft too); accepting chains, other hooks, regular chains and our own `ip`/`ip6 calico`
    tables are not named (someone's `inet calico` is)."""
    assert nftables.dropping_chains() == []
    subprocess.run(["iptables", "-P", "FORWARD", "DROP"], check=True)  # iptables-nft: table ip filter, chain FORWARD
    foreign = """table inet guard {
 chain drop-fwd { type filter hook forward priority 0; policy drop; }
 chain drop-in { type filter hook input priority 0; policy drop; }
 chain drop-out { type filter hook output priority 0; policy drop; }
 chain open-fwd { type filter hook forward priority 10; policy accept; }
 chain plain { counter; }
}
table ip6 other6 {
 chain f { type filter hook forward priority 0; policy drop; }
}
table ip calico {
 chain policy-forward { type filter hook forward priority 0; policy drop; }
}
table ip6 calico {
 chain policy-input { type filter hook input priority 0; policy drop; }
}
table inet calico {
 chain theirs { type filter hook forward priority 0; policy drop; }
}
"""
    subprocess.run(["nft", "-f", "-"], input=foreign, text=True, check=True)
    assert nftables.dropping_chains() == [
        "inet calico theirs (hook forward)",
        "inet guard drop-fwd (hook forward)",
        "inet guard drop-in (hook input)",
        "ip filter FORWARD (hook forward)",
        "ip6 other6 f (hook forward)",
    ]
    assert nftables.dropping_chains(hooks=("output",)) == ["inet guard drop-out (hook output)"]
    assert "ip calico policy-forward (hook forward)" in nftables.dropping_chains(exclude="guard")


def test_errors_are_one_line_that_says_what_to_do(bare, monkeypatch):
    with pytest.raises(NftError, match="not an nftables family"):
        nftables.list_table("ipx", "calico")
    with pytest.raises(NftError, match="not a table name"):
        nftables.list_table("ip", "bad name")
    # The library is loaded on first use: as if it had never been, under a name nowhere installed.
    monkeypatch.setattr(nftables, "_library", None)
    monkeypatch.setattr(nftables, "LIBRARY", "libnftables-not-installed-here.so.1")
    with pytest.raises(NftError, match=r"^libnftables \(libnftables-not-installed-here.so.1\) is not installed: install Debian's nftables package"):
        nftables.apply("table ip calico {}\n")
    monkeypatch.setattr(nftables, "NFT", "nft-not-installed-here")  # listings run the nft command
    with pytest.raises(NftError, match=r"^nft-not-installed-here is not installed: install Debian's nftables package"):
        nftables.list_table("ip", "calico")


REFUSED = """table ip calico {
	chain filter-input {
		type filter hook input priority 0; policy accept;
		tcp dport 22 counter dorp
	}
}
"""


def test_a_refused_script_is_nfts_own_error_naming_its_line(bare):
    """The message is what `nft -f -` printed for the same script (the line and column too), on
    one line; nothing of the script was applied."""
    for text in (REFUSED, "add rule ip nosuch c counter\n", "junk"):
        nft = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True, check=False)
        assert nft.returncode == 1 and nft.stderr.startswith("/dev/stdin:")
        with pytest.raises(NftError) as refused:
            nftables.apply(text)
        assert str(refused.value) == f"nft refused the ruleset (nothing of it was applied): {nft.stderr.splitlines()[0]}"
    assert nftables.list_table("ip", "calico") is None and nftables.list_table("ip", "nosuch") is None


def test_a_listing_is_exactly_what_nft_s_lists(bare):
    """What the library applied, list_table gives as `nft -s list table` prints it (no counter
    values: the writer compares listings)."""
    for t in tables(view(*FULL)).values():
        nftables.apply(script(t))
    subprocess.run(["nft", "add", "element", "ip", "calico", "all-vxlan-net", "{ 198.19.9.9 }"], check=True)
    for family in ("ip", "ip6"):
        nft = subprocess.run(["nft", "-s", "list", "table", family, "calico"], capture_output=True, text=True, check=True).stdout
        assert nftables.list_table(family, "calico") == nft
    assert "198.19.9.9" in nftables.list_table("ip", "calico")
    assert "counter packets" not in nftables.list_table("ip", "calico")


@pytest.fixture
def two():
    """Two more namespaces, A and B."""
    names = [netns.add(f"{netns.PREFIX}nft{side}-{os.getpid()}") for side in "ab"]
    try:
        yield names
    finally:
        for name in names:
            netns.delete(name)


def tables_in(ns: str) -> list[str]:
    return sh(ns, "nft", "list", "tables").stdout.split("\n")[:-1]


def test_every_call_acts_in_the_namespace_its_thread_is_in_then(bare, two):
    """A context's socket stays in the namespace it was made in: each call must still land in the
    namespace of its calling thread at that moment, whatever namespace another thread, or this one
    before, used."""
    a, b = two
    with inside(b):
        nftables.apply("table ip made_in_b {}\n")  # B's context, made by this thread
    errors: list[BaseException] = []

    def in_a() -> None:
        try:
            with inside(a):
                nftables.apply("table ip from_a_thread {}\n")
                assert nftables.list_table("ip", "made_in_b") is None
            with inside(b):  # the same thread, now in B
                nftables.apply("table ip same_thread_in_b {}\n")
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    thread = threading.Thread(target=in_a)
    thread.start()
    thread.join(30)
    assert not errors and not thread.is_alive()
    with inside(a):
        nftables.apply("table ip main_thread_in_a {}\n")
    nftables.apply("table ip main_thread_in_bare {}\n")
    assert tables_in(a) == ["table ip from_a_thread", "table ip main_thread_in_a"]
    assert tables_in(b) == ["table ip made_in_b", "table ip same_thread_in_b"]
    assert tables_in(bare) == ["table ip main_thread_in_bare"]


def test_threads_apply_and_list_at_once(bare, two):
    """Threads in two namespaces apply and list at the same time: every transaction lands whole,
    in its thread's namespace (libnftables' process-wide state is behind one lock)."""
    names = [bare, *two]
    rounds = 30
    errors: list[BaseException] = []

    def work(ns: str, me: int) -> None:
        try:
            with inside(ns):
                for step in range(rounds):
                    nftables.apply(
                        f"table ip t{me} {{}}\ndelete table ip t{me}\ntable ip t{me} {{\n\tset s {{\n\t\ttype ipv4_addr\n\t\telements = {{ 198.18.{me}.{step + 1} }}\n\t}}\n}}\n"
                    )
                    listed = nftables.list_table("ip", f"t{me}")
                    assert listed is not None and f"198.18.{me}.{step + 1}" in listed, listed
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(names[i % 3], i)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[0]
    for i in range(6):
        listed = sh(names[i % 3], "nft", "list", "table", "ip", f"t{i}").stdout
        assert f"elements = {{ 198.18.{i}.{rounds} }}" in listed
    assert sorted(tables_in(names[0])) == ["table ip t0", "table ip t3"]


def test_the_plugin_path_loads_neither_this_module_nor_libnftables():
    """An exec'd plugin pays for every import: dataplane.nftables is the daemon's; and the library
    is loaded on the first call, not at import."""
    code = (
        "import sys, calico_cni.plugins.calico, calico_cni.plugins.dispatch\n"
        "print('calico_cni.dataplane.nftables' in sys.modules)\n"
        "import calico_cni.node.nft_writer\n"
        "print('libnftables' in open('/proc/self/maps').read())\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30).stdout.split()
    assert loaded == ["False", "False"]


# --- the rules, by traffic ---------------------------------------------------------------------

OUTBOUND = "ip saddr 198.19.0.1 icmp type echo-request"
FROM_POD = "ip saddr 198.18.0.5 icmp type echo-request"


def test_nat_outgoing_lets_a_pod_reach_the_outside_as_the_node(lab):
    program(lab["node"], pool("a", "198.18.0.0/24", natOutgoing=True))
    assert ping(lab["pod"], OUTSIDE_ADDR)
    seen = observed(lab)
    assert seen[OUTBOUND] == 1 and seen[FROM_POD] == 0


def test_without_nat_outgoing_the_outside_sees_the_pod_and_cannot_answer(lab):
    program(lab["node"], pool("a", "198.18.0.0/24"))
    assert not ping(lab["pod"], OUTSIDE_ADDR)
    seen = observed(lab)
    assert seen[FROM_POD] == 1 and seen[OUTBOUND] == 0


def test_traffic_to_another_pool_is_never_nated(lab):
    """The outside holds an address of a (disabled) pool: a pod's packet to it keeps its source."""
    netns.ip("-n", lab["outside"], "addr", "add", "198.18.9.9/32", "dev", "lo")
    netns.ip("-n", lab["outside"], "route", "add", "198.18.0.0/24", "via", NODE_ADDR)
    program(lab["node"], pool("a", "198.18.0.0/24", natOutgoing=True), pool("b", "198.18.9.0/24", disabled=True))
    assert ping(lab["pod"], "198.18.9.9")
    seen = observed(lab)
    assert seen[FROM_POD] == 1 and seen[OUTBOUND] == 0


VXLAN = (
    pool("vx", "198.18.0.0/16", vxlanMode="Always"),
    node(ME, f"{NODE_ADDR}/24", ipv4VXLANTunnelAddr=NODE_TUNNEL),
    node("node-c", "198.19.0.3/24", ipv4VXLANTunnelAddr="198.18.2.1"),
)


def test_vxlan_port_accepts_only_other_nodes(lab):
    """UDP to the VXLAN port from an address that is no node's is dropped at input, from a node
    with a VTEP it arrives. The port is FelixConfiguration's (4790 here, so the kernel's own
    vxlan.calico socket on 4789 does not take the datagram before this test's listener)."""
    n = lab["node"]
    with inside(n):
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with listener:
        listener.bind((NODE_ADDR, 4790))
        listener.settimeout(5)
        program(n, *VXLAN, felix(vxlanPort=4790))
        udp_send(lab["outside"], NODE_ADDR, 4790)  # 198.19.0.2 is no node: dropped
        expected = [("udp dport 4790 ip saddr != @all-vxlan-net fib daddr type local drop", 1)]
        assert reaches(lambda: counters(n, "ip", "calico", "filter-input"), expected) == expected
        # Now the outside is a node with a VTEP: accepted, and it arrives (the first one did not:
        # the listener's first datagram is the second one sent).
        program(n, *VXLAN, felix(vxlanPort=4790), node("outside", f"{OUTSIDE_ADDR}/24", ipv4VXLANTunnelAddr=OUTSIDE_TUNNEL))
        udp_send(lab["outside"], NODE_ADDR, 4790)
        data, (source, _) = listener.recvfrom(100)
        assert (data, source) == (b"vxlan?", OUTSIDE_ADDR)
        assert counters(n, "ip", "calico", "filter-input")[0][1] == 0
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.recvfrom(100)


def test_a_pod_cannot_send_to_any_vxlan_port(lab):
    n = lab["node"]
    program(n, *VXLAN, node("outside", f"{OUTSIDE_ADDR}/24", ipv4VXLANTunnelAddr=OUTSIDE_TUNNEL))
    assert ping(lab["pod"], NODE_ADDR)  # the pod's gateway is resolved: nothing waits for ARP below
    udp_send(lab["pod"], OUTSIDE_ADDR, 4789)  # towards another node
    udp_send(lab["pod"], NODE_ADDR, 4789)  # towards its own node
    expected = [('iifname "cali*" udp dport 4789 drop', 2)]
    assert reaches(lambda: counters(n, "ip", "calico", "filter-prerouting"), expected) == expected
    assert observed(lab)["udp dport 4789"] == 0
    assert counters(n, "ip", "calico", "filter-input")[0][1] == 0  # never reached input


def test_the_node_talks_into_vxlan_from_its_tunnel_address(lab):
    """A packet the node sends into vxlan.calico from another of its addresses leaves from the tunnel
    address; a pod's packet keeps its own (pods' addresses are not local to the node)."""
    n = lab["node"]
    program(n, *VXLAN, node("outside", f"{OUTSIDE_ADDR}/24", ipv4VXLANTunnelAddr=OUTSIDE_TUNNEL))
    ping(n, OUTSIDE_TUNNEL, "-I", NODE_ADDR)  # no answer needed: the outside counts what arrives
    ping(lab["pod"], OUTSIDE_TUNNEL)
    seen = observed(lab)
    assert seen['iifname "vxlan.calico" ip saddr 198.18.0.1 icmp type echo-request'] == 1
    assert seen['iifname "vxlan.calico" ip saddr 198.19.0.1 icmp type echo-request'] == 0
    assert seen['iifname "vxlan.calico" ip saddr 198.18.0.5 icmp type echo-request'] == 1


def test_without_the_rule_the_node_address_would_leave_the_tunnel(lab):
    """The check above can fail: with no tunnel address on the Node there is no rule, and the
    outside sees the node's uplink address come out of its vxlan.calico."""
    n = lab["node"]
    program(n, VXLAN[0], node(ME, f"{NODE_ADDR}/24"), node("outside", f"{OUTSIDE_ADDR}/24", ipv4VXLANTunnelAddr=OUTSIDE_TUNNEL))
    ping(n, OUTSIDE_TUNNEL, "-I", NODE_ADDR)
    assert observed(lab)['iifname "vxlan.calico" ip saddr 198.19.0.1 icmp type echo-request'] == 1


def test_the_controller_writes_once_and_repairs_a_flushed_table(bare):
    """With the real nft, the listing a check takes after our write is adopted and equals the next
    ones (so an unchanged table is not rewritten every PERIOD), and a table someone flushed is
    written again."""

    class Counting(NftModule):
        applied = 0

        def apply(self, text: str) -> None:
            Counting.applied += 1
            super().apply(text)

    cache = Cache()
    cache.replace(FULL, 3)
    controller = RulesController(ME, cache, nft=Counting())
    for step in range(3):
        assert controller.run_pass(cache.snapshot(), now=step * rules.PERIOD) is None
    assert Counting.applied == 1  # both families in one transaction
    subprocess.run(["nft", "flush", "table", "ip", "calico"], check=True)
    assert controller.run_pass(cache.snapshot(), now=3 * rules.PERIOD) is None
    assert Counting.applied == 2 and "masq-ipam-pools" in nftables.list_table("ip", "calico")


# --- IPv6 --------------------------------------------------------------------------------------

OUTBOUND6 = "ip6 saddr fd00:198:19::1 icmpv6 type echo-request"
FROM_POD6 = "ip6 saddr fd00:198:18::5 icmpv6 type echo-request"


def test_ipv6_nat_outgoing_lets_a_pod_reach_the_outside_as_the_node(lab):
    program(lab["node"], pool("v6", "fd00:198:18::/48", natOutgoing=True))
    assert ping(lab["pod"], NODE_ADDR6)  # neighbour discovery done: the ping below is not delayed by it
    assert ping(lab["pod"], OUTSIDE_ADDR6)
    seen = observed(lab, "ip6")
    assert seen[OUTBOUND6] == 1 and seen[FROM_POD6] == 0


def test_ipv6_without_nat_outgoing_the_outside_sees_the_pod_and_cannot_answer(lab):
    program(lab["node"], pool("v6", "fd00:198:18::/48"))
    assert ping(lab["pod"], NODE_ADDR6)  # neighbour discovery done: the ping below is not delayed by it
    assert not ping(lab["pod"], OUTSIDE_ADDR6)
    seen = observed(lab, "ip6")
    assert seen[FROM_POD6] == 1 and seen[OUTBOUND6] == 0


def test_an_ipv6_pod_cannot_send_to_any_vxlan_port(lab):
    n = lab["node"]
    program(
        n,
        pool("vx6", "fd00:198:18::/48", vxlanMode="Always"),
        node(ME, v6=f"{NODE_ADDR6}/64", ipv6VXLANTunnelAddr="fd00:198:18::1"),
        node("outside", v6=f"{OUTSIDE_ADDR6}/64", ipv6VXLANTunnelAddr="fd00:198:18:1::1"),
    )
    assert ping(lab["pod"], NODE_ADDR6)  # the pod's gateway is resolved: nothing waits for ND below
    udp_send(lab["pod"], OUTSIDE_ADDR6, 4789)  # towards another node
    udp_send(lab["pod"], NODE_ADDR6, 4789)  # towards its own node
    expected = [('iifname "cali*" udp dport 4789 drop', 2)]
    assert reaches(lambda: counters(n, "ip6", "calico", "filter-prerouting"), expected) == expected
    assert observed(lab, "ip6")["udp dport 4789"] == 0
    assert counters(n, "ip6", "calico", "filter-input")[0][1] == 0  # never reached input


# --- NOTRACK -----------------------------------------------------------------------------------

# Counts, after conntrack (priority 0), whether VXLAN datagrams leaving and arriving were tracked.
TRACKING = """table ip tracking {
	chain output {
		type filter hook output priority 0; policy accept;
		udp dport 4789 ct state untracked counter
		udp dport 4789 ct state != untracked counter
	}
	chain input {
		type filter hook input priority 0; policy accept;
		udp dport 4789 ct state untracked counter
		udp dport 4789 ct state != untracked counter
	}
}
"""


def test_vxlan_datagrams_are_not_tracked_either_way(lab):
    """Felix's NOTRACK: the node's VXLAN datagrams out (raw output) and the other node's in (raw
    prerouting) leave no conntrack entry."""
    n = lab["node"]
    subprocess.run(["ip", "netns", "exec", n, "nft", "-f", "-"], input=TRACKING, text=True, check=True, capture_output=True, timeout=30)
    program(n, *VXLAN, node("outside", f"{OUTSIDE_ADDR}/24", ipv4VXLANTunnelAddr=OUTSIDE_TUNNEL))
    assert ping(n, OUTSIDE_TUNNEL)  # out through vxlan.calico and the answer back the same way
    for chain in ("output", "input"):
        found = dict(counters(n, "ip", "tracking", chain))
        assert found["udp dport 4789 ct state untracked"] >= 1, chain
        assert found["udp dport 4789 ct state != untracked"] == 0, chain
