"""Nodes and workload endpoints through the resource verbs: get nodes, label nodes (one label per
call, --overwrite to change, --remove to drop), apply -f of a Node document for a node that is not
registered yet, and get workloadendpoints (-n NAMESPACE, -A)."""

from __future__ import annotations

import pytest
import yaml

from calico_cni.model.records import CONFIRMED, Affinity, Block, Node
from tests.calicoctl_support import add_endpoint
from tests.pools import create_pool, label_node


def _node_file(tmp_path, name: str, **labels: str) -> str:
    path = tmp_path / f"{name}.yaml"
    metadata = {"name": name, **({"labels": labels} if labels else {})}
    path.write_text(yaml.safe_dump({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": metadata, "spec": {}}))
    return str(path)


def test_get_nodes(ctl, store):
    label_node(store, "node2", zone="a", rack="r1")
    label_node(store, "node1")
    r = ctl("get", "nodes")
    assert r.rc == 0
    assert [line.split() for line in r.lines] == [["NAME"], ["node1"], ["node2"]]
    listed = ctl("get", "nodes", "-o", "json").json()
    assert listed["kind"] == "NodeList"
    docs = listed["items"]
    assert [d["metadata"]["name"] for d in docs] == ["node1", "node2"]
    assert docs[1]["metadata"]["labels"] == {"zone": "a", "rack": "r1"} and docs[1]["kind"] == "Node"
    assert "labels" not in docs[0]["metadata"]
    assert yaml.safe_load(ctl("get", "nodes", "-o", "yaml").stdout) == listed


def test_a_nodes_blocks_are_shown_by_ipam_show(ctl, store):
    """`node list` counted each node's affine blocks; `get nodes` (Calico's columns) does not, the
    blocks and their affinity are in `ipam show --show-blocks`."""
    create_pool(store, "p", "198.18.0.0/24", 28)
    label_node(store, "node1")
    label_node(store, "node2")
    blocks = [Block.new("198.18.0.0/28", "node2"), Block.new("198.18.0.16/28", "node2")]
    assert store.commit(puts=[*blocks, *(Affinity("node2", b.cidr, CONFIRMED) for b in blocks)])
    data = ctl("ipam", "show", "--show-blocks", "-o", "json").json()
    blocks_of = {}
    for block in (b for p in data["pools"] for b in p["blocks"]):
        blocks_of.setdefault(block["affinity"], []).append(block["cidr"])
    assert blocks_of == {"node2": ["198.18.0.0/28", "198.18.0.16/28"]}


def test_label_sets_updates_and_removes(ctl, store):
    label_node(store, "node1", zone="a", rack="r1")
    r = ctl("label", "node", "node1", "zone=b", "--overwrite")
    assert r.rc == 0, r.stderr
    assert "Successfully updated label zone on node node1" in r.stdout
    r = ctl("label", "node", "node1", "example.com/role=edge")
    assert r.rc == 0 and "Successfully set label example.com/role on node node1" in r.stdout, r.stderr
    r = ctl("label", "node", "node1", "rack", "--remove")
    assert r.rc == 0 and "Successfully removed label rack from node node1" in r.stdout, r.stderr
    assert store.node("node1").labels == {"zone": "b", "example.com/role": "edge"}
    assert ctl("label", "node", "node1", "empty=").rc == 0
    shown = ctl("get", "node", "node1", "-o", "json").json()
    assert shown["metadata"]["labels"] == {"zone": "b", "example.com/role": "edge", "empty": ""}


def test_changing_a_label_needs_overwrite(ctl, store):
    label_node(store, "node1", zone="a")
    r = ctl("label", "node", "node1", "zone=b")
    assert r.rc == 1 and "key zone is already present" in r.stderr and "--overwrite" in r.stderr
    assert store.node("node1").labels == {"zone": "a"}


def test_removing_an_absent_label_is_refused(ctl, store):
    label_node(store, "node1", zone="a")
    r = ctl("label", "node", "node1", "rack", "--remove")
    assert r.rc == 1 and "cannot remove label of node node1, key rack does not exist" in r.stderr
    assert store.node("node1").labels == {"zone": "a"}


def test_label_keeps_fields_it_does_not_model(ctl, store):
    node = Node.new("node1")
    node.doc["spec"] = {"bgp": {"ipv4Address": "198.19.0.2/32"}}
    node.doc["metadata"]["annotations"] = {"a": "b"}
    assert store.commit(puts=[node])
    assert ctl("label", "node", "node1", "zone=a").rc == 0
    doc = store.node("node1").doc
    assert doc["spec"] == {"bgp": {"ipv4Address": "198.19.0.2/32"}} and doc["metadata"]["annotations"] == {"a": "b"}
    assert doc["metadata"]["labels"] == {"zone": "a"}


def test_label_unknown_node_then_create_it_from_a_file(ctl, store, tmp_path):
    r = ctl("label", "node", "ghost", "zone=a")
    assert r.rc == 1 and "node ghost not found" in r.stderr
    assert store.node("ghost") is None
    r = ctl("apply", "-f", _node_file(tmp_path, "ghost", zone="a"))
    assert r.rc == 0 and "Successfully applied 1 'Node' resource(s)" in r.stdout, r.stderr
    assert store.node("ghost").labels == {"zone": "a"}
    r = ctl("create", "-f", _node_file(tmp_path, "ghost2", zone="b"))
    assert r.rc == 0 and store.node("ghost2").labels == {"zone": "b"}, r.stderr


@pytest.mark.parametrize(
    "args, rc, message",
    [
        ([], 2, "Missing argument 'KEY=VALUE|KEY'"),
        (["zone"], 2, "invalid label zone: give key=value, or key with --remove"),
        (["bad key=x"], 1, "invalid label key 'bad key'"),
        (["-zone=x"], 1, "invalid label key '-zone'"),
        (["Bad_Prefix.com/zone=x"], 1, "invalid label key"),
        (["/zone=x"], 1, "invalid label key"),
        ([("k" * 64) + "=x"], 1, "invalid label key"),
        (["zone=a b", "--overwrite"], 1, "invalid label value 'a b'"),
        (["zone=" + "v" * 64, "--overwrite"], 1, "invalid label value"),
        (["zone=-a", "--overwrite"], 1, "invalid label value '-a'"),
        (["zone=a", "--remove"], 2, "invalid label zone=a: give only the key with --remove"),
    ],
)
def test_label_validation(ctl, store, args, rc, message):
    label_node(store, "node1", zone="keep")
    r = ctl("label", "node", "node1", "--", *args) if args and args[0].startswith("-") else ctl("label", "node", "node1", *args)
    assert r.rc == rc, r.stdout
    assert message in r.stderr
    assert store.node("node1").labels == {"zone": "keep"}


def test_a_node_file_checks_the_node_name(ctl, store, tmp_path):
    r = ctl("apply", "-f", _node_file(tmp_path, "Bad_Node", zone="a"))
    assert r.rc == 1 and "metadata.name: invalid name 'Bad_Node'" in r.stderr
    assert store.node("Bad_Node") is None


def test_get_workloadendpoints(ctl, store):
    add_endpoint(store, "node1-cni-c1-eth0", "node1", "c1" * 20, "198.18.0.1", "fd00:198:18::1")
    add_endpoint(store, "node2-k8s-pod2-eth0", "node2", "c2", "198.18.0.2", namespace="prod")
    r = ctl("get", "workloadendpoints", "-A", "-o", "wide")
    assert r.rc == 0
    assert [line.split() for line in r.lines] == [
        ["NAMESPACE", "NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"],
        ["default", "node1-cni-c1-eth0", "node1", "198.18.0.1/32,fd00:198:18::1/128", "eth0"],
        ["prod", "node2-k8s-pod2-eth0", "node2", "198.18.0.2/32", "eth0"],
    ]
    every = ctl("get", "wep", "-A", "-o", "json").json()["items"]
    assert [d["spec"]["containerID"] for d in every] == ["c1" * 20, "c2"]
    only = [d for d in every if d["spec"]["node"] == "node2"]
    assert [d["metadata"]["name"] for d in only] == ["node2-k8s-pod2-eth0"]
    assert only[0]["spec"]["ipNetworks"] == ["198.18.0.2/32"] and only[0]["metadata"]["resourceVersion"]
    assert [d["metadata"]["name"] for d in ctl("get", "workloadendpoint", "-n", "default", "-o", "json").json()["items"]] == ["node1-cni-c1-eth0"]
    assert [d["metadata"]["name"] for d in ctl("get", "workloadendpoints", "-o", "json").json()["items"]] == ["node1-cni-c1-eth0"]
    assert yaml.safe_load(ctl("get", "weps", "-A", "-o", "yaml").stdout)["items"][1]["spec"]["node"] == "node2"
    assert ctl("get", "wep", "-n", "nowhere", "-o", "json").json()["items"] == []


def test_get_unknown_resource(ctl, store):
    r = ctl("get", "pods")
    assert r.rc == 2 and "resource type 'pods' is not supported" in r.stderr


def test_label_retries_on_a_concurrent_update(ctl, store, monkeypatch):
    """A label written by someone else between the read and the write is kept: the write loses
    the compare-and-swap, and the retry re-reads the node."""
    from calico_cni.datastore import resources as stored
    from calico_cni.model.kinds.routing import NODE

    label_node(store, "node1", zone="a")
    stale_node = stored.get(store, stored.Ref(NODE, "node1"))
    label_node(store, "node1", rack="r1")
    real = stored.get
    calls = []

    def racing(store, ref):
        if ref.kind is not NODE:
            return real(store, ref)
        calls.append(ref.name)
        return stale_node if len(calls) == 1 else real(store, ref)

    monkeypatch.setattr(stored, "get", racing)
    r = ctl("label", "node", "node1", "role=edge")
    assert r.rc == 0 and len(calls) == 2, r.stderr
    assert store.node("node1").labels == {"zone": "a", "rack": "r1", "role": "edge"}

