"""node.nft_tables without a kernel: the text of a `delta` (empty between equal tables, only the
changed set's elements when nothing else changed) and the changes it refuses to make in place.
The tables here are shared with tests/namespaces/test_nft_tables.py, which applies deltas with the
real nft."""

from __future__ import annotations

import pytest

from calico_cni.node.nft_tables import Chain, NftMap, NftSet, NotIncremental, Section, Table, delta

FORWARD = "type filter hook forward priority filter; policy accept;"
INPUT = "type filter hook input priority filter; policy accept;"


def table(family: str = "ip", *sections: Section) -> Table:
    return Table(family, tuple(sections))


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


def test_delta_of_equal_tables_is_empty_and_touches_only_what_changed() -> None:
    assert delta(BEFORE, BEFORE) == ""
    one_set = table("ip", Section(sets=(NftSet("s", ("198.18.0.1",), False),), chains=(Chain("c", None, ("ip saddr @s accept",)),)))
    grown = table("ip", Section(sets=(NftSet("s", ("198.18.0.1", "198.18.0.2"), False),), chains=(Chain("c", None, ("ip saddr @s accept",)),)))
    # Only the set's new element: no chain is flushed or rewritten, the element kept is not written.
    assert delta(one_set, grown) == "add element ip calico s { 198.18.0.2 }\n"
    assert delta(grown, one_set) == "delete element ip calico s { 198.18.0.2 }\n"


def test_a_maps_elements_change_one_by_one_and_an_interval_set_is_refilled() -> None:
    def dispatch(*pairs: tuple[str, str]) -> Table:
        return table("ip", Section(maps=(NftMap("m", "ifname", pairs),), sets=(NftSet("i", tuple(f"198.18.{n}.0/24" for n, _ in enumerate(pairs)), True),)))

    before = dispatch(('"cali1"', "goto fw-cali1"), ('"cali2"', "goto fw-cali2"), ('"cali3"', "drop"))
    after = dispatch(('"cali1"', "goto fw-cali1"), ('"cali3"', "goto fw-cali3"), ('"cali4"', "goto fw-cali4"))
    # cali2 went, cali3's verdict changed (deleted, then added), cali4 is new; cali1 is not written.
    assert delta(before, after) == (
        "delete element ip calico m { \"cali2\", \"cali3\" }\n"
        "add element ip calico m { \"cali3\" : goto fw-cali3, \"cali4\" : goto fw-cali4 }\n"
    )
    # The interval set (same size here, so unchanged) is not touched; one that changes is refilled whole.
    grown = dispatch(('"cali1"', "goto fw-cali1"), ('"cali2"', "goto fw-cali2"), ('"cali3"', "drop"), ('"cali4"', "drop"))
    assert delta(before, grown) == (
        "flush set ip calico i\nadd element ip calico i { 198.18.0.0/24, 198.18.1.0/24, 198.18.2.0/24, 198.18.3.0/24 }\n"
        "add element ip calico m { \"cali4\" : drop }\n"
    )


def test_a_set_changing_type_needs_a_whole_write() -> None:
    typed = table("ip", Section(sets=(NftSet("s", (), False, "ipv4_addr . inet_proto . inet_service"),)))
    plain = table("ip", Section(sets=(NftSet("s", (), False),)))
    with pytest.raises(NotIncremental):
        delta(plain, typed)
