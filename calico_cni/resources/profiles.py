"""The profiles endpoints name but nobody created: `calicoctl datastore repair profiles`.

Before issue 15 the `calico` plugin wrote endpoints naming `[<network>]` (plain CNI) or
`[kns.<namespace>]` (Kubernetes pods) and never created those profiles; Felix gives an endpoint
whose profile is missing a drop-all policy. `repair` creates each missing one with the content the
plugin now creates it with (`workload.network_profile`, `workload.namespace_profile`): create-only
compare-and-swaps, so a profile someone created meanwhile is never changed. A profile we cannot
tell the content of (neither the network that wrote the endpoint nor `kns.<namespace>`) is listed,
not created.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from calico_cni.model.kinds.policy import DEFAULT_ALLOW_PROFILE
from calico_cni.datastore.store import Datastore
from calico_cni.model.kinds.policy import PROFILE
from calico_cni.model.records import NETWORK_ANNOTATION
from calico_cni.model.resource import prefix
from calico_cni.workload import K8S, LABEL_NAME_MAX, NAMESPACE_PROFILE_PREFIX, ProfileRecord, namespace_profile, network_profile, valid_name

from calico_cni.resources.verbs import now


@dataclass
class Missing:
    """A profile endpoints name that does not exist: the spec it gets (None: unknown content) and
    the endpoints (namespace/name) naming it."""

    name: str
    spec: dict | None
    endpoints: list[str] = field(default_factory=list)
    # Why it is not created when its content is known (a name Calico's validator refuses).
    refused: str = ""


@dataclass
class Repaired:
    """What `repair` found: the profiles it created (or would), those created meanwhile by another
    writer, and those it cannot create."""

    created: list[Missing] = field(default_factory=list)
    raced: list[Missing] = field(default_factory=list)
    unknown: list[Missing] = field(default_factory=list)


def _refused(name: str, network: str | None) -> str:
    """Why Calico's validator would refuse the profile `name` (empty: it would not): its name must
    be a lower-case DNS-1123 name, and a network profile's label key (the network's name) at most
    63 characters."""
    if not valid_name(name):
        return f"its name {name!r} is not a lower-case DNS-1123 name, which Calico's validator requires"
    if name == network and len(name) > LABEL_NAME_MAX:
        return f"its label key {name!r} is longer than {LABEL_NAME_MAX} characters, which Calico's validator refuses"
    return ""


def missing(store: Datastore) -> list[Missing]:
    """Every profile a workload endpoint names that is not stored, by name, read at one revision
    (endpoints and profile names in one round trip). A network's profile named by plain-CNI and
    Kubernetes endpoints alike gets the plain-CNI content (ingress from `has(<network>)`): a
    Kubernetes endpoint of that network carries the label too."""
    endpoints, stored = store.workload_endpoints_and_names(prefix(PROFILE))
    existing = stored | {DEFAULT_ALLOW_PROFILE}
    found: dict[str, Missing] = {}
    for endpoint in endpoints:
        network = ((endpoint.doc.get("metadata") or {}).get("annotations") or {}).get(NETWORK_ANNOTATION)
        kubernetes = endpoint.spec.get("orchestrator") == K8S
        for name in endpoint.spec.get("profiles") or []:
            if not isinstance(name, str) or name in existing:
                continue
            spec: dict | None = None
            if name.startswith(NAMESPACE_PROFILE_PREFIX) and len(name) > len(NAMESPACE_PROFILE_PREFIX):
                spec = namespace_profile(name[len(NAMESPACE_PROFILE_PREFIX) :])
            elif name == network:
                spec = network_profile(network, kubernetes)
            refused = _refused(name, network) if spec is not None else ""
            if refused:
                spec = None
            entry = found.setdefault(name, Missing(name, spec, refused=refused))
            if spec is not None and (entry.spec is None or not kubernetes):
                entry.spec = spec
            entry.endpoints.append(f"{endpoint.namespace}/{endpoint.name}")
    return [found[name] for name in sorted(found)]


def repair(store: Datastore, dry_run: bool = False) -> Repaired:
    """Create every missing profile whose content is known (`missing`); none with `dry_run`."""
    out = Repaired()
    for entry in missing(store):
        if entry.spec is None:
            out.unknown.append(entry)
            continue
        if dry_run:
            out.created.append(entry)
            continue
        profile = ProfileRecord(entry.name, entry.spec, str(uuid.uuid4()), now())
        (out.created if store.commit(puts=[profile]) else out.raced).append(entry)
    return out
