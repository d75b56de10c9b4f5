"""calicoctl node list / node label, and get workloadendpoints."""

from __future__ import annotations

import pytest
import yaml

from calico_cni.model.records import CONFIRMED, Affinity, Node
from tests.calicoctl_support import add_endpoint
from tests.pools import label_node


def test_node_list(ctl, store):
    label_node(store, "node2", zone="a", rack="r1")
    label_node(store, "node1")
    assert store.commit(puts=[Affinity("node2", "198.18.0.0/28", CONFIRMED), Affinity("node2", "198.18.0.16/28", CONFIRMED)])
    r = ctl("node", "list")
    assert r.rc == 0
    assert [line.split() for line in r.lines] == [["NAME", "LABELS", "BLOCKS"], ["node1", "-", "0"], ["node2", "zone=a,", "rack=r1", "2"]]
    docs = ctl("node", "list", "-o", "json").json()
    assert [d["metadata"]["name"] for d in docs] == ["node1", "node2"]
    assert docs[1]["metadata"]["labels"] == {"zone": "a", "rack": "r1"} and docs[1]["kind"] == "Node"
    assert yaml.safe_load(ctl("node", "list", "-o", "yaml").stdout) == docs


def test_label_sets_and_removes(ctl, store):
    label_node(store, "node1", zone="a", rack="r1")
    r = ctl("node", "label", "node1", "zone=b", "example.com/role=edge", "rack-")
    assert r.rc == 0, r.stderr
    assert store.node("node1").labels == {"zone": "b", "example.com/role": "edge"}
    assert "Node node1 labels: zone=b, example.com/role=edge" in r.stdout
    r = ctl("node", "label", "node1", "empty=", "-o", "json")
    assert r.json()["metadata"]["labels"] == {"zone": "b", "example.com/role": "edge", "empty": ""}


def test_removing_an_absent_label_is_a_note(ctl, store):
    label_node(store, "node1", zone="a")
    r = ctl("node", "label", "node1", "rack-")
    assert r.rc == 0 and "node node1 had no label rack" in r.stderr
    assert store.node("node1").labels == {"zone": "a"}


def test_label_keeps_fields_it_does_not_model(ctl, store):
    node = Node.new("node1")
    node.doc["spec"] = {"bgp": {"ipv4Address": "198.19.0.2/32"}}
    node.doc["metadata"]["annotations"] = {"a": "b"}
    assert store.commit(puts=[node])
    assert ctl("node", "label", "node1", "zone=a").rc == 0
    doc = store.node("node1").doc
    assert doc["spec"] == {"bgp": {"ipv4Address": "198.19.0.2/32"}} and doc["metadata"]["annotations"] == {"a": "b"}


def test_label_unknown_node(ctl, store):
    r = ctl("node", "label", "ghost", "zone=a")
    assert r.rc == 1 and "node ghost does not exist" in r.stderr and "--create" in r.stderr
    assert store.node("ghost") is None
    r = ctl("node", "label", "ghost", "zone=a", "--create")
    assert r.rc == 0 and store.node("ghost").labels == {"zone": "a"}


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give at least one label"),
        (["zone"], "invalid label argument 'zone'"),
        (["bad key=x"], "invalid label key 'bad key'"),
        (["-zone=x"], "invalid label key '-zone'"),
        (["Bad_Prefix.com/zone=x"], "invalid label key"),
        (["/zone=x"], "invalid label key"),
        ([("k" * 64) + "=x"], "invalid label key"),
        (["zone=a b"], "invalid value 'a b' for label zone"),
        (["zone=" + "v" * 64], "invalid value"),
        (["zone=-a"], "invalid value '-a'"),
        (["zone=a", "zone-"], "label zone is both set and removed"),
    ],
)
def test_label_validation(ctl, store, args, message):
    label_node(store, "node1", zone="keep")
    r = ctl("node", "label", "node1", "--", *args) if args and args[0].startswith("-") else ctl("node", "label", "node1", *args)
    assert r.rc == 1, r.stdout
    assert message in r.stderr
    assert store.node("node1").labels == {"zone": "keep"}


def test_label_create_checks_the_node_name(ctl, store):
    r = ctl("node", "label", "Bad_Node", "zone=a", "--create")
    assert r.rc == 1 and "invalid node name" in r.stderr


def test_get_workloadendpoints(ctl, store):
    add_endpoint(store, "node1-cni-c1-eth0", "node1", "c1" * 20, "198.18.0.1", "fd00:198:18::1")
    add_endpoint(store, "node2-k8s-pod2-eth0", "node2", "c2", "198.18.0.2", namespace="prod")
    r = ctl("get", "workloadendpoints")
    assert r.rc == 0
    assert [line.split() for line in r.lines] == [
        ["NAMESPACE", "NAME", "NODE", "CONTAINER", "NETWORKS", "INTERFACE"],
        ["default", "node1-cni-c1-eth0", "node1", "c1c1c1c1c1c1", "198.18.0.1/32,fd00:198:18::1/128", "eth0"],
        ["prod", "node2-k8s-pod2-eth0", "node2", "c2", "198.18.0.2/32", "eth0"],
    ]
    only = ctl("get", "wep", "--node", "node2", "-o", "json").json()
    assert [d["metadata"]["name"] for d in only] == ["node2-k8s-pod2-eth0"]
    assert only[0]["spec"]["ipNetworks"] == ["198.18.0.2/32"] and only[0]["metadata"]["resourceVersion"]
    assert [d["metadata"]["name"] for d in ctl("get", "workloadendpoint", "-n", "default", "-o", "json").json()] == ["node1-cni-c1-eth0"]
    assert yaml.safe_load(ctl("get", "weps", "-o", "yaml").stdout)[1]["spec"]["node"] == "node2"
    assert ctl("get", "wep", "--node", "nowhere", "-o", "json").json() == []


def test_get_unknown_resource(ctl, store):
    r = ctl("get", "pods")
    assert r.rc == 2 and "No such command 'pods'" in r.stderr


def test_label_retries_on_a_concurrent_update(ctl, store, monkeypatch):
    """A label written by someone else between the read and the write is kept: the write loses
    the compare-and-swap, and the retry re-reads the node."""
    from calico_cni.datastore.store import Datastore

    label_node(store, "node1", zone="a")
    stale = store.node("node1")
    label_node(store, "node1", rack="r1")
    real = Datastore.node
    calls = []

    def racing(self, name):
        calls.append(name)
        return stale if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(Datastore, "node", racing)
    r = ctl("node", "label", "node1", "role=edge")
    assert r.rc == 0 and len(calls) == 2
    assert store.node("node1").labels == {"zone": "a", "rack": "r1", "role": "edge"}
