"""node.policy_model: one stored policy record decoded as calicoctl decodes it into Felix's typed
resources (tiers, policies, profiles, network sets, workload endpoints, rules), or left out."""

from __future__ import annotations

import ipaddress

import pytest

from calico_cni.model.keys import RESOURCES
from calico_cni.node.policy_model import EGRESS, INGRESS, EndpointPort, LeftOut, PortRange, read_record
from tests.policy_support import KV, raw, stored, wep  # noqa: F401 - KV: the records' type


def one(record: tuple[str, KV]):
    """The typed resource of one (key, record)."""
    return read_record(*record)


# --- resources ----------------------------------------------------------------------------------


def test_policies_are_read_with_the_users_name_the_stored_name_and_the_tier():
    np = one(stored("NetworkPolicy", "allow-web", {"selector": "app == 'web'", "order": 10, "ingress": [{"action": "Allow"}]}, "prod"))
    gnp = one(stored("GlobalNetworkPolicy", "security.block", {"tier": "security", "egress": [{"action": "Deny"}]}))
    assert (np.name, np.kind, np.stored_name, np.namespace, np.tier, np.order) == ("allow-web", "NetworkPolicy", "default.allow-web", "prod", "default", 10.0)
    assert np.felix_key == "prod/default.allow-web"
    assert (gnp.name, gnp.stored_name, gnp.tier, gnp.order, gnp.felix_key) == ("security.block", "security.block", "security", None, "security.block")
    assert gnp.types == {EGRESS} and np.types == {INGRESS}


def test_tiers_profiles_sets_and_endpoints_are_typed():
    default = one(stored("Tier", "default", {}))
    platform = one(stored("Tier", "platform", {"order": 100, "defaultAction": "Pass"}))
    assert default.order == 1_000_000.0 and default.default_action == "Deny"
    assert platform.default_action == "Pass"
    profile = one(stored("Profile", "kns.prod", {"ingress": [{"action": "Allow"}], "labelsToApply": {"pcns.team": "a"}}))
    assert profile.name == "kns.prod" and profile.labels_to_apply == {"pcns.team": "a"}
    office = one(stored("NetworkSet", "office", {"nets": ["198.51.100.0/24"]}, "prod", labels={"role": "office"}))
    assert office.labels == {"role": "office", "projectcalico.org/namespace": "prod"}
    internet = one(stored("GlobalNetworkSet", "internet", {"nets": ["0.0.0.0/0"]}, labels={"role": "any"}))
    assert internet.namespace is None and internet.nets == (ipaddress.ip_network("0.0.0.0/0"),)
    key, record = wep(
        labels={"app": "web"},
        profiles=["kns.prod"],
        ports=[{"name": "http", "protocol": "TCP", "port": 8080}, {"protocol": "UDP", "port": 53, "hostPort": 53}],
    )
    endpoint = read_record(key, record)
    assert endpoint.key == key and endpoint.profiles == ("kns.prod",)
    assert (endpoint.namespace, endpoint.name, endpoint.node, endpoint.interface_name) == ("prod", "node1-k8s-web-eth0", "node1", "caliweb")
    assert endpoint.ip_networks == (ipaddress.ip_network("10.0.0.1/32"),)
    # A port without a name is only a host port: Felix never sees it, nor does a named-port match.
    assert endpoint.ports == (EndpointPort("http", 6, 8080),)
    assert endpoint.labels == {"app": "web", "projectcalico.org/namespace": "prod", "projectcalico.org/orchestrator": "k8s"}


def test_a_key_of_another_kind_is_not_a_policy_record():
    assert read_record(RESOURCES + "ippools/pool1", KV(b"{}")) is None


def test_a_tier_stored_without_order_sorts_last_as_felix_reads_it():
    tier = one(raw("tiers/late", {"kind": "Tier", "metadata": {"name": "late"}, "spec": {}}))
    assert tier.order is None and tier.default_action == "Deny"


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
    r, i, log, pass_ = one(stored("GlobalNetworkPolicy", "p", {"ingress": [rule, icmp_rule, {"action": "Log"}, {"action": "Pass"}]})).ingress
    assert (r.action, r.ip_version, r.protocol, r.not_protocol) == ("Allow", 4, 6, 17)
    assert r.source.nets == (ipaddress.ip_network("10.1.0.0/16"),) and r.source.not_nets == (ipaddress.ip_network("10.1.2.0/24"),)
    assert r.source.not_ports.ranges == (PortRange(22, 22),) and not r.source.ports
    assert r.destination.ports.ranges == (PortRange(80, 80), PortRange(8000, 8080))
    assert r.destination.ports.named == ("http",)
    assert r.annotations == {"why": "web"}
    assert (i.protocol, i.icmp.type, i.icmp.code, i.not_icmp.type, i.not_icmp.code) == (58, 128, 0, 1, None)
    assert (log.action, pass_.action) == ("Log", "Pass")
    assert r.unenforced == () and not r.source.has_selector and r.destination.has_selector


def test_every_protocol_name_calico_accepts_becomes_its_iana_number():
    iana = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
    rules = [{"action": "Allow", "protocol": name} for name in iana]
    p = one(stored("GlobalNetworkPolicy", "p", {"ingress": rules}))
    assert {name: r.protocol for name, r in zip(iana, p.ingress)} == iana


def test_stored_but_unenforced_fields_are_flagged():
    rule = {"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}, "source": {"serviceAccounts": {"names": ["sa"]}}}
    service = {"action": "Allow", "source": {"services": {"name": "api"}}}
    p = one(stored("NetworkPolicy", "p", {"ingress": [rule, service], "serviceAccountSelector": "role == 'x'"}, "prod"))
    dnt = one(stored("GlobalNetworkPolicy", "raw", {"doNotTrack": True, "applyOnForward": True, "ingress": [{"action": "Deny"}]}))
    assert p.unenforced == ("serviceAccountSelector",) and not p.host_only
    assert p.ingress[0].unenforced == ("http", "source.serviceAccounts")
    assert p.ingress[1].unenforced == ("source.services",)
    assert p.ingress[0].source.unenforced == ("serviceAccounts",)
    assert dnt.unenforced == ("doNotTrack", "applyOnForward") and dnt.host_only


def test_service_accounts_match_on_service_account_labels_as_calicos_syncer_builds_them():
    """A rule side's serviceAccounts (names, and a selector on `pcsa.` labels, ANDed) and a policy's
    serviceAccountSelector narrow what they apply to, as in Calico; they never widen a rule to every
    endpoint (an endpoint here has those labels only from its serviceAccountName or a profile)."""
    by_name = {"action": "Allow", "source": {"serviceAccounts": {"names": ["api", "web"]}}}
    by_both = {"action": "Allow", "source": {"selector": "app == 'x'", "serviceAccounts": {"names": ["api"], "selector": "team == 'a'"}}}
    p = one(stored("NetworkPolicy", "sa", {"ingress": [by_name, by_both]}, "prod"))
    ns = {"projectcalico.org/namespace": "prod"}
    side = p.ingress[0].source
    assert side.selects({**ns, "projectcalico.org/serviceaccount": "api"})
    assert not side.selects({**ns, "projectcalico.org/serviceaccount": "db"}) and not side.selects(ns)
    assert not side.selects({"projectcalico.org/namespace": "other", "projectcalico.org/serviceaccount": "api"})  # scoped
    both = p.ingress[1].source
    full = {**ns, "app": "x", "projectcalico.org/serviceaccount": "api", "pcsa.team": "a"}
    assert both.selects(full)
    assert not any(both.selects({k: v for k, v in full.items() if k != drop}) for drop in ("app", "projectcalico.org/serviceaccount", "pcsa.team"))
    # Two rules with one selector but other service accounts are told apart (selector sets key on it).
    assert side.selector_text != both.selector_text and "app == 'x'" in both.selector_text
    gnp = one(stored("GlobalNetworkPolicy", "sa-g", {"serviceAccountSelector": "all()", "ingress": [{"action": "Allow"}]}))
    assert gnp.selector({"projectcalico.org/serviceaccount": "api"}) and not gnp.selector({"app": "x"})
    np = one(stored("NetworkPolicy", "sa-n", {"selector": "app == 'x'", "serviceAccountSelector": "team == 'a'", "ingress": [{"action": "Allow"}]}, "prod"))
    assert np.selector({**ns, "app": "x", "pcsa.team": "a"}) and not np.selector({**ns, "app": "x"})


def test_a_rule_naming_kubernetes_services_matches_nothing():
    """As Felix's service ipset with no Service behind it: here no Kubernetes Service exists."""
    rule = one(
        stored("GlobalNetworkPolicy", "svc", {"egress": [{"action": "Allow", "destination": {"services": {"name": "api", "namespace": "prod"}}}]})
    ).egress[0]
    assert rule.never_matches and rule.unenforced == ("destination.services",)


# --- hostile and later-release records ----------------------------------------------------------


def test_hostile_records_are_left_out_with_a_message_naming_them():
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
        raw(base + "extra/default.path", {"kind": "GlobalNetworkPolicy", "metadata": {"name": "default.path"}, "spec": {}}),
        raw("workloadendpoints/prod/junk", {"kind": "WorkloadEndpoint", "metadata": {"name": "junk"}, "spec": {"interfaceName": "x", "ipNetworks": ["nope"]}}),
        raw("networksets/prod/bad", {"kind": "NetworkSet", "metadata": {"name": "bad"}, "spec": {"nets": ["10.0.0.0/33"]}}),
        raw("tiers/default", {"kind": "Tier", "metadata": {"name": "default"}, "spec": {"order": 5}}),
    ]
    messages = []
    for key, record in hostile:
        with pytest.raises(LeftOut) as caught:
            read_record(key, record)
        message = str(caught.value)
        assert message.startswith(key + ":") and message.endswith("left out of policy"), message
        messages.append(message)
    assert "ports[0]" in messages[1]
    assert "not a GlobalNetworkPolicy key" in messages[6]


def test_a_huge_rule_list_is_kept_as_calicoctl_v3_30_keeps_it():
    # Calico v3.30's validator sets no limit on a policy's rules (the 1024 limit is later), so a
    # long list is a policy like any other here.
    assert len(one(stored("GlobalNetworkPolicy", "huge", {"ingress": [{"action": "Allow"}] * 2000})).ingress) == 2000


def test_fields_of_later_releases_are_ignored_and_the_record_kept():
    doc = {
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "default.future", "annotations": {"projectcalico.org/metadata": '{"name":"future"}'}},
        "spec": {"newField": 1, "ingress": [{"action": "Allow", "newRuleField": True, "source": {"newSide": "x"}}]},
        "newTopLevel": {},
    }
    p = one(raw("globalnetworkpolicies/default.future", doc))
    assert p.name == "future" and p.ingress[0].action == "Allow"


def test_a_policy_stored_without_types_governs_both_directions_as_felix_reads_it():
    doc = {"kind": "GlobalNetworkPolicy", "metadata": {"name": "default.untyped"}, "spec": {"ingress": [{"action": "Allow"}]}}
    assert one(raw("globalnetworkpolicies/default.untyped", doc)).types == {INGRESS, EGRESS}


def test_types_are_defaulted_as_calico_does_on_write():
    specs = {
        "none": {},
        "in": {"ingress": [{"action": "Allow"}]},
        "out": {"egress": [{"action": "Allow"}]},
        "both": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]},
        "given": {"types": ["Egress"], "ingress": [{"action": "Allow"}]},
    }
    types = {name: one(stored("GlobalNetworkPolicy", name, spec)).types for name, spec in specs.items()}
    assert types == {"none": {INGRESS}, "in": {INGRESS}, "out": {EGRESS}, "both": {INGRESS, EGRESS}, "given": {EGRESS}}


# --- endpoint labels ----------------------------------------------------------------------------


def test_an_endpoint_cannot_claim_namespace_or_service_account_labels_and_gets_its_service_account():
    labels = one(wep(labels={"pcns.team": "spoof", "pcsa.role": "spoof", "app": "web"}, serviceAccountName="api")).labels
    assert "pcns.team" not in labels and "pcsa.role" not in labels
    assert labels["projectcalico.org/serviceaccount"] == "api" and labels["app"] == "web"


def test_the_namespace_label_is_stamped_from_the_key_even_when_the_record_claims_another():
    doc = {
        "kind": "WorkloadEndpoint",
        "metadata": {"name": "node1-k8s-web-eth0", "namespace": "other", "labels": {"projectcalico.org/namespace": "other"}},
        "spec": {"orchestrator": "k8s", "node": "node1", "pod": "web", "endpoint": "eth0", "interfaceName": "caliweb"},
    }
    endpoint = one(raw("workloadendpoints/prod/node1-k8s-web-eth0", doc))
    assert endpoint.namespace == "prod" and endpoint.labels["projectcalico.org/namespace"] == "prod"


# --- rule selector scoping ----------------------------------------------------------------------


def side(record: tuple[str, KV]):
    return one(record).ingress[0].source


PROD_WEB = {"projectcalico.org/namespace": "prod", "app": "web", "pcns.env": "prod"}
DEV_WEB = {"projectcalico.org/namespace": "dev", "app": "web", "pcns.env": "dev"}
GLOBAL_SET = {"role": "any"}


def test_rule_selectors_in_a_network_policy_are_scoped_to_its_namespace():
    sel = side(stored("NetworkPolicy", "sel", {"ingress": [{"action": "Allow", "source": {"selector": "app == 'web'"}}]}, "prod"))
    notsel = side(stored("NetworkPolicy", "notsel", {"ingress": [{"action": "Allow", "source": {"notSelector": "app == 'db'"}}]}, "prod"))
    nets = side(stored("NetworkPolicy", "nets", {"ingress": [{"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}}]}, "prod"))
    nssel = side(stored("NetworkPolicy", "nssel", {"ingress": [{"action": "Allow", "source": {"namespaceSelector": "env == 'dev'"}}]}, "prod"))
    assert sel.selects(PROD_WEB) and not sel.selects(DEV_WEB)
    # notSelector alone still gets the namespace part; it is itself never scoped.
    assert notsel.selects(PROD_WEB) and not notsel.selects(DEV_WEB)
    assert not notsel.selects({"projectcalico.org/namespace": "prod", "app": "db"})
    assert not nets.has_selector
    assert nssel.selects(DEV_WEB) and not nssel.selects(PROD_WEB)


def test_rule_selectors_in_a_gnp_and_profile_are_not_scoped_and_all_and_global_mean_namespaced_or_not():
    sel = side(stored("GlobalNetworkPolicy", "sel", {"ingress": [{"action": "Allow", "source": {"selector": "app == 'web'"}}]}))
    all_ = side(stored("GlobalNetworkPolicy", "all", {"ingress": [{"action": "Allow", "source": {"namespaceSelector": "all()"}}]}))
    global_ = side(stored("GlobalNetworkPolicy", "global", {"ingress": [{"action": "Allow", "source": {"namespaceSelector": "global()"}}]}))
    profile = side(stored("Profile", "pr", {"ingress": [{"action": "Allow", "source": {"selector": "app == 'web'"}}]}))
    assert sel.selects(PROD_WEB) and sel.selects(DEV_WEB)
    assert all_.selects(DEV_WEB) and not all_.selects(GLOBAL_SET)
    assert global_.selects(GLOBAL_SET) and not global_.selects(PROD_WEB)
    assert profile.selects(DEV_WEB)


def test_a_gnp_namespace_selector_rewrites_all_in_the_whole_selector_as_calicos_syncer_does():
    # Calico: `(<selector>) && <pcns.-prefixed namespaceSelector>`, then every all() becomes
    # has(projectcalico.org/namespace), the GNP's own selector included.
    def gnp(sel: str):
        return one(stored("GlobalNetworkPolicy", "g", {"selector": sel, "namespaceSelector": "!has(team)"})).selector

    host = {"role": "any"}  # no namespace label: a host endpoint or global set
    assert gnp("all()")(PROD_WEB) and not gnp("all()")(host)
    assert gnp("app == 'web' || all()")(DEV_WEB) and not gnp("app == 'web' || all()")(host)
    # An empty selector yields the prefixed namespaceSelector alone: no all() to rewrite.
    assert gnp("")(PROD_WEB) and gnp("")(host)
    assert not gnp("")({**PROD_WEB, "pcns.team": "a"})


def test_global_is_refused_in_a_gnp_namespace_selector_so_only_rules_rewrite_it():
    doc = {"kind": "GlobalNetworkPolicy", "metadata": {"name": "default.g"}, "spec": {"namespaceSelector": "global()"}}
    with pytest.raises(LeftOut, match="global"):
        one(raw("globalnetworkpolicies/default.g", doc))
