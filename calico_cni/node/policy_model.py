"""Calico's policy resources as Felix sees them, typed: tiers, policies, profiles, network sets,
workload endpoints and their rules, and one stored record decoded into them (issue 18's model, read
into a whole view by node.policy_view).

Pure: each record is decoded as calicoctl decodes a stored one (its validation; fields of later
releases skipped), so a record written straight to etcd that calicoctl would refuse (a selector that
does not parse, a port out of range) raises `LeftOut` naming its key, for the reader to report.

Calico v3.30's semantics, as its syncer and Felix apply them (facts in
../shared/reference/calico-policy.md sections 1 and 2):
- a policy is stored as `default.<name>` (or `<tier>.<name>`), its user's name in the
  `projectcalico.org/metadata` annotation; its tier is the one its stored name says; Felix breaks
  order ties on `<namespace>/<stored name>` (NetworkPolicy) or `<stored name>`;
- a stored policy with no `types` governs both directions (Felix); calicoctl always writes them;
- a NetworkPolicy selects `(<selector>) && projectcalico.org/namespace == '<ns>'`; a GNP's
  `namespaceSelector` is matched against the endpoint's `pcns.` labels, and once it is set every
  `all()` (in its own selector too) means "in a namespace"; rule selectors are scoped the same way,
  where `global()` (allowed only in a rule's namespaceSelector) means "in no namespace";
- doNotTrack and preDNAT policies are rendered for host endpoints only (`Policy.host_only`);
- an endpoint's own labels lose `pcns.`/`pcsa.` (they would spoof another namespace).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from calico_cni.model import kinds, selector
from calico_cni.model.kinds import endpoints, policy, sets
from calico_cni.model.kinds.policy_rules import PROTOCOL_NUMBERS
from calico_cni.model.resource import Resource, prefix, tier_of
from calico_cni.model.schema import Invalid, Kind, unknown_fields_skipped

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Labels = Mapping[str, str]

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAMESPACE_PREFIX = "pcns."
SERVICE_ACCOUNT_PREFIX = "pcsa."
INGRESS, EGRESS = "Ingress", "Egress"

# Fields Calico stores and we show but do not enforce (issue 18).


class StoredValue(Protocol):
    """What the cache holds per key (datastore.etcd.KeyValue)."""

    value: bytes
    mod_revision: int


# --- typed resources ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    """A Tier as Felix orders it: `order` None sorts after every ordered tier."""

    name: str
    order: float | None
    default_action: str  # "Deny" or "Pass"


@dataclass(frozen=True)
class PortRange:
    """An inclusive port range (a single port is low == high)."""

    low: int
    high: int


@dataclass(frozen=True)
class Ports:
    """A rule side's `ports` or `notPorts`: numeric ranges and named ports (resolved against the
    endpoint's `spec.ports` by whoever compiles the rule)."""

    ranges: tuple[PortRange, ...] = ()
    named: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ranges or self.named)


@dataclass(frozen=True)
class Icmp:
    """An `icmp` / `notICMP` match: a type, and a code only with a type."""

    type: int
    code: int | None = None


@dataclass(frozen=True)
class EntityRule:
    """A rule's `source` or `destination`. `selector` and `not_selector` are the effective ones Felix
    matches (the positive one scoped to a namespace as Calico scopes it; None: no constraint);
    the `*_text` fields are what the user wrote, for showing."""

    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    selector_text: str = ""
    not_selector_text: str = ""
    namespace_selector_text: str = ""
    ports: Ports = Ports()
    not_ports: Ports = Ports()
    unenforced: tuple[str, ...] = ()  # "serviceAccounts", "services"
    selector: Callable[[Labels], bool] | None = field(default=None, compare=False, repr=False)
    not_selector: Callable[[Labels], bool] | None = field(default=None, compare=False, repr=False)

    def selects(self, labels: Labels) -> bool:
        """Whether an endpoint (or network set) with `labels` passes this side's selectors."""
        if self.selector is not None and not self.selector(labels):
            return False
        return not (self.not_selector is not None and self.not_selector(labels))

    @property
    def has_selector(self) -> bool:
        """Whether this side matches on labels at all (else any address passes its selectors)."""
        return self.selector is not None or self.not_selector is not None


@dataclass(frozen=True)
class Rule:
    """One rule of a policy or profile: protocols as numbers, sides typed, and the stored fields we
    do not enforce named in `unenforced` ("http", "source.serviceAccounts", ...)."""

    action: str  # Allow, Deny, Log, Pass
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: Icmp | None = None
    not_icmp: Icmp | None = None
    source: EntityRule = EntityRule()
    destination: EntityRule = EntityRule()
    unenforced: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    never_matches: bool = False  # a side names Kubernetes Services: none exist here


@dataclass(frozen=True)
class Policy:
    """A NetworkPolicy or GlobalNetworkPolicy. `name` is the user's, `stored_name` the key's;
    `order` None means last. `types` are the directions it governs."""

    kind: str
    name: str
    stored_name: str
    namespace: str | None
    tier: str
    order: float | None
    selector_text: str
    namespace_selector_text: str
    types: frozenset[str]
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]
    unenforced: tuple[str, ...]
    revision: int
    selector: Callable[[Labels], bool] = field(compare=False, repr=False, default=lambda labels: True)

    @property
    def felix_key(self) -> str:
        """The name Felix breaks order ties on: `<namespace>/<stored name>` or `<stored name>`."""
        return f"{self.namespace}/{self.stored_name}" if self.namespace else self.stored_name

    @property
    def sort_key(self) -> tuple[float, str]:
        """Felix's order within a tier: order ascending (none = +infinity), then `felix_key`."""
        return (math.inf if self.order is None else self.order, self.felix_key)

    @property
    def host_only(self) -> bool:
        """doNotTrack and preDNAT policies are rendered for host endpoints only."""
        return "doNotTrack" in self.unenforced or "preDNAT" in self.unenforced

    def rules(self, direction: str) -> tuple[Rule, ...]:
        """Its ingress or egress rules."""
        return self.ingress if direction == INGRESS else self.egress


@dataclass(frozen=True)
class Profile:
    """A Profile: rules and the labels it gives its endpoints."""

    name: str
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]
    labels_to_apply: Mapping[str, str]

    def rules(self, direction: str) -> tuple[Rule, ...]:
        """Its ingress or egress rules."""
        return self.ingress if direction == INGRESS else self.egress


@dataclass(frozen=True)
class NetworkSet:
    """A NetworkSet (namespace set) or GlobalNetworkSet (namespace None), selectable by `labels`
    (a NetworkSet's carry `projectcalico.org/namespace`)."""

    name: str
    namespace: str | None
    nets: tuple[IPNetwork, ...]
    labels: Mapping[str, str]


@dataclass(frozen=True)
class EndpointPort:
    """A named port of a workload endpoint (what a rule's named port resolves to)."""

    name: str
    protocol: int
    port: int


@dataclass(frozen=True)
class WorkloadEndpoint:
    """A workload endpoint: `labels` are its own as Felix receives them (namespace and orchestrator
    stamped, `pcns.`/`pcsa.` removed, service account added); `endpoint_labels` adds its profiles'."""

    key: str
    namespace: str
    name: str
    node: str
    interface_name: str
    labels: Mapping[str, str]
    profiles: tuple[str, ...]
    ip_networks: tuple[IPNetwork, ...]
    ports: tuple[EndpointPort, ...]
    revision: int


# --- one stored record -------------------------------------------------------------------------


class LeftOut(Exception):
    """A record calicoctl would refuse or that cannot be read; the message names its key and says
    it is left out of policy."""


PolicyRecord = Tier | Policy | Profile | NetworkSet | WorkloadEndpoint


def read_record(key: str, stored: StoredValue) -> PolicyRecord | None:
    """The typed resource stored at `key`, or None for a key of another kind. Raises `LeftOut`
    for a key or record calicoctl would not accept, or one that cannot be read."""
    kind = _kind_of(key)
    if kind is None:
        return None
    path = key[len(prefix(kind)) :].split("/")
    if len(path) != (2 if kind.namespaced else 1) or not all(path):
        raise LeftOut(f"{key}: not a {kind.name} key; left out of policy")
    namespace = path[0] if kind.namespaced else None
    raw, doc = _decoded(kind, key, stored, namespace)
    try:
        if kind is policy.TIER:
            return _tier(raw, doc)
        if kind in (policy.NETWORK_POLICY, policy.GLOBAL_NETWORK_POLICY):
            return _policy(kind, path[-1], namespace, raw, doc, stored.mod_revision)
        if kind is policy.PROFILE:
            return _profile(doc)
        if kind in sets.KINDS:
            return _network_set(doc, namespace)
        return _endpoint(key, doc, stored.mod_revision)
    except Exception as exc:  # noqa: BLE001 - one record must not stop the others
        raise LeftOut(f"{key}: could not be read ({type(exc).__name__}: {exc}); left out of policy") from exc


_KINDS = (*policy.KINDS, *sets.KINDS, endpoints.WORKLOAD_ENDPOINT)
_KIND_OF_PREFIX = {prefix(k): k for k in _KINDS}
# The key prefixes of every record policy is read from (what calico-node's syncer watches for it).
PREFIXES = tuple(_KIND_OF_PREFIX)


def _kind_of(key: str) -> Kind | None:
    """The policy kind whose prefix holds `key`, or None (a key of another kind)."""
    return next((k for p, k in _KIND_OF_PREFIX.items() if key.startswith(p)), None)


def _decoded(kind: Kind, key: str, stored: StoredValue, namespace: str | None) -> tuple[dict, dict]:
    """(the record as stored, with the user's name and tier as Calico's client reads them; the same
    decoded by calicoctl's rules); `LeftOut` naming the key if calicoctl would refuse it."""
    try:
        raw = Resource.from_stored(kind, stored.value, stored.mod_revision).doc
        raw_meta = raw.get("metadata")
        if not isinstance(raw_meta, dict) or not isinstance(raw.get("spec", {}), dict):
            raise Invalid("metadata", "expected an object")
        if namespace is not None:
            raw_meta["namespace"] = namespace  # the key says where Felix puts it
        with unknown_fields_skipped():
            _, doc = kinds.decode({**raw, "apiVersion": kinds.API_VERSION, "kind": kind.name})
    except Invalid as exc:
        raise LeftOut(f"{key}: {exc}; left out of policy") from exc
    except Exception as exc:  # noqa: BLE001 - bad JSON, a huge number, a selector nested too deep
        raise LeftOut(f"{key}: could not be read ({type(exc).__name__}: {exc}); left out of policy") from exc
    return raw, doc


def _tier(raw: dict, doc: dict) -> Tier:
    # Felix orders by the stored order: a tier written without one sorts last (calicoctl's default
    # of 1,000,000 is a write-time default).
    order = (raw.get("spec") or {}).get("order")
    return Tier(doc["metadata"]["name"], None if order is None else float(order), doc["spec"]["defaultAction"])


def _policy(kind: Kind, stored_name: str, namespace: str | None, raw: dict, doc: dict, revision: int) -> Policy:
    spec = doc["spec"]
    raw_types = (raw.get("spec") or {}).get("types")
    # Felix: a stored policy without types governs both directions (calicoctl always writes them).
    types = frozenset(spec["types"]) if raw_types else frozenset((INGRESS, EGRESS))
    text = spec.get("selector", "")
    ns_text = spec.get("namespaceSelector", "")
    sa_text = spec.get("serviceAccountSelector", "")
    if namespace is not None:
        # Calico's networkpolicyprocessor: `(<selector>) && <namespace>`, then `&& <pcsa.-prefixed
        # serviceAccountSelector>` (no all() rewrite for a namespaced policy).
        matcher = _and(selector.parse(text), lambda labels: labels.get(NAMESPACE_LABEL) == namespace)
        if sa_text:
            matcher = _and(matcher, _prefixed_matcher(sa_text, SERVICE_ACCOUNT_PREFIX, SERVICE_ACCOUNT_LABEL, all_is_label=False))
    elif ns_text or sa_text:
        matcher = _gnp_selector(text, ns_text, sa_text)
    else:
        matcher = selector.parse(text)
    unenforced = tuple(f for f in policy.UNENFORCED_SPEC_FIELDS if spec.get(f))
    return Policy(
        kind=kind.name,
        name=doc["metadata"]["name"],
        stored_name=stored_name,
        namespace=namespace,
        tier=tier_of(stored_name),
        order=None if spec.get("order") is None else float(spec["order"]),
        selector_text=text,
        namespace_selector_text=ns_text,
        types=types,
        ingress=tuple(_rule(r, namespace) for r in spec.get("ingress") or ()),
        egress=tuple(_rule(r, namespace) for r in spec.get("egress") or ()),
        unenforced=unenforced,
        revision=revision,
        selector=matcher,
    )


def _gnp_selector(text: str, ns_text: str, sa_text: str) -> Callable[[Labels], bool]:
    """A GNP's effective selector when it sets a namespaceSelector or a serviceAccountSelector, as
    Calico's globalnetworkpolicyprocessor builds it: `(<selector>) && <namespaceSelector,
    pcns.-prefixed>`, every `all()` then becoming `has(projectcalico.org/namespace)`; then `&&
    <serviceAccountSelector, pcsa.-prefixed>`, every `all()` left becoming
    `has(projectcalico.org/serviceaccount)`. An empty selector adds no term. (Calico replaces the
    text literally, so an `all()` inside a quoted label value would be rewritten too: not followed
    here.)"""
    parts: list[Callable[[Labels], bool]] = []
    if ns_text:
        text = _ALL.sub(f"has({NAMESPACE_LABEL})", text)
        parts.append(_namespace_matcher(ns_text, in_rule=False))
    if sa_text:
        text = _ALL.sub(f"has({SERVICE_ACCOUNT_LABEL})", text)
        parts.append(_prefixed_matcher(sa_text, SERVICE_ACCOUNT_PREFIX, SERVICE_ACCOUNT_LABEL, all_is_label=True))
    if text:
        parts.insert(0, selector.parse(text))
    matcher = parts[0]
    for part in parts[1:]:
        matcher = _and(matcher, part)
    return matcher


def _profile(doc: dict) -> Profile:
    spec = doc["spec"]
    return Profile(
        name=doc["metadata"]["name"],
        ingress=tuple(_rule(r, None) for r in spec.get("ingress") or ()),
        egress=tuple(_rule(r, None) for r in spec.get("egress") or ()),
        labels_to_apply=dict(spec.get("labelsToApply") or {}),
    )


def _network_set(doc: dict, namespace: str | None) -> NetworkSet:
    labels = dict(doc["metadata"].get("labels") or {})
    if namespace is not None:
        labels[NAMESPACE_LABEL] = namespace
    nets = tuple(ipaddress.ip_network(n, strict=False) for n in doc["spec"].get("nets") or ())
    return NetworkSet(doc["metadata"]["name"], namespace, nets, labels)


def _endpoint(key: str, doc: dict, revision: int) -> WorkloadEndpoint:
    meta, spec = doc["metadata"], doc["spec"]
    # As Calico's syncer passes them to Felix: no pcns./pcsa. label (an endpoint must not claim
    # another namespace's labels), the service account's label from the spec.
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith((NAMESPACE_PREFIX, SERVICE_ACCOUNT_PREFIX))}
    if spec.get("serviceAccountName"):
        labels[SERVICE_ACCOUNT_LABEL] = spec["serviceAccountName"]
    ports = tuple(EndpointPort(p["name"], _protocol_number(p["protocol"]), p["port"]) for p in spec.get("ports") or () if p.get("name"))
    return WorkloadEndpoint(
        key=key,
        namespace=meta["namespace"],
        name=meta["name"],
        node=spec.get("node", ""),
        interface_name=spec["interfaceName"],
        labels=labels,
        profiles=tuple(spec.get("profiles") or ()),
        ip_networks=tuple(ipaddress.ip_network(n, strict=False) for n in spec.get("ipNetworks") or ()),
        ports=ports,
        revision=revision,
    )


# --- rules --------------------------------------------------------------------------------------


def _protocol_number(value: Any) -> int:
    return value if isinstance(value, int) else PROTOCOL_NUMBERS[value]


def _icmp(value: dict | None) -> Icmp | None:
    return None if value is None else Icmp(value["type"], value.get("code"))


def _ports(values: list | None) -> Ports:
    ranges, named = [], []
    for value in values or ():
        if isinstance(value, int):
            ranges.append(PortRange(value, value))
        elif re.fullmatch(r"\d+:\d+", value):
            low, high = value.split(":")
            ranges.append(PortRange(int(low), int(high)))
        else:
            named.append(value)
    return Ports(tuple(ranges), tuple(named))


def _rule(rule: dict, namespace: str | None) -> Rule:
    """A decoded rule, typed; `namespace` is a NetworkPolicy's (scopes its rule selectors)."""
    return Rule(
        action=rule["action"],
        ip_version=rule.get("ipVersion"),
        protocol=None if rule.get("protocol") is None else _protocol_number(rule["protocol"]),
        not_protocol=None if rule.get("notProtocol") is None else _protocol_number(rule["notProtocol"]),
        icmp=_icmp(rule.get("icmp")),
        not_icmp=_icmp(rule.get("notICMP")),
        source=_entity(rule.get("source") or {}, namespace),
        destination=_entity(rule.get("destination") or {}, namespace),
        unenforced=tuple(f for f in policy.UNENFORCED_RULE_FIELDS if f in rule)
        + tuple(f"{side}.{f}" for side in ("source", "destination") for f in policy.UNENFORCED_ENTITY_FIELDS if f in (rule.get(side) or {})),
        # A Kubernetes Service's endpoints: none exist without Kubernetes, so, as Felix's empty
        # service ipset, the rule matches nothing.
        never_matches=any("services" in (rule.get(side) or {}) for side in ("source", "destination")),
        annotations=dict((rule.get("metadata") or {}).get("annotations") or {}),
    )


def _entity(entity: dict, namespace: str | None) -> EntityRule:
    """A rule side with Calico's effective selector (rules.go getEndpointSelector): `(nsPart) &&
    ((serviceAccounts) && (selector))`, where nsPart is the namespaceSelector matched on `pcns.`
    labels, else the policy's own namespace (only when the side names a selector, notSelector or
    serviceAccounts); `notSelector` is never scoped. `selector_text` is what identifies the
    positive part: the user's selector, with the service-account condition when there is one."""
    text = entity.get("selector", "")
    not_text = entity.get("notSelector", "")
    ns_text = entity.get("namespaceSelector", "")
    sa_text, sa_part = _service_accounts(entity.get("serviceAccounts"))
    positive = selector.parse(text) if text else None
    if sa_part is not None:
        positive = sa_part if positive is None else _and(sa_part, positive)
        text = f"({sa_text}) && ({text})" if text else sa_text
    ns_part: Callable[[Labels], bool] | None = None
    if ns_text:
        ns_part = _namespace_matcher(ns_text, in_rule=True)
    elif namespace is not None and (text or not_text):
        ns_part = lambda labels: labels.get(NAMESPACE_LABEL) == namespace  # noqa: E731
    if ns_part is not None:
        positive = ns_part if positive is None else _and(ns_part, positive)
    return EntityRule(
        nets=tuple(ipaddress.ip_network(n) for n in entity.get("nets") or ()),
        not_nets=tuple(ipaddress.ip_network(n) for n in entity.get("notNets") or ()),
        selector_text=text,
        not_selector_text=not_text,
        namespace_selector_text=ns_text,
        ports=_ports(entity.get("ports")),
        not_ports=_ports(entity.get("notPorts")),
        unenforced=tuple(f for f in policy.UNENFORCED_ENTITY_FIELDS if f in entity),
        selector=positive,
        not_selector=selector.parse(not_text) if not_text else None,
    )


def _and(a: Callable[[Labels], bool], b: Callable[[Labels], bool]) -> Callable[[Labels], bool]:
    return lambda labels: a(labels) and b(labels)


_ALL = re.compile(r"\ball\s*\(\s*\)")
_GLOBAL = re.compile(r"\bglobal\s*\(\s*\)")


def _prefixed_matcher(text: str, prefix: str, label: str, *, all_is_label: bool, global_is_not_label: bool = False) -> Callable[[Labels], bool]:
    """A selector as Calico's syncer prefixes it (`parseSelectorAttachPrefix`: every label key gets
    `prefix`), matched here on a view of the labels: those with `prefix`, stripped of it, and a
    stand-in key for the endpoint's own `label`, which `all()` (and, with `global_is_not_label`,
    `!global()`) become `has(<label>)` for when Calico rewrites them so."""
    standin = "/" + label  # no label key starts with '/': no prefixed label can collide with it
    rewritten = _ALL.sub(f"has({standin})", text) if all_is_label else text
    if global_is_not_label:
        rewritten = _GLOBAL.sub(f"!has({standin})", rewritten)
    matcher = selector.parse(rewritten)

    def match(labels: Labels) -> bool:
        view = {k[len(prefix) :]: v for k, v in labels.items() if k.startswith(prefix)}
        if label in labels:
            view[standin] = ""
        return matcher(view)

    return match


def _namespace_matcher(text: str, *, in_rule: bool) -> Callable[[Labels], bool]:
    """A namespaceSelector as Calico rewrites it: every label key gets the `pcns.` prefix, then
    `all()` becomes `has(projectcalico.org/namespace)` (that key left unprefixed). Only a rule's
    namespaceSelector (`in_rule`) also has `global()` rewritten to `!has(projectcalico.org/namespace)`
    (Calico's rules.go); a GNP's spec.namespaceSelector never does (its processor rewrites `all()`
    alone, and calicoctl refuses `global()` there), so an unrewritten `global()` matches anything, as
    in Calico's selector."""
    return _prefixed_matcher(text, NAMESPACE_PREFIX, NAMESPACE_LABEL, all_is_label=True, global_is_not_label=in_rule)


def _service_accounts(match: dict | None) -> tuple[str, Callable[[Labels], bool] | None]:
    """A rule side's `serviceAccounts` as Calico's parseServiceAccounts turns it into a selector: its
    `selector` on `pcsa.`-prefixed labels, and its `names` as `projectcalico.org/serviceaccount in
    {...}`, ANDed; ("", None) when it sets neither. Kubernetes gives pods those labels through their
    service account's profile; here only `calicoctl label` does, so such a rule matches only
    endpoints labelled so. The text identifies the condition (selector sets are keyed on it)."""
    if not match:
        return "", None
    texts: list[str] = []
    parts: list[Callable[[Labels], bool]] = []
    if match.get("selector"):
        texts.append(f"{SERVICE_ACCOUNT_PREFIX}({match['selector']})")
        parts.append(_prefixed_matcher(match["selector"], SERVICE_ACCOUNT_PREFIX, SERVICE_ACCOUNT_LABEL, all_is_label=False))
    names = frozenset(match.get("names") or ())
    if names:
        texts.append(f"{SERVICE_ACCOUNT_LABEL} in {{{', '.join(repr(n) for n in sorted(names))}}}")
        parts.append(lambda labels: labels.get(SERVICE_ACCOUNT_LABEL) in names)
    if not parts:
        return "", None
    combined = parts[0] if len(parts) == 1 else _and(parts[0], parts[1])
    return " && ".join(texts), combined
