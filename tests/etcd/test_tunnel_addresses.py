"""calico-node's tunnel addresses (calico_cni/node/tunnel_addresses.py) against the real etcd: what
IPAM and the Node hold after each pass, compared with what Calico v3.30's allocateip leaves
(handle `<kind>-tunnel-addr-<node>`, attributes {"node", "type"}, the Node's field), and that
nothing is written when nothing changed, nothing leaks when a pool goes, and a concurrent Node
update is kept.

Passes are driven one at a time from a cache listed from etcd (the daemon's syncer keeps it live;
one test runs the controller's loop with a real syncer)."""

from __future__ import annotations

import ipaddress
import json
import threading

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore.etcd import EtcdClient, Range
from calico_cni.datastore.store import Datastore
from calico_cni.model import keys
from calico_cni.model.kinds.routing import NODE
from calico_cni.model.records import TUNNEL, WORKLOAD, Handle, IPPool
from calico_cni.model.resource import Resource
from calico_cni.node.cluster_view import FELIX_CONFIGURATIONS
from calico_cni.node.parts import PartHealth
from calico_cni.node.syncer import Cache, Syncer
from calico_cni.node.tunnel_addresses import IPIP, VXLAN_V4, VXLAN_V6, TunnelAddressController, describe
from calico_ipam import blocks as blk
from calico_ipam.allocator import release
from tests.calicoctl_support import add_endpoint, allocate
from tests.etcd.test_syncer import wait_until

NODE1 = "node1"
PREFIXES = (keys.NODES, keys.POOLS, FELIX_CONFIGURATIONS, keys.IPAM + "assignment/")


# --- helpers ----------------------------------------------------------------------------------


def register(store: Datastore, name: str = NODE1, labels: dict | None = None) -> None:
    """The Node as calico-node's start-up leaves it (an address, labels)."""
    doc = {
        "kind": "Node",
        "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "labels": labels or {"rack": "a"}},
        "spec": {"bgp": {"ipv4Address": "198.19.0.1/24"}},
    }
    assert store.commit(puts=[Resource(NODE, doc)])


def node_doc(store: Datastore, name: str = NODE1) -> dict:
    return json.loads(store.client.get(keys.node(name)).value)


def update_node(store: Datastore, change, name: str = NODE1) -> None:
    kv = store.client.get(keys.node(name))
    doc = json.loads(kv.value)
    change(doc)
    assert store.commit(puts=[Resource(NODE, doc, kv.mod_revision)])


def put_pool(store: Datastore, name: str, cidr: str, block_size: int | None = None, uses=(WORKLOAD, TUNNEL), **spec) -> None:
    """Create or replace a pool with these spec fields (vxlanMode, ipipMode, nodeSelector, ...)."""
    old = store.pool(name)
    pool = IPPool.new(name, cidr, block_size, allowed_uses=tuple(uses))
    pool.disabled = bool(spec.pop("disabled", False))
    pool.node_selector = spec.pop("nodeSelector", "all()")
    pool.doc["spec"].update(spec)
    if old is not None:
        pool.revision = old.revision
    assert store.commit(puts=[pool])


def revision(store: Datastore) -> int:
    return store.client.read([Range("/nothing")])[1]


def handle_addresses(store: Datastore, handle_id: str) -> list[str]:
    """What the blocks say the handle holds (the truth), with each allocation's attributes."""
    out = []
    for block in store.all_blocks():
        for o in blk.ordinals_of(block, handle_id):
            out.append((str(block.address(o)), block.attribute(o)["secondary"]))
    return out


class Harness:
    """A controller for node1 over a cache listed from etcd before each pass."""

    def __init__(self, endpoint: str, nodename: str = NODE1) -> None:
        self.settings = EtcdSettings((endpoint,))
        self.reader = EtcdClient(self.settings)
        self.cache = Cache()
        self.connects = 0
        self.wrap = None  # tests replace the datastore a pass uses
        self.controller = TunnelAddressController(nodename, self.cache, self.connect)

    def connect(self) -> Datastore:
        self.connects += 1
        store = Datastore(EtcdClient(self.settings))
        return self.wrap(store) if self.wrap else store

    def refresh(self) -> None:
        results, rev = self.reader.read([Range(p, prefix=True) for p in PREFIXES])
        self.cache.replace([kv for found in results for kv in found], rev)

    def run_pass(self, force: bool = False) -> None:
        self.refresh()
        failure = self.controller.run_pass(self.cache.snapshot(), force=force)
        assert failure is None, failure

    def close(self) -> None:
        self.reader.close()


@pytest.fixture
def harness(etcd_endpoint, store):
    register(store)
    h = Harness(etcd_endpoint)
    yield h
    h.close()


@pytest.fixture
def raced_pass(harness, etcd_endpoint, store):
    """A function running one pass of the harness that races calicoctl: the first time the pass
    reads a handle (after its read of the Node, before its write) another client labels the Node
    team=blue. It checks the race happened, on the VXLAN handle, and that the Node kept both its
    label and the other client's; it returns the Node's document."""
    other = Datastore(EtcdClient(EtcdSettings((etcd_endpoint,))))
    raced: list[str] = []

    class Racing(Datastore):
        def handle(self, handle_id):
            if not raced:
                raced.append(handle_id)
                update_node(other, lambda doc: doc["metadata"]["labels"].update(team="blue"))
            return super().handle(handle_id)

    def run() -> dict:
        harness.wrap = lambda s: Racing(s.client)
        harness.run_pass()
        assert raced == ["vxlan-tunnel-addr-node1"]
        doc = node_doc(store)
        assert doc["metadata"]["labels"] == {"rack": "a", "team": "blue"}
        return doc

    yield run
    other.close()


# --- tests ------------------------------------------------------------------------------------


def test_a_vxlan_pool_appearing_gives_the_node_its_first_address(store, harness):
    harness.run_pass()
    assert "ipv4VXLANTunnelAddr" not in node_doc(store)["spec"] and store.handle("vxlan-tunnel-addr-node1") is None

    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    harness.run_pass()
    doc = node_doc(store)
    address = doc["spec"]["ipv4VXLANTunnelAddr"]
    # The first address of the node's own block, as Calico's AutoAssign gives it.
    (affinity,) = store.affinities(NODE1, 4)
    assert address == str(ipaddress.ip_network(affinity.cidr)[0])
    assert handle_addresses(store, "vxlan-tunnel-addr-node1") == [(address, {"node": NODE1, "type": "vxlanTunnelAddress"})]
    assert store.handle("vxlan-tunnel-addr-node1").blocks == {affinity.cidr: 1}
    # Every other field of the Node kept.
    assert doc["metadata"]["labels"] == {"rack": "a"} and doc["spec"]["bgp"] == {"ipv4Address": "198.19.0.1/24"}
    assert harness.controller.held[VXLAN_V4] == ipaddress.ip_address(address)
    assert harness.controller.held[VXLAN_V6] is None and harness.controller.held[IPIP] is None


def test_kept_across_passes_and_restarts_with_no_write(store, harness, etcd_endpoint):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="CrossSubnet")
    harness.run_pass()
    address = node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]
    before = revision(store)
    connects = harness.connects
    harness.run_pass()  # the cache now shows the pass's own Node write: settled, no etcd call
    assert harness.connects == connects
    harness.run_pass(force=True)  # IPAM read again (the safety check): nothing to write
    assert harness.connects == connects + 1
    restarted = Harness(etcd_endpoint)
    try:
        restarted.run_pass()
    finally:
        restarted.close()
    assert revision(store) == before
    assert node_doc(store)["spec"]["ipv4VXLANTunnelAddr"] == address
    assert [a for a, _ in handle_addresses(store, "vxlan-tunnel-addr-node1")] == [address]


@pytest.mark.parametrize("how", ["disabled", "vxlanMode Never"])
def test_moved_to_the_pool_that_qualifies_now_and_the_old_one_released(store, harness, how):
    put_pool(store, "old", "198.18.0.0/24", 26, vxlanMode="Always")
    harness.run_pass()
    old = node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]
    put_pool(store, "new", "198.18.1.0/24", 26, vxlanMode="Always")
    if how == "disabled":
        put_pool(store, "old", "198.18.0.0/24", 26, vxlanMode="Always", disabled=True)
    else:
        put_pool(store, "old", "198.18.0.0/24", 26, vxlanMode="Never")
    harness.run_pass()
    new = node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]
    assert ipaddress.ip_address(new) in ipaddress.ip_network("198.18.1.0/24")
    assert handle_addresses(store, "vxlan-tunnel-addr-node1") == [(new, {"node": NODE1, "type": "vxlanTunnelAddress"})]
    block = store.block(str(ipaddress.ip_network(f"{old}/26", strict=False)))
    assert blk.state(block, block.ordinal(ipaddress.ip_address(old))) in (blk.RELEASED, blk.FREE)


def test_released_and_cleared_when_no_pool_qualifies(store, harness):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    put_pool(store, "ipip", "198.18.1.0/24", 26, ipipMode="Always")
    harness.run_pass()
    assert node_doc(store)["spec"]["bgp"]["ipv4IPIPTunnelAddr"]
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Never")
    put_pool(store, "ipip", "198.18.1.0/24", 26, ipipMode="Never")
    harness.run_pass()
    doc = node_doc(store)
    assert "ipv4VXLANTunnelAddr" not in doc["spec"]
    assert doc["spec"]["bgp"] == {"ipv4Address": "198.19.0.1/24"}  # only the IPIP field went
    for handle in ("vxlan-tunnel-addr-node1", "ipip-tunnel-addr-node1"):
        assert store.handle(handle) is None and handle_addresses(store, handle) == []
    assert harness.controller.held == {VXLAN_V4: None, VXLAN_V6: None, IPIP: None}


def test_a_node_selector_that_does_not_match_gives_none_until_the_labels_match(store, harness):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always", nodeSelector="rack == 'b'")
    harness.run_pass()
    assert "ipv4VXLANTunnelAddr" not in node_doc(store)["spec"]
    assert store.handle("vxlan-tunnel-addr-node1") is None
    update_node(store, lambda doc: doc["metadata"]["labels"].update(rack="b"))
    harness.run_pass()  # a label change is an input: no force needed
    assert ipaddress.ip_address(node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]) in ipaddress.ip_network("198.18.0.0/24")


def test_only_pools_allowing_tunnel_give_tunnel_addresses(store, harness):
    put_pool(store, "a-workload-only", "198.18.0.0/24", 26, uses=(WORKLOAD,), vxlanMode="Always")
    harness.run_pass()
    assert "ipv4VXLANTunnelAddr" not in node_doc(store)["spec"]
    put_pool(store, "b-tunnel", "198.18.1.0/24", 26, uses=(TUNNEL,), vxlanMode="Always")
    harness.run_pass()
    assert ipaddress.ip_address(node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]) in ipaddress.ip_network("198.18.1.0/24")
    # And a pod never gets an address from the tunnel-only pool.
    pod = allocate(store, "net1.pod", node=NODE1)
    assert pod.address in ipaddress.ip_network("198.18.0.0/24")


def test_vxlan_v6_and_ipip_kinds(store, harness):
    put_pool(store, "v6", "fd00:198:18::/48", 122, vxlanMode="CrossSubnet")
    put_pool(store, "ipip", "198.18.2.0/24", 26, ipipMode="Always")
    harness.run_pass()
    doc = node_doc(store)
    v6, ipip = doc["spec"]["ipv6VXLANTunnelAddr"], doc["spec"]["bgp"]["ipv4IPIPTunnelAddr"]
    assert doc["spec"]["bgp"]["ipv4Address"] == "198.19.0.1/24" and "ipv4VXLANTunnelAddr" not in doc["spec"]
    assert handle_addresses(store, "vxlan-v6-tunnel-addr-node1") == [(v6, {"node": NODE1, "type": "vxlanV6TunnelAddress"})]
    assert handle_addresses(store, "ipip-tunnel-addr-node1") == [(ipip, {"node": NODE1, "type": "ipipTunnelAddress"})]
    assert ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:198:18::/48")
    assert ipaddress.ip_address(ipip) in ipaddress.ip_network("198.18.2.0/24")
    assert describe(harness.controller.held) == f"tunnel addresses: VXLAN IPv6 {v6}, IPIP {ipip}"


def test_calicoctl_ipam_check_is_clean_and_delete_node_releases_them(store, harness, ctl, tmp_path):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    put_pool(store, "v6", "fd00:198:18::/48", 122, vxlanMode="Always")
    put_pool(store, "ipip", "198.18.1.0/24", 26, ipipMode="CrossSubnet")
    harness.run_pass()
    pod = allocate(store, "net1.pod", node=NODE1)
    add_endpoint(store, "node1-cni-pod-eth0", NODE1, "pod", pod.address)
    path = tmp_path / "report.json"
    r = ctl("ipam", "check", "-o", str(path))
    assert r.rc == 0, r.stdout + r.stderr
    report = json.loads(path.read_text())
    assert report["problems"] == 0 and report["allocationsWithoutHandle"] == [] and report["withinGracePeriod"] == 0
    assert report["checked"]["allocations"] == 4
    r = ctl("delete", "node", NODE1, "--force")
    assert r.rc == 0, r.stdout + r.stderr
    for handle in ("vxlan-tunnel-addr-node1", "vxlan-v6-tunnel-addr-node1", "ipip-tunnel-addr-node1"):
        assert handle_addresses(store, handle) == [] and store.handle(handle) is None


def test_a_concurrent_node_update_is_kept_and_the_address_assigned_once(store, harness, raced_pass):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    doc = raced_pass()
    address = doc["spec"]["ipv4VXLANTunnelAddr"]
    # The address assigned before the lost write was adopted by the retry, not assigned again.
    assert handle_addresses(store, "vxlan-tunnel-addr-node1") == [(address, {"node": NODE1, "type": "vxlanTunnelAddress"})]
    (affinity,) = store.affinities(NODE1, 4)
    assert address == str(ipaddress.ip_network(affinity.cidr)[0])


def test_an_address_someone_else_holds_is_left_to_them(store, harness):
    """The Node names an address a pod holds (a stale field, an operator's edit): the node gets its
    own, and the pod's stays the pod's."""
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    pod = allocate(store, "net1.pod", node=NODE1)
    update_node(store, lambda doc: doc["spec"].update(ipv4VXLANTunnelAddr=str(pod.address)))
    harness.run_pass()
    address = node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]
    assert address != str(pod.address)
    assert [a for a, _ in handle_addresses(store, "net1.pod")] == [str(pod.address)]
    assert [a for a, _ in handle_addresses(store, "vxlan-tunnel-addr-node1")] == [address]


def test_an_address_released_behind_its_back_is_replaced_by_the_safety_pass(store, harness, ctl):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    harness.run_pass()
    old = node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]
    r = ctl("ipam", "release", "--ip", old)
    assert r.rc == 0, r.stdout + r.stderr
    harness.run_pass(force=True)
    new = node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]
    assert [a for a, _ in handle_addresses(store, "vxlan-tunnel-addr-node1")] == [new]


def test_no_room_is_reported_and_the_other_kinds_still_done(store, harness):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    put_pool(store, "ipip", "198.18.1.0/30", 30, ipipMode="Always")
    for i in range(4):
        allocate(store, f"net1.pod{i}", node="node2")
    harness.refresh()
    failure = harness.controller.run_pass(harness.cache.snapshot())
    assert failure is not None and "IPIP tunnel address (ipip-tunnel-addr-node1)" in failure
    assert ipaddress.ip_address(node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]) in ipaddress.ip_network("198.18.0.0/24")
    # Until RETRY_INTERVAL passes or an input changes, the failure stands without reading IPAM again.
    connects = harness.connects
    assert harness.controller.run_pass(harness.cache.snapshot()) == failure and harness.connects == connects
    release(store, "net1.pod0", None)
    harness.run_pass(force=True)
    assert ipaddress.ip_address(node_doc(store)["spec"]["bgp"]["ipv4IPIPTunnelAddr"]) in ipaddress.ip_network("198.18.1.0/30")
    assert harness.controller.failure is None


def test_the_loop_with_a_real_syncer(store, harness, etcd_endpoint):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    settings = EtcdSettings((etcd_endpoint,))
    warm = EtcdClient(settings)
    cache = Cache()
    syncer = Syncer(warm.lease, PREFIXES, cache)
    controller = TunnelAddressController(NODE1, cache, lambda: Datastore(EtcdClient(settings)))
    stop = threading.Event()
    health = PartHealth()
    threads = [
        threading.Thread(target=syncer.run, args=(stop, PartHealth()), daemon=True),
        threading.Thread(target=controller.run, args=(stop, health), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: "ipv4VXLANTunnelAddr" in node_doc(store)["spec"], what="the VXLAN tunnel address")
        address = node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]
        wait_until(lambda: health.as_dict()["detail"] == f"tunnel addresses: VXLAN {address}", what="the health detail")
        assert health.as_dict()["ready"]
        put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Never")
        wait_until(lambda: "ipv4VXLANTunnelAddr" not in node_doc(store)["spec"], what="the address cleared")
        wait_until(lambda: health.as_dict()["detail"] == "no tunnel address needed", what="the health detail")
        assert handle_addresses(store, "vxlan-tunnel-addr-node1") == []
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        warm.close()
    assert not any(t.is_alive() for t in threads)


# --- odd allocations of the Node's address, as Calico's allocateip meets them ----------------------

OURS = {"node": NODE1, "type": "vxlanTunnelAddress"}


def plant(store: Datastore, address: str, handle_id: str | None, secondary: dict | None) -> None:
    """`address` allocated as `handle_id` (None: no handle; its handle record counts it) with
    `secondary` attributes (None: none), as older Calico versions or manual edits leave it."""
    a = allocate(store, "planting", address=address)
    block = store.block(a.block)
    block.attributes.append({"handle_id": handle_id, "secondary": secondary})
    block.allocations[a.ordinal] = len(block.attributes) - 1
    puts: list = [block]
    if handle_id is not None:
        existing = store.handle(handle_id)
        counted = existing or Handle(handle_id)
        counted.blocks[a.block] = counted.blocks.get(a.block, 0) + 1
        puts.append(counted)
    assert store.commit(puts=puts, deletes=[store.handle("planting")])


def name_on_node(store: Datastore, address: str) -> None:
    update_node(store, lambda doc: doc["spec"].update(ipv4VXLANTunnelAddr=address))


def state_of(store: Datastore, address: str) -> str:
    ip = ipaddress.ip_address(address)
    block = store.block(str(ipaddress.ip_network(f"{ip}/26", strict=False)))
    return blk.state(block, block.ordinal(ip))


@pytest.mark.parametrize(
    "handle_id, secondary",
    [("someone-else", OURS), (None, OURS), (None, None), ("vxlan-tunnel-addr-node1", {"node": "elsewhere", "type": "other"})],
    ids=["our attributes, another handle", "our attributes, no handle", "no handle, no attributes", "our handle, record lost, foreign attributes"],
)
def test_the_nodes_address_held_oddly_is_put_under_our_handle_and_kept(store, harness, handle_id, secondary):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    plant(store, "198.18.0.10", handle_id, secondary)
    if handle_id == "vxlan-tunnel-addr-node1":
        assert store.commit(deletes=[store.handle(handle_id)])  # the record lost: only the block knows
    name_on_node(store, "198.18.0.10")
    harness.run_pass()
    assert node_doc(store)["spec"]["ipv4VXLANTunnelAddr"] == "198.18.0.10"
    assert handle_addresses(store, "vxlan-tunnel-addr-node1") == [("198.18.0.10", OURS)]
    assert store.handle("vxlan-tunnel-addr-node1").blocks == {"198.18.0.0/26": 1}
    assert store.handle("someone-else") is None  # its count went with the address
    # Nothing else is left allocated in the block (no leak, no second address).
    block = store.block("198.18.0.0/26")
    assert [str(block.address(o)) for o in blk.ordinals_in(block, *blk.ALLOCATED)] == ["198.18.0.10"]
    assert blk.consistency_problems(block) == []


def test_our_address_outside_every_qualifying_pool_is_released_not_leaked(store, harness):
    put_pool(store, "plain", "198.18.1.0/24", 26)
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    plant(store, "198.18.1.10", None, OURS)
    name_on_node(store, "198.18.1.10")
    harness.run_pass()
    address = node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network("198.18.0.0/24")
    assert handle_addresses(store, "vxlan-tunnel-addr-node1") == [(address, OURS)]
    assert state_of(store, "198.18.1.10") in (blk.RELEASED, blk.FREE)


@pytest.mark.parametrize(
    "handle_id, secondary, freed",
    [
        (None, None, True),  # from before handles: Calico's scenario 2
        ("vxlan-tunnel-addr-node1", OURS, True),  # our handle's record lost: scenario 3
        (None, OURS, True),  # ours by its attributes
        ("net1.pod", {"node": NODE1, "ifname": "eth0"}, False),  # a pod's: left to it
    ],
    ids=["no handle, no attributes", "our handle, record lost", "our attributes, no handle", "a pod's"],
)
def test_with_no_pool_the_nodes_address_is_freed_when_it_is_ours_or_nobodys(store, harness, handle_id, secondary, freed):
    put_pool(store, "plain", "198.18.0.0/24", 26)
    plant(store, "198.18.0.10", handle_id, secondary)
    if handle_id == "vxlan-tunnel-addr-node1":
        assert store.commit(deletes=[store.handle(handle_id)])
    name_on_node(store, "198.18.0.10")
    harness.run_pass()
    assert "ipv4VXLANTunnelAddr" not in node_doc(store)["spec"]
    assert (state_of(store, "198.18.0.10") in (blk.RELEASED, blk.FREE)) == freed
    if not freed:
        assert [a for a, _ in handle_addresses(store, "net1.pod")] == ["198.18.0.10"]


def test_a_handle_holding_two_addresses_keeps_the_nodes_one_only(store, harness):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    harness.run_pass()
    address = node_doc(store)["spec"]["ipv4VXLANTunnelAddr"]
    plant(store, "198.18.0.20", "vxlan-tunnel-addr-node1", OURS)
    assert len(handle_addresses(store, "vxlan-tunnel-addr-node1")) == 2
    harness.run_pass(force=True)
    assert node_doc(store)["spec"]["ipv4VXLANTunnelAddr"] == address
    assert handle_addresses(store, "vxlan-tunnel-addr-node1") == [(address, OURS)]
    assert store.handle("vxlan-tunnel-addr-node1").blocks == {str(ipaddress.ip_network(f"{address}/26", strict=False)): 1}
    assert state_of(store, "198.18.0.20") in (blk.RELEASED, blk.FREE)


def test_a_concurrent_node_update_on_the_no_pool_branch_is_kept(store, harness, raced_pass):
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Always")
    harness.run_pass()
    put_pool(store, "vxlan", "198.18.0.0/24", 26, vxlanMode="Never")
    doc = raced_pass()
    assert "ipv4VXLANTunnelAddr" not in doc["spec"]
    assert store.handle("vxlan-tunnel-addr-node1") is None and handle_addresses(store, "vxlan-tunnel-addr-node1") == []
