"""Blocks shaped exactly as Calico writes them go through our block rules, cleanup, `ipam check`,
`ipam release --ip`, GC and the release journal: an allocation without a handle is never freed or
handed out again unless an operator names it (issue 15, items 1 and 9).

Shapes (libcalico-go v3.30.0 unless a test says otherwise):
- `model.AllocationBlock` (lib/backend/model/block.go): every field is written, none has
  omitempty except `hostAffinity`; `allocations` holds attribute indexes or null.
- `model.AllocationAttribute` in v3.30.0: `AttrPrimary *string json:"handle_id"` and
  `AttrSecondary map[string]string json:"secondary"`, no omitempty, so an allocation made with a nil
  handle (`AssignIPArgs.HandleID` is `*string`; `AssignIP` touches a handle record only `if
  args.HandleID != nil`, lib/ipam/ipam.go) is `{"handle_id": null, "secondary": {...}}`, and with no
  attributes `{"handle_id": null, "secondary": null}`. Decoding our `{"releasedAt": ...}` into that
  struct and encoding it again (any Calico write of the block) gives the same
  `{"handle_id": null, "secondary": null}`.
- Calico's main branch (87c15906f2, not released): `AllocationAttribute` has `omitempty` on every
  field and a `releasedAt` cooldown entry `{"releasedAt": <RFC 3339>}`; a handle-less allocation with
  no attributes is `{}` there.
- Sequence numbers: each allocation records the block's `sequenceNumber`
  (`SetSequenceNumberForOrdinal`, lib/ipam/ipam_block.go), then `updateBlock`
  (ipam_block_reader_writer.go) increments the block's on the write; a release clears the
  ordinal's entry (`ClearSequenceNumberForOrdinal`).
- Calico's CNI plugin (cni-plugin/pkg/ipamplugin/ipam_plugin.go v3.30.0) allocates under the handle
  `<network>.<containerID>` with attributes node, timestamp (Go's `time.Time.String()` of UTC),
  pod and namespace.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calico_cni.datastore.etcd import Compare, KeyValue, Range
from calico_cni.datastore.store import Datastore
from calico_cni.model import keys
from calico_cni.model.records import CONFIRMED, Affinity, Block, Handle, IpamConfig, IPPool, WorkloadEndpoint
from calico_ipam import allocator, audit, blocks, inventory, reconcile, repair, replay
from calico_ipam.errors import AddressConflict, RepairRefused

CIDR = "198.18.0.0/28"
NODE = "node1"
CALICO_TS = "2025-05-01 10:00:00.123456789 +0000 UTC"  # time.Now().UTC().String()


def calico_pod(cid: str, pod: str, node: str = NODE) -> dict[str, Any]:
    """The attribute entry Calico v3.30.0's CNI plugin writes for a pod's address."""
    return {"handle_id": f"k8s-pod-network.{cid}", "secondary": {"namespace": "default", "node": node, "pod": pod, "timestamp": CALICO_TS}}


# An allocation made through AssignIP with a nil handle and attributes (v3.30.0 encoding).
NO_HANDLE_V330 = {"handle_id": None, "secondary": {"node": NODE, "note": "reserved by hand"}}
# A nil handle and nil attributes (v3.30.0), which is also what a v3.30 rewrite makes of {"releasedAt": ...}.
BARE_V330 = {"handle_id": None, "secondary": None}
# Calico main branch (omitempty): a nil-handle allocation with attributes, and with none.
NO_HANDLE_MAIN = {"secondary": {"node": NODE}}
BARE_MAIN: dict[str, Any] = {}


def calico_block_v330(
    cidr: str, allocated: list[tuple[int, dict[str, Any]]], affinity: str | None = f"host:{NODE}", start: int = 1_746_000_000_000_000_000
) -> dict[str, Any]:
    """A block as Calico v3.30.0 writes it after allocating `allocated` (ordinal, attribute entry)
    one write each, in order: equal entries share an index (findOrAddAttribute), each ordinal
    records the block's sequence number before the write's increment."""
    size = ipaddress.ip_network(cidr).num_addresses
    allocations: list[int | None] = [None] * size
    attributes: list[dict[str, Any]] = []
    seq, seq_for = start, {}
    for ordinal, attr in allocated:
        if attr not in attributes:
            attributes.append(copy.deepcopy(attr))
        allocations[ordinal] = attributes.index(attr)
        seq_for[str(ordinal)] = seq
        seq += 1
    taken = {o for o, _ in allocated}
    return {
        "cidr": cidr,
        "affinity": affinity,
        "allocations": allocations,
        "unallocated": [o for o in range(size) if o not in taken],
        "attributes": attributes,
        "sequenceNumber": seq,
        "sequenceNumberForAllocation": seq_for,
        "deleted": False,
    }


def parse(doc: dict[str, Any]) -> Block:
    return Block.from_kv(keys.block(doc["cidr"]), json.dumps(doc).encode())


def mixed_block() -> Block:
    """Ordinals 0-1: Calico pods; 2: no handle; 3: bare (v3.30); 4: no handle (main); 5: bare
    (main); then our own allocations and releases are added by the tests."""
    return parse(
        calico_block_v330(
            CIDR,
            [(0, calico_pod("aaa", "web-1")), (1, calico_pod("bbb", "web-2")), (2, NO_HANDLE_V330), (3, BARE_V330), (4, NO_HANDLE_MAIN), (5, BARE_MAIN)],
        )
    )


OURS = {"node": NODE, "ifname": "eth0", "network": "net1", "timestamp": "2025-05-01T10:00:00Z"}


# ------------------------------------------------------------------------------------------------
# An in-memory etcd behind the real Datastore (keys, revisions, compare-and-swap)


class MemoryEtcd:
    """Just enough of `EtcdClient` for the Datastore: read, get, get_prefix and commit."""

    def __init__(self) -> None:
        self.data: dict[str, KeyValue] = {}
        self.revision = 1
        self.round_trips = 0
        self.deadline_at = None

    def _range(self, r: Range) -> list[KeyValue]:
        if r.prefix:
            return [self.data[k] for k in sorted(self.data) if k.startswith(r.key)]
        return [self.data[r.key]] if r.key in self.data else []

    def read(self, ranges, revision: int = 0):
        return [self._range(r) for r in ranges], self.revision

    def get(self, key: str):
        return self.data.get(key)

    def get_prefix(self, prefix: str, keys_only: bool = False, revision: int = 0):
        return self._range(Range(prefix, True))

    def commit(self, compares, puts=(), deletes=()):
        for c in compares:
            assert isinstance(c, Compare)
            if c.prefix:
                if any(kv.mod_revision > c.mod_revision for kv in self._range(Range(c.key, True))):
                    return False, self.revision
            elif (self.data[c.key].mod_revision if c.key in self.data else 0) != c.mod_revision:
                return False, self.revision
        self.revision += 1
        for key, value in puts:
            old = self.data.get(key)
            self.data[key] = KeyValue(key, value, self.revision, old.create_revision if old else self.revision, (old.version if old else 0) + 1)
        for key in deletes:
            self.data.pop(key, None)
        return True, self.revision

    def close(self) -> None:
        pass


def memory_store(block: Block, handles: dict[str, int] | None = None) -> Datastore:
    """A Datastore holding the block, its pool, and the handle records Calico writes for it
    (`model.IPAMHandle`: {"block": {cidr: count}, "deleted": false})."""
    store = Datastore(MemoryEtcd())
    pool = IPPool.new("pool1", CIDR, 28)
    counts: dict[str, int] = {}
    for o in blocks.ordinals_in(block, blocks.HELD):
        h = blocks.handle_of(block.attribute(o))
        counts[h] = counts.get(h, 0) + 1
    records = [Handle(h, {block.cidr: n}) for h, n in sorted(counts.items())]
    assert store.commit(puts=[pool, block, *records])
    return store


def stored_block(store: Datastore) -> Block:
    block = store.block(CIDR)
    assert block is not None
    return block


def endpoint(name: str, cid: str, address: str, node: str = NODE) -> WorkloadEndpoint:
    doc = {
        "kind": "WorkloadEndpoint",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {"orchestrator": "k8s", "node": node, "containerID": cid, "endpoint": "eth0", "ipNetworks": [f"{address}/32"], "interfaceName": "cali0"},
    }
    return WorkloadEndpoint("default", name, doc, 0)


UNOWNED = {2, 3, 4, 5}


def entries(block: Block) -> dict[int, Any]:
    return {o: copy.deepcopy(block.attribute(o)) for o in range(block.size) if block.allocations[o] is not None}


# ------------------------------------------------------------------------------------------------
# One classification


@pytest.mark.parametrize(
    "attr, state",
    [
        (calico_pod("aaa", "web-1"), blocks.HELD),
        (NO_HANDLE_V330, blocks.NO_HANDLE),
        (NO_HANDLE_MAIN, blocks.NO_HANDLE),
        (BARE_V330, blocks.BARE),
        (BARE_MAIN, blocks.BARE),
        ({"handle_id": None, "secondary": {}}, blocks.BARE),
        ({"releasedAt": "2025-05-01T10:00:00Z"}, blocks.RELEASED),  # ours, and Calico main's cooldown entry
        ({"releasedAt": None}, blocks.BARE),  # main's decoder: ReleasedAt nil, not a cooldown entry
        ({"handle_id": "h", "releasedAt": "2025-05-01T10:00:00Z"}, blocks.HELD),  # a handle is never freed by cleanup
        ({"handle_id": "", "secondary": {"node": NODE}}, blocks.NO_HANDLE),
        ("not an object", blocks.NO_HANDLE),
    ],
)
def test_entry_state(attr, state):
    assert blocks.entry_state(attr) == state


def test_block_states_and_counts():
    b = mixed_block()
    [mine] = blocks.assign(b, 1, "net1.c1", OURS)
    [gone] = blocks.assign(b, 1, "net1.c2", OURS)
    blocks.release(b, [gone])
    b.allocations[15] = 99  # dangling
    b.unallocated.remove(15)
    assert [blocks.state(b, o) for o in range(8)] == [blocks.HELD] * 2 + [
        blocks.NO_HANDLE,
        blocks.BARE,
        blocks.NO_HANDLE,
        blocks.BARE,
        blocks.HELD,
        blocks.RELEASED,
    ]
    assert blocks.state(b, 15) == blocks.DANGLING and blocks.state(b, 8) == blocks.FREE
    assert mine == 6
    assert blocks.in_use(b) == 2 + 4 + 1 + 1  # Calico's pods, the four without a handle, ours, the dangling one
    assert blocks.cooling(b) == inventory.cooling(b) == 1


# ------------------------------------------------------------------------------------------------
# Cleanup and allocation never take an address without a handle


@pytest.mark.parametrize("cooldown", [0, 60])
def test_cleanup_frees_only_our_released_entries(cooldown):
    b = mixed_block()
    blocks.assign(b, 2, "net1.c1", OURS)
    blocks.release(b, [7])
    before = entries(b)
    blocks.cleanup(b, cooldown, time.time() + 3600)
    after = entries(b)
    assert set(after) == set(before) - {7}
    for o in (0, 1, 2, 3, 4, 5, 6):
        assert after[o] == before[o]
    assert b.unallocated[-1] == 7 and not UNOWNED & set(b.unallocated)
    assert blocks.consistency_problems(b) == []


def test_a_v330_rewrite_of_our_cooldown_entry_is_kept_not_freed():
    """Calico v3.30 decoding {"releasedAt": ...} into AllocationAttribute and writing it back
    leaves {"handle_id": null, "secondary": null}: indistinguishable from a nil-handle allocation,
    so cleanup keeps it (an operator may free it with `ipam release --ip`)."""
    b = mixed_block()
    [o] = blocks.assign(b, 1, "net1.c1", OURS)
    blocks.release(b, [o])
    doc = json.loads(b.to_json())
    doc["attributes"] = [{"handle_id": a.get("handle_id"), "secondary": a.get("secondary")} for a in doc["attributes"]]  # what v3.30 keeps
    rewritten = parse(doc)
    assert blocks.state(rewritten, o) == blocks.BARE
    blocks.cleanup(rewritten, 0, time.time() + 3600)  # drops the unused net1.c1 entry, frees nothing
    assert blocks.state(rewritten, o) == blocks.BARE and o not in rewritten.unallocated
    assert rewritten.allocations.count(None) == len(rewritten.unallocated) == rewritten.size - 7


def test_assignment_fills_only_free_ordinals():
    b = mixed_block()
    taken = blocks.assign(b, 16, "net1.c1", OURS)
    assert taken == list(range(6, 16))
    assert blocks.assign(b, 1, "net1.c2", OURS) == []
    for o in UNOWNED:
        with pytest.raises(ValueError):
            blocks.assign_ordinals(b, [o], "net1.c2", OURS)
    assert blocks.cooling_until(b, 2, 60) is None and blocks.cooling_until(b, 3, 60) is None


def test_allocation_keeps_an_entry_that_is_not_an_object():
    """An attribute entry that is not an object (null, a number) is NO_HANDLE: the allocator
    prepares such a block like any other, keeps that ordinal, and takes a free one."""
    doc = calico_block_v330(CIDR, [(0, calico_pod("aaa", "web-1"))])
    doc["attributes"] += [None, 7]
    doc["allocations"][1:3] = [1, 2]
    doc["unallocated"] = [o for o in doc["unallocated"] if o not in (1, 2)]
    store = memory_store(parse(doc))
    assert store.commit(puts=[Affinity(NODE, CIDR, CONFIRMED)])
    [got] = allocator.assign(store, allocator.Attachment("net1.c1", NODE, "eth0", network="net1"), [allocator.FamilyRequest(4)])
    b = stored_block(store)
    assert got.ordinal == 3 and [blocks.state(b, o) for o in range(4)] == [blocks.HELD, blocks.NO_HANDLE, blocks.NO_HANDLE, blocks.HELD]


def test_a_refused_assign_ordinals_changes_nothing():
    b = mixed_block()
    before = b.to_json()
    with pytest.raises(ValueError):
        blocks.assign_ordinals(b, [8, 3], "net1.c1", OURS)
    assert b.to_json() == before


def test_release_by_handle_leaves_the_others():
    b = mixed_block()
    blocks.assign(b, 2, "net1.c1", OURS)
    assert blocks.ordinals_of(b, "net1.c1") == [6, 7]
    assert blocks.release(b, blocks.ordinals_of(b, "k8s-pod-network.aaa")) == [0]
    assert [blocks.state(b, o) for o in range(8)] == [
        blocks.RELEASED,
        blocks.HELD,
        blocks.NO_HANDLE,
        blocks.BARE,
        blocks.NO_HANDLE,
        blocks.BARE,
        blocks.HELD,
        blocks.HELD,
    ]


def test_a_released_entry_from_calico_main_cools_down_and_is_freed():
    """Calico main's cooldown entry (model.AllocationAttribute.ReleasedAt, metav1.Time in RFC 3339)
    is the same shape as ours: freed once the cooldown passes, as main's garbageCollect does."""
    doc = calico_block_v330(CIDR, [(0, calico_pod("aaa", "web-1")), (1, calico_pod("bbb", "web-2"))])
    doc["attributes"].append({"releasedAt": "2025-05-01T10:00:00Z"})
    doc["allocations"][1] = 2
    b = parse(doc)
    t0 = 1746093600.0  # 2025-05-01T10:00:00Z
    blocks.cleanup(b, 60, t0 + 59)  # drops web-2's unused entry only
    assert blocks.state(b, 1) == blocks.RELEASED and "1" in b.seq_for_alloc  # main clears it at deallocation
    assert blocks.cleanup(b, 60, t0 + 59) is False
    assert blocks.cleanup(b, 60, t0 + 60) is True
    assert b.allocations[1] is None and b.unallocated[-1] == 1 and "1" not in b.seq_for_alloc


# ------------------------------------------------------------------------------------------------
# Sequence numbers (item 9)


def test_our_allocation_numbers_follow_calicos_on_a_calico_block():
    """On a v3.30-written block our allocation records the block's current number and then
    increments it, exactly as Calico's next write would; a release clears the ordinal's entry."""
    b = mixed_block()
    seq = b.sequence_number
    assert seq == 1_746_000_000_000_000_006  # six Calico writes
    [o] = blocks.assign(b, 1, "net1.c1", OURS)
    assert b.seq_for_alloc[str(o)] == seq and b.sequence_number == seq + 1
    blocks.release(b, [o])
    assert str(o) not in b.seq_for_alloc and b.sequence_number == seq + 2
    assert b.seq_for_alloc["2"] == 1_746_000_000_000_000_002  # Calico's entries untouched


# ------------------------------------------------------------------------------------------------
# ipam check, ipam show --ip, ipam release --ip


def snapshot_of(store: Datastore):
    return store.ipam_snapshot()


def test_check_reports_handle_less_allocations_without_calling_them_leaks():
    b = mixed_block()
    store = memory_store(b)
    assert store.commit(puts=[endpoint("web-1", "aaa", "198.18.0.0"), endpoint("web-2", "bbb", "198.18.0.1"), endpoint("other", "ccc", "198.18.0.4")])
    report = audit.analyse(snapshot_of(store), grace_seconds=60)
    assert report.leaked == [] and report.problems == 0
    by_address = {e["address"]: e for e in report.unowned}
    assert sorted(by_address) == ["198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5"]
    assert by_address["198.18.0.2"]["kind"] == "no handle" and "allocated without a handle" in by_address["198.18.0.2"]["note"]
    for bare in ("198.18.0.3", "198.18.0.5"):
        assert by_address[bare]["kind"] == "bare entry"
        assert "cooldown entry" in by_address[bare]["note"] and "calicoctl ipam release --ip" in by_address[bare]["note"]
    assert by_address["198.18.0.4"]["note"] == "used by workload endpoint default/other"
    assert report.checked["allocations"] == 6
    assert report.endpoints_without_allocation == []  # an endpoint on a handle-less address is allocated
    doc = report.to_json()
    assert doc["allocationsWithoutHandle"] == report.unowned
    assert audit.Report.from_json(json.loads(json.dumps(doc)), "r").unowned == report.unowned


def test_check_still_reports_an_endpoint_on_a_released_address():
    b = mixed_block()
    [o] = blocks.assign(b, 1, "net1.c1", OURS)
    blocks.release(b, [o])
    store = memory_store(b)
    store.commit(puts=[endpoint("late", "ddd", str(b.address(o)))])
    [problem] = audit.analyse(snapshot_of(store), 60).endpoints_without_allocation
    assert problem["reason"].startswith("the address was released at 20")


def test_show_ip_names_each_state():
    b = mixed_block()
    b.allocations[15] = 99
    b.unallocated.remove(15)
    snap = snapshot_of(memory_store(b))
    info = {o: inventory.address_info(snap, b.address(o)) for o in (0, 2, 3, 8, 15)}
    assert info[0]["state"] == "in use" and info[0]["handle"] == "k8s-pod-network.aaa"
    assert info[2]["state"] == "in use (allocated without a handle)" and info[2]["handle"] is None and info[2]["attributes"]["note"] == "reserved by hand"
    assert info[3]["state"].startswith("in use (no handle and no attributes")
    assert info[8]["state"] == "free"
    assert info[15]["state"].startswith("in use (owner unknown")


def test_release_ip_frees_a_handle_less_address_only_when_named():
    b = mixed_block()
    store = memory_store(b)
    store.commit(puts=[endpoint("other", "ccc", "198.18.0.4")])
    snap = snapshot_of(store)
    bare = repair.allocation_to_release(snap, ipaddress.ip_address("198.18.0.3"), force=False)
    assert bare.handle is None and bare.state == blocks.BARE
    with pytest.raises(RepairRefused, match="default/other"):
        repair.allocation_to_release(snap, ipaddress.ip_address("198.18.0.4"), force=False)
    nohandle = repair.allocation_to_release(snap, ipaddress.ip_address("198.18.0.2"), force=False)
    released = repair.release_allocations(store, [bare, nohandle])
    assert sorted(str(a.address) for a in released) == ["198.18.0.2", "198.18.0.3"]
    after = stored_block(store)
    assert blocks.state(after, 2) == blocks.FREE and blocks.state(after, 3) == blocks.FREE  # no cooldown configured
    assert after.unallocated[-2:] == [2, 3]
    assert [blocks.state(after, o) for o in (0, 1, 4, 5)] == [blocks.HELD, blocks.HELD, blocks.NO_HANDLE, blocks.BARE]
    assert {h.handle_id for h in snapshot_of(store).handles} == {"k8s-pod-network.aaa", "k8s-pod-network.bbb"}
    with pytest.raises(RepairRefused, match="not allocated"):
        repair.allocation_to_release(snapshot_of(store), ipaddress.ip_address("198.18.0.2"), force=False)


def test_release_ip_of_a_handle_less_address_reused_meanwhile_frees_nothing():
    b = mixed_block()
    store = memory_store(b)
    stale = repair.allocation_to_release(snapshot_of(store), ipaddress.ip_address("198.18.0.2"), force=False)
    # Meanwhile the address was released, freed and allocated to a pod of ours.
    current = stored_block(store)
    blocks.release(current, [2])
    blocks.cleanup(current, 0, time.time())
    current.unallocated.remove(2)
    current.unallocated.insert(0, 2)
    assert blocks.assign(current, 1, "net1.c9", OURS) == [2]
    assert store.commit(puts=[current])
    assert repair.release_allocations(store, [stale]) == []
    assert blocks.handle_of(stored_block(store).attribute(2)) == "net1.c9"


def test_release_ip_refuses_a_dangling_ordinal():
    b = mixed_block()
    b.allocations[15] = 99
    b.unallocated.remove(15)
    with pytest.raises(RepairRefused, match="missing attribute entry"):
        repair.allocation_to_release(snapshot_of(memory_store(b)), ipaddress.ip_address("198.18.0.15"), force=True)


def test_pool_allocations_count_handle_less_ones():
    b = mixed_block()
    store = memory_store(b)
    pool = store.pool("pool1")
    held = repair.pool_allocations(snapshot_of(store), pool)
    assert sorted(a.ordinal for a in held) == [0, 1, 2, 3, 4, 5]


# ------------------------------------------------------------------------------------------------
# GC and the release journal


def test_gc_never_frees_a_handle_less_allocation_even_with_our_attributes():
    """GC judges only allocations held by a handle: a nil-handle entry carrying our network and
    node is not ours to free."""
    b = parse(calico_block_v330(CIDR, [(0, {"handle_id": None, "secondary": OURS}), (1, calico_pod("aaa", "web-1"))]))
    [o] = blocks.assign(b, 1, "net1.dead", OURS)
    store = memory_store(b)
    report = reconcile.reconcile(store, "net1", NODE, [], endpoints=False)
    assert report.released == [str(b.address(o))]
    after = stored_block(store)
    assert blocks.state(after, 0) == blocks.NO_HANDLE and blocks.state(after, 1) == blocks.HELD
    assert blocks.state(after, o) in (blocks.RELEASED, blocks.FREE)


def test_journal_replay_of_a_stale_entry_frees_nothing_with_the_new_order():
    """The journal's ABA check (design rule 21) with numbers recorded before the increment: an
    entry naming the old allocation of an address since released and reused frees nothing; one
    naming the current allocation frees it."""
    b = mixed_block()
    store = memory_store(b)
    block = stored_block(store)
    [o] = blocks.assign(block, 1, "net1.c1", OURS)
    old = allocator.Assigned(block.address(o), CIDR, o, block.seq_for_alloc[str(o)])
    assert store.commit(puts=[block, Handle("net1.c1", {CIDR: 1})])
    entry = {
        "handle": "net1.c1",
        "ifname": "eth0",
        "containerID": "c1",
        "allocations": [{"address": str(old.address), "block": CIDR, "ordinal": o, "sequence": old.sequence}],
    }
    replay.replay_entry(store, entry)  # the DEL's release
    block = stored_block(store)
    blocks.cleanup(block, 0, time.time())
    block.unallocated.remove(o)
    block.unallocated.insert(0, o)
    assert blocks.assign(block, 1, "net1.c1", OURS) == [o]  # the same handle gets the address back
    new_seq = block.seq_for_alloc[str(o)]
    assert new_seq > old.sequence
    assert store.commit(puts=[block, Handle("net1.c1", {CIDR: 1})])
    replay.replay_entry(store, entry)  # replayed again: stale
    assert blocks.state(stored_block(store), o) == blocks.HELD
    entry["allocations"][0]["sequence"] = new_seq
    replay.replay_entry(store, entry)
    assert blocks.state(stored_block(store), o) == blocks.FREE
    assert [blocks.state(stored_block(store), u) for u in sorted(UNOWNED)] == [blocks.NO_HANDLE, blocks.BARE, blocks.NO_HANDLE, blocks.BARE]


# ------------------------------------------------------------------------------------------------
# Any sequence of our operations frees only what we released


OUR_HANDLES = [f"net1.c{i}" for i in range(6)]
ANY_HANDLE = [*OUR_HANDLES, "k8s-pod-network.aaa", "k8s-pod-network.bbb"]

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), st.integers(0, 5), st.sampled_from(["eth0", "eth1"])),
        st.tuples(st.just("release"), st.integers(0, 5), st.sampled_from(["eth0", "eth1", None])),
        st.tuples(st.just("cleanup"), st.sampled_from([0, 30, 600]), st.sampled_from([0.0, 31.0, 3600.0])),
        st.tuples(st.just("gc"), st.frozensets(st.integers(0, 5)), st.just(None)),
        st.tuples(st.just("calico_release"), st.sampled_from(["aaa", "bbb"]), st.just(None)),
        # allocator.assign of a specific address: (our handle, ifname), any ordinal or the ordinal
        # of a Calico-written allocation (index into its six)
        st.tuples(st.just("assign_at"), st.tuples(st.integers(0, 5), st.sampled_from(["eth0", "eth1"])), st.integers(0, 15)),
        st.tuples(st.just("assign_at_calico"), st.tuples(st.integers(0, 5), st.sampled_from(["eth0", "eth1"])), st.integers(0, 5)),
        # allocator.release_exact of a Calico-written allocation (index into its six) under a
        # handle that is not its own, with the allocation's current sequence number
        st.tuples(st.just("foreign_release_exact"), st.integers(0, 5), st.integers(0, 7)),
        # allocator.release_exact of any ordinal under any handle (8: the one holding it, if any),
        # with the current or a stale sequence number
        st.tuples(st.just("release_exact"), st.integers(0, 15), st.tuples(st.integers(0, 8), st.booleans())),
        # the same for an allocated ordinal (index into them) under its own handle, if it has one
        st.tuples(st.just("own_release_exact"), st.integers(0, 15), st.booleans()),
    ),
    max_size=30,
)


def memory_data(store: Datastore) -> tuple[int, dict[str, bytes]]:
    return store.client.revision, {k: kv.value for k, kv in store.client.data.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, calico_at=st.permutations(list(range(16))), no_seq=st.sets(st.integers(0, 5)), cooldown=st.sampled_from([0, 3600]))
def test_no_sequence_of_our_operations_frees_an_address_we_did_not_release(ops, calico_at, no_seq, cooldown):
    """A block mixing Calico-shaped allocations (two pods with handles, nil-handle ones with and
    without attributes in v3.30 and main encodings) with our own; random assigns, releases by
    handle, cleanups with cooldown, GC runs with a list of valid attachments, releases by Calico's
    pods' own DELs, `allocator.assign` of a specific address at any ordinal, and
    `allocator.release_exact` of any ordinal under any handle (in particular a Calico allocation
    under a handle not its own, with its current sequence number). Some Calico allocations have no
    `sequenceNumberForAllocation` entry (`no_seq`): blocks written before Calico recorded sequence
    numbers (the field is absent from v3.20's `model.AllocationBlock`), where a release's expected
    number None matches. The cluster's `ipCooldownSeconds` is 0 or 3600.

    Invariant after every step: every Calico-written allocation not released by its own handle
    keeps its ordinal, entry and sequence number; each of our allocations not released keeps its
    address; nothing is ever allocated twice. A specific address held by a Calico allocation (or by
    another attachment of ours, or cooling down) is an `AddressConflict` that writes nothing; a
    free one is assigned; `release_exact` frees an ordinal only under the handle holding it and
    with its current sequence number."""
    placed = calico_at[:6]
    shapes = [calico_pod("aaa", "web-1"), calico_pod("bbb", "web-2"), NO_HANDLE_V330, BARE_V330, NO_HANDLE_MAIN, BARE_MAIN]
    doc = calico_block_v330(CIDR, list(zip(placed, shapes)))
    for i in no_seq:
        del doc["sequenceNumberForAllocation"][str(placed[i])]
    block = parse(doc)
    store = memory_store(block)
    if cooldown:
        assert store.commit(puts=[IpamConfig(ip_cooldown_seconds=cooldown)])
    calico = {o: (copy.deepcopy(a), block.seq_for_alloc.get(str(o))) for o, a in zip(placed, shapes)}
    assert sum(seq is None for _, seq in calico.values()) == len(no_seq)
    ours: dict[int, tuple[str, str]] = {}  # ordinal -> (handle, ifname) we hold
    clock = time.time()

    def holder(o: int) -> str | None:
        if o in ours:
            return ours[o][0]
        return blocks.handle_of(calico[o][0]) if o in calico else None

    def release_exact(o: int, handle: str, sequence: int | None) -> None:
        frees = holder(o) == handle and sequence == b.seq_for_alloc.get(str(o))
        gone = allocator.release_exact(store, handle, [allocator.Assigned(b.address(o), CIDR, o, sequence)])
        assert [a.ordinal for a in gone] == ([o] if frees else []), (handle, o, sequence)
        if frees:
            (ours if o in ours else calico).pop(o)

    for op, x, y in ops:
        b = stored_block(store)
        if op == "assign":
            handle = f"net1.c{x}"
            got = blocks.assign(b, 1, handle, {**OURS, "ifname": y})
            if got:
                h = store.handle(handle) or Handle(handle)
                h.blocks[CIDR] = h.blocks.get(CIDR, 0) + 1
                assert store.commit(puts=[b, h])
                assert got[0] not in ours and got[0] not in calico, "an address handed out twice"
                ours[got[0]] = (handle, y)
        elif op in ("assign_at", "assign_at_calico"):
            y = placed[y] if op == "assign_at_calico" else y
            handle, ifname = OUR_HANDLES[x[0]], x[1]
            att = allocator.Attachment(handle, NODE, ifname, network="net1")
            before = memory_data(store)
            already = [o for o, held_by in ours.items() if held_by == (handle, ifname)]
            free = blocks.state(b, y) == blocks.FREE or (blocks.state(b, y) == blocks.RELEASED and not cooldown)
            if already:  # a repeated ADD: what the attachment holds, whatever address it names
                got = allocator.assign(store, att, [allocator.FamilyRequest(4, address=b.address(y))])
                assert sorted(a.ordinal for a in got) == sorted(already) and memory_data(store) == before
            elif y in calico or y in ours or not free:
                with pytest.raises(AddressConflict):
                    allocator.assign(store, att, [allocator.FamilyRequest(4, address=b.address(y))])
                assert memory_data(store) == before, ("a refused assign wrote", y)
            else:
                [got] = allocator.assign(store, att, [allocator.FamilyRequest(4, address=b.address(y))])
                assert got.ordinal == y and got.new
                ours[y] = (handle, ifname)
        elif op == "foreign_release_exact":
            o = placed[x]
            others = [h for h in ANY_HANDLE if h != holder(o)]
            release_exact(o, others[y % len(others)], b.seq_for_alloc.get(str(o)))
        elif op == "release_exact":
            current = b.seq_for_alloc.get(str(x))
            stale = 1 if current is None else None
            release_exact(x, ANY_HANDLE[y[0]] if y[0] < 8 else holder(x) or ANY_HANDLE[0], current if y[1] else stale)
        elif op == "own_release_exact":
            targets = sorted([*ours, *calico])
            if targets:
                o = targets[x % len(targets)]
                current = b.seq_for_alloc.get(str(o))
                release_exact(o, holder(o) or ANY_HANDLE[0], current if y else 1 if current is None else None)
        elif op == "release":
            handle = f"net1.c{x}"
            gone = allocator.release(store, handle, y)
            for a in gone:
                assert ours.pop(a.ordinal)[0] == handle
        elif op == "cleanup":
            clock += y
            if blocks.cleanup(b, x, clock):
                assert store.commit(puts=[b])
        elif op == "gc":
            live = [(f"c{i}", None) for i in x]
            reconcile.reconcile(store, "net1", NODE, live, endpoints=False)
            for o in [o for o, (h, _) in ours.items() if h.split(".", 1)[1][1:] not in {str(i) for i in x}]:
                del ours[o]
        else:  # Calico's own DEL of one of its pods: by its handle
            for a in allocator.release(store, f"k8s-pod-network.{x}", None):
                calico.pop(a.ordinal)
        b = stored_block(store)
        assert blocks.consistency_problems(b) == []
        for o, (attr, seq) in calico.items():
            assert b.attribute(o) == attr and b.seq_for_alloc.get(str(o)) == seq, (op, o)
            assert o not in b.unallocated
        for o, (handle, ifname) in ours.items():
            assert blocks.handle_of(b.attribute(o)) == handle and b.attribute(o)["secondary"]["ifname"] == ifname, (op, o)
        held = blocks.ordinals_in(b, blocks.HELD, blocks.NO_HANDLE, blocks.BARE)
        assert sorted(held) == sorted([*calico, *ours])
