"""node.nft_tables with the real nft: a `delta` from one table to another, applied to the first as
written whole, leaves exactly what writing the second whole leaves (compared by `nft -s list
table`), in one transaction, for changes of every kind: sets and maps filled, emptied, added and
removed, chains added, rewritten and removed while others refer to them, a base chain's hook
changed. Each case runs in a namespace of its own."""

from __future__ import annotations

import os
import subprocess

import pytest

from calico_cni.node.nft_tables import Chain, NftMap, NftSet, Section, Table, delta, script
from tests import netns
from tests.unit.test_nft_tables import AFTER, BEFORE, FORWARD, INPUT, table

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")


def ns_name(what: str) -> str:
    """A test namespace's name (made inside each test's try, so a failure half-way through
    creating two still removes both)."""
    return f"{netns.PREFIX}{what}-{os.getpid()}"


def nft(ns: str, text: str | None = None, *args: str) -> str:
    cmd = ["ip", "netns", "exec", ns, "nft", *args] + (["-f", "-"] if text is not None else [])
    done = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{cmd}: {done.stderr}\n{text}"
    return done.stdout


def listing(ns: str, family: str) -> list[str]:
    """The table's sets, maps and chains as nft lists them, sorted (nft lists them in the order
    they were created, which a delta changes)."""
    text = nft(ns, None, "-s", "list", "table", family, "calico")
    return sorted(block.strip() for block in text.strip().removesuffix("}").split("\n\n"))


PORTS = "ipv4_addr . inet_proto . inet_service"


def _elements(ports: tuple[str, ...], dispatch: tuple[tuple[str, str], ...]) -> Table:
    """A named-port set and a verdict map, whose elements change one by one in a delta."""
    return table(
        "ip",
        Section(
            sets=(NftSet("np", ports, False, PORTS),),
            maps=(NftMap("dispatch", "ifname", dispatch),),
            chains=(Chain("fw-a", None, ("ip saddr . meta l4proto . th dport @np accept",)), Chain("fw-b", None, ("drop",))),
        ),
    )


ELEMENTS_BEFORE = _elements(("198.18.0.1 . tcp . 80", "198.18.0.2 . tcp . 81"), (('"cali1"', "goto fw-a"), ('"cali2"', "drop")))
# One element of each kept, one gone, one new; cali1's verdict changed.
ELEMENTS_AFTER = _elements(("198.18.0.2 . tcp . 81", "198.18.0.3 . udp . 53"), (('"cali1"', "goto fw-b"), ('"cali2"', "drop"), ('"cali5"', "goto fw-a")))


@pytest.mark.parametrize(
    "before,after",
    [
        (BEFORE, AFTER),
        (AFTER, BEFORE),
        (BEFORE, table("ip")),
        (table("ip"), AFTER),
        (ELEMENTS_BEFORE, ELEMENTS_AFTER),
        (ELEMENTS_AFTER, ELEMENTS_BEFORE),
    ],
    ids=["forward", "back", "to-empty", "from-empty", "elements", "elements-back"],
)
def test_delta_leaves_what_a_whole_write_leaves(before: Table, after: Table) -> None:
    ns_delta, ns_whole = ns_name("nftdelta"), ns_name("nftwhole")
    try:
        netns.add(ns_delta)
        netns.add(ns_whole)
        nft(ns_delta, script(before))
        text = delta(before, after)
        assert text, "the tables differ: the delta cannot be empty"
        nft(ns_delta, text)
        nft(ns_whole, script(after))
        assert listing(ns_delta, "ip") == listing(ns_whole, "ip")
    finally:
        netns.delete(ns_delta)
        netns.delete(ns_whole)


def test_a_failed_delta_changes_nothing() -> None:
    ns = ns_name("nftdelta")
    try:
        netns.add(ns)
        nft(ns, script(BEFORE))
        before = listing(ns, "ip")
        broken = table("ip", Section(chains=(Chain("policy-forward", FORWARD, ("jump nowhere",)),)))
        done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=delta(BEFORE, broken), capture_output=True, text=True, timeout=30)
        assert done.returncode != 0
        assert listing(ns, "ip") == before
    finally:
        netns.delete(ns)


def test_delta_in_ip6() -> None:
    before = table("ip6", Section(sets=(NftSet("s", ("fd00:198:18::1",), False),), chains=(Chain("c", INPUT, ("ip6 saddr @s accept",)),)))
    after = table("ip6", Section(sets=(NftSet("t", ("fd00:198:18::/64",), True),), chains=(Chain("c", INPUT, ("ip6 saddr @t drop",)),)))
    ns_delta, ns_whole = ns_name("nftdelta"), ns_name("nftwhole")
    try:
        netns.add(ns_delta)
        netns.add(ns_whole)
        nft(ns_delta, script(before))
        nft(ns_delta, delta(before, after))
        nft(ns_whole, script(after))
        assert listing(ns_delta, "ip6") == listing(ns_whole, "ip6")
    finally:
        netns.delete(ns_delta)
        netns.delete(ns_whole)


def test_the_generation_moves_with_every_commit_of_anyone() -> None:
    """dataplane.nftables.generation (netlink): one more at each commit, ours or another program's,
    and not at a listing."""
    from calico_cni.dataplane import nftables

    ns = ns_name("nftgen")
    try:
        netns.add(ns)
        with netns.inside(ns):
            first = nftables.generation()
            nftables.apply(script(BEFORE))
            assert nftables.generation() == first + 1
            nftables.list_table("ip", "calico")
            assert nftables.generation() == first + 1
        nft(ns, "table inet other {}\n")  # another program's commit
        with netns.inside(ns):
            assert nftables.generation() == first + 2
    finally:
        netns.delete(ns)


def test_the_generation_is_read_in_the_calling_threads_namespace() -> None:
    """generation keeps one netlink socket per namespace: a thread reads its own namespace's
    generation, whichever namespace's socket was opened first, right after commits that delete
    chains (where a socket opened for each read waited 10-15 ms)."""
    from calico_cni.dataplane import nftables

    a, b = ns_name("nftgena"), ns_name("nftgenb")
    try:
        netns.add(a)
        netns.add(b)
        with netns.inside(a):
            start_a = nftables.generation()
        with netns.inside(b):
            start_b = nftables.generation()
            for _ in range(3):
                nftables.apply(script(BEFORE))  # a whole write: deletes the table, chains and all
            assert nftables.generation() == start_b + 3
        with netns.inside(a):
            assert nftables.generation() == start_a
            nftables.apply(script(AFTER))
            assert nftables.generation() == start_a + 1
        with netns.inside(b):
            assert nftables.generation() == start_b + 3
    finally:
        netns.delete(a)
        netns.delete(b)
