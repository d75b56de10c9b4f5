"""node.nft_policy (pure): the text of the policy section for views built from records as calicoctl
stores them: chain order, tiers, Pass, the end-of-tier drop, profiles (missing ones), families,
named ports, shared selector sets, a hostile policy failing closed, deterministic text, and the
memos giving the same text as a fresh compile. The kernel accepting the text and traffic obeying it
are tested in tests/namespaces/test_nft_policy.py."""

from __future__ import annotations

import dataclasses

from calico_cni.node.nft_policy import (
    ACCEPT_MARK,
    MAX_RULES,
    PolicyCompiler,
    PolicySettings,
    endpoint_chains,
    named_port_set,
    policy_chain,
    profile_chain,
    selector_set,
)
from calico_cni.node.nft_tables import Section, Table, body
from calico_cni.node.policy_model import EGRESS, INGRESS, Rule
from calico_cni.node.policy_view import PolicyView
from tests.policy_support import KV, stored, wep

ME = "node1"
TIERS = [stored("Tier", "default", {}), stored("Tier", "security", {"order": 100}), stored("Tier", "platform", {"order": 50, "defaultAction": "Pass"})]


def view(*records) -> PolicyView:
    return PolicyView.read(dict(records))


def compile_(*records, family: int = 4, settings: PolicySettings = PolicySettings()) -> tuple[Section, list[str]]:
    compiler = PolicyCompiler()
    return compiler.section(view(*records), ME, family, settings), compiler.problems


def chain(section: Section, name: str) -> tuple[str, ...]:
    (found,) = [c for c in section.chains if c.name == name]
    return found.rules


def jumps(rules: tuple[str, ...]) -> list[str]:
    return [r.split()[-1] for r in rules if " jump " in f" {r}"]


def gnp(name: str, spec: dict):
    return stored("GlobalNetworkPolicy", name, spec)


ALLOW_ALL = {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}


def test_base_chains_dispatch_only_local_endpoints_and_end_in_drop():
    s, problems = compile_(*TIERS, wep("a"), wep("b", node="node2", interfaceName="calib", ipNetworks=["10.0.0.2/32"]))
    assert problems == []
    names = [c.name for c in s.chains]
    assert names[:6] == ["policy-forward", "policy-input", "policy-antispoof", "wl-to-host", "from-wl-dispatch", "to-wl-dispatch"]
    assert {m.name: m.elements for m in s.maps} == {"from-wl": (('"calia"', "goto fw-calia"),), "to-wl": (('"calia"', "goto tw-calia"),)}
    assert chain(s, "from-wl-dispatch")[-1] == "counter drop" and chain(s, "to-wl-dispatch")[-1] == "counter drop"
    assert chain(s, "policy-antispoof") == ('iifname "cali*" fib saddr . iif oif missing counter drop',)
    # No policy and no profile: the endpoint drops everything but its own bookkeeping.
    assert chain(s, "tw-calia")[-1] == "counter drop" and not jumps(chain(s, "tw-calia"))
    assert chain(s, "fw-calia")[1:3] == ("udp dport 4789 counter drop", "meta l4proto 4 counter drop")
    assert endpoint_chains("calia") == ("tw-calia", "fw-calia")


def test_tiers_in_order_policies_in_order_and_end_of_tier_drop_unless_pass():
    s, _ = compile_(
        *TIERS,
        gnp("security.late", {"tier": "security", "order": 20, **ALLOW_ALL}),
        gnp("security.early", {"tier": "security", "order": 10, **ALLOW_ALL}),
        gnp("platform.p", {"tier": "platform", **ALLOW_ALL}),
        gnp("d", ALLOW_ALL),
        wep("a", profiles=["kns.prod"]),
        stored("Profile", "kns.prod", ALLOW_ALL),
    )
    tw = chain(s, "tw-calia")
    assert jumps(tw) == ["pi-platform.p", "pi-security.early", "pi-security.late", "pi-default.d", "pri-kns.prod"]
    drop_after_tier = [i for i, r in enumerate(tw) if r == "meta mark & 0x00020000 == 0x00000000 counter drop"]
    # security and default have an end-of-tier drop, platform (defaultAction Pass) has none.
    assert len(drop_after_tier) == 2
    assert tw.index("jump pri-kns.prod") > drop_after_tier[-1]
    assert tw.count("meta mark set meta mark & 0xfffdffff") == 3  # PASS cleared at each tier's start
    assert chain(s, "pi-default.d") == (f"counter meta mark set meta mark | 0x{ACCEPT_MARK:08x} return",)


def test_actions_and_log_prefix():
    rules = [{"action": "Log"}, {"action": "Pass"}, {"action": "Deny"}, {"action": "Allow"}]
    s, _ = compile_(*TIERS, gnp("p", {"ingress": rules, "types": ["Ingress"]}), wep("a"))
    assert chain(s, "pi-default.p") == (
        'counter log prefix "calico-packet: "',
        "counter meta mark set meta mark | 0x00020000 return",
        "counter drop",
        "counter meta mark set meta mark | 0x00010000 return",
    )
    assert "po-default.p" not in [c.name for c in s.chains]  # Ingress only: no egress chain


def test_missing_profile_drops_at_its_place_and_profiles_keep_their_order():
    s, _ = compile_(*TIERS, stored("Profile", "one", ALLOW_ALL), stored("Profile", "three", ALLOW_ALL), wep("a", profiles=["one", "two", "three"]))
    tw = chain(s, "tw-calia")
    i_one, i_three = tw.index("jump pri-one"), tw.index("jump pri-three")
    assert i_one < i_three and "counter drop" in tw[i_one:i_three]


def test_families_ip_version_and_other_family_nets_skip_rules():
    rules = [
        {"action": "Allow", "ipVersion": 6},
        {"action": "Deny", "source": {"nets": ["fd00:198:18::/48"]}},
        {"action": "Log", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
        {"action": "Deny", "protocol": "ICMPv6", "notICMP": {"type": 128}},
        {"action": "Deny", "source": {"notNets": ["198.18.0.0/16", "198.18.5.0/24"]}, "destination": {"nets": ["198.19.0.0/16"]}},
    ]
    records = (*TIERS, gnp("p", {"ingress": rules, "types": ["Ingress"]}), wep("a", ipNetworks=["198.18.0.1/32", "fd00:198:18::1/128"]))
    v4, _ = compile_(*records, family=4)
    v6, _ = compile_(*records, family=6)
    assert chain(v4, "pi-default.p") == (
        'meta l4proto 1 icmp type 8 icmp code 0 counter log prefix "calico-packet: "',
        "ip saddr != 198.18.0.0/16 ip daddr 198.19.0.0/16 counter drop",
    )
    assert chain(v6, "pi-default.p") == (
        "counter meta mark set meta mark | 0x00010000 return",
        "ip6 saddr fd00:198:18::/48 counter drop",
        "meta l4proto 58 icmpv6 type != 128 counter drop",
    )
    assert "icmpv6 type { 130, 131, 132, 133, 135, 136 } accept" in chain(v6, "wl-to-host")


def test_protocols_ports_and_not_icmp_with_a_code():
    rules = [
        {
            "action": "Allow",
            "protocol": "TCP",
            "notProtocol": "UDP",
            "source": {"ports": ["1000:2000", 1500], "notPorts": [3]},
            "destination": {"ports": [80, 443]},
        },
        {"action": "Deny", "protocol": "ICMP", "notICMP": {"type": 3, "code": 1}},
        {"action": "Deny", "protocol": 99},
    ]
    s, _ = compile_(*TIERS, gnp("p", {"ingress": rules, "types": ["Ingress"]}), wep("a"))
    assert chain(s, "pi-default.p") == (
        "meta l4proto 6 meta l4proto != 17 th sport 1000-2000 th sport != 3 th dport { 80, 443 } counter meta mark set meta mark | 0x00010000 return",
        "meta l4proto 1 icmp type . icmp code != { 3 . 1 } counter drop",
        "meta l4proto 99 counter drop",
    )


def test_selector_sets_cluster_wide_shared_and_scoped_by_namespace():
    same = {"action": "Allow", "source": {"selector": "role == 'db'"}}
    s, _ = compile_(
        *TIERS,
        gnp("p1", {"ingress": [same], "types": ["Ingress"]}),
        gnp("p2", {"ingress": [same], "types": ["Ingress"]}),
        stored("NetworkPolicy", "np", {"ingress": [same], "types": ["Ingress"]}, "prod"),
        stored("GlobalNetworkSet", "office", {"nets": ["198.51.100.0/24"]}, labels={"role": "db"}),
        wep("a"),
        wep("db1", labels={"role": "db"}, node="node2", interfaceName="calidb1", ipNetworks=["10.0.0.2/32"]),
        wep("db2", namespace="other", labels={"role": "db"}, node="node3", interfaceName="calidb2", ipNetworks=["10.0.0.3/32"]),
    )
    global_set, prod_set = selector_set(("", "", "role == 'db'")), selector_set(("own", "prod", "role == 'db'"))
    assert chain(s, "pi-default.p1") == chain(s, "pi-default.p2") == (f"ip saddr @{global_set} counter meta mark set meta mark | 0x00010000 return",)
    assert chain(s, "pi-prod/default.np") == (f"ip saddr @{prod_set} counter meta mark set meta mark | 0x00010000 return",)
    sets = {x.name: x.elements for x in s.sets}
    assert sets == {global_set: ("10.0.0.2/31", "198.51.100.0/24"), prod_set: ("10.0.0.2/32",)}  # addresses merged


def test_unused_policies_get_no_chains_and_empty_sets_match_nothing():
    s, _ = compile_(
        *TIERS,
        gnp("used", {"ingress": [{"action": "Allow", "source": {"selector": "nobody == 'x'"}}], "types": ["Ingress"]}),
        gnp("unused", {"selector": "app == 'none'", "ingress": [{"action": "Allow", "source": {"selector": "other == 'y'"}}]}),
        wep("a"),
    )
    names = [c.name for c in s.chains]
    assert "pi-default.used" in names and "pi-default.unused" not in names
    assert [(x.name, x.elements) for x in s.sets] == [(selector_set(("", "", "nobody == 'x'")), ())]


def test_named_ports_resolve_against_the_selected_endpoints_and_mixed_lists_use_scratch():
    rules = [
        {"action": "Allow", "protocol": "TCP", "destination": {"selector": "app == 'web'", "ports": ["http"]}},
        {"action": "Log", "protocol": "TCP", "destination": {"ports": [22, "http"]}},
        {"action": "Deny", "protocol": "TCP", "source": {"notPorts": ["http", 9]}},
    ]
    port = [{"name": "http", "protocol": "TCP", "port": 8080}]
    s, _ = compile_(
        *TIERS,
        gnp("p", {"egress": rules, "types": ["Egress"]}),
        wep("a"),
        wep("web", labels={"app": "web"}, node="node2", ports=port, ipNetworks=["10.0.0.2/32"]),
        wep("other", node="node2", ports=[{"name": "http", "protocol": "UDP", "port": 53}], ipNetworks=["10.0.0.3/32"]),
    )
    web, every = named_port_set(("", "", "app == 'web'"), ("http",)), named_port_set(None, ("http",))
    web_sel = selector_set(("", "", "app == 'web'"))
    assert chain(s, "po-default.p") == (
        f"meta l4proto 6 ip daddr @{web_sel} ip daddr . meta l4proto . th dport @{web} counter meta mark set meta mark | 0x00010000 return",
        "meta mark set meta mark | 0x00080000",
        f"th dport != 22 ip daddr . meta l4proto . th dport != @{every} meta mark set meta mark & 0xfff7ffff",
        'meta mark & 0x00080000 == 0x00080000 meta l4proto 6 counter log prefix "calico-packet: "',
        f"meta l4proto 6 th sport != 9 ip saddr . meta l4proto . th sport != @{every} counter drop",
    )
    sets = {x.name: (x.type, x.elements) for x in s.sets}
    assert sets[web] == ("ipv4_addr . inet_proto . inet_service", ("10.0.0.2/32 . 6 . 8080",))
    assert sets[every] == ("ipv4_addr . inet_proto . inet_service", ("10.0.0.2/32 . 6 . 8080", "10.0.0.3/32 . 17 . 53"))


def test_a_policy_that_cannot_be_rendered_drops_where_it_applies_and_is_named():
    s0, _ = compile_(
        *TIERS, gnp("deny", {"ingress": [{"action": "Deny"}], "types": ["Ingress"]}), wep("a", profiles=["open"]), stored("Profile", "open", ALLOW_ALL)
    )
    v = view(*TIERS, gnp("deny", {"ingress": [{"action": "Deny"}], "types": ["Ingress"]}), wep("a", profiles=["open"]), stored("Profile", "open", ALLOW_ALL))
    (policy,) = v.policies
    hostile = dataclasses.replace(policy, ingress=(Rule("Deny"),) * (MAX_RULES + 1))
    compiler = PolicyCompiler()
    s = compiler.section(dataclasses.replace(v, policies=(hostile,)), ME, 4, PolicySettings())
    assert len(compiler.problems) == 1 and "GlobalNetworkPolicy(default.deny)" in compiler.problems[0] and str(MAX_RULES) in compiler.problems[0]
    assert "pi-default.deny" not in [c.name for c in s.chains]
    tw = chain(s, "tw-calia")
    # At the policy's place: drop (unless passed), never on to the profile that would allow.
    assert tw[2] == "meta mark & 0x00020000 == 0x00000000 counter drop" and "pi-default.deny" in jumps(chain(s0, "tw-calia"))
    broken = dataclasses.replace(policy, ingress=(Rule("Reject"),))
    s = compiler.section(dataclasses.replace(v, policies=(broken,)), ME, 4, PolicySettings())
    assert "unknown action" in compiler.problems[0] and chain(s, "tw-calia")[2].endswith("counter drop")


def test_hostile_names_and_interfaces():
    long_name = "x" * 200
    v = view(
        *TIERS,
        gnp(long_name, ALLOW_ALL),
        wep("a"),
        wep("b", interfaceName="calib", ipNetworks=["10.0.0.2/32"]),
        wep("c", interfaceName="calib", ipNetworks=["10.0.0.3/32"]),
    )
    # calicoctl's validation keeps such an interface name out of the view; the compiler does not rely on it.
    endpoints = {
        k: dataclasses.replace(e, interface_name='cali"x') if e.name.endswith("-a") or e.interface_name == "calia" else e for k, e in v.endpoints.items()
    }
    compiler = PolicyCompiler()
    s = compiler.section(dataclasses.replace(v, endpoints=endpoints), ME, 4, PolicySettings())
    problems = compiler.problems
    assert any('cali"x' in p and "dropped" in p for p in problems) and any("calib" in p and "2 endpoints" in p for p in problems)
    assert [k for m in s.maps for k, _ in m.elements] == ['"calib"', '"calib"']
    assert chain(s, "tw-calib") == ("counter drop",) and chain(s, "fw-calib") == ("counter drop",)
    names = [c.name for c in s.chains] + [x.name for x in s.sets]
    assert all(len(n) <= 64 for n in names)
    assert len(policy_chain(v.policies[0], INGRESS)) == 64 and "_" in policy_chain(v.policies[0], EGRESS)
    assert policy_chain(v.policies[0], INGRESS) in [c.name for c in compile_(*TIERS, gnp(long_name, ALLOW_ALL), wep("a"))[0].chains]
    assert profile_chain("kns.prod", INGRESS) == "pri-kns.prod" and profile_chain("Upper", EGRESS).startswith("pro-upper_")


def test_endpoint_to_host_action():
    assert chain(compile_(*TIERS, wep("a"))[0], "wl-to-host")[-1] == "counter drop"
    assert chain(compile_(*TIERS, wep("a"), settings=PolicySettings("Accept"))[0], "wl-to-host")[-1] == "accept"
    assert chain(compile_(*TIERS, wep("a"), settings=PolicySettings("Return", 8472))[0], "fw-calia")[1] == "udp dport 8472 counter drop"
    s, problems = compile_(*TIERS, wep("a"), settings=PolicySettings("Maybe"))
    assert chain(s, "wl-to-host")[-1] == "counter drop" and "Maybe" in problems[0]


RICH = (
    *TIERS,
    gnp("platform.p", {"tier": "platform", "ingress": [{"action": "Pass", "source": {"namespaceSelector": "team == 'a'"}}]}),
    stored(
        "NetworkPolicy",
        "np",
        {"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http", 80]}}], "egress": [{"action": "Allow"}]},
        "prod",
    ),
    stored("Profile", "kns.prod", ALLOW_ALL),
    gnp("db", {"ingress": [{"action": "Allow", "source": {"selector": "role == 'db'"}}]}),
    *(
        wep(
            f"w{i}",
            labels={"role": "db"} if i % 4 == 2 else {},
            profiles=["kns.prod"],
            node=ME if i % 2 else "node2",
            ipNetworks=[f"10.0.{i}.1/32"],
            interfaceName=f"caliw{i}",
        )
        for i in range(8)
    ),
)


def test_deterministic_and_memos_agree_with_a_fresh_compile():
    first = [body(Table("ip", (compile_(*RICH)[0],))) for _ in range(2)]
    assert first[0] == first[1]
    assert body(Table("ip", (compile_(*reversed(RICH))[0],))) == first[0]
    items, memo = dict(RICH), {}
    compiler = PolicyCompiler()
    compiler.section(PolicyView.read(items, memo), ME, 4)
    compiler.section(PolicyView.read(items, memo), ME, 6)
    # A remote endpoint changes labels and address, a local one is added, the profile changes.
    key, record = wep("w2", labels={"team": "x"}, profiles=["kns.prod"], node="node2", ipNetworks=["10.9.9.9/32"], interfaceName="caliw2")
    items[key] = KV(record.value, 50)
    new_key, new = wep(
        "new", profiles=["kns.prod"], ports=[{"name": "http", "protocol": "TCP", "port": 8080}], ipNetworks=["10.8.0.1/32"], interfaceName="calinew"
    )
    items[new_key] = KV(new.value, 51)
    for family in (4, 6):
        assert compiler.section(PolicyView.read(items, memo), ME, family) == PolicyCompiler().section(PolicyView.read(items), ME, family)
    # Policies change: one now selects other endpoints, one is added, then a tier's order changes.
    steps = [
        stored("NetworkPolicy", "np", {"selector": "app == 'none'", "ingress": [{"action": "Deny"}]}, "prod"),
        stored("GlobalNetworkPolicy", "added", {"selector": "has(projectcalico.org/namespace)", "egress": [{"action": "Deny"}]}),
        stored("NetworkPolicy", "np", {"ingress": [{"action": "Allow", "source": {"selector": "x == 'y'"}}]}, "prod"),
        stored("Tier", "platform", {"order": 500, "defaultAction": "Pass"}),
    ]
    for revision, (key, record) in enumerate(steps, start=60):
        items[key] = KV(record.value, revision)
        for family in (4, 6):
            assert compiler.section(PolicyView.read(items, memo), ME, family) == PolicyCompiler().section(PolicyView.read(items), ME, family)
    del items[steps[1][0]]
    for family in (4, 6):
        assert compiler.section(PolicyView.read(items, memo), ME, family) == PolicyCompiler().section(PolicyView.read(items), ME, family)
    pkey, profile = stored("Profile", "kns.prod", {"labelsToApply": {"pcns.team": "a"}, **ALLOW_ALL})
    items[pkey] = KV(profile.value, 52)
    del items[new_key]
    for family in (4, 6):
        assert compiler.section(PolicyView.read(items, memo), ME, family) == PolicyCompiler().section(PolicyView.read(items), ME, family)


def test_service_account_rules_match_through_a_set_and_service_rules_render_nothing():
    """A rule on serviceAccounts matches the addresses of endpoints with that service account (a
    selector set, here holding b only), never everyone; a rule on Kubernetes Services renders no
    rule at all (it matches nothing, as in Calico without Services)."""
    sa_rule = {"action": "Allow", "source": {"serviceAccounts": {"names": ["api"]}}}
    svc_rule = {"action": "Allow", "source": {"services": {"name": "api", "namespace": "prod"}}}
    policy = gnp("sa", {"selector": "app == 'web'", "ingress": [sa_rule, svc_rule]})
    a = wep("a", labels={"app": "web"})
    b = wep("b", node="node2", interfaceName="calib", ipNetworks=["10.0.0.2/32"], serviceAccountName="api")
    s, problems = compile_(*TIERS, policy, a, b)
    assert problems == []
    (rules,) = [c.rules for c in s.chains if c.name.startswith("pi-")]
    assert len(rules) == 1 and "ip saddr @sel-" in rules[0] and rules[0].endswith("return")
    members = {x.name: x.elements for x in s.sets if x.name.startswith("sel-")}
    assert list(members.values()) == [("10.0.0.2/32",)]
