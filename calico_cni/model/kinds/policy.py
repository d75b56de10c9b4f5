"""Tier, NetworkPolicy, GlobalNetworkPolicy and Profile: Calico's network policy resources, with
the defaults and rules Calico v3.30's clients and validator apply (the rules themselves are in
`policy_rules`).

Policy names, as v3.30 has them: a policy in the default tier is `name` or `default.name`; in any
other tier it is `<tier>.<name>`, and the tier is named in `spec.tier`. A policy outside the
default tier gets the label `projectcalico.org/tier=<tier>`. Storing a policy under its
tier-prefixed name is `model.resource`'s business; that the tier exists is checked by the writer.
Standard library only.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from calico_cni.model import checks
from calico_cni.model.kinds.metadata import LABELS, name_of, spec_value
from calico_cni.model.kinds.policy_rules import RULES, check_directions, endpoint_selector
from calico_cni.model.resource import DEFAULT_TIER, FORMATTED_PREFIXES, TIER_LABEL
from calico_cni.model.schema import Bool, Column, Enum, Float, Invalid, Kind, List, Obj, Str

DEFAULT_TIER_ORDER = 1_000_000.0
# Tiers whose order Calico fixes (v3.30 names): the default tier and the two Kubernetes admin tiers.
FIXED_TIER_ORDERS = {DEFAULT_TIER: 1_000_000.0, "adminnetworkpolicy": 1_000.0, "baselineadminnetworkpolicy": 10_000_000.0}
PERFORMANCE_HINTS = ("AssumeNeededOnEveryNode",)

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_NP_NAME = re.compile(rf"^(({_LABEL})(\.{_LABEL})?|((knp|ossg)\.default\.{_SUBDOMAIN}))\Z")
_GNP_NAME = re.compile(rf"^({_LABEL}\.)?{_LABEL}\Z")


def go_float(value: Any) -> str:
    """A number as Go's `%v` prints a float64 (calicoctl's ORDER column): shortest digits, and the
    exponent form from 1e+06 up or below 1e-04; `<nil>` when absent."""
    if value is None or value == "":
        return "<nil>"
    number = float(value)
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    digits_tuple = Decimal(repr(abs(number))).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    point = len(digits) + int(digits_tuple.exponent)  # where the decimal point falls in `digits`
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _policy_name(pattern: re.Pattern[str]):
    """A policy name check: at most 253 characters, matching `pattern` (a DNS label, optionally
    prefixed by `<tier>.`; a NetworkPolicy's also admits the names Calico's Kubernetes and OpenStack
    translators give, `knp.default.*`, `ossg.default.*`)."""

    def check(name: str) -> str | None:
        if len(name) > 253:
            return f"name is too long by {len(name) - 253} bytes: at most 253 characters"
        if not pattern.match(name):
            return (
                f"invalid name {name!r}: name must consist of lower case alphanumeric characters or '-', "
                "optionally prefixed by the tier and a '.' (e.g. allow-web or security.allow-web)"
            )
        return None

    return check


def tiered_name(name: str, tier: str) -> str | None:
    """Calico v3.30's rule tying a policy's name to its tier: `name` or `default.name` in the default
    tier, `<tier>.<name>` in any other (names from Calico's translators are exempt)."""
    if name.startswith(FORMATTED_PREFIXES):
        return None
    tier = tier or DEFAULT_TIER
    if "." not in name and tier == DEFAULT_TIER:
        return None
    if "." in name and name.startswith(tier + "."):
        return None
    if "." not in name:
        return f"Incorrectly formatted policy name {name}: a policy in tier {tier!r} must be named {tier}.{name}"
    return f"Incorrectly formatted policy name {name}: the prefix {name.split('.', 1)[0]!r} is not the policy's tier {tier!r} (spec.tier); name it {tier}.<name> or set spec.tier"


def _default_types(spec: dict) -> None:
    """Calico's `types` default: Ingress when there are no egress rules (even with no rules at
    all), Egress when there are only egress rules, both when there are both."""
    if spec.get("types"):
        return
    if not spec.get("egress"):
        spec["types"] = ["Ingress"]
    elif not spec.get("ingress"):
        spec["types"] = ["Egress"]
    else:
        spec["types"] = ["Ingress", "Egress"]


def _unique(what: str):
    def check(values: list) -> str | None:
        for i, value in enumerate(values):
            if value in values[:i]:
                return f"{value!r} {what} specified more than once"
        return None

    return check


_POLICY_FIELDS = {
    "tier": Str(checks.dns_subdomain),
    "order": Float(),
    "selector": Str(endpoint_selector),
    "types": List(Enum("Ingress", "Egress"), check=_unique("type")),
    "ingress": RULES,
    "egress": RULES,
    "serviceAccountSelector": Str(endpoint_selector),
    "performanceHints": List(Enum(*PERFORMANCE_HINTS), check=_unique("performance hint")),
}


def _prepare_policy(doc: dict, global_policy: bool) -> None:
    spec = doc["spec"]
    meta = doc["metadata"]
    # The default tier names and labels a policy without one, but Calico stores spec.tier only as
    # given (its client fills it in on read, as `Resource.from_stored` does).
    tier = spec.get("tier") or DEFAULT_TIER
    _default_types(spec)
    check_directions(spec, global_policy)
    if global_policy:
        if spec.get("doNotTrack") and spec.get("preDNAT"):
            raise Invalid("spec.preDNAT", "PreDNAT and DoNotTrack cannot both be true, for a given PolicySpec")
        if spec.get("preDNAT") and spec.get("egress"):
            raise Invalid("spec.egress", "PreDNAT PolicySpec cannot have any Egress rules")
        if spec.get("preDNAT") and "Egress" in spec["types"]:
            raise Invalid("spec.types", "PreDNAT PolicySpec cannot have 'egress' Type")
        if not spec.get("applyOnForward") and (spec.get("doNotTrack") or spec.get("preDNAT")):
            raise Invalid("spec.applyOnForward", "ApplyOnForward must be true if either PreDNAT or DoNotTrack is true, for a given PolicySpec")
    reason = tiered_name(meta["name"], tier)
    if reason:
        raise Invalid("metadata.name", reason)
    if tier != DEFAULT_TIER:
        meta["labels"] = {**(meta.get("labels") or {}), TIER_LABEL: tier}


def _order(doc: dict) -> str:
    return go_float((doc.get("spec") or {}).get("order"))


# A policy stored without spec.tier is in the default tier (Calico fills it in on read).
_POLICY_COLUMNS = (Column("NAME", name_of), Column("TIER", lambda d: spec_value(d, "tier") or DEFAULT_TIER))
_POLICY_WIDE = (*_POLICY_COLUMNS, Column("ORDER", _order), Column("SELECTOR", lambda d: spec_value(d, "selector")))

NETWORK_POLICY = Kind(
    name="NetworkPolicy",
    managed_elsewhere=(("knp.default.", "kubernetes network policies must be managed through the kubernetes API"),),
    plural="networkpolicies",
    namespaced=True,
    aliases=("networkpolicy", "networkpolicies", "policy", "np", "policies", "pol", "pols"),
    spec=Obj(_POLICY_FIELDS),
    prepare=lambda doc: _prepare_policy(doc, global_policy=False),
    name_check=_policy_name(_NP_NAME),
    columns=_POLICY_COLUMNS,
    wide=_POLICY_WIDE,
    tiered=True,
)

GLOBAL_NETWORK_POLICY = Kind(
    name="GlobalNetworkPolicy",
    managed_elsewhere=(
        ("kanp.adminnetworkpolicy.", "kubernetes admin network policies must be managed through the kubernetes API"),
        ("kbanp.baselineadminnetworkpolicy.", "kubernetes admin network policies must be managed through the kubernetes API"),
    ),
    plural="globalnetworkpolicies",
    aliases=("globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"),
    spec=Obj(
        {
            **_POLICY_FIELDS,
            "doNotTrack": Bool(),
            "preDNAT": Bool(),
            "applyOnForward": Bool(),
            "namespaceSelector": Str(endpoint_selector),
        }
    ),
    prepare=lambda doc: _prepare_policy(doc, global_policy=True),
    name_check=_policy_name(_GNP_NAME),
    columns=_POLICY_COLUMNS,
    wide=_POLICY_WIDE,
    tiered=True,
)


def _prepare_tier(doc: dict) -> None:
    """Calico's defaults (order 1,000,000, the default tier's; defaultAction Deny) and the orders
    Calico fixes for its own tiers."""
    spec = doc["spec"]
    spec.setdefault("order", DEFAULT_TIER_ORDER)
    spec.setdefault("defaultAction", "Deny")
    fixed = FIXED_TIER_ORDERS.get(doc["metadata"]["name"])
    if fixed is not None and spec["order"] != fixed:
        raise Invalid("spec.order", f"{doc['metadata']['name']} tier order must be {go_float(fixed)} ({fixed:.0f})")


TIER = Kind(
    name="Tier",
    plural="tiers",
    aliases=("tier", "tiers"),
    spec=Obj({"order": Float(), "defaultAction": Enum("Deny", "Pass")}),
    prepare=_prepare_tier,
    name_check=checks.dns_label,
    columns=(Column("NAME", name_of), Column("ORDER", _order)),
    wide=(Column("NAME", name_of), Column("ORDER", _order)),
)


def _labels_cell(doc: dict) -> str:
    labels = spec_value(doc, "labelsToApply") or {}
    return ",".join(sorted(f"{k}={v}" for k, v in labels.items()))


PROFILE = Kind(
    name="Profile",
    plural="profiles",
    aliases=("profile", "profiles", "pro", "pros"),
    spec=Obj({"ingress": RULES, "egress": RULES, "labelsToApply": LABELS}),
    columns=(Column("NAME", name_of),),
    wide=(Column("NAME", name_of), Column("LABELS", _labels_cell)),
)

KINDS = (TIER, NETWORK_POLICY, GLOBAL_NETWORK_POLICY, PROFILE)
# Calico's built-in profile (allow everything both ways): never stored, always there.
DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"


# What calicoctl warns about (issue 18), field by field with what this node daemon does with it:
# a policy's fields, a rule's, and a rule side's (source/destination). calicoctl's warnings and
# the node daemon's per-endpoint "not enforced here" (node.policy_model) name the same fields.
NOT_ENFORCED = "stored but not enforced by this node daemon"
# Calico's syncer turns serviceAccounts and serviceAccountSelector into selectors on these labels;
# kube-controllers sets them on pods, nothing sets them here but `calicoctl label`.
SERVICE_ACCOUNTS_NOTE = "matched on service-account labels (projectcalico.org/serviceaccount, pcsa.*), which endpoints here carry only when labelled by hand"
# Calico matches a rule's services on the Kubernetes Service's endpoints; there are none here.
SERVICES_NOTE = "matches nothing here (no Kubernetes Services)"
SPEC_FIELD_NOTES = {"doNotTrack": NOT_ENFORCED, "preDNAT": NOT_ENFORCED, "applyOnForward": NOT_ENFORCED, "serviceAccountSelector": SERVICE_ACCOUNTS_NOTE}
RULE_FIELD_NOTES = {"http": NOT_ENFORCED}
ENTITY_FIELD_NOTES = {"serviceAccounts": SERVICE_ACCOUNTS_NOTE, "services": SERVICES_NOTE}
# The same field names as tuples, in the order warnings list them.
UNENFORCED_SPEC_FIELDS = tuple(SPEC_FIELD_NOTES)
UNENFORCED_RULE_FIELDS = tuple(RULE_FIELD_NOTES)
UNENFORCED_ENTITY_FIELDS = tuple(ENTITY_FIELD_NOTES)
HOST_ENDPOINTS_UNENFORCED = "host endpoints (only workload endpoints are policed)"


def _noted_fields(kind_name: str, doc: dict) -> list[tuple[str, str]]:
    """(path, note) for each field of a decoded resource document calicoctl warns about; a
    HostEndpoint is one entry whatever it holds."""
    if kind_name == "HostEndpoint":
        return [(HOST_ENDPOINTS_UNENFORCED, NOT_ENFORCED)]
    if kind_name not in ("NetworkPolicy", "GlobalNetworkPolicy", "Profile"):
        return []
    spec = doc.get("spec") or {}
    found = [(f"spec.{f}", note) for f, note in SPEC_FIELD_NOTES.items() if spec.get(f)]
    for direction in ("ingress", "egress"):
        for i, rule in enumerate(spec.get(direction) or []):
            where = f"spec.{direction}[{i}]"
            found += [(f"{where}.{f}", note) for f, note in RULE_FIELD_NOTES.items() if f in rule]
            for side in ("source", "destination"):
                entity = rule.get(side) or {}
                found += [(f"{where}.{side}.{f}", note) for f, note in ENTITY_FIELD_NOTES.items() if f in entity]
    return found


def unenforced_fields(kind_name: str, doc: dict) -> tuple[str, ...]:
    """The fields of a decoded resource document calicoctl warns about (stored but not enforced
    here, or matched differently from a Kubernetes cluster: `SPEC_FIELD_NOTES`, `RULE_FIELD_NOTES`,
    `ENTITY_FIELD_NOTES`), as paths (`spec.doNotTrack`, `spec.ingress[0].http`,
    `spec.egress[2].destination.services`); a HostEndpoint is `(HOST_ENDPOINTS_UNENFORCED,)`
    whatever it holds. A field counts when it is set to something (applyOnForward: false, an empty
    serviceAccountSelector change nothing)."""
    return tuple(path for path, _ in _noted_fields(kind_name, doc))


def unenforced_notes(kind_name: str, doc: dict) -> tuple[str, ...]:
    """What calicoctl's warning says of a decoded resource document: for each note in the order
    its fields first appear, "<paths>: <note>" (`spec.doNotTrack, spec.applyOnForward: stored but
    not enforced by this node daemon`); a HostEndpoint is "stored but not enforced by this node
    daemon (only workload endpoints are policed)". Empty when nothing is worth a warning."""
    if kind_name == "HostEndpoint":
        return (f"{NOT_ENFORCED} (only workload endpoints are policed)",)
    by_note: dict[str, list[str]] = {}
    for path, note in _noted_fields(kind_name, doc):
        by_note.setdefault(note, []).append(path)
    return tuple(f"{', '.join(paths)}: {note}" for note, paths in by_note.items())
