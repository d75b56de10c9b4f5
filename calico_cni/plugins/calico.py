"""The CNI verbs of the `calico` network plugin: ADD, DEL, CHECK, GC and STATUS.

ADD takes addresses from IPAM (calico-ipam in this process, anything else by exec), wires the
workload (`dataplane.wiring`), writes its WorkloadEndpoint and prints the result Calico's plugin
prints (see `_result`).
Whatever fails after IPAM is rolled back: the links this ADD created and the addresses it allocated.
DEL tears down the local dataplane first; when etcd cannot be reached it records the release in the
node-local journal (`journal`) and succeeds. Every verb that reached etcd replays that journal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import uuid
from typing import Sequence

from calico_cni.config import CalicoSettings, calico_settings, check_policy_type, node_name
from calico_cni.dataplane import wiring
from calico_cni.dataplane.errors import NamespaceError
from calico_cni.dataplane.mtu import MTU_FILE, decide as decide_mtu
from calico_cni.dataplane.netns import Netns
from calico_cni.dataplane.veth import HOST_MAC
from calico_cni.datastore.errors import DatastoreError, DatastoreNotReady, DatastoreUnavailable
from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore, Hint, Pin, hint_locked, pin
from calico_cni.journal import Journal
from calico_cni.model.keys import CLUSTER_INFORMATION, workload_endpoint as workload_endpoint_key
from calico_cni.model.records import NETWORK_ANNOTATION, CorruptRecord, WorkloadEndpoint, now_rfc3339
from calico_cni.plugins.calico_ipam import defer_release
from calico_cni.plugins.ipam_backend import CALICO_IPAM, backend_for
from calico_cni.plugins.services import Services
from calico_cni.plugins.status import etcd_unavailable, ipam_status
from calico_cni.protocol.delegate import delegate
from calico_cni.protocol.gc import valid_attachments
from calico_cni.protocol.errors import CHECK_FAILED, DATAPLANE_FAILURE, INVALID_CONFIG, INVALID_ENVIRONMENT, IPAM_EXHAUSTED, CniError
from calico_cni.protocol.request import CniRequest
from calico_cni.protocol.result import convert, normalize
from calico_cni.workload import PROFILES, Identity, ProfileRecord
from calico_ipam import reconcile as reconciliation
from calico_ipam.replay import replay_quietly

log = logging.getLogger(__name__)


def settings(request: CniRequest) -> CalicoSettings:
    """This verb's settings, checked before any side effect, with the node name for ADD, DEL and
    CHECK. GC and STATUS resolve the node where they always did (GC after its list of valid
    attachments, STATUS with calico-ipam after the journal replay), so that with two things wrong
    the same error wins."""
    return calico_settings(request.config, request.environ, resolve_node=request.command not in ("GC", "STATUS"))


def _identity(request: CniRequest, conf: CalicoSettings) -> Identity:
    """The attachment's names on this node, for ADD, DEL and CHECK (their settings resolved the node)."""
    assert conf.node is not None
    return Identity.of(request, conf.node, k8s_policy=conf.policy_type == "k8s")


def _datastore(stack: contextlib.ExitStack, services: Services, conf: CalicoSettings, bounded: bool = True) -> Datastore:
    """The verb's datastore, closed when the verb ends; `bounded`: every etcd call ends within
    `add_timeout` of now."""
    store = services.datastore(conf.etcd, conf.operation_timeout if bounded else None)
    stack.callback(store.close)
    return store


def _open_container(request: CniRequest) -> Netns:
    ns = Netns.open(request.netns)
    if ns is None:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_NETNS {request.netns!r} does not exist")
    return ns


def _result(ident: Identity, request: CniRequest, host_mac: str, cont_mac: str, mtu: int, addresses, routes, dns) -> dict:
    """The result as Calico's plugin prints it, which runtimes and chained plugins read: [host veth,
    container interface], every address /32 or /128 on interface 1 (routing goes through the host
    veth, so the pod has no subnet), no gateway."""
    return {
        "interfaces": [
            {"name": ident.host_veth, "mac": host_mac, "mtu": mtu},
            {"name": request.ifname, "mac": cont_mac, "mtu": mtu, "sandbox": request.netns},
        ],
        "ips": [{"interface": 1, "address": str(a)} for a in addresses],
        "routes": routes or [],
        "dns": dns or {},
    }


def _configured_routes(request: CniRequest) -> list:
    """The routes a delegated IPAM plugin returns: those of its configuration."""
    routes = (request.config.get("ipam") or {}).get("routes") or []
    return [r for r in routes if isinstance(r, dict) and "dst" in r] if isinstance(routes, list) else []


# --------------------------------------------------------------------------------------------
# Workload endpoint


def _write_endpoint(store, ident: Identity, host_veth: str, mac: str, addresses, pins: Sequence[Pin] = ()) -> str:
    """Create the attachment's WorkloadEndpoint, or replace the one a lost compare-and-swap shows
    exists (`with_retries` re-runs from a fresh read); returns its uid. The endpoint is annotated
    with its network, so GC knows whose it is.

    `pins` (from `_ensure_profiles` with a hint: the profiles and ClusterInformation as the watch
    cache saw them) are compared by the create. When it fails, the profiles are ensured as without
    a hint (read with the lock: `DatastoreNotReady` when locked; missing ones created) and the
    endpoint written as without one."""
    ip_networks = [str(a) for a in addresses]
    pinned = list(pins)

    def step(attempt: int) -> str:
        if attempt and pinned:
            pinned.clear()  # never the hint again: a profile, the lock or the endpoint moved
            _ensure_profiles(store, ident)
        current = store.workload_endpoint(ident.namespace, ident.endpoint_name) if attempt else None
        meta = (current.doc.get("metadata") or {}) if current is not None and ident.owns_endpoint(current) else {}
        if current is not None and not ident.owns_endpoint(current):
            log.warning("replacing endpoint %s/%s of container %s (an earlier sandbox)", ident.namespace, ident.endpoint_name, current.container_id)
        doc = ident.endpoint_doc(host_veth, mac, ip_networks, meta.get("uid") or str(uuid.uuid4()), meta.get("creationTimestamp") or now_rfc3339())
        doc["metadata"].setdefault("annotations", {})[NETWORK_ANNOTATION] = ident.network
        if meta.get("labels"):
            # Our own endpoint written again: labels given since (`calicoctl label`) are kept
            # under the ones this ADD sets.
            doc["metadata"]["labels"] = {**meta["labels"], **(doc["metadata"].get("labels") or {})}
        record = WorkloadEndpoint(ident.namespace, ident.endpoint_name, doc, current.revision if current is not None else 0)
        if not store.commit(puts=[record], unchanged=pinned):
            raise Conflict()
        log.info("wrote endpoint %s/%s", ident.namespace, ident.endpoint_name)
        return doc["metadata"]["uid"]

    return with_retries(f"writing endpoint {ident.namespace}/{ident.endpoint_name}", step)


def _ensure_profiles(store: Datastore, ident: Identity, hint: Hint | None = None) -> list[Pin]:
    """Create the profiles the endpoint will name that do not exist, never changing one that does,
    as Calico's plugin does (cni-plugin/pkg/plugin/plugin.go, v3.30.0: Get, then Create when
    absent); Felix gives an endpoint whose profile is missing a drop-all policy. A `kns.<namespace>`
    profile (policy.type k8s) gets kube-controllers' content, since no kube-controllers runs here.
    One read round trip when the profiles exist; one create-only compare-and-swap each when not
    (another creator winning the race is fine: the profile exists).

    With `hint` (calico-node's watch cache) holding every profile and saying the datastore is not
    locked: no read at all, and the pins the endpoint's create must compare instead (each profile's
    and ClusterInformation's revision: `_write_endpoint`); else the read as without a hint, and no pins."""
    specs = ident.profile_specs()
    if hint is not None and not hint_locked(hint):
        seen = [hint.get(PROFILES + name) for name in specs]
        if all(kv is not None for kv in seen):
            return [*(Pin(kv.key, kv.mod_revision) for kv in seen if kv is not None), pin(hint, CLUSTER_INFORMATION)]
    # The first datastore read of an ADD: it also says whether the datastore is locked (a
    # migration), so a locked datastore refuses the ADD before anything is written.
    existing = store.present([PROFILES + name for name in specs], ready_check=True)
    for name, spec in specs.items():
        if PROFILES + name in existing:
            continue
        if store.commit(puts=[ProfileRecord(name, spec, str(uuid.uuid4()), now_rfc3339())]):
            log.info("created profile %s", name)
        else:
            log.info("profile %s was created meanwhile by another writer", name)
    return []


def _delete_endpoint(store, ident: Identity, endpoint, pins: Sequence[Pin] = ()) -> bool:
    """Delete the endpoint while it is still this attachment's: a newer sandbox's endpoint of the
    same name (a different container ID) is left alone. `pins` (the endpoint came from calico-node's
    watch cache: ClusterInformation as it saw it) are compared by the delete; when it fails the
    endpoint is read again with the lock check (`DatastoreNotReady` when locked, as the DEL's own
    read would have raised)."""
    pinned = list(pins)

    def step(attempt: int) -> bool:
        nonlocal endpoint
        if attempt:
            endpoint = store.workload_endpoint(ident.namespace, ident.endpoint_name, ready_check=bool(pinned))
            pinned.clear()
        if endpoint is None or not ident.owns_endpoint(endpoint):
            return False
        if not store.commit(deletes=[endpoint], unchanged=pinned):
            raise Conflict()
        return True

    return with_retries(f"deleting endpoint {ident.namespace}/{ident.endpoint_name}", step)


# --------------------------------------------------------------------------------------------
# ADD


def add(request: CniRequest, services: Services) -> dict:
    """ADD: addresses from IPAM, the workload wired, its endpoint written; the CNI result."""
    conf = settings(request)
    check_policy_type(conf.policy_type)
    ident = _identity(request, conf)
    refused = ident.refused_name()
    if refused:
        # Calico's plugin fails such an ADD (its validator refuses the endpoint); refusing it before
        # anything is allocated keeps every endpoint we write one that Calico's tools can update.
        raise CniError(INVALID_CONFIG, refused)
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(Netns.here())
        container = stack.enter_context(_open_container(request))
        store = _datastore(stack, services, conf)
        # calico-node's watch cache (None elsewhere, or for another etcd): reads it replaces are
        # compared by the commits that rely on them.
        hint = services.hint(conf.etcd)
        ipam = backend_for(request, conf, store, services.memory(conf.etcd), hint)
        ipam.validate()

        journal = Journal(conf.journal_dir)
        replay_quietly(store, journal)
        # The endpoint is read only for a repeated ADD; a new attachment's endpoint write starts as a
        # create and re-reads only if an endpoint exists after all: one etcd round trip fewer.
        present = container.rtnl().link(request.ifname)
        if present is not None:
            endpoint = store.workload_endpoint(ident.namespace, ident.endpoint_name)
            if endpoint is not None and ident.owns_endpoint(endpoint) and (endpoint.spec.get("mac") or "").lower() == present.mac:
                log.info("attachment exists already (endpoint %s/%s): returning its result", ident.namespace, ident.endpoint_name)
                return convert(_existing_result(request, ident, endpoint, present, conf), request.cni_version)
            raise CniError(
                DATAPLANE_FAILURE,
                f"interface {request.ifname} already exists in {request.netns}",
                "it is not the interface of an earlier ADD of this attachment; choose another CNI_IFNAME",
            )

        mtu_file = conf.mtu_file or request.environ.get("CALICO_MTU_FILE") or MTU_FILE
        mtu, origin = decide_mtu(conf.mtu, host.rtnl(), mtu_file)
        log.debug("MTU %d from %s", mtu, origin)

        # A hint replaces the profiles' read only where the allocation commit compares the lock
        # (calico-ipam in this process): a locked datastore still refuses the ADD before the
        # first write, and another IPAM plugin is never run against a locked datastore.
        pins = _ensure_profiles(store, ident, hint if conf.ipam_type == CALICO_IPAM else None)
        endpoint_key = workload_endpoint_key(ident.namespace, ident.endpoint_name)
        ipam_result = ipam.add()
        created = wiring.Created()
        try:
            addresses = [wiring.narrow(ip["address"]) for ip in ipam_result.get("ips") or []]
            if not addresses:
                raise CniError(IPAM_EXHAUSTED, f"IPAM plugin {conf.ipam_type} returned no address")
            try:
                routes = [ipaddress.ip_network(r["dst"], strict=False) for r in ipam_result.get("routes") or []]
            except (KeyError, TypeError, ValueError) as exc:
                raise CniError(INVALID_CONFIG, f"IPAM plugin {conf.ipam_type} returned an invalid route", str(exc)) from None
            spec = wiring.WorkloadSpec(ident.host_veth, request.ifname, ident.alias, mtu, addresses, routes, conf.allow_ip_forwarding)
            wired = wiring.setup(host, container, spec, created)
            if services.endpoints is not None:
                # calico-node: the pod's policy is in the kernel before its endpoint exists and
                # before we answer (until then the dispatch drops its unknown interface).
                services.endpoints.endpoint_added(
                    endpoint_key, ident.endpoint_doc(ident.host_veth, wired.container.mac, [str(a) for a in addresses], "", now_rfc3339())
                )
            uid = _write_endpoint(store, ident, ident.host_veth, wired.container.mac, addresses, pins)
        except BaseException:
            if services.endpoints is not None:
                services.endpoints.endpoint_abandoned(endpoint_key)
            wiring.rollback(host, container, created)
            ipam.undo()
            raise
        _record_held(journal, conf, ident, ipam, uid)
        log.info("added %s: %s on %s", request.ifname, ", ".join(map(str, addresses)), ident.host_veth)
        log.debug("etcd round trips: %d", store.round_trips)
        result = _result(ident, request, wired.host.mac, wired.container.mac, mtu, addresses, ipam_result.get("routes"), ipam_result.get("dns"))
        return convert(result, request.cni_version)


def _record_held(journal: Journal, conf: CalicoSettings, ident: Identity, ipam, uid: str) -> None:
    """Remember what this attachment holds, for a DEL that finds etcd unreachable (journal)."""
    try:
        journal.record_held(
            ident.network,
            ident.container_id,
            ident.ifname,
            ipam.handle_id,
            ipam.holding(),
            conf.etcd.endpoints,
            {"namespace": ident.namespace, "name": ident.endpoint_name, "uid": uid},
        )
    except OSError as exc:
        log.error("cannot record the attachment in the release journal (%s): a DEL with etcd down will resolve it later", exc)


def _existing_result(request: CniRequest, ident: Identity, endpoint, link, conf: CalicoSettings) -> dict:
    """The result of the earlier ADD, rebuilt from its endpoint and the container's interface."""
    addresses = [ipaddress.ip_interface(n) for n in endpoint.ip_networks]
    routes = [] if conf.ipam_type == CALICO_IPAM else _configured_routes(request)
    return _result(ident, request, HOST_MAC, link.mac, link.mtu, addresses, routes, {})


# --------------------------------------------------------------------------------------------
# DEL


def _host_names(request: CniRequest) -> list[str]:
    """Host interfaces named in prevResult (those without a sandbox)."""
    prev = request.prev_result or {}
    out = []
    for iface in prev.get("interfaces") or []:
        if isinstance(iface, dict) and not iface.get("sandbox") and isinstance(iface.get("name"), str):
            out.append(iface["name"])
    return out


def _hinted_endpoint(hint: Hint | None, ident: Identity) -> tuple[WorkloadEndpoint | None, list[Pin]]:
    """The attachment's endpoint as calico-node's watch cache saw it, with the pins its delete
    compares (ClusterInformation: a lock set since fails the delete); (None, []) when the hint says
    nothing trustworthy: no hint, a locked datastore, no endpoint or another sandbox's (absence or
    another owner may be the cache lagging our own ADD: only a read can say)."""
    if hint is None or hint_locked(hint):
        return None, []
    kv = hint.get(workload_endpoint_key(ident.namespace, ident.endpoint_name))
    if kv is None:
        return None, []
    try:
        endpoint = WorkloadEndpoint.from_kv(kv.key, kv.value, kv.mod_revision)
    except CorruptRecord:
        return None, []
    if not ident.owns_endpoint(endpoint):
        return None, []
    return endpoint, [pin(hint, CLUSTER_INFORMATION)]


def delete(request: CniRequest, services: Services) -> None:
    """DEL: remove the interfaces, release the addresses, delete the endpoint. Succeeds when repeated,
    when CNI_NETNS is empty or gone, and when ADD never happened."""
    conf = settings(request)
    ident = _identity(request, conf)
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(Netns.here())
        container = None
        if request.netns:
            try:
                container = Netns.open(request.netns)
            except NamespaceError as err:
                log.warning("not touching CNI_NETNS: %s", err)
            if container is not None:
                stack.enter_context(container)
        # The local dataplane first: it needs no datastore. The datastore part waits until the
        # kernel has unlisted the veth (closed, its routes gone), not for the ~20 ms grace period
        # that follows: a DEL killed at its first write has its veth on the way out all the same,
        # and the host's own traffic to the pod makes no conntrack entry after the flush. The
        # addresses are released only once the deletion is over.
        tried = [ident.host_veth, *_host_names(request)]
        teardown = wiring.Teardown(host, container, request.ifname, tried, ident.owns_alias)
        stack.callback(teardown.finish)  # every way out waits for it before the namespaces close
        teardown.unlisted()
        removed: list[str] = []

        store = _datastore(stack, services, conf)
        journal = Journal(conf.journal_dir)
        hint = services.hint(conf.etcd)
        ipam = backend_for(request, conf, store, services.memory(conf.etcd), hint)
        try:
            replay_quietly(store, journal)
            # A locked datastore (a migration) is treated as an unreachable one: nothing is deleted
            # from it now, the journal finishes the endpoint and the release after the unlock.
            endpoint, pins = _hinted_endpoint(hint, ident)
            if endpoint is None:
                endpoint = store.workload_endpoint(ident.namespace, ident.endpoint_name, ready_check=True)
            mine = endpoint if endpoint is not None and ident.owns_endpoint(endpoint) else None
            stored_name = mine.spec.get("interfaceName") if mine is not None else None
            if stored_name and stored_name not in tried:
                removed = teardown.result() + wiring.teardown(host, None, request.ifname, [stored_name], ident.owns_alias)

            # The endpoint first: an endpoint never names an address that is free (Calico's order).
            deleted = _delete_endpoint(store, ident, mine, pins)
            if deleted and mine is not None and services.endpoints is not None:
                # calico-node: its chains and its addresses' connections go (the veth is unlisted:
                # the host's own traffic to the pod makes no entry after the flush) before the
                # addresses are released (a pod given them next must not inherit either).
                services.endpoints.endpoint_removed(workload_endpoint_key(ident.namespace, ident.endpoint_name), list(mine.ip_networks))
            removed = removed or teardown.result()
            released = ipam.delete()
        except DatastoreUnavailable as err:
            removed = removed or teardown.result()
            # The dataplane is gone already; the datastore part is finished later (journal). A
            # locked datastore answered: the endpoint it read is recorded, so the replay after the
            # unlock deletes exactly it (by uid), even when this attachment has no held file.
            endpoint = _endpoint_to_journal(store, ident, err)
            path = defer_release(journal, request, conf.etcd.endpoints, endpoint)
            log.warning("etcd unreachable (%s): removed %s; release recorded in %s", err.msg, ", ".join(removed) or "no interface", path)
            if conf.ipam_type != CALICO_IPAM and not ipam.deleted:
                ipam.delete()  # another IPAM plugin keeps its own state: it needs no etcd of ours
            return None
        journal.forget_held(ident.network, ident.container_id, ident.ifname)
        if endpoint is not None and mine is None:
            log.info("endpoint %s/%s belongs to container %s: left alone", ident.namespace, ident.endpoint_name, endpoint.container_id)
        log.info(
            "deleted %s; released %s; endpoint %s",
            ", ".join(removed) or "no interface",
            ", ".join(released) or "no address",
            "deleted" if deleted else "absent",
        )
        log.debug("etcd round trips: %d", store.round_trips)
    return None


# --------------------------------------------------------------------------------------------
# GC and STATUS


def gc(request: CniRequest, services: Services) -> None:
    """GC: release every allocation, endpoint and `cali*` link of this network on this node whose
    attachment is not listed; forward GC to a delegated IPAM plugin."""
    conf = settings(request)
    live = valid_attachments(request.config)
    node = node_name(request.config)
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(Netns.here())
        store = _datastore(stack, services, conf, bounded=False)
        journal = Journal(conf.journal_dir)
        replay_quietly(store, journal)
        reconciliation.reconcile(store, request.network, node, live, ipam=conf.ipam_type == CALICO_IPAM, host=host, journal=journal)
    if conf.ipam_type != CALICO_IPAM:
        delegate(request, conf.ipam_type, "GC")
    return None


def _endpoint_to_journal(store: Datastore, ident: Identity, err: DatastoreUnavailable) -> dict | None:
    """The endpoint a DEL that found the datastore locked leaves for the replay to delete: this
    attachment's, by uid (none without a uid: a uid is what tells it from a newer sandbox's). The
    read that found the lock carries it; when an earlier pending entry found the lock first (the
    replay before this DEL's own read), it is read now, which a lock allows. None when etcd is down."""
    if not isinstance(err, DatastoreNotReady):
        return None
    found = err.endpoint
    if found is None:
        try:
            found = store.workload_endpoint(ident.namespace, ident.endpoint_name)
        except DatastoreUnavailable:
            return None
    uid = (found.doc.get("metadata") or {}).get("uid") if found is not None and ident.owns_endpoint(found) else None
    return {"namespace": ident.namespace, "name": ident.endpoint_name, "uid": uid} if uid else None


def status(request: CniRequest, services: Services) -> None:
    """STATUS: etcd answers and (with calico-ipam) a usable pool has room; else error 50.
    A delegated IPAM plugin answers for itself. A configuration ADD would refuse (an unknown
    policy.type) is refused here too, so a runtime never sees ready where every ADD fails."""
    conf = settings(request)
    check_policy_type(conf.policy_type)
    with contextlib.ExitStack() as stack:
        store = _datastore(stack, services, conf, bounded=False)
        try:
            replay_quietly(store, Journal(conf.journal_dir))
        except DatastoreError as err:
            raise etcd_unavailable(err) from None
        if conf.ipam_type == CALICO_IPAM:
            ipam_status(store, conf.ipam, node_name(request.config))
        else:
            try:
                store.ipam_config()
            except DatastoreError as err:
                raise etcd_unavailable(err) from None
    if conf.ipam_type != CALICO_IPAM:
        delegate(request, conf.ipam_type, "STATUS")
    return None


# --------------------------------------------------------------------------------------------
# CHECK


def check(request: CniRequest, services: Services) -> None:
    """CHECK: the container interface, its addresses and routes, the host veth and its routes, the
    endpoint and the IPAM allocation all match prevResult; every discrepancy is named."""
    conf = settings(request)
    ident = _identity(request, conf)
    prev = normalize(request.prev_result or {})
    problems: list[str] = []

    interfaces = [i for i in prev.get("interfaces") or [] if isinstance(i, dict)]
    cont_index = next((n for n, i in enumerate(interfaces) if i.get("name") == request.ifname and i.get("sandbox")), None)
    if cont_index is None:
        problems.append(f"prevResult has no interface {request.ifname} with a sandbox")
    cont_entry = interfaces[cont_index] if cont_index is not None else {}
    host_entry = next((i for i in interfaces if not i.get("sandbox") and str(i.get("name", "")).startswith("cali")), None)
    if host_entry is None:
        problems.append("prevResult lists no host interface")
    elif host_entry.get("name") != ident.host_veth:
        problems.append(f"prevResult names host interface {host_entry.get('name')}, this attachment's is {ident.host_veth}")
    try:
        addresses = [ipaddress.ip_interface(ip["address"]) for ip in prev["ips"] if ip.get("interface") in (None, cont_index)]
        routes = [ipaddress.ip_network(r["dst"], strict=False) for r in prev.get("routes") or [] if isinstance(r, dict)]
    except (KeyError, ValueError) as exc:
        raise CniError(INVALID_CONFIG, "prevResult holds an invalid address or route", str(exc)) from None
    if not addresses:
        problems.append(f"prevResult has no address for {request.ifname}")
    mtu = cont_entry.get("mtu") if isinstance(cont_entry.get("mtu"), int) else 0
    spec = wiring.WorkloadSpec(ident.host_veth, request.ifname, ident.alias, mtu, addresses, routes)

    with contextlib.ExitStack() as stack:
        host = stack.enter_context(Netns.here())
        container = Netns.open(request.netns)
        if container is None:
            raise CniError(CHECK_FAILED, f"CHECK of {request.ifname} failed: CNI_NETNS {request.netns} does not exist")
        stack.enter_context(container)
        problems += wiring.verify(host, container, spec, cont_entry.get("mac"))

        store = _datastore(stack, services, conf, bounded=False)
        problems += _check_endpoint(store, ident, addresses, cont_entry.get("mac"))
        problems += backend_for(request, conf, store, services.memory(conf.etcd)).check()
    if problems:
        raise CniError(CHECK_FAILED, f"CHECK of {request.ifname} failed: " + "; ".join(problems))
    return None


def _check_endpoint(store, ident: Identity, addresses, mac: str | None) -> list[str]:
    name = f"{ident.namespace}/{ident.endpoint_name}"
    endpoint = store.workload_endpoint(ident.namespace, ident.endpoint_name)
    if endpoint is None:
        return [f"workload endpoint {name} does not exist"]
    if not ident.owns_endpoint(endpoint):
        return [f"workload endpoint {name} belongs to container {endpoint.container_id}"]
    problems = []
    spec = endpoint.spec
    stored = sorted(endpoint.ip_networks)
    expected = sorted(str(a) for a in addresses)
    if stored != expected:
        problems.append(f"workload endpoint {name} has ipNetworks {stored}, prevResult has {expected}")
    if spec.get("interfaceName") != ident.host_veth:
        problems.append(f"workload endpoint {name} names interface {spec.get('interfaceName')}, expected {ident.host_veth}")
    if mac and (spec.get("mac") or "").lower() != mac.lower():
        problems.append(f"workload endpoint {name} has MAC {spec.get('mac')}, prevResult has {mac}")
    if spec.get("node") != ident.node:
        problems.append(f"workload endpoint {name} is on node {spec.get('node')}, this is {ident.node}")
    return problems
