"""Pure block operations (calico_ipam/blocks.py): FIFO assignment, shared attribute entries,
sequence numbers, release and cooldown, renumbering, ordinals per interface, consistency checks
and IP reservations (sequence numbers start at the time in ns; ordinals of one handle and
attributes share one entry, as Calico writes blocks)."""

from __future__ import annotations

import ipaddress
import json
import random
import time

import pytest

from calico_cni.model.records import Block, parse_time
from calico_ipam import blocks

SEC = {"node": "node1", "ifname": "eth0", "timestamp": "2024-01-02 03:04:05.123456789 +0000 UTC"}


def sec(**overrides) -> dict:
    return {**SEC, **overrides}


def new_block(cidr: str = "198.18.0.0/29", node: str | None = "node1") -> Block:
    return Block.new(cidr, node)


def nets(*cidrs: str):
    return [ipaddress.ip_network(c) for c in cidrs]


def released_entry(block: Block, ordinal: int) -> dict:
    attr = block.attribute(ordinal)
    assert attr is not None and set(attr) == {"releasedAt"}, attr
    return attr


# ------------------------------------------------------------------------------------------------
# A new block


def test_new_block_layout():
    b = new_block()
    assert b.size == 8
    assert b.allocations == [None] * 8
    assert b.unallocated == list(range(8))
    assert b.attributes == []
    assert b.seq_for_alloc == {}
    assert b.affinity == "host:node1" and b.affine_node == "node1"
    assert blocks.is_empty(b) and blocks.in_use(b) == 0
    assert blocks.consistency_problems(b) == []
    assert new_block(node=None).affinity is None


def test_new_block_sequence_starts_at_time_ns():
    before = time.time_ns()
    b = new_block()
    after = time.time_ns()
    assert b.sequence_number != 0
    assert before <= b.sequence_number <= after


def test_recreated_block_never_repeats_an_ordinal_sequence_pair():
    """A block deleted and created again starts above every sequence number the old one used."""
    old = new_block()
    for _ in range(5):
        blocks.assign(old, 1, "h", SEC)
    used = {(int(o), s) for o, s in old.seq_for_alloc.items()}
    time.sleep(0.001)
    again = new_block()
    taken = blocks.assign(again, 1, "h", SEC)
    pair = (taken[0], again.seq_for_alloc[str(taken[0])])
    assert pair not in used
    assert again.sequence_number > old.sequence_number


def test_ipv6_block():
    b = new_block("fd00:198:18::/122")
    assert b.size == 64
    taken = blocks.assign(b, 2, "h", SEC)
    assert [str(b.address(o)) for o in taken] == ["fd00:198:18::", "fd00:198:18::1"]


# ------------------------------------------------------------------------------------------------
# assign


def test_assign_takes_from_the_head_in_order():
    b = new_block()
    assert blocks.assign(b, 1, "h1", SEC) == [0]
    assert blocks.assign(b, 1, "h2", SEC) == [1]
    assert blocks.assign(b, 3, "h3", SEC) == [2, 3, 4]
    assert b.unallocated == [5, 6, 7]
    assert blocks.in_use(b) == 5


def test_assign_follows_unallocated_order_not_numeric_order():
    b = new_block()
    b.unallocated = [6, 2, 7, 0, 1, 3, 4, 5]
    assert blocks.assign(b, 2, "h", SEC) == [6, 2]
    assert blocks.assign(b, 1, "h", SEC) == [7]
    assert b.unallocated == [0, 1, 3, 4, 5]


def test_assign_skips_reserved_ordinals_and_keeps_them_free():
    b = new_block()
    reserved = {0, 1, 3}
    assert blocks.assign(b, 2, "h", SEC, reserved) == [2, 4]
    assert b.allocations[0] is None and b.allocations[1] is None and b.allocations[3] is None
    assert b.unallocated == [0, 1, 3, 5, 6, 7]
    assert blocks.free_ordinals(b, reserved) == [5, 6, 7]
    assert blocks.free_ordinals(b) == [0, 1, 3, 5, 6, 7]


def test_assign_more_than_free_returns_what_there_is():
    b = new_block()
    assert blocks.assign(b, 10, "h", SEC, {7}) == [0, 1, 2, 3, 4, 5, 6]
    assert blocks.assign(b, 1, "h", SEC, {7}) == []
    assert blocks.assign(b, 1, "h", SEC) == [7]
    assert blocks.assign(b, 1, "h", SEC) == []
    assert b.unallocated == []


def test_assign_nothing_changes_nothing():
    b = new_block()
    snapshot = b.to_json()
    assert blocks.assign(b, 0, "h", SEC) == []
    assert blocks.assign(b, 1, "h", SEC, set(range(8))) == []
    assert b.to_json() == snapshot


def test_identical_handle_and_attributes_share_one_entry():
    b = new_block()
    first = blocks.assign(b, 2, "h1", SEC)
    second = blocks.assign(b, 1, "h1", dict(SEC))  # an equal, separate dict
    assert len(b.attributes) == 1
    assert {b.allocations[o] for o in first + second} == {0}
    assert b.attributes[0] == {"handle_id": "h1", "secondary": SEC}


def test_different_handle_or_attributes_get_their_own_entry():
    b = new_block()
    blocks.assign(b, 1, "h1", SEC)
    blocks.assign(b, 1, "h2", SEC)
    blocks.assign(b, 1, "h1", sec(ifname="eth1"))
    blocks.assign(b, 1, "h1", sec(timestamp="later"))
    blocks.assign(b, 1, "h1", SEC)  # back to the first entry
    assert len(b.attributes) == 4
    assert b.allocations[:5] == [0, 1, 2, 3, 0]


def test_assign_does_not_keep_a_reference_to_the_callers_dict():
    b = new_block()
    mine = sec()
    blocks.assign(b, 1, "h", mine)
    mine["ifname"] = "changed"
    assert b.attributes[0]["secondary"]["ifname"] == "eth0"


def test_assign_ordinals_specific():
    b = new_block()
    blocks.assign_ordinals(b, [5], "h", SEC)
    assert b.allocations[5] == 0
    assert 5 not in b.unallocated
    assert blocks.assign(b, 8, "h2", SEC) == [0, 1, 2, 3, 4, 6, 7]
    assert blocks.consistency_problems(b) == []


def test_assign_ordinals_refuses_taken_or_cooling_ordinals():
    b = new_block()
    blocks.assign_ordinals(b, [3], "h", SEC)
    with pytest.raises(ValueError, match="3"):
        blocks.assign_ordinals(b, [3], "h2", SEC)
    blocks.release(b, [3])
    with pytest.raises(ValueError, match="3"):
        blocks.assign_ordinals(b, [3], "h2", SEC)  # cooling down: not free yet


# ------------------------------------------------------------------------------------------------
# Sequence numbers


def test_sequence_number_for_allocation_is_recorded():
    """An allocation records the block's sequence number, then the block's is incremented, as
    Calico v3.30.0 does (ipam_block.go: SetSequenceNumberForOrdinal in autoAssign and assign;
    ipam_block_reader_writer.go: updateBlock increments SequenceNumber on every write)."""
    b = new_block()
    start = b.sequence_number
    o1 = blocks.assign(b, 2, "h", SEC)
    assert all(b.seq_for_alloc[str(o)] == start for o in o1)
    assert b.sequence_number == start + 1
    s1 = b.sequence_number
    o2 = blocks.assign(b, 1, "h2", SEC)
    assert b.seq_for_alloc[str(o2[0])] == s1
    assert b.sequence_number == s1 + 1
    assert b.seq_for_alloc[str(o1[0])] == start  # earlier allocations keep theirs
    assert set(b.seq_for_alloc) == {"0", "1", "2"}
    blocks.assign_ordinals(b, [6], "h3", SEC)
    assert b.seq_for_alloc["6"] == s1 + 1 and b.sequence_number == s1 + 2


def test_sequence_number_only_increases():
    rng = random.Random(1234)
    b = new_block("198.18.0.0/28")
    last = b.sequence_number
    now = time.time() + 3600
    for step in range(300):
        action = rng.choice(["assign", "release", "cleanup", "assign_specific"])
        before = b.to_json()
        if action == "assign":
            blocks.assign(b, rng.randint(0, 3), f"h{rng.randint(0, 3)}", sec(ifname=rng.choice(["eth0", "eth1"])))
        elif action == "assign_specific":
            free = blocks.free_ordinals(b)
            if free:
                blocks.assign_ordinals(b, [rng.choice(free)], "hs", SEC)
        elif action == "release":
            held = [o for o in range(b.size) if (b.attribute(o) or {}).get("handle_id")]
            blocks.release(b, rng.sample(held, min(len(held), rng.randint(0, 2))))
        else:
            blocks.cleanup(b, rng.choice([0, 30]), now)
        if b.to_json() != before:
            assert b.sequence_number > last, (step, action)
        assert b.sequence_number >= last
        last = b.sequence_number
        assert blocks.consistency_problems(b) == [], (step, action)


# ------------------------------------------------------------------------------------------------
# release


def test_release_points_at_a_fresh_entry_and_never_edits_the_shared_one():
    b = new_block()
    blocks.assign(b, 3, "h", SEC)
    shared = json.loads(json.dumps(b.attributes[0]))
    seq = b.sequence_number
    assert blocks.release(b, [1]) == [1]
    assert b.attributes[0] == shared  # untouched
    assert b.allocations[0] == 0 and b.allocations[2] == 0  # the others still share it
    assert b.allocations[1] == 1
    entry = released_entry(b, 1)
    released_at = parse_time(entry["releasedAt"])
    assert released_at is not None and abs(released_at - time.time()) < 60
    assert "1" not in b.seq_for_alloc
    assert b.sequence_number > seq
    assert 1 not in b.unallocated  # cooling down until cleanup
    assert blocks.ordinals_of(b, "h") == [0, 2]
    assert blocks.in_use(b) == 2
    assert not blocks.is_empty(b)


def test_each_release_gets_its_own_entry():
    b = new_block()
    blocks.assign(b, 3, "h", SEC)
    blocks.release(b, [0])
    blocks.release(b, [2])
    assert b.allocations == [1, 0, 2, None, None, None, None, None]
    assert b.attributes[0] == {"handle_id": "h", "secondary": SEC}
    released_entry(b, 0)
    released_entry(b, 2)


def test_release_of_free_or_already_released_ordinals_is_a_no_op():
    b = new_block()
    blocks.assign(b, 1, "h", SEC)
    blocks.release(b, [0])
    snapshot = b.to_json()
    assert blocks.release(b, [0, 1, 5]) == []
    assert b.to_json() == snapshot  # no new entry, no sequence bump


def test_release_with_expected_seq_refuses_a_reused_address():
    b = new_block()
    [o] = blocks.assign(b, 1, "old", SEC)
    old_seq = b.seq_for_alloc[str(o)]
    blocks.release(b, [o])
    blocks.cleanup(b, 0, time.time())
    blocks.assign_ordinals(b, [o], "new", sec(ifname="eth1"))
    new_seq = b.seq_for_alloc[str(o)]
    assert new_seq > old_seq
    snapshot = b.to_json()
    # A stale release (say, a replayed journal entry) of the old allocation frees nothing.
    assert blocks.release(b, [o], expected_seq={o: old_seq}) == []
    assert blocks.release(b, [o], expected_seq={}) == []
    assert b.to_json() == snapshot
    assert b.attribute(o)["handle_id"] == "new"
    # The current allocation's own sequence number does release it.
    assert blocks.release(b, [o], expected_seq={o: new_seq}) == [o]
    released_entry(b, o)


def test_release_with_expected_seq_is_per_ordinal():
    b = new_block()
    taken = blocks.assign(b, 2, "h", SEC)
    seqs = {o: b.seq_for_alloc[str(o)] for o in taken}
    assert blocks.release(b, taken, expected_seq={taken[0]: seqs[taken[0]], taken[1]: seqs[taken[1]] - 1}) == [taken[0]]
    assert b.attribute(taken[1])["handle_id"] == "h"


# ------------------------------------------------------------------------------------------------
# cleanup and cooldown


def test_cleanup_with_cooldown_0_frees_to_the_tail():
    b = new_block()
    blocks.assign(b, 4, "h", SEC)
    blocks.release(b, [1, 0])
    assert b.unallocated == [4, 5, 6, 7]
    seq = b.sequence_number
    assert blocks.cleanup(b, 0, time.time()) is True
    assert b.unallocated == [4, 5, 6, 7, 0, 1]  # released ones go last: the longest-free is reused first
    assert b.allocations[0] is None and b.allocations[1] is None
    assert b.attributes == [{"handle_id": "h", "secondary": SEC}]
    assert b.sequence_number > seq
    assert blocks.assign(b, 1, "h2", SEC) == [4]
    assert blocks.consistency_problems(b) == []


def test_cleanup_with_nothing_to_do_changes_nothing():
    b = new_block()
    blocks.assign(b, 2, "h", SEC)
    snapshot = b.to_json()
    assert blocks.cleanup(b, 0, time.time()) is False
    assert b.to_json() == snapshot


def test_cooldown_keeps_the_address_until_it_passes():
    b = new_block()
    blocks.assign(b, 2, "h", SEC)
    blocks.release(b, [0])
    released_at = parse_time(released_entry(b, 0)["releasedAt"])
    assert blocks.cooling_until(b, 0, 60) == pytest.approx(released_at + 60)
    assert blocks.cooling_until(b, 1, 60) is None  # allocated, not cooling
    assert blocks.cooling_until(b, 5, 60) is None  # free
    snapshot = b.to_json()
    assert blocks.cleanup(b, 60, released_at + 59.5) is False
    assert b.to_json() == snapshot
    assert 0 not in blocks.free_ordinals(b)
    assert blocks.assign(b, 8, "h2", SEC) == [2, 3, 4, 5, 6, 7]  # the cooling address is not handed out
    assert blocks.cleanup(b, 60, released_at + 60) is True
    assert b.allocations[0] is None and b.unallocated == [0]


def test_cooldown_is_per_release_time():
    b = new_block()
    blocks.assign(b, 3, "h", SEC)
    blocks.release(b, [0])
    blocks.release(b, [1])
    b.attributes[b.allocations[0]]["releasedAt"] = "2024-01-01T00:00:00Z"
    b.attributes[b.allocations[1]]["releasedAt"] = "2024-01-01T00:01:00Z"
    t0 = parse_time("2024-01-01T00:00:00Z")
    assert blocks.cleanup(b, 90, t0 + 100) is True
    assert b.allocations[0] is None and b.allocations[1] is not None
    assert b.unallocated[-1] == 0
    assert blocks.cleanup(b, 90, t0 + 149) is False
    assert blocks.cleanup(b, 90, t0 + 150) is True
    assert b.unallocated[-2:] == [0, 1]


def test_cleanup_understands_gos_time_format_in_released_at():
    b = new_block()
    blocks.assign(b, 2, "h", SEC)  # ordinal 1 keeps the shared entry in use
    blocks.release(b, [0])
    b.attributes[b.allocations[0]]["releasedAt"] = "2024-01-01 00:00:00.5 +0000 UTC"
    t0 = parse_time("2024-01-01T00:00:00.5Z")
    assert blocks.cleanup(b, 10, t0 + 9) is False
    assert blocks.cleanup(b, 10, t0 + 10) is True


def test_cleanup_renumbers_attribute_entries():
    b = new_block()
    blocks.assign(b, 1, "h1", SEC)  # ordinal 0 -> entry 0
    blocks.assign(b, 2, "h2", SEC)  # ordinals 1, 2 -> entry 1
    blocks.assign(b, 1, "h3", SEC)  # ordinal 3 -> entry 2
    blocks.release(b, [0])  # ordinal 0 -> entry 3 (releasedAt)
    assert b.allocations[:4] == [3, 1, 1, 2]
    assert blocks.cleanup(b, 0, time.time()) is True
    assert b.attributes == [{"handle_id": "h2", "secondary": SEC}, {"handle_id": "h3", "secondary": SEC}]
    assert b.allocations[:4] == [None, 0, 0, 1]
    assert blocks.ordinals_of(b, "h2") == [1, 2]
    assert blocks.ordinals_of(b, "h3") == [3]
    assert blocks.ordinals_of(b, "h1") == []
    assert blocks.consistency_problems(b) == []


def test_cleanup_renumbering_keeps_cooling_entries():
    b = new_block()
    blocks.assign(b, 1, "h1", SEC)
    blocks.assign(b, 1, "h2", SEC)
    blocks.assign(b, 1, "h3", SEC)
    blocks.release(b, [0, 1])
    t = parse_time(released_entry(b, 0)["releasedAt"])
    blocks.release(b, [2])
    assert blocks.cleanup(b, 100, t + 1) is True  # the h1/h2/h3 entries are unused now
    assert len(b.attributes) == 3
    assert all(set(a) == {"releasedAt"} for a in b.attributes)
    assert sorted(b.allocations[:3]) == [0, 1, 2]
    assert blocks.consistency_problems(b) == []


def test_cleanup_drops_unreferenced_entries_without_releases():
    b = new_block()
    blocks.assign(b, 1, "h1", SEC)
    b.attributes.append({"handle_id": "orphan", "secondary": {}})
    assert blocks.cleanup(b, 0, time.time()) is True
    assert b.attributes == [{"handle_id": "h1", "secondary": SEC}]
    assert b.allocations[0] == 0


def test_cleanup_never_frees_an_ordinal_whose_attribute_is_lost():
    """A dangling index may be a live pod's address: freeing it could hand it out twice."""
    b = new_block()
    blocks.assign(b, 3, "h", SEC)
    blocks.release(b, [2])
    b.allocations[1] = 7  # points at no entry
    assert blocks.consistency_problems(b)
    blocks.cleanup(b, 0, time.time())
    assert b.allocations[1] == 7 and 1 not in b.unallocated
    assert b.allocations[2] is None and b.unallocated[-1] == 2  # the cooled release is still freed
    assert b.allocations[0] == 0 and b.attributes[0]["handle_id"] == "h"  # not renumbered
    assert 1 not in blocks.free_ordinals(b)


def test_empty_after_release_and_cleanup():
    b = new_block()
    blocks.assign(b, 8, "h", SEC)
    blocks.release(b, list(range(8)))
    assert not blocks.is_empty(b)  # cooling down still counts
    assert blocks.in_use(b) == 0
    blocks.cleanup(b, 0, time.time())
    assert blocks.is_empty(b)
    assert b.attributes == []
    assert sorted(b.unallocated) == list(range(8))


# ------------------------------------------------------------------------------------------------
# ordinals_of


def test_ordinals_of_with_and_without_ifname():
    b = new_block()
    blocks.assign(b, 1, "h", sec(ifname="eth0"))  # 0
    blocks.assign(b, 2, "h", sec(ifname="eth1"))  # 1, 2
    blocks.assign(b, 1, "other", sec(ifname="eth0"))  # 3
    blocks.assign(b, 1, "h", sec(ifname="eth0"))  # 4
    assert blocks.ordinals_of(b, "h") == [0, 1, 2, 4]
    assert blocks.ordinals_of(b, "h", "eth0") == [0, 4]
    assert blocks.ordinals_of(b, "h", "eth1") == [1, 2]
    assert blocks.ordinals_of(b, "h", "eth2") == []
    assert blocks.ordinals_of(b, "other", "eth0") == [3]
    assert blocks.ordinals_of(b, "nobody") == []


def test_allocation_without_ifname_belongs_to_every_interface():
    b = new_block()
    calico_made = {"node": "node1", "timestamp": "x"}  # Calico's own plugin records no ifname
    blocks.assign(b, 1, "h", calico_made)  # 0
    blocks.assign(b, 1, "h", sec(ifname="eth1"))  # 1
    assert blocks.ordinals_of(b, "h", "eth0") == [0]
    assert blocks.ordinals_of(b, "h", "eth1") == [0, 1]
    assert blocks.ordinals_of(b, "h") == [0, 1]
    b.attributes.append({"handle_id": "h2", "secondary": None})
    b.allocations[5] = len(b.attributes) - 1
    b.unallocated.remove(5)
    assert blocks.ordinals_of(b, "h2", "eth9") == [5]


def test_ordinals_of_ignores_released_and_dangling():
    b = new_block()
    blocks.assign(b, 3, "h", SEC)
    blocks.release(b, [1])
    b.allocations[2] = 99
    assert blocks.ordinals_of(b, "h") == [0]
    assert blocks.ordinals_of(b, "h", "eth0") == [0]


# ------------------------------------------------------------------------------------------------
# consistency_problems


def test_consistent_blocks_have_no_problems():
    b = new_block()
    assert blocks.consistency_problems(b) == []
    blocks.assign(b, 5, "h", SEC)
    blocks.release(b, [2])
    assert blocks.consistency_problems(b) == []
    blocks.cleanup(b, 0, time.time())
    assert blocks.consistency_problems(b) == []


def test_ordinal_outside_the_block():
    b = new_block()
    b.unallocated.append(8)
    b.unallocated.append(-1)
    problems = blocks.consistency_problems(b)
    assert any("ordinal 8" in p and "outside" in p for p in problems), problems
    assert any("ordinal -1" in p and "outside" in p for p in problems), problems


def test_ordinal_listed_twice():
    b = new_block()
    b.unallocated.append(3)
    problems = blocks.consistency_problems(b)
    assert problems == ["unallocated lists ordinal 3 twice"]


def test_ordinal_both_allocated_and_free():
    b = new_block()
    blocks.assign(b, 1, "h", SEC)
    b.unallocated.append(0)
    problems = blocks.consistency_problems(b)
    assert len(problems) == 1
    assert "ordinal 0" in problems[0] and "198.18.0.0" in problems[0] and "both" in problems[0]


def test_cooling_ordinal_in_unallocated_is_a_problem():
    b = new_block()
    blocks.assign(b, 1, "h", SEC)
    blocks.release(b, [0])
    b.unallocated.append(0)
    assert any("ordinal 0" in p for p in blocks.consistency_problems(b))


def test_ordinal_neither_allocated_nor_free():
    b = new_block()
    b.unallocated.remove(5)
    problems = blocks.consistency_problems(b)
    assert len(problems) == 1
    assert "ordinal 5" in problems[0] and "198.18.0.5" in problems[0] and "neither" in problems[0]


def test_ordinal_pointing_at_a_missing_attribute():
    b = new_block()
    blocks.assign(b, 1, "h", SEC)
    b.allocations[0] = 4
    problems = blocks.consistency_problems(b)
    assert len(problems) == 1
    assert "ordinal 0" in problems[0] and "missing attribute 4" in problems[0]
    b.allocations[0] = -1
    assert any("missing attribute -1" in p for p in blocks.consistency_problems(b))


def test_several_planted_problems_are_all_found():
    b = new_block()
    blocks.assign(b, 3, "h", SEC)
    b.unallocated.remove(7)  # neither
    b.unallocated.append(1)  # both
    b.allocations[2] = 9  # missing attribute
    b.unallocated.append(4)  # twice
    problems = blocks.consistency_problems(b)
    assert len(problems) == 4, problems


# ------------------------------------------------------------------------------------------------
# reserved_ordinals


def test_reservation_inside_the_block():
    b = new_block("198.18.0.8/29")
    assert blocks.reserved_ordinals(b, nets("198.18.0.10/31")) == {2, 3}
    assert blocks.reserved_ordinals(b, nets("198.18.0.15/32")) == {7}
    assert blocks.reserved_ordinals(b, nets("198.18.0.12/30")) == {4, 5, 6, 7}


def test_reservation_covering_the_block():
    b = new_block("198.18.0.8/29")
    assert blocks.reserved_ordinals(b, nets("198.18.0.0/24")) == set(range(8))
    assert blocks.reserved_ordinals(b, nets("198.18.0.8/29")) == set(range(8))
    assert blocks.reserved_ordinals(b, nets("0.0.0.0/0")) == set(range(8))


def test_reservations_outside_or_other_family_are_ignored():
    b = new_block("198.18.0.8/29")
    assert blocks.reserved_ordinals(b, nets("198.18.0.0/29", "198.18.0.16/29", "198.18.0.7/32", "198.18.0.16/32")) == set()
    assert blocks.reserved_ordinals(b, nets("::/0", "fd00:198:18::/48")) == set()
    assert blocks.reserved_ordinals(b, []) == set()


def test_several_reservations_combine():
    b = new_block("198.18.0.8/29")
    assert blocks.reserved_ordinals(b, nets("198.18.0.8/32", "198.18.0.14/31", "198.18.1.0/24", "fd00::/8")) == {0, 6, 7}


def test_reservation_partially_overlapping_an_ipv6_block():
    b = new_block("fd00:198:18::40/122")
    assert blocks.reserved_ordinals(b, nets("fd00:198:18::40/126")) == {0, 1, 2, 3}
    assert blocks.reserved_ordinals(b, nets("fd00:198:18::7f/128")) == {63}
    assert blocks.reserved_ordinals(b, nets("fd00:198:18::/120")) == set(range(64))
    assert blocks.reserved_ordinals(b, nets("fd00:198:18::/122", "198.18.0.0/16")) == set()


def test_reserved_ordinals_feed_assign():
    b = new_block("198.18.0.8/29")
    reserved = blocks.reserved_ordinals(b, nets("198.18.0.8/30"))
    taken = blocks.assign(b, 8, "h", SEC, reserved)
    assert [str(b.address(o)) for o in taken] == ["198.18.0.12", "198.18.0.13", "198.18.0.14", "198.18.0.15"]
