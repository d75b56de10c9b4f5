"""Issue 18's additions to the policy kinds: the rule count this node daemon accepts per direction
(MAX_RULES_PER_DIRECTION, not Calico's: one nft transaction per change) and the fields stored but not
enforced here (`unenforced_fields`, for calicoctl's warnings). Pure: no etcd, no root."""

from __future__ import annotations

import time

import pytest

from calico_cni.model.kinds.policy import HOST_ENDPOINTS_UNENFORCED, unenforced_fields
from calico_cni.model.kinds.policy_rules import MAX_RULES_PER_DIRECTION
from tests.kinds_support import decode, refused

ALLOW = {"action": "Allow"}


def policy(kind: str, spec: dict) -> dict:
    meta = {"name": "p1", **({"namespace": "prod"} if kind == "NetworkPolicy" else {})}
    return {"kind": kind, "metadata": meta, "spec": spec}


@pytest.mark.parametrize("kind", ["NetworkPolicy", "GlobalNetworkPolicy", "Profile"])
@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_at_most_max_rules_per_direction(kind, direction):
    assert MAX_RULES_PER_DIRECTION == 5000
    decode(policy(kind, {direction: [ALLOW] * MAX_RULES_PER_DIRECTION}))
    error = refused(policy(kind, {direction: [ALLOW] * (MAX_RULES_PER_DIRECTION + 1)}))
    assert error.path == f"spec.{direction}"
    assert "5001 rules: at most 5000 per direction" in error.reason and "Calico has no such limit" in error.reason


def test_a_huge_rule_list_is_refused_before_its_rules_are_decoded():
    """A million rules, each of them also invalid: refused for the count, at once."""
    started = time.monotonic()
    error = refused(policy("GlobalNetworkPolicy", {"ingress": [{"action": "nope"}] * 1_000_000}))
    assert "1000000 rules" in error.reason
    assert time.monotonic() - started < 0.5


def test_the_limit_counts_each_direction_alone():
    decode(policy("GlobalNetworkPolicy", {"ingress": [ALLOW] * MAX_RULES_PER_DIRECTION, "egress": [ALLOW] * MAX_RULES_PER_DIRECTION}))


def test_a_plain_policy_uses_nothing_unenforced():
    doc = decode(policy("GlobalNetworkPolicy", {"selector": "all()", "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "a == 'b'"}}]}))
    assert unenforced_fields("GlobalNetworkPolicy", doc) == ()


def test_every_unenforced_field_is_named_by_its_path():
    spec = {
        "selector": "all()",
        "doNotTrack": True,
        "applyOnForward": True,
        "serviceAccountSelector": "role == 'x'",
        "ingress": [
            {"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}},
            {"action": "Allow", "source": {"serviceAccounts": {"names": ["api"]}}},
            {"action": "Allow", "source": {"services": {"name": "web", "namespace": "prod"}}},
        ],
        "egress": [{"action": "Allow", "destination": {"services": {"name": "db", "namespace": "prod"}}}],
    }
    doc = decode(policy("GlobalNetworkPolicy", spec))
    assert unenforced_fields("GlobalNetworkPolicy", doc) == (
        "spec.doNotTrack",
        "spec.applyOnForward",
        "spec.serviceAccountSelector",
        "spec.ingress[0].http",
        "spec.ingress[1].source.serviceAccounts",
        "spec.ingress[2].source.services",
        "spec.egress[0].destination.services",
    )


def test_pre_dnat_and_false_flags():
    doc = decode(policy("GlobalNetworkPolicy", {"preDNAT": True, "applyOnForward": True, "ingress": [ALLOW]}))
    assert unenforced_fields("GlobalNetworkPolicy", doc) == ("spec.preDNAT", "spec.applyOnForward")
    doc = decode(policy("GlobalNetworkPolicy", {"applyOnForward": False, "doNotTrack": False}))
    assert unenforced_fields("GlobalNetworkPolicy", doc) == ()


def test_profile_rules_and_host_endpoints():
    doc = decode(policy("Profile", {"egress": [{"action": "Allow", "destination": {"serviceAccounts": {"selector": "a == 'b'"}}}]}))
    assert unenforced_fields("Profile", doc) == ("spec.egress[0].destination.serviceAccounts",)
    hep = decode({"kind": "HostEndpoint", "metadata": {"name": "h1"}, "spec": {"node": "n1", "interfaceName": "eth0"}})
    assert unenforced_fields("HostEndpoint", hep) == (HOST_ENDPOINTS_UNENFORCED,)
    assert unenforced_fields("IPPool", {"spec": {"cidr": "198.18.0.0/24"}}) == ()


@pytest.mark.parametrize(
    "field, rule",
    [
        ("spec.selector", None),
        ("spec.ingress[0].source.selector", {"source": "selector"}),
        ("spec.ingress[0].source.notSelector", {"source": "notSelector"}),
        ("spec.ingress[0].destination.namespaceSelector", {"destination": "namespaceSelector"}),
        ("spec.ingress[0].source.serviceAccounts.selector", {"source": "serviceAccounts"}),
    ],
)
def test_a_selector_nested_too_deeply_is_refused_with_a_message(field, rule):
    deep = "(" * 5000 + "a == 'b'" + ")" * 5000
    if rule is None:
        spec = {"selector": deep}
    else:
        ((side, key),) = rule.items()
        value = {"selector": deep} if key == "serviceAccounts" else deep
        spec = {"ingress": [{"action": "Allow", side: {key: value}}]}
    error = refused(policy("GlobalNetworkPolicy", spec))
    assert error.path == field and "nested too deeply" in error.reason
    # A reasonably nested one is fine.
    decode(policy("GlobalNetworkPolicy", {"selector": "(" * 20 + "a == 'b'" + ")" * 20}))
