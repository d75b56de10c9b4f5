"""The CNI verbs of `calico-ipam`, also called in-process by the `calico` plugin."""

from __future__ import annotations

import ipaddress
import json
import logging

from calico_cni.config import ConfigError, check_node_name_keys, etcd_settings, ipam_settings, log_settings, node_name, operation_timeout
from calico_cni.datastore.store import Datastore, connect
from calico_cni.protocol.errors import CHECK_FAILED, INVALID_CONFIG, INVALID_ENVIRONMENT, CniError
from calico_cni.protocol.request import CniRequest
from calico_cni.protocol.result import convert, normalize

from calico_ipam import allocator
from calico_ipam.allocator import Assigned, Attachment, BlockMemory, FamilyRequest

log = logging.getLogger(__name__)

# The blocks this process has seen each node hold (a warm process reads them with the next view).
# A module global until the verbs are given one (plugins.services).
_MEMORY = BlockMemory()


def handle_id(request: CniRequest) -> str:
    """The IPAM handle of an attachment: `<network>.<containerID>` (Calico's format)."""
    return f"{request.network}.{request.container_id}"


def legacy_handle_id(request: CniRequest) -> str:
    """The handle Calico's older releases used: `<namespace>.<pod>` or the bare container ID."""
    pod = request.k8s_pod
    return f"{pod[0]}.{pod[1]}" if pod else request.container_id


def attachment(request: CniRequest) -> Attachment:
    """The attachment of a request, with the node name resolved (design rule 10)."""
    pod = request.k8s_pod
    return Attachment(handle_id(request), node_name(request.config), request.ifname, *(pod or (None, None)), network=request.network)


def _parse_address(text: str, origin: str, code: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if "%" in text:
        raise CniError(code, f"{origin}: {text[:80]!r} has a zone index; a pod address has none")
    try:
        return ipaddress.ip_interface(text.strip()).ip
    except ValueError:
        raise CniError(code, f"{origin}: {text[:80]!r} is not an IP address") from None


def family_requests(request: CniRequest) -> list[FamilyRequest]:
    """What to assign: the addresses asked for (CNI_ARGS IP=, runtimeConfig.ips), else one
    automatic address per enabled family."""
    settings = ipam_settings(request.config)
    wanted = []
    if request.args.get("IP"):
        wanted += [_parse_address(t, "CNI_ARGS IP", INVALID_ENVIRONMENT) for t in request.args["IP"].split(",") if t.strip()]
    ips = request.runtime_config.get("ips")
    if ips is not None:
        if not isinstance(ips, list) or not all(isinstance(t, str) for t in ips):
            raise CniError(INVALID_CONFIG, "runtimeConfig.ips must be a list of addresses")
        wanted += [_parse_address(t, "runtimeConfig.ips", INVALID_CONFIG) for t in ips]
    if wanted:
        families = [a.version for a in wanted]
        if len(set(families)) != len(families):
            raise CniError(INVALID_CONFIG, "at most one requested address per IP family", ", ".join(map(str, wanted)))
        return [FamilyRequest(a.version, address=a) for a in wanted]
    out = []
    if settings.assign_ipv4:
        out.append(FamilyRequest(4, settings.ipv4_pools))
    if settings.assign_ipv6:
        out.append(FamilyRequest(6, settings.ipv6_pools))
    return out


def assign_addresses(request: CniRequest, store: Datastore) -> list[Assigned]:
    """Assign the request's addresses (both families or neither)."""
    return allocator.assign(store, attachment(request), family_requests(request), _MEMORY)


def _guess_blocks(request: CniRequest) -> list[str]:
    """The node's blocks as this process last saw them (only a warm process has seen any); a DEL
    never fails for want of a node name."""
    if not _MEMORY:
        return []
    try:
        return _MEMORY.known(node_name(request.config))
    except ConfigError:
        return []


def release_addresses(request: CniRequest, store: Datastore) -> list[Assigned]:
    """Release the attachment's addresses, and those of Calico's legacy handle."""
    ids = [handle_id(request), legacy_handle_id(request)]
    # In a warm process (the agent) the node's blocks are read with the handles: one round trip fewer.
    handles, config, blocks = store.handles_config_blocks(ids, _guess_blocks(request))
    released = []
    for hid, ifname in zip(ids, (request.ifname, None)):
        if handles.get(hid) is not None:
            released += allocator.release(store, hid, ifname, first=(handles[hid], config), blocks=blocks)
            blocks = None  # that release changed blocks: read them again
    return released


def ipam_result(assigned: list[Assigned]) -> dict:
    """The IPAM result (1.x shape): each address with its block's prefix length."""
    return {"ips": [{"address": a.cidr} for a in assigned], "dns": {}}


def _store(request: CniRequest) -> Datastore:
    """The datastore, with every etcd call of this invocation bounded by `add_timeout`."""
    import time

    store = connect(request.config, request.environ)
    store.client.deadline_at = time.monotonic() + operation_timeout(request.config)
    return store


def validate(request: CniRequest) -> None:
    """Check every key and variable this verb uses before the first etcd call, so that a bad
    request fails with its CNI error and changes nothing."""
    config = request.config
    ipam_settings(config)
    etcd_settings(config, request.environ)
    log_settings(config)
    operation_timeout(config)
    from calico_cni.journal import journal_dir

    journal_dir(config)
    if request.command in ("ADD", "GC", "STATUS"):
        if request.command == "ADD":
            family_requests(request)
        node_name(config)
    else:
        # DEL and CHECK need no node name; DEL must work with the CNI_ARGS of an ADD that failed.
        check_node_name_keys(config)
    if request.command == "CHECK":
        prev = request.prev_result or {}
        ips = prev.get("ips")
        if ips is not None and (not isinstance(ips, list) or not all(isinstance(e, dict) for e in ips)):
            raise CniError(INVALID_CONFIG, "prevResult.ips must be a list of objects", f"got {json.dumps(ips)[:80]}")


def _journal(request: CniRequest):
    from calico_cni.journal import Journal, journal_dir

    return Journal(journal_dir(request.config, request.environ))


def _endpoints(request: CniRequest) -> tuple[str, ...]:
    return etcd_settings(request.config, request.environ).endpoints


def add(request: CniRequest) -> dict:
    """ADD: assign and print the IPAM result; remember what is held for a DEL with etcd down."""
    from calico_ipam.replay import replay_quietly

    validate(request)
    store = _store(request)
    replay_quietly(request.config, store, environ=request.environ)
    assigned = assign_addresses(request, store)
    log.info("assigned %s", ", ".join(a.cidr for a in assigned))
    try:
        _journal(request).record_held(request.network, request.container_id, request.ifname, handle_id(request), assigned, _endpoints(request))
    except OSError as exc:
        log.error("cannot record the allocation in the release journal: %s", exc)
    return convert(ipam_result(assigned), request.cni_version)


def delete(request: CniRequest) -> None:
    """DEL: release the attachment's addresses; succeeds when there is nothing to release. With
    etcd unreachable the release is recorded in the journal and finished by a later invocation."""
    from calico_cni.datastore.errors import DatastoreUnavailable
    from calico_ipam.replay import replay_quietly

    validate(request)
    journal = _journal(request)
    store = _store(request)
    try:
        replay_quietly(request.config, store, environ=request.environ)
        released = release_addresses(request, store)
    except DatastoreUnavailable as err:
        held = journal.held(request.network, request.container_id, request.ifname)
        path = journal.add_pending(request.network, request.container_id, request.ifname, handle_id(request), _endpoints(request), held)
        log.warning("etcd unreachable (%s): release recorded in %s", err.msg, path)
        return None
    journal.forget_held(request.network, request.container_id, request.ifname)
    log.info("released %s", ", ".join(str(a.address) for a in released) or "nothing")


def gc(request: CniRequest) -> None:
    """GC: release every allocation of this network on this node whose attachment is not in
    `cni.dev/valid-attachments`."""
    from calico_cni.protocol.gc import valid_attachments
    from calico_ipam.reconcile import reconcile

    validate(request)
    from calico_ipam.replay import replay_quietly

    live = valid_attachments(request.config)
    store = _store(request)
    replay_quietly(request.config, store, environ=request.environ)
    reconcile(store, request.network, node_name(request.config), live, endpoints=False, journal=_journal(request))


def status(request: CniRequest) -> None:
    """STATUS: etcd answers and a pool usable by this node has room; else error 50."""
    from calico_ipam.replay import replay_quietly
    from calico_cni.plugins.status import ipam_status

    from calico_cni.datastore.errors import DatastoreError
    from calico_cni.protocol.errors import CniError as _Err
    from calico_cni.plugins.status import etcd_unavailable

    validate(request)
    store = _store(request)
    try:
        replay_quietly(request.config, store, environ=request.environ)
    except (_Err, DatastoreError) as err:
        raise etcd_unavailable(err) from None
    ipam_status(store, request.config)


def check_addresses(request: CniRequest, store: Datastore) -> None:
    """Raise CHECK_FAILED naming each difference between prevResult and what IPAM holds."""
    prev = normalize(request.prev_result or {})
    expected = {ipaddress.ip_interface(e["address"]).ip for e in prev["ips"]}
    holding = {a.address for a in allocator.held_by(store, handle_id(request), request.ifname)}
    problems = []
    for address in sorted(expected - holding, key=lambda a: (a.version, a)):
        problems.append(f"{address} is in prevResult but not allocated to {handle_id(request)} ({request.ifname})")
    for address in sorted(holding - expected, key=lambda a: (a.version, a)):
        problems.append(f"{handle_id(request)} ({request.ifname}) holds {address}, which is not in prevResult")
    if problems:
        raise CniError(CHECK_FAILED, "IPAM check failed: " + "; ".join(problems))


def check(request: CniRequest) -> None:
    """CHECK: the handle holds exactly the addresses of prevResult."""
    validate(request)
    check_addresses(request, _store(request))
