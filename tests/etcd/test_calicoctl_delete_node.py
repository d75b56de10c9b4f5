"""calicoctl delete node: what Calico v3.30's node deletion takes with it (the addresses of the
node's workload endpoints and its tunnel addresses, those endpoints, its block affinities and empty
blocks, its BGPPeers, HostEndpoints and per-node FelixConfiguration and BGPConfiguration), refused
while the node has workload endpoints unless --force."""

from __future__ import annotations

import ipaddress
import json

import pytest
import yaml

from calico_cni.datastore.errors import TooManyConflicts
from calico_cni.model.records import CONFIRMED, Affinity, Block
from calico_cni.resources import removal
from calico_ipam import inventory
from calico_ipam.allocator import release
from tests.calicoctl_support import add_endpoint, allocate, run_exe
from tests.pools import create_pool, label_node

POOL = "198.18.0.0/24"


def everything(store) -> dict[str, tuple[bytes, int]]:
    """Every key under /calico/ with its value and revision."""
    return {kv.key: (kv.value, kv.mod_revision) for kv in store.client.get_prefix("/calico/")}


def create(ctl, tmp_path, *docs) -> None:
    path = tmp_path / "resources.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    r = ctl("create", "-f", str(path))
    assert r.rc == 0, r.stderr


def doc(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name}, "spec": spec}


def plant_dependents(ctl, tmp_path, node: str) -> None:
    """A BGPPeer of the node, per-node Felix and BGP configuration, and a HostEndpoint on it."""
    create(
        ctl,
        tmp_path,
        doc("BGPPeer", f"{node}-peer", {"node": node, "peerIP": "198.19.0.1", "asNumber": 64513}),
        doc("FelixConfiguration", f"node.{node}", {"logSeverityScreen": "Debug"}),
        doc("BGPConfiguration", f"node.{node}", {"listenPort": 1790}),
        doc("HostEndpoint", f"{node}-eth0", {"node": node, "interfaceName": "eth0"}),
    )


def dependents(store, node: str) -> list[str]:
    """Keys of the resources named after the node or pointing at it (peers, configs, host endpoints)."""
    out = []
    for key, (value, _) in everything(store).items():
        if "/bgppeers/" in key or "/hostendpoints/" in key:
            if json.loads(value).get("spec", {}).get("node") == node:
                out.append(key)
        elif key.endswith(f"/felixconfigurations/node.{node}") or key.endswith(f"/bgpconfigurations/node.{node}"):
            out.append(key)
    return out


@pytest.fixture
def cluster(store, ctl, tmp_path):
    """node1: three pods (two endpoints on node1's block, one address in a second node1 block made
    by an explicit request), an IPIP tunnel address (handle and Node spec), a VXLAN tunnel address
    (handle only), a leaked allocation recorded for node1, a BGPPeer, per-node configuration and a
    HostEndpoint. node2: a pod of its own, and a pod whose address it took from node1's first block
    (so that block must stay, without affinity). An endpoint of node1 also claims node2's address
    (a stale record): that address is node2's and must stay."""
    create_pool(store, "v4", POOL, 28)
    pods = [allocate(store, f"net1.c{i}", node="node1") for i in range(2)]
    tunnel = allocate(store, "ipip-tunnel-addr-node1", node="node1")
    vxlan = allocate(store, "vxlan-tunnel-addr-node1", node="node1")
    leak = allocate(store, "net1.leak", node="node1")
    disputed = allocate(store, "net1.disputed", node="node1")
    other = allocate(store, "net1.n2", node="node2")
    first = ipaddress.ip_network(pods[0].block)
    borrowed = allocate(store, "net1.n2b", node="node2", address=str(first[14]))
    free = next(n for n in ipaddress.ip_network(POOL).subnets(new_prefix=28) if str(n) not in (pods[0].block, other.block))
    second = allocate(store, "net1.c2", node="node1", address=str(free[8]))
    node = store.node("node1")
    node.doc.setdefault("spec", {})["bgp"] = {"ipv4Address": "198.19.0.10/24", "ipv4IPIPTunnelAddr": str(tunnel.address)}
    assert store.commit(puts=[node])
    add_endpoint(store, "node1-cni-c0-eth0", "node1", "c0", pods[0].address)
    add_endpoint(store, "node1-cni-c1-eth0", "node1", "c1", pods[1].address, namespace="ns1")
    add_endpoint(store, "node1-cni-c2-eth0", "node1", "c2", second.address, other.address)
    add_endpoint(store, "node2-cni-n2-eth0", "node2", "n2", other.address)
    add_endpoint(store, "node2-cni-n2b-eth0", "node2", "n2b", borrowed.address)
    add_endpoint(store, "node2-cni-n2d-eth0", "node2", "n2d", disputed.address)
    plant_dependents(ctl, tmp_path, "node1")
    plant_dependents(ctl, tmp_path, "node2")
    assert pods[0].block == tunnel.block == leak.block == borrowed.block != other.block
    assert second.block not in (pods[0].block, other.block) and store.block(second.block).affine_node == "node1"
    return {
        "released": [pods[0], pods[1], tunnel, vxlan, leak, second],
        "other": other,
        "borrowed": borrowed,
        "disputed": disputed,
        "blocks": (pods[0].block, second.block),
    }


def node2_records(store, cluster) -> dict[str, tuple[bytes, int]]:
    """node2's own records: its endpoints, handles, affinities, its block, its Node and dependents."""
    block = cluster["other"].block.replace("/", "-")
    handles = ("/handle/net1.n2", "/handle/net1.n2b", "/handle/net1.disputed")
    keep = {k: v for k, v in everything(store).items() if "node2" in k or k.endswith(block) or k.endswith(handles)}
    assert len(keep) == 13  # node, 3 endpoints, block, affinity, 3 handles, 4 dependents
    return keep


# ------------------------------------------------------------------------------------------------
# Refused while the node has workload endpoints


def test_a_node_with_endpoints_is_refused_and_nothing_changes(ctl, store, cluster):
    add_endpoint(store, "node1-cni-c3-eth0", "node1", "c3")
    before = everything(store)
    r = ctl("delete", "node", "node1")
    assert r.rc == 1
    assert "Node(node1) still has 4 workload endpoint(s): default/node1-cni-c0-eth0, default/node1-cni-c2-eth0, default/node1-cni-c3-eth0, ..." in r.stderr
    assert "--force" in r.stderr and "ns1/node1-cni-c1-eth0" not in r.stderr
    assert everything(store) == before
    assert r.stdout == ""


# ------------------------------------------------------------------------------------------------
# --force


def test_force_takes_everything_of_the_node_and_nothing_else(ctl, store, cluster, tmp_path):
    keep = node2_records(store, cluster)
    r = ctl("delete", "node", "node1", "--force")
    assert r.rc == 0, r.stderr
    out = r.lines
    pods, tunnel, vxlan, leak, second = cluster["released"][:2], *cluster["released"][2:]
    assert f"Released {pods[0].address} of workload endpoint default/node1-cni-c0-eth0" in out
    assert f"Released {pods[1].address} of workload endpoint ns1/node1-cni-c1-eth0" in out
    assert f"Released {second.address} of workload endpoint default/node1-cni-c2-eth0" in out
    assert f"Released {tunnel.address} tunnel address of node node1 (handle ipip-tunnel-addr-node1)" in out
    assert f"Released {vxlan.address} tunnel address of node node1 (handle vxlan-tunnel-addr-node1)" in out
    assert f"Released {leak.address} allocated to node node1, used by no workload endpoint (handle net1.leak)" in out
    assert sum(line.startswith("Released 198.") for line in out) == 6
    other = cluster["other"]
    assert (
        f"Kept {other.address} (handle net1.n2): workload endpoint default/node1-cni-c2-eth0 of node node1 claims it, but it is allocated to node node2" in out
    )
    disputed = cluster["disputed"]
    assert (
        f"Kept {disputed.address} (handle net1.disputed): it is recorded as node node1's, but workload endpoint default/node2-cni-n2d-eth0 of another node claims it too"
        in out
    )
    for name in ("default/node1-cni-c0-eth0", "ns1/node1-cni-c1-eth0", "default/node1-cni-c2-eth0"):
        assert f"Deleted workload endpoint {name}" in out
    first, second_block = cluster["blocks"]
    assert f"Released the affinity of node node1 to block {first}; the block keeps its 2 allocated addresses, affine to no node" in out
    assert f"Released the affinity of node node1 to block {second_block} and deleted the empty block" in out
    for line in (
        "Deleted BGPPeer node1-peer",
        "Deleted FelixConfiguration node.node1",
        "Deleted BGPConfiguration node.node1",
        "Deleted HostEndpoint node1-eth0",
    ):
        assert line in out
    assert out[-1] == "Successfully deleted 1 'Node' resource(s)"

    # The node and everything of it is gone.
    assert store.node("node1") is None
    assert [w.name for w in store.workload_endpoints() if w.node == "node1"] == []
    assert store.affinities("node1") == []
    assert store.block(second_block) is None
    kept: Block = store.block(first)
    assert kept.affinity is None and sorted(a.handle for a in inventory.block_allocations(kept)) == ["net1.disputed", "net1.n2b"]
    assert [h.handle_id for h in store.handles() if "node1" in h.handle_id or h.handle_id in ("net1.c0", "net1.c1", "net1.c2", "net1.leak")] == []
    assert dependents(store, "node1") == []
    assert not [k for k in everything(store) if "node1" in k]

    # node2's records are untouched (its borrowed address's block lost only node1's affinity).
    assert node2_records(store, cluster) == keep
    assert len(dependents(store, "node2")) == 4
    assert store.block(first).attribute(cluster["borrowed"].ordinal)["handle_id"] == "net1.n2b"

    # The addresses are free again, and the records are consistent.
    for i, a in enumerate(cluster["released"]):
        again = allocate(store, f"net1.again{i}", node="node3", address=str(a.address))
        assert again.address == a.address
    check = ctl("ipam", "check")
    assert check.rc == 0 and check.lines[-1] == "Check complete; found 0 problems.", check.stdout


def test_force_through_the_installed_command(store, etcd_endpoint):
    create_pool(store, "v4", POOL, 28)
    a = allocate(store, "net1.c0", node="node1")
    add_endpoint(store, "node1-cni-c0-eth0", "node1", "c0", a.address)
    env = {"ETCD_ENDPOINTS": etcd_endpoint}
    r = run_exe("delete", "node", "node1", env=env)
    assert r.rc == 1 and "Node(node1) still has 1 workload endpoint(s): default/node1-cni-c0-eth0;" in r.stderr
    assert store.node("node1") is not None
    r = run_exe("delete", "node", "node1", "--force", env=env)
    assert r.rc == 0, r.stderr
    assert r.lines == [
        f"Released {a.address} of workload endpoint default/node1-cni-c0-eth0",
        "Deleted workload endpoint default/node1-cni-c0-eth0",
        f"Released the affinity of node node1 to block {a.block} and deleted the empty block",
        "Successfully deleted 1 'Node' resource(s)",
    ]
    assert [k for k in everything(store) if not k.endswith("/ippools/v4")] == []


# ------------------------------------------------------------------------------------------------
# A node without endpoints


def test_a_node_without_endpoints(ctl, store, tmp_path):
    create_pool(store, "v4", POOL, 28)
    a = allocate(store, "net1.gone", node="node1")
    release(store, "net1.gone", None)  # the pod went; its affine block stays, empty
    b = allocate(store, "net1.n2", node="node2")
    plant_dependents(ctl, tmp_path, "node1")
    plant_dependents(ctl, tmp_path, "node2")
    keep = {k: v for k, v in everything(store).items() if "node2" in k or k.endswith(b.block.replace("/", "-"))}
    assert store.affinities("node1") and store.block(a.block) is not None and len(dependents(store, "node1")) == 4

    r = ctl("delete", "node", "node1")
    assert r.rc == 0, r.stderr
    assert r.lines == [
        f"Released the affinity of node node1 to block {a.block} and deleted the empty block",
        "Deleted BGPPeer node1-peer",
        "Deleted FelixConfiguration node.node1",
        "Deleted BGPConfiguration node.node1",
        "Deleted HostEndpoint node1-eth0",
        "Successfully deleted 1 'Node' resource(s)",
    ]
    assert store.node("node1") is None and store.affinities("node1") == [] and store.block(a.block) is None
    assert dependents(store, "node1") == []
    assert {k: v for k, v in everything(store).items() if "node2" in k or k.endswith(b.block.replace("/", "-"))} == keep


def test_stray_affinities_go_too(ctl, store):
    """An affinity to a block that is missing, or that another node holds, is deleted as well."""
    create_pool(store, "v4", POOL, 28)
    label_node(store, "node1")
    b = allocate(store, "net1.n2", node="node2")
    missing = next(str(n) for n in ipaddress.ip_network(POOL).subnets(new_prefix=28) if str(n) != b.block)
    assert store.commit(puts=[Affinity("node1", missing, CONFIRMED), Affinity("node1", b.block, CONFIRMED)])
    r = ctl("delete", "node", "node1")
    assert r.rc == 0, r.stderr
    assert sorted(r.lines[:2]) == sorted(
        [
            f"Deleted the affinity of node node1 to block {b.block} (the block is affine to node node2)",
            f"Deleted the affinity of node node1 to block {missing} (the block is missing)",
        ]
    )
    assert store.affinities("node1") == [] and store.block(b.block).affine_node == "node2"


# ------------------------------------------------------------------------------------------------
# Missing nodes, resource versions, failures part-way


def test_a_missing_node(ctl, store):
    r = ctl("delete", "node", "ghost")
    assert r.rc == 1 and "resource does not exist: Node(ghost)" in r.stderr and r.stdout == ""
    r = ctl("delete", "node", "ghost", "--skip-not-exists")
    assert r.rc == 0, r.stderr


def test_a_missing_node_still_has_its_leftovers_removed(ctl, store, tmp_path):
    """As Calico's: the Node record is gone, but its affinity and its peer were left behind."""
    create_pool(store, "v4", POOL, 28)
    a = allocate(store, "net1.gone", node="ghost")
    release(store, "net1.gone", None)
    assert store.commit(deletes=[store.node("ghost")])
    create(ctl, tmp_path, doc("BGPPeer", "ghost-peer", {"node": "ghost", "peerIP": "198.19.0.1", "asNumber": 64513}))
    r = ctl("delete", "node", "ghost", "--skip-not-exists")
    assert r.rc == 0, r.stderr
    assert f"Released the affinity of node ghost to block {a.block} and deleted the empty block" in r.lines
    assert "Deleted BGPPeer ghost-peer" in r.lines
    assert [k for k in everything(store) if not k.endswith("/ippools/v4")] == []
    r = ctl("delete", "node", "ghost")
    assert r.rc == 1 and "resource does not exist: Node(ghost)" in r.stderr


def test_a_stale_resource_version_is_a_conflict(ctl, store, tmp_path):
    create_pool(store, "v4", POOL, 28)
    a = allocate(store, "net1.gone", node="node1")
    release(store, "net1.gone", None)
    path = tmp_path / "node.yaml"
    path.write_text(ctl("get", "node", "node1", "-o", "yaml").stdout)
    assert yaml.safe_load(path.read_text())["metadata"]["resourceVersion"]
    label_node(store, "node1", zone="a")
    before = everything(store)
    r = ctl("delete", "-f", str(path))
    assert r.rc == 1 and "update conflict: Node(node1)" in r.stderr and "out of date" in r.stderr
    assert everything(store) == before and store.affinities("node1")

    path.write_text(ctl("get", "node", "node1", "-o", "yaml").stdout)
    r = ctl("delete", "-f", str(path))
    assert r.rc == 0, r.stderr
    assert store.node("node1") is None and store.block(a.block) is None


def test_a_failure_part_way_says_what_was_done_and_a_second_run_finishes(ctl, store, cluster, monkeypatch):
    def fail(store, name, progress):
        raise TooManyConflicts("deleting BGPPeer node1-peer: gave up after 100 attempts lost to concurrent updates; try again later")

    monkeypatch.setattr(removal, "_delete_dependents", fail)
    r = ctl("delete", "node", "node1", "--force")
    assert r.rc == 1
    assert "deleting Node(node1) stopped part-way: deleting BGPPeer node1-peer: gave up" in r.stderr
    assert (
        "done already: 6 addresses released, 3 workload endpoints deleted, 1 blocks deleted, 1 blocks kept without affinity; run the delete again to finish"
        in r.stderr
    )
    assert store.node("node1") is not None and len(dependents(store, "node1")) == 4
    monkeypatch.undo()

    r = ctl("delete", "node", "node1", "--force")
    assert r.rc == 0, r.stderr
    assert not [line for line in r.lines if line.startswith(("Released 198.", "Deleted workload"))]
    assert store.node("node1") is None and dependents(store, "node1") == []
    assert ctl("ipam", "check").rc == 0


def test_the_node_changed_meanwhile_is_not_deleted(ctl, store, monkeypatch):
    """The Node is deleted by a compare-and-swap on the revision read first: a node updated while
    its records were removed (it may have taken a new tunnel address) is left for a second run."""
    create_pool(store, "v4", POOL, 28)
    label_node(store, "node1")
    steps = removal._delete_dependents

    def and_meanwhile(store_, name, progress):
        steps(store_, name, progress)
        label_node(store, "node1", zone="a")

    monkeypatch.setattr(removal, "_delete_dependents", and_meanwhile)
    r = ctl("delete", "node", "node1")
    assert r.rc == 1 and "update conflict: Node(node1) changed while its records were being removed" in r.stderr
    assert store.node("node1").labels == {"zone": "a"}
    monkeypatch.undo()
    assert ctl("delete", "node", "node1").rc == 0 and store.node("node1") is None
