"""A block written exactly as Calico v3.30.0 writes it, with allocations without a handle, in the
test etcd: our allocator, cleanup, `calicoctl ipam check`, `ipam release --ip` and `ipam gc` do what
Calico would do with it, and never free or hand out a handle-less address on their own (issue 15,
item 1). The record shapes and where they come from are described in
tests/unit/test_calico_shaped_blocks.py (libcalico-go v3.30.0 `model.AllocationBlock`,
`model.AllocationAttribute`, `model.IPAMHandle`, `model.BlockAffinity`)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from calico_cni.datastore.etcd import Compare
from calico_cni.model import keys
from calico_ipam import allocator
from calico_ipam import blocks as blk
from calico_ipam.allocator import Attachment, FamilyRequest
from tests.calicoctl_support import add_endpoint
from tests.pools import create_pool
from tests.unit.test_calico_shaped_blocks import BARE_MAIN, BARE_V330, NO_HANDLE_MAIN, NO_HANDLE_V330, calico_block_v330, calico_pod

CIDR = "198.18.40.0/28"
NODE = "node1"
OURS_SECONDARY = {"node": NODE, "ifname": "eth0", "network": "net1", "timestamp": "2025-05-01T10:00:00Z"}
# Ordinal 6: a nil-handle allocation whose attributes look like ours: still not ours to free.
PLANTED = [
    (0, calico_pod("aaa", "web-1")),
    (1, calico_pod("bbb", "web-2")),
    (2, NO_HANDLE_V330),
    (3, BARE_V330),
    (4, NO_HANDLE_MAIN),
    (5, BARE_MAIN),
    (6, {"handle_id": None, "secondary": OURS_SECONDARY}),
]
UNOWNED = (2, 3, 4, 5, 6)


def put_raw(store, key: str, doc: dict) -> None:
    ok, _ = store.client.commit([Compare(key, 0)], [(key, json.dumps(doc).encode())], [])
    assert ok, key


def address(o: int) -> str:
    return str(ipaddress.ip_network(CIDR)[o])


@pytest.fixture
def calico_block(store):
    """Pool 198.18.40.0/24 (blocks of /28); node1's block written by Calico v3.30.0 with its
    affinity (`model.BlockAffinity`: {"state": "confirmed", "deleted": false}) and the handles of
    its two pods (`model.IPAMHandle`: {"block": {cidr: n}, "deleted": false}); endpoints for the
    pods and for ordinal 4."""
    create_pool(store, "v4", "198.18.40.0/24", 28)
    doc = calico_block_v330(CIDR, PLANTED)
    put_raw(store, keys.block(CIDR), doc)
    put_raw(store, keys.affinity(NODE, CIDR), {"state": "confirmed", "deleted": False})
    for cid in ("aaa", "bbb"):
        put_raw(store, keys.handle(f"k8s-pod-network.{cid}"), {"block": {CIDR: 1}, "deleted": False})
    add_endpoint(store, "node1-k8s-web--1-eth0", NODE, "aaa", address(0))
    add_endpoint(store, "node1-k8s-web--2-eth0", NODE, "bbb", address(1))
    add_endpoint(store, "node1-k8s-other-eth0", NODE, "ccc", address(4))
    return doc


def raw_block(store) -> dict:
    return json.loads(store.client.get(keys.block(CIDR)).value)


def unowned_untouched(store, planted: dict) -> None:
    now = raw_block(store)
    for o in UNOWNED:
        assert now["attributes"][now["allocations"][o]] == planted["attributes"][planted["allocations"][o]], o
        assert now["sequenceNumberForAllocation"][str(o)] == planted["sequenceNumberForAllocation"][str(o)]
        assert o not in now["unallocated"]


def test_our_allocator_never_hands_out_a_handle_less_address(store, calico_block):
    got = [allocator.assign(store, Attachment(f"net1.c{i}", NODE, "eth0", network="net1"), [FamilyRequest(4)])[0] for i in range(10)]
    in_block = sorted(a.ordinal for a in got if a.block == CIDR)
    assert in_block == list(range(7, 16))  # the nine free ordinals, then a new block
    assert got[-1].block != CIDR
    # Release and re-allocate with cleanup in between: still never an unowned ordinal.
    for a in got[:5]:
        allocator.release(store, f"net1.c{got.index(a)}", None)
    again = [allocator.assign(store, Attachment(f"net1.d{i}", NODE, "eth0", network="net1"), [FamilyRequest(4)])[0] for i in range(5)]
    assert not {a.ordinal for a in again if a.block == CIDR} & set(range(7))
    unowned_untouched(store, calico_block)
    block = store.block(CIDR)
    assert max(block.seq_for_alloc.values()) == block.sequence_number - 1  # recorded, then incremented (item 9)


def test_ipam_check_lists_them_apart_and_finds_no_problem(ctl, store, calico_block, tmp_path):
    path = tmp_path / "report.json"
    run = ctl("ipam", "check", "-o", str(path))
    assert run.rc == 0, run.stdout + run.stderr
    assert "Check complete; found 0 problems." in run.stdout
    assert "Allocations without a handle (kept; not counted as problems): 5" in run.stdout
    report = json.loads(path.read_text())
    assert report["leakedAddresses"] == []
    kinds = {e["address"]: e["kind"] for e in report["allocationsWithoutHandle"]}
    assert kinds == {address(2): "no handle", address(3): "bare entry", address(4): "no handle", address(5): "bare entry", address(6): "no handle"}
    # release --from-report repairs nothing: these are not problems.
    run = ctl("ipam", "release", "--from-report", str(path))
    assert run.rc == 0 and "Repaired 0 problems" in run.stdout
    unowned_untouched(store, calico_block)


def test_ipam_release_ip_frees_a_named_handle_less_address(ctl, store, calico_block):
    run = ctl("ipam", "release", "--ip", address(3))
    assert run.rc == 0, run.stderr
    assert f"Released {address(3)} (no handle, block {CIDR})." in run.stdout
    refused = ctl("ipam", "release", "--ip", address(4))
    assert refused.rc != 0 and "node1-k8s-other-eth0" in refused.stderr
    block = store.block(CIDR)
    assert blk.state(block, 3) == blk.FREE and block.unallocated[-1] == 3
    assert [blk.state(block, o) for o in (0, 1, 2, 4, 5, 6)] == [blk.HELD, blk.HELD, blk.NO_HANDLE, blk.NO_HANDLE, blk.BARE, blk.NO_HANDLE]
    info = json.loads(ctl("ipam", "show", "--ip", address(2), "-o", "json").stdout)
    assert info["state"] == "in use (allocated without a handle)"


def test_ipam_gc_never_frees_a_handle_less_allocation(ctl, store, calico_block, tmp_path):
    dead = allocator.assign(store, Attachment("net1.dead", NODE, "eth0", network="net1"), [FamilyRequest(4)])[0]
    live = tmp_path / "live"
    live.write_text("nothing eth0\n")
    run = ctl("ipam", "gc", "--node", NODE, "--network", "net1", "--live-containers", str(live), "--grace", "0")
    assert run.rc == 0, run.stderr
    block = store.block(CIDR)
    assert blk.state(block, dead.ordinal) in (blk.FREE, blk.RELEASED)
    unowned_untouched(store, calico_block)
