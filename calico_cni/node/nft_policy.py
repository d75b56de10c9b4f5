"""Network policy as nftables sections of the daemon's tables (pure): what Felix programs per
endpoint (v3.30 rules/endpoints.go, policy.go, dispatch.go, static.go), laid out for nftables.

Marks (Felix's defaults in FelixConfiguration's mark mask 0xffff0000): ACCEPT_MARK 0x10000 (a
policy or profile allowed: the endpoint chain returns), PASS_MARK 0x20000 (a policy passed: the
rest of its tier is skipped), SCRATCH_MARK 0x80000 (a rule needing an OR of matches).

Base chains (one family's table):
- `policy-forward` (forward hook, filter priority): traffic neither from nor to `cali*` returns at
  once; established and related accepted, invalid dropped; from `cali*`: jump `from-wl-dispatch`
  (the sender's egress); to `cali*`: jump `to-wl-dispatch` (the receiver's ingress).
- `policy-input` (input hook): from `cali*`: jump `wl-to-host`: established/related accepted,
  invalid dropped, (IPv6) ICMPv6 130-133, 135, 136 accepted, jump `from-wl-dispatch` (the pod's
  egress policy), then the endpoint-to-host action (Drop: drop; Accept and Return: accept).
- `policy-antispoof` (prerouting hook, raw priority): from `cali*`, a source whose reverse path is
  not the interface it came in on is dropped (`fib saddr . iif oif missing`), as Felix's rpfilter.
Host to a local pod (output hook) is not policed.

Dispatch: verdict maps `from-wl` (iifname: goto `fw-<iface>`) and `to-wl` (oifname: goto
`tw-<iface>`) read by the chains `from-wl-dispatch` / `to-wl-dispatch`, whose last rule drops
(an unknown `cali*` interface: fail closed).

Endpoint chains `tw-<iface>` (ingress) and `fw-<iface>` (egress): clear ACCEPT and PASS; (fw
only) drop UDP to the VXLAN port and IPIP; per applicable tier: clear PASS, per policy "PASS clear:
jump the policy chain", "ACCEPT set: return", then the end-of-tier drop when PASS is clear (not when
the tier's defaultAction is Pass); per profile: jump its chain, "ACCEPT set: return" (a profile
that does not exist: drop there); finally drop.

Policy chains `pi-<id>` / `po-<id>` and profile chains `pri-<name>` / `pro-<name>`, shared by
every endpoint they apply to: one rule per Calico rule; Allow sets ACCEPT and returns, Pass sets
PASS and returns, Deny drops, Log logs with the prefix `calico-packet: ` (and goes on); every rule
has a counter. Only the policies and profiles some local endpoint uses get chains. A rule is
rendered per family as Felix's FilterRuleToIPVersion does (ipVersion of the other family, or nets
emptied by dropping the other family's CIDRs: skipped); protocols as `meta l4proto`, ports as
`th sport/dport`, ICMP as `icmp`/`icmpv6` (so only ICMP of the table's family matches). Selector
matches use sets holding the addresses of every matching endpoint on every node and the nets of
matching network sets, one set per selector with its namespace scope (rules with the same selector
share it; an empty set matches nothing); named ports use sets of address . protocol . port of the
endpoints the side's selector matches. A port list mixing numbers and names is an OR: SCRATCH is
set, cleared when the packet matches none of the alternatives, and tested by the rule itself.

Names (`sel-<hash>`, `np-<hash>` for sets; chains as above) are readable where the name allows it
(`[a-z0-9./-]`, at most 64 characters), else a readable prefix, `_` and a hash: `_` never occurs
in a readable name, so a hashed name never equals another's readable one.

A record calicoctl would refuse (a selector that does not parse, a port out of range, more rules
than MAX_RULES_PER_DIRECTION), written to etcd by hand, never gets here: policy_model leaves it
out when it is read and the daemon reports it (the issue's "skipped with a report": it applies
nowhere, as an invalid policy in Calico). What is read but cannot be rendered fails closed: it gets
no chain, every endpoint it applies to drops at its place instead (a Deny that is in the view must
not open traffic), and `PolicyCompiler.problems` names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import operator
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from calico_cni.model.kinds.policy_rules import MAX_RULES_PER_DIRECTION
from calico_cni.node.cluster_view import ENDPOINT_TO_HOST_ACTIONS
from calico_cni.node.nft_tables import Chain, NftMap, NftSet, Section, address_type
from calico_cni.node.policy_model import EGRESS, INGRESS, EntityRule, IPNetwork, Labels, NetworkSet, Policy, Ports, Profile, Rule, WorkloadEndpoint
from calico_cni.node.policy_view import EndpointPolicies, PolicyView, applicable, endpoint_labels, network_set_labels

ACCEPT_MARK, PASS_MARK, SCRATCH_MARK = 0x10000, 0x20000, 0x80000
POD_INTERFACES = "cali*"
LOG_PREFIX = "calico-packet: "
# calicoctl refuses more rules than this per direction (policy_rules); a record written straight
# to etcd with more is not rendered (fail closed, see the module docstring).
MAX_RULES = MAX_RULES_PER_DIRECTION
MAX_NAME = 64  # nft allows 256; short names keep listings and error messages readable
HASH_CHARS = 24  # 96 bits: two inputs sharing a name would need a deliberate collision search

FORWARD, INPUT, ANTISPOOF, WL_TO_HOST = "policy-forward", "policy-input", "policy-antispoof", "wl-to-host"
FROM_WL, TO_WL = "from-wl", "to-wl"
FROM_DISPATCH, TO_DISPATCH = "from-wl-dispatch", "to-wl-dispatch"
FILTER_HOOK = "type filter hook {} priority filter; policy accept;"
ICMP = {4: (1, "icmp"), 6: (58, "icmpv6")}
ICMPV6_TO_HOST = (130, 131, 132, 133, 135, 136)  # MLD and router/neighbour discovery (Felix's list)
IPIP = 4
ACTIONS = ("Allow", "Deny", "Log", "Pass")

_READABLE = re.compile(r"[a-z0-9./-]+\Z")
_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}\Z")  # what may stand quoted in a map key

SelectorId = tuple[str, str, str]  # (scope: "" | "ns" | "own", namespaceSelector or namespace, selector text)
Matcher = Callable[[Labels], bool]


@dataclass(frozen=True)
class PolicySettings:
    """What FelixConfiguration says that the policy section depends on."""

    endpoint_to_host_action: str = "Drop"  # defaultEndpointToHostAction: Drop | Return | Accept
    vxlan_port: int = 4789  # UDP to it from a workload is dropped (the fw- chains)


# --- names --------------------------------------------------------------------------------------


def _name(prefix: str, readable: str) -> str:
    """`prefix + readable` when that is a valid, short nft name; else a readable cut, `_` and a hash
    of the whole (readable names never hold `_`, so the two forms never meet)."""
    if _READABLE.match(readable) and len(prefix) + len(readable) <= MAX_NAME:
        return prefix + readable
    digest = hashlib.sha256(readable.encode()).hexdigest()[:HASH_CHARS]
    cut = MAX_NAME - len(prefix) - 1 - HASH_CHARS
    return f"{prefix}{re.sub(r'[^a-z0-9.-]', '-', readable.lower())[:cut]}_{digest}"


def endpoint_chains(interface: str) -> tuple[str, str]:
    """The chains of the endpoint on `interface`: (ingress `tw-<iface>`, egress `fw-<iface>`)."""
    return _name("tw-", interface), _name("fw-", interface)


def policy_chain(policy: Policy, direction: str) -> str:
    """The chain of `policy`'s rules of `direction`: `pi-<id>` (ingress) or `po-<id>` (egress), the
    id being Felix's key of the policy (`<namespace>/<stored name>` or `<stored name>`)."""
    return _name("pi-" if direction == INGRESS else "po-", policy.felix_key)


def profile_chain(name: str, direction: str) -> str:
    """The chain of profile `name`'s rules of `direction`: `pri-<name>` or `pro-<name>`."""
    return _name("pri-" if direction == INGRESS else "pro-", name)


def _hashed(prefix: str, identity: object) -> str:
    return prefix + hashlib.sha256(repr(identity).encode()).hexdigest()[:32]


def selector_set(identity: SelectorId) -> str:
    """The set of addresses a (scoped) selector matches."""
    return _hashed("sel-", identity)


def named_port_set(identity: SelectorId | None, names: tuple[str, ...]) -> str:
    """The set of address . protocol . port of the named ports `names` of the endpoints a side's
    positive selector (None: every endpoint) matches."""
    return _hashed("np-", (identity, names))


# --- marks --------------------------------------------------------------------------------------


def _mark_set(bit: int) -> str:
    return f"meta mark set meta mark | 0x{bit:08x}"


def _mark_clear(bits: int) -> str:
    return f"meta mark set meta mark & 0x{~bits & 0xFFFFFFFF:08x}"


def _if_set(bit: int) -> str:
    return f"meta mark & 0x{bit:08x} == 0x{bit:08x}"


def _if_clear(bit: int) -> str:
    return f"meta mark & 0x{bit:08x} == 0x00000000"


_VERDICT = {
    "Allow": f"{_mark_set(ACCEPT_MARK)} return",
    "Pass": f"{_mark_set(PASS_MARK)} return",
    "Deny": "drop",
    "Log": f'log prefix "{LOG_PREFIX}"',
}


# --- one rule -----------------------------------------------------------------------------------


@dataclass
class _Uses:
    """The sets one chain's rules read: selector identities (with a matcher for each) and named-port
    sets (positive identity or None, names)."""

    selectors: dict[SelectorId, Matcher] = field(default_factory=dict)
    named: set[tuple[SelectorId | None, tuple[str, ...]]] = field(default_factory=set)

    def selector(self, identity: SelectorId, matcher: Matcher) -> str:
        self.selectors.setdefault(identity, matcher)
        return selector_set(identity)

    def named_ports(self, identity: SelectorId | None, matcher: Matcher | None, names: tuple[str, ...]) -> str:
        if identity is not None and matcher is not None:
            self.selectors.setdefault(identity, matcher)
        self.named.add((identity, names))
        return named_port_set(identity, names)


def _positive_id(side: EntityRule, namespace: str | None) -> SelectorId | None:
    """The identity of a side's effective positive selector, as policy_model scopes it: by its
    namespaceSelector, else by the policy's namespace (when the side names a selector or
    notSelector), else the selector alone; None when there is none."""
    if side.selector is None:
        return None
    if side.namespace_selector_text:
        return ("ns", side.namespace_selector_text, side.selector_text)
    if namespace is not None and (side.selector_text or side.not_selector_text):
        return ("own", namespace, side.selector_text)
    return ("", "", side.selector_text)


def _nets(nets: Iterable[IPNetwork]) -> str:
    """One CIDR, or an anonymous set of them merged (nft refuses overlapping intervals)."""
    merged = [str(n) for n in ipaddress.collapse_addresses(sorted(set(nets)))]  # type: ignore[type-var]
    return merged[0] if len(merged) == 1 else "{ " + ", ".join(merged) + " }"


def _ports(ports: Ports) -> str:
    """A side's numeric ports: one port or range, or an anonymous set of them merged."""
    merged: list[list[int]] = []
    for r in sorted(ports.ranges, key=lambda r: (r.low, r.high)):
        if merged and r.low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], r.high)
        else:
            merged.append([r.low, r.high])
    texts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in merged]
    return texts[0] if len(texts) == 1 else "{ " + ", ".join(texts) + " }"


def render_rule(rule: Rule, namespace: str | None, family: int, uses: _Uses) -> list[str]:
    """The nft rules of one Calico rule in `family`'s table (none when the rule does not apply to
    the family: its ipVersion, its nets, or an ICMP match of the other family). Raises ValueError
    for a rule that cannot be rendered."""
    if rule.action not in ACTIONS:
        raise ValueError(f"unknown action {rule.action!r}")
    if rule.never_matches or (rule.ip_version is not None and rule.ip_version != family):
        return []
    _, ip = address_type(family)
    icmp_protocol, icmp = ICMP[family]
    matches: list[str] = []
    if rule.protocol is not None:
        matches.append(f"meta l4proto {int(rule.protocol)}")
    if rule.not_protocol is not None:
        matches.append(f"meta l4proto != {int(rule.not_protocol)}")
    if rule.icmp is not None or rule.not_icmp is not None:
        # An ICMP match only ever matches ICMP of the table's family.
        if (rule.protocol is not None and rule.protocol != icmp_protocol) or rule.not_protocol == icmp_protocol:
            return []
        if rule.icmp is not None:
            matches.append(f"{icmp} type {int(rule.icmp.type)}" + ("" if rule.icmp.code is None else f" {icmp} code {int(rule.icmp.code)}"))
        if rule.not_icmp is not None:
            t, c = int(rule.not_icmp.type), rule.not_icmp.code
            matches.append(f"{icmp} type != {t}" if c is None else f"{icmp} type . {icmp} code != {{ {t} . {int(c)} }}")
    alternatives: list[str] = []  # per side, "none of the alternatives" (an OR through SCRATCH_MARK)
    for side, addr, port in ((rule.source, "saddr", "sport"), (rule.destination, "daddr", "dport")):
        # Felix's FilterRuleToIPVersion: the other family's CIDRs go; an emptied field skips the rule.
        nets = [n for n in side.nets if n.version == family]
        not_nets = [n for n in side.not_nets if n.version == family]
        if (side.nets and not nets) or (side.not_nets and not not_nets):
            return []
        if nets:
            matches.append(f"{ip} {addr} {_nets(nets)}")
        if not_nets:
            matches.append(f"{ip} {addr} != {_nets(not_nets)}")
        positive = _positive_id(side, namespace)
        if positive is not None and side.selector is not None:
            matches.append(f"{ip} {addr} @{uses.selector(positive, side.selector)}")
        if side.not_selector is not None:
            # notSelector is never scoped: the same set as that selector text unscoped.
            matches.append(f"{ip} {addr} != @{uses.selector(('', '', side.not_selector_text), side.not_selector)}")
        concat = f"{ip} {addr} . meta l4proto . th {port}"
        if side.ports:
            named = tuple(sorted(set(side.ports.named)))
            numeric = _ports(side.ports) if side.ports.ranges else ""
            lookup = f"@{uses.named_ports(positive, side.selector, named)}" if named else ""
            if numeric and lookup:
                alternatives.append(f"th {port} != {numeric} {concat} != {lookup}")
            elif numeric:
                matches.append(f"th {port} {numeric}")
            else:
                matches.append(f"{concat} {lookup}")
        if side.not_ports:
            if side.not_ports.ranges:
                matches.append(f"th {port} != {_ports(side.not_ports)}")
            if side.not_ports.named:
                named = tuple(sorted(set(side.not_ports.named)))
                matches.append(f"{concat} != @{uses.named_ports(positive, side.selector, named)}")
    final = " ".join([*matches, "counter", _VERDICT[rule.action]])
    if not alternatives:
        return [final]
    # Ports mixing numbers and names: SCRATCH set, cleared when a side matches none of its
    # alternatives, tested by the rule itself (one rule, so a Log logs once).
    return [_mark_set(SCRATCH_MARK), *(f"{alt} {_mark_clear(SCRATCH_MARK)}" for alt in alternatives), f"{_if_set(SCRATCH_MARK)} {final}"]


def render_rules(rules: tuple[Rule, ...], namespace: str | None, family: int, uses: _Uses) -> tuple[str, ...]:
    """A policy's or profile's rules of one direction; ValueError when there are too many or one
    cannot be rendered."""
    if len(rules) > MAX_RULES:
        raise ValueError(f"{len(rules)} rules, more than the {MAX_RULES} accepted")
    out: list[str] = []
    for i, rule in enumerate(rules):
        try:
            out += render_rule(rule, namespace, family, uses)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"rule {i}: {exc}") from exc
    return tuple(out)


# --- memos --------------------------------------------------------------------------------------


@dataclass
class _Entity:
    """Something a selector set can hold: an endpoint (any node) or a network set."""

    record: WorkloadEndpoint | NetworkSet
    labels: Mapping[str, str]


@dataclass
class _Members:
    """The entities one selector matches; `version` moves whenever the set's contents may have."""

    matcher: Matcher
    keys: set[str]
    version: int = 0
    used: int = 0  # the pass that last used it


def _same(a: tuple, b: tuple) -> bool:
    """The same records, object for object (PolicyView.read with a memo keeps unchanged ones)."""
    return len(a) == len(b) and all(map(operator.is_, a, b))


def _same_mapping(a: Mapping, b: Mapping) -> bool:
    return len(a) == len(b) and all(b.get(k) is v for k, v in a.items())


ALL_ENDPOINTS: SelectorId = ("all", "", "")  # named ports of a side with no positive selector


class PolicyCompiler:
    """Keeps memos across passes so that a pass after one change costs little. The memos trust
    object identity: records that are the same objects as last pass (PolicyView.read's memo) are
    not looked at again; any other view is still compiled right, only slower."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._pass = 0
        self._policies: tuple = ()
        self._tiers: Mapping = {}
        self._profiles: Mapping = {}
        self._generation = 0  # moves when policies, tiers or profiles change
        self._layout = 0  # moves when tiers or profiles change
        self._applicable: dict[str, tuple[WorkloadEndpoint, EndpointPolicies, dict, int, int]] = {}
        # Policies by Felix's key, the previous such map and the keys that differ between the two;
        # per local endpoint, the policies whose selector matches it and the map that was against.
        self._policy_by_key: dict[str, Policy] = {}
        self._policy_diff: tuple[dict[str, Policy], set[str]] = ({}, set())
        self._selected: dict[str, tuple[WorkloadEndpoint, dict[str, Policy], dict[str, Policy]]] = {}
        self._entities: dict[str, _Entity] = {}
        self._members: dict[SelectorId, _Members] = {}
        self._sets: dict[tuple, tuple[int, NftSet]] = {}
        self._chains: dict[tuple, tuple[object, object, int]] = {}  # (record, chain and uses or why not, pass last used)
        self._endpoint_chains: dict[str, tuple[EndpointPolicies, tuple, Chain, int]] = {}

    # --- what changed -------------------------------------------------------------------------

    def _refresh(self, view: PolicyView) -> None:
        """Forget what the view's changes invalidate; bring selector memberships up to date for the
        entities that changed."""
        profiles_same = _same_mapping(self._profiles, view.profiles)
        policies_same = _same(self._policies, view.policies)
        tiers_same = _same_mapping(self._tiers, view.tiers)
        if not (profiles_same and policies_same and tiers_same):
            self._generation += 1
        if not (profiles_same and tiers_same):
            self._layout += 1
        if not policies_same:
            by_key = {p.felix_key: p for p in view.policies}
            old = self._policy_by_key
            self._policy_diff = (old, {k for k, p in by_key.items() if old.get(k) is not p} | {k for k in old if k not in by_key})
            self._policy_by_key = by_key
        if not profiles_same:
            self._selected.clear()  # profiles give labels
        self._policies, self._tiers, self._profiles = view.policies, view.tiers, view.profiles
        current: dict[str, WorkloadEndpoint | NetworkSet] = {f"w:{k}": e for k, e in view.endpoints.items()}
        current.update({f"n:{s.namespace or ''}/{s.name}": s for s in view.network_sets})
        if profiles_same:
            changed = {k for k, r in current.items() if k not in self._entities or self._entities[k].record is not r}
            changed |= {k for k in self._entities if k not in current}
        else:  # profiles give labels: every entity may have changed
            changed = set(current) | set(self._entities)
        for key in changed:
            record = current.get(key)
            if record is None:
                self._entities.pop(key, None)
            elif isinstance(record, WorkloadEndpoint):
                self._entities[key] = _Entity(record, endpoint_labels(view, record))
            else:
                self._entities[key] = _Entity(record, network_set_labels(view, record))
        if not changed:
            return
        for members in self._members.values():
            touched = False
            for key in changed:
                entity = self._entities.get(key)
                if key in members.keys:
                    touched = True
                    members.keys.discard(key)
                if entity is not None and members.matcher(entity.labels):
                    touched = True
                    members.keys.add(key)
            if touched:
                members.version += 1

    def _members_of(self, identity: SelectorId, matcher: Matcher) -> _Members:
        members = self._members.get(identity)
        if members is None:
            keys = {k for k, e in self._entities.items() if matcher(e.labels)}
            members = self._members[identity] = _Members(matcher, keys)
        members.used = self._pass
        return members

    def _applicable_to(self, view: PolicyView, endpoint: WorkloadEndpoint) -> tuple[EndpointPolicies, dict[str, tuple[tuple[Policy | Profile, str], ...]]]:
        """What applies to `endpoint`, and per direction the policies and profiles with their chain
        names (memoized while the endpoint and the policies, tiers and profiles are the same)."""
        cached = self._applicable.get(endpoint.key)
        if cached is not None and cached[0] is endpoint and cached[3] == self._generation:
            return cached[1], cached[2]
        # applicable() over the policies that select the endpoint (a superset of what it keeps is
        # enough: it selects again), so that a changed policy costs one selector per endpoint.
        matched, same = self._select(endpoint)
        reuse = cached is not None and cached[0] is endpoint and same and cached[4] == self._layout
        result = cached[1] if reuse else applicable(dataclasses.replace(view, policies=tuple(matched.values())), endpoint)  # type: ignore[index]
        if cached is not None and cached[0] is endpoint and (reuse or cached[1] == result):
            self._applicable[endpoint.key] = (endpoint, cached[1], cached[2], self._generation, self._layout)
            return cached[1], cached[2]  # the same object: the endpoint chains' memo holds
        needs: dict[str, tuple[tuple[Policy | Profile, str], ...]] = {}
        for direction in (INGRESS, EGRESS):
            needs[direction] = tuple((p, policy_chain(p, direction)) for tier in result.tiers(direction) for p in tier.policies) + tuple(
                (profile, profile_chain(name, direction)) for name, profile in result.profiles if profile is not None
            )
        self._applicable[endpoint.key] = (endpoint, result, needs, self._generation, self._layout)
        return result, needs

    def _select(self, endpoint: WorkloadEndpoint) -> tuple[dict[str, Policy], bool]:
        """The policies whose selector matches `endpoint`, by Felix's key, and whether they are the
        same as last pass's: brought up to date by the policies that changed since, else evaluated
        whole."""
        by_key = self._policy_by_key
        labels = self._entities[f"w:{endpoint.key}"].labels
        entry = self._selected.get(endpoint.key)
        same = False
        if entry is not None and entry[0] is endpoint and entry[1] is by_key:
            return entry[2], True
        if entry is not None and entry[0] is endpoint and entry[1] is self._policy_diff[0]:
            matched = dict(entry[2])
            same = True
            for key in self._policy_diff[1]:
                same = same and key not in matched
                matched.pop(key, None)
                policy = by_key.get(key)
                if policy is not None and policy.selector(labels):
                    matched[key] = policy
                    same = False
        else:
            matched = {k: p for k, p in by_key.items() if p.selector(labels)}
        self._selected[endpoint.key] = (endpoint, by_key, matched)
        return matched, same

    # --- sets ---------------------------------------------------------------------------------

    def _selector_set(self, identity: SelectorId, matcher: Matcher, family: int) -> NftSet:
        members = self._members_of(identity, matcher)
        key = ("sel", identity, family)
        cached = self._sets.get(key)
        if cached is not None and cached[0] == members.version:
            return cached[1]
        nets = [n for k in members.keys for n in _nets_of(self._entities[k].record) if n.version == family]
        merged = tuple(str(n) for n in ipaddress.collapse_addresses(sorted(set(nets))))  # type: ignore[type-var]
        result = NftSet(selector_set(identity), merged, interval=True)
        self._sets[key] = (members.version, result)
        return result

    def _named_set(self, identity: SelectorId | None, names: tuple[str, ...], matcher: Matcher | None, family: int) -> NftSet:
        members = self._members_of(identity or ALL_ENDPOINTS, matcher or (lambda labels: True))
        key = ("np", identity, names, family)
        cached = self._sets.get(key)
        if cached is not None and cached[0] == members.version:
            return cached[1]
        by_port: dict[tuple[int, int], list[IPNetwork]] = {}
        for k in members.keys:
            record = self._entities[k].record
            if not isinstance(record, WorkloadEndpoint):
                continue
            for port in record.ports:
                if port.name in names:
                    by_port.setdefault((port.protocol, port.port), []).extend(n for n in record.ip_networks if n.version == family)
        elements = sorted(
            f"{net} . {proto} . {number}"
            for (proto, number), nets in by_port.items()
            for net in ipaddress.collapse_addresses(sorted(set(nets)))  # type: ignore[type-var]
        )
        addr_type, _ = address_type(family)
        result = NftSet(named_port_set(identity, names), tuple(elements), interval=True, type=f"{addr_type} . inet_proto . inet_service")
        self._sets[key] = (members.version, result)
        return result

    # --- chains -------------------------------------------------------------------------------

    def _rules_chain(self, record: Policy | Profile, name: str, direction: str, family: int) -> tuple[Chain, _Uses] | str:
        """The chain of a policy's or profile's rules (memoized per record object), or why it
        cannot be rendered."""
        key = (type(record).__name__, name, family)
        cached = self._chains.get(key)
        if cached is not None and cached[0] is record:
            self._chains[key] = (record, cached[1], self._pass)
            return cached[1]  # type: ignore[return-value]
        uses = _Uses()
        namespace = record.namespace if isinstance(record, Policy) else None
        result: tuple[Chain, _Uses] | str
        try:
            result = (Chain(name, None, render_rules(record.rules(direction), namespace, family, uses)), uses)
        except ValueError as exc:
            result = str(exc)
        self._chains[key] = (record, result, self._pass)
        return result

    def section(self, view: PolicyView, nodename: str, family: int, settings: PolicySettings = PolicySettings()) -> Section:
        """The policy section of `family`'s table on node `nodename`: base chains, dispatch, the
        chains of this node's endpoints and of the policies and profiles they use, and the sets
        those read. What cannot be rendered is named in `problems` and drops where it applies."""
        self._pass += 1
        self.problems = []
        self._refresh(view)
        if settings.endpoint_to_host_action not in ENDPOINT_TO_HOST_ACTIONS:
            self.problems.append(f"defaultEndpointToHostAction {settings.endpoint_to_host_action!r} is not Drop, Return or Accept: workload to host dropped")
        locals_by_interface: dict[str, list[WorkloadEndpoint]] = {}
        for endpoint in view.endpoints.values():
            if endpoint.node == nodename and endpoint.interface_name:
                locals_by_interface.setdefault(endpoint.interface_name, []).append(endpoint)
        chains: dict[str, Chain] = {}
        failed: set[str] = set()
        uses: list[_Uses] = []
        endpoint_chains_: list[Chain] = []
        from_wl: list[tuple[str, str]] = []
        to_wl: list[tuple[str, str]] = []
        for interface in sorted(locals_by_interface):
            endpoints = locals_by_interface[interface]
            if not _INTERFACE.match(interface):
                self.problems.append(
                    f"endpoints {', '.join(sorted(e.key for e in endpoints))}: interface name {interface!r} not usable in nftables; its traffic is dropped"
                )
                continue
            tw, fw = endpoint_chains(interface)
            from_wl.append((f'"{interface}"', f"goto {fw}"))
            to_wl.append((f'"{interface}"', f"goto {tw}"))
            if len(endpoints) > 1:
                self.problems.append(
                    f"interface {interface} claimed by {len(endpoints)} endpoints ({', '.join(sorted(e.key for e in endpoints))}); its traffic is dropped"
                )
                endpoint_chains_ += [Chain(tw, None, ("counter drop",)), Chain(fw, None, ("counter drop",))]
                continue
            policies, needs = self._applicable_to(view, endpoints[0])
            for direction, chain_name in ((INGRESS, tw), (EGRESS, fw)):
                for record, name in needs[direction]:
                    if name not in chains and name not in failed:
                        self._need(chains, failed, uses, record, name, direction, family)
                endpoint_chains_.append(self._endpoint_chain(chain_name, direction, policies, failed, settings))
        sets: dict[str, NftSet] = {}
        for use in uses:
            for identity, matcher in use.selectors.items():
                if identity != ALL_ENDPOINTS:
                    s = self._selector_set(identity, matcher, family)
                    sets[s.name] = s
            for identity, names in use.named:
                s = self._named_set(identity, names, use.selectors.get(identity) if identity is not None else None, family)
                sets[s.name] = s
        self._forget(view)
        maps = (NftMap(FROM_WL, "ifname", tuple(from_wl)), NftMap(TO_WL, "ifname", tuple(to_wl)))
        ordered = (
            *_base_chains(family, settings),
            *sorted(endpoint_chains_, key=lambda c: c.name),
            *(chains[n] for n in sorted(chains)),
        )
        return Section(tuple(sets[n] for n in sorted(sets)), ordered, maps)

    def _endpoint_chain(self, name: str, direction: str, policies: EndpointPolicies, failed: set[str], settings: PolicySettings) -> Chain:
        """`_endpoint_chain`, memoized on the applicable policies' object (the applicable memo keeps
        it while nothing it depends on changed), the failed chains and the settings."""
        token = (frozenset(failed), settings)
        cached = self._endpoint_chains.get(name)
        if cached is not None and cached[0] is policies and cached[1] == token:
            chain = cached[2]
        else:
            chain = _endpoint_chain(name, direction, policies, failed, settings)
        self._endpoint_chains[name] = (policies, token, chain, self._pass)
        return chain

    def _need(self, chains: dict[str, Chain], failed: set[str], uses: list[_Uses], record: Policy | Profile, name: str, direction: str, family: int) -> None:
        """Render `record`'s chain once per section; a failure is a problem and a name in `failed`."""
        if name in chains or name in failed:
            return
        result = self._rules_chain(record, name, direction, family)
        if isinstance(result, str):
            failed.add(name)
            what = f"{record.kind}({record.felix_key})" if isinstance(record, Policy) else f"Profile({record.name})"
            self.problems.append(f"{what} {direction.lower()}: {result}; not rendered: the endpoints it applies to drop at its place")
            return
        chains[name] = result[0]
        uses.append(result[1])

    def _forget(self, view: PolicyView) -> None:
        """Drop memos no recent pass used (each family's section is one pass) and those of endpoints
        gone, so that memory follows what is in use."""
        recent = self._pass - 2
        self._chains = {k: v for k, v in self._chains.items() if v[2] >= recent}
        self._endpoint_chains = {k: v for k, v in self._endpoint_chains.items() if v[3] >= recent}
        self._applicable = {k: v for k, v in self._applicable.items() if k in view.endpoints}
        self._selected = {k: v for k, v in self._selected.items() if k in view.endpoints}
        stale = {i for i, m in self._members.items() if m.used < recent}
        for identity in stale:
            del self._members[identity]
        if stale:
            self._sets = {k: v for k, v in self._sets.items() if k[1] not in stale and (k[0] != "np" or (k[1] or ALL_ENDPOINTS) not in stale)}


def _nets_of(record: WorkloadEndpoint | NetworkSet) -> tuple[IPNetwork, ...]:
    return record.ip_networks if isinstance(record, WorkloadEndpoint) else record.nets


def _endpoint_chain(name: str, direction: str, policies: EndpointPolicies, failed: set[str], settings: PolicySettings) -> Chain:
    """`tw-<iface>` or `fw-<iface>`: the endpoint's tiers, then its profiles, then drop."""
    rules = [_mark_clear(ACCEPT_MARK | PASS_MARK)]
    if direction == EGRESS:
        rules += [f"udp dport {int(settings.vxlan_port)} counter drop", f"meta l4proto {IPIP} counter drop"]
    for tier in policies.tiers(direction):
        rules.append(_mark_clear(PASS_MARK))
        for policy in tier.policies:
            chain = policy_chain(policy, direction)
            if chain in failed:
                rules.append(f"{_if_clear(PASS_MARK)} counter drop")
            else:
                rules += [f"{_if_clear(PASS_MARK)} jump {chain}", f"{_if_set(ACCEPT_MARK)} return"]
        if tier.default_action != "Pass":
            rules.append(f"{_if_clear(PASS_MARK)} counter drop")
    for profile_name, profile in policies.profiles:
        chain = profile_chain(profile_name, direction)
        if profile is None or chain in failed:
            rules.append("counter drop")
        else:
            rules += [f"jump {chain}", f"{_if_set(ACCEPT_MARK)} return"]
    rules.append("counter drop")
    return Chain(name, None, tuple(rules))


def _base_chains(family: int, settings: PolicySettings) -> tuple[Chain, ...]:
    """The hooked chains and the dispatch chains (fixed but for the family and the settings)."""
    pods = f'"{POD_INTERFACES}"'
    forward = Chain(
        FORWARD,
        FILTER_HOOK.format("forward"),
        (
            f"iifname != {pods} oifname != {pods} return",
            "ct state established,related accept",
            "ct state invalid drop",
            f"iifname {pods} jump {FROM_DISPATCH}",
            f"oifname {pods} jump {TO_DISPATCH}",
        ),
    )
    to_host = ["ct state established,related accept", "ct state invalid drop"]
    if family == 6:
        to_host.append(f"icmpv6 type {{ {', '.join(str(t) for t in ICMPV6_TO_HOST)} }} accept")
    to_host.append(f"jump {FROM_DISPATCH}")
    # Accept and Return both let the packet on (this table's verdicts are its own); anything else drops.
    to_host.append("accept" if settings.endpoint_to_host_action in ("Accept", "Return") else "counter drop")
    return (
        forward,
        Chain(INPUT, FILTER_HOOK.format("input"), (f"iifname {pods} jump {WL_TO_HOST}",)),
        Chain(ANTISPOOF, "type filter hook prerouting priority raw; policy accept;", (f"iifname {pods} fib saddr . iif oif missing counter drop",)),
        Chain(WL_TO_HOST, None, tuple(to_host)),
        Chain(FROM_DISPATCH, None, (f"iifname vmap @{FROM_WL}", "counter drop")),
        Chain(TO_DISPATCH, None, (f"oifname vmap @{TO_WL}", "counter drop")),
    )
