"""The policy kinds (Tier, NetworkPolicy, GlobalNetworkPolicy, Profile) and the network sets, as
Calico v3.30 validates and defaults them: one accepted and one refused value per rule, the
defaults, the aliases, the get columns and documents shaped like Calico's documented examples."""

from __future__ import annotations


import pytest

from calico_cni.model import kinds
from calico_cni.model.kinds.policy import go_float
from calico_cni.model.kinds.sets import join_truncated
from calico_cni.model.resource import Resource
from tests.kinds_support import API, decode, refused


def gnp(spec: dict, name: str = "p1") -> dict:
    return {"kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def np(spec: dict, name: str = "p1", namespace: str = "prod") -> dict:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ingress(rule: dict) -> dict:
    return gnp({"ingress": [rule]})


def egress(rule: dict) -> dict:
    return gnp({"egress": [rule]})


ALLOW = {"action": "Allow"}
TCP = {"action": "Allow", "protocol": "TCP"}
SVC = {"name": "web", "namespace": "prod"}

# (id, accepted document, refused document, path of the refusal, key phrase of its message)
RULES = [
    ("action", ingress({"action": "Pass"}), ingress({"action": "allow"}), "spec.ingress[0].action", "expected one of Allow, Deny, Log, Pass"),
    ("action-required", ingress({"action": "Log"}), ingress({"protocol": "TCP"}), "spec.ingress[0].action", "required field is missing"),
    ("unknown-rule-field", ingress({"action": "Deny", "source": {}}), ingress({"action": "Deny", "sorce": {}}), "spec.ingress[0].sorce", "unknown field"),
    ("ipVersion", ingress({**ALLOW, "ipVersion": 6}), ingress({**ALLOW, "ipVersion": 5}), "spec.ingress[0].ipVersion", "expected 4 or 6"),
    (
        "protocol-name",
        ingress({**ALLOW, "protocol": "UDPLite"}),
        ingress({**ALLOW, "protocol": "tcp"}),
        "spec.ingress[0].protocol",
        "case-sensitive: use 'TCP'",
    ),
    ("protocol-unknown", ingress({**ALLOW, "protocol": "SCTP"}), ingress({**ALLOW, "protocol": "GRE"}), "spec.ingress[0].protocol", "protocol name invalid"),
    ("protocol-number", ingress({**ALLOW, "protocol": 47}), ingress({**ALLOW, "protocol": 0}), "spec.ingress[0].protocol", "protocol number invalid"),
    ("protocol-number-range", ingress({**ALLOW, "protocol": "255"}), ingress({**ALLOW, "protocol": 256}), "spec.ingress[0].protocol", "expected 1 to 255"),
    ("protocol-type", ingress({**ALLOW, "protocol": 6}), ingress({**ALLOW, "protocol": True}), "spec.ingress[0].protocol", "got a boolean"),
    (
        "port-type",
        ingress({**TCP, "destination": {"ports": [80]}}),
        ingress({**TCP, "destination": {"ports": [None]}}),
        "spec.ingress[0].destination.ports[0]",
        "expected a port number, a \"min:max\" range or a port name, got null",
    ),
    (
        "notProtocol",
        ingress({**ALLOW, "notProtocol": "ICMPv6"}),
        ingress({**ALLOW, "notProtocol": "icmp"}),
        "spec.ingress[0].notProtocol",
        "protocol name invalid",
    ),
    (
        "icmp-type",
        ingress({**ALLOW, "protocol": "ICMP", "icmp": {"type": 254}}),
        ingress({**ALLOW, "protocol": "ICMP", "icmp": {"type": 255}}),
        "spec.ingress[0].icmp.type",
        "expected 0 to 254",
    ),
    (
        "icmp-code",
        ingress({**ALLOW, "protocol": "ICMP", "icmp": {"type": 3, "code": 255}}),
        ingress({**ALLOW, "protocol": "ICMP", "icmp": {"type": 3, "code": 256}}),
        "spec.ingress[0].icmp.code",
        "expected 0 to 255",
    ),
    (
        "icmp-code-needs-type",
        ingress({**ALLOW, "protocol": "ICMP", "icmp": {"type": 8, "code": 0}}),
        ingress({**ALLOW, "protocol": "ICMP", "icmp": {"code": 0}}),
        "spec.ingress[0].icmp.code",
        "without an ICMP type",
    ),
    (
        "notICMP-code-needs-type",
        ingress({**ALLOW, "notICMP": {"type": 8}}),
        ingress({**ALLOW, "notICMP": {"code": 1}}),
        "spec.ingress[0].notICMP.code",
        "without an ICMP type",
    ),
    (
        "icmp-needs-protocol",
        ingress({**ALLOW, "protocol": "ICMPv6", "icmp": {"type": 128}}),
        ingress({**TCP, "icmp": {"type": 8}}),
        "spec.ingress[0].icmp",
        "must set protocol to ICMP",
    ),
    (
        "icmp-needs-protocol-name",
        ingress({**ALLOW, "protocol": "ICMP", "icmp": {"type": 8}}),
        ingress({**ALLOW, "protocol": 1, "icmp": {"type": 8}}),
        "spec.ingress[0].icmp",
        "must set protocol to ICMP",
    ),
    (
        "icmp-ipv4",
        ingress({**ALLOW, "protocol": "ICMP", "ipVersion": 4}),
        ingress({**ALLOW, "protocol": "ICMP", "ipVersion": 6}),
        "spec.ingress[0].ipVersion",
        "ipVersion to 4",
    ),
    (
        "icmpv6-ipv6",
        ingress({**ALLOW, "protocol": "ICMPv6", "ipVersion": 6}),
        ingress({**ALLOW, "protocol": "ICMPv6", "ipVersion": 4}),
        "spec.ingress[0].ipVersion",
        "ipVersion to 6",
    ),
    (
        "notProtocol-icmp-ipv4",
        ingress({**ALLOW, "notProtocol": "ICMP", "ipVersion": 4}),
        ingress({**ALLOW, "notProtocol": "ICMP", "ipVersion": 6}),
        "spec.ingress[0].ipVersion",
        "ipVersion to 4",
    ),
    (
        "ports-need-protocol",
        ingress({**TCP, "destination": {"ports": [80]}}),
        ingress({**ALLOW, "protocol": "ICMP", "destination": {"ports": [80]}}),
        "spec.ingress[0].destination.ports",
        "must set protocol to TCP or UDP or SCTP",
    ),
    (
        "ports-protocol-number",
        ingress({**ALLOW, "protocol": 132, "source": {"notPorts": [9]}}),
        ingress({**ALLOW, "protocol": 47, "source": {"notPorts": [9]}}),
        "spec.ingress[0].source.notPorts",
        "must set protocol to TCP or UDP or SCTP",
    ),
    (
        "ports-missing-protocol",
        ingress({**ALLOW, "protocol": "UDP", "source": {"ports": [53]}}),
        ingress({**ALLOW, "source": {"ports": [53]}}),
        "spec.ingress[0].source.ports",
        "must set protocol",
    ),
    (
        "port-number",
        ingress({**TCP, "destination": {"ports": [65535]}}),
        ingress({**TCP, "destination": {"ports": [0]}}),
        "spec.ingress[0].destination.ports[0]",
        "between 1 and 65535",
    ),
    (
        "port-number-high",
        ingress({**TCP, "destination": {"ports": ["1"]}}),
        ingress({**TCP, "destination": {"ports": [65536]}}),
        "spec.ingress[0].destination.ports[0]",
        "between 1 and 65535",
    ),
    (
        "port-string-high",
        ingress({**TCP, "destination": {"ports": ["65535"]}}),
        ingress({**TCP, "destination": {"ports": ["70000"]}}),
        "spec.ingress[0].destination.ports[0]",
        "invalid port format",
    ),
    (
        "port-range-order",
        ingress({**TCP, "destination": {"ports": ["80:8080"]}}),
        ingress({**TCP, "destination": {"ports": ["8080:80"]}}),
        "spec.ingress[0].destination.ports[0]",
        "greater than maximum port number",
    ),
    (
        "port-range-zero",
        ingress({**TCP, "destination": {"ports": ["1:2"]}}),
        ingress({**TCP, "destination": {"ports": ["0:2"]}}),
        "spec.ingress[0].destination.ports[0]",
        "between 1 and 65535",
    ),
    (
        "port-type",
        ingress({**TCP, "destination": {"ports": ["http"]}}),
        ingress({**TCP, "destination": {"ports": [True]}}),
        "spec.ingress[0].destination.ports[0]",
        "port name",
    ),
    (
        "port-name",
        ingress({**TCP, "destination": {"ports": ["web-80"]}}),
        ingress({**TCP, "destination": {"ports": ["Web"]}}),
        "spec.ingress[0].destination.ports[0]",
        "lower-case",
    ),
    (
        "port-name-hyphens",
        ingress({**TCP, "destination": {"ports": ["a-b"]}}),
        ingress({**TCP, "destination": {"ports": ["a--b"]}}),
        "spec.ingress[0].destination.ports[0]",
        "no consecutive '-'",
    ),
    (
        "port-name-length",
        ingress({**TCP, "destination": {"ports": ["a" * 15]}}),
        ingress({**TCP, "destination": {"ports": ["a" * 16]}}),
        "spec.ingress[0].destination.ports[0]",
        "at most 15",
    ),
    (
        "port-name-chars",
        ingress({**TCP, "destination": {"ports": ["x1"]}}),
        ingress({**TCP, "destination": {"ports": ["a:b"]}}),
        "spec.ingress[0].destination.ports[0]",
        "invalid name for named port",
    ),
    (
        "nets",
        ingress({**ALLOW, "source": {"nets": ["10.0.0.0/8"]}}),
        ingress({**ALLOW, "source": {"nets": ["10.0.0.0/33"]}}),
        "spec.ingress[0].source.nets[0]",
        "invalid CIDR",
    ),
    (
        "nets-prefix",
        ingress({**ALLOW, "source": {"nets": ["10.0.0.1/32"]}}),
        ingress({**ALLOW, "source": {"nets": ["10.0.0.1"]}}),
        "spec.ingress[0].source.nets[0]",
        "need a prefix length",
    ),
    (
        "nets-masked",
        ingress({**ALLOW, "source": {"notNets": ["fd00::/64"]}}),
        ingress({**ALLOW, "source": {"notNets": ["fd00::1/64"]}}),
        "spec.ingress[0].source.notNets[0]",
        "not strictly masked",
    ),
    (
        "nets-ipVersion",
        ingress({**ALLOW, "ipVersion": 4, "destination": {"nets": ["10.0.0.0/8"]}}),
        ingress({**ALLOW, "ipVersion": 6, "destination": {"nets": ["10.0.0.0/8"]}}),
        "spec.ingress[0].destination.nets",
        "doesn't match CIDR version",
    ),
    (
        "nets-one-family",
        ingress({**ALLOW, "source": {"nets": ["10.0.0.0/8"]}, "destination": {"notNets": ["192.168.0.0/16"]}}),
        ingress({**ALLOW, "source": {"nets": ["10.0.0.0/8"]}, "destination": {"notNets": ["fd00::/64"]}}),
        "spec.ingress[0].destination.notNets",
        "both IPv4 and IPv6",
    ),
    (
        "selector",
        ingress({**ALLOW, "source": {"selector": "role == 'db'"}}),
        ingress({**ALLOW, "source": {"selector": "role =="}}),
        "spec.ingress[0].source.selector",
        "invalid selector",
    ),
    (
        "selector-global",
        ingress({**ALLOW, "source": {"namespaceSelector": "global()"}}),
        ingress({**ALLOW, "source": {"selector": "global()"}}),
        "spec.ingress[0].source.selector",
        "can only be used in an EntityRule namespaceSelector",
    ),
    (
        "notSelector",
        ingress({**ALLOW, "source": {"notSelector": "has(a)"}}),
        ingress({**ALLOW, "source": {"notSelector": "has(a"}}),
        "spec.ingress[0].source.notSelector",
        "invalid selector",
    ),
    (
        "namespaceSelector-global-alone",
        ingress({**ALLOW, "source": {"namespaceSelector": "global() "}}),
        ingress({**ALLOW, "source": {"namespaceSelector": "global() && a == 'b'"}}),
        "spec.ingress[0].source.namespaceSelector",
        "cannot be combined with other selectors",
    ),
    (
        "serviceAccounts",
        ingress({**ALLOW, "source": {"serviceAccounts": {"names": ["api"], "selector": "team == 'a'"}}}),
        ingress({**ALLOW, "source": {"serviceAccounts": {"selector": "team =="}}}),
        "spec.ingress[0].source.serviceAccounts.selector",
        "invalid selector",
    ),
    (
        "services-name",
        ingress({**ALLOW, "source": {"services": SVC}}),
        ingress({**ALLOW, "source": {"services": {"namespace": "prod"}}}),
        "spec.ingress[0].source.services.name",
        "must specify a service name",
    ),
    (
        "services-name-rule",
        ingress({**ALLOW, "source": {"services": SVC}}),
        ingress({**ALLOW, "source": {"services": {"name": "Web", "namespace": "prod"}}}),
        "spec.ingress[0].source.services.name",
        "invalid name",
    ),
    (
        "services-selector",
        ingress({**ALLOW, "source": {"services": SVC}}),
        ingress({**ALLOW, "source": {"services": SVC, "selector": "a == 'b'"}}),
        "spec.ingress[0].source.services",
        "Selector/NotSelector and Services",
    ),
    (
        "services-nets",
        ingress({**ALLOW, "source": {"services": SVC}}),
        ingress({**ALLOW, "source": {"services": SVC, "notNets": ["10.0.0.0/8"]}}),
        "spec.ingress[0].source.services",
        "Nets/NotNets and Services",
    ),
    (
        "services-namespaceSelector",
        ingress({**ALLOW, "source": {"services": SVC}}),
        ingress({**ALLOW, "source": {"services": SVC, "namespaceSelector": "all()"}}),
        "spec.ingress[0].source.services",
        "NamespaceSelector and Services",
    ),
    (
        "services-serviceAccounts",
        ingress({**ALLOW, "source": {"services": SVC}}),
        ingress({**ALLOW, "source": {"services": SVC, "serviceAccounts": {"names": ["a"]}}}),
        "spec.ingress[0].source.services",
        "ServiceAccounts and Services",
    ),
    (
        "services-ports",
        egress({**TCP, "destination": {"services": SVC}}),
        egress({**TCP, "destination": {"services": SVC, "ports": [80]}}),
        "spec.egress[0].destination.ports",
        "cannot specify ports with a service selector",
    ),
    (
        "services-notPorts",
        egress({**TCP, "destination": {"services": SVC}}),
        egress({**TCP, "destination": {"services": SVC, "notPorts": [80]}}),
        "spec.egress[0].destination.notPorts",
        "cannot specify notports",
    ),
    (
        "services-ingress-destination",
        ingress({**ALLOW, "source": {"services": SVC}}),
        ingress({**ALLOW, "destination": {"services": SVC}}),
        "spec.ingress[0].destination.services",
        "not allowed in ingress rule destination",
    ),
    (
        "services-egress-source",
        egress({**ALLOW, "destination": {"services": SVC}}),
        egress({**ALLOW, "source": {"services": SVC}}),
        "spec.egress[0].source.services",
        "not allowed in egress rule source",
    ),
    (
        "gnp-services-namespace",
        ingress({**ALLOW, "source": {"services": SVC}}),
        ingress({**ALLOW, "source": {"services": {"name": "web"}}}),
        "spec.ingress[0].source.services.namespace",
        "must specify a namespace",
    ),
    (
        "http",
        ingress({**TCP, "http": {"methods": ["GET"], "paths": [{"exact": "/a"}]}}),
        ingress({"action": "Deny", "http": {"methods": ["GET"]}}),
        "spec.ingress[0].http",
        "only valid for Allow rules",
    ),
    (
        "http-protocol",
        ingress({**ALLOW, "http": {"methods": ["GET"]}}),
        ingress({**ALLOW, "protocol": "UDP", "http": {"methods": ["GET"]}}),
        "spec.ingress[0].protocol",
        "must set protocol to TCP or empty",
    ),
    (
        "http-methods",
        ingress({**ALLOW, "http": {"methods": ["GET", "PUT"]}}),
        ingress({**ALLOW, "http": {"methods": ["GET", "GET"]}}),
        "spec.ingress[0].http.methods",
        "duplicates",
    ),
    (
        "http-path-one",
        ingress({**ALLOW, "http": {"paths": [{"prefix": "/api"}]}}),
        ingress({**ALLOW, "http": {"paths": [{"exact": "/a", "prefix": "/b"}]}}),
        "spec.ingress[0].http.paths[0]",
        "Both 'exact' and 'prefix'",
    ),
    (
        "http-path-given",
        ingress({**ALLOW, "http": {"paths": [{"exact": "/"}]}}),
        ingress({**ALLOW, "http": {"paths": [{}]}}),
        "spec.ingress[0].http.paths[0]",
        "Either 'exact' or 'prefix'",
    ),
    (
        "http-path-form",
        ingress({**ALLOW, "http": {"paths": [{"exact": "/a/b"}]}}),
        ingress({**ALLOW, "http": {"paths": [{"exact": "/a?b"}]}}),
        "spec.ingress[0].http.paths[0]",
        "must start with '/'",
    ),
    (
        "http-egress",
        ingress({**ALLOW, "http": {"methods": ["GET"]}}),
        egress({**ALLOW, "http": {"methods": ["GET"]}}),
        "spec.egress[0].http",
        "not allowed in egress rules",
    ),
    (
        "rule-annotations",
        ingress({**ALLOW, "metadata": {"annotations": {"example.com/why": "audit"}}}),
        ingress({**ALLOW, "metadata": {"annotations": {"bad key": "x"}}}),
        "spec.ingress[0].metadata.annotations.bad key",
        "annotation key",
    ),
    (
        "rule-annotations-size",
        ingress({**ALLOW, "metadata": {"annotations": {"a": "x" * 1000}}}),
        ingress({**ALLOW, "metadata": {"annotations": {"a": "x" * (256 * 1024)}}}),
        "spec.ingress[0].metadata.annotations",
        "too large by 1 bytes",
    ),
    # policy-level rules
    ("types", gnp({"types": ["Ingress", "Egress"]}), gnp({"types": ["Ingress", "Ingress"]}), "spec.types", "'Ingress' type specified more than once"),
    ("types-value", gnp({"types": ["Egress"]}), gnp({"types": ["ingress"]}), "spec.types[0]", "expected one of Ingress, Egress"),
    ("order", gnp({"order": 10.5}), gnp({"order": "10"}), "spec.order", "expected a number"),
    ("tier-name", gnp({"tier": "default"}), gnp({"tier": "Sec_Tier"}), "spec.tier", "invalid name"),
    (
        "selector-policy",
        gnp({"selector": "app == 'web'"}),
        gnp({"selector": "app == 'web' && global()"}),
        "spec.selector",
        "can only be used in an EntityRule namespaceSelector",
    ),
    (
        "serviceAccountSelector",
        gnp({"serviceAccountSelector": "role == 'api'"}),
        gnp({"serviceAccountSelector": "role in"}),
        "spec.serviceAccountSelector",
        "invalid selector",
    ),
    (
        "namespaceSelector-gnp",
        gnp({"namespaceSelector": "has(team)"}),
        gnp({"namespaceSelector": "global()"}),
        "spec.namespaceSelector",
        "can only be used in an EntityRule namespaceSelector",
    ),
    (
        "performanceHints",
        gnp({"performanceHints": ["AssumeNeededOnEveryNode"]}),
        gnp({"performanceHints": ["Preload"]}),
        "spec.performanceHints[0]",
        "expected one of AssumeNeededOnEveryNode",
    ),
    (
        "performanceHints-unique",
        gnp({"performanceHints": ["AssumeNeededOnEveryNode"]}),
        gnp({"performanceHints": ["AssumeNeededOnEveryNode"] * 2}),
        "spec.performanceHints",
        "more than once",
    ),
    (
        "doNotTrack-applyOnForward",
        gnp({"doNotTrack": True, "applyOnForward": True}),
        gnp({"doNotTrack": True}),
        "spec.applyOnForward",
        "ApplyOnForward must be true",
    ),
    (
        "preDNAT-applyOnForward",
        gnp({"preDNAT": True, "applyOnForward": True}),
        gnp({"preDNAT": True, "applyOnForward": False}),
        "spec.applyOnForward",
        "ApplyOnForward must be true",
    ),
    (
        "preDNAT-doNotTrack",
        gnp({"doNotTrack": True, "applyOnForward": True}),
        gnp({"doNotTrack": True, "preDNAT": True, "applyOnForward": True}),
        "spec.preDNAT",
        "cannot both be true",
    ),
    (
        "preDNAT-egress",
        gnp({"preDNAT": True, "applyOnForward": True, "ingress": [ALLOW]}),
        gnp({"preDNAT": True, "applyOnForward": True, "egress": [ALLOW]}),
        "spec.egress",
        "cannot have any Egress rules",
    ),
    (
        "preDNAT-types",
        gnp({"preDNAT": True, "applyOnForward": True, "types": ["Ingress"]}),
        gnp({"preDNAT": True, "applyOnForward": True, "types": ["Egress"]}),
        "spec.types",
        "cannot have 'egress' Type",
    ),
    ("np-no-gnp-fields", np({"selector": "all()"}), np({"doNotTrack": True}), "spec.doNotTrack", "unknown field"),
    (
        "np-services-no-namespace",
        np({"ingress": [{**ALLOW, "source": {"services": {"name": "web"}}}]}),
        np({"ingress": [{**ALLOW, "destination": {"services": {"name": "web"}}}]}),
        "spec.ingress[0].destination.services",
        "not allowed in ingress rule destination",
    ),
    # names
    ("np-name", np({}, name="allow-web"), np({}, name="a.b.c"), "metadata.name", "lower case alphanumeric characters or '-'"),
    ("np-name-default-prefix", np({}, name="default.allow-web"), np({}, name="Allow-web"), "metadata.name", "lower case"),
    ("np-name-length", np({}, name="a" * 63), np({}, name="a" * 254), "metadata.name", "too long by 1 bytes"),
    (
        "np-name-tier",
        np({"tier": "security"}, name="security.allow-web"),
        np({"tier": "security"}, name="allow-web"),
        "metadata.name",
        "must be named security.allow-web",
    ),
    ("np-name-prefix-without-tier", np({}, name="default.allow-web"), np({}, name="security.allow-web"), "metadata.name", "Incorrectly formatted policy name"),
    ("np-name-translated", np({}, name="knp.default.from-k8s.x"), np({}, name="knp.other.from-k8s.x"), "metadata.name", "lower case"),
    ("gnp-name", gnp({"tier": "security"}, name="security.deny-all"), gnp({}, name="a.b.c"), "metadata.name", "lower case"),
    ("gnp-name-length", gnp({}, name="a" * 63), gnp({}, name="a" * 254), "metadata.name", "too long by 1 bytes"),
    (
        "gnp-name-tier",
        gnp({"tier": "security"}, name="security.deny-all"),
        gnp({"tier": "security"}, name="other.deny-all"),
        "metadata.name",
        "not the policy's tier",
    ),
    # Tier
    (
        "tier-name-label",
        {"kind": "Tier", "metadata": {"name": "security"}},
        {"kind": "Tier", "metadata": {"name": "sec.urity"}},
        "metadata.name",
        "lower-case letters, digits and '-'",
    ),
    ("tier-name-length", {"kind": "Tier", "metadata": {"name": "t" * 63}}, {"kind": "Tier", "metadata": {"name": "t" * 64}}, "metadata.name", "at most 63"),
    (
        "tier-defaultAction",
        {"kind": "Tier", "metadata": {"name": "t"}, "spec": {"defaultAction": "Pass"}},
        {"kind": "Tier", "metadata": {"name": "t"}, "spec": {"defaultAction": "Allow"}},
        "spec.defaultAction",
        "expected one of Deny, Pass",
    ),
    (
        "tier-order",
        {"kind": "Tier", "metadata": {"name": "t"}, "spec": {"order": 100}},
        {"kind": "Tier", "metadata": {"name": "t"}, "spec": {"order": "first"}},
        "spec.order",
        "expected a number",
    ),
    (
        "tier-default-order",
        {"kind": "Tier", "metadata": {"name": "default"}, "spec": {"order": 1000000}},
        {"kind": "Tier", "metadata": {"name": "default"}, "spec": {"order": 100}},
        "spec.order",
        "default tier order must be 1e+06",
    ),
    (
        "tier-anp-order",
        {"kind": "Tier", "metadata": {"name": "adminnetworkpolicy"}, "spec": {"order": 1000}},
        {"kind": "Tier", "metadata": {"name": "adminnetworkpolicy"}},
        "spec.order",
        "adminnetworkpolicy tier order must be 1000",
    ),
    (
        "tier-banp-order",
        {"kind": "Tier", "metadata": {"name": "baselineadminnetworkpolicy"}, "spec": {"order": 1e7}},
        {"kind": "Tier", "metadata": {"name": "baselineadminnetworkpolicy"}, "spec": {"order": 1e6}},
        "spec.order",
        "must be 1e+07",
    ),
    # Profile
    (
        "profile-labels",
        {"kind": "Profile", "metadata": {"name": "p"}, "spec": {"labelsToApply": {"team": "a"}}},
        {"kind": "Profile", "metadata": {"name": "p"}, "spec": {"labelsToApply": {"team": "a b"}}},
        "spec.labelsToApply.team",
        "invalid label value",
    ),
    (
        "profile-rules",
        {"kind": "Profile", "metadata": {"name": "p"}, "spec": {"egress": [ALLOW]}},
        {"kind": "Profile", "metadata": {"name": "p"}, "spec": {"egress": [{"action": "Accept"}]}},
        "spec.egress[0].action",
        "expected one of",
    ),
    (
        "profile-fields",
        {"kind": "Profile", "metadata": {"name": "kns.prod"}},
        {"kind": "Profile", "metadata": {"name": "p"}, "spec": {"selector": "all()"}},
        "spec.selector",
        "unknown field",
    ),
    # network sets
    (
        "gns-nets",
        {"kind": "GlobalNetworkSet", "metadata": {"name": "s"}, "spec": {"nets": ["10.0.0.1", "10.1.2.3/16", "fd00::/64"]}},
        {"kind": "GlobalNetworkSet", "metadata": {"name": "s"}, "spec": {"nets": ["10.0.0.0/40"]}},
        "spec.nets[0]",
        "invalid CIDR",
    ),
    (
        "gns-namespace-label",
        {"kind": "GlobalNetworkSet", "metadata": {"name": "s", "labels": {"team": "a"}}},
        {"kind": "GlobalNetworkSet", "metadata": {"name": "s", "labels": {"projectcalico.org/namespace": "a"}}},
        "metadata.labels.projectcalico.org/namespace",
        "not a valid label name",
    ),
    (
        "ns-nets",
        {"kind": "NetworkSet", "metadata": {"name": "s", "namespace": "prod"}, "spec": {"nets": ["198.51.100.0/28"]}},
        {"kind": "NetworkSet", "metadata": {"name": "s", "namespace": "prod"}, "spec": {"nets": ["198.51.100"]}},
        "spec.nets[0]",
        "invalid CIDR",
    ),
    (
        "ns-namespace-label",
        {"kind": "NetworkSet", "metadata": {"name": "s"}},
        {"kind": "NetworkSet", "metadata": {"name": "s", "labels": {"projectcalico.org/namespace": "x"}}},
        "metadata.labels.projectcalico.org/namespace",
        "not a valid label name",
    ),
    (
        "gns-not-namespaced",
        {"kind": "GlobalNetworkSet", "metadata": {"name": "s"}},
        {"kind": "GlobalNetworkSet", "metadata": {"name": "s", "namespace": "prod"}},
        "metadata.namespace",
        "not namespaced",
    ),
]


@pytest.mark.parametrize(("accepted", "refused_doc", "path", "phrase"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule(accepted: dict, refused_doc: dict, path: str, phrase: str) -> None:
    decode(accepted)
    error = refused(refused_doc)
    assert error.path == path, str(error)
    assert phrase in error.reason, str(error)


# --- normalisation as Calico stores it


@pytest.mark.parametrize(
    ("given", "stored"),
    [(80, 80), ("80", 80), ("080", 80), ("80:80", 80), ("80:8080", "80:8080"), ("01:02", "1:2"), ("http", "http")],
)
def test_ports_are_stored_as_calico_stores_them(given, stored) -> None:
    doc = decode(ingress({**TCP, "destination": {"ports": [given]}}))
    assert doc["spec"]["ingress"][0]["destination"]["ports"] == [stored]


@pytest.mark.parametrize(("given", "stored"), [("TCP", "TCP"), ("6", 6), (17, 17), ("ICMPv6", "ICMPv6")])
def test_protocol_spelling_is_kept_and_digits_become_numbers(given, stored) -> None:
    doc = decode(ingress({**ALLOW, "protocol": given}))
    assert doc["spec"]["ingress"][0]["protocol"] == stored


# --- defaults


@pytest.mark.parametrize(
    ("rules", "types"),
    [
        ({}, ["Ingress"]),
        ({"ingress": [ALLOW]}, ["Ingress"]),
        ({"egress": [ALLOW]}, ["Egress"]),
        ({"ingress": [ALLOW], "egress": [ALLOW]}, ["Ingress", "Egress"]),
        ({"ingress": [ALLOW], "egress": [], "types": []}, ["Ingress"]),
        ({"egress": [ALLOW], "types": ["Ingress", "Egress"]}, ["Ingress", "Egress"]),
    ],
    ids=["no-rules", "ingress-only", "egress-only", "both", "empty-lists", "explicit-kept"],
)
@pytest.mark.parametrize("make", [np, gnp], ids=["NetworkPolicy", "GlobalNetworkPolicy"])
def test_types_default(make, rules: dict, types: list) -> None:
    assert decode(make(rules))["spec"]["types"] == types


@pytest.mark.parametrize("make", [np, gnp], ids=["NetworkPolicy", "GlobalNetworkPolicy"])
def test_tier_defaults_to_default_without_a_tier_label(make) -> None:
    doc = decode(make({}, name="allow-web"))
    assert "tier" not in doc["spec"]  # Calico leaves it empty in etcd and fills it in on read
    assert "projectcalico.org/tier" not in (doc["metadata"].get("labels") or {})


@pytest.mark.parametrize("make", [np, gnp], ids=["NetworkPolicy", "GlobalNetworkPolicy"])
def test_a_default_tier_policy_is_stored_without_its_tier_and_read_back_with_it(make) -> None:
    kind = kinds.lookup(make({})["kind"])
    doc = decode(make({}, name="allow-web"))
    stored = Resource(kind, doc).to_json()
    assert '"tier"' not in stored.decode()
    read = Resource.from_stored(kind, stored, 7).doc
    assert read["spec"]["tier"] == "default"
    assert read["metadata"]["labels"]["projectcalico.org/tier"] == "default"


@pytest.mark.parametrize("make", [np, gnp], ids=["NetworkPolicy", "GlobalNetworkPolicy"])
def test_a_given_tier_is_stored(make) -> None:
    assert decode(make({"tier": "default"}, name="allow-web"))["spec"]["tier"] == "default"
    assert decode(make({"tier": "security"}, name="security.allow-web"))["spec"]["tier"] == "security"


@pytest.mark.parametrize("make", [np, gnp], ids=["NetworkPolicy", "GlobalNetworkPolicy"])
def test_a_tier_other_than_default_is_labelled(make) -> None:
    given = make({"tier": "security"}, name="security.allow-web")
    given["metadata"]["labels"] = {"app": "web", "projectcalico.org/tier": "stale"}
    doc = decode(given)
    assert doc["metadata"]["labels"] == {"app": "web", "projectcalico.org/tier": "security"}
    assert doc["metadata"]["name"] == "security.allow-web"


def test_network_policy_namespace_defaults_to_default() -> None:
    doc = decode({"kind": "NetworkPolicy", "metadata": {"name": "p"}})
    assert doc["metadata"]["namespace"] == "default"


def test_tier_defaults() -> None:
    assert decode({"kind": "Tier", "metadata": {"name": "security"}})["spec"] == {"order": 1_000_000.0, "defaultAction": "Deny"}
    assert decode({"kind": "Tier", "metadata": {"name": "security"}, "spec": {"order": 300, "defaultAction": "Pass"}})["spec"] == {
        "order": 300,
        "defaultAction": "Pass",
    }


def test_policy_kinds_are_tiered_and_others_not() -> None:
    assert kinds.lookup("networkpolicy").tiered and kinds.lookup("globalnetworkpolicy").tiered
    assert not any(kinds.lookup(n).tiered for n in ("tier", "profile", "networkset", "globalnetworkset"))
    assert kinds.lookup("np").namespaced and kinds.lookup("netsets").namespaced
    assert not kinds.lookup("gnp").namespaced and not kinds.lookup("gnetsets").namespaced


# --- aliases


@pytest.mark.parametrize(
    ("kind", "aliases"),
    [
        ("Tier", ["tier", "tiers", "Tier"]),
        ("NetworkPolicy", ["networkpolicy", "networkpolicies", "policy", "np", "policies", "pol", "pols", "NetworkPolicy"]),
        ("GlobalNetworkPolicy", ["globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps", "GlobalNetworkPolicy"]),
        ("Profile", ["profile", "profiles", "pro", "pros"]),
        ("NetworkSet", ["networkset", "networksets", "netsets"]),
        ("GlobalNetworkSet", ["globalnetworkset", "globalnetworksets", "gnetsets"]),
    ],
)
def test_aliases(kind: str, aliases: list) -> None:
    for alias in aliases:
        assert kinds.lookup(alias).name == kind, alias


# --- columns


def cells(doc: dict, wide: bool = False) -> dict:
    kind = kinds.by_kind(doc["kind"])
    return {c.header: c.cell(doc) for c in (kind.wide if wide else kind.columns)}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "<nil>"),
        (100, "100"),
        (100.5, "100.5"),
        (1_000_000, "1e+06"),
        (1_500_000, "1.5e+06"),
        (123456, "123456"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2, "-2"),
        (0, "0"),
    ],
)
def test_order_prints_as_go_prints_a_float(value, text) -> None:
    assert go_float(value) == text


def test_policy_columns() -> None:
    doc = decode(np({"tier": "security", "order": 100, "selector": "app == 'web'"}, name="security.allow-web"))
    assert cells(doc) == {"NAME": "security.allow-web", "TIER": "security"}
    assert cells(doc, wide=True) == {"NAME": "security.allow-web", "TIER": "security", "ORDER": "100", "SELECTOR": "app == 'web'"}
    doc = decode(gnp({}, name="deny-all"))
    assert cells(doc, wide=True) == {"NAME": "deny-all", "TIER": "default", "ORDER": "<nil>", "SELECTOR": ""}


def test_tier_columns() -> None:
    doc = decode({"kind": "Tier", "metadata": {"name": "default"}})
    assert cells(doc) == cells(doc, wide=True) == {"NAME": "default", "ORDER": "1e+06"}
    assert cells(decode({"kind": "Tier", "metadata": {"name": "security"}, "spec": {"order": 300}})) == {"NAME": "security", "ORDER": "300"}


def test_profile_columns() -> None:
    doc = decode({"kind": "Profile", "metadata": {"name": "kns.prod"}, "spec": {"labelsToApply": {"z": "1", "a": ""}}})
    assert cells(doc) == {"NAME": "kns.prod"}
    assert cells(doc, wide=True) == {"NAME": "kns.prod", "LABELS": "a=,z=1"}


def test_network_set_columns_truncate_the_nets_at_80() -> None:
    nets = [f"10.0.{i}.0/24" for i in range(20)]
    doc = decode({"kind": "GlobalNetworkSet", "metadata": {"name": "blocked"}, "spec": {"nets": nets}})
    assert cells(doc) == {"NAME": "blocked"}
    shown = cells(doc, wide=True)["NETS"]
    assert len(shown) == 80 and shown.endswith("...") and shown.startswith("10.0.0.0/24,10.0.1.0/24,")
    assert join_truncated(["10.0.0.0/8", "fd00::/64"]) == "10.0.0.0/8,fd00::/64"
    assert cells(decode({"kind": "NetworkSet", "metadata": {"name": "s"}}), wide=True) == {"NAME": "s", "NETS": ""}


# --- documents shaped like Calico's documented examples


def test_tiered_network_policy_example() -> None:
    kind, doc = kinds.decode(
        {
            "apiVersion": API,
            "kind": "NetworkPolicy",
            "metadata": {"name": "security.allow-web", "namespace": "storefront"},
            "spec": {
                "tier": "security",
                "order": 200,
                "selector": "role == 'frontend'",
                "types": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {"selector": "role == 'lb'", "namespaceSelector": "zone == 'edge'"},
                        "destination": {"ports": [443, "8000:8080"]},
                    },
                    {"action": "Log", "protocol": "ICMP", "icmp": {"type": 8}},
                    {"action": "Deny"},
                ],
                "egress": [
                    {"action": "Allow", "protocol": "UDP", "destination": {"selector": "k8s-app == 'kube-dns'", "ports": [53]}},
                    {"action": "Allow", "protocol": "TCP", "destination": {"nets": ["192.0.2.0/24"], "notPorts": [25]}},
                    {"action": "Pass"},
                ],
            },
        }
    )
    assert kind.name == "NetworkPolicy"
    assert doc["metadata"] == {"name": "security.allow-web", "namespace": "storefront", "labels": {"projectcalico.org/tier": "security"}}
    assert doc["spec"]["ingress"][0]["destination"]["ports"] == [443, "8000:8080"]
    assert doc["spec"]["types"] == ["Ingress", "Egress"]


def test_global_network_policy_example() -> None:
    kind, doc = kinds.decode(
        {
            "apiVersion": API,
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "deny-untrusted"},
            "spec": {
                "order": 10,
                "namespaceSelector": "trust != 'high'",
                "selector": "all()",
                "ingress": [
                    {"action": "Deny", "protocol": "TCP", "source": {"nets": ["203.0.113.0/24"]}, "destination": {"ports": [22]}},
                    {"action": "Allow", "source": {"namespaceSelector": "global()", "selector": "type == 'scanner'"}},
                ],
            },
        }
    )
    assert kind.name == "GlobalNetworkPolicy"
    assert "tier" not in doc["spec"] and doc["spec"]["types"] == ["Ingress"]
    assert "labels" not in doc["metadata"]


def test_host_protection_policy_example() -> None:
    _, doc = kinds.decode(
        {
            "apiVersion": API,
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "allow-cluster-internal"},
            "spec": {
                "selector": "has(host-endpoint)",
                "order": 1,
                "preDNAT": True,
                "applyOnForward": True,
                "ingress": [{"action": "Allow", "source": {"nets": ["10.240.0.0/16", "192.168.0.0/16"]}}],
            },
        }
    )
    assert doc["spec"]["types"] == ["Ingress"]


def test_tier_example() -> None:
    kind, doc = kinds.decode({"apiVersion": API, "kind": "Tier", "metadata": {"name": "security"}, "spec": {"order": 300, "defaultAction": "Pass"}})
    assert kind.name == "Tier" and doc["spec"] == {"order": 300, "defaultAction": "Pass"}


def test_global_network_set_example() -> None:
    kind, doc = kinds.decode(
        {
            "apiVersion": API,
            "kind": "GlobalNetworkSet",
            "metadata": {"name": "threat-feed", "labels": {"feed": "blocklist"}},
            "spec": {"nets": ["198.51.100.0/28", "203.0.113.7", "2001:db8::/32"]},
        }
    )
    assert kind.name == "GlobalNetworkSet" and doc["spec"]["nets"] == ["198.51.100.0/28", "203.0.113.7", "2001:db8::/32"]


def test_profile_example() -> None:
    _, doc = kinds.decode(
        {
            "apiVersion": API,
            "kind": "Profile",
            "metadata": {"name": "calico-net"},
            "spec": {
                "egress": [{"action": "Allow"}],
                "ingress": [{"action": "Allow", "source": {"selector": "has(calico-net)"}}],
                "labelsToApply": {"calico-net": ""},
            },
        }
    )
    assert doc["spec"]["labelsToApply"] == {"calico-net": ""}
