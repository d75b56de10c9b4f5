"""node.policy_view: Calico's policy resources read off a cache snapshot into one view (each record
typed by node.policy_model, see test_policy_model.py), and what applies to one workload endpoint per
direction, in Felix's order (issue 18's foundations)."""

from __future__ import annotations

from calico_cni.model.keys import RESOURCES
from calico_cni.node.policy_view import PolicyView, applicable, endpoint_labels, network_set_labels
from tests.policy_support import KV, raw, stored, wep  # noqa: F401 - KV: the records' type

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


# --- reading -----------------------------------------------------------------------------------


def test_every_kind_is_read_into_the_view_and_records_of_other_kinds_ignored():
    v = view(
        *TIERS,
        stored("NetworkPolicy", "allow-web", {"selector": "app == 'web'"}, "prod"),
        stored("GlobalNetworkPolicy", "security.block", {"tier": "security"}),
        stored("Profile", "kns.prod", {}),
        stored("NetworkSet", "office", {"nets": ["198.51.100.0/24"]}, "prod"),
        stored("GlobalNetworkSet", "internet", {"nets": ["0.0.0.0/0"]}),
        wep(),
        stored("IPPool", "pool1", {"cidr": "10.0.0.0/16"}),
    )
    assert v.problems == ()
    assert sorted(v.tiers) == ["default", "platform", "security"] and list(v.profiles) == ["kns.prod", "projectcalico-default-allow"]  # the built-in one too
    assert sorted(p.name for p in v.policies) == ["allow-web", "security.block"]
    assert sorted(s.name for s in v.network_sets) == ["internet", "office"]
    (key,) = v.endpoints
    assert v.endpoints[key].key == key


def test_hostile_records_are_skipped_with_a_problem_naming_them_and_the_others_kept():
    good = stored("GlobalNetworkPolicy", "good", {"ingress": [{"action": "Allow"}]})
    hostile = [
        raw("globalnetworkpolicies/default.badsel", {"kind": "GlobalNetworkPolicy", "metadata": {"name": "default.badsel"}, "spec": {"selector": "app == "}}),
        (RESOURCES + "globalnetworkpolicies/default.garbage", KV(b"{not json")),
        raw("workloadendpoints/prod/junk", {"kind": "WorkloadEndpoint", "metadata": {"name": "junk"}, "spec": {"interfaceName": "x", "ipNetworks": ["nope"]}}),
        raw("networksets/prod/bad", {"kind": "NetworkSet", "metadata": {"name": "bad"}, "spec": {"nets": ["10.0.0.0/33"]}}),
        raw("tiers/default", {"kind": "Tier", "metadata": {"name": "default"}, "spec": {"order": 5}}),
    ]
    v = view(good, *hostile)
    assert [p.name for p in v.policies] == ["good"]
    assert v.network_sets == () and v.endpoints == {} and v.tiers == {}
    assert len(v.problems) == len(hostile)
    for key, _ in hostile:
        assert any(p.startswith(key + ":") for p in v.problems), key


def test_an_endpoint_with_no_ip_networks_is_left_out_as_calicos_syncer_drops_it():
    v = view(wep("noip", ipNetworks=[]), wep("web"))
    assert [e.interface_name for e in v.endpoints.values()] == ["caliweb"]
    assert v.problems == ()  # not a bad record: Felix simply never sees it


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


def test_a_network_set_inherits_its_namespaces_profile_labels_and_a_global_set_none():
    v = view(
        stored("Profile", "kns.prod", {"labelsToApply": {"pcns.env": "prod", "role": "profile"}}),
        stored("NetworkSet", "office", {"nets": ["198.51.100.0/24"]}, "prod", labels={"role": "own"}),
        stored("NetworkSet", "lab", {"nets": ["198.51.101.0/24"]}, "dev"),
        stored("GlobalNetworkSet", "kns.prod-lookalike", {"nets": ["0.0.0.0/0"]}),
    )
    by_name = {s.name: network_set_labels(v, s) for s in v.network_sets}
    assert by_name["office"] == {"role": "own", "pcns.env": "prod", "projectcalico.org/namespace": "prod"}
    assert by_name["lab"] == {"projectcalico.org/namespace": "dev"}  # kns.dev absent: nothing added
    assert by_name["kns.prod-lookalike"] == {}
    # So a rule's namespaceSelector selects the set through its namespace's labels.
    (gnp,) = view(stored("GlobalNetworkPolicy", "g", {"ingress": [{"action": "Allow", "source": {"namespaceSelector": "env == 'prod'"}}]})).policies
    assert gnp.ingress[0].source.selects(by_name["office"]) and not gnp.ingress[0].source.selects(by_name["lab"])


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
    assert [(n, p.name if p else None) for n, p in result.profiles] == [("b", "b"), ("gone", None), ("a", "a")]
    assert result.unenforced == ("Profile(b).spec.ingress[0].http",)


def test_a_missing_profile_keeps_its_place_among_the_endpoints_profiles():
    # A missing profile is a deny-all where it stands: before "b" it denies what "b" would allow.
    def order(profiles: list[str]) -> list[tuple[str, bool]]:
        v = view(stored("Profile", "b", {"ingress": [{"action": "Allow"}]}), wep(profiles=profiles))
        return [(n, p is not None) for n, p in applicable(v, only_endpoint(v)).profiles]

    assert order(["gone", "b"]) == [("gone", False), ("b", True)]
    assert order(["b", "gone"]) == [("b", True), ("gone", False)]


def test_policy_selectors_see_the_profiles_labels():
    v = view(
        stored("Profile", "net1", {"labelsToApply": {"net1": ""}}),
        stored("GlobalNetworkPolicy", "on-net1", {"selector": "has(net1)"}),
        wep(profiles=["net1"]),
    )
    assert names(applicable(v, only_endpoint(v)).ingress) == [("default", ["on-net1"])]


def test_a_memo_keeps_unchanged_records_as_they_were_and_rereads_changed_or_gone_ones():
    policy = stored("GlobalNetworkPolicy", "p", {"ingress": [{"action": "Allow"}]})
    bad = raw("globalnetworkpolicies/default.bad", {"kind": "GlobalNetworkPolicy", "metadata": {"name": "default.bad"}, "spec": {"selector": "app == "}})
    items, memo = dict([policy, bad, wep()]), {}
    first = PolicyView.read(items, memo)
    again = PolicyView.read(items, memo)
    assert again.policies[0] is first.policies[0] and list(again.endpoints.values())[0] is list(first.endpoints.values())[0]
    assert again.problems == first.problems and len(again.problems) == 1
    key, record = stored("GlobalNetworkPolicy", "p", {"ingress": [{"action": "Deny"}]})
    items[key] = KV(record.value, 8)
    del items[bad[0]]
    changed = PolicyView.read(items, memo)
    assert changed.policies[0].ingress[0].action == "Deny" and changed.problems == () and bad[0] not in memo
    assert changed == PolicyView.read(items)


def test_calicos_built_in_default_allow_profile_exists_without_being_stored():
    """`projectcalico-default-allow` is never stored (calicoctl shows it all the same): an endpoint
    naming it is allowed both ways, not denied as by a missing profile; a stored one wins."""
    v = view(wep("a", profiles=["projectcalico-default-allow"]))
    ((name, profile),) = applicable(v, next(iter(v.endpoints.values()))).profiles
    assert name == "projectcalico-default-allow" and profile is not None
    assert [r.action for r in profile.ingress] == ["Allow"] and [r.action for r in profile.egress] == ["Allow"]
    stored_one = view(stored("Profile", "projectcalico-default-allow", {"ingress": [{"action": "Deny"}]}))
    assert [r.action for r in stored_one.profiles["projectcalico-default-allow"].ingress] == ["Deny"]
