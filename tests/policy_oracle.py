"""A plain-Python reference evaluator of Calico v3.30's policy semantics, for differential tests
(issue 18): given the documents as stored in etcd and one probe, say whether Calico would let the
packet through and which tier, policy, rule or profile decided.

It is a specification, not an implementation: no kernel, no sets, no chains, and no code shared
with the product except the selector parser (`calico_cni.model.selector`). Every packet is matched
against every document directly. "§2" etc. cite /work/shared/reference/calico-policy.md; "felix/..."
and "libcalico-go/..." cite Calico v3.30.0's source, read for facts.

Scope: workload endpoints only (host endpoints, applyOnForward, service accounts, services and
http are not enforced by the product, issue 18; doNotTrack and preDNAT policies are skipped, as
Calico renders them for host endpoints only), and traffic between two
workloads or between a workload and an outside address; workload to its own host
(`defaultEndpointToHostAction`) is not modelled.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping

from calico_cni.model import selector

NS_LABEL = "projectcalico.org/namespace"
ORCH_LABEL = "projectcalico.org/orchestrator"
SA_LABEL = "projectcalico.org/serviceaccount"
NS_PREFIX = "pcns."
SA_PREFIX = "pcsa."

# §1 "Rule fields": names in any case, or 1-255. Numbers are the IANA ones the kernel sees.
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136}
ICMP_BY_VERSION = {4: 1, 6: 58}

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Probe:
    """One packet: `src` / `dst` are a workload endpoint as `<namespace>/<name>` or an address."""

    src: str
    dst: str
    protocol: int | str
    dst_port: int | None = None
    src_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    ip_version: int = 4


@dataclass(frozen=True)
class Decision:
    """What one direction of one endpoint decided, and why (`by`, human-readable)."""

    endpoint: str
    direction: str
    allowed: bool
    by: str


@dataclass(frozen=True)
class Verdict:
    """The probe's fate: allowed only when every decision (egress, then ingress) allowed it."""

    allowed: bool
    decisions: tuple[Decision, ...]


def protocol_number(value: int | str | None) -> int | None:
    """A rule's or a port's protocol as the kernel's number (§1: names in any case, or numbers)."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    return PROTOCOLS[value.lower()]


@lru_cache(maxsize=None)
def _compiled(text: str) -> selector.Matcher:
    return selector.parse(text)


def _match(text: str, labels: Mapping[str, str]) -> bool:
    """A selector over labels; empty means all() (§1 "selector: empty = all()")."""
    return _compiled(text or "all()")(labels)


_ALL = re.compile(r"\ball\s*\(\s*\)")
_GLOBAL = re.compile(r"\bglobal\s*\(\s*\)")
_HAS_NS = "has(oracle.all)"
_NO_NS = "has(oracle.global)"


def _prefixed_match(text: str, prefix: str, labels: Mapping[str, str], *, global_means_no_namespace: bool) -> bool:
    """`text` with every label key prefixed (as Calico's PrefixVisitor does), `all()` replaced by
    `has(projectcalico.org/namespace)` and, in rule namespace selectors, `global()` by its negation
    (§2 "Rule selector scoping"; libcalico-go updateprocessors/rules.go getEndpointSelector).
    Prefixing the selector's keys is the same as stripping the prefix from the labels' keys."""
    text = _ALL.sub(_HAS_NS, text)
    if global_means_no_namespace:
        text = _GLOBAL.sub(_NO_NS, text)
    view = {k[len(prefix) :]: v for k, v in labels.items() if k.startswith(prefix)}
    view.pop("oracle.all", None)
    view.pop("oracle.global", None)
    if NS_LABEL in labels:
        view["oracle.all"] = ""
    else:
        view["oracle.global"] = ""
    return _match(text, view)


def _net(text: str) -> Net:
    return ipaddress.ip_network(text, strict=False)


def _addr(text: str) -> Addr:
    return ipaddress.ip_address(text.split("/")[0])


def _host_only(policy: Mapping[str, Any]) -> bool:
    """A doNotTrack or preDNAT GNP goes into Felix's untracked / preDNAT tiers, which are rendered
    for host endpoints only: it is never in a workload's tiers and never causes an end-of-tier
    drop there (felix/calc/event_sequencer.go tierInfoToProtoTierInfo)."""
    spec = policy.get("spec") or {}
    return bool(spec.get("doNotTrack") or spec.get("preDNAT"))


# libcalico-go/lib/names/policy.go policyNameIsFormatted: names kept as they are, tier implied.
_FORMATTED = {
    "knp.default.": "default",
    "kanp.adminnetworkpolicy.": "adminnetworkpolicy",
    "kbanp.baselineadminnetworkpolicy.": "baselineadminnetworkpolicy",
    "ossg.": "default",
}


def stored_name(policy: Mapping[str, Any]) -> str:
    """The policy's name as v3.30 stores it, and as Felix keys it (calico-policy.md §1 "Names by
    version"; names/policy.go TieredPolicyName): a formatted name as it is, a name without a dot
    becomes `default.<name>` (the user's name then lives in the projectcalico.org/metadata
    annotation), a dotted name is already `<tier>.<name>`. An already stored record reads the same.
    Raises ValueError when the name's tier is not spec.tier (or default when unset): calicoctl
    refuses such a document (validateBackendTieredPolicyName), and for formatted names, which
    Calico accepts whatever spec.tier says, the oracle refuses too rather than guess."""
    meta, spec = policy.get("metadata") or {}, policy.get("spec") or {}
    name = meta.get("name") or ""
    if not name:
        raise ValueError(f"{policy['kind']} without a name")
    stored = name if any(name.startswith(p) for p in _FORMATTED) or "." in name else f"default.{name}"
    if tier_of(stored) != (spec.get("tier") or "default"):
        raise ValueError(f"{policy['kind']} {name!r}: name and spec.tier {spec.get('tier')!r} disagree")
    return stored


def tier_of(stored: str) -> str:
    """The tier Felix files a policy under, taken from its stored name (names/policy.go
    TierFromPolicyName, used by the syncer's policy key converters), not from spec.tier."""
    for prefix, tier in _FORMATTED.items():
        if stored.startswith(prefix):
            return tier
    return stored.split(".", 1)[0] if "." in stored else "default"


@dataclass(frozen=True)
class _Entity:
    """Something a rule selector can match: a workload endpoint or a (global) network set."""

    labels: Mapping[str, str]
    nets: tuple[Net, ...]
    ports: tuple[Mapping[str, Any], ...] = ()


class World:
    """The stored documents, read once. `api_defaults`: a policy without `types` gets calicoctl's
    defaulting (§1 "types defaulting"); False reads them as Felix reads a record written to etcd
    directly (no types = both, felix/calc/policy_sorter.go)."""

    def __init__(self, documents: Iterable[Mapping[str, Any]], *, api_defaults: bool = True) -> None:
        self.api_defaults = api_defaults
        self.tiers: dict[str, Mapping[str, Any]] = {}
        self.profiles: dict[str, Mapping[str, Any]] = {}
        self.policies: list[Mapping[str, Any]] = []
        self.endpoints: dict[str, Mapping[str, Any]] = {}
        self.unrendered: set[str] = set()
        self.netsets: list[Mapping[str, Any]] = []
        for doc in documents:
            kind, meta = doc["kind"], doc.get("metadata", {})
            if kind == "Tier":
                self.tiers[meta["name"]] = doc
            elif kind == "Profile":
                self.profiles[meta["name"]] = doc
            elif kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
                stored_name(doc)  # Refuse a name that disagrees with spec.tier up front.
                if not _host_only(doc):
                    self.policies.append(doc)
            elif kind == "WorkloadEndpoint":
                key = f"{meta.get('namespace', 'default')}/{meta['name']}"
                # workloadendpointprocessor.go: the syncer drops a WEP with no ipNetworks (its
                # rules cannot be rendered yet), so Felix has no such endpoint: it is neither
                # policed nor selectable. Choice: probes from or to it are refused (address_of).
                if (doc.get("spec") or {}).get("ipNetworks"):
                    self.endpoints[key] = doc
                else:
                    self.unrendered.add(key)
            elif kind in ("NetworkSet", "GlobalNetworkSet"):
                self.netsets.append(doc)
            else:
                raise ValueError(f"the oracle does not know kind {kind!r}")
        self.entities = [self._endpoint_entity(wep) for wep in self.endpoints.values()]
        self.entities += [self._netset_entity(ns) for ns in self.netsets]

    # --- labels (§2 "Endpoint labels") -----------------------------------------------------

    def endpoint_labels(self, wep: Mapping[str, Any]) -> dict[str, str]:
        """Own labels, minus `pcns.`/`pcsa.` ones (the syncer strips them: no spoofing another
        namespace), plus the namespace, orchestrator and service account stamps; then each
        profile's labelsToApply for keys still absent, the first profile first (felix/labelindex
        label_inheritance_index.go itemData.Get: own labels, then parents in order)."""
        meta, spec = wep.get("metadata", {}), wep.get("spec", {})
        own = {k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith((NS_PREFIX, SA_PREFIX))}
        own[NS_LABEL] = meta.get("namespace", "default")
        # clientv3/workloadendpoint.go updateLabelsForStorage: always set, "" when unset.
        own[ORCH_LABEL] = spec.get("orchestrator") or ""
        if spec.get("serviceAccountName"):
            own[SA_LABEL] = spec["serviceAccountName"]
        return self._inherit(own, spec.get("profiles") or [])

    def _inherit(self, own: dict[str, str], profile_names: Iterable[str]) -> dict[str, str]:
        labels = dict(own)
        for name in profile_names:
            profile = self.profiles.get(name)
            for k, v in ((profile or {}).get("spec", {}).get("labelsToApply") or {}).items():
                labels.setdefault(k, v)
        return labels

    def _endpoint_entity(self, wep: Mapping[str, Any]) -> _Entity:
        spec = wep["spec"]
        return _Entity(self.endpoint_labels(wep), tuple(_net(n) for n in spec["ipNetworks"]), tuple(spec.get("ports") or ()))

    def _netset_entity(self, doc: Mapping[str, Any]) -> _Entity:
        """§1 "(Global)NetworkSet": selectable by its labels; a NetworkSet also gets its namespace
        label and inherits profile `kns.<ns>`'s labels (networksetprocessor.go ProfileIDs)."""
        meta = doc.get("metadata", {})
        labels = dict(meta.get("labels") or {})
        if doc["kind"] == "NetworkSet":
            ns = meta.get("namespace", "default")
            labels[NS_LABEL] = ns
            labels = self._inherit(labels, [f"kns.{ns}"])
        return _Entity(labels, tuple(_net(n) for n in doc.get("spec", {}).get("nets") or ()))

    # --- which policies apply (§2 "Which endpoints a policy selects", "Ordering") -------------

    def _types(self, spec: Mapping[str, Any]) -> set[str]:
        if spec.get("types"):
            return set(spec["types"])
        if not self.api_defaults:
            return {"Ingress", "Egress"}  # felix/calc/policy_sorter.go: no Types means both.
        # §1 "types defaulting": no egress rules -> Ingress; only egress rules -> Egress; both.
        if not spec.get("egress"):
            return {"Ingress"}
        return {"Ingress", "Egress"} if spec.get("ingress") else {"Egress"}

    def _selects(self, policy: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
        spec, meta = policy.get("spec", {}), policy.get("metadata", {})
        if policy["kind"] == "NetworkPolicy":
            # §2: NP's backend selector is (<selector>) && projectcalico.org/namespace == '<ns>'.
            return labels.get(NS_LABEL) == meta.get("namespace", "default") and _match(spec.get("selector", ""), labels)
        own, ns_sel = spec.get("selector", "") or "", spec.get("namespaceSelector", "") or ""
        if not ns_sel:
            return _match(own, labels)
        # globalnetworkpolicyprocessor.go ConvertGlobalNetworkPolicyV3ToV1Value, literally: only
        # with a namespaceSelector, the pcns.-prefixed namespaceSelector is ANDed to the selector
        # (it alone when the selector is empty: no has() added) and then the text "all()" of the
        # whole expression becomes has(projectcalico.org/namespace) (a plain string replace of
        # the user's selector text; the prefixed part is re-rendered, where all() is "all()").
        # global() is left alone, so it matches everything.
        if own and not _match(own.replace("all()", f"has({NS_LABEL})"), labels):
            return False
        return _prefixed_match(ns_sel, NS_PREFIX, labels, global_means_no_namespace=False)

    def _tier_key(self, name: str) -> tuple:
        """§2 "Ordering": tiers that exist first, then order ascending (none last), then name
        (felix/calc/policy_sorter.go TierLess)."""
        order = self.tiers.get(name, {}).get("spec", {}).get("order")
        return (name not in self.tiers, order is None, order or 0.0, name)

    @staticmethod
    def _policy_key(policy: Mapping[str, Any]) -> tuple:
        """§2 "Ordering": order ascending, none = +infinity; ties by the v3.30 backend key name,
        `<ns>/<stored name>` for NP and the stored name for GNP (policy_sorter.go PolKVLess,
        networkpolicyprocessor.go convertNetworkPolicyV3ToV1Key)."""
        meta, order = policy.get("metadata", {}), policy.get("spec", {}).get("order")
        name = stored_name(policy)
        if policy["kind"] == "NetworkPolicy":
            name = f"{meta.get('namespace', 'default')}/{name}"
        return (math.inf if order is None else float(order), name)

    # --- rule matching ------------------------------------------------------------------------

    def _positive(self, er: Mapping[str, Any], ns: str) -> tuple | None:
        """The effective positive selector of an entity rule (§2 "Rule selector scoping",
        rules.go getEndpointSelector): None when there is none, else (nsPart, selector) where
        nsPart is ("ns", sel) for a namespaceSelector, ("own", ns) for a namespaced policy, or None."""
        sel, not_sel, ns_sel = er.get("selector", ""), er.get("notSelector", ""), er.get("namespaceSelector", "")
        ns_part = ("ns", ns_sel) if ns_sel else (("own", ns) if ns else None)
        if ns_part is not None and (sel or not_sel or ns_sel):
            return (ns_part, sel)
        return (None, sel) if sel else None

    @staticmethod
    def _positive_matches(positive: tuple | None, labels: Mapping[str, str]) -> bool:
        if positive is None:
            return True
        ns_part, sel = positive
        if ns_part is not None:
            kind, value = ns_part
            ok = _prefixed_match(value, NS_PREFIX, labels, global_means_no_namespace=True) if kind == "ns" else labels.get(NS_LABEL) == value
            if not ok:
                return False
        return _match(sel, labels) if sel else True

    def _ip_selected(self, ip: Addr, pred) -> bool:
        """A selector matches an address when the address lies in a net of an endpoint or network
        set the selector matches (§3 "IP sets": all matching endpoints cluster-wide plus
        matching network sets' nets)."""
        return any(ip in n for e in self.entities if pred(e.labels) for n in e.nets if n.version == ip.version)

    def _named_port_hit(self, ip: Addr, port: int, proto: int, name: str, positive) -> bool:
        """A named port matches (ip, port) of an endpoint that the rule's positive selector (or
        all()) matches and whose spec.ports has that name, protocol and port
        (felix/calc/rule_scanner.go namedPortsToIPSets)."""
        for e in self.entities:
            if not e.ports or not self._positive_matches(positive, e.labels):
                continue
            if not any(ip in n for n in e.nets if n.version == ip.version):
                continue
            for p in e.ports:
                if p.get("name") == name and protocol_number(p.get("protocol")) == proto and p.get("port") == port:
                    return True
        return False

    def _ports_hit(self, ports: list, ip: Addr, port: int | None, proto: int, positive) -> bool:
        """§1 "EntityRule": a port is an int, "min:max" or a named port; any entry matching is a hit."""
        if port is None:
            return False
        for p in ports:
            if isinstance(p, int) or (isinstance(p, str) and p.isdigit()):
                if int(p) == port:
                    return True
            elif isinstance(p, str) and re.fullmatch(r"\d+:\d+", p):
                lo, hi = (int(x) for x in p.split(":"))
                if lo <= port <= hi:
                    return True
            elif self._named_port_hit(ip, port, proto, p, positive):
                return True
        return False

    def _entity_hit(self, er: Mapping[str, Any], ns: str, ip: Addr, port: int | None, proto: int) -> bool:
        nets = [_net(n) for n in er.get("nets") or () if _net(n).version == ip.version]
        if er.get("nets") and not any(ip in n for n in nets):
            return False
        if any(ip in _net(n) for n in er.get("notNets") or () if _net(n).version == ip.version):
            return False
        positive = self._positive(er, ns)
        if positive is not None and not self._ip_selected(ip, lambda labels: self._positive_matches(positive, labels)):
            return False
        # §2 "notSelector itself is never scoped" and it also matches non-Calico addresses.
        if er.get("notSelector") and self._ip_selected(ip, lambda labels: _match(er["notSelector"], labels)):
            return False
        if er.get("ports") and not self._ports_hit(er["ports"], ip, port, proto, positive):
            return False
        if er.get("notPorts") and self._ports_hit(er["notPorts"], ip, port, proto, positive):
            return False
        return True

    @staticmethod
    def _family_skipped(rule: Mapping[str, Any], version: int) -> bool:
        """§3 "Match rendering": a rule without ipVersion is rendered per family with the other
        family's CIDRs removed, and skipped where that empties a nets field (felix/rules/policy.go
        FilterRuleToIPVersion)."""
        for side in ("source", "destination"):
            for field in ("nets", "notNets"):
                cidrs = (rule.get(side) or {}).get(field) or []
                if cidrs and not any(_net(c).version == version for c in cidrs):
                    return True
        return False

    def rule_matches(self, rule: Mapping[str, Any], ns: str, probe: Probe, src_ip: Addr, dst_ip: Addr) -> bool:
        """Whether one rule (of a policy in namespace `ns`, "" for global ones) matches the packet."""
        proto = protocol_number(probe.protocol)
        if rule.get("ipVersion") is not None and rule["ipVersion"] != probe.ip_version:
            return False
        if self._family_skipped(rule, probe.ip_version):
            return False
        if rule.get("protocol") is not None and protocol_number(rule["protocol"]) != proto:
            return False
        if rule.get("notProtocol") is not None and protocol_number(rule["notProtocol"]) == proto:
            return False
        # Choice: ICMP fields match only ICMP packets of the probe's family (the kernel's icmp
        # type match implies the protocol; Calico's validator requires protocol ICMP/ICMPv6).
        is_icmp = proto == ICMP_BY_VERSION[probe.ip_version] and probe.icmp_type is not None
        for field, negate in (("icmp", False), ("notICMP", True)):
            want = rule.get(field)
            if want is None:
                continue
            same = is_icmp and want.get("type") == probe.icmp_type and (want.get("code") is None or want["code"] == probe.icmp_code)
            if not is_icmp or same == negate:
                return False
        src, dst = rule.get("source") or {}, rule.get("destination") or {}
        return self._entity_hit(src, ns, src_ip, probe.src_port, proto) and self._entity_hit(dst, ns, dst_ip, probe.dst_port, proto)

    # --- evaluation (§2 "Per endpoint and direction") -----------------------------------------

    def _rules_verdict(self, rules, ns, probe, src_ip, dst_ip) -> tuple[str, int] | None:
        """The first deciding rule: ("Allow"|"Deny"|"Pass", index); Log continues (§2)."""
        for i, rule in enumerate(rules or ()):
            if self.rule_matches(rule, ns, probe, src_ip, dst_ip):
                if rule["action"] != "Log":
                    return rule["action"], i
        return None

    def decide(self, endpoint: str, direction: str, probe: Probe, src_ip: Addr, dst_ip: Addr) -> Decision:
        """One direction ("ingress" or "egress") of one endpoint."""
        wep = self.endpoints[endpoint]
        labels = self.endpoint_labels(wep)
        rules_key, type_name = direction, direction.capitalize()
        tier_names = set(self.tiers) | {tier_of(stored_name(p)) for p in self.policies}
        for tier in sorted(tier_names, key=self._tier_key):
            applicable = [
                p for p in self.policies if tier_of(stored_name(p)) == tier and type_name in self._types(p.get("spec", {})) and self._selects(p, labels)
            ]
            if not applicable:
                continue  # §2 step 2: a tier with no applicable policy has no effect.
            passed = False
            for policy in sorted(applicable, key=self._policy_key):
                ns = policy.get("metadata", {}).get("namespace", "default") if policy["kind"] == "NetworkPolicy" else ""
                hit = self._rules_verdict(policy.get("spec", {}).get(rules_key), ns, probe, src_ip, dst_ip)
                if hit is None:
                    continue  # No rule matched: next policy.
                action, i = hit
                where = f"tier {tier} {policy['kind']} {self._policy_key(policy)[1]} {direction} rule {i} {action}"
                if action == "Pass":
                    passed = True  # Pass: skip the rest of this tier.
                    break
                return Decision(endpoint, direction, action == "Allow", where)
            default = self.tiers.get(tier, {}).get("spec", {}).get("defaultAction") or "Deny"
            if not passed and default != "Pass":
                return Decision(endpoint, direction, False, f"tier {tier} end-of-tier drop")
        # §2 step 3: profiles in list order, only when no tier decided.
        names = wep.get("spec", {}).get("profiles") or []
        if not names:
            return Decision(endpoint, direction, False, "no profiles")
        for name in names:
            profile = self.profiles.get(name)
            if profile is None:
                return Decision(endpoint, direction, False, f"profile {name} missing (deny)")
            hit = self._rules_verdict(profile.get("spec", {}).get(rules_key), "", probe, src_ip, dst_ip)
            if hit is not None and hit[0] != "Pass":
                return Decision(endpoint, direction, hit[0] == "Allow", f"profile {name} {direction} rule {hit[1]} {hit[0]}")
            # Choice: Pass in a profile (or no match) goes on to the next profile (§3 step 8: the
            # profile chain returns with only the pass bit set, and only accept stops the loop).
        return Decision(endpoint, direction, False, "no profile matched")

    def address_of(self, end: str, version: int) -> Addr:
        """The probe end's address: an address as given, or the endpoint's first of that family."""
        if end in self.unrendered:
            raise ValueError(f"endpoint {end} has no ipNetworks: Calico's syncer drops it, the oracle refuses the probe")
        if end in self.endpoints:
            for n in self.endpoints[end].get("spec", {}).get("ipNetworks") or ():
                if _net(n).version == version:
                    return _addr(n)
            raise ValueError(f"endpoint {end} has no IPv{version} address")
        return ipaddress.ip_address(end)

    def evaluate(self, probe: Probe) -> Verdict:
        """Egress of the source endpoint (if it is one), then ingress of the destination endpoint
        (if it is one) (§2 step 1 "Allow ... the peer's ingress check still runs", §3 "Pod→pod")."""
        src_ip, dst_ip = self.address_of(probe.src, probe.ip_version), self.address_of(probe.dst, probe.ip_version)
        decisions: list[Decision] = []
        for end, direction in ((probe.src, "egress"), (probe.dst, "ingress")):
            if end in self.endpoints:
                decisions.append(self.decide(end, direction, probe, src_ip, dst_ip))
                if not decisions[-1].allowed:
                    break
        return Verdict(all(d.allowed for d in decisions), tuple(decisions))


def evaluate(documents: Iterable[Mapping[str, Any]], probe: Probe, *, api_defaults: bool = True) -> Verdict:
    """Shorthand: the verdict of one probe against the stored documents."""
    return World(documents, api_defaults=api_defaults).evaluate(probe)
