"""Every kind of Calico v3 resource calicoctl manages, each described once (`model.schema.Kind`),
and the strict decoding of a resource document against its kind.

The descriptions live by subject: `ipam` (IPPool, IPReservation), `routing` (Node, BGPConfiguration,
BGPPeer, BGPFilter), `config` (FelixConfiguration, KubeControllersConfiguration,
ClusterInformation), `policy` (Tier, NetworkPolicy, GlobalNetworkPolicy, Profile, with the rules in
`policy_rules`), `sets` (NetworkSet, GlobalNetworkSet) and `endpoints` (WorkloadEndpoint,
HostEndpoint). Standard library only.
"""

from __future__ import annotations

from typing import Any

from calico_cni.model import checks, schema
from calico_cni.model.kinds import config, endpoints, ipam, policy, routing, sets
from calico_cni.model.kinds.metadata import METADATA
from calico_cni.model.schema import Invalid, Kind

API_VERSION = "projectcalico.org/v3"

KINDS: tuple[Kind, ...] = (*ipam.KINDS, *routing.KINDS, *config.KINDS, *policy.KINDS, *sets.KINDS, *endpoints.KINDS)

_BY_NAME: dict[str, Kind] = {}
for _kind in KINDS:
    for _alias in _kind.names():
        assert _alias not in _BY_NAME, f"kind alias {_alias} used twice"
        _BY_NAME[_alias] = _kind
_BY_KIND = {k.name: k for k in KINDS}


def lookup(name: str) -> Kind | None:
    """The kind a command-line name means (`ippool`, `ippools`, `IPPool`, `bgpp`, `wep`...)."""
    return _BY_NAME.get(name.lower())


def by_kind(kind: str) -> Kind | None:
    """The kind a document's `kind` field names (exact spelling, as calicoctl requires)."""
    return _BY_KIND.get(kind)


def list_kind(kind: str) -> Kind | None:
    """The kind a typed list (`IPPoolList`) holds, or None."""
    return _BY_KIND.get(kind[: -len("List")]) if kind.endswith("List") else None


def decode(doc: Any) -> tuple[Kind, dict[str, Any]]:
    """A resource document decoded strictly against its kind, with Calico's defaults filled in:
    `Invalid` naming the field and the rule when anything is wrong. `resourceVersion`, `uid` and
    `creationTimestamp` in the document are kept as given (the writer decides what they mean)."""
    if not isinstance(doc, dict):
        raise Invalid("", "a resource must be an object with apiVersion, kind, metadata and spec")
    kind_name = doc.get("kind")
    if not kind_name:
        raise Invalid("kind", "required field is missing")
    kind = by_kind(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        if kind_name == "List":
            raise Invalid("kind", "a generic 'List' is not a Calico v3 resource: use a typed list such as IPPoolList, or several documents")
        raise Invalid("kind", f"unknown resource kind {kind_name!r}: expected one of {', '.join(k.name for k in KINDS)}")
    if doc.get("apiVersion") != API_VERSION:
        raise Invalid("apiVersion", f"expected {API_VERSION}, got {doc.get('apiVersion')!r}")
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "spec") and not (key == "status" and kind.status is not None):
            if schema.skipping_unknown():
                continue
            raise Invalid(str(key), "unknown field")
    meta = METADATA.decode(doc.get("metadata") or {}, "metadata")
    named = bool(meta.get("name"))
    if named:
        _check_name(kind, meta["name"])
    elif not kind.name_from_spec:
        raise Invalid("metadata.name", "required field is missing")
    if kind.namespaced:
        meta.setdefault("namespace", "default")
    elif "namespace" in meta:
        raise Invalid("metadata.namespace", f"{kind.name} is not namespaced: remove the namespace")
    if kind.spec_required and "spec" not in doc:
        raise Invalid("spec", "required field is missing")
    spec = kind.spec.decode(doc.get("spec") or {}, "spec")
    out = {"apiVersion": API_VERSION, "kind": kind.name, "metadata": meta, "spec": spec}
    if kind.status is not None and doc.get("status") is not None:
        out["status"] = kind.status.decode(doc["status"], "status")
    if kind.prepare is not None:
        kind.prepare(out)
    if not named:  # derived from the spec by prepare
        if not meta.get("name"):
            raise Invalid("metadata.name", "required field is missing")
        _check_name(kind, meta["name"])
    return kind, out


def _check_name(kind: Kind, name: str) -> None:
    reason = (kind.name_check or checks.dns_subdomain)(name)
    if reason:
        raise Invalid("metadata.name", reason)
