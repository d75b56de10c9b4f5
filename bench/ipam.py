"""IPAM benchmarks in-process: etcd round trips per operation (counted) and cluster scale."""

from __future__ import annotations

import threading
import time

from calico_cni.config import EtcdSettings
from calico_cni.datastore.etcd import EtcdClient
from calico_cni.datastore.records import IPPool
from calico_cni.datastore.store import Datastore
from calico_ipam import allocator
from calico_ipam.allocator import Attachment, FamilyRequest


def _store(endpoint: str) -> Datastore:
    return Datastore(EtcdClient(EtcdSettings((endpoint,))))


def _wipe(store: Datastore) -> None:
    store.client.commit([], [], [])  # connect
    import pyetcd

    host, port = store.client.settings.endpoints[0].split("://")[1].rsplit(":", 1)
    c = pyetcd.client(host=host, port=int(port))
    c.delete_prefix("/")
    c.close()


def round_trips(endpoint: str) -> dict[str, dict[str, int]]:
    """etcd round trips of: an allocation that claims a new block, one from a block the node
    holds, and a release. Counted by the client, not estimated. Each is counted twice: in a fresh
    process (an exec'd plugin without the agent) and in a warm one (the agent, which has seen the
    node's blocks before and reads them with the allocation's view)."""
    store = _store(endpoint)
    _wipe(store)
    assert store.commit(puts=[IPPool.new("bench", "198.18.0.0/16", 26)])
    # Register the node first so the first allocation is not also a registration.
    allocator.assign(store, Attachment("bench.warm", "rt-node", "eth0"), [FamilyRequest(4)])
    allocator.release(store, "bench.warm", "eth0")
    store.close()
    counter = iter(range(1_000_000))

    def measure(fn, warm: bool) -> int:
        if not warm:
            allocator._node_blocks.clear()  # what a freshly exec'd plugin knows
        ds = _store(endpoint)
        try:
            before = ds.round_trips
            fn(ds)
            return ds.round_trips - before
        finally:
            ds.close()

    def assign(ds: Datastore, name: str) -> None:
        allocator.assign(ds, Attachment(name, "rt-node", "eth0"), [FamilyRequest(4)])

    def release(ds: Datastore, handle_id: str) -> None:
        """As a DEL releases (calico_ipam.plugin.release_addresses): the handle is read with the
        blocks this process remembers for the node."""
        handles, config, blocks = ds.handles_config_blocks([handle_id], allocator.known_blocks("rt-node"))
        allocator.release(ds, handle_id, "eth0", first=(handles[handle_id], config), blocks=blocks)

    def fill_held_blocks() -> None:
        """Allocate until the node's blocks are full, so the next allocation claims a block."""
        ds = _store(endpoint)
        try:
            while any(b.affine_node == "rt-node" and None in b.allocations for b in ds.all_blocks(4)):
                assign(ds, f"bench.fill{next(counter)}")
        finally:
            ds.close()

    out: dict[str, dict[str, int]] = {}
    for warm, label in ((False, "exec'd, no agent"), (True, "agent")):
        fill_held_blocks()
        out.setdefault("allocation claiming a new block", {})[label] = measure(lambda ds: assign(ds, f"bench.a{warm}"), warm)
        out.setdefault("allocation from a held block", {})[label] = measure(lambda ds: assign(ds, f"bench.b{warm}"), warm)
        out.setdefault("release", {})[label] = measure(lambda ds: release(ds, f"bench.b{warm}"), warm)
    return out


def cluster_scale(endpoint: str, nodes: int = 50, per_node: int = 40) -> dict:
    """`nodes` simulated nodes, each on its own etcd connection, allocating `per_node` addresses
    concurrently: throughput, CAS conflicts retried, duplicates (must be 0), blocks claimed."""
    store = _store(endpoint)
    _wipe(store)
    assert store.commit(puts=[IPPool.new("bench", "198.18.0.0/16", 26)])
    conflicts_before = allocator.stats["conflicts"]
    results: list = []
    errors: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(nodes)

    def node(n: int) -> None:
        ds = _store(endpoint)
        try:
            barrier.wait()
            for i in range(per_node):
                got = allocator.assign(ds, Attachment(f"bench.n{n}-{i}", f"node-{n}", "eth0"), [FamilyRequest(4)])
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
    blocks = store.all_blocks(4)
    store.close()
    return {
        "nodes": nodes,
        "allocations": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(elapsed, 2),
        "allocations_per_second": round(len(results) / elapsed, 1),
        "cas_conflicts_retried": allocator.stats["conflicts"] - conflicts_before,
        "duplicates": len(results) - len(set(results)),
        "blocks_claimed": len(blocks),
    }
