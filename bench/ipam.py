"""IPAM benchmarks in-process: etcd round trips per operation (counted) and cluster scale."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time

from calico_cni.config import EtcdSettings
from calico_cni.datastore import retry
from calico_cni.datastore.etcd import EtcdClient, Range
from calico_cni.model import keys
from calico_cni.model.records import IPPool
from calico_cni.datastore.store import Datastore, Hint
from calico_cni.node import hints
from calico_cni.node.daemon import watched_prefixes
from calico_cni.node.syncer import Cache
from calico_cni.plugins import calico_ipam as plugin
from calico_cni.protocol.request import CniRequest
from calico_ipam import allocator
from calico_ipam.allocator import Attachment, BlockMemory, FamilyRequest
from tests.conftest import wipe


def _store(endpoint: str) -> Datastore:
    return Datastore(EtcdClient(EtcdSettings((endpoint,))))


def fresh_pool(endpoint: str, cidr: str) -> None:
    """An empty etcd but for one IP pool `bench` of /26 blocks."""
    wipe(endpoint)
    store = _store(endpoint)
    try:
        assert store.commit(puts=[IPPool.new("bench", cidr, 26)])
    finally:
        store.close()


def watch_hint(endpoint: str, node: str) -> Hint:
    """The hint calico-node's requests get: its syncer's cache (the daemon's prefixes and index)
    filled by a list of the etcd at one revision, on a client of its own (not counted)."""
    cache = Cache(indexed=hints.indexed(node))
    with contextlib.closing(_store(endpoint)) as ds:
        results, revision = ds.client.read([Range(p, prefix=True) for p in watched_prefixes(node)])
    cache.replace([kv for found in results for kv in found], revision)
    settings = EtcdSettings((endpoint,))
    hint = hints.CacheHints(cache, settings).for_settings(settings)
    assert hint is not None
    return hint


def round_trips(endpoint: str) -> dict[str, dict[str, int]]:
    """etcd round trips of: an allocation that claims a new block, one from a block the node
    holds, and a release. Counted by the client, not estimated. Each is counted three times: in a
    fresh process (an exec'd plugin without the agent), in a warm one (the agent, which has seen
    the node's blocks before and reads them with the allocation's view) and in calico-node, warm
    too, whose watch cache replaces the reads (`node.hints`: the commits compare it)."""
    fresh_pool(endpoint, "198.18.0.0/16")
    counter = itertools.count()

    # The blocks this process has seen the node hold, as the agent keeps them for its requests.
    memory = BlockMemory()

    def request(name: str) -> CniRequest:
        """A request of network `bench` on node rt-node (handle bench.<name>)."""
        config = {"cniVersion": "1.0.0", "name": "bench", "type": "calico", "nodename": "rt-node", "ipam": {"type": "calico-ipam"}}
        return CniRequest("ADD", "1.0.0", config, container_id=name, ifname="eth0")

    def measure(fn, warm: bool) -> int:
        if not warm:
            memory.forget()  # what a freshly exec'd plugin knows
        ds = _store(endpoint)
        try:
            before = ds.round_trips
            fn(ds)
            return ds.round_trips - before
        finally:
            ds.close()

    # calico-node's cache as hints: None but in the last column.
    hint: list[Hint | None] = [None]

    # Counted through calico-ipam's own verbs' functions, so the count is what a plugin does.
    def assign(ds: Datastore, name: str) -> None:
        plugin.assign_addresses(request(name), ds, "rt-node", [FamilyRequest(4)], memory, hint[0])

    def release(ds: Datastore, name: str) -> None:
        plugin.release_addresses(request(name), ds, memory, "rt-node", hint[0])

    def fill_held_blocks() -> None:
        """Allocate until the node's blocks are full, so the next allocation claims a block."""
        ds = _store(endpoint)
        try:
            while any(b.affine_node == "rt-node" and None in b.allocations for b in ds.all_blocks(4)):
                assign(ds, f"fill{next(counter)}")
        finally:
            ds.close()

    # Register the node first so the first allocation is not also a registration.
    with contextlib.closing(_store(endpoint)) as ds:
        assign(ds, "warm")
        release(ds, "warm")
    out: dict[str, dict[str, int]] = {}
    for warm, label in ((False, "exec'd, no agent"), (True, "agent"), ("hints", "calico-node (watch hints)")):
        fill_held_blocks()
        if warm == "hints":
            hint[0] = watch_hint(endpoint, "rt-node")  # the cache as the watch has it: the node's blocks so far
        out.setdefault("allocation claiming a new block", {})[label] = measure(lambda ds: assign(ds, f"a{warm}"), warm)
        if warm == "hints":
            hint[0] = watch_hint(endpoint, "rt-node")  # the watch delivered the claim
        out.setdefault("allocation from a held block", {})[label] = measure(lambda ds: assign(ds, f"b{warm}"), warm)
        # As a DEL releases: the handles read with the blocks this process remembers for the node.
        out.setdefault("release", {})[label] = measure(lambda ds: release(ds, f"b{warm}"), warm)
    return out


def cluster_scale(endpoint: str, nodes: int = 50, per_node: int = 40) -> dict:
    """`nodes` simulated nodes, each on its own etcd connection, allocating `per_node` addresses
    concurrently: throughput, CAS conflicts retried, duplicates (must be 0), blocks claimed."""
    fresh_pool(endpoint, "198.18.0.0/16")
    conflicts_before = retry.stats["conflicts"]
    results: list = []
    errors: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(nodes)

    def node(n: int) -> None:
        ds = _store(endpoint)
        try:
            barrier.wait()
            for i in range(per_node):
                got = allocator.assign(ds, Attachment(keys.attachment_handle("bench", f"n{n}-{i}"), f"node-{n}", "eth0"), [FamilyRequest(4)])
                with lock:
                    results.append(got[0].address)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            errors.append(repr(exc))
        finally:
            ds.close()

    threads = [threading.Thread(target=node, args=(n,)) for n in range(nodes)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    with contextlib.closing(_store(endpoint)) as store:
        blocks = store.all_blocks(4)
    return {
        "nodes": nodes,
        "allocations": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(elapsed, 2),
        "allocations_per_second": round(len(results) / elapsed, 1),
        "cas_conflicts_retried": retry.stats["conflicts"] - conflicts_before,
        "duplicates": len(results) - len(set(results)),
        "blocks_claimed": len(blocks),
    }
