"""node.policy_view: Calico's policy resources read off a cache snapshot as Felix sees them, and what
applies to one workload endpoint per direction, in Felix's order (issue 18's foundations)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from calico_cni.model import kinds
from calico_cni.model.keys import RESOURCES
from calico_cni.model.resource import Resource
from calico_cni.node.policy_view import EGRESS, INGRESS, EndpointPort, PolicyView, PortRange, applicable, endpoint_labels

API = "projectcalico.org/v3"


@dataclass
class KV:
    value: bytes
    mod_revision: int = 7


def stored(kind: str, name: str, spec: dict, namespace: str | None = None, labels: dict | None = None) -> tuple[str, KV]:
    """(key, record) as calicoctl stores the document (decoded with its rules, policy names
    tier-prefixed with the user's name in the annotation)."""
    meta: dict = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    k, doc = kinds.decode({"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec})
    resource = Resource(k, doc)
    return resource.key, KV(resource.to_json())


def raw(key: str, doc: dict) -> tuple[str, KV]:
    """A record written straight to etcd, as given."""
    return RESOURCES + key, KV(json.dumps(doc).encode())


def wep(name: str = "web", namespace: str = "prod", labels: dict | None = None, profiles: list | None = None, **spec) -> tuple[str, KV]:
    body = {
        "orchestrator": "k8s",
        "node": "node1",
        "pod": name,
        "endpoint": "eth0",
        "interfaceName": f"cali{name}",
        "ipNetworks": ["10.0.0.1/32"],
        "profiles": profiles if profiles is not None else [],
        **spec,
    }
    return stored("WorkloadEndpoint", "", body, namespace, labels)


TIERS = [
    stored("Tier", "default", {}),
    stored("Tier", "security", {"order": 100}),
    stored("Tier", "platform", {"order": 100, "defaultAction": "Pass"}),
]


def view(*records) -> PolicyView:
    return PolicyView.read(dict(records))


def only_endpoint(v: PolicyView):
    (endpoint,) = v.endpoints.values()
    return endpoint


def names(tiers) -> list[tuple[str, list[str]]]:
    return [(t.tier, [p.name for p in t.policies]) for t in tiers]


# --- resources ----------------------------------------------------------------------------------


def test_policies_are_read_with_the_users_name_the_stored_name_and_the_tier():
    v = view(
        *TIERS,
        stored("NetworkPolicy", "allow-web", {"selector": "app == 'web'", "order": 10, "ingress": [{"action": "Allow"}]}, "prod"),
        stored("GlobalNetworkPolicy", "security.block", {"tier": "security", "egress": [{"action": "Deny"}]}),
    )
    assert v.problems == ()
    by_name = {p.name: p for p in v.policies}
    np, gnp = by_name["allow-web"], by_name["security.block"]
    assert (np.kind, np.stored_name, np.namespace, np.tier, np.order) == ("NetworkPolicy", "default.allow-web", "prod", "default", 10.0)
    assert np.felix_key == "prod/default.allow-web"
    assert (gnp.stored_name, gnp.tier, gnp.order, gnp.felix_key) == ("security.block", "security", None, "security.block")
    assert gnp.types == {EGRESS} and np.types == {INGRESS}


def test_tiers_profiles_sets_and_endpoints_are_typed():
    v = view(
        *TIERS,
        stored("Profile", "kns.prod", {"ingress": [{"action": "Allow"}], "labelsToApply": {"pcns.team": "a"}}),
        stored("NetworkSet", "office", {"nets": ["198.51.100.0/24"]}, "prod", labels={"role": "office"}),
        stored("GlobalNetworkSet", "internet", {"nets": ["0.0.0.0/0"]}, labels={"role": "any"}),
        wep(
            labels={"app": "web"},
            profiles=["kns.prod"],
            ports=[{"name": "http", "protocol": "TCP", "port": 8080}, {"protocol": "UDP", "port": 53, "hostPort": 53}],
        ),
    )
    assert v.problems == ()
    assert v.tiers["default"].order == 1_000_000.0 and v.tiers["default"].default_action == "Deny"
    assert v.tiers["platform"].default_action == "Pass"
    assert v.profiles["kns.prod"].labels_to_apply == {"pcns.team": "a"}
    sets = {s.name: s for s in v.network_sets}
    assert sets["office"].labels == {"role": "office", "projectcalico.org/namespace": "prod"}
    assert sets["internet"].namespace is None and sets["internet"].nets == (ipaddress.ip_network("0.0.0.0/0"),)
    endpoint = only_endpoint(v)
    assert (endpoint.namespace, endpoint.name, endpoint.node, endpoint.interface_name) == ("prod", "node1-k8s-web-eth0", "node1", "caliweb")
    assert endpoint.ip_networks == (ipaddress.ip_network("10.0.0.1/32"),)
    # A port without a name is only a host port: Felix never sees it, nor does a named-port match.
    assert endpoint.ports == (EndpointPort("http", 6, 8080),)
    assert endpoint.labels == {"app": "web", "projectcalico.org/namespace": "prod", "projectcalico.org/orchestrator": "k8s"}


def test_a_tier_stored_without_order_sorts_last_as_felix_reads_it():
    v = view(raw("tiers/late", {"kind": "Tier", "metadata": {"name": "late"}, "spec": {}}))
    assert v.problems == () and v.tiers["late"].order is None and v.tiers["late"].default_action == "Deny"


def test_rules_are_typed_with_protocol_numbers_icmp_ranges_and_named_ports():
    rule = {
        "action": "Allow",
        "ipVersion": 4,
        "protocol": "TCP",
        "notProtocol": 17,
        "source": {"nets": ["10.1.0.0/16"], "notNets": ["10.1.2.0/24"], "notPorts": [22]},
        "destination": {"ports": [80, "8000:8080", "http"], "selector": "app == 'db'"},
        "metadata": {"annotations": {"why": "web"}},
    }
    icmp_rule = {"action": "Deny", "protocol": "ICMPv6", "icmp": {"type": 128, "code": 0}, "notICMP": {"type": 1}}
    v = view(stored("GlobalNetworkPolicy", "p", {"ingress": [rule, icmp_rule, {"action": "Log"}, {"action": "Pass"}]}))
    r, i, log, pass_ = v.policies[0].ingress
    assert (r.action, r.ip_version, r.protocol, r.not_protocol) == ("Allow", 4, 6, 17)
    assert r.source.nets == (ipaddress.ip_network("10.1.0.0/16"),) and r.source.not_nets == (ipaddress.ip_network("10.1.2.0/24"),)
    assert r.source.not_ports.ranges == (PortRange(22, 22),) and not r.source.ports
    assert r.destination.ports.ranges == (PortRange(80, 80), PortRange(8000, 8080))
    assert r.destination.ports.named == ("http",)
    assert r.annotations == {"why": "web"}
    assert (i.protocol, i.icmp.type, i.icmp.code, i.not_icmp.type, i.not_icmp.code) == (58, 128, 0, 1, None)
    assert (log.action, pass_.action) == ("Log", "Pass")
    assert r.unenforced == () and not r.source.has_selector and r.destination.has_selector


def test_stored_but_unenforced_fields_are_flagged():
    rule = {"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}, "source": {"serviceAccounts": {"names": ["sa"]}}}
    service = {"action": "Allow", "source": {"services": {"name": "api"}}}
    v = view(
        stored("NetworkPolicy", "p", {"ingress": [rule, service], "serviceAccountSelector": "role == 'x'"}, "prod"),
        stored("GlobalNetworkPolicy", "raw", {"doNotTrack": True, "applyOnForward": True, "ingress": [{"action": "Deny"}]}),
    )
    assert v.problems == ()
    by_name = {p.name: p for p in v.policies}
    assert by_name["p"].unenforced == ("serviceAccountSelector",)
    assert by_name["p"].ingress[0].unenforced == ("http", "source.serviceAccounts")
    assert by_name["p"].ingress[1].unenforced == ("source.services",)
    assert by_name["p"].ingress[0].source.unenforced == ("serviceAccounts",)
    assert by_name["raw"].unenforced == ("doNotTrack", "applyOnForward") and by_name["raw"].host_only


# --- hostile and later-release records ----------------------------------------------------------


GOOD = stored("GlobalNetworkPolicy", "good", {"ingress": [{"action": "Allow"}]})


def test_hostile_records_are_skipped_with_a_problem_naming_them_and_the_others_kept():
    base = "globalnetworkpolicies/"
    hostile = [
        raw(base + "default.badsel", {"kind": "GlobalNetworkPolicy", "metadata": {"name": "default.badsel"}, "spec": {"selector": "app == "}}),
        raw(
            base + "default.badport",
            {
                "kind": "GlobalNetworkPolicy",
                "metadata": {"name": "default.badport"},
                "spec": {"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [70000]}}]},
            },
        ),
        raw(base + "default.noname", {}),
        (RESOURCES + base + "default.garbage", KV(b"{not json")),
        raw(
            base + "default.deep",
            {"kind": "GlobalNetworkPolicy", "metadata": {"name": "default.deep"}, "spec": {"selector": "(" * 5000 + "all()" + ")" * 5000}},
        ),
        raw(base + "default.tier", {"kind": "GlobalNetworkPolicy", "metadata": {"name": "default.tier"}, "spec": {"tier": "security"}}),
        raw("workloadendpoints/prod/junk", {"kind": "WorkloadEndpoint", "metadata": {"name": "junk"}, "spec": {"interfaceName": "x", "ipNetworks": ["nope"]}}),
        raw("networksets/prod/bad", {"kind": "NetworkSet", "metadata": {"name": "bad"}, "spec": {"nets": ["10.0.0.0/33"]}}),
        raw("tiers/default", {"kind": "Tier", "metadata": {"name": "default"}, "spec": {"order": 5}}),
    ]
    v = view(GOOD, *hostile)
    assert [p.name for p in v.policies] == ["good"]
    assert v.network_sets == () and v.endpoints == {} and v.tiers == {}
    assert len(v.problems) == len(hostile)
    for key, _ in hostile:
        assert any(p.startswith(key + ":") for p in v.problems), key
    assert any("ports[0]" in p for p in v.problems)


def test_a_huge_rule_list_is_kept_as_calicoctl_v3_30_keeps_it():
    # Calico v3.30's validator sets no limit on a policy's rules (the 1024 limit is later), so a
    # long list is a policy like any other here.
    v = view(stored("GlobalNetworkPolicy", "huge", {"ingress": [{"action": "Allow"}] * 2000}))
    assert v.problems == () and len(v.policies[0].ingress) == 2000


def test_fields_of_later_releases_are_ignored_and_the_record_kept():
    doc = {
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "default.future", "annotations": {"projectcalico.org/metadata": '{"name":"future"}'}},
        "spec": {"newField": 1, "ingress": [{"action": "Allow", "newRuleField": True, "source": {"newSide": "x"}}]},
        "newTopLevel": {},
    }
    v = view(raw("globalnetworkpolicies/default.future", doc))
    assert v.problems == ()
    assert v.policies[0].name == "future" and v.policies[0].ingress[0].action == "Allow"


def test_a_policy_stored_without_types_governs_both_directions_as_felix_reads_it():
    doc = {"kind": "GlobalNetworkPolicy", "metadata": {"name": "default.untyped"}, "spec": {"ingress": [{"action": "Allow"}]}}
    v = view(raw("globalnetworkpolicies/default.untyped", doc))
    assert v.policies[0].types == {INGRESS, EGRESS}


def test_types_are_defaulted_as_calico_does_on_write():
    v = view(
        stored("GlobalNetworkPolicy", "none", {}),
        stored("GlobalNetworkPolicy", "in", {"ingress": [{"action": "Allow"}]}),
        stored("GlobalNetworkPolicy", "out", {"egress": [{"action": "Allow"}]}),
        stored("GlobalNetworkPolicy", "both", {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}),
        stored("GlobalNetworkPolicy", "given", {"types": ["Egress"], "ingress": [{"action": "Allow"}]}),
    )
    types = {p.name: p.types for p in v.policies}
    assert types == {"none": {INGRESS}, "in": {INGRESS}, "out": {EGRESS}, "both": {INGRESS, EGRESS}, "given": {EGRESS}}


# --- endpoint labels ----------------------------------------------------------------------------


def test_endpoint_labels_merge_profiles_with_the_endpoints_own_winning_then_the_first_profile():
    v = view(
        stored("Profile", "first", {"labelsToApply": {"team": "first", "tier": "first", "only1": "x"}}),
        stored("Profile", "second", {"labelsToApply": {"team": "second", "tier": "second", "app": "second", "only2": "y"}}),
        wep(labels={"app": "own"}, profiles=["first", "second", "missing"]),
    )
    labels = endpoint_labels(v, only_endpoint(v))
    assert labels["app"] == "own"
    assert labels["team"] == "first" and labels["tier"] == "first"
    assert labels["only1"] == "x" and labels["only2"] == "y"
    assert labels["projectcalico.org/namespace"] == "prod" and labels["projectcalico.org/orchestrator"] == "k8s"


def test_an_endpoint_cannot_claim_namespace_or_service_account_labels_and_gets_its_service_account():
    v = view(wep(labels={"pcns.team": "spoof", "pcsa.role": "spoof", "app": "web"}, serviceAccountName="api"))
    labels = only_endpoint(v).labels
    assert "pcns.team" not in labels and "pcsa.role" not in labels
    assert labels["projectcalico.org/serviceaccount"] == "api" and labels["app"] == "web"


def test_the_namespace_label_is_stamped_from_the_key_even_when_the_record_claims_another():
    doc = {
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "node1-k8s-web-eth0", "namespace": "other", "labels": {"projectcalico.org/namespace": "other"}},
        "spec": {"orchestrator": "k8s", "node": "node1", "pod": "web", "endpoint": "eth0", "interfaceName": "caliweb"},
    }
    v = view(raw("workloadendpoints/prod/node1-k8s-web-eth0", doc))
    endpoint = only_endpoint(v)
    assert endpoint.namespace == "prod" and endpoint.labels["projectcalico.org/namespace"] == "prod"


# --- what applies -------------------------------------------------------------------------------


def test_tiers_sort_by_order_then_name_with_missing_tiers_last_and_policies_by_order_then_key():
    v = view(
        *TIERS,
        stored("GlobalNetworkPolicy", "default.b", {"order": 5}),
        stored("GlobalNetworkPolicy", "default.a", {"order": 5}),
        stored("GlobalNetworkPolicy", "default.last", {}),
        stored("GlobalNetworkPolicy", "default.first", {"order": -1}),
        stored("GlobalNetworkPolicy", "security.s", {"tier": "security"}),
        raw("tiers/zlate", {"kind": "Tier", "metadata": {"name": "zlate"}, "spec": {}}),
        stored("GlobalNetworkPolicy", "zlate.z", {"tier": "zlate"}),
        stored("GlobalNetworkPolicy", "platform.p", {"tier": "platform"}),
        raw("globalnetworkpolicies/ghost.g", {"kind": "GlobalNetworkPolicy", "metadata": {"name": "ghost.g"}, "spec": {"tier": "ghost", "types": ["Ingress"]}}),
        # ns/default.a sorts after default.* GNPs of the same order: Felix compares "prod/..." keys.
        stored("NetworkPolicy", "a", {"order": 5}, "prod"),
        wep(),
    )
    result = applicable(v, only_endpoint(v))
    assert names(result.ingress) == [
        ("platform", ["platform.p"]),
        ("security", ["security.s"]),
        ("default", ["default.first", "default.a", "default.b", "a", "default.last"]),
        ("zlate", ["zlate.z"]),
        ("ghost", ["ghost.g"]),
    ]
    assert [(t.default_action, t.valid) for t in result.ingress] == [("Pass", True), ("Deny", True), ("Deny", True), ("Deny", True), ("Deny", False)]
    assert result.egress == ()  # every policy here defaulted to Ingress


def test_directions_follow_types_and_tiers_without_an_applicable_policy_are_absent():
    v = view(
        *TIERS,
        stored("GlobalNetworkPolicy", "out", {"egress": [{"action": "Allow"}]}),
        stored("GlobalNetworkPolicy", "security.other", {"tier": "security", "selector": "app == 'db'"}),
        wep(labels={"app": "web"}),
    )
    result = applicable(v, only_endpoint(v))
    assert result.ingress == () and names(result.egress) == [("default", ["out"])]


def test_network_policies_select_only_their_own_namespace():
    v = view(
        stored("NetworkPolicy", "here", {"selector": "app == 'web'"}, "prod"),
        stored("NetworkPolicy", "there", {"selector": "app == 'web'"}, "dev"),
        stored("NetworkPolicy", "all", {}, "dev"),
        wep(labels={"app": "web"}),
    )
    assert names(applicable(v, only_endpoint(v)).ingress) == [("default", ["here"])]


def test_a_gnp_namespace_selector_matches_the_namespaces_labels_given_by_its_profile():
    v = view(
        stored("Profile", "kns.prod", {"labelsToApply": {"pcns.env": "prod", "pcns.projectcalico.org/name": "prod"}}),
        stored("GlobalNetworkPolicy", "prod-env", {"namespaceSelector": "env == 'prod'"}),
        stored("GlobalNetworkPolicy", "dev-env", {"namespaceSelector": "env == 'dev'"}),
        stored("GlobalNetworkPolicy", "any-ns", {"namespaceSelector": "all()"}),
        stored("GlobalNetworkPolicy", "by-name", {"namespaceSelector": "projectcalico.org/name == 'prod'", "selector": "app == 'web'"}),
        # The endpoint's own labels are not its namespace's, its namespace label included.
        stored("GlobalNetworkPolicy", "own-ns-label", {"namespaceSelector": "has(projectcalico.org/namespace)"}),
        stored("GlobalNetworkPolicy", "own-label", {"namespaceSelector": "app == 'web'"}),
        wep(labels={"app": "web", "env": "dev"}, profiles=["kns.prod"]),
    )
    assert names(applicable(v, only_endpoint(v)).ingress) == [("default", ["any-ns", "by-name", "prod-env"])]


def test_host_only_policies_never_apply_to_a_workload():
    v = view(
        stored("GlobalNetworkPolicy", "dnt", {"doNotTrack": True, "applyOnForward": True}),
        stored("GlobalNetworkPolicy", "predn", {"preDNAT": True, "applyOnForward": True}),
        stored("GlobalNetworkPolicy", "fwd", {"applyOnForward": True}),
        wep(),
    )
    result = applicable(v, only_endpoint(v))
    assert names(result.ingress) == [("default", ["fwd"])]
    assert result.unenforced == ("GlobalNetworkPolicy(default.fwd).spec.applyOnForward",)


def test_profiles_in_the_endpoints_order_and_missing_ones_named():
    v = view(
        stored("Profile", "b", {"ingress": [{"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}}]}),
        stored("Profile", "a", {}),
        wep(profiles=["b", "gone", "a"]),
    )
    result = applicable(v, only_endpoint(v))
    assert [p.name for p in result.profiles] == ["b", "a"] and result.missing_profiles == ("gone",)
    assert result.unenforced == ("Profile(b).spec.ingress[0].http",)


def test_policy_selectors_see_the_profiles_labels():
    v = view(
        stored("Profile", "net1", {"labelsToApply": {"net1": ""}}),
        stored("GlobalNetworkPolicy", "on-net1", {"selector": "has(net1)"}),
        wep(profiles=["net1"]),
    )
    assert names(applicable(v, only_endpoint(v)).ingress) == [("default", ["on-net1"])]


# --- rule selector scoping ----------------------------------------------------------------------


def side(v: PolicyView, name: str):
    return next(p for p in v.policies if p.name == name).ingress[0].source


PROD_WEB = {"projectcalico.org/namespace": "prod", "app": "web", "pcns.env": "prod"}
DEV_WEB = {"projectcalico.org/namespace": "dev", "app": "web", "pcns.env": "dev"}
GLOBAL_SET = {"role": "any"}


def test_rule_selectors_in_a_network_policy_are_scoped_to_its_namespace():
    v = view(
        stored("NetworkPolicy", "sel", {"ingress": [{"action": "Allow", "source": {"selector": "app == 'web'"}}]}, "prod"),
        stored("NetworkPolicy", "notsel", {"ingress": [{"action": "Allow", "source": {"notSelector": "app == 'db'"}}]}, "prod"),
        stored("NetworkPolicy", "nets", {"ingress": [{"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}}]}, "prod"),
        stored("NetworkPolicy", "nssel", {"ingress": [{"action": "Allow", "source": {"namespaceSelector": "env == 'dev'"}}]}, "prod"),
    )
    assert side(v, "sel").selects(PROD_WEB) and not side(v, "sel").selects(DEV_WEB)
    # notSelector alone still gets the namespace part; it is itself never scoped.
    assert side(v, "notsel").selects(PROD_WEB) and not side(v, "notsel").selects(DEV_WEB)
    assert not side(v, "notsel").selects({"projectcalico.org/namespace": "prod", "app": "db"})
    assert not side(v, "nets").has_selector
    assert side(v, "nssel").selects(DEV_WEB) and not side(v, "nssel").selects(PROD_WEB)


def test_rule_selectors_in_a_gnp_and_profile_are_not_scoped_and_all_and_global_mean_namespaced_or_not():
    v = view(
        stored("GlobalNetworkPolicy", "sel", {"ingress": [{"action": "Allow", "source": {"selector": "app == 'web'"}}]}),
        stored("GlobalNetworkPolicy", "all", {"ingress": [{"action": "Allow", "source": {"namespaceSelector": "all()"}}]}),
        stored("GlobalNetworkPolicy", "global", {"ingress": [{"action": "Allow", "source": {"namespaceSelector": "global()"}}]}),
        stored("Profile", "pr", {"ingress": [{"action": "Allow", "source": {"selector": "app == 'web'"}}]}),
    )
    assert side(v, "sel").selects(PROD_WEB) and side(v, "sel").selects(DEV_WEB)
    assert side(v, "all").selects(DEV_WEB) and not side(v, "all").selects(GLOBAL_SET)
    assert side(v, "global").selects(GLOBAL_SET) and not side(v, "global").selects(PROD_WEB)
    assert v.profiles["pr"].ingress[0].source.selects(DEV_WEB)
