"""model.resource: Calico's keys for every kind, tiered policy names as v3.30 stores them, and the
stored form read back to what the user wrote."""

from __future__ import annotations

import json

import pytest

from calico_cni.model import kinds
from calico_cni.model.resource import METADATA_ANNOTATION, TIER_LABEL, Resource, identifier, key, prefix, stored_name, tier_of

NP = kinds.by_kind("NetworkPolicy")
GNP = kinds.by_kind("GlobalNetworkPolicy")
POOL = kinds.by_kind("IPPool")
R = "/calico/resources/v3/projectcalico.org/"


@pytest.mark.parametrize(
    "name, stored, tier",
    [
        ("allow-web", "default.allow-web", "default"),
        ("default.allow-web", "default.allow-web", "default"),
        ("security.allow-web", "security.allow-web", "security"),
        ("knp.default.from-k8s", "knp.default.from-k8s", "default"),
        ("ossg.default.group1", "ossg.default.group1", "default"),
    ],
)
def test_tiered_policy_names(name, stored, tier):
    assert stored_name(NP, name) == stored and stored_name(GNP, name) == stored
    assert tier_of(name) == tier


@pytest.mark.parametrize(
    "name, tier",
    [
        ("kanp.adminnetworkpolicy.x", "adminnetworkpolicy"),
        ("kbanp.baselineadminnetworkpolicy.x", "baselineadminnetworkpolicy"),
        ("knp.default.x", "default"),
        ("ossg.default.x", "default"),
        ("security.x", "security"),
        ("x", "default"),
    ],
)
def test_the_tier_of_a_policy_name(name, tier):
    # Kubernetes (baseline) admin network policies live in their own tiers, not in the tier their
    # first dot-separated word would give ("kanp", "kbanp").
    assert tier_of(name) == tier


def test_keys_of_global_namespaced_and_tiered_kinds():
    assert key(POOL, "p1") == R + "ippools/p1"
    assert key(NP, "allow", "prod") == R + "networkpolicies/prod/default.allow"
    assert key(GNP, "security.deny") == R + "globalnetworkpolicies/security.deny"
    assert key(kinds.by_kind("WorkloadEndpoint"), "n1-cni-c1-eth0", None) == R + "workloadendpoints/default/n1-cni-c1-eth0"
    assert prefix(NP) == R + "networkpolicies/" and prefix(NP, "prod") == R + "networkpolicies/prod/"
    assert prefix(POOL, "ignored") == R + "ippools/"
    assert identifier(NP, "allow", "prod") == "NetworkPolicy(prod/allow)" and identifier(POOL, "p1") == "IPPool(p1)"


def test_policy_stored_with_tier_prefix_and_annotation_then_read_back_as_written():
    doc = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow", "namespace": "prod", "resourceVersion": "7", "annotations": {"team": "web"}},
        "spec": {"tier": "default", "selector": "all()", "types": ["Ingress"]},
    }
    r = Resource(NP, doc, 7)
    raw = json.loads(r.to_json())
    assert raw["metadata"]["name"] == "default.allow"
    assert json.loads(raw["metadata"]["annotations"][METADATA_ANNOTATION]) == {"name": "allow"}
    assert raw["metadata"]["annotations"]["team"] == "web"
    assert "resourceVersion" not in raw["metadata"]
    back = Resource.from_stored(NP, r.to_json(), 9)
    assert back.name == "allow" and back.revision == 9 and back.key == r.key
    assert back.doc["metadata"]["annotations"] == {"team": "web"}
    assert back.doc["metadata"]["labels"][TIER_LABEL] == "default"
    assert back.document()["metadata"]["resourceVersion"] == "9"
    assert list(back.document()) == ["apiVersion", "kind", "metadata", "spec"]


def test_policy_written_by_calico_without_tier_reads_its_tier_from_the_name():
    raw = {"kind": "GlobalNetworkPolicy", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "security.deny"}, "spec": {"selector": "all()"}}
    back = Resource.from_stored(GNP, json.dumps(raw).encode(), 3)
    assert back.doc["spec"]["tier"] == "security" and back.doc["metadata"]["labels"][TIER_LABEL] == "security"


def test_unknown_fields_of_stored_records_are_kept():
    raw = {"kind": "BGPFilter", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "f", "generation": 3}, "spec": {"futureField": {"x": 1}}, "status": {"a": 1}}
    back = Resource.from_stored(kinds.by_kind("BGPFilter"), json.dumps(raw).encode(), 2)
    assert json.loads(back.to_json()) == raw


def test_a_pool_read_gets_calicos_read_defaults_and_keeps_unknown_fields():
    raw = {"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "p"}, "spec": {"cidr": "fd00:198:18::/64", "futureField": {"x": 1}}, "status": {"a": 1}}
    back = Resource.from_stored(POOL, json.dumps(raw).encode(), 2)
    assert back.doc["spec"] == {
        "cidr": "fd00:198:18::/64", "futureField": {"x": 1}, "blockSize": 122, "allowedUses": ["Workload", "Tunnel"],
        "nodeSelector": "all()", "ipipMode": "Never", "vxlanMode": "Never", "assignmentMode": "Automatic",
    }
    assert back.doc["status"] == {"a": 1}


def test_a_stored_value_that_is_not_an_object_is_refused():
    with pytest.raises(ValueError):
        Resource.from_stored(POOL, b"[1, 2]", 1)


@pytest.mark.parametrize("recorded", ["not json", '{"nom": "allow"}', '["allow"]'])
def test_a_policy_whose_name_annotation_is_unreadable_keeps_its_stored_name(recorded):
    raw = {"kind": "NetworkPolicy", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "default.allow", "namespace": "prod", "annotations": {METADATA_ANNOTATION: recorded}}, "spec": {}}
    back = Resource.from_stored(NP, json.dumps(raw).encode(), 4)
    assert back.name == "default.allow"
    assert "annotations" not in back.doc["metadata"]
    assert back.doc["spec"]["tier"] == "default"
