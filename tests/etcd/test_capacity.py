"""STATUS says an ADD can get an address exactly when the allocator would give one: at the block
cap a node neither claims nor borrows, and a block whose every address is reserved is never
claimed. (A STATUS that promises room the allocator refuses sends an orchestrator's pods to a node
where every ADD fails.)"""

from __future__ import annotations

import json

import pytest

from calico_cni.config import IpamSettings
from calico_cni.model import keys
from calico_cni.plugins.status import ipam_status
from calico_cni.protocol.errors import CniError
from calico_ipam import allocator
from calico_ipam.allocator import Attachment, FamilyRequest
from calico_ipam.errors import AddressesExhausted
from tests.pools import create_pool, set_config

IPAM = IpamSettings(type="calico-ipam")


def att(cid: str, node: str = "node1") -> Attachment:
    return Attachment(keys.attachment_handle("net1", cid), node, "eth0")


def assign(store, a: Attachment) -> None:
    allocator.assign(store, a, [FamilyRequest(4)])


def status_ok(store, node: str = "node1") -> bool:
    """Whether calico-ipam's STATUS on `node` succeeds (False: error 50)."""
    try:
        ipam_status(store, IPAM, node)
    except CniError as err:
        assert err.code == 50, err
        return False
    return True


def test_at_the_block_cap_status_and_allocation_both_refuse_to_borrow(store):
    # /32 blocks: one address each, so 20 allocations fill Calico's default limit of 20 blocks.
    create_pool(store, "p1", "198.18.40.0/27", block_size=32)
    assign(store, att("other", node="node2"))
    allocator.release(store, "net1.other", "eth0")  # node2's block now has a free address
    for i in range(20):
        assign(store, att(f"c{i}"))
    assert not status_ok(store)
    with pytest.raises(AddressesExhausted, match="per host block limit"):
        assign(store, att("c20"))
    # Below the cap again, both agree there is room.
    allocator.release(store, "net1.c0", "eth0")
    assert status_ok(store)
    assign(store, att("c21"))


def test_a_block_whose_every_address_is_reserved_is_not_room(store):
    create_pool(store, "p1", "198.18.41.0/29", block_size=30)
    doc = {"kind": "IPReservation", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "r"},
           "spec": {"reservedCIDRs": ["198.18.41.4/30"]}}
    store.client.commit([], [(keys.RESERVATIONS + "r", json.dumps(doc).encode())])
    for i in range(4):
        assign(store, att(f"c{i}"))
    assert not status_ok(store)
    with pytest.raises(AddressesExhausted):
        assign(store, att("c4"))


def test_a_free_address_in_another_nodes_block_is_room_unless_strict_affinity(store):
    # Two /31 blocks: node2 holds one with an address free, node1 fills the other.
    create_pool(store, "p1", "198.18.42.0/30", block_size=31)
    assign(store, att("other", node="node2"))
    assign(store, att("c0"))
    assign(store, att("c1"))
    set_config(store, strict_affinity=True)
    assert not status_ok(store)
    with pytest.raises(AddressesExhausted, match="strict affinity"):
        assign(store, att("c2"))
    set_config(store, strict_affinity=False)
    assert status_ok(store)
    assign(store, att("c2"))  # borrowed from node2's block
    assert not status_ok(store)
