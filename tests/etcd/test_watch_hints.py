"""calico-node's watch cache as hints for a pod's ADD and DEL (issue 19): fewer round trips, and
never a wrong answer: every commit relying on a hint compares what the hint was built from, so a
stale one costs one failed compare-and-swap and a fresh read."""

from __future__ import annotations

import ipaddress
import json

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore import retry
from calico_cni.datastore.errors import DatastoreNotReady
from calico_cni.datastore.etcd import EtcdClient, Range
from calico_cni.datastore.store import Datastore
from calico_cni.model import keys
from calico_cni.node import hints
from calico_cni.node.daemon import watched_prefixes
from calico_cni.node.syncer import Cache
from calico_cni.resources import cluster
from calico_ipam import allocator
from calico_ipam.allocator import Attachment, BlockMemory, FamilyRequest
from calico_ipam.errors import AddressesExhausted
from tests.pools import create_pool

NODE = "node1"


def att(cid: str, node: str = NODE) -> Attachment:
    return Attachment(keys.attachment_handle("net1", cid), node, "eth0")


V4 = [FamilyRequest(4)]


def listed_cache(store: Datastore, node: str = NODE) -> Cache:
    """A cache as calico-node's syncer fills it: its prefixes listed from the test etcd in one
    transaction (the watch then applies later events; a listing is the cache at one revision)."""
    cache = Cache(indexed=hints.indexed(node))
    results, revision = store.client.read([Range(p, prefix=True) for p in watched_prefixes(node)])
    cache.replace([kv for found in results for kv in found], revision)
    return cache


def hint_of(store: Datastore, node: str = NODE):
    """The hint a request to the test etcd gets from calico-node's cache listed now."""
    settings = EtcdSettings(tuple(store.client.settings.endpoints))
    found = hints.CacheHints(listed_cache(store, node), settings).for_settings(settings)
    assert found is not None
    return found


def trips(store: Datastore, fn) -> int:
    before = store.round_trips
    fn()
    return store.round_trips - before


@pytest.fixture
def other(etcd_endpoint):
    """A second writer (another process) on the test etcd."""
    ds = Datastore(EtcdClient(EtcdSettings((etcd_endpoint,))))
    yield ds
    ds.close()


@pytest.fixture
def warm(store):
    """A pool, and a warm memory that holds the node's block (its first allocation claimed it)."""
    create_pool(store, "p1", "198.18.0.0/24")
    memory = BlockMemory()
    first = allocator.assign(store, att("c0"), V4, memory)[0]
    return memory, first


def holders(store: Datastore) -> list[str]:
    """Every allocated address, one entry per ordinal (duplicates would show twice)."""
    return [str(b.address(o)) for b in store.all_blocks() for o, x in enumerate(b.allocations) if x is not None]


# ------------------------------------------------------------------------------------------------
# The hints object


def test_hints_only_for_the_daemons_own_etcd_and_a_synced_cache(store):
    settings = EtcdSettings(tuple(store.client.settings.endpoints))
    cache = Cache()
    own = hints.CacheHints(cache, settings)
    assert own.for_settings(settings) is None  # no first list yet
    cache.replace([], 1)
    assert own.for_settings(settings) is not None
    assert own.for_settings(EtcdSettings(settings.endpoints, timeout=settings.timeout + 1)) is not None  # the same etcd
    assert own.for_settings(EtcdSettings(("http://198.19.0.9:2379",))) is None
    assert own.for_settings(EtcdSettings(settings.endpoints, username="someone")) is None


def test_index_follows_the_watch(store):
    create_pool(store, "p1", "198.18.0.0/24")
    cache = listed_cache(store)
    assert list(cache.snapshot().under(keys.POOLS)) == [keys.pool("p1")]
    from calico_cni.datastore.watch import DELETE, PUT, Event

    kv = cache.snapshot().items[keys.pool("p1")]
    cache.apply([Event(PUT, keys.pool("p2"), kv.value, kv.mod_revision + 1, kv.mod_revision + 1, 1)], kv.mod_revision + 1)
    assert sorted(cache.snapshot().under(keys.POOLS)) == [keys.pool("p1"), keys.pool("p2")]
    cache.apply([Event(DELETE, keys.pool("p1"), b"", kv.mod_revision + 2, 0, 0)], kv.mod_revision + 2)
    assert list(cache.snapshot().under(keys.POOLS)) == [keys.pool("p2")]
    assert cache.snapshot().under(keys.POOLS) == {k: v for k, v in cache.snapshot().items.items() if k.startswith(keys.POOLS)}


# ------------------------------------------------------------------------------------------------
# ADD: an allocation from a held block


def test_allocation_from_a_held_block_is_one_commit(store, warm):
    memory, first = warm
    hint = hint_of(store)
    got: list = []
    assert trips(store, lambda: got.extend(allocator.assign(store, att("c1"), V4, memory, hint))) == 1
    assert got[0].block == first.block and got[0].address != first.address and got[0].new
    stored = store.block(first.block)
    assert stored.attribute(got[0].ordinal)["handle_id"] == "net1.c1"
    assert store.handle("net1.c1").blocks == {first.block: 1}
    # The memory learnt the block as committed: the next one is one commit too, from a hint that
    # predates the previous commit (the block is compared by the revision remembered, not the hint's).
    assert trips(store, lambda: got.extend(allocator.assign(store, att("c2"), V4, memory, hint))) == 1
    assert len(set(holders(store))) == len(holders(store)) == 3


def test_a_block_changed_by_another_writer_costs_one_failed_commit(store, other, warm):
    memory, first = warm
    hint = hint_of(store)
    theirs = allocator.assign(other, att("o1"), V4)[0]  # another process takes an address of the block
    conflicts = retry.stats["conflicts"]
    got: list = []
    # The hinted commit fails, then the read path: view, commit.
    assert trips(store, lambda: got.extend(allocator.assign(store, att("c1"), V4, memory, hint))) == 3
    assert retry.stats["conflicts"] == conflicts + 1
    assert got[0].address not in (first.address, theirs.address)
    assert len(set(holders(store))) == len(holders(store)) == 3


def test_a_repeated_add_gets_its_address_back_after_the_hint_fails(store, warm):
    memory, first = warm
    hint = hint_of(store)
    # The hint assumes a new attachment: c0's handle exists, so the commit fails and the read
    # finds what c0 holds.
    again = allocator.assign(store, att("c0"), V4, memory, hint)
    assert [(a.address, a.new) for a in again] == [(first.address, False)]
    assert holders(store) == [str(first.address)]


def test_a_pool_disabled_after_the_snapshot_is_not_used(store, other, warm):
    memory, first = warm
    hint = hint_of(store)
    pool = other.pool("p1")
    pool.disabled = True
    assert other.commit(puts=[pool])
    with pytest.raises(AddressesExhausted):
        allocator.assign(store, att("c1"), V4, memory, hint)
    assert holders(store) == [str(first.address)] and store.handle("net1.c1") is None


def test_a_pool_deleted_after_the_snapshot_is_not_used(store, other, warm):
    memory, first = warm
    create_pool(store, "p2", "198.18.1.0/24")
    hint = hint_of(store)
    # The pool goes (its block stays, as a deletion racing an ADD can leave it). A prefix guard
    # does not see a deletion: the pool is compared by its revision, so the hinted commit fails
    # and the read path claims a block of the pool that is left.
    assert other.commit(deletes=[other.pool("p1")])
    got = allocator.assign(store, att("c1"), V4, memory, hint)[0]
    assert got.address in ipaddress.ip_network("198.18.1.0/24")


def test_a_lock_set_after_the_snapshot_refuses_the_allocation_before_any_write(store, other, warm):
    memory, first = warm
    cluster.initialise(other)
    hint = hint_of(store)
    assert cluster.set_ready(other, False)
    before = store.client.read([Range("/calico/", prefix=True)])[0]
    with pytest.raises(DatastoreNotReady):
        allocator.assign(store, att("c1"), V4, memory, hint)
    assert store.client.read([Range("/calico/", prefix=True)])[0] == before  # nothing written


def test_a_locked_cache_takes_the_read_path(store, other, warm):
    memory, _ = warm
    cluster.initialise(other)
    cluster.set_ready(other, False)
    hint = hint_of(store)
    before = store.round_trips
    with pytest.raises(DatastoreNotReady):
        allocator.assign(store, att("c1"), V4, memory, hint)
    assert store.round_trips - before == 1  # the view's read found the lock; no commit tried


def test_a_node_relabelled_after_the_snapshot_gets_no_address_of_a_pool_that_stopped_selecting_it(store, other):
    from calico_cni.model.records import Node

    create_pool(store, "pa", "198.18.0.0/24", node_selector="zone == 'a'")
    create_pool(store, "pb", "198.18.1.0/24", node_selector="zone == 'b'")
    node = Node.new(NODE)
    node.labels = {"zone": "a"}
    assert store.commit(puts=[node])
    memory = BlockMemory()
    assert allocator.assign(store, att("c0"), V4, memory)[0].address in ipaddress.ip_network("198.18.0.0/24")
    hint = hint_of(store)
    # The node moves to zone b: its block of pool pa is no longer its to use (the Node is pinned).
    node = other.node(NODE)
    node.labels = {"zone": "b"}
    assert other.commit(puts=[node])
    got = allocator.assign(store, att("c1"), V4, memory, hint)[0]
    assert got.address in ipaddress.ip_network("198.18.1.0/24")


def test_a_reservation_made_after_the_snapshot_is_respected(store, other, warm):
    memory, first = warm
    hint = hint_of(store)
    block = ipaddress.ip_network(first.block)
    # Reserve every address of the block but the one held: the hinted commit must not take one.
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPReservation",
        "metadata": {"name": "r1"},
        "spec": {"reservedCIDRs": [str(block)]},
    }
    assert other.client.commit([], [(keys.RESERVATIONS + "r1", json.dumps(doc).encode())])[0]
    got = allocator.assign(store, att("c1"), V4, memory, hint)[0]
    assert got.address not in block


def test_a_new_node_without_memory_takes_the_read_path(store):
    create_pool(store, "p1", "198.18.0.0/24")
    hint = hint_of(store)
    got: list = []
    # Nothing remembered: the read path (view, blocks listing, claim, commit), correct as ever.
    assert trips(store, lambda: got.extend(allocator.assign(store, att("c1"), V4, BlockMemory(), hint))) > 1
    assert store.block(got[0].block).affine_node == NODE


def test_dual_stack_from_held_blocks_is_two_commits(store):
    create_pool(store, "p1", "198.18.0.0/24")
    create_pool(store, "p6", "fd00:198:18::/120", 122)
    memory = BlockMemory()
    both = [FamilyRequest(4), FamilyRequest(6)]
    allocator.assign(store, att("c0"), both, memory)
    hint = hint_of(store)
    got: list = []
    assert trips(store, lambda: got.extend(allocator.assign(store, att("c1"), both, memory, hint))) == 2
    assert sorted(a.family for a in got) == [4, 6]
    assert store.handle("net1.c1").blocks == {a.block: 1 for a in got}
    assert len(set(holders(store))) == len(holders(store)) == 4


# ------------------------------------------------------------------------------------------------
# ADD: the profiles and the lock from the hint, compared by the endpoint's create


def ident_of(cid: str = "c1"):
    from calico_cni.protocol.request import CniRequest
    from calico_cni.workload import Identity

    config = {"cniVersion": "1.0.0", "name": "net1", "type": "calico", "nodename": NODE, "ipam": {"type": "calico-ipam"}}
    return Identity.of(CniRequest("ADD", "1.0.0", config, container_id=cid, ifname="eth0"), NODE)


def write(store, ident, pins) -> str:
    from calico_cni.plugins.calico import _write_endpoint

    return _write_endpoint(store, ident, ident.host_veth, "ee:ee:ee:ee:ee:01", [ipaddress.ip_interface("198.18.0.1/32")], pins)


def profile_key(name: str = "net1") -> str:
    from calico_cni.workload import PROFILES

    return PROFILES + name


def test_existing_profiles_cost_no_read_and_the_create_compares_them(store):
    from calico_cni.plugins.calico import _ensure_profiles

    ident = ident_of()
    _ensure_profiles(store, ident)  # the profile exists now (as after the node's first pod)
    hint = hint_of(store)
    pins: list = []
    uid: list = []
    assert trips(store, lambda: pins.extend(_ensure_profiles(store, ident, hint))) == 0
    assert {p.key for p in pins} == {profile_key(), keys.CLUSTER_INFORMATION}
    assert trips(store, lambda: uid.append(write(store, ident, pins))) == 1
    assert store.workload_endpoint(ident.namespace, ident.endpoint_name).doc["metadata"]["uid"] == uid[0]


def test_a_missing_profile_in_the_hint_takes_the_read_path(store):
    from calico_cni.plugins.calico import _ensure_profiles

    ident = ident_of()
    hint = hint_of(store)
    assert _ensure_profiles(store, ident, hint) == []  # no pins: read, and created
    assert store.client.get(profile_key()) is not None


def test_a_profile_deleted_after_the_snapshot_is_recreated_by_the_fallback(store, other):
    from calico_cni.plugins.calico import _ensure_profiles

    ident = ident_of()
    _ensure_profiles(store, ident)
    hint = hint_of(store)
    pins = _ensure_profiles(store, ident, hint)
    assert other.client.commit([], [], [profile_key()])[0]  # someone deletes it
    # The create fails on the profile's revision; the fallback reads, recreates it, creates the endpoint.
    assert trips(store, lambda: write(store, ident, pins)) == 5  # failed create, profiles read, profile create, endpoint read, create
    assert store.client.get(profile_key()) is not None
    assert store.workload_endpoint(ident.namespace, ident.endpoint_name) is not None


def test_a_lock_set_after_the_snapshot_fails_the_endpoint_create(store, other):
    from calico_cni.plugins.calico import _ensure_profiles

    ident = ident_of()
    _ensure_profiles(store, ident)
    cluster.initialise(other)
    hint = hint_of(store)
    pins = _ensure_profiles(store, ident, hint)
    assert cluster.set_ready(other, False)
    with pytest.raises(DatastoreNotReady):
        write(store, ident, pins)
    assert store.workload_endpoint(ident.namespace, ident.endpoint_name) is None


def test_a_locked_cache_reads_the_profiles_and_refuses(store, other):
    from calico_cni.plugins.calico import _ensure_profiles

    ident = ident_of()
    _ensure_profiles(store, ident)
    cluster.initialise(other)
    cluster.set_ready(other, False)
    with pytest.raises(DatastoreNotReady):
        _ensure_profiles(store, ident, hint_of(store))


def test_an_add_with_hints_is_two_round_trips_and_a_lock_after_the_snapshot_writes_nothing(store, other, warm):
    """The datastore part of an ADD as `calico.add` runs it (profiles, IPAM, endpoint): two round
    trips with hints; with a lock set after the cache saw the datastore unlocked, the allocation's
    commit fails and the fresh read refuses it before anything is written."""
    from calico_cni.plugins.calico import _ensure_profiles

    memory, _ = warm
    cluster.initialise(other)
    ident = ident_of()
    _ensure_profiles(store, ident)

    def add(cid: str, hint) -> None:
        ident = ident_of(cid)
        pins = _ensure_profiles(store, ident, hint)
        got = allocator.assign(store, att(cid), V4, memory, hint)
        write(store, ident, pins)
        assert got[0].new

    hint = hint_of(store)
    assert trips(store, lambda: add("a1", hint)) == 2
    hint = hint_of(store)
    assert cluster.set_ready(other, False)
    before = store.client.read([Range("/calico/", prefix=True)])[0]
    with pytest.raises(DatastoreNotReady):
        add("a2", hint)
    assert store.client.read([Range("/calico/", prefix=True)])[0] == before


# ------------------------------------------------------------------------------------------------
# DEL: the endpoint from the hint, the release from the handle and block this process committed


def del_request(cid: str):
    from calico_cni.protocol.request import CniRequest

    config = {"cniVersion": "1.0.0", "name": "net1", "type": "calico", "nodename": NODE, "ipam": {"type": "calico-ipam"}}
    return CniRequest("DEL", "1.0.0", config, container_id=cid, ifname="eth0")


def release(store, memory, cid: str, hint) -> list:
    from calico_cni.plugins.calico_ipam import release_addresses

    return release_addresses(del_request(cid), store, memory, NODE, hint)


def test_a_release_of_what_this_process_allocated_is_one_commit(store, warm):
    memory, first = warm
    got = allocator.assign(store, att("c1"), V4, memory, hint_of(store))[0]
    hint = hint_of(store)
    out: list = []
    assert trips(store, lambda: out.extend(release(store, memory, "c1", hint))) == 1
    assert [a.address for a in out] == [got.address]
    assert store.handle("net1.c1") is None and store.block(got.block).attribute(got.ordinal) is None
    assert memory.handle("net1.c1") is None
    # The block as that commit left it is remembered: the next allocation is one commit again.
    assert trips(store, lambda: allocator.assign(store, att("c2"), V4, memory, hint)) == 1
    assert len(set(holders(store))) == len(holders(store)) == 2


def test_a_release_after_another_writer_changed_the_block_reads_and_releases_exactly_ours(store, other, warm):
    memory, first = warm
    got = allocator.assign(store, att("c1"), V4, memory)[0]
    theirs = allocator.assign(other, att("o1"), V4)[0]  # the block moved since this process wrote it
    hint = hint_of(store)
    out = release(store, memory, "c1", hint)
    assert [a.address for a in out] == [got.address]
    assert sorted(holders(store)) == sorted([str(first.address), str(theirs.address)])
    assert store.handle("net1.c1") is None


def test_a_legacy_handle_makes_the_release_read(store, other, warm):
    memory, _ = warm
    legacy = allocator.assign(other, Attachment("c1", NODE, "eth0"), V4)[0]  # Calico's older handle: the bare container ID
    allocator.assign(store, att("c1"), V4, memory)  # the block as this process committed it: only the legacy handle differs
    hint = hint_of(store)
    out = release(store, memory, "c1", hint)
    assert legacy.address in [a.address for a in out]
    assert store.handle("c1") is None and store.handle("net1.c1") is None


def test_a_release_without_memory_of_the_handle_reads(store, warm):
    memory, _ = warm
    got = allocator.assign(store, att("c1"), V4, BlockMemory())[0]  # another process's ADD
    hint = hint_of(store)
    out: list = []
    assert trips(store, lambda: out.extend(release(store, memory, "c1", hint))) == 2  # handles and blocks, commit
    assert [a.address for a in out] == [got.address]


def test_a_lock_set_after_the_snapshot_keeps_the_release_for_the_journal(store, other, warm):
    memory, _ = warm
    got = allocator.assign(store, att("c1"), V4, memory)[0]
    cluster.initialise(other)
    hint = hint_of(store)
    assert cluster.set_ready(other, False)
    with pytest.raises(DatastoreNotReady):
        release(store, memory, "c1", hint)
    assert store.block(got.block).attribute(got.ordinal)["handle_id"] == "net1.c1"


def test_the_endpoint_from_the_hint_is_deleted_in_one_commit(store):
    from calico_cni.plugins.calico import _delete_endpoint, _ensure_profiles, _hinted_endpoint

    ident = ident_of()
    _ensure_profiles(store, ident)
    write(store, ident, [])
    endpoint, pins = _hinted_endpoint(hint_of(store), ident)
    assert endpoint is not None and {p.key for p in pins} == {keys.CLUSTER_INFORMATION}
    assert trips(store, lambda: _delete_endpoint(store, ident, endpoint, pins)) == 1
    assert store.workload_endpoint(ident.namespace, ident.endpoint_name) is None
    # Another sandbox's endpoint (or none) in the hint is no answer: the DEL reads.
    write(store, ident_of("c2"), [])
    assert _hinted_endpoint(hint_of(store), ident) == (None, [])


def test_an_endpoint_changed_after_the_snapshot_is_read_again_and_deleted(store, other):
    from calico_cni.plugins.calico import _delete_endpoint, _hinted_endpoint

    ident = ident_of()
    write(store, ident, [])
    endpoint, pins = _hinted_endpoint(hint_of(store), ident)
    current = other.workload_endpoint(ident.namespace, ident.endpoint_name)
    current.doc["metadata"].setdefault("labels", {})["x"] = "y"  # calicoctl label
    assert other.commit(puts=[current])
    assert _delete_endpoint(store, ident, endpoint, pins)
    assert store.workload_endpoint(ident.namespace, ident.endpoint_name) is None


def test_a_lock_set_after_the_snapshot_keeps_the_endpoint_for_the_journal(store, other):
    from calico_cni.plugins.calico import _delete_endpoint, _hinted_endpoint

    ident = ident_of()
    write(store, ident, [])
    cluster.initialise(other)
    endpoint, pins = _hinted_endpoint(hint_of(store), ident)
    assert cluster.set_ready(other, False)
    with pytest.raises(DatastoreNotReady) as err:
        _delete_endpoint(store, ident, endpoint, pins)
    assert err.value.endpoint is not None  # what the journal records, as the DEL's own read gives it
    assert store.workload_endpoint(ident.namespace, ident.endpoint_name) is not None


def test_concurrent_hinted_adds_and_dels_never_duplicate_or_leak(etcd_endpoint, store, warm):
    """Requests on several threads share one memory and one (soon stale) hint, as calico-node's do:
    every address is distinct, and what the DELs released is free again."""
    import threading

    memory, first = warm
    hint = hint_of(store)
    got: dict[str, str] = {}
    errors: list = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        ds = Datastore(EtcdClient(EtcdSettings((etcd_endpoint,))))
        try:
            for i in range(6):
                cid = f"t{n}-{i}"
                a = allocator.assign(ds, att(cid), V4, memory, hint)[0]
                with lock:
                    got[cid] = str(a.address)
                if i % 2:
                    release(ds, memory, cid, hint)
                    with lock:
                        del got[cid]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            ds.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    held_now = holders(store)
    assert len(set(held_now)) == len(held_now)
    assert sorted(held_now) == sorted([str(first.address), *got.values()])
    assert sorted(h.handle_id for h in store.handles()) == sorted(["net1.c0", *(f"net1.{c}" for c in got)])


def test_concurrent_requests_of_one_node_take_turns_and_each_is_one_commit(etcd_endpoint, store, warm):
    """A burst: 12 ADDs, then their 12 DELs, on threads of one process for one node, through the
    plugin's functions (as calico-node serves them): they take turns on the node's IPAM, so no
    compare-and-swap is lost to each other and each allocation and release is one commit."""
    import threading

    from calico_cni.datastore import retry
    from calico_cni.plugins.calico_ipam import assign_addresses

    memory, first = warm
    conflicts = retry.stats["conflicts"]
    trips_of: dict[str, int] = {}
    errors: list = []
    lock = threading.Lock()

    def one(cid: str, verb: str) -> None:
        ds = Datastore(EtcdClient(EtcdSettings((etcd_endpoint,))))
        try:
            hint = hint_of(ds)  # each request its own snapshot, as each gets calico-node's current one
            if verb == "ADD":
                n = trips(ds, lambda: assign_addresses(del_request(cid), ds, NODE, V4, memory, hint))
            else:
                n = trips(ds, lambda: release(ds, memory, cid, hint))
            with lock:
                trips_of[f"{verb} {cid}"] = n
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            ds.close()

    for verb in ("ADD", "DEL"):
        threads = [threading.Thread(target=one, args=(f"b{n}", verb)) for n in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert retry.stats["conflicts"] == conflicts
    assert set(trips_of.values()) == {1}, trips_of
    assert holders(store) == [str(first.address)]


def test_the_memory_keeps_the_newest_block_record_whatever_order_two_threads_learn_them(warm):
    """Two requests that committed one block learn their records on two threads: the older never
    replaces the newer, even when its thread is between the check and the store (serialising a
    record takes time: here it waits until the newer one is remembered)."""
    import threading

    memory, first = warm
    now = memory.block(first.block)
    older, newer = memory.block(first.block), memory.block(first.block)
    older.revision, newer.revision = now.revision + 1, now.revision + 2
    inside, go = threading.Event(), threading.Event()

    def slow_json() -> bytes:
        inside.set()
        assert go.wait(5)
        return type(older).to_json(older)

    older.to_json = slow_json
    thread = threading.Thread(target=memory.remember_blocks, args=([older],))
    thread.start()
    assert inside.wait(5)
    memory.remember_blocks([newer])
    go.set()
    thread.join(5)
    assert memory.block(first.block).revision == newer.revision
    # And an older record learnt later, without any race, is ignored too.
    memory.remember_blocks([now])
    assert memory.block(first.block).revision == newer.revision


def test_the_daemons_cache_holds_every_key_a_hinted_request_reads(store, warm):
    """calico-node's syncer watches what the hints give: a key missing from its prefixes would be
    'absent' in every hint (each hinted commit failing, or a read every time), never an error."""
    from calico_cni.plugins.calico import _ensure_profiles
    from tests.pools import set_config

    cluster.initialise(store)
    set_config(store, strict_affinity=False)
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPReservation", "metadata": {"name": "r1"}, "spec": {"reservedCIDRs": ["198.18.9.0/24"]}}
    assert store.client.commit([], [(keys.RESERVATIONS + "r1", json.dumps(doc).encode())])[0]
    ident = ident_of()
    _ensure_profiles(store, ident)
    write(store, ident, [])
    hint = hint_of(store)
    for key in (keys.node(NODE), keys.CLUSTER_INFORMATION, keys.IPAM_CONFIG, profile_key(), keys.workload_endpoint(ident.namespace, ident.endpoint_name)):
        assert hint.get(key) is not None, key
    for prefix in (keys.POOLS, keys.RESERVATIONS, keys.host_affinities(NODE, 4)):
        assert hint.under(prefix), prefix
