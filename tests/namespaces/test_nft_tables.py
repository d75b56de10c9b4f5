"""node.nft_tables with the real nft: a `delta` from one table to another, applied to the first as
written whole, leaves exactly what writing the second whole leaves (compared by `nft -s list
table`), in one transaction, for changes of every kind: sets and maps filled, emptied, added and
removed, chains added, rewritten and removed while others refer to them, a base chain's hook
changed. Each case runs in a namespace of its own."""

from __future__ import annotations

import os
import subprocess

import pytest

from calico_cni.node.nft_tables import Chain, NftMap, NftSet, NotIncremental, Section, Table, delta, script
from tests import netns

pytestmark = pytest.mark.usefixtures("root")

FORWARD = "type filter hook forward priority filter; policy accept;"
INPUT = "type filter hook input priority filter; policy accept;"


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")


def new_ns(what: str) -> str:
    return netns.add(f"{netns.PREFIX}{what}-{os.getpid()}")


def table(family: str = "ip", *sections: Section) -> Table:
    return Table(family, tuple(sections))


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


BEFORE = table(
    "ip",
    Section(
        sets=(
            NftSet("keep", ("198.18.0.1",), False),
            NftSet("grow", ("198.18.0.1",), False),
            NftSet("empty-me", ("198.18.0.0/24",), True),
            NftSet("gone", ("198.18.1.0/24",), True),
        ),
        maps=(NftMap("dispatch", "ifname", (('"cali1"', "goto fw-cali1"), ('"cali2"', "goto fw-cali2"))),),
        chains=(
            Chain("policy-forward", FORWARD, ('iifname "cali*" jump from-wl',)),
            Chain("from-wl", None, ("iifname vmap @dispatch", "drop")),
            Chain("fw-cali1", None, ("ip saddr @gone jump pol-a", "ip daddr @empty-me accept")),
            Chain("fw-cali2", None, ("jump pol-a", "drop")),
            Chain("pol-a", None, ("ip daddr @keep accept", "ip daddr @grow counter return")),
            Chain("moving", INPUT, ("ip saddr @keep accept",)),
        ),
    ),
)

AFTER = table(
    "ip",
    Section(
        sets=(
            NftSet("keep", ("198.18.0.1",), False),
            NftSet("grow", ("198.18.0.1", "198.18.0.2"), False),
            NftSet("empty-me", (), True),
            NftSet("new", ("198.18.2.0/24",), True),
        ),
        maps=(NftMap("dispatch", "ifname", (('"cali1"', "goto fw-cali1"), ('"cali3"', "goto fw-cali3"))),),
        chains=(
            Chain("policy-forward", FORWARD, ('iifname "cali*" jump from-wl',)),
            Chain("from-wl", None, ("iifname vmap @dispatch", "drop")),
            Chain("fw-cali1", None, ("ip saddr @new jump pol-b", "ip daddr @empty-me accept")),
            Chain("fw-cali3", None, ("jump pol-b", "drop")),
            Chain("pol-b", None, ("ip daddr @keep accept",)),
            Chain("moving", "type filter hook output priority filter; policy accept;", ("ip daddr @keep accept",)),
        ),
    ),
)


@pytest.mark.parametrize(
    "before,after",
    [
        (BEFORE, AFTER),
        (AFTER, BEFORE),
        (BEFORE, table("ip")),
        (table("ip"), AFTER),
    ],
    ids=["forward", "back", "to-empty", "from-empty"],
)
def test_delta_leaves_what_a_whole_write_leaves(before: Table, after: Table) -> None:
    ns_delta, ns_whole = new_ns("nftdelta"), new_ns("nftwhole")
    try:
        nft(ns_delta, script(before))
        text = delta(before, after)
        assert text, "the tables differ: the delta cannot be empty"
        nft(ns_delta, text)
        nft(ns_whole, script(after))
        assert listing(ns_delta, "ip") == listing(ns_whole, "ip")
    finally:
        netns.delete(ns_delta)
        netns.delete(ns_whole)


def test_delta_of_equal_tables_is_empty_and_touches_only_what_changed() -> None:
    assert delta(BEFORE, BEFORE) == ""
    one_set = table("ip", Section(sets=(NftSet("s", ("198.18.0.1",), False),), chains=(Chain("c", None, ("ip saddr @s accept",)),)))
    grown = table("ip", Section(sets=(NftSet("s", ("198.18.0.1", "198.18.0.2"), False),), chains=(Chain("c", None, ("ip saddr @s accept",)),)))
    # Only the set's elements: no chain is flushed or rewritten.
    assert delta(one_set, grown) == "flush set ip calico s\nadd element ip calico s { 198.18.0.1, 198.18.0.2 }\n"


def test_a_failed_delta_changes_nothing() -> None:
    ns = new_ns("nftdelta")
    try:
        nft(ns, script(BEFORE))
        before = listing(ns, "ip")
        broken = table("ip", Section(chains=(Chain("policy-forward", FORWARD, ("jump nowhere",)),)))
        done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=delta(BEFORE, broken), capture_output=True, text=True, timeout=30)
        assert done.returncode != 0
        assert listing(ns, "ip") == before
    finally:
        netns.delete(ns)


def test_a_set_changing_type_needs_a_whole_write() -> None:
    typed = table("ip", Section(sets=(NftSet("s", (), False, "ipv4_addr . inet_proto . inet_service"),)))
    plain = table("ip", Section(sets=(NftSet("s", (), False),)))
    with pytest.raises(NotIncremental):
        delta(plain, typed)


def test_delta_in_ip6() -> None:
    before = table("ip6", Section(sets=(NftSet("s", ("fd00:198:18::1",), False),), chains=(Chain("c", INPUT, ("ip6 saddr @s accept",)),)))
    after = table("ip6", Section(sets=(NftSet("t", ("fd00:198:18::/64",), True),), chains=(Chain("c", INPUT, ("ip6 saddr @t drop",)),)))
    ns_delta, ns_whole = new_ns("nftdelta"), new_ns("nftwhole")
    try:
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

    ns = new_ns("nftgen")
    try:
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
