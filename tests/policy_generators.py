"""Hypothesis strategies for the policy differential test (issue 18, tests/policy/test_differential.py):
random labels for a fixed set of pods, a tier, policies and their rules, drawn only from what
calicoctl accepts (protocol names spelt as Calico spells them, ports only with TCP or UDP, an ICMP
match only with protocol ICMP, strictly masked nets of one family).

Optional fields are drawn so that hypothesis' simplest choice (it starts from those) is the common
case: rare fields absent, a policy's selector and a catch-all last rule present.

The vocabulary is small on purpose: few label keys and values, a few ports where every pod listens,
and nets built from the pods' own addresses, so that random selectors, ports and nets often match
something and the probes exercise both answers of every rule field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hypothesis import strategies as st

API = "projectcalico.org/v3"
NAMESPACE = "default"  # where the plain-CNI pods' endpoints live; NetworkPolicies go there too
EXTRA_TIER = "extra"
LABEL_KEYS = ("app", "role")
LABEL_VALUES = ("a", "b")
TCP_PORTS = (80, 443, 8080)  # probed; the pods listen on them (tests/policy_harness.py TCP_PORTS)
UDP_PORTS = (53, 5000, 8080)  # likewise (policy_harness UDP_PORTS)
PORT_SPECS = (80, 443, 8080, 53, 5000, "80:443", "444:9000", "1:79", "5000:8080", 9999)
# Named ports some endpoints declare (spec.ports, set per example): a rule's `ports` may name them.
NAMED_PORTS = ({"name": "web", "protocol": "TCP", "port": 80}, {"name": "alt", "protocol": "TCP", "port": 8080}, {"name": "dns", "protocol": "UDP", "port": 53})
PORT_NAMES = tuple(p["name"] for p in NAMED_PORTS)
NETWORK_SET = "diff-nets"  # the GlobalNetworkSet every example rewrites
PROTOCOL_VALUES = ("TCP", "UDP", "ICMP", "ICMPv6", 6, 17, 1, 58)
ICMP_PROTOCOLS = {4: ("ICMP", 1), 6: ("ICMPv6", 58)}
ICMP_ECHO_REQUEST = {4: 8, 6: 128}
ICMP_TYPES = {4: (8, 0, 3), 6: (128, 129, 1)}
OUTSIDE_NETS = {4: "10.99.0.0/16", 6: "fd00:198:18:ffff::/64"}  # hold no pod: nets that never match


@dataclass(frozen=True)
class Pod:
    """One pod of the test: its endpoint's key (`<namespace>/<name>`, the oracle's name for it),
    its IPv4 and IPv6 addresses and its namespace path."""

    key: str
    address: str
    netns: str
    address6: str

    def ip(self, version: int) -> str:
        return self.address if version == 4 else self.address6


def selector_terms() -> st.SearchStrategy[str]:
    """One label condition."""
    key, value = st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES)
    return st.one_of(
        st.builds(lambda k, v: f"{k} == '{v}'", key, value),
        st.builds(lambda k, v: f"{k} != '{v}'", key, value),
        st.builds(lambda k: f"has({k})", key),
        st.builds(lambda k: f"!has({k})", key),
        st.builds(lambda k: f"{k} in {{'a', 'b'}}", key),
        st.just("all()"),
    )


def selectors() -> st.SearchStrategy[str]:
    """A selector of one or two conditions."""
    return st.one_of(selector_terms(), st.builds(lambda a, b, op: f"{a} {op} {b}", selector_terms(), selector_terms(), st.sampled_from(("&&", "||"))))


def nets(pods: list[Pod], version: int) -> st.SearchStrategy[list[str]]:
    """1-2 networks of one family: a pod's address, a net of 4 or 8 addresses around a pod
    (strictly masked), or a net that holds no pod."""
    host = 32 if version == 4 else 128
    choices = [OUTSIDE_NETS[version]]
    for p in pods:
        for prefix in (host, host - 2, host - 3):
            choices.append(str(ipaddress.ip_network(f"{p.ip(version)}/{prefix}", strict=False)))
    return st.lists(st.sampled_from(sorted(set(choices))), min_size=1, max_size=2, unique=True)


@st.composite
def entity_rules(draw, pods: list[Pod], ports_allowed: bool, destination: bool, version: int) -> dict:
    """A rule's source or destination: selector, notSelector, nets, notNets and (destination only,
    and only with a protocol that has ports) ports / notPorts; nets of the family `version`."""
    rule: dict = {}
    if draw(st.integers(0, 2)) < 2:
        rule["selector"] = draw(selectors())
    if draw(st.integers(0, 3)) == 3:
        rule["notSelector"] = draw(selectors())
    if draw(st.integers(0, 3)) == 3:
        rule["nets"] = draw(nets(pods, version))
    if draw(st.integers(0, 4)) == 4:
        rule["notNets"] = draw(nets(pods, version))
    if destination and ports_allowed:
        port_list = st.lists(st.sampled_from(PORT_SPECS), min_size=1, max_size=3, unique=True)
        if draw(st.booleans()):
            rule["ports"] = draw(st.lists(st.sampled_from(PORT_SPECS + PORT_NAMES), min_size=1, max_size=3, unique=True))
        if draw(st.integers(0, 3)) == 3:
            rule["notPorts"] = draw(port_list)
    return rule


@st.composite
def rules(draw, pods: list[Pod]) -> dict:
    """One rule calicoctl accepts."""
    rule: dict = {"action": draw(st.sampled_from(("Allow", "Allow", "Deny", "Deny", "Pass", "Log")))}
    protocol = draw(st.one_of(st.none(), st.sampled_from(PROTOCOL_VALUES)))
    if protocol is not None:
        rule["protocol"] = protocol
    elif draw(st.integers(0, 3)) == 3:
        rule["notProtocol"] = draw(st.sampled_from(PROTOCOL_VALUES))
    # One family for the rule's nets (calicoctl); ipVersion, when set, is that family, and
    # (not)protocol ICMP / ICMPv6 force 4 / 6 (calicoctl) when ipVersion is set.
    family = draw(st.sampled_from((4, 6)))
    for version, names in ICMP_PROTOCOLS.items():
        if {protocol, rule.get("notProtocol")} & set(names):
            family = version
    if protocol in ("ICMP", "ICMPv6") and draw(st.booleans()):
        icmp = {"type": draw(st.sampled_from(ICMP_TYPES[family]))}
        if draw(st.booleans()):
            icmp["code"] = draw(st.sampled_from((0, 1)))
        rule["notICMP" if draw(st.integers(0, 3)) == 3 else "icmp"] = icmp
    if draw(st.integers(0, 2)) == 2:
        rule["ipVersion"] = family
    ports_allowed = protocol in ("TCP", "UDP", 6, 17)
    for side, is_destination in (("source", False), ("destination", True)):
        entity = draw(entity_rules(pods, ports_allowed, is_destination, family))
        if entity:
            rule[side] = entity
    return rule


@st.composite
def policies(draw, pods: list[Pod], name: str) -> dict:
    """A NetworkPolicy (in the pods' namespace) or GlobalNetworkPolicy in the default tier or the
    extra one, with an optional order, selector and types, and 0-3 rules per direction."""
    kind = draw(st.sampled_from(("NetworkPolicy", "GlobalNetworkPolicy")))
    tier = draw(st.sampled_from(("default", EXTRA_TIER)))
    meta: dict = {"name": name if tier == "default" else f"{tier}.{name}"}
    if kind == "NetworkPolicy":
        meta["namespace"] = NAMESPACE
    spec: dict = {"tier": tier}
    order = draw(st.sampled_from((None, 10, 20, 20)))
    if order is not None:
        spec["order"] = order
    if draw(st.integers(0, 5)) < 5:
        spec["selector"] = draw(selectors())
    types = draw(st.sampled_from((None, None, ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types is not None:
        spec["types"] = types
    for direction in ("ingress", "egress"):
        if draw(st.integers(0, 7)) == 7:
            spec[direction] = []  # no rules: types defaulting, or a direction that drops everything
            continue
        spec[direction] = draw(st.lists(rules(pods), min_size=1, max_size=3))
        if draw(st.integers(0, 3)) < 3:
            # A catch-all last rule, as real policies often end: without one, most examples end in
            # the end-of-tier drop and every probe is denied.
            spec[direction].append({"action": draw(st.sampled_from(("Allow", "Allow", "Pass", "Deny")))})
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}


@st.composite
def labels(draw) -> dict[str, str]:
    """A pod's own labels: any subset of the keys, each with one of the values."""
    return {k: draw(st.sampled_from(LABEL_VALUES)) for k in LABEL_KEYS if draw(st.booleans())}


@dataclass(frozen=True)
class Example:
    """What one example applies: each pod's labels and named ports (by key), the extra tier, a
    GlobalNetworkSet and the policies."""

    labels: dict[str, dict[str, str]]
    ports: dict[str, list[dict]]
    tier: dict
    network_set: dict
    policies: list[dict]


@st.composite
def examples(draw, pods: list[Pod]) -> Example:
    """Labels and named ports for every pod, the extra tier's order (before or after the default
    tier, whose order is 1,000,000) and defaultAction, a GlobalNetworkSet (labels like a pod's, nets
    around pods of both families: a selector matching it matches those addresses), and 1-4
    policies named `p<i>` (the test renames them per example)."""
    pod_labels = {p.key: draw(labels()) for p in pods}
    pod_ports = {p.key: draw(st.lists(st.sampled_from(NAMED_PORTS), max_size=2, unique_by=lambda n: n["name"])) for p in pods}
    set_nets = draw(nets(pods, 4)) + draw(st.one_of(st.just([]), nets(pods, 6)))
    network_set = {"apiVersion": API, "kind": "GlobalNetworkSet", "metadata": {"name": NETWORK_SET, "labels": draw(labels())}, "spec": {"nets": set_nets}}
    tier_spec = {"order": draw(st.sampled_from((100, 2_000_000))), "defaultAction": draw(st.sampled_from(("Deny", "Pass")))}
    tier = {"apiVersion": API, "kind": "Tier", "metadata": {"name": EXTRA_TIER}, "spec": tier_spec}
    count = draw(st.integers(1, 4))
    return Example(pod_labels, pod_ports, tier, network_set, [draw(policies(pods, f"p{i}")) for i in range(count)])
