"""The reference evaluator of Calico's policy semantics (tests/policy_oracle.py): one small scenario
per semantic rule, the expected verdict reasoned from /work/shared/reference/calico-policy.md (§2
unless marked), not from the oracle's output."""

from __future__ import annotations

import ipaddress

import pytest

from tests.policy_oracle import Probe, World, evaluate


def tier(name: str, order: float | None, default_action: str = "Deny") -> dict:
    spec: dict = {"defaultAction": default_action}
    if order is not None:
        spec["order"] = order
    return {"kind": "Tier", "metadata": {"name": name}, "spec": spec}


TIERS = [tier("default", 1_000_000)]


def wep(
    name: str, ip: str, labels: dict | None = None, ns: str = "default", profiles: list | None = None, ports: list | None = None, ip6: str | None = None
) -> dict:
    nets = [f"{ip}/32"] + ([f"{ip6}/128"] if ip6 else [])
    spec = {"orchestrator": "cni", "node": "n1", "ipNetworks": nets, "profiles": ["open"] if profiles is None else profiles, "ports": ports or []}
    return {"kind": "WorkloadEndpoint", "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": spec}


def profile(name: str, ingress: list | None = None, egress: list | None = None, labels: dict | None = None) -> dict:
    spec = {"ingress": ingress or [], "egress": egress or [], "labelsToApply": labels or {}}
    return {"kind": "Profile", "metadata": {"name": name}, "spec": spec}


def gnp(name: str, spec: dict) -> dict:
    return {"kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def np(name: str, spec: dict, ns: str = "default") -> dict:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec}


ALLOW, DENY = {"action": "Allow"}, {"action": "Deny"}
OPEN = profile("open", [ALLOW], [ALLOW])
A, B = wep("a", "10.0.0.1", {"app": "a"}), wep("b", "10.0.0.2", {"app": "b"})


def tcp(src: str = "default/a", dst: str = "default/b", port: int = 80, **kw) -> Probe:
    return Probe(src, dst, "TCP", dst_port=port, src_port=40000, **kw)


def verdict(docs: list, probe: Probe | None = None, **kw) -> bool:
    return evaluate(TIERS + docs, probe or tcp(), **kw).allowed


# --- profiles ---------------------------------------------------------------------------------


def test_open_profile_allows_and_says_so():
    v = evaluate(TIERS + [A, B, OPEN], tcp())
    assert v.allowed
    assert [(d.direction, d.by) for d in v.decisions] == [("egress", "profile open egress rule 0 Allow"), ("ingress", "profile open ingress rule 0 Allow")]


def test_no_profiles_drops_both_ways():
    # "no profiles and no applicable policy => everything dropped both ways"
    b = wep("b", "10.0.0.2", profiles=[])
    v = evaluate(TIERS + [A, b, OPEN], tcp())
    assert not v.allowed and v.decisions[-1].by == "no profiles"


def test_missing_profile_denies_but_an_earlier_profile_that_allows_wins():
    b = wep("b", "10.0.0.2", profiles=["ghost"])
    assert not verdict([A, b, OPEN])
    # "The first profile that allows wins": open comes first.
    assert verdict([A, wep("b", "10.0.0.2", profiles=["open", "ghost"]), OPEN])
    assert not verdict([A, wep("b", "10.0.0.2", profiles=["ghost", "open"]), OPEN])


def test_profile_with_no_matching_rule_drops():
    closed = profile("closed", [{"action": "Allow", "protocol": "UDP"}], [ALLOW])
    assert not verdict([A, wep("b", "10.0.0.2", profiles=["closed"]), OPEN, closed])


def test_profiles_consulted_only_when_no_tier_decided():
    # A GNP allowing ingress to b decides; the deny-all profile is never reached.
    deny_all = profile("deny", [DENY], [DENY])
    b = wep("b", "10.0.0.2", {"app": "b"}, profiles=["deny"])
    assert verdict([A, b, OPEN, deny_all, gnp("p", {"selector": "app == 'b'", "ingress": [ALLOW]})])
    # Without the policy the profile decides.
    assert not verdict([A, b, OPEN, deny_all])


# --- tiers and policies -----------------------------------------------------------------------


def test_end_of_tier_drop_only_when_a_policy_applied():
    # A policy for app == 'b' with an ingress rule matching nothing here: end-of-tier drop.
    p = gnp("p", {"selector": "app == 'b'", "ingress": [{"action": "Allow", "protocol": "UDP"}]})
    v = evaluate(TIERS + [A, B, OPEN, p], tcp())
    assert not v.allowed and v.decisions[-1].by == "tier default end-of-tier drop"
    # Same policy selecting someone else: no effect, the profile allows.
    assert verdict([A, B, OPEN, gnp("p", {"selector": "app == 'c'", "ingress": [DENY]})])


def test_end_of_tier_drop_is_per_direction():
    # An Ingress-only policy on a (types defaulted: no egress rules -> Ingress) does not drop a's egress.
    p = gnp("p", {"selector": "app == 'a'", "ingress": [{"action": "Allow", "protocol": "UDP"}]})
    assert verdict([A, B, OPEN, p])


def test_tier_default_action_pass_goes_to_next_tier():
    t = tier("t", 10, "Pass")
    p = gnp("t.p", {"tier": "t", "selector": "app == 'b'", "ingress": [{"action": "Allow", "protocol": "UDP"}]})
    assert verdict([A, B, OPEN, t, p])  # falls through tier t to the profile
    assert not verdict([A, B, OPEN, tier("t", 10, "Deny"), p])


def test_tiers_by_order_then_name():
    t1, t2 = tier("t1", 10), tier("t2", 20)
    deny = gnp("t1.d", {"tier": "t1", "ingress": [DENY]})
    allow = gnp("t2.a", {"tier": "t2", "ingress": [ALLOW]})
    assert not verdict([A, B, OPEN, t1, t2, deny, allow])
    # Reverse the orders: t2 first allows, t1 is skipped.
    assert verdict([A, B, OPEN, tier("t1", 20), tier("t2", 10), deny, allow])
    # Same order: names decide, t1 < t2.
    assert not verdict([A, B, OPEN, tier("t1", 10), tier("t2", 10), deny, allow])
    # No order means last.
    assert verdict([A, B, OPEN, tier("t1", None), tier("t2", 5), deny, allow])


def test_pass_skips_rest_of_tier():
    t = tier("t", 10)
    passing = gnp("t.a", {"tier": "t", "order": 1, "ingress": [{"action": "Pass"}]})
    deny = gnp("t.b", {"tier": "t", "order": 2, "ingress": [DENY]})
    v = evaluate(TIERS + [A, B, OPEN, t, passing, deny], tcp())
    assert v.allowed and v.decisions[-1].by.startswith("profile open")


def test_policies_by_order_then_name():
    allow, deny = gnp("x", {"order": 1, "ingress": [ALLOW]}), gnp("y", {"order": 2, "ingress": [DENY]})
    assert verdict([A, B, OPEN, allow, deny])
    assert not verdict([A, B, OPEN, gnp("x", {"order": 3, "ingress": [ALLOW]}), deny])
    # Equal (absent = +inf) order: name breaks the tie, "x" before "y".
    assert verdict([A, B, OPEN, gnp("x", {"ingress": [ALLOW]}), gnp("y", {"ingress": [DENY]})])
    assert not verdict([A, B, OPEN, gnp("z", {"ingress": [ALLOW]}), gnp("y", {"ingress": [DENY]})])


def test_log_continues():
    assert verdict([A, B, OPEN, gnp("p", {"ingress": [{"action": "Log"}, ALLOW]})])
    assert not verdict([A, B, OPEN, gnp("p", {"ingress": [{"action": "Log"}, DENY]})])


def test_egress_checked_before_ingress_and_both_must_allow():
    deny_egress = gnp("p", {"selector": "app == 'a'", "egress": [DENY]})
    v = evaluate(TIERS + [A, B, OPEN, deny_egress], tcp())
    assert not v.allowed and [d.direction for d in v.decisions] == ["egress"]
    # Egress allowed by a policy: later tiers skipped but b's ingress still runs.
    allow_egress = gnp("p", {"selector": "app == 'a'", "egress": [ALLOW]})
    deny_b = gnp("q", {"selector": "app == 'b'", "ingress": [DENY]})
    assert not verdict([A, B, OPEN, allow_egress, deny_b])


def test_outside_addresses_only_police_the_endpoint_side():
    deny_in = gnp("p", {"selector": "app == 'b'", "ingress": [{"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}}, ALLOW]})
    assert not verdict([B, OPEN, deny_in], tcp(src="192.0.2.7"))
    v = evaluate(TIERS + [B, OPEN, deny_in], tcp(src="198.51.100.1"))
    assert v.allowed and [d.direction for d in v.decisions] == ["ingress"]
    assert [d.direction for d in evaluate(TIERS + [A, OPEN], tcp(dst="192.0.2.1")).decisions] == ["egress"]


# --- types defaulting (§1) ----------------------------------------------------------------------


def test_types_defaulting():
    # Only egress rules -> [Egress]: it does not apply to b's ingress, so no end-of-tier drop there.
    eg = gnp("p", {"egress": [{"action": "Allow", "protocol": "UDP"}]})
    w = World(TIERS + [A, B, OPEN, eg])
    assert w.decide("default/b", "ingress", tcp(), *addrs()).allowed
    assert not w.decide("default/a", "egress", tcp(), *addrs()).allowed
    # Explicit types win: Ingress with no rules drops ingress.
    assert not verdict([A, B, OPEN, gnp("p", {"types": ["Ingress"]})])
    # A policy with no rules at all defaults to Ingress: it drops ingress, not egress.
    w = World(TIERS + [A, B, OPEN, gnp("p", {"selector": "all()"})])
    assert w.decide("default/a", "egress", tcp(), *addrs()).allowed
    assert not w.decide("default/b", "ingress", tcp(), *addrs()).allowed
    # As Felix reads a record without types written straight to etcd: both directions.
    w = World(TIERS + [A, B, OPEN, eg], api_defaults=False)
    assert not w.decide("default/b", "ingress", tcp(), *addrs()).allowed


def addrs():
    """a's and b's addresses, for World.decide."""
    return ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2")


# --- rule fields -------------------------------------------------------------------------------


def only(rule: dict) -> dict:
    """A GNP on b whose single ingress rule allows `rule`'s match: the rule matching = allowed."""
    return gnp("p", {"selector": "app == 'b'", "ingress": [{"action": "Allow", **rule}]})


def test_protocol_by_name_any_case_and_number():
    assert verdict([A, B, OPEN, only({"protocol": "TCP"})])
    assert verdict([A, B, OPEN, only({"protocol": "tcp"})])
    assert verdict([A, B, OPEN, only({"protocol": 6})])
    assert not verdict([A, B, OPEN, only({"protocol": "UDP"})])
    assert not verdict([A, B, OPEN, only({"protocol": 17})])
    assert verdict([A, B, OPEN, only({"protocol": "UDP"})], Probe("default/a", "default/b", 17, dst_port=53))


def test_not_protocol():
    assert not verdict([A, B, OPEN, only({"notProtocol": "TCP"})])
    assert verdict([A, B, OPEN, only({"notProtocol": "UDP"})])


def icmp(t: int, c: int = 0, version: int = 4) -> Probe:
    return Probe("default/a", "default/b", "ICMP" if version == 4 else "ICMPv6", icmp_type=t, icmp_code=c, ip_version=version)


def test_icmp_type_and_code():
    rule = {"protocol": "ICMP", "icmp": {"type": 8}}
    assert verdict([A, B, OPEN, only(rule)], icmp(8))
    assert not verdict([A, B, OPEN, only(rule)], icmp(0))
    rule = {"protocol": "ICMP", "icmp": {"type": 3, "code": 1}}
    assert verdict([A, B, OPEN, only(rule)], icmp(3, 1))
    assert not verdict([A, B, OPEN, only(rule)], icmp(3, 2))


def test_not_icmp():
    rule = {"protocol": "ICMP", "notICMP": {"type": 8}}
    assert not verdict([A, B, OPEN, only(rule)], icmp(8))
    assert verdict([A, B, OPEN, only(rule)], icmp(0))
    # The oracle's own choice, for records written to etcd directly: calicoctl refuses notICMP
    # without protocol ICMP/ICMPv6, so Calico's documents never reach this; the oracle says
    # notICMP needs an ICMP packet, so TCP does not match.
    assert not verdict([A, B, OPEN, only({"notICMP": {"type": 8}})])


def test_ip_version():
    a6, b6 = wep("a", "10.0.0.1", {"app": "a"}, ip6="fd00::1"), wep("b", "10.0.0.2", {"app": "b"}, ip6="fd00::2")
    assert verdict([a6, b6, OPEN, only({"ipVersion": 6})], tcp(ip_version=6))
    assert not verdict([a6, b6, OPEN, only({"ipVersion": 6})], tcp(ip_version=4))
    assert verdict([a6, b6, OPEN, only({"protocol": "ICMPv6", "ipVersion": 6, "icmp": {"type": 128}})], icmp(128, version=6))


def test_nets_and_not_nets():
    assert verdict([A, B, OPEN, only({"source": {"nets": ["10.0.0.0/24"]}})])
    assert not verdict([A, B, OPEN, only({"source": {"nets": ["10.1.0.0/24"]}})])
    assert not verdict([A, B, OPEN, only({"source": {"notNets": ["10.0.0.1/32"]}})])
    assert verdict([A, B, OPEN, only({"destination": {"notNets": ["10.0.0.1/32"]}})])


def test_rule_with_only_other_family_nets_is_skipped():
    # §3 "Match rendering": no ipVersion, notNets all IPv4: for an IPv6 packet the field would be
    # emptied, so the rule is skipped rather than matching everything.
    a6, b6 = wep("a", "10.0.0.1", {"app": "a"}, ip6="fd00::1"), wep("b", "10.0.0.2", {"app": "b"}, ip6="fd00::2")
    assert not verdict([a6, b6, OPEN, only({"source": {"notNets": ["10.9.0.0/16"]}})], tcp(ip_version=6))
    assert verdict([a6, b6, OPEN, only({"source": {"notNets": ["10.9.0.0/16", "fd99::/64"]}})], tcp(ip_version=6))


def test_selector_and_not_selector():
    assert verdict([A, B, OPEN, only({"source": {"selector": "app == 'a'"}})])
    assert not verdict([A, B, OPEN, only({"source": {"selector": "app == 'c'"}})])
    assert not verdict([A, B, OPEN, only({"source": {"notSelector": "app == 'a'"}})])
    assert verdict([A, B, OPEN, only({"source": {"notSelector": "app == 'c'"}})])


def test_selector_vs_not_selector_for_outside_addresses():
    # §1: `selector: "!has(a)"` matches only Calico endpoints; `notSelector: "has(a)"` also
    # matches non-Calico addresses.
    out = tcp(src="192.0.2.9")
    assert not verdict([B, OPEN, only({"source": {"selector": "!has(app)"}})], out)
    assert verdict([B, OPEN, only({"source": {"notSelector": "has(app)"}})], out)


def test_selector_matches_network_sets():
    gns = {"kind": "GlobalNetworkSet", "metadata": {"name": "ext", "labels": {"role": "ext"}}, "spec": {"nets": ["192.0.2.0/24"]}}
    assert verdict([B, OPEN, gns, only({"source": {"selector": "role == 'ext'"}})], tcp(src="192.0.2.9"))
    assert not verdict([B, OPEN, gns, only({"source": {"selector": "role == 'ext'"}})], tcp(src="198.51.100.9"))
    # A NetworkSet carries its namespace label.
    ns = {"kind": "NetworkSet", "metadata": {"name": "ext", "namespace": "prod", "labels": {"role": "ext"}}, "spec": {"nets": ["192.0.2.0/24"]}}
    rule = {"source": {"selector": "projectcalico.org/namespace == 'prod'"}}
    assert verdict([B, OPEN, ns, only(rule)], tcp(src="192.0.2.9"))


def test_network_policy_selects_only_its_namespace():
    b_prod = wep("b", "10.0.0.2", {"app": "b"}, ns="prod")
    deny = np("p", {"selector": "app == 'b'", "ingress": [DENY]}, ns="other")
    assert verdict([A, b_prod, OPEN, deny], tcp(dst="prod/b"))
    assert not verdict([A, b_prod, OPEN, np("p", {"selector": "app == 'b'", "ingress": [DENY]}, ns="prod")], tcp(dst="prod/b"))


def test_network_policy_rule_selector_scoped_to_its_namespace():
    # a is in default; the NP in prod allows from app == 'a': only prod's a would match.
    b_prod = wep("b", "10.0.0.2", {"app": "b"}, ns="prod")
    pol = np("p", {"selector": "app == 'b'", "ingress": [{"action": "Allow", "source": {"selector": "app == 'a'"}}]}, ns="prod")
    assert not verdict([A, b_prod, OPEN, pol], tcp(dst="prod/b"))
    a_prod = wep("a", "10.0.0.1", {"app": "a"}, ns="prod")
    assert verdict([a_prod, b_prod, OPEN, pol], tcp(src="prod/a", dst="prod/b"))


def test_network_policy_not_selector_alone_is_scoped():
    # §2: the namespace part is added even when only notSelector is given: an outside address
    # (no namespace) does not match, a same-namespace endpoint does.
    b_prod = wep("b", "10.0.0.2", {"app": "b"}, ns="prod")
    pol = np("p", {"selector": "app == 'b'", "ingress": [{"action": "Allow", "source": {"notSelector": "app == 'x'"}}]}, ns="prod")
    assert not verdict([b_prod, OPEN, pol], tcp(src="192.0.2.1", dst="prod/b"))
    assert not verdict([A, b_prod, OPEN, pol], tcp(dst="prod/b"))
    a_prod = wep("a", "10.0.0.1", {"app": "a"}, ns="prod")
    assert verdict([a_prod, b_prod, OPEN, pol], tcp(src="prod/a", dst="prod/b"))


def test_namespace_selector_uses_pcns_labels_from_profiles():
    kns = profile("kns.prod", [ALLOW], [ALLOW], {"pcns.team": "blue", "pcns.projectcalico.org/name": "prod"})
    a_prod = wep("a", "10.0.0.1", {"app": "a"}, ns="prod", profiles=["kns.prod"])
    rule = {"source": {"namespaceSelector": "team == 'blue'"}}
    assert verdict([a_prod, B, OPEN, kns, only(rule)], tcp(src="prod/a"))
    assert not verdict([A, B, OPEN, only(rule)])
    # all() means any namespaced endpoint; global() means none (only non-namespaced things).
    assert verdict([A, B, OPEN, only({"source": {"namespaceSelector": "all()"}})])
    assert not verdict([A, B, OPEN, only({"source": {"namespaceSelector": "global()"}})])


def test_gnp_namespace_selector():
    kns = profile("kns.prod", [ALLOW], [ALLOW], {"pcns.team": "blue"})
    b_prod = wep("b", "10.0.0.2", {"app": "b"}, ns="prod", profiles=["kns.prod"])
    deny = gnp("p", {"namespaceSelector": "team == 'blue'", "ingress": [DENY]})
    assert not verdict([A, b_prod, kns, OPEN, deny], tcp(dst="prod/b"))
    assert verdict([A, B, OPEN, deny])


def test_endpoint_labels_merge_profiles_and_stamps():
    w = World(
        [
            wep("a", "10.0.0.1", {"app": "a", "pcns.team": "spoof"}, ns="prod", profiles=["p1", "p2"]),
            profile("p1", labels={"x": "1", "app": "no"}),
            profile("p2", labels={"x": "2", "y": "2"}),
        ]
    )
    labels = w.endpoint_labels(w.endpoints["prod/a"])
    assert labels == {"app": "a", "x": "1", "y": "2", "projectcalico.org/namespace": "prod", "projectcalico.org/orchestrator": "cni"}


def test_profile_labels_are_selectable():
    p1 = profile("open", [ALLOW], [ALLOW], {"net1": ""})
    assert verdict([A, B, p1, only({"source": {"selector": "has(net1)"}})])


def test_ports_numbers_and_ranges():
    assert verdict([A, B, OPEN, only({"protocol": "TCP", "destination": {"ports": [80]}})])
    assert verdict([A, B, OPEN, only({"protocol": "TCP", "destination": {"ports": ["70:90"]}})])
    assert not verdict([A, B, OPEN, only({"protocol": "TCP", "destination": {"ports": ["81:90", 22]}})])
    assert not verdict([A, B, OPEN, only({"protocol": "TCP", "destination": {"notPorts": ["70:90"]}})])
    assert verdict([A, B, OPEN, only({"protocol": "TCP", "source": {"ports": [40000]}})])


def test_named_ports():
    b = wep("b", "10.0.0.2", {"app": "b"}, ports=[{"name": "http", "protocol": "TCP", "port": 80}])
    assert verdict([A, b, OPEN, only({"protocol": "TCP", "destination": {"ports": ["http"]}})])
    assert not verdict([A, b, OPEN, only({"protocol": "TCP", "destination": {"ports": ["http"]}})], tcp(port=81))
    # The named port's protocol must be the packet's.
    assert not verdict([A, b, OPEN, only({"protocol": "UDP", "destination": {"ports": ["http"]}})], Probe("default/a", "default/b", "UDP", dst_port=80))
    # The named port is looked up on endpoints the rule's selector matches.
    assert not verdict([A, b, OPEN, only({"protocol": "TCP", "destination": {"selector": "app == 'x'", "ports": ["http"]}})])
    assert not verdict([A, b, OPEN, only({"protocol": "TCP", "destination": {"notPorts": ["http"]}})])


def test_pass_in_a_profile_goes_to_the_next_profile():
    # §3 step 8: a profile chain returns with only the pass bit set; only accept stops the loop.
    passing = profile("pass", [{"action": "Pass"}, DENY], [ALLOW])
    assert verdict([A, wep("b", "10.0.0.2", profiles=["pass", "open"]), OPEN, passing])
    assert not verdict([A, wep("b", "10.0.0.2", profiles=["pass"]), OPEN, passing])


def test_a_tier_without_its_resource_runs_after_the_existing_ones():
    # §2 "Ordering": valid tiers (Tier resource exists) first, whatever the orders.
    allow = gnp("t.a", {"tier": "t", "ingress": [ALLOW]})
    deny = gnp("late.d", {"tier": "late", "ingress": [DENY]})
    assert verdict([A, B, OPEN, tier("t", 5), allow, deny])
    assert not verdict([A, B, OPEN, tier("late", 5), allow, deny])


# --- review findings (issue 18 foundations) -----------------------------------------------------


def test_do_not_track_and_pre_dnat_policies_never_apply_to_workloads():
    # event_sequencer.go tierInfoToProtoTierInfo: they go to host-endpoint-only tiers, so no
    # deny and no end-of-tier drop for b; the profile allows.
    assert verdict([A, B, OPEN, gnp("p", {"doNotTrack": True, "ingress": [DENY]})])
    assert verdict([A, B, OPEN, gnp("p", {"preDNAT": True, "ingress": [DENY]})])
    # The same policy, tracked, denies.
    assert not verdict([A, B, OPEN, gnp("p", {"ingress": [DENY]})])


def test_ties_broken_by_stored_names():
    # Equal order in the default tier: NP de/x is keyed `de/default.x`, GNP b is `default.b`;
    # "de/" < "def" so the NP runs first (user names would put "b" before "de/x").
    b_de = wep("b", "10.0.0.2", {"app": "b"}, ns="de")
    allow, deny = np("x", {"order": 5, "ingress": [ALLOW]}, ns="de"), gnp("b", {"order": 5, "ingress": [DENY]})
    v = evaluate(TIERS + [A, b_de, OPEN, allow, deny], tcp(dst="de/b"))
    assert v.allowed and v.decisions[-1].by == "tier default NetworkPolicy de/default.x ingress rule 0 Allow"
    # A record already stored (name `default.x`, user name in the annotation) reads the same.
    stored = np("default.x", {"order": 5, "ingress": [ALLOW]}, ns="de")
    stored["metadata"]["annotations"] = {"projectcalico.org/metadata": '{"name":"x"}'}
    assert verdict([A, b_de, OPEN, stored, deny], tcp(dst="de/b"))


def test_tier_comes_from_the_stored_name_and_a_mismatch_is_refused():
    t = tier("t", 10)
    assert not verdict([A, B, OPEN, t, gnp("t.d", {"tier": "t", "ingress": [DENY]})])
    for bad in (gnp("t.d", {"ingress": [DENY]}), gnp("d", {"tier": "t", "ingress": [DENY]}), gnp("u.d", {"tier": "t", "ingress": [DENY]})):
        with pytest.raises(ValueError, match="disagree"):
            World(TIERS + [A, B, OPEN, t, bad])
    # A Kubernetes policy's formatted name is in the default tier.
    assert not verdict([A, B, OPEN, np("knp.default.k", {"tier": "default", "ingress": [DENY]})])


def test_gnp_namespace_selector_combination_is_literal():
    # Empty selector: only the prefixed namespaceSelector, no has(projectcalico.org/namespace)
    # added, so something without a namespace label is selected by `!has(team)`.
    w = World(TIERS)
    assert w._selects(gnp("p", {"namespaceSelector": "!has(team)"}), {"x": "1"})
    # The text all() of the selector is replaced, even inside a string literal.
    odd = wep("b", "10.0.0.2", {"note": "all()"})
    sel = {"selector": "note == 'all()'", "ingress": [DENY]}
    assert not verdict([A, odd, OPEN, gnp("p", sel)])
    assert verdict([A, odd, OPEN, gnp("p", {**sel, "namespaceSelector": "all()"})])


def test_orchestrator_label_always_set():
    bare = wep("a", "10.0.0.1", {"projectcalico.org/orchestrator": "spoof"})
    del bare["spec"]["orchestrator"]
    w = World([bare])
    assert w.endpoint_labels(w.endpoints["default/a"])["projectcalico.org/orchestrator"] == ""
    # Selectable with its empty value.
    assert verdict([bare, B, OPEN, only({"source": {"selector": "projectcalico.org/orchestrator == ''"}})])


def test_endpoint_without_ip_networks_is_dropped():
    # workloadendpointprocessor.go: the syncer drops it: no endpoint, nothing to select.
    a = wep("a", "10.0.0.1", {"app": "a"})
    a["spec"]["ipNetworks"] = []
    w = World(TIERS + [a, B, OPEN])
    assert "default/a" not in w.endpoints and [e.labels.get("app") for e in w.entities] == ["b"]
    # The oracle's choice: a probe from or to it is refused, not judged.
    with pytest.raises(ValueError, match="no ipNetworks"):
        w.evaluate(tcp())
    with pytest.raises(ValueError, match="no ipNetworks"):
        w.evaluate(tcp(src="default/b", dst="default/a"))
