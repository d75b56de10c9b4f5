"""The CNI verbs of `calico-ipam`, also called in-process by the `calico` plugin.

Each verb parses its configuration once, at its top (`settings`), before the first etcd call, so
that a bad request fails with its error and changes nothing; the verbs close their datastore.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import time
from typing import Iterator, Sequence

from calico_cni.config import ConfigError, IpamPluginSettings, IpamSettings, check_node_name_keys, ipam_plugin_settings, node_name
from calico_cni.datastore.errors import DatastoreError, DatastoreUnavailable, TooManyConflicts
from calico_cni.datastore.store import Datastore, Hint, Pin, hint_locked, pin
from calico_cni.journal import Journal
from calico_cni.model import keys
from calico_cni.model.keys import CLUSTER_INFORMATION, IPAM_CONFIG, attachment_handle
from calico_cni.model.records import CorruptRecord, IpamConfig
from calico_cni.plugins.services import Services
from calico_cni.plugins.status import etcd_unavailable, ipam_status
from calico_cni.protocol.errors import CHECK_FAILED, INVALID_CONFIG, INVALID_ENVIRONMENT, CniError
from calico_cni.protocol.request import CniRequest
from calico_cni.protocol.result import convert, normalize
from calico_ipam import allocator
from calico_ipam.allocator import Assigned, Attachment, BlockMemory, FamilyRequest
from calico_cni.protocol.gc import valid_attachments
from calico_ipam.reconcile import reconcile
from calico_ipam.replay import replay_quietly

log = logging.getLogger(__name__)


def handle_id(request: CniRequest) -> str:
    """The IPAM handle of a request's attachment: `<network>.<containerID>` (Calico's format)."""
    return attachment_handle(request.network, request.container_id)


def legacy_handle_id(request: CniRequest) -> str:
    """The handle Calico's older releases used: `<namespace>.<pod>` or the bare container ID."""
    pod = request.k8s_pod
    return f"{pod[0]}.{pod[1]}" if pod else request.container_id


def attachment(request: CniRequest, node: str) -> Attachment:
    """The attachment of a request on `node` (addresses belong to an attachment, not a container)."""
    pod = request.k8s_pod
    return Attachment(handle_id(request), node, request.ifname, *(pod or (None, None)), network=request.network)


def _parse_address(text: str, origin: str, code: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if "%" in text:
        raise CniError(code, f"{origin}: {text[:80]!r} has a zone index; a pod address has none")
    try:
        return ipaddress.ip_interface(text.strip()).ip
    except ValueError:
        raise CniError(code, f"{origin}: {text[:80]!r} is not an IP address") from None


def family_requests(request: CniRequest, ipam: IpamSettings) -> list[FamilyRequest]:
    """What to assign: the addresses asked for (CNI_ARGS IP=, runtimeConfig.ips), else one
    automatic address per family `ipam` enables."""
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
    if ipam.assign_ipv4:
        out.append(FamilyRequest(4, ipam.ipv4_pools, max_blocks_per_node=ipam.max_blocks_per_node))
    if ipam.assign_ipv6:
        out.append(FamilyRequest(6, ipam.ipv6_pools, max_blocks_per_node=ipam.max_blocks_per_node))
    return out


def assign_addresses(
    request: CniRequest, store: Datastore, node: str, families: Sequence[FamilyRequest], memory: BlockMemory, hint: Hint | None = None
) -> list[Assigned]:
    """Assign the request's addresses on `node` (both families or neither); `memory` guesses which
    blocks to read with the view and learns the node's blocks; `hint` (calico-node's watch cache)
    replaces the view's read when it can (`allocator.assign`). One at a time per node in this
    process (`BlockMemory.node_lock`)."""
    with _node_turn(store, memory, node):
        return allocator.assign(store, attachment(request, node), families, memory, hint)


# Without the datastore's own deadline (`Datastore.limit_to`), how long a request waits for its turn.
NODE_TURN_WAIT = 30.0


@contextlib.contextmanager
def _node_turn(store: Datastore, memory: BlockMemory, node: str | None) -> Iterator[None]:
    """Hold `node`'s IPAM lock of this process (see `BlockMemory.node_lock`), waiting at most until
    the datastore's deadline: past it, "try again later", as for a datastore that did not answer."""
    if node is None:
        yield
        return
    deadline = store.client.deadline_at
    wait = max(0.0, deadline - time.monotonic()) if deadline is not None else NODE_TURN_WAIT
    lock = memory.node_lock(node)
    if not lock.acquire(timeout=wait):
        raise TooManyConflicts(f"IPAM on node {node}: this node's other requests did not finish within {wait:.1f} s; try again later")
    try:
        yield
    finally:
        lock.release()


def _guess_blocks(request: CniRequest, node: str | None, memory: BlockMemory) -> list[str]:
    """The node's blocks as `memory` last saw them (only a warm process has seen any). A DEL
    never fails for want of a node name: one it cannot resolve means no guess."""
    if memory.empty:
        return []
    if node is None:
        try:
            node = node_name(request.config)
        except ConfigError:
            return []
    return memory.known(node)


def release_addresses(request: CniRequest, store: Datastore, memory: BlockMemory, node: str | None = None, hint: Hint | None = None) -> list[Assigned]:
    """Release the attachment's addresses, and those of Calico's legacy handle. The blocks
    `memory` knows for `node` (resolved here when the verb did not need it) are read with the
    handles.

    With `hint` (calico-node's watch cache) saying the datastore is not locked, and `memory`
    holding the handle and blocks as this process's ADD committed them: one commit per block and
    no read (`allocator.release_remembered`), which also compares ClusterInformation and the IPAM
    config as the hint saw them, and the legacy handle absent. Anything else, or a failed commit:
    the read path, which finishes what is left."""
    if node is None and not memory.empty:
        try:
            node = node_name(request.config)
        except ConfigError:
            node = None  # no turn to take: a DEL never fails for want of a node name
    with _node_turn(store, memory, node):
        return _release_addresses(request, store, memory, node, hint)


def _release_addresses(request: CniRequest, store: Datastore, memory: BlockMemory, node: str | None, hint: Hint | None) -> list[Assigned]:
    ids = [handle_id(request), legacy_handle_id(request)]
    done: list[Assigned] = []
    if hint is not None and not hint_locked(hint):
        cfg = hint.get(IPAM_CONFIG)
        try:
            config = IpamConfig.from_json(cfg.value, cfg.mod_revision) if cfg is not None else IpamConfig()
        except CorruptRecord:
            config = None
        if config is not None:
            pins = [pin(hint, CLUSTER_INFORMATION), pin(hint, IPAM_CONFIG), *(Pin(keys.handle(h), 0) for h in ids[1:] if h != ids[0])]
            done, finished = allocator.release_remembered(store, memory, ids[0], request.ifname, config, pins)
            if finished:
                return done
    # In a warm process (the agent) the node's blocks are read with the handles: one round trip fewer.
    handles, config, blocks = store.handles_config_blocks(ids, _guess_blocks(request, node, memory))
    released = done
    for hid, ifname in zip(ids, (request.ifname, None)):
        if handles.get(hid) is not None:
            for cidr in handles[hid].blocks:
                memory.forget_block(cidr)  # about to change: a hinted allocation must not trust the old record
            released += allocator.release(store, hid, ifname, first=(handles[hid], config), blocks=blocks)
            blocks = None  # that release changed blocks: read them again
    memory.forget_handle(ids[0])
    return released


def defer_release(journal: Journal, request: CniRequest, endpoints: Sequence[str], endpoint: dict | None = None) -> str:
    """etcd is unreachable (or the datastore locked) during a DEL: record the attachment's release
    (with what its ADD recorded it holds, else `endpoint`: namespace, name and uid of the endpoint
    to delete) in the journal, for a later invocation to finish; returns the entry's path."""
    held = journal.held(request.network, request.container_id, request.ifname)
    return journal.add_pending(request.network, request.container_id, request.ifname, handle_id(request), endpoints, held, endpoint)


def ipam_result(assigned: list[Assigned]) -> dict:
    """The IPAM result (1.x shape): each address with its block's prefix length."""
    return {"ips": [{"address": a.cidr} for a in assigned], "dns": {}}


def settings(request: CniRequest) -> IpamPluginSettings:
    """Every key and variable this verb uses, checked before the first etcd call (the logging
    keys were checked when logging was set up). GC and STATUS resolve the node's name right after
    these; ADD after the addresses it is asked for (with both wrong, the address error wins, as it
    always did); DEL and CHECK need none and only type-check its keys, so a DEL works with the
    CNI_ARGS of an ADD that failed and a node-name file that is gone."""
    conf = ipam_plugin_settings(request.config, request.environ)
    if request.command in ("DEL", "CHECK"):
        check_node_name_keys(request.config)
    return conf


def _check_prev_result(request: CniRequest) -> None:
    prev = request.prev_result or {}
    ips = prev.get("ips")
    if ips is not None and (not isinstance(ips, list) or not all(isinstance(e, dict) for e in ips)):
        raise CniError(INVALID_CONFIG, "prevResult.ips must be a list of objects", f"got {json.dumps(ips)[:80]}")


def _datastore(stack: contextlib.ExitStack, services: Services, conf: IpamPluginSettings) -> Datastore:
    """The verb's datastore, bounded by `add_timeout` and closed when the verb ends."""
    store = services.datastore(conf.etcd, conf.operation_timeout)
    stack.callback(store.close)
    return store


def add(request: CniRequest, services: Services) -> dict:
    """ADD: assign and print the IPAM result; remember what is held for a DEL with etcd down."""
    conf = settings(request)
    families = family_requests(request, conf.ipam)
    node = node_name(request.config)
    journal = Journal(conf.journal_dir)
    with contextlib.ExitStack() as stack:
        store = _datastore(stack, services, conf)
        replay_quietly(store, journal)
        assigned = assign_addresses(request, store, node, families, services.memory(conf.etcd), services.hint(conf.etcd))
    log.info("assigned %s", ", ".join(a.cidr for a in assigned))
    try:
        journal.record_held(request.network, request.container_id, request.ifname, handle_id(request), assigned, conf.etcd.endpoints)
    except OSError as exc:
        log.error("cannot record the allocation in the release journal: %s", exc)
    return convert(ipam_result(assigned), request.cni_version)


def delete(request: CniRequest, services: Services) -> None:
    """DEL: release the attachment's addresses; succeeds when there is nothing to release. With
    etcd unreachable the release is recorded in the journal and finished by a later invocation."""
    conf = settings(request)
    journal = Journal(conf.journal_dir)
    with contextlib.ExitStack() as stack:
        store = _datastore(stack, services, conf)
        try:
            replay_quietly(store, journal)
            released = release_addresses(request, store, services.memory(conf.etcd), hint=services.hint(conf.etcd))
        except DatastoreUnavailable as err:
            path = defer_release(journal, request, conf.etcd.endpoints)
            log.warning("etcd unreachable (%s): release recorded in %s", err.msg, path)
            return None
    journal.forget_held(request.network, request.container_id, request.ifname)
    log.info("released %s", ", ".join(str(a.address) for a in released) or "nothing")
    return None


def gc(request: CniRequest, services: Services) -> None:
    """GC: release every allocation of this network on this node whose attachment is not in
    `cni.dev/valid-attachments`."""
    conf = settings(request)
    node = node_name(request.config)
    live = valid_attachments(request.config)
    journal = Journal(conf.journal_dir)
    with contextlib.ExitStack() as stack:
        store = _datastore(stack, services, conf)
        replay_quietly(store, journal)
        reconcile(store, request.network, node, live, endpoints=False, journal=journal)


def status(request: CniRequest, services: Services) -> None:
    """STATUS: etcd answers and a pool usable by this node has room; else error 50."""
    conf = settings(request)
    node = node_name(request.config)
    with contextlib.ExitStack() as stack:
        store = _datastore(stack, services, conf)
        try:
            replay_quietly(store, Journal(conf.journal_dir))
        except DatastoreError as err:
            raise etcd_unavailable(err) from None
        ipam_status(store, conf.ipam, node)


def check_addresses(request: CniRequest, store: Datastore) -> None:
    """Raise CHECK_FAILED naming each difference between prevResult and what IPAM holds."""
    prev = normalize(request.prev_result or {})
    expected = {ipaddress.ip_interface(e["address"]).ip for e in prev["ips"]}
    handle = handle_id(request)
    holding = {a.address for a in allocator.held_by(store, handle, request.ifname)}
    problems = []
    for address in sorted(expected - holding, key=lambda a: (a.version, a)):
        problems.append(f"{address} is in prevResult but not allocated to {handle} ({request.ifname})")
    for address in sorted(holding - expected, key=lambda a: (a.version, a)):
        problems.append(f"{handle} ({request.ifname}) holds {address}, which is not in prevResult")
    if problems:
        raise CniError(CHECK_FAILED, "IPAM check failed: " + "; ".join(problems))


def check(request: CniRequest, services: Services) -> None:
    """CHECK: the handle holds exactly the addresses of prevResult."""
    conf = settings(request)
    _check_prev_result(request)
    with contextlib.ExitStack() as stack:
        check_addresses(request, _datastore(stack, services, conf))
