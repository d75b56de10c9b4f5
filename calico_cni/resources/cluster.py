"""The cluster-wide records Calico's own start-up writes, and the datastore lock of a migration.

`initialise` is what calico-node's start-up does to an etcd datastore (libcalico-go's
EnsureInitialized, v3.30): the ClusterInformation `default` (a random hex clusterGUID, the cluster
type, `datastoreReady: true` written explicitly) and the tiers Calico creates (default,
adminnetworkpolicy, baselineadminnetworkpolicy). `calicoVersion` is left empty on purpose: Calico's
calicoctl refuses every command when it differs from its own version and skips the check when it
is empty, so an operator's calicoctl of any v3 release keeps working on our cluster.

`set_ready(False)` is `calicoctl datastore migrate lock`: the plugins then refuse ADD (try again
later) and DEL journals its release until `set_ready(True)` (unlock); see `datastore.store`.
Every write is a compare-and-swap.
"""

from __future__ import annotations

import uuid

from calico_cni.datastore import resources as stored
from calico_cni.datastore.resources import Ref
from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore
from calico_cni.model.kinds.config import CLUSTER_INFORMATION as CLUSTER_INFORMATION_KIND
from calico_cni.model.kinds.policy import FIXED_TIER_ORDERS, TIER
from calico_cni.model.resource import Resource

from calico_cni.resources.verbs import new_resource

CLUSTER_INFORMATION = "default"
# The tiers Calico v3.30's initialisation creates, with their default actions.
TIER_ACTIONS = {"default": "Deny", "adminnetworkpolicy": "Pass", "baselineadminnetworkpolicy": "Pass"}


def _cluster_information(current: Resource | None, cluster_type: str) -> Resource | None:
    """The ClusterInformation with what initialisation guarantees, or None when it has it all."""
    if current is None:
        spec = {"clusterGUID": uuid.uuid4().hex, **({"clusterType": cluster_type} if cluster_type else {}), "datastoreReady": True}
        return new_resource(CLUSTER_INFORMATION_KIND, CLUSTER_INFORMATION, spec)
    spec = dict(current.doc.get("spec") or {})
    changed = False
    if not spec.get("clusterGUID"):
        spec["clusterGUID"], changed = uuid.uuid4().hex, True
    if spec.get("datastoreReady") is None:
        spec["datastoreReady"], changed = True, True
    types = [t for t in str(spec.get("clusterType") or "").split(",") if t]
    missing = [t for t in cluster_type.split(",") if t and t not in types]
    if missing:
        spec["clusterType"], changed = ",".join(types + missing), True
    if not changed:
        return None
    return Resource(current.kind, {**current.doc, "spec": spec}, current.revision)


def initialise(store: Datastore, cluster_type: str = "bgp") -> Resource:
    """Write the ClusterInformation `default` and Calico's tiers where they are missing (never
    changing a tier that exists, never setting calicoVersion); the types of `cluster_type`
    (comma-separated; empty: none) are added to the record's. Returns the ClusterInformation."""
    def step(attempt: int) -> Resource:
        refs = [Ref(CLUSTER_INFORMATION_KIND, CLUSTER_INFORMATION), *(Ref(TIER, t) for t in TIER_ACTIONS)]
        (info, *tiers), _ = stored.read(store, refs)
        puts = [new_resource(TIER, name, {"order": FIXED_TIER_ORDERS[name], "defaultAction": action}) for (name, action), tier in zip(TIER_ACTIONS.items(), tiers) if tier is None]
        updated = _cluster_information(info, cluster_type)
        if updated is not None:
            puts.insert(0, updated)
        if puts and not store.commit(puts=puts):
            raise Conflict()
        return updated or info  # type: ignore[return-value]

    return with_retries("initialising the cluster information and tiers", step)


def set_ready(store: Datastore, ready: bool) -> bool:
    """Set ClusterInformation `default`'s datastoreReady (initialising it first when it is missing,
    with no cluster type, as Calico's lock and unlock initialise it); False when it already had
    that value."""
    initialise(store, "")

    def step(attempt: int) -> bool:
        info = stored.get(store, Ref(CLUSTER_INFORMATION_KIND, CLUSTER_INFORMATION))
        assert info is not None
        spec = dict(info.doc.get("spec") or {})
        if spec.get("datastoreReady") is ready:
            return False
        spec["datastoreReady"] = ready
        if not store.commit(puts=[Resource(info.kind, {**info.doc, "spec": spec}, info.revision)]):
            raise Conflict()
        return True

    return with_retries("locking the datastore" if not ready else "unlocking the datastore", step)
