"""Issue 15, items 2 and 6, through the `calico` executable: an ADD creates the profile its endpoint
names when it is missing, exactly as Calico's plugin writes it, and never rewrites it; policy.type
k8s gives a pod kube-controllers' `kns.<namespace>` profile; names Calico's validator refuses fail
the ADD with error 7 before anything is allocated, and DEL still cleans up an endpoint written with
such a name before the rule."""

from __future__ import annotations

import json

import pytest

from tests.calico_support import held_addresses, ok, pod_env, pod_links, run_calico
from tests.pools import pools_fixture

pytestmark = pytest.mark.execs_plugins  # run again through the agent (tests/conftest.py)

pools = pools_fixture(("v4", "198.18.20.0/24", 26))
PROFILES = "/calico/resources/v3/projectcalico.org/profiles/"
K8S_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=web-apps;K8S_POD_NAME=front-end-1;K8S_POD_UID=abc"
# A Go Rule (api/pkg/apis/projectcalico/v3/policy_common.go, v3.30.0) always encodes its Source and
# Destination: they are structs, which `omitempty` never skips.
ALLOW = {"action": "Allow", "source": {}, "destination": {}}


def stored(store, name):
    kv = store.client.get(PROFILES + name)
    assert kv is not None, f"profile {name} was not created"
    return json.loads(kv.value), kv.mod_revision


def assert_calico_shape(doc, name):
    """As libcalico-go's clientv3 Create stores a Profile (resources.go, v3.30.0): TypeMeta set (kind,
    apiVersion), then metadata with only the name, a uid and a creationTimestamp."""
    assert list(doc) == ["kind", "apiVersion", "metadata", "spec"]
    assert doc["kind"] == "Profile" and doc["apiVersion"] == "projectcalico.org/v3"
    assert set(doc["metadata"]) == {"name", "uid", "creationTimestamp"} and doc["metadata"]["name"] == name
    assert doc["metadata"]["creationTimestamp"].endswith("Z")


def test_add_creates_the_network_profile_once(store, pools, node, pod, calico_conf):
    """cni-plugin/pkg/plugin/plugin.go cmdAdd (v3.30.0), with no policy type: Get the profile named
    after the network; when absent, Create it with egress allow all, ingress allow from
    has(<network>) (a plain-CNI workload) and labelsToApply {<network>: ""}. Never updated."""
    conf = calico_conf()
    ok(run_calico(node, "ADD", conf, pod_env(pod())))
    doc, revision = stored(store, "net1")
    assert_calico_shape(doc, "net1")
    assert doc["spec"] == {
        "ingress": [{"action": "Allow", "source": {"selector": "has(net1)"}, "destination": {}}],
        "egress": [ALLOW],
        "labelsToApply": {"net1": ""},
    }
    # A second ADD (here a Kubernetes pod, whose own profile would allow all) leaves it as it is.
    ok(run_calico(node, "ADD", conf, pod_env(pod(), CNI_ARGS=K8S_ARGS)))
    again, revision_after = stored(store, "net1")
    assert (again, revision_after) == (doc, revision)
    endpoint = store.workload_endpoint("web-apps", "node1-k8s-front--end--1-eth0")
    assert endpoint.spec["profiles"] == ["net1"]


def test_kubernetes_pod_profile(store, pools, node, pod, calico_conf):
    """cmdAdd for a Kubernetes pod (orchestrator k8s): the network's profile allows all ingress."""
    ok(run_calico(node, "ADD", calico_conf(name="kube"), pod_env(pod(), CNI_ARGS=K8S_ARGS)))
    doc, _ = stored(store, "kube")
    assert_calico_shape(doc, "kube")
    assert doc["spec"] == {"ingress": [ALLOW], "egress": [ALLOW], "labelsToApply": {"kube": ""}}


def test_policy_type_k8s_gives_the_namespace_profile(store, pools, node, pod, calico_conf):
    """cni-plugin/pkg/k8s/k8s.go (v3.30.0): under policy.type k8s a pod names kns.<namespace>;
    kube-controllers (pkg/converter/namespace_converter.go over conversion.NamespaceToProfile,
    v3.30.0) writes it with allow all both ways and labelsToApply pcns.projectcalico.org/name. No
    kube-controllers runs here, so the plugin creates it; a plain-CNI workload (no Kubernetes
    arguments; plugin.go's non-k8s path ignores policy.type) still names the network and gets the
    network's profile."""
    conf = calico_conf(policy={"type": "k8s"})
    ok(run_calico(node, "ADD", conf, pod_env(pod(), CNI_ARGS=K8S_ARGS)))
    endpoint = store.workload_endpoint("web-apps", "node1-k8s-front--end--1-eth0")
    assert endpoint.spec["profiles"] == ["kns.web-apps"]
    doc, revision = stored(store, "kns.web-apps")
    assert_calico_shape(doc, "kns.web-apps")
    assert doc["spec"] == {"ingress": [ALLOW], "egress": [ALLOW], "labelsToApply": {"pcns.projectcalico.org/name": "web-apps"}}
    assert store.client.get(PROFILES + "net1") is None
    ok(run_calico(node, "ADD", conf, pod_env(pod(), CNI_ARGS=K8S_ARGS.replace("front-end-1", "front-end-2"))))
    assert stored(store, "kns.web-apps")[1] == revision
    ok(run_calico(node, "ADD", conf, pod_env(pod(), container_id="ctr-plain")))
    plain = store.workload_endpoint("default", "node1-cni-ctr--plain-eth0")
    assert plain.spec["profiles"] == ["net1"]
    doc, _ = stored(store, "net1")
    assert_calico_shape(doc, "net1")
    assert doc["spec"]["labelsToApply"] == {"net1": ""} and doc["spec"]["ingress"][0]["source"] == {"selector": "has(net1)"}
    assert stored(store, "kns.web-apps")[1] == revision


def test_an_existing_profile_is_never_changed(store, pools, node, pod, calico_conf):
    """An operator's profile of the same name stays exactly as they wrote it."""
    mine = {"kind": "Profile", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "net1"}, "spec": {"egress": [{"action": "Deny"}]}}
    store.client.commit([], [(PROFILES + "net1", json.dumps(mine).encode())])
    before = store.client.get(PROFILES + "net1")
    ok(run_calico(node, "ADD", calico_conf(), pod_env(pod())))
    after = store.client.get(PROFILES + "net1")
    assert (after.value, after.mod_revision) == (before.value, before.mod_revision)


@pytest.mark.parametrize(
    ("container_id", "conf_extra", "words"),
    [
        ("ctr_with_underscore", {}, ["CNI_CONTAINERID", "[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?"]),
        ("ctr.with.dots", {}, ["CNI_CONTAINERID", "no '_' or '.'"]),
        ("CTRUPPER", {}, ["endpoint name", "lower-case DNS-1123"]),
        ("ctr-ok", {"node": "Node1"}, ["node name 'Node1'", "lower-case DNS-1123"]),
    ],
)
def test_names_calico_refuses(store, pools, node, pod, calico_conf, container_id, conf_extra, words):
    """Calico's validator (libcalico-go/lib/validator/v3/validator.go, v3.30.0): containerID matches
    [a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?, names (the endpoint's, spec.node) are lower-case
    DNS-1123 subdomains. The ADD fails with error 7 naming the rule; nothing is allocated, wired or
    written."""
    p = pod()
    run = run_calico(node, "ADD", calico_conf(**conf_extra), pod_env(p, container_id=container_id))
    assert run.rc != 0 and run.out["code"] == 7, run.out
    for word in words:
        assert word in run.out["msg"], (word, run.out["msg"])
    assert held_addresses(store) == {} and store.workload_endpoints() == []
    assert store.client.get(PROFILES + "net1") is None
    assert pod_links(p) == []
    # Refused before IPAM (not allocated, then rolled back): no block or affinity was ever claimed.
    assert store.client.get_prefix("/calico/ipam/v2/", keys_only=True) == []


def test_an_unknown_policy_type_fails_add_but_not_del(store, pools, node, pod, calico_conf):
    """A policy type Calico's config accepts but this plugin does not act on is refused by ADD
    (error 7); a DEL of that network still cleans up."""
    p = pod()
    ok(run_calico(node, "ADD", calico_conf(), pod_env(p)))
    other = calico_conf(policy={"type": "calico"})
    refused = run_calico(node, "ADD", other, pod_env(pod()))
    assert refused.rc != 0 and refused.out["code"] == 7 and "policy.type" in refused.out["msg"], refused.out
    ok(run_calico(node, "DEL", other, pod_env(p)))
    assert store.workload_endpoints() == [] and held_addresses(store) == {}
    status = run_calico(node, "STATUS", {**other, "cniVersion": "1.1.0"}, {})
    assert status.rc != 0 and status.out["code"] == 7, status.out  # not "ready" where every ADD fails


@pytest.mark.parametrize("policy, msg", [("k8s", "policy must be an object"), ({"type": 1}, 'policy.type must be a string: "k8s" or absent')])
def test_a_policy_that_does_not_parse_fails_add_before_anything_is_written(store, pools, node, pod, calico_conf, policy, msg):
    """`policy` not an object, or its type not a string, is a configuration error (7) of every verb's
    settings: ADD writes nothing."""
    refused = run_calico(node, "ADD", calico_conf(policy=policy), pod_env(pod()))
    assert refused.rc != 0 and refused.out["code"] == 7 and refused.out["msg"] == msg, refused.out
    assert store.workload_endpoints() == [] and store.client.get_prefix(PROFILES) == []
    assert store.client.get_prefix("/calico/ipam/v2/", keys_only=True) == []


def test_del_still_removes_an_endpoint_written_with_a_refused_name(store, pools, node, pod, calico_conf):
    """An endpoint the plugin wrote before the rule, for a container ID Calico refuses (written here
    directly, as ADD no longer writes one), is still deleted by DEL: the rule applies to ADD only."""
    from calico_cni.model.records import NETWORK_ANNOTATION, WorkloadEndpoint
    from calico_cni.workload import Identity

    ident = Identity("net1", "old_ctr.1", "eth0", "node1")
    doc = ident.endpoint_doc(ident.host_veth, "ee:ee:ee:ee:ee:01", ["198.18.20.200/32"], "uid-1", "2024-01-01T00:00:00Z")
    doc["metadata"]["annotations"] = {NETWORK_ANNOTATION: "net1"}
    assert store.commit(puts=[WorkloadEndpoint("default", ident.endpoint_name, doc)])
    ok(run_calico(node, "DEL", calico_conf(), pod_env(pod(), container_id="old_ctr.1")))
    assert store.workload_endpoints() == []
