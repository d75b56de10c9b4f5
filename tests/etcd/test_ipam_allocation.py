"""Block-affinity allocation against a real etcd, calling the allocator in-process."""

from __future__ import annotations

import ipaddress
import json

import pytest

from calico_cni.model import keys
from calico_cni.model.records import CONFIRMED, MANUAL, TUNNEL, Block
from calico_cni.protocol.errors import IPAM_EXHAUSTED
from calico_cni.datastore import retry
from calico_cni.plugins.errors import cni_error
from calico_ipam import allocator
from calico_ipam import blocks as blk
from calico_ipam.allocator import Attachment, BlockMemory, FamilyRequest
from calico_ipam.errors import AddressConflict, AddressesExhausted
from tests.pools import create_pool, label_node, set_config


def att(cid: str, node: str = "node1", ifname: str = "eth0", net: str = "net1") -> Attachment:
    return Attachment(keys.attachment_handle(net, cid), node, ifname)


def v4(*pools: str) -> list[FamilyRequest]:
    return [FamilyRequest(4, tuple(pools))]


def v6(*pools: str) -> list[FamilyRequest]:
    return [FamilyRequest(6, tuple(pools))]


def one(store, a: Attachment, reqs=None, memory: BlockMemory | None = None) -> ipaddress.IPv4Address:
    got = allocator.assign(store, a, reqs or v4(), memory)
    assert len(got) == 1
    return got[0].address


def raw(store, key: str) -> dict | None:
    kv = store.client.get(key)
    return json.loads(kv.value) if kv else None


# ------------------------------------------------------------------------------------------------
# Blocks and affinity


def test_first_add_claims_a_block_with_confirmed_affinity(store):
    create_pool(store, "p1", "198.18.0.0/24")
    got = allocator.assign(store, att("c1"), v4())[0]
    assert got.prefixlen == 26 and got.address in ipaddress.ip_network("198.18.0.0/24")
    aff = raw(store, keys.affinity("node1", got.block))
    assert aff == {"state": CONFIRMED, "deleted": False}
    block = raw(store, keys.block(got.block))
    assert block["affinity"] == "host:node1"
    assert block["sequenceNumber"] > 10**18  # started at the time in ns: never repeats an old block's
    ordinal = got.ordinal
    attr = block["attributes"][block["allocations"][ordinal]]
    assert attr["handle_id"] == "net1.c1"
    assert attr["secondary"]["node"] == "node1" and attr["secondary"]["ifname"] == "eth0"
    assert str(ordinal) in block["sequenceNumberForAllocation"]
    assert raw(store, keys.handle("net1.c1")) == {"block": {got.block: 1}, "deleted": False}


def test_node_registers_itself_without_labels(store):
    create_pool(store, "p1", "198.18.0.0/24")
    assert store.node("node1") is None
    one(store, att("c1"))
    node = store.node("node1")
    assert node is not None and node.labels == {}
    assert node.doc["kind"] == "Node"


def test_second_add_uses_the_same_block_fifo(store):
    create_pool(store, "p1", "198.18.0.0/24")
    a = allocator.assign(store, att("c1"), v4())[0]
    b = allocator.assign(store, att("c2"), v4())[0]
    assert a.block == b.block and b.ordinal == a.ordinal + 1
    # Released addresses go to the tail: the next allocation takes a never-used address.
    allocator.release(store, "net1.c1", "eth0")
    c = allocator.assign(store, att("c3"), v4())[0]
    assert c.address not in (a.address, b.address)


def test_ipv6_pool_default_block_size(store):
    create_pool(store, "p6", "fd00:198:18::/64")
    got = allocator.assign(store, att("c1"), v6())[0]
    assert got.prefixlen == 122 and got.address in ipaddress.ip_network("fd00:198:18::/64")
    assert store.block(got.block) is not None
    assert store.client.get(keys.affinity("node1", got.block)) is not None


def test_block_size_is_respected(store):
    create_pool(store, "p1", "198.18.0.0/24", block_size=28)
    got = allocator.assign(store, att("c1"), v4())[0]
    assert got.prefixlen == 28 and len(store.block(got.block).allocations) == 16


def test_full_block_claims_another(store):
    create_pool(store, "p1", "198.18.0.0/24", block_size=30)
    blocks = {allocator.assign(store, att(f"c{i}"), v4())[0].block for i in range(6)}
    assert len(blocks) == 2
    assert {a.cidr for a in store.affinities("node1", 4)} == blocks


def test_dual_stack(store):
    create_pool(store, "p4", "198.18.0.0/24")
    create_pool(store, "p6", "fd00:198:18::/64")
    got = allocator.assign(store, att("c1"), v4() + v6())
    assert [a.family for a in got] == [4, 6]
    assert raw(store, keys.handle("net1.c1"))["block"] == {got[0].block: 1, got[1].block: 1}


def test_dual_stack_both_or_neither(store):
    create_pool(store, "p4", "198.18.0.0/24")
    with pytest.raises(AddressesExhausted, match="no configured Calico pools for node node1"):
        allocator.assign(store, att("c1"), v4() + v6())
    # The IPv4 address taken first was given back: nothing is held.
    assert store.handle("net1.c1") is None
    assert allocator.held_by(store, "net1.c1", None) == []
    for block in store.all_blocks(4):
        assert not any(a is not None for a in block.allocations)


def test_repeated_add_returns_the_same_address(store):
    create_pool(store, "p1", "198.18.0.0/24")
    first = allocator.assign(store, att("c1"), v4())
    again = allocator.assign(store, att("c1"), v4())
    assert [a.address for a in first] == [a.address for a in again]
    assert again[0].new is False
    assert store.handle("net1.c1").blocks == {first[0].block: 1}


def test_two_interfaces_of_one_container(store):
    create_pool(store, "p1", "198.18.0.0/24")
    a = one(store, att("c1", ifname="eth0"))
    b = one(store, att("c1", ifname="net1"))
    assert a != b
    assert store.handle("net1.c1").total == 2
    allocator.release(store, "net1.c1", "eth0")
    assert [x.address for x in allocator.held_by(store, "net1.c1", None)] == [b]
    allocator.release(store, "net1.c1", "net1")
    assert store.handle("net1.c1") is None


def test_network_and_container_names_with_dots(store):
    create_pool(store, "p1", "198.18.0.0/24")
    a = one(store, Attachment("my.net.abc.def", "node1", "eth0"))
    b = one(store, Attachment("my.net.abc", "node1", "eth0"))
    assert a != b
    allocator.release(store, "my.net.abc", "eth0")
    assert [x.address for x in allocator.held_by(store, "my.net.abc.def", "eth0")] == [a]


# ------------------------------------------------------------------------------------------------
# Pools


def test_disabled_pool_is_skipped(store):
    create_pool(store, "a-disabled", "198.18.0.0/24", disabled=True)
    create_pool(store, "b-enabled", "198.18.1.0/24")
    assert one(store, att("c1")) in ipaddress.ip_network("198.18.1.0/24")


def test_no_usable_pool_names_the_node(store):
    create_pool(store, "p1", "198.18.0.0/24", disabled=True)
    with pytest.raises(AddressesExhausted) as err:
        one(store, att("c1"))
    assert "no configured Calico pools for node node1" in err.value.msg
    assert "p1" in err.value.details and "disabled" in err.value.details


def test_node_selector(store):
    create_pool(store, "a-ssd", "198.18.0.0/24", node_selector="disk == 'ssd'")
    create_pool(store, "b-rest", "198.18.1.0/24", node_selector="!has(disk)")
    label_node(store, "fast", disk="ssd")
    label_node(store, "plain")
    assert one(store, att("c1", node="fast")) in ipaddress.ip_network("198.18.0.0/24")
    assert one(store, att("c2", node="plain")) in ipaddress.ip_network("198.18.1.0/24")


def test_pool_with_bad_selector_is_skipped(store):
    create_pool(store, "a-bad", "198.18.0.0/24", node_selector="disk ==")
    create_pool(store, "b-good", "198.18.1.0/24")
    assert one(store, att("c1")) in ipaddress.ip_network("198.18.1.0/24")


def test_allowed_uses_tunnel_only_is_skipped(store):
    create_pool(store, "a-tunnel", "198.18.0.0/24", allowed_uses=(TUNNEL,))
    create_pool(store, "b-work", "198.18.1.0/24")
    assert one(store, att("c1")) in ipaddress.ip_network("198.18.1.0/24")


def test_manual_pool_only_when_named(store):
    create_pool(store, "manual", "198.18.0.0/24", assignment_mode=MANUAL)
    with pytest.raises(AddressesExhausted, match="no configured Calico pools"):
        one(store, att("c1"))
    assert one(store, att("c2"), v4("manual")) in ipaddress.ip_network("198.18.0.0/24")


def test_named_pools_by_name_and_cidr_in_order(store):
    create_pool(store, "a", "198.18.0.0/30", block_size=30)
    create_pool(store, "b", "198.18.1.0/24")
    got = [one(store, att(f"c{i}"), v4("198.18.0.0/30", "b")) for i in range(6)]
    assert all(g in ipaddress.ip_network("198.18.0.0/30") for g in got[:4])
    assert all(g in ipaddress.ip_network("198.18.1.0/24") for g in got[4:])


def test_named_pool_missing_or_disabled(store):
    create_pool(store, "off", "198.18.0.0/24", disabled=True)
    for wanted in ("nope", "off", "198.18.9.0/24"):
        with pytest.raises(AddressesExhausted) as err:
            one(store, att("c1"), v4(wanted))
        assert err.value.msg == f"the given pool ({wanted}) does not exist, or is not enabled"
        assert "off (198.18.0.0/24, disabled)" in err.value.details


# ------------------------------------------------------------------------------------------------
# Borrowing, strict affinity, limits, auto-allocation


def _fill_pool_for(store, node: str, count: int) -> None:
    for i in range(count):
        one(store, att(f"{node}-{i}", node=node))


def test_borrow_from_another_nodes_block(store):
    create_pool(store, "p1", "198.18.0.0/29", block_size=29)
    one(store, att("a1", node="nodeA"))
    got = allocator.assign(store, att("b1", node="nodeB"), v4())[0]
    block = store.block(got.block)
    assert block.affine_node == "nodeA"  # the block keeps its affinity
    assert block.attribute(got.ordinal)["secondary"]["node"] == "nodeB"
    assert store.affinities("nodeB", 4) == []


def test_strict_affinity_refuses_to_borrow(store):
    create_pool(store, "p1", "198.18.0.0/29", block_size=29)
    set_config(store, strict_affinity=True, auto_allocate_blocks=True)
    one(store, att("a1", node="nodeA"))
    with pytest.raises(AddressesExhausted) as err:
        one(store, att("b1", node="nodeB"))
    assert err.value.msg == "No more free affine blocks and strict affinity enabled"
    assert "nodeB" in err.value.details and "198.18.0.0/29" in err.value.details


def test_per_host_block_limit(store):
    create_pool(store, "p1", "198.18.0.0/24", block_size=30)
    set_config(store, strict_affinity=True, auto_allocate_blocks=True, max_blocks_per_host=1)
    _fill_pool_for(store, "node1", 4)
    with pytest.raises(AddressesExhausted) as err:
        one(store, att("extra"))
    assert err.value.msg == "cannot allocate new block due to per host block limit"
    assert "node node1 holds 1 IPv4 blocks, the limit is 1" in err.value.details
    assert len(store.affinities("node1", 4)) == 1


def test_at_block_limit_does_not_borrow(store):
    create_pool(store, "p1", "198.18.0.0/24", block_size=30)
    set_config(store, strict_affinity=True, auto_allocate_blocks=True, max_blocks_per_host=1)
    one(store, att("other", node="nodeB"))  # a block with free addresses on another node
    _fill_pool_for(store, "node1", 4)
    with pytest.raises(AddressesExhausted, match="per host block limit"):
        one(store, att("extra"))


def test_auto_allocate_off_borrows_only(store):
    create_pool(store, "p1", "198.18.0.0/24", block_size=30)
    one(store, att("a1", node="nodeA"))
    set_config(store, strict_affinity=False, auto_allocate_blocks=False)
    got = allocator.assign(store, att("b1", node="nodeB"), v4())[0]
    assert store.block(got.block).affine_node == "nodeA"
    assert store.affinities("nodeB", 4) == []


def test_absent_config_means_auto_allocate(store):
    assert store.client.get(keys.IPAM_CONFIG) is None
    config = store.ipam_config()
    assert (config.strict_affinity, config.auto_allocate_blocks, config.block_cap) == (False, True, 20)


def test_reservations_are_skipped(store):
    create_pool(store, "p1", "198.18.0.0/29", block_size=29)
    doc = {"kind": "IPReservation", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "r"},
           "spec": {"reservedCIDRs": ["198.18.0.0/30", "198.18.0.5"]}}
    store.client.commit([], [(keys.RESERVATIONS + "r", json.dumps(doc).encode())])
    got = {one(store, att(f"c{i}")) for i in range(3)}
    assert got == {ipaddress.ip_address(a) for a in ("198.18.0.4", "198.18.0.6", "198.18.0.7")}
    with pytest.raises(AddressesExhausted, match="No IPs available in pools"):
        one(store, att("c9"))


# ------------------------------------------------------------------------------------------------
# Specific addresses, cooldown


def test_specific_address(store):
    create_pool(store, "p1", "198.18.0.0/24")
    ip = ipaddress.ip_address("198.18.0.77")
    got = allocator.assign(store, att("c1"), [FamilyRequest(4, address=ip)])[0]
    assert got.address == ip and got.block == "198.18.0.64/26"
    assert store.block("198.18.0.64/26").affine_node == "node1"
    with pytest.raises(AddressConflict) as err:
        allocator.assign(store, att("c2"), [FamilyRequest(4, address=ip)])
    assert err.value.msg == "Address already assigned in block"
    assert "net1.c1" in err.value.details
    # The same attachment asking again gets its address back.
    assert allocator.assign(store, att("c1"), [FamilyRequest(4, address=ip)])[0].address == ip


def test_specific_address_outside_pools(store):
    create_pool(store, "p1", "198.18.0.0/24")
    with pytest.raises(AddressesExhausted) as err:
        allocator.assign(store, att("c1"), [FamilyRequest(4, address=ipaddress.ip_address("198.18.5.1"))])
    assert err.value.msg == "The provided IP address is not in a configured pool"
    assert "198.18.5.1" in err.value.details


def test_cooldown_keeps_released_address(store):
    create_pool(store, "p1", "198.18.0.0/30", block_size=30)
    set_config(store, strict_affinity=False, auto_allocate_blocks=True, ip_cooldown_seconds=3600)
    ip = one(store, att("c1"))
    allocator.release(store, "net1.c1", "eth0")
    block = store.block("198.18.0.0/30")
    ordinal = block.ordinal(ip)
    assert "releasedAt" in block.attribute(ordinal)
    assert ordinal not in block.unallocated
    others = {one(store, att(f"c{i}")) for i in range(2, 5)}
    assert ip not in others
    with pytest.raises(AddressesExhausted, match="No IPs available"):
        one(store, att("c9"))
    with pytest.raises(AddressConflict, match="cooling down"):
        allocator.assign(store, att("c10"), [FamilyRequest(4, address=ip)])


def test_cooldown_zero_frees_immediately_to_the_tail(store):
    create_pool(store, "p1", "198.18.0.0/30", block_size=30)
    ip = one(store, att("c1"))
    allocator.release(store, "net1.c1", "eth0")
    block = store.block("198.18.0.0/30")
    assert block.unallocated[-1] == block.ordinal(ip)
    assert block.attributes == []


# ------------------------------------------------------------------------------------------------
# Release


def test_release_unknown_succeeds(store):
    assert allocator.release(store, "net1.nothing", "eth0") == []


def test_release_deletes_handle_and_keeps_affine_block(store):
    create_pool(store, "p1", "198.18.0.0/24")
    got = allocator.assign(store, att("c1"), v4())[0]
    allocator.release(store, "net1.c1", "eth0")
    assert store.handle("net1.c1") is None
    assert store.block(got.block) is not None  # affine empty blocks stay


def test_release_deletes_empty_unaffine_block(store):
    # A specific address no longer creates a block without affinity (it claims the block, as
    # Calico's AssignIP does: issue 15), so the unaffine block here is one Calico leaves: a block
    # whose affinity was released while it still held an address (v3.30
    # ipam_block_reader_writer.go releaseBlockAffinity sets AllocationBlock.Affinity to nil).
    create_pool(store, "p1", "198.18.0.0/24")
    set_config(store, strict_affinity=False, auto_allocate_blocks=False)
    first = allocator.assign(store, att("c0"), [FamilyRequest(4, address=ipaddress.ip_address("198.18.0.9"))])[0]
    block = store.block(first.block)
    block.affinity = None
    assert store.commit(puts=[block])
    ip = ipaddress.ip_address("198.18.0.10")
    got = allocator.assign(store, att("c1"), [FamilyRequest(4, address=ip)])[0]
    assert got.block == first.block and store.block(got.block).affinity is None  # an existing block is not claimed
    allocator.release(store, "net1.c0", "eth0")
    assert store.block(got.block) is not None  # still holds c1's address
    allocator.release(store, "net1.c1", "eth0")
    assert store.block(got.block) is None


def test_release_exact_refuses_a_reused_address(store):
    create_pool(store, "p1", "198.18.0.0/30", block_size=30)
    first = allocator.assign(store, att("c1"), v4())[0]
    allocator.release(store, "net1.c1", "eth0")
    # Reuse the same ordinal for the same handle (the worst case for a stale release).
    again = allocator.assign(store, att("c1"), [FamilyRequest(4, address=first.address)])[0]
    assert again.sequence != first.sequence
    assert allocator.release_exact(store, "net1.c1", [first]) == []
    assert [a.address for a in allocator.held_by(store, "net1.c1", "eth0")] == [first.address]


def test_release_repairs_handle_counts(store):
    create_pool(store, "p1", "198.18.0.0/24")
    got = allocator.assign(store, att("c1"), v4())[0]
    handle = store.handle("net1.c1")
    handle.blocks["198.18.0.128/26"] = 3  # a block that does not exist
    assert store.commit(puts=[handle])
    allocator.release(store, "net1.c1", "eth0")
    assert store.handle("net1.c1") is None
    assert store.block(got.block).allocations[got.ordinal] is None


def test_unknown_fields_survive_allocation(store):
    create_pool(store, "p1", "198.18.0.0/24")
    got = allocator.assign(store, att("c1"), v4())[0]
    doc = raw(store, keys.block(got.block))
    doc["hostAffinity"] = "node1"
    doc["alternateOwnerAttrs"] = {"x": 1}
    kv = store.client.get(keys.block(got.block))
    store.client.commit([], [(kv.key, json.dumps(doc).encode())])
    one(store, att("c2"))
    allocator.release(store, "net1.c1", "eth0")
    after = raw(store, keys.block(got.block))
    assert after["hostAffinity"] == "node1" and after["alternateOwnerAttrs"] == {"x": 1}


def test_pending_affinity_with_block_is_adopted(store):
    """A claim interrupted after creating the block (affinity still pending) is used and confirmed."""
    create_pool(store, "p1", "198.18.0.0/24")
    from calico_cni.model.records import PENDING, Affinity

    block = Block.new("198.18.0.192/26", "node1")
    assert store.commit(puts=[Affinity("node1", block.cidr, PENDING), block])
    got = allocator.assign(store, att("c1"), v4())[0]
    assert got.block == block.cidr
    assert raw(store, keys.affinity("node1", block.cidr))["state"] == CONFIRMED


def test_release_exact_works_without_the_handle_record(store):
    create_pool(store, "p1", "198.18.0.0/24")
    got = allocator.assign(store, att("c1"), v4())[0]
    assert store.client.commit([], [], [keys.handle("net1.c1")])[0]
    assert [a.address for a in allocator.release_exact(store, "net1.c1", [got])] == [got.address]
    assert store.block(got.block).allocations[got.ordinal] is None
    assert store.handle("net1.c1") is None


def test_string_booleans_in_ipam_config(store):
    store.client.commit([], [(keys.IPAM_CONFIG, b'{"strict_affinity":"false","auto_allocate_blocks":"true"}')])
    config = store.ipam_config()
    assert config.strict_affinity is False and config.auto_allocate_blocks is True


def test_a_corrupt_handle_does_not_hide_the_others(store):
    create_pool(store, "p1", "198.18.0.0/24")
    one(store, att("c1"))
    store.client.commit([], [(keys.handle("bad"), b"{oops"), (keys.handle("bad2"), b'{"block":{"x":"y"}}')])
    assert [h.handle_id for h in store.handles()] == ["net1.c1"]


# ------------------------------------------------------------------------------------------------
# A warm process (the agent) reads the node's blocks with the allocation's view


def _round_trips(store, fn) -> int:
    before = store.round_trips
    fn()
    return store.round_trips - before


@pytest.fixture
def memory() -> BlockMemory:
    """A process's memory of the node's blocks, fresh (a fresh exec: nothing remembered)."""
    return BlockMemory()


def test_warm_process_allocates_and_releases_in_two_round_trips(store, memory):
    create_pool(store, "p1", "198.18.0.0/24")
    one(store, att("c0"), memory=memory)  # claims the block; the process now knows it
    assert _round_trips(store, lambda: one(store, att("c1"), memory=memory)) == 2  # view with the block, commit
    assert _round_trips(store, lambda: allocator.release(store, "net1.c1", "eth0")) == 3  # no hint given
    # The DEL path (calico_cni.plugins.calico_ipam.release_addresses) reads the remembered blocks with the handle.
    handles, config, blocks = store.handles_config_blocks(["net1.c0"], memory.known("node1"))
    assert list(blocks) == memory.known("node1") and blocks[memory.known("node1")[0]] is not None
    assert _round_trips(store, lambda: allocator.release(store, "net1.c0", "eth0", first=(handles["net1.c0"], config), blocks=blocks)) == 1
    assert raw(store, keys.handle("net1.c0")) is None


def test_cold_process_takes_three_round_trips(store, memory):
    create_pool(store, "p1", "198.18.0.0/24")
    one(store, att("c0"), memory=memory)
    memory.forget()
    assert _round_trips(store, lambda: one(store, att("c1"), memory=memory)) == 3  # view, blocks, commit


def test_stale_block_memory_is_only_a_guess(store, etcd_endpoint, memory):
    """What a warm process remembers may be wrong in every way; allocation stays correct."""
    from calico_cni.config import EtcdSettings
    from calico_cni.datastore.etcd import EtcdClient
    from calico_cni.datastore.store import Datastore

    create_pool(store, "p1", "198.18.0.0/25")  # two /26 blocks
    first = allocator.assign(store, att("c0"), v4(), memory)[0]
    assert memory.known("node1") == [first.block]
    addresses = [first.address]
    # Another process (an exec'd plugin, a second agent) fills that block and claims the second
    # one for the same node; this process still remembers only the first.
    other = Datastore(EtcdClient(EtcdSettings((etcd_endpoint,))))
    try:
        addresses += [allocator.assign(other, att(f"o{i}"), v4(), BlockMemory())[0].address for i in range(64)]
    finally:
        other.close()
    assert memory.known("node1") == [first.block]
    got = allocator.assign(store, att("c1"), v4(), memory)[0]
    assert got.block != first.block
    addresses.append(got.address)
    assert memory.known("node1") == sorted([first.block, got.block])
    # A remembered block that no longer exists, and one of another node remembered as node2's.
    memory.set("node1", 4, ("198.18.200.0/26", first.block))
    memory.set("node2", 4, (first.block, got.block))
    again = allocator.assign(store, att("c2"), v4(), memory)[0]
    assert again.block == got.block
    addresses.append(again.address)
    # node2 remembers node1's blocks: it borrows from them only as any node would (strict
    # affinity off), and never as if it held them.
    borrowed = allocator.assign(store, att("x", node="node2"), v4(), memory)[0]
    assert store.block(borrowed.block).affine_node == "node1"
    addresses.append(borrowed.address)
    assert memory.known("node2") == []  # it has no affinity of its own
    set_config(store, strict_affinity=True)
    with pytest.raises(AddressesExhausted) as err:
        allocator.assign(store, att("y", node="node2"), v4(), memory)
    assert cni_error(err.value).code == IPAM_EXHAUSTED
    assert len(set(addresses)) == len(addresses) == 68
    in_blocks = sum(1 for b in store.all_blocks(4) for x in b.allocations if x is not None)
    assert in_blocks == 68


def test_release_of_a_dual_stack_handle_reads_once(store):
    """A handle with an address in two blocks: the second block's release starts from what the
    first commit wrote (handle read, blocks read, then one commit per block)."""
    create_pool(store, "p1", "198.18.0.0/24")
    create_pool(store, "p6", "fd00:198:18::/64")
    got = allocator.assign(store, att("c1"), v4() + v6())  # a fresh memory: nothing remembered
    assert _round_trips(store, lambda: allocator.release(store, "net1.c1", "eth0")) == 4
    assert raw(store, keys.handle("net1.c1")) is None
    for a in got:
        assert store.block(a.block).attribute(a.ordinal) is None


def test_release_after_a_stale_step_rereads_and_finishes(store, etcd_endpoint):
    """The state a release carries from one block to the next may go stale (another process
    changes a block in between): that commit loses its compare-and-swap and the retry re-reads."""
    from calico_cni.config import EtcdSettings
    from calico_cni.datastore.etcd import EtcdClient
    from calico_cni.datastore.store import Datastore

    create_pool(store, "p1", "198.18.0.0/24")
    create_pool(store, "p6", "fd00:198:18::/64")
    got = allocator.assign(store, att("c1"), v4() + v6())
    v6_block = next(a.block for a in got if a.family == 6)
    other = Datastore(EtcdClient(EtcdSettings((etcd_endpoint,))))
    commit = store.commit
    calls = []

    def commit_then_touch(*args, **kwargs):
        ok = commit(*args, **kwargs)
        if not calls:  # after the first block's commit, another process allocates in the v6 block
            calls.append(allocator.assign(other, att("c2"), v6())[0])
        return ok

    store.commit = commit_then_touch
    conflicts = retry.stats["conflicts"]
    try:
        released = allocator.release(store, "net1.c1", "eth0")
    finally:
        del store.commit
        other.close()
    assert sorted(str(a.address) for a in released) == sorted(str(a.address) for a in got)
    assert calls[0].block == v6_block
    assert retry.stats["conflicts"] == conflicts + 1  # the carried state was stale once
    assert raw(store, keys.handle("net1.c1")) is None
    assert store.block(v6_block).attribute(calls[0].ordinal)["handle_id"] == "net1.c2"


def test_release_exact_reads_handle_config_and_block_at_once(store):
    create_pool(store, "p1", "198.18.0.0/24")
    got = allocator.assign(store, att("c1"), v4())[0]
    out = []
    assert _round_trips(store, lambda: out.extend(allocator.release_exact(store, "net1.c1", [got]))) == 2  # read, commit
    assert [a.address for a in out] == [got.address]


# ------------------------------------------------------------------------------------------------
# allocation_at, rehome, release_allocation: one address whatever holds it, and the block changed
# between the read (allocation_at) and the write


TUNNEL_ATT = Attachment.tunnel("vxlan-tunnel-addr-node1", "node1", "vxlanTunnelAddress")


def _found(store, address: str, handle_id: str | None, secondary: dict | None) -> allocator.Allocation:
    """`address` planted as `handle_id` with `secondary`, read back with allocation_at."""
    from tests.etcd.test_tunnel_addresses import plant

    create_pool(store, "p1", "198.18.0.0/24")
    plant(store, address, handle_id, secondary)
    found = allocator.allocation_at(store, ipaddress.ip_address(address))
    assert found is not None and found.handle == handle_id
    return found


def _entries(store, cidr: str) -> list[dict]:
    return store.block(cidr).attributes


def test_rehome_loses_its_compare_and_swap_when_the_block_moved(store):
    found = _found(store, "198.18.0.10", None, {"node": "node1", "type": "vxlanTunnelAddress"})
    before = list(found.record.allocations)
    one(store, att("c1"))  # another allocation in the same block, after the read
    with pytest.raises(retry.Conflict):
        allocator.rehome(store, found, TUNNEL_ATT)
    assert store.handle(TUNNEL_ATT.handle_id) is None
    assert allocator.allocation_at(store, found.address).handle is None
    assert found.record.allocations == before  # `found` is left as read: a retry may reuse nothing stale


def test_rehome_with_the_previous_handle_record_missing_counts_only_ours(store):
    found = _found(store, "198.18.0.10", "gone", {"node": "node1"})
    assert store.commit(deletes=[store.handle("gone")])
    found = allocator.allocation_at(store, found.address)  # fresh read after the deletion
    got = allocator.rehome(store, found, TUNNEL_ATT)
    assert str(got.address) == "198.18.0.10"
    assert store.handle(TUNNEL_ATT.handle_id).blocks == {found.block: 1}
    assert store.handle("gone") is None  # not recreated
    # The old attribute entry is dropped by the same tidy-up as a release.
    assert [e.get("handle_id") for e in _entries(store, found.block)] == [TUNNEL_ATT.handle_id]


def test_rehome_from_another_handle_moves_its_count_and_drops_its_entry(store):
    found = _found(store, "198.18.0.10", "someone-else", {"node": "node1", "type": "vxlanTunnelAddress"})
    allocator.rehome(store, found, TUNNEL_ATT)
    assert store.handle("someone-else") is None
    assert store.handle(TUNNEL_ATT.handle_id).blocks == {found.block: 1}
    assert all(e.get("handle_id") != "someone-else" for e in _entries(store, found.block))
    assert blk.consistency_problems(store.block(found.block)) == []


def test_release_allocation_of_a_reused_address_does_nothing(store):
    create_pool(store, "p1", "198.18.0.0/24")
    first = allocator.assign(store, att("c1"), v4())[0]
    found = allocator.allocation_at(store, first.address)
    allocator.release(store, "net1.c1", None)
    again = allocator.assign(store, att("c1"), [FamilyRequest(4, address=first.address)])[0]
    assert again.sequence != found.sequence
    allocator.release_allocation(store, found)  # the allocation read is gone: the new one stays
    assert allocator.allocation_at(store, first.address).sequence == again.sequence
    assert store.handle("net1.c1").blocks == {first.block: 1}


def test_release_allocation_without_a_handle_conflicts_when_the_block_moved(store):
    found = _found(store, "198.18.0.10", None, None)
    one(store, att("c1"))
    with pytest.raises(retry.Conflict):
        allocator.release_allocation(store, found)
    assert allocator.allocation_at(store, found.address).state == blk.BARE
    assert blk.state(found.record, found.ordinal) == blk.BARE  # `found` is left as read


def test_release_allocation_without_a_handle_tidies_the_block(store):
    found = _found(store, "198.18.0.10", None, {"node": "node1"})
    block = store.block(found.block)
    block.affinity = None  # nobody's block: deleted once empty
    assert store.commit(puts=[block])
    allocator.release_allocation(store, allocator.allocation_at(store, found.address))
    assert store.block(found.block) is None


def test_release_allocation_without_a_handle_honours_the_cooldown(store):
    found = _found(store, "198.18.0.10", None, {"node": "node1"})
    one(store, att("c1"))
    set_config(store, ip_cooldown_seconds=600)
    allocator.release_allocation(store, allocator.allocation_at(store, found.address))
    block = store.block(found.block)
    assert blk.state(block, found.ordinal) == blk.RELEASED  # cooling down, not free
    assert {"handle_id": None, "secondary": {"node": "node1"}} not in block.attributes  # the old entry dropped
