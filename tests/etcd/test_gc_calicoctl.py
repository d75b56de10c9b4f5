"""`calicoctl ipam gc`: the GC reconciliation from an operator's list of live containers, with a
grace period: no runtime vouches that no ADD is in flight, so anything younger than `--grace` may
belong to an ADD the list does not show yet and is left alone (docs/gc.md)."""

from __future__ import annotations

from calico_ipam.allocator import Attachment, FamilyRequest, assign
from tests.calico_support import held_addresses
from tests.calicoctl_support import add_endpoint, age_allocation
from tests.pools import create_pool


def alloc(store, cid: str, node: str = "node1", network: str = "net1", ifname: str = "eth0", old: bool = True):
    a = assign(store, Attachment(f"{network}.{cid}", node, ifname, network=network), [FamilyRequest(4)])[0]
    if old:
        age_allocation(store, a)
    return a


def test_ipam_gc_from_a_live_list(store, ctl, tmp_path):
    create_pool(store, "p", "198.18.30.0/24", 26)
    live_a = alloc(store, "live")
    dead = alloc(store, "dead")
    alloc(store, "dead", ifname="eth1")
    young = alloc(store, "young", old=False)
    alloc(store, "dead", node="node2", ifname="eth2")
    alloc(store, "dead", network="net2")
    add_endpoint(store, "node1-cni-dead-eth0", "node1", "dead", dead.address)
    add_endpoint(store, "node1-cni-live-eth0", "node1", "live", live_a.address)
    live = tmp_path / "live"
    live.write_text("# containers alive on node1\nlive eth0\n")

    for _ in range(2):
        run = ctl("ipam", "gc", "--node", "node1", "--network", "net1", "--live-containers", str(live))
        assert run.rc == 0, run.stderr
        held = held_addresses(store)
        assert set(held) == {"net1.live", "net1.young", "net1.dead", "net2.dead"}
        assert len(held["net1.dead"]) == 1  # node2's
        assert str(young.address) in held["net1.young"]
        assert sorted(e.container_id for e in store.workload_endpoints()) == ["live"]
    assert "1 younger than the grace period" in run.stdout

    run = ctl("ipam", "gc", "--node", "node1", "--network", "net1", "--live-containers", "-", "--grace", "0", env=None)
    assert run.rc == 0
    assert set(held_addresses(store)) == {"net1.dead", "net2.dead"}  # stdin was empty: nothing of node1 is alive


def test_ipam_gc_json_live_list_and_bad_input(store, ctl, tmp_path):
    create_pool(store, "p", "198.18.31.0/24", 26)
    alloc(store, "a", ifname="eth0")
    alloc(store, "a", ifname="eth1")
    live = tmp_path / "live.json"
    live.write_text('[{"containerID": "a", "ifname": "eth1"}]')
    assert ctl("ipam", "gc", "--node", "node1", "--network", "net1", "--live-containers", str(live)).rc == 0
    assert len(held_addresses(store)["net1.a"]) == 1
    live.write_text("a eth0 extra\n")
    run = ctl("ipam", "gc", "--node", "node1", "--network", "net1", "--live-containers", str(live))
    assert run.rc != 0 and "line 1" in run.stderr
    assert len(held_addresses(store)["net1.a"]) == 1


def test_ipam_gc_refuses_a_live_list_it_cannot_read_and_releases_nothing(store, ctl, tmp_path):
    """A live list that is missing or malformed must stop GC: read as "nothing alive" it would
    release every address of the network on the node."""
    create_pool(store, "p", "198.18.32.0/24", 26)
    alloc(store, "a")
    live = tmp_path / "live.json"
    args = ("ipam", "gc", "--node", "node1", "--network", "net1", "--grace", "0", "--live-containers", str(live))
    for content, message in [
        (None, "cannot read"),
        ('[{"containerID": "a"', "not a list of {containerID, ifname}"),
        ('[{"ifname": "eth0"}]', "not a list of {containerID, ifname}"),
        ('[{"containerID": "a", "ifname": 0}]', "not a list of {containerID, ifname}"),
    ]:
        if content is not None:
            live.write_text(content)
        run = ctl(*args)
        assert run.rc == 1 and message in run.stderr and str(live) in run.stderr, (content, run.stderr)
        assert run.stderr.count("\n") == 1
        assert len(held_addresses(store)["net1.a"]) == 1
