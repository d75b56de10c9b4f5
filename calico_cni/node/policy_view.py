"""Calico's network policy as Felix sees it, read off one cache snapshot into a PolicyView (the
typed resources of node.policy_model), and what applies to one endpoint, per direction, in Felix's
order (issue 18's view, shared by the per-endpoint view and the compiler).

Pure: it reads `Snapshot.items` (key -> record with `value` and `mod_revision`). A record
node.policy_model leaves out is named in `problems` and never stops the others.

Calico v3.30's semantics, as Felix applies them (facts in ../shared/reference/calico-policy.md
sections 1 and 2):
- tiers in order ascending (none last), then name, a tier without its Tier resource after every
  real one; policies in a tier by order ascending (none last), then Felix's key;
- doNotTrack and preDNAT policies are rendered for host endpoints only: never for a workload;
- an endpoint's labels are its own over its profiles' `labelsToApply`, the first profile winning
  among profiles; a NetworkSet's likewise over its namespace's profile `kns.<ns>` (Calico's syncer
  gives it that profile, so a rule's namespaceSelector sees its namespace's `pcns.` labels);
- a WorkloadEndpoint with no ipNetworks is left out of the view, as Calico's syncer drops it
  before Felix sees it (no rule can be rendered for it); it is not a problem, so not in `problems`;
- an endpoint's profiles apply in its order, a named but absent profile a deny-all in its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from calico_cni.node.policy_model import (
    EGRESS,
    INGRESS,
    LeftOut,
    NetworkSet,
    Policy,
    PolicyRecord,
    Profile,
    Rule,
    StoredValue,
    Tier,
    WorkloadEndpoint,
    read_record,
)
from calico_cni.model.kinds.policy import DEFAULT_ALLOW_PROFILE
from calico_cni.workload import NAMESPACE_PROFILE_PREFIX

# --- reading ------------------------------------------------------------------------------------

# Calico's `projectcalico-default-allow`: allow everything both ways.
_DEFAULT_ALLOW = Profile(DEFAULT_ALLOW_PROFILE, (Rule("Allow"),), (Rule("Allow"),), {})


@dataclass(frozen=True)
class PolicyView:
    """Every policy resource of one snapshot, and the records left out (`problems`)."""

    tiers: Mapping[str, Tier]
    policies: tuple[Policy, ...]
    profiles: Mapping[str, Profile]
    network_sets: tuple[NetworkSet, ...]
    endpoints: Mapping[str, WorkloadEndpoint]  # by key
    problems: tuple[str, ...] = ()

    @classmethod
    def read(cls, items: Mapping[str, StoredValue], memo: dict[str, tuple[int, PolicyRecord | LeftOut | None]] | None = None) -> "PolicyView":
        """The view of `items` (a snapshot's). `memo` (kept by the caller from pass to pass, updated
        here) holds each key's decoding by mod_revision, so a record unchanged since the last pass is
        not decoded again and stays the same object (the policy compiler's memos rely on that)."""
        problems: list[str] = []
        tiers: dict[str, Tier] = {}
        policies: list[Policy] = []
        profiles: dict[str, Profile] = {}
        network_sets: list[NetworkSet] = []
        weps: dict[str, WorkloadEndpoint] = {}
        if memo is not None:
            for key in [k for k in memo if k not in items]:
                del memo[key]
        for key in sorted(items):
            record = _decoded(key, items[key], memo)
            if isinstance(record, LeftOut):
                problems.append(str(record))
                continue
            if isinstance(record, Tier):
                tiers[record.name] = record
            elif isinstance(record, Policy):
                policies.append(record)
            elif isinstance(record, Profile):
                profiles[record.name] = record
            elif isinstance(record, NetworkSet):
                network_sets.append(record)
            elif isinstance(record, WorkloadEndpoint) and record.ip_networks:
                # Calico's syncer drops an endpoint with no ipNetworks: Felix never sees it.
                weps[key] = record
        if DEFAULT_ALLOW_PROFILE not in profiles:
            # Calico's built-in profile: never stored, always there (calicoctl shows it).
            profiles[DEFAULT_ALLOW_PROFILE] = _DEFAULT_ALLOW
        return cls(tiers, tuple(policies), profiles, tuple(network_sets), weps, tuple(problems))


def _decoded(key: str, stored: StoredValue, memo: dict[str, tuple[int, PolicyRecord | LeftOut | None]] | None) -> PolicyRecord | LeftOut | None:
    """`key`'s record (None: another kind; LeftOut: refused), from `memo` when its revision is the
    one decoded last time."""
    if memo is not None:
        cached = memo.get(key)
        if cached is not None and cached[0] == stored.mod_revision:
            return cached[1]
    try:
        record: PolicyRecord | LeftOut | None = read_record(key, stored)
    except LeftOut as exc:
        record = exc
    if memo is not None:
        memo[key] = (stored.mod_revision, record)
    return record


# --- what applies to one endpoint ---------------------------------------------------------------


def _with_profiles(view: PolicyView, own: Mapping[str, str], profiles: tuple[str, ...]) -> dict[str, str]:
    """`own` labels, then each profile's `labelsToApply` in order for keys not yet set (own labels
    win; the first profile wins among profiles; an absent profile gives none)."""
    labels = dict(own)
    for name in profiles:
        profile = view.profiles.get(name)
        for key, value in (profile.labels_to_apply if profile else {}).items():
            labels.setdefault(key, value)
    return labels


def endpoint_labels(view: PolicyView, endpoint: WorkloadEndpoint) -> dict[str, str]:
    """The labels selectors see on `endpoint`: its own over its profiles', in its order."""
    return _with_profiles(view, endpoint.labels, endpoint.profiles)


def network_set_labels(view: PolicyView, network_set: NetworkSet) -> dict[str, str]:
    """The labels selectors see on `network_set`: its own over its namespace's profile
    `kns.<namespace>` (Calico's syncer gives every NetworkSet that profile; a GlobalNetworkSet has
    none), so its namespace's `pcns.` labels are visible to a rule's namespaceSelector."""
    profiles = (NAMESPACE_PROFILE_PREFIX + network_set.namespace,) if network_set.namespace is not None else ()
    return _with_profiles(view, network_set.labels, profiles)


@dataclass(frozen=True)
class TierPolicies:
    """One tier's policies that apply in one direction, in order; `default_action` is what the end of
    the tier does (Deny; Pass only when the tier says so; a tier with no Tier resource denies)."""

    tier: str
    default_action: str
    policies: tuple[Policy, ...]
    valid: bool = True  # False: no Tier resource (Felix orders it after every real tier)


@dataclass(frozen=True)
class EndpointPolicies:
    """What applies to one endpoint: per direction, the tiers with at least one applicable policy in
    Felix's order; then its profiles in its order as `(name, Profile)`, the Profile None for one
    named but absent (a deny-all in its place, so the order matters); `unenforced` lists what
    applies but is not enforced here, for the view to say so."""

    ingress: tuple[TierPolicies, ...]
    egress: tuple[TierPolicies, ...]
    profiles: tuple[tuple[str, Profile | None], ...]
    labels: Mapping[str, str]
    unenforced: tuple[str, ...] = ()

    def tiers(self, direction: str) -> tuple[TierPolicies, ...]:
        """The ingress or egress tiers."""
        return self.ingress if direction == INGRESS else self.egress


def tier_sort_key(view: PolicyView, name: str) -> tuple[bool, bool, float, str]:
    """Felix's tier order: tiers that exist first, then order ascending (none last), then name."""
    tier = view.tiers.get(name)
    order = tier.order if tier is not None else None
    return (tier is None, order is None, order if order is not None else 0.0, name)


def applicable(view: PolicyView, endpoint: WorkloadEndpoint) -> EndpointPolicies:
    """The policies and profiles that apply to `endpoint`, per direction, in evaluation order."""
    labels = endpoint_labels(view, endpoint)
    selected = [p for p in view.policies if not p.host_only and p.selector(labels)]
    unenforced: list[str] = []
    for p in selected:
        unenforced += [f"{p.kind}({p.felix_key}).spec.{f}" for f in p.unenforced]
        for direction in (INGRESS, EGRESS):
            for i, rule in enumerate(p.rules(direction)):
                unenforced += [f"{p.kind}({p.felix_key}).spec.{direction.lower()}[{i}].{f}" for f in rule.unenforced]
    directions = {}
    for direction in (INGRESS, EGRESS):
        by_tier: dict[str, list[Policy]] = {}
        for p in selected:
            if direction in p.types:
                by_tier.setdefault(p.tier, []).append(p)
        tiers = []
        for name in sorted(by_tier, key=lambda n: tier_sort_key(view, n)):
            tier = view.tiers.get(name)
            tiers.append(
                TierPolicies(
                    tier=name,
                    default_action=tier.default_action if tier is not None else "Deny",
                    policies=tuple(sorted(by_tier[name], key=lambda p: p.sort_key)),
                    valid=tier is not None,
                )
            )
        directions[direction] = tuple(tiers)
    profiles = tuple((n, view.profiles.get(n)) for n in endpoint.profiles)
    for _, profile in profiles:
        if profile is None:
            continue
        for direction in (INGRESS, EGRESS):
            for i, rule in enumerate(profile.rules(direction)):
                unenforced += [f"Profile({profile.name}).spec.{direction.lower()}[{i}].{f}" for f in rule.unenforced]
    return EndpointPolicies(directions[INGRESS], directions[EGRESS], profiles, labels, tuple(unenforced))
