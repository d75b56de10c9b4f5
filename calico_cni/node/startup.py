"""calico-node's start-up, as Calico v3.30's `calico-node -startup` (node/pkg/lifecycle/startup):

1. The Node resource is created or updated with one compare-and-swap: `spec.bgp.ipv4Address`
   (with its prefix, host bits kept), `ipv6Address`, `asNumber` (the AS variable; unset keeps the
   stored one). Labels, annotations and every other field are kept as they are; none is added.
   With backend `none` the addresses and the AS are left alone (a new Node is still created,
   without spec.bgp, where Calico's start-up writes none: the pools' nodeSelectors are matched
   against its labels, and calicoctl lists it). An address that changed and that
   another node already has is refused (unless DISABLE_NODE_IP_CHECK), the check and the write
   in one transaction so two nodes cannot take one address at once.
2. The default pools, only where no pool of that family exists (and not NO_DEFAULT_POOLS), created
   through calicoctl's create (`resources.verbs`) so an invalid pool is refused with its reason.
3. ClusterInformation and the tiers (`resources.cluster.initialise`), then the FelixConfigurations
   `default` (reportingInterval 0s, logSeverityScreen Info) and `node.<name>`
   (defaultEndpointToHostAction Return), each created when missing and given only the fields it
   lacks, as Calico's start-up does.
4. The nodename file, written atomically (touched when it already holds the name: its time is the
   start time Calico's -bird-ready probe reads).

Every step compares before it writes: a restart with the same settings writes nothing to etcd.
The kernel is read through `Host` (the autodetect module by default), so the datastore steps can be
run without a node namespace.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from calico_cni.datastore import resources as stored
from calico_cni.files import replace_file
from calico_cni.datastore.resources import Ref
from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore
from calico_cni.dataplane.rtnl import IPInterface
from calico_cni.config import read_regular_file
from calico_cni.errors import CalicoError
from calico_cni.model.keys import NODES
from calico_cni.model.kinds.config import CLUSTER_INFORMATION, FELIX_CONFIGURATION
from calico_cni.model.kinds.ipam import IPPOOL
from calico_cni.model.kinds.routing import NODE
from calico_cni.model.resource import Resource
from calico_cni.node import autodetect
from calico_cni.node.node_record import update_node
from calico_cni.node.settings import DEFAULT_IPV4_POOL_CIDR, Method, NodeSettings, PoolSettings
from calico_cni.resources import cluster, documents, verbs
from calico_cni.resources.errors import ResourceError

log = logging.getLogger(__name__)

# The fallbacks Calico's poolselector tries when 192.168.0.0/16 holds a host address.
FALLBACK_POOLS = tuple(f"172.{i}.0.0/16" for i in range(16, 32))
GLOBAL_FELIX_CONFIG = "default"
FELIX_DEFAULTS = {"reportingInterval": "0s", "logSeverityScreen": "Info"}
NODE_FELIX_DEFAULTS = {"defaultEndpointToHostAction": "Return"}
ADDRESS_FIELDS = {4: "ipv4Address", 6: "ipv6Address"}


class StartupError(CalicoError):
    """calico-node cannot start: the message says what is wrong and what to set."""


@dataclass(frozen=True)
class Registration:
    """What start-up registered: the Node as stored, its addresses and AS (None: unset), and what
    this run wrote (e.g. "Node(node1) created"; empty when everything was already in place)."""

    node: Resource
    ipv4: IPInterface | None
    ipv6: IPInterface | None
    as_number: int | None
    changes: tuple[str, ...] = ()


class Host:
    """What start-up reads from the node's kernel (its network namespace). Tests replace it."""

    def detect(self, method: Method, version: int) -> tuple[IPInterface | None, str]:
        """The detected address of `version`, or None and why."""
        return autodetect.detect_with_reason(method, version)

    def local_cidr(self, address: str, version: int) -> IPInterface:
        """A bare address with the prefix of the interface holding it (else /32); a CIDR as is."""
        return autodetect.local_cidr(address, version)

    def on_host(self, address: IPInterface) -> bool:
        """Whether an interface holds the address."""
        return autodetect.on_host(address)

    def host_addresses(self, version: int) -> list[IPInterface]:
        """Every address of `version` on the node."""
        return autodetect.host_addresses(version)

    def ipv6_supported(self) -> bool:
        """Whether the kernel has IPv6 (Calico checks /proc/sys/net/ipv6)."""
        return os.path.exists("/proc/sys/net/ipv6")


# --------------------------------------------------------------------------------------------
# The node's addresses


def _address_text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _parsed(text: object, version: int) -> IPInterface | None:
    """A stored spec.bgp address of `version` (with its prefix), or None when it is absent, not an
    address, or of the other family."""
    try:
        address = ipaddress.ip_interface(text) if isinstance(text, str) and text else None
    except ValueError:
        return None
    return address if address is not None and address.version == version else None


class _DetectionFailed(StartupError):
    """No address of a family that must have one."""


@dataclass
class _Addresses:
    """Works out spec.bgp's addresses from the settings and the stored node, as Calico's
    configureIPsAndSubnets; the kernel is asked at most once per family however often a lost
    compare-and-swap makes the plan run again."""

    settings: NodeSettings
    host: Host

    def __post_init__(self) -> None:
        self._detected: dict[int, tuple[IPInterface | None, str]] = {}
        self._given: dict[int, IPInterface] = {}
        self._checked: set[str] = set()

    def _detect(self, version: int) -> tuple[IPInterface | None, str]:
        if version not in self._detected:
            try:
                self._detected[version] = self.host.detect(self.settings.method(version), version)
            except autodetect.AutodetectError as exc:
                # A method that cannot work here (kubernetes-internal-ip, unreadable interfaces) is a
                # failed detection, as Calico's AutoDetectCIDR returning nil: the stored address is
                # kept, else start-up stops naming the method.
                self._detected[version] = (None, str(exc))
        return self._detected[version]

    def _check_on_host(self, text: str, version: int) -> None:
        """Calico's validateIP: only a warning when no interface holds the address, but an address
        that does not parse (written into the store by hand) stops start-up."""
        if not text or text in self._checked:
            return
        address = _parsed(text, version)
        if address is None:
            env = "IP" if version == 4 else "IP6"
            raise StartupError(
                f"the IPv{version} address {text[:80]!r} stored in Node({self.settings.nodename}) is not an IPv{version} address",
                f"set {env} to this node's address (or to autodetect) to replace it",
            )
        self._checked.add(text)
        if not self.host.on_host(address):
            log.warning("unable to confirm IPv%d address %s is assigned to this host", version, address.ip)

    def address(self, version: int, stored_text: str) -> str:
        """The address of `version` the node gets ("" for none)."""
        given = self.settings.ip if version == 4 else self.settings.ip6
        method_env = "IP_AUTODETECTION_METHOD" if version == 4 else "IP6_AUTODETECTION_METHOD"
        # IPv4 is detected when asked or when nothing is stored; IPv6 only when asked.
        if given == "autodetect" or (version == 4 and given == "" and not stored_text):
            found, reason = self._detect(version)
            if found is not None:
                return str(found)
            if not stored_text:
                raise _DetectionFailed(
                    f"could not autodetect an IPv{version} address with {method_env}={self.settings.method(version).text}: {reason}",
                    f"choose another {method_env} or set {'IP' if version == 4 else 'IP6'} to this node's address",
                )
            log.warning("autodetection of the IPv%d address failed (%s): keeping %s", version, reason, stored_text)
            self._check_on_host(stored_text, version)
            return stored_text
        if given in ("none", ""):
            self._check_on_host(stored_text, version)
            return stored_text
        if version not in self._given:
            # IP= takes the prefix from the interface holding a bare address; IP6= is used as
            # given (a bare IPv6 address is a /128), as Calico does.
            self._given[version] = self.host.local_cidr(given, 4) if version == 4 else ipaddress.ip_interface(given)
        text = str(self._given[version])
        self._check_on_host(text, version)
        return text


def _conflicts(nodes: list[Resource], name: str, bgp: dict) -> list[tuple[int, str]]:
    """Which of this node's addresses another node already has: (IP version, a sentence naming
    that node) for each."""
    out = []
    for version, field in ADDRESS_FIELDS.items():
        mine = _parsed(bgp.get(field), version)
        if mine is None:
            continue
        for other in nodes:
            if other.name == name:
                continue
            theirs_text = _address_text(((other.doc.get("spec") or {}).get("bgp") or {}).get(field))
            theirs = _parsed(theirs_text, version)
            if theirs_text and theirs is None:
                # Calico stops here; one bad record must not keep every node from starting.
                log.warning("Node(%s) has an IPv%d address that is not an address (%r): ignored by the address check", other.name, version, theirs_text)
            elif theirs is not None and theirs.ip == mine.ip:
                out.append((version, f"Calico node '{other.name}' is already using the IPv{version} address {mine.ip}"))
    return out


def _node_doc(settings: NodeSettings, current: Resource | None, bgp: dict | None) -> dict:
    """The Node document to store: the stored one (or a new one) with `bgp` (None: left as it is)
    and the orchestrator reference CALICO_K8S_NODE_REF asks for."""
    doc = copy.deepcopy(current.doc) if current is not None else verbs.new_resource(NODE, settings.nodename, {}).doc
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        spec = doc["spec"] = {}
    if bgp is not None:
        if bgp:
            spec["bgp"] = bgp
        else:
            spec.pop("bgp", None)
    if settings.k8s_node_ref:
        spec["orchRefs"] = [{"nodeName": settings.k8s_node_ref, "orchestrator": "k8s"}]
    return doc


def _wanted_bgp(settings: NodeSettings, current: Resource | None, addresses: _Addresses) -> tuple[dict, bool]:
    """spec.bgp as this start-up wants it, and whether an address changed (then the address check
    runs). Raises StartupError when the node would have no address at all."""
    stored_bgp = ((current.doc.get("spec") or {}).get("bgp") if current is not None else None) or {}
    bgp = dict(stored_bgp)
    for version, field in ADDRESS_FIELDS.items():
        value = addresses.address(version, _address_text(stored_bgp.get(field)))
        if value:
            bgp[field] = value
        else:
            bgp.pop(field, None)
    if not bgp.get("ipv4Address") and not bgp.get("ipv6Address"):
        raise StartupError(
            "no IPv4 or IPv6 address configured or detected, required for Calico networking",
            "set IP (and/or IP6) to this node's address or to autodetect, or CALICO_NETWORKING_BACKEND=none",
        )
    if settings.as_number_value is not None:
        bgp["asNumber"] = settings.as_number_value
    changed = any(_address_text(bgp.get(f)) != _address_text(stored_bgp.get(f)) for f in ADDRESS_FIELDS.values())
    return bgp, changed


def _clear_addresses(store: Datastore, name: str, versions: set[int]) -> None:
    """Calico's clearNodeIPs: after a failed detection or an address conflict, the autodetected
    addresses of an existing node are removed, so no other node keeps peering with an address
    this node may no longer have. Best effort: a failure is only logged."""
    fields = [ADDRESS_FIELDS[v] for v in sorted(versions)]

    # What the last run of `clear` removed: update_node re-runs it from a fresh read after each
    # lost compare-and-swap, so it is logged once, after the write that stuck.
    cleared: dict[str, Any] = {}

    def clear(doc: dict) -> None:
        cleared.clear()
        bgp = (doc.get("spec") or {}).get("bgp")
        for f in fields:
            if isinstance(bgp, dict) and f in bgp:
                cleared[f] = bgp.pop(f)

    try:
        update_node(store, name, clear)
    except CalicoError as exc:
        log.warning("failed to clear the addresses of Node(%s): %s", name, exc)
        return
    for f, value in cleared.items():
        log.info("cleared the out-of-date %s %s of Node(%s)", f, value, name)


def _autodetected(settings: NodeSettings) -> set[int]:
    return {v for v, given in ((4, settings.ip), (6, settings.ip6)) if given == "autodetect"}


def register_node(settings: NodeSettings, store: Datastore, host: Host, changes: list[str]) -> Resource:
    """Create or update this node's Node resource (see the module docstring); the stored Node."""
    addresses = _Addresses(settings, host)
    name = settings.nodename
    routed = settings.backend != "none"

    def step(attempt: int) -> Resource:
        current = stored.get(store, Ref(NODE, name))
        bgp, changed = _wanted_bgp(settings, current, addresses) if routed else (None, False)
        doc = _node_doc(settings, current, bgp)
        if current is not None and doc == current.doc:
            return current
        prefixes = []
        if changed and not settings.disable_node_ip_check:
            nodes, revision = stored.list_kind(store, NODE)
            problems = _conflicts(nodes, name, bgp or {})
            if problems:
                raise _Conflicting(problems)
            # No other node may take the address between this check and the write.
            prefixes.append((NODES, revision))
        node = Resource(NODE, doc, current.revision if current is not None else 0)
        if not store.commit(puts=[node], prefixes_unchanged_since=prefixes):
            raise Conflict()
        changes.append(f"{node.identifier} {'updated' if current is not None else 'created'}")
        log.info("%s %s: %s", node.identifier, "updated" if current is not None else "created", (doc.get("spec") or {}).get("bgp"))
        return node

    try:
        return with_retries(f"registering Node({name})", step)
    except _DetectionFailed:
        _clear_addresses(store, name, _autodetected(settings))
        raise
    except _Conflicting as exc:
        _clear_addresses(store, name, _autodetected(settings) & {version for version, _ in exc.problems})
        raise StartupError("; ".join(text for _, text in exc.problems), "give this node another address, or set DISABLE_NODE_IP_CHECK=true if the address is meant to be shared") from None


class _Conflicting(Exception):
    """Another node has one of the addresses (raised inside the CAS step, reported after it)."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__("; ".join(text for _, text in problems))
        self.problems = problems


# --------------------------------------------------------------------------------------------
# Default pools


def default_ipv4_cidr(host_addresses: list[IPInterface]) -> str:
    """192.168.0.0/16 unless a host address is inside it, then the first 172.16-31.0.0/16 holding
    none (Calico's poolselector); 192.168.0.0/16 again when every one does."""
    for candidate in (DEFAULT_IPV4_POOL_CIDR, *FALLBACK_POOLS):
        net = ipaddress.ip_network(candidate)
        if not any(a.ip in net for a in host_addresses if a.version == 4):
            return candidate
    return DEFAULT_IPV4_POOL_CIDR


def random_ula_prefix(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A random unique local /48 (fd + 40 random bits), as Calico's GenerateIPv6ULAPrefix."""
    return str(ipaddress.IPv6Network((b"\xfd" + random_bytes(5) + bytes(10), 48)))


def _pool_document(pool: PoolSettings, cidr: str) -> dict:
    spec: dict = {
        "cidr": cidr,
        "blockSize": pool.block_size,
        "ipipMode": pool.ipip_mode,
        "vxlanMode": pool.vxlan_mode,
    }
    # Calico's IPPoolSpec omits false booleans (omitempty).
    if pool.nat_outgoing:
        spec["natOutgoing"] = True
    if pool.disable_bgp_export:
        spec["disableBGPExport"] = True
    if pool.node_selector:
        spec["nodeSelector"] = pool.node_selector
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": pool.name}, "spec": spec}


def _families(pools: list[Resource]) -> set[int]:
    out = set()
    for pool in pools:
        try:
            out.add(ipaddress.ip_network((pool.doc.get("spec") or {}).get("cidr"), strict=False).version)
        except (TypeError, ValueError):
            log.warning("%s has a CIDR that is not a network: skipped when looking for pools", pool.identifier)
    return out


def ensure_default_pools(settings: NodeSettings, store: Datastore, host: Host, changes: list[str]) -> None:
    """Create default-ipv4-ippool and default-ipv6-ippool where no pool of the family exists."""
    if settings.no_default_pools:
        log.info("NO_DEFAULT_POOLS: skipping the default pools")
        return
    pools, _ = stored.list_kind(store, IPPOOL)
    present = _families(pools)
    for version in (4, 6):
        pool = settings.pool(version)
        env = f"CALICO_IPV{version}POOL_CIDR"
        if pool.cidr == "none" or version in present:
            continue
        if version == 6 and not (settings.ipv6_support and host.ipv6_supported()):
            log.info("IPv6 is not supported here (FELIX_IPV6SUPPORT or /proc/sys/net/ipv6): no default IPv6 pool")
            continue
        cidr = pool.cidr or (default_ipv4_cidr(host.host_addresses(4)) if version == 4 else random_ula_prefix())
        source = f"{env}={cidr}" if pool.cidr else f"the default IPv{version} pool {cidr}"
        try:
            docs = documents.decode_all([(source, _pool_document(pool, cidr))])
            outcome = verbs.write(store, "create", docs, skip_exists=True)
        except ResourceError as exc:
            if version in _families(stored.list_kind(store, IPPOOL)[0]):
                log.info("another writer created an IPv%d pool meanwhile: %s", version, exc)
                continue
            raise StartupError(f"cannot create the default IPv{version} pool {pool.name}", str(exc)) from None
        if outcome.written:
            changes.append(f"IPPool({pool.name}) created")
            log.info("created the default IPv%d pool %s (%s)", version, pool.name, cidr)


# --------------------------------------------------------------------------------------------
# FelixConfigurations


def _with_defaults(current: Resource | None, name: str, defaults: dict) -> Resource | None:
    """The FelixConfiguration `name` with `defaults` for the fields it lacks; None when it has them."""
    if current is None:
        return verbs.new_resource(FELIX_CONFIGURATION, name, dict(defaults))
    spec = dict(current.doc.get("spec") or {})
    missing = {k: v for k, v in defaults.items() if spec.get(k) in (None, "")}
    if not missing:
        return None
    return Resource(current.kind, {**current.doc, "spec": {**spec, **missing}}, current.revision)


def ensure_felix_configurations(settings: NodeSettings, store: Datastore, changes: list[str]) -> None:
    """FelixConfiguration `default` and `node.<name>`, as Calico's ensureDefaultConfig in etcd mode."""
    wanted = {GLOBAL_FELIX_CONFIG: FELIX_DEFAULTS, f"node.{settings.nodename}": NODE_FELIX_DEFAULTS}

    def step(attempt: int) -> list[str]:
        current, _ = stored.read(store, [Ref(FELIX_CONFIGURATION, name) for name in wanted])
        puts, written = [], []
        for existing, (name, defaults) in zip(current, wanted.items()):
            updated = _with_defaults(existing, name, defaults)
            if updated is not None:
                puts.append(updated)
                written.append(f"{updated.identifier} {'updated' if existing is not None else 'created'}")
        if puts and not store.commit(puts=puts):
            raise Conflict()
        return written

    changes.extend(with_retries("writing the default FelixConfigurations", step))


# --------------------------------------------------------------------------------------------
# The nodename file


def write_nodename(path: str, name: str) -> bool:
    """Write `name` to the nodename file (no newline, as Calico) when it holds anything else:
    a temporary file next to it, renamed into place, its directory created. True when written.

    A file that already holds the name is only touched: Calico rewrites it at every start, and its
    -bird-ready probe reads the file's modification time as the time calico-node started (until
    the threshold has passed, every BGP session must be up), as `node.probes` does."""
    try:
        # Not open(): a FIFO at the path would block start-up until a writer came.
        if read_regular_file(path, len(name.encode()) + 1) == name.encode():
            os.utime(path)
            return False
    except OSError:
        pass  # absent, not a regular file, unreadable: (re)written below
    try:
        replace_file(path, name)
    except OSError as exc:
        raise StartupError(f"cannot write the node name to {path}", str(exc)) from None
    return True


# --------------------------------------------------------------------------------------------
# The whole


def run(settings: NodeSettings, store: Datastore, host: Host | None = None) -> Registration:
    """Calico's start-up for this node (see the module docstring). StartupError when the node
    cannot start; datastore errors (etcd unreachable, ...) propagate as they are."""
    host = host or Host()
    changes: list[str] = []
    log.info("starting node %s (name from %s)", settings.nodename, settings.nodename_origin)
    node = register_node(settings, store, host, changes)
    try:
        os.makedirs(settings.state_dir, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the state directory {settings.state_dir}", str(exc)) from None
    ensure_default_pools(settings, store, host, changes)
    info = stored.get(store, Ref(CLUSTER_INFORMATION, cluster.CLUSTER_INFORMATION))
    before = info.revision if info is not None else 0
    after = cluster.initialise(store, settings.cluster_type) if settings.cluster_type is not None else cluster.initialise(store)
    if after.revision != before:
        changes.append(f"{after.identifier} {'updated' if before else 'created'}")
    ensure_felix_configurations(settings, store, changes)
    if write_nodename(settings.nodename_file, settings.nodename):
        changes.append(f"nodename file {settings.nodename_file} written")
    bgp = (node.doc.get("spec") or {}).get("bgp") or {}
    asn = bgp.get("asNumber")
    log.info("using node name %s%s", settings.nodename, f"; changed: {', '.join(changes)}" if changes else "; nothing changed")
    return Registration(
        node=node,
        ipv4=_parsed(bgp.get("ipv4Address"), 4),
        ipv6=_parsed(bgp.get("ipv6Address"), 6),
        as_number=asn if isinstance(asn, int) and not isinstance(asn, bool) else None,
        changes=tuple(changes),
    )
