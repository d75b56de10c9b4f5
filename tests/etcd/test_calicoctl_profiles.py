"""`calicoctl datastore repair profiles` (issue 15 item 2): endpoints the calico plugin wrote before
it created their profiles get them, with the content the plugin now creates them with; existing
profiles are never changed; --dry-run writes nothing; a profile of unknown content is only listed."""

from __future__ import annotations

import json

from calico_cni.model.records import NETWORK_ANNOTATION, WorkloadEndpoint
from calico_cni.workload import Identity
from tests.calicoctl_support import ctl  # noqa: F401 - fixture

PROFILES = "/calico/resources/v3/projectcalico.org/profiles/"
ALLOW = {"action": "Allow", "source": {}, "destination": {}}


def old_endpoint(store, ident: Identity, profiles: list[str], network: str | None = "net1") -> None:
    """An endpoint as the plugin wrote it before issue 15: plain CNI naming [<network>], a pod
    naming [kns.<namespace>]; annotated with the network that wrote it (unless `network` is None)."""
    doc = ident.endpoint_doc(ident.host_veth, "ee:ee:ee:ee:ee:01", ["198.18.0.1/32"], "uid", "2024-01-01T00:00:00Z")
    doc["spec"]["profiles"] = profiles
    if network:
        doc["metadata"]["annotations"] = {NETWORK_ANNOTATION: network}
    assert store.commit(puts=[WorkloadEndpoint(ident.namespace, ident.endpoint_name, doc)])


def profile(store, name):
    kv = store.client.get(PROFILES + name)
    return (json.loads(kv.value), kv.mod_revision) if kv else (None, 0)


def test_repair_creates_the_missing_profiles(store, ctl):  # noqa: F811
    old_endpoint(store, Identity("net1", "c1", "eth0", "node1"), ["net1"])
    old_endpoint(store, Identity("net1", "c2", "eth0", "node1", "web", "pod-a"), ["kns.web"])
    old_endpoint(store, Identity("net2", "c3", "eth0", "node1", "web", "pod-b"), ["net2"], network="net2")
    old_endpoint(store, Identity("net1", "c4", "eth0", "node1"), ["ksa.web.default"])
    old_endpoint(store, Identity("net1", "c5", "eth0", "node1"), ["projectcalico-default-allow"])
    dry = ctl("datastore", "repair", "profiles", "--dry-run")
    assert dry.rc == 0, dry.stderr
    assert [line.split(" (")[0] for line in dry.lines] == [
        "Would create profile kns.web",
        "Would create profile net1",
        "Would create profile net2",
        "Not creating profile ksa.web.default",
    ]
    assert store.client.get_prefix(PROFILES) == []

    run = ctl("datastore", "repair", "profiles")
    assert run.rc == 0, run.stderr
    assert "Created profile net1 (named by default/node1-cni-c1-eth0)." in run.lines
    # Shapes: cni-plugin/pkg/plugin/plugin.go cmdAdd (v3.30.0) for the network's profile, plain CNI
    # (ingress from has(<network>)) and a Kubernetes pod (ingress from anywhere); kube-controllers'
    # NamespaceToProfile (libcalico-go/lib/backend/k8s/conversion/conversion.go, v3.30.0) for kns.
    net1, _ = profile(store, "net1")
    assert net1["spec"] == {
        "ingress": [{"action": "Allow", "source": {"selector": "has(net1)"}, "destination": {}}],
        "egress": [ALLOW],
        "labelsToApply": {"net1": ""},
    }
    assert profile(store, "net2")[0]["spec"] == {"ingress": [ALLOW], "egress": [ALLOW], "labelsToApply": {"net2": ""}}
    kns, revision = profile(store, "kns.web")
    assert kns["spec"] == {"ingress": [ALLOW], "egress": [ALLOW], "labelsToApply": {"pcns.projectcalico.org/name": "web"}}
    assert set(kns["metadata"]) == {"name", "uid", "creationTimestamp"} and kns["kind"] == "Profile"
    assert profile(store, "ksa.web.default") == (None, 0)
    assert profile(store, "projectcalico-default-allow") == (None, 0), "Calico's built-in profile is never stored"

    again = ctl("datastore", "repair", "profiles")
    assert again.rc == 0 and again.lines[0].startswith("Not creating profile ksa.web.default")
    assert profile(store, "kns.web")[1] == revision, "an existing profile is never rewritten"


def test_repair_with_nothing_missing(store, ctl):  # noqa: F811
    old_endpoint(store, Identity("net1", "c1", "eth0", "node1"), ["net1"])
    mine = {"kind": "Profile", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "net1"}, "spec": {}}
    store.client.commit([], [(PROFILES + "net1", json.dumps(mine).encode())])
    run = ctl("datastore", "repair", "profiles")
    assert run.rc == 0 and run.lines == ["Every profile the workload endpoints name exists."]
    assert profile(store, "net1")[0] == mine


def test_a_network_named_by_plain_cni_and_pods_gets_the_plain_cni_profile(store, ctl):  # noqa: F811
    old_endpoint(store, Identity("net1", "c1", "eth0", "node1", "web", "pod-a"), ["net1"])
    old_endpoint(store, Identity("net1", "c2", "eth0", "node1"), ["net1"])
    assert ctl("datastore", "repair", "profiles").rc == 0
    assert profile(store, "net1")[0]["spec"]["ingress"] == [{"action": "Allow", "source": {"selector": "has(net1)"}, "destination": {}}]


def test_repair_does_not_create_a_profile_calicos_validator_refuses(store, ctl):  # noqa: F811
    """A network named `My_Net` (written before ADD refused such names) would get a profile whose
    name Calico refuses, and a network name over 63 characters a label key it refuses: listed with
    the reason, not created."""
    long_net = "n" * 64
    old_endpoint(store, Identity("My_Net", "c1", "eth0", "node1"), ["My_Net"], network="My_Net")
    old_endpoint(store, Identity(long_net, "c2", "eth0", "node1"), [long_net], network=long_net)
    r = ctl("datastore", "repair", "profiles")
    assert r.rc == 0, r.stderr
    assert "Not creating profile My_Net" in r.stdout and "not a lower-case DNS-1123 name" in r.stdout
    assert f"Not creating profile {long_net}" in r.stdout and "longer than 63 characters" in r.stdout
    assert profile(store, "My_Net") == (None, 0) and profile(store, long_net) == (None, 0)


def test_a_corrupt_endpoint_is_skipped(store, ctl):  # noqa: F811
    """An endpoint record that is not JSON names no profile it can be read for: the others are
    still repaired, and nothing is said of it here (`calicoctl ipam check` reports it)."""
    old_endpoint(store, Identity("net1", "c1", "eth0", "node1"), ["net1"])
    store.client.commit([], [("/calico/resources/v3/projectcalico.org/workloadendpoints/default/node1-cni-c9-eth0", b"{not json")])
    r = ctl("datastore", "repair", "profiles")
    assert r.rc == 0, r.stderr
    assert r.lines == ["Created profile net1 (named by default/node1-cni-c1-eth0)."]
    assert r.stderr == ""
    assert profile(store, "net1")[0] is not None
