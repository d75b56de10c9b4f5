"""Each rule field and each evaluation rule of Calico's policy, with real traffic between pods of one
node enforcing policy (tests/policy_harness.py): TCP, UDP and ICMP, IPv4 and IPv6 where the field
applies.

Three pods `a`, `b` and `c` (labels app=a, app=b, app=c; plain-CNI endpoints of the network
`net1`, whose profile lets pods of the network reach each other) serve the whole module; most
policies select `b` and tests probe a -> b and c -> b. Each test's policies are deleted at its end
and the next test starts once their chains left the kernel. Tests that change an endpoint (its
labels, ports, profiles) make pods of their own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

from calico_cni.node.policy_model import INGRESS

from tests import netns
from tests.cluster_support import in_ns
from tests.policy_harness import NETWORK, Pod, PolicyNode, Scope, document, expect, ping, tcp, udp, wait_enforced
from tests.policy_harness import probe as P


@dataclass
class Trio:
    a: Pod
    b: Pod
    c: Pod


@pytest.fixture(scope="module")
def trio(policy: PolicyNode):
    """The module's three pods (removed at its end)."""
    scope = Scope(policy)
    try:
        yield Trio(*(scope.pod({"app": name}) for name in "abc"))
    finally:
        scope.close()


def ingress_policy(pn: Scope, name: str, rules: list[dict], selector: str = "app == 'b'", **spec) -> dict:
    """A GlobalNetworkPolicy of ingress rules selecting `selector` (b by default)."""
    return pn.policy(name, {"selector": selector, "types": ["Ingress"], "ingress": rules, **spec})


def egress_policy(pn: Scope, name: str, rules: list[dict], selector: str = "app == 'a'", **spec) -> dict:
    return pn.policy(name, {"selector": selector, "types": ["Egress"], "egress": rules, **spec})


ALLOW = {"action": "Allow"}
DENY = {"action": "Deny"}


def test_baseline_pods_of_one_network_reach_each_other(pn, trio):
    """No policy: the network's profile lets its pods reach each other (all protocols, both families)."""
    a, b = trio.a, trio.b
    for v6 in (False, True):
        assert tcp(a, b, 80, v6), f"TCP a -> b (v6={v6})"
        assert udp(a, b, 53, v6), f"UDP a -> b (v6={v6})"
        assert ping(a, b, v6), f"ping a -> b (v6={v6})"


def test_allow_and_deny(pn, trio):
    """Deny TCP 443, then Allow: 443 dropped for every source and family, the rest allowed."""
    a, b, c = trio.a, trio.b, trio.c
    ingress_policy(pn, "deny-443", [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [443]}}, ALLOW])
    wait_enforced(lambda: tcp(a, b, 443), False, "TCP a -> b:443 under Deny")
    before = b.server.seen("tcp", 443)
    expect(
        allowed=[P(tcp, a, b, 80), P(tcp, a, b, 80, v6=True), P(udp, a, b, 53), P(udp, a, b, 53, v6=True), P(ping, a, b), P(ping, a, b, v6=True)],
        denied=[P(tcp, a, b, 443, v6=True), P(tcp, c, b, 443), P(tcp, c, b, 443, v6=True)],
    )
    # The server never saw a connection to 443 while the policy was in place.
    assert b.server.seen("tcp", 443) == before


def test_protocol_by_name_and_number(pn, trio):
    a, b = trio.a, trio.b
    ingress_policy(pn, "proto", [{"action": "Allow", "protocol": "UDP"}])
    wait_enforced(lambda: tcp(a, b, 80), False, "TCP under Allow UDP only")
    expect(allowed=[P(udp, a, b, 53), P(udp, a, b, 53, v6=True)], denied=[P(ping, a, b), P(ping, a, b, v6=True), P(tcp, a, b, 80, v6=True)])
    # By number: 6 is TCP.
    ingress_policy(pn, "proto", [{"action": "Allow", "protocol": 6}])
    wait_enforced(lambda: tcp(a, b, 80), True, "TCP under Allow protocol 6")
    expect(allowed=[P(tcp, a, b, 80, v6=True)], denied=[P(udp, a, b, 53), P(udp, a, b, 53, v6=True)])
    # notProtocol: everything but TCP.
    ingress_policy(pn, "proto", [{"action": "Allow", "notProtocol": "TCP"}])
    wait_enforced(lambda: tcp(a, b, 80), False, "TCP under Allow notProtocol TCP")
    for v6 in (False, True):
        assert udp(a, b, 53, v6) and ping(a, b, v6)
    # notProtocol by number: everything but UDP (17).
    ingress_policy(pn, "proto", [{"action": "Allow", "notProtocol": 17}])
    wait_enforced(lambda: udp(a, b, 53), False, "UDP under Allow notProtocol 17")
    assert tcp(a, b, 80) and tcp(a, b, 80, v6=True)


def test_icmp_type_and_not_icmp(pn, trio):
    a, b = trio.a, trio.b
    ingress_policy(pn, "icmp", [{"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}}])
    wait_enforced(lambda: ping(a, b), True, "ping under Allow ICMP type 8")
    wait_enforced(lambda: tcp(a, b, 80), False, "TCP under Allow ICMP only", hold=0)
    expect(denied=[P(ping, a, b, v6=True)])  # ICMP (v4) must not allow ICMPv6
    ingress_policy(pn, "icmp", [{"action": "Allow", "protocol": "ICMPv6", "icmp": {"type": 128}}])
    wait_enforced(lambda: ping(a, b, v6=True), True, "ping6 under Allow ICMPv6 type 128")
    assert not ping(a, b)
    ingress_policy(pn, "icmp", [{"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}}])
    wait_enforced(lambda: ping(a, b), False, "ping under Allow ICMP notICMP type 8")
    # A type the echo request is not: allowed (the rule still matches other ICMP).
    ingress_policy(pn, "icmp", [{"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 13}}])
    wait_enforced(lambda: ping(a, b), True, "ping under Allow ICMP notICMP type 13")
    # notICMP with a code: only type and code together exclude (an echo request has code 0).
    ingress_policy(pn, "icmp", [{"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8, "code": 0}}])
    wait_enforced(lambda: ping(a, b), False, "ping under Allow ICMP notICMP type 8 code 0")
    ingress_policy(pn, "icmp", [{"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8, "code": 1}}])
    wait_enforced(lambda: ping(a, b), True, "ping under Allow ICMP notICMP type 8 code 1")
    ingress_policy(pn, "icmp", [{"action": "Allow", "protocol": "ICMPv6", "notICMP": {"type": 128, "code": 0}}])
    wait_enforced(lambda: ping(a, b, v6=True), False, "ping6 under Allow ICMPv6 notICMP type 128 code 0")


def test_ip_version(pn, trio):
    a, b = trio.a, trio.b
    ingress_policy(pn, "ipv", [{"action": "Allow", "ipVersion": 6}])
    wait_enforced(lambda: tcp(a, b, 80), False, "IPv4 TCP under Allow ipVersion 6")
    expect(allowed=[P(tcp, a, b, 80, v6=True), P(udp, a, b, 53, v6=True), P(ping, a, b, v6=True)], denied=[P(udp, a, b, 53), P(ping, a, b)])
    ingress_policy(pn, "ipv", [{"action": "Allow", "ipVersion": 4}])
    wait_enforced(lambda: tcp(a, b, 80, v6=True), False, "IPv6 TCP under Allow ipVersion 4")
    assert tcp(a, b, 80) and ping(a, b)


def test_nets_and_not_nets(pn, trio):
    a, b, c = trio.a, trio.b, trio.c
    # One family per rule (calicoctl refuses both in one rule, as Calico does).
    ingress_policy(pn, "nets", [{"action": "Allow", "source": {"nets": [f"{a.v4}/32"]}}, {"action": "Allow", "source": {"nets": [f"{a.v6}/128"]}}])
    wait_enforced(lambda: tcp(c, b, 80), False, "c -> b under Allow source nets a")
    expect(
        allowed=[P(f, a, b, *port, v6=v6) for f, port in ((tcp, (80,)), (udp, (53,)), (ping, ())) for v6 in (False, True)], denied=[P(tcp, c, b, 80, v6=True)]
    )
    ingress_policy(pn, "nets", [{"action": "Allow", "source": {"notNets": [f"{a.v4}/32"]}}, {"action": "Allow", "source": {"notNets": [f"{a.v6}/128"]}}])
    wait_enforced(lambda: tcp(a, b, 80), False, "a -> b under Allow source notNets a")
    expect(allowed=[P(tcp, c, b, 80), P(tcp, c, b, 80, v6=True)], denied=[P(tcp, a, b, 80, v6=True)])
    # Destination nets on a's egress.
    pn.delete("GlobalNetworkPolicy", "nets")
    egress_policy(pn, "dnets", [{"action": "Allow", "destination": {"nets": [f"{b.v4}/32"]}}, {"action": "Allow", "destination": {"nets": [f"{b.v6}/128"]}}])
    wait_enforced(lambda: tcp(a, c, 80), False, "a -> c under a's egress Allow destination nets b")
    expect(allowed=[P(tcp, a, b, 80), P(tcp, a, b, 80, v6=True)], denied=[P(tcp, a, c, 80, v6=True)])
    # Destination notNets: everywhere but b.
    egress_policy(
        pn, "dnets", [{"action": "Allow", "destination": {"notNets": [f"{b.v4}/32"]}}, {"action": "Allow", "destination": {"notNets": [f"{b.v6}/128"]}}]
    )
    wait_enforced(lambda: tcp(a, b, 80), False, "a -> b under a's egress Allow destination notNets b")
    expect(allowed=[P(tcp, a, c, 80), P(tcp, a, c, 80, v6=True), P(udp, a, c, 53)], denied=[P(tcp, a, b, 80, v6=True), P(udp, a, b, 53)])


def test_selector_and_not_selector(pn, trio):
    a, b, c = trio.a, trio.b, trio.c
    # The network's profile gives every pod the label net1 (labelsToApply).
    ingress_policy(pn, "sel", [{"action": "Allow", "source": {"selector": f"has({NETWORK}) && app == 'a'"}}])
    wait_enforced(lambda: tcp(c, b, 80), False, "c -> b under Allow source selector app == a")
    for v6 in (False, True):
        assert tcp(a, b, 80, v6) and udp(a, b, 53, v6) and ping(a, b, v6)
    ingress_policy(pn, "sel", [{"action": "Allow", "source": {"notSelector": "app == 'a'"}}])
    wait_enforced(lambda: tcp(a, b, 80), False, "a -> b under Allow source notSelector app == a")
    assert tcp(c, b, 80) and tcp(c, b, 80, v6=True)
    pn.delete("GlobalNetworkPolicy", "sel")
    egress_policy(pn, "dsel", [{"action": "Allow", "destination": {"selector": "app in {'c', 'x'}"}}])
    wait_enforced(lambda: tcp(a, b, 80), False, "a -> b under a's egress Allow destination selector app in {c}")
    expect(allowed=[P(tcp, a, c, 80), P(tcp, a, c, 80, v6=True), P(udp, a, c, 53)])
    # Destination notSelector: every destination but c.
    egress_policy(pn, "dsel", [{"action": "Allow", "destination": {"notSelector": "app == 'c'"}}])
    wait_enforced(lambda: tcp(a, c, 80), False, "a -> c under a's egress Allow destination notSelector app == c")
    expect(allowed=[P(tcp, a, b, 80), P(tcp, a, b, 80, v6=True), P(udp, a, b, 53)], denied=[P(tcp, a, c, 80, v6=True), P(udp, a, c, 53)])


def test_ports_ranges_and_not_ports(pn, trio):
    a, b = trio.a, trio.b
    ingress_policy(pn, "ports", [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["5000:5001", 443]}}])
    wait_enforced(lambda: tcp(a, b, 80), False, "TCP 80 under Allow ports 5000:5001, 443")
    expect(allowed=[P(tcp, a, b, port, v6=v6) for port in (5000, 5001, 443) for v6 in (False, True)], denied=[P(tcp, a, b, 5002), P(tcp, a, b, 5002, v6=True)])
    ingress_policy(pn, "ports", [{"action": "Allow", "protocol": "TCP", "destination": {"notPorts": ["5000:5001", 80]}}])
    wait_enforced(lambda: tcp(a, b, 5000), False, "TCP 5000 under Allow notPorts 5000:5001, 80")
    expect(allowed=[P(tcp, a, b, 5002), P(tcp, a, b, 443, v6=True)], denied=[P(tcp, a, b, 80), P(tcp, a, b, 5001, v6=True)])
    ingress_policy(pn, "ports", [{"action": "Allow", "protocol": "UDP", "destination": {"ports": [5000]}}])
    wait_enforced(lambda: udp(a, b, 5001), False, "UDP 5001 under Allow UDP port 5000")
    expect(allowed=[P(udp, a, b, 5000), P(udp, a, b, 5000, v6=True)], denied=[P(tcp, a, b, 5000)])
    # Source ports: a client bound to a port inside the range is allowed, outside it is not.
    ingress_policy(pn, "ports", [{"action": "Allow", "protocol": "TCP", "source": {"ports": ["40000:40010"]}}])
    wait_enforced(lambda: tcp(a, b, 80), False, "an ephemeral source port under Allow source ports 40000:40010")
    assert tcp(a, b, 80, bind_port=40005)
    assert tcp(a, b, 80, v6=True, bind_port=40006)


def test_named_ports(pn):
    """Named ports come from the destination endpoint's spec.ports (written with calicoctl)."""
    client = pn.pod({"app": "np-client"})
    server = pn.pod({"app": "np-server"})
    other = pn.pod({"app": "np-server"})

    def ports(doc: dict) -> None:
        doc["spec"]["ports"] = [{"name": "web", "protocol": "TCP", "port": 5001}, {"name": "dns", "protocol": "UDP", "port": 53}]

    pn.edit_endpoint(server, ports)
    ingress_policy(
        pn,
        "named",
        [{"action": "Allow", "protocol": "TCP", "destination": {"ports": ["web"]}}, {"action": "Allow", "protocol": "UDP", "destination": {"ports": ["dns"]}}],
        selector="app == 'np-server'",
    )
    wait_enforced(lambda: tcp(client, server, 5000), False, "TCP 5000 under Allow named port web (5001)")
    # An endpoint without the names has no such port: nothing is allowed to it.
    expect(
        allowed=[P(f, client, server, port, v6=v6) for f, port in ((tcp, 5001), (udp, 53)) for v6 in (False, True)],
        denied=[P(udp, client, server, 5000), P(udp, client, server, 5000, v6=True), P(tcp, client, other, 5001), P(udp, client, other, 53)],
    )
    # A port named later (the endpoint changes, not the policy) opens.
    pn.edit_endpoint(other, ports)
    wait_enforced(lambda: tcp(client, other, 5001), True, "the named port web once the endpoint names it")


def test_types_defaulted(pn, trio):
    """No `types`: [Ingress] without egress rules, [Egress] with egress rules only, both with both
    (calicoctl fills them in, as Calico's defaulting does)."""
    a, b, c = trio.a, trio.b, trio.c
    pn.policy("notypes", {"selector": "app == 'b'", "ingress": [{"action": "Allow", "source": {"selector": "app == 'a'"}}]})
    wait_enforced(lambda: tcp(c, b, 80), False, "c -> b under ingress-only policy without types")
    assert tcp(a, b, 80)
    assert tcp(b, c, 80) and tcp(b, c, 80, v6=True), "egress of b is not governed by an ingress-only policy"
    # Egress rules only: the policy governs egress only (calicoctl writes [Egress]).
    pn.policy("notypes", {"selector": "app == 'b'", "egress": [{"action": "Allow", "protocol": "TCP"}]})
    wait_enforced(lambda: udp(b, c, 53), False, "b -> c UDP under an egress-rules-only policy without types")
    assert tcp(b, c, 80) and tcp(b, c, 80, v6=True)
    assert tcp(c, b, 80) and udp(a, b, 53), "ingress of b is not governed by an egress-only policy"
    stored = json.loads(pn.pn.ctl("get", "globalnetworkpolicy", "notypes", "-o", "json").stdout)
    assert stored["spec"]["types"] == ["Egress"]
    # Both kinds of rule: both directions.
    pn.policy("notypes", {"selector": "app == 'b'", "ingress": [{"action": "Allow", "protocol": "UDP"}], "egress": [{"action": "Allow", "protocol": "TCP"}]})
    wait_enforced(lambda: tcp(a, b, 80), False, "a -> b TCP under ingress Allow UDP, egress Allow TCP")
    expect(allowed=[P(udp, a, b, 53), P(tcp, b, c, 80)], denied=[P(udp, b, c, 53)])
    stored = json.loads(pn.pn.ctl("get", "globalnetworkpolicy", "notypes", "-o", "json").stdout)
    assert sorted(stored["spec"]["types"]) == ["Egress", "Ingress"]


def test_policy_order_then_name(pn, trio):
    a, b = trio.a, trio.b
    pn.policy("o-deny", {"selector": "app == 'b'", "order": 10, "types": ["Ingress"], "ingress": [DENY]})
    pn.policy("o-allow", {"selector": "app == 'b'", "order": 20, "types": ["Ingress"], "ingress": [ALLOW]})
    wait_enforced(lambda: tcp(a, b, 80), False, "Deny at order 10 before Allow at 20")
    pn.policy("o-allow", {"selector": "app == 'b'", "order": 5, "types": ["Ingress"], "ingress": [ALLOW]})
    wait_enforced(lambda: tcp(a, b, 80), True, "Allow at order 5 before Deny at 10")
    # Same order: the name decides (default.o-allow < default.o-deny).
    pn.policy("o-allow", {"selector": "app == 'b'", "order": 10, "types": ["Ingress"], "ingress": [ALLOW]})
    pn.policy("o-deny", {"selector": "app == 'b'", "order": 10, "types": ["Ingress"], "ingress": [DENY]})
    wait_enforced(lambda: tcp(a, b, 80), True, "equal orders: o-allow sorts first")
    pn.policy("o-a-deny", {"selector": "app == 'b'", "order": 10, "types": ["Ingress"], "ingress": [DENY]})
    wait_enforced(lambda: tcp(a, b, 80), False, "equal orders: o-a-deny sorts before o-allow")
    # No order sorts after every order.
    pn.policy("o-a-deny", {"selector": "app == 'b'", "types": ["Ingress"], "ingress": [DENY]})
    wait_enforced(lambda: tcp(a, b, 80), True, "a policy without order comes last")


def test_tiers_pass_and_default_action(pn, trio):
    a, b, c = trio.a, trio.b, trio.c
    pn.apply(document("Tier", "c1-first", {"order": 10}))
    pn.apply(document("Tier", "c1-second", {"order": 20, "defaultAction": "Pass"}))
    pn.policy("deny", {"selector": "app == 'b'", "types": ["Ingress"], "ingress": [DENY]})  # the default tier: last
    pn.policy("allow", {"selector": "app == 'b'", "types": ["Ingress"], "ingress": [ALLOW]}, tier="c1-first")
    wait_enforced(lambda: tcp(a, b, 80), True, "an earlier tier's Allow decides before the default tier's Deny")
    assert tcp(c, b, 80, v6=True)
    # Pass: the rest of the tier is skipped, the next tier decides.
    pn.policy("allow", {"selector": "app == 'b'", "types": ["Ingress"], "ingress": [{"action": "Pass"}, ALLOW]}, tier="c1-first")
    wait_enforced(lambda: tcp(a, b, 80), False, "Pass in c1-first: the default tier's Deny decides")
    # A tier whose defaultAction is Pass: no rule matched in it -> the next tier.
    pn.delete("GlobalNetworkPolicy", "deny")
    pn.policy(
        "only-a", {"selector": "app == 'b'", "types": ["Ingress"], "ingress": [{"action": "Allow", "source": {"selector": "app == 'a'"}}]}, tier="c1-second"
    )
    # c -> b: c1-first passes, c1-second matches nothing and passes, the default tier has no
    # policy for b: the profile (same network) allows.
    wait_enforced(lambda: tcp(a, b, 80), True, "a -> b allowed by c1-second")
    wait_enforced(lambda: tcp(c, b, 80), True, "c -> b passed on by c1-second's defaultAction Pass to the profile")
    pn.apply(document("Tier", "c1-second", {"order": 20, "defaultAction": "Deny"}))
    wait_enforced(lambda: tcp(c, b, 80), False, "c -> b dropped at the end of c1-second (defaultAction Deny)")
    assert tcp(a, b, 80)


def test_end_of_tier_drop_only_when_a_policy_of_the_tier_applied(pn, trio):
    a, b = trio.a, trio.b
    pn.apply(document("Tier", "c1-quiet", {"order": 30}))
    # A policy of the tier selecting someone else, and one selecting b for egress only: neither
    # applies to b's ingress, so the tier does not drop it.
    pn.policy("other", {"selector": "app == 'nobody'", "types": ["Ingress"], "ingress": [ALLOW]}, tier="c1-quiet")
    pn.policy("b-egress", {"selector": "app == 'b'", "types": ["Egress"], "egress": [ALLOW]}, tier="c1-quiet")
    pn.policy(
        "marker",
        {
            "selector": "app == 'b'",
            "order": 1,
            "types": ["Ingress"],
            "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [443]}}, {"action": "Pass"}],
        },
    )
    wait_enforced(lambda: tcp(a, b, 443), False, "the default tier's policy is in place")
    assert tcp(a, b, 80) and tcp(a, b, 80, v6=True), "c1-quiet has no policy for b's ingress: no end-of-tier drop"
    # Once a policy of the tier applies to b's ingress and matches nothing: dropped at its end.
    pn.policy("b-ingress", {"selector": "app == 'b'", "types": ["Ingress"], "ingress": [{"action": "Allow", "protocol": "UDP"}]}, tier="c1-quiet")
    wait_enforced(lambda: tcp(a, b, 80), False, "c1-quiet's end-of-tier drop once a policy of it applies")
    assert udp(a, b, 53)


def test_profiles_decide_only_when_no_tier_did(pn):
    """A pod's profiles in order; a profile that does not exist denies; no profile at all drops."""
    client = pn.pod({"app": "pr-client"})
    target = pn.pod({"app": "pr-target"})
    assert tcp(client, target, 80)
    pn.apply(document("Profile", "c1-deny-in", {"ingress": [DENY], "egress": [ALLOW]}))
    pn.apply(document("Profile", "c1-empty", {}))

    def profiles(names: list[str]):
        return lambda doc: doc["spec"].__setitem__("profiles", names)

    pn.edit_endpoint(target, profiles(["c1-deny-in", NETWORK]))
    wait_enforced(lambda: tcp(client, target, 80), False, "a denying profile first")
    expect(denied=[P(tcp, client, target, 80, v6=True), P(ping, client, target)])
    # An empty profile decides nothing: the next (the network's) allows (from the denied state, so
    # the answer changes only once the empty profile is in place).
    pn.edit_endpoint(target, profiles(["c1-empty", NETWORK]))
    wait_enforced(lambda: tcp(client, target, 80), True, "an empty profile, then the network's")
    pn.edit_endpoint(target, profiles(["c1-deny-in", NETWORK]))
    wait_enforced(lambda: tcp(client, target, 80), False, "the denying profile again")
    # A policy that applies and allows decides before any profile.
    pn.policy("pr-allow", {"selector": "app == 'pr-target'", "types": ["Ingress"], "ingress": [ALLOW]})
    wait_enforced(lambda: tcp(client, target, 80), True, "a policy allowed before the denying profile")
    pn.delete("GlobalNetworkPolicy", "pr-allow")
    # A profile that does not exist: deny (both directions).
    pn.edit_endpoint(target, profiles(["c1-missing", NETWORK]))
    wait_enforced(lambda: tcp(client, target, 80), False, "a profile that does not exist denies")
    expect(denied=[P(tcp, target, client, 80), P(udp, client, target, 53, v6=True)])  # egress too
    # No profile at all: drop.
    pn.edit_endpoint(target, profiles([]))
    wait_enforced(lambda: tcp(target, client, 80), False, "no profile: egress dropped", hold=0)
    wait_enforced(lambda: tcp(client, target, 80), False, "no profile: ingress dropped")
    pn.edit_endpoint(target, profiles([NETWORK]))
    wait_enforced(lambda: tcp(client, target, 80), True, "the network's profile back")


def test_labels_from_cni_args_and_calicoctl_label(pn, trio):
    a = trio.a
    db = pn.pod({"role": "db", "tier": "back"})
    wep = pn.pn.wep(db)
    assert wep["metadata"]["labels"]["role"] == "db" and wep["metadata"]["labels"]["tier"] == "back"
    pn.policy(
        "db-only-from-clients", {"selector": "role == 'db'", "types": ["Ingress"], "ingress": [{"action": "Allow", "source": {"selector": "role == 'client'"}}]}
    )
    wait_enforced(lambda: tcp(a, db, 80), False, "a -> db: a is no client")
    pn.label(a, "role", "client")
    pn.cleanups.append(lambda: pn.label(a, "role", None, check=False))
    wait_enforced(lambda: tcp(a, db, 80), True, "a -> db once a is labelled a client (calicoctl label)")
    assert tcp(a, db, 80, v6=True)
    pn.label(db, "role", "cache")
    wait_enforced(lambda: tcp(trio.c, db, 80), True, "db relabelled: the policy no longer selects it")
    pn.label(db, "role", "db")
    wait_enforced(lambda: tcp(trio.c, db, 80), False, "db labelled back")
    pn.label(a, "role", None)
    wait_enforced(lambda: tcp(a, db, 80), False, "a's client label removed")


def test_namespace_scoping(pn):
    """A NetworkPolicy selects (and its rule selectors match) only its own namespace; a
    GlobalNetworkPolicy's namespaceSelector matches namespace labels (the `kns.` profiles')."""
    k8s = {"policy": {"type": "k8s"}}
    x_client = pn.k8s_pod("c1-x", labels={"app": "client"}, conf=k8s)
    x_server = pn.k8s_pod("c1-x", labels={"app": "server"}, conf=k8s)
    y_client = pn.k8s_pod("c1-y", labels={"app": "client"}, conf=k8s)
    y_server = pn.k8s_pod("c1-y", labels={"app": "server"}, conf=k8s)
    for src in (x_client, y_client):
        for dst in (x_server, y_server):
            assert tcp(src, dst, 80), f"{src.namespace} -> {dst.namespace} with no policy"
    pn.policy(
        "ns-servers",
        {"selector": "app == 'server'", "types": ["Ingress"], "ingress": [{"action": "Allow", "source": {"selector": "app == 'client'"}}]},
        namespace="c1-x",
    )
    wait_enforced(lambda: tcp(y_client, x_server, 80), False, "c1-y's client -> c1-x's server: the rule selector matches c1-x only")
    assert tcp(x_client, x_server, 80) and tcp(x_client, x_server, 80, v6=True)
    assert tcp(y_client, y_server, 80) and tcp(x_client, y_server, 80), "the NetworkPolicy of c1-x does not select c1-y's server"
    pn.delete("NetworkPolicy", "ns-servers", "c1-x")
    pn.policy(
        "gns",
        {
            "namespaceSelector": "projectcalico.org/name == 'c1-y'",
            "selector": "app == 'server'",
            "types": ["Ingress"],
            "ingress": [{"action": "Allow", "source": {"namespaceSelector": "projectcalico.org/name == 'c1-y'"}}],
        },
    )
    wait_enforced(lambda: tcp(x_client, y_server, 80), False, "c1-x -> c1-y's server: the source namespaceSelector wants c1-y")
    assert tcp(y_client, y_server, 80) and tcp(y_client, y_server, 80, v6=True)
    assert tcp(x_client, x_server, 80) and tcp(y_client, x_server, 80), "the policy's namespaceSelector does not select c1-x's server"


def test_namespaced_network_set_in_a_network_policy_source_selector(pn):
    """A NetworkPolicy's source selector matches the NetworkSets of its own namespace (their nets),
    not another namespace's set with the same labels."""
    k8s = {"policy": {"type": "k8s"}}
    server = pn.k8s_pod("c1-nset", labels={"app": "server"}, conf=k8s)
    inside = pn.k8s_pod("c1-nset", labels={"app": "client"}, conf=k8s)
    outside = pn.k8s_pod("c1-nset", labels={"app": "client"}, conf=k8s)
    assert tcp(outside, server, 80), "no policy yet: the namespace's pods reach each other"

    def network_set(namespace: str, pod) -> dict:
        return document("NetworkSet", "trusted", {"nets": [f"{pod.v4}/32", f"{pod.v6}/128"]}, namespace=namespace, labels={"role": "trusted"})

    pn.apply(network_set("c1-nset", inside))
    pn.apply(network_set("c1-nset-other", outside))  # same name and labels, another namespace
    pn.policy(
        "from-trusted",
        {"selector": "app == 'server'", "types": ["Ingress"], "ingress": [{"action": "Allow", "source": {"selector": "role == 'trusted'"}}]},
        namespace="c1-nset",
    )
    wait_enforced(lambda: tcp(outside, server, 80), False, "a client outside c1-nset's NetworkSet (in c1-nset-other's)")
    expect(
        allowed=[P(tcp, inside, server, 80), P(tcp, inside, server, 80, v6=True), P(udp, inside, server, 53)],
        denied=[P(tcp, outside, server, 80, v6=True), P(udp, outside, server, 53)],
    )


def test_log_counts_in_the_rule_counter(pn, trio):
    a, b = trio.a, trio.b
    ingress_policy(
        pn,
        "log",
        [
            {"action": "Log", "protocol": "TCP", "destination": {"ports": [5002]}},
            {"action": "Deny", "protocol": "TCP", "destination": {"ports": [5002]}},
            ALLOW,
        ],
    )
    wait_enforced(lambda: tcp(a, b, 5002), False, "the Deny after Log")
    chain = pn.policy_chain("GlobalNetworkPolicy", "log", INGRESS)

    def logged(family: str) -> int:
        rules = [packets for packets, text in pn.pn.chain_counters(chain, family) if '"log"' in text]
        assert rules, f"no log rule in {family} calico {chain}: {pn.pn.nft('list', 'chain', family, 'calico', chain).stdout}"
        return sum(rules)

    before4, before6 = logged("ip"), logged("ip6")
    expect(denied=[P(tcp, a, b, 5002), P(tcp, a, b, 5002, v6=True)])
    assert logged("ip") > before4, pn.pn.nft("list", "chain", "ip", "calico", chain).stdout
    assert logged("ip6") > before6, pn.pn.nft("list", "chain", "ip6", "calico", chain).stdout
    # Log goes on to the next rule: TCP 80 still allowed, and not counted by the log rule.
    now = logged("ip")
    assert tcp(a, b, 80)
    assert logged("ip") == now


def felix_configuration(pn: Scope, name: str) -> dict | None:
    proc = pn.pn.ctl("get", "felixconfiguration", name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_endpoint_to_host_action(pn, trio):
    """Pod -> its own node: node.<name>'s defaultEndpointToHostAction, else default's, else Drop."""
    a = trio.a
    node = pn.node
    pn.server(node.ns, tcp_ports=(8081,), udp_ports=(8081,))
    name = f"node.{node.nodename}"
    original = felix_configuration(pn, name)
    assert original is not None, "calico-node creates FelixConfiguration node.<name>"
    assert original["spec"].get("defaultEndpointToHostAction") == "Return", "as Calico's start-up writes it"

    def put(spec: dict, which: str = name) -> None:
        current = felix_configuration(pn, which)
        doc = current or document("FelixConfiguration", which, {})
        doc["spec"] = spec
        pn.pn.ctl("replace" if current else "create", "-f", "-", stdin=json.dumps(doc))
        pn.pn.wait_programmed()  # the wait that follows must not see the answer from before

    pn.cleanups.append(lambda: put(original["spec"]))
    default_original = felix_configuration(pn, "default")
    pn.cleanups.append(
        lambda: put(default_original["spec"], "default") if default_original else pn.pn.ctl("delete", "felixconfiguration", "default", check=False)
    )

    wait_enforced(lambda: tcp(a, node.ipv4, 8081), True, "Return: pod -> node accepted")
    base = {k: v for k, v in original["spec"].items() if k != "defaultEndpointToHostAction"}
    put({**base, "defaultEndpointToHostAction": "Drop"})
    wait_enforced(lambda: tcp(a, node.ipv4, 8081), False, "Drop: pod -> node dropped")
    expect(denied=[P(tcp, a, node.ipv6, 8081), P(udp, a, node.ipv4, 8081), P(ping, a, node.ipv4)])
    # Neighbour discovery to the node (ICMPv6 135/136) is accepted before the action: with a's
    # neighbour cache flushed, its IPv6 traffic to another pod still finds the node's router.
    in_ns(a.ns, "ip", "-6", "neigh", "flush", "dev", "eth0")
    assert tcp(a, trio.b, 80, v6=True), "a -> b over IPv6 with Drop, after a's neighbour cache was flushed"
    put({**base, "defaultEndpointToHostAction": "Accept"})
    wait_enforced(lambda: tcp(a, node.ipv4, 8081), True, "Accept: pod -> node accepted")
    assert tcp(a, node.ipv6, 8081) and udp(a, node.ipv4, 8081)
    # Not set for the node: the default configuration's, else Drop.
    put({**(default_original or {}).get("spec", {}), "defaultEndpointToHostAction": "Accept"}, "default")
    put(base)
    wait_enforced(lambda: tcp(a, node.ipv4, 8081), True, "node.<name> unset, default Accept")
    put({k: v for k, v in (default_original or {}).get("spec", {}).items() if k != "defaultEndpointToHostAction"}, "default")
    wait_enforced(lambda: tcp(a, node.ipv4, 8081), False, "neither sets it: Drop")
    # The pod's egress policy comes first even when the action is Accept.
    put({**base, "defaultEndpointToHostAction": "Accept"})
    wait_enforced(lambda: tcp(a, node.ipv4, 8081), True, "Accept again")
    egress_policy(pn, "no-host", [{"action": "Deny", "destination": {"nets": [f"{node.ipv4}/32"]}}, ALLOW])
    wait_enforced(lambda: tcp(a, node.ipv4, 8081), False, "a's egress policy denies its node")


def test_host_to_local_pod_not_policed(pn, trio):
    a, b = trio.a, trio.b
    ingress_policy(pn, "deny-all", [DENY])
    wait_enforced(lambda: tcp(a, b, 80), False, "a -> b under Deny all")
    node_ns = pn.node.ns
    for v6 in (False, True):
        assert tcp(node_ns, b, 80, v6), f"node -> b (v6={v6}) is not policed"
        assert udp(node_ns, b, 53, v6) and ping(node_ns, b, v6)


def test_spoofed_source_dropped(pn, trio):
    """A pod sending from an address that is not its own: dropped (both families)."""
    a, b = trio.a, trio.b
    spoof4, spoof6 = "198.18.71.9", "fd00:198:18:71::9"
    in_ns(a.ns, "ip", "addr", "add", f"{spoof4}/32", "dev", "eth0")
    in_ns(a.ns, "ip", "-6", "addr", "add", f"{spoof6}/128", "dev", "eth0", "nodad")
    pn.cleanups.append(lambda: in_ns(a.ns, "ip", "addr", "del", f"{spoof4}/32", "dev", "eth0", check=False))
    pn.cleanups.append(lambda: in_ns(a.ns, "ip", "-6", "addr", "del", f"{spoof6}/128", "dev", "eth0", check=False))
    # An allow-all policy for b: nothing but the anti-spoofing check stands in the way.
    ingress_policy(pn, "open-b", [ALLOW])
    wait_enforced(lambda: udp(a, b, 5000, bind=a.v4), True, "a -> b from a's own address")
    # The spoofed datagrams: no reply could come back anyway (nothing routes the spoofed addresses
    # to a), so the proof is b's server, which counts every datagram that reaches it. (TCP would
    # prove nothing: without a route back the handshake never completes, so the server never
    # counts a connection either way.)
    expect(
        allowed=[P(udp, a, b, 5000, v6=True, bind=a.v6)],
        denied=[P(udp, a, b, 5000, v6=v6, bind=address) for address, v6 in ((spoof4, False), (spoof6, True))],
    )
    for address in (spoof4, spoof6):
        assert b.server.seen(source=address) == 0, f"b received from the spoofed {address}"


def test_unknown_cali_interface_dropped(pn, trio):
    """Traffic from a `cali*` interface no endpoint owns is dropped (fail closed); the same wiring
    on an interface of another name is not policed by the pod dispatch."""
    b = trio.b
    ingress_policy(pn, "open-b", [ALLOW])
    node_ns = pn.node.ns
    made = []

    def stray(host_end: str, address: str) -> str:
        # The name ends in -<pid>: netns.sweep_stale removes it if this run dies.
        ns = netns.add(f"{netns.PREFIX}stray{len(made)}-{os.getpid()}")
        made.append((ns, host_end))
        netns.ip("-n", node_ns, "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        netns.ip("-n", node_ns, "link", "set", host_end, "up")
        in_ns(
            node_ns,
            "sysctl",
            "-qw",
            f"net.ipv4.conf.{host_end}.proxy_arp=1",
            f"net.ipv4.conf.{host_end}.forwarding=1",
            f"net.ipv4.neigh.{host_end}.proxy_delay=0",
        )
        netns.ip("-n", node_ns, "route", "add", f"{address}/32", "dev", host_end)
        netns.ip("-n", ns, "link", "set", "lo", "up")
        netns.ip("-n", ns, "link", "set", "eth0", "up")
        netns.ip("-n", ns, "addr", "add", f"{address}/32", "dev", "eth0")
        netns.ip("-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        netns.ip("-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        return ns

    def remove() -> None:
        for ns, host_end in made:
            netns.ip("-n", node_ns, "link", "del", host_end, check=False)
            netns.delete(ns)

    pn.cleanups.append(remove)
    wait_enforced(lambda: tcp(trio.a, b, 80), True, "b open to pods")
    control = stray("tstray0", "198.18.72.10")
    rogue = stray("calistray1", "198.18.72.11")
    # To b (the forward hook) and to the node itself (the input hook); the control wiring reaches both.
    srv = pn.server(node_ns, tcp_ports=(8082,), udp_ports=())
    expect(
        allowed=[P(tcp, control, b, 80), P(tcp, control, pn.node.ipv4, 8082)],
        denied=[P(tcp, rogue, b, 80), P(udp, rogue, b, 53), P(ping, rogue, b), P(tcp, rogue, pn.node.ipv4, 8082)],
    )
    assert b.server.seen(source="198.18.72.11") == 0
    assert srv.seen(source="198.18.72.11") == 0


def test_calicoctl_refuses_hostile_policies(pn):
    """calicoctl refuses what would be skipped if written to etcd directly, each for its own reason
    (tests/etcd/test_calicoctl_policy.py covers the refusals in detail; here, with the node's
    calicoctl, the reason shows it is the validation, not another failure, that refused)."""
    bad = [
        ({"selector": "app == ", "types": ["Ingress"], "ingress": [ALLOW]}, "invalid selector"),
        ({"selector": "all()", "types": ["Ingress"], "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [70000]}}]}, "65535"),
        ({"selector": "all()", "types": ["Ingress"], "ingress": [ALLOW] * 6000}, "per direction"),
    ]
    for n, (spec, reason) in enumerate(bad):
        proc = pn.pn.ctl("apply", "-f", "-", stdin=json.dumps(document("GlobalNetworkPolicy", f"hostile-{n}", spec)), check=False)
        assert proc.returncode != 0, f"calicoctl accepted {json.dumps(spec)[:200]}"
        assert reason in proc.stdout + proc.stderr, f"calicoctl refused {json.dumps(spec)[:200]} without saying {reason!r}: {proc.stdout} {proc.stderr}"
        assert pn.pn.ctl("get", "globalnetworkpolicy", f"hostile-{n}", check=False).returncode != 0
