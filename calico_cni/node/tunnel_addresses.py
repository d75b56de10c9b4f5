"""The node's tunnel addresses, from IPAM, as Calico v3.30's `allocate-tunnel-addrs`
(node/pkg/allocateip) keeps them: one per kind (VXLAN, VXLAN over IPv6, IPIP; WireGuard is not
done here), each under the handle `<kind>-tunnel-addr-<node>` with the attributes
`{"node", "type"}`, and written to the node's Node resource.

For each kind, a pool qualifies when it is enabled, of the kind's family, its mode for the kind's
encapsulation is Always or CrossSubnet, its allowedUses is empty or has Tunnel, and its
nodeSelector matches the node's labels. With a qualifying pool the Node's address is kept when it
lies in one and our handle holds it with our attributes; one with our attributes under another
handle or none, with no handle and no attributes (from before Calico used either), or under our
handle whose record is lost (whatever its attributes), is put under our handle and kept;
otherwise what the handle holds is released and one address is assigned from the qualifying pools
(IntendedUse Tunnel: usually the first address of the node's own block), then written to the
Node. An address a pod or anyone else holds is left to them. With no qualifying
pool, the handle's addresses are released, the Node's address too when it is ours (handle or
attributes) or has neither, and the field cleared.

Every write is a compare-and-swap: a Node changed by someone else meanwhile (calico-node's own
start-up, `calicoctl label`) makes the kind's step run again from a fresh read, which then keeps
both changes; an address assigned before a lost Node write is found under the handle on the next
attempt and adopted, never assigned twice. IPAM is read only when the controller's inputs in the
cache (the pools, this node's labels and tunnel fields) changed since the last good pass, or every
SAFETY_INTERVAL, so a cluster busy with pods costs etcd nothing here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

from calico_cni.datastore.etcd import Range
from calico_cni.datastore.retry import with_retries
from calico_cni.datastore.store import Datastore
from calico_cni.errors import CalicoError
from calico_cni.model import keys
from calico_cni.model.kinds.routing import NODE
from calico_cni.model.records import TUNNEL
from calico_cni.model.resource import Resource
from calico_cni.node.cluster_view import ALWAYS, CROSS_SUBNET, ClusterView, IPAddress, NodeInfo, Pool
from calico_cni.node.node_record import write_node
from calico_cni.node.parts import PartHealth, ProblemLog, reconcile_passes
from calico_cni.node.syncer import Cache, Snapshot
from calico_ipam import blocks as blk
from calico_ipam.allocator import (
    Allocation,
    Attachment,
    FamilyRequest,
    allocation_at,
    assign,
    held_with_attributes,
    rehome,
    release,
    release_allocation,
    release_exact,
)

log = logging.getLogger(__name__)

# How often a pass runs with no change in the cache (it only compares inputs: no etcd call).
PERIOD = 2.0
# How often IPAM and the Node are read even though nothing changed in the cache: repairs an address
# released or a field cleared behind our back (e.g. `calicoctl ipam release`).
SAFETY_INTERVAL = 60.0
# After a failed pass, IPAM is tried again this often while the inputs stay the same (a full pool
# is not read every PERIOD); a change of the inputs is tried at once.
RETRY_INTERVAL = 10.0


@dataclass(frozen=True)
class TunnelKind:
    """One kind of tunnel address: Calico's attribute type, handle prefix, family, the pool mode
    that asks for it, and where the Node records it."""

    label: str  # for messages
    attr_type: str
    handle_prefix: str
    family: int
    encapsulation: str  # "vxlan" or "ipip": which pool mode asks for it
    path: tuple[str, ...]  # the Node's field, under spec

    def handle(self, node: str) -> str:
        """The IPAM handle of this node's address of this kind."""
        return f"{self.handle_prefix}{node}"

    def mode(self, pool: Pool) -> str:
        """The pool's mode for this kind's encapsulation."""
        return pool.vxlan_mode if self.encapsulation == "vxlan" else pool.ipip_mode

    def address_of(self, node: NodeInfo) -> IPAddress | None:
        """The address the Node records for this kind (parsed; None when absent or unreadable)."""
        if self.encapsulation == "ipip":
            return node.ipip_v4
        return node.vxlan_address(self.family)

    @property
    def field(self) -> str:
        """The Node's field, as `spec.a.b` (for messages)."""
        return "spec." + ".".join(self.path)


VXLAN_V4 = TunnelKind("VXLAN", "vxlanTunnelAddress", "vxlan-tunnel-addr-", 4, "vxlan", ("ipv4VXLANTunnelAddr",))
VXLAN_V6 = TunnelKind("VXLAN IPv6", "vxlanV6TunnelAddress", "vxlan-v6-tunnel-addr-", 6, "vxlan", ("ipv6VXLANTunnelAddr",))
IPIP = TunnelKind("IPIP", "ipipTunnelAddress", "ipip-tunnel-addr-", 4, "ipip", ("bgp", "ipv4IPIPTunnelAddr"))
KINDS = (VXLAN_V4, VXLAN_V6, IPIP)


class TunnelAddressError(CalicoError):
    """A tunnel address could not be kept, assigned or released: the message says why."""


# --- pure parts ---------------------------------------------------------------------------------


def qualifies(pool: Pool, kind: TunnelKind, labels: Mapping[str, str]) -> bool:
    """Whether `pool` may give a node with `labels` its tunnel address of `kind` (Calico's
    determineEnabledPoolCIDRs)."""
    return (
        not pool.disabled
        and pool.cidr.version == kind.family
        and kind.mode(pool) in (ALWAYS, CROSS_SUBNET)
        and TUNNEL in pool.allowed_uses
        and pool.selects(labels)
    )


def qualifying_pools(view: ClusterView, kind: TunnelKind) -> list[Pool]:
    """The pools of `view` that qualify for this node's address of `kind`, in name order (none
    while the node has no Node resource)."""
    me = view.me
    if me is None:
        return []
    return sorted((p for p in view.pools if qualifies(p, kind, me.labels)), key=lambda p: p.name)


def set_field(doc: dict[str, Any], kind: TunnelKind, address: str | None) -> None:
    """Set the Node document's field for `kind` to `address`, or remove it (None), in place; every
    other field kept. (A `spec.bgp` left empty is removed by `node_record.write_node`.)"""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        if address is None:
            return
        spec = doc["spec"] = {}
    *parents, leaf = kind.path
    holder = spec
    for part in parents:
        child = holder.get(part)
        if not isinstance(child, dict):
            if address is None:
                return
            child = holder[part] = {}
        holder = child
    if address is None:
        holder.pop(leaf, None)
    else:
        holder[leaf] = address


Inputs = tuple[Hashable, ...]


def inputs(view: ClusterView) -> Inputs:
    """What the tunnel addresses depend on in the cache: the pools, this node's labels and the
    addresses its Node records (for each of KINDS). A pass reads IPAM again only when this
    changed."""
    me = view.me
    if me is None:
        return (view.pools, None, None)
    return (view.pools, tuple(sorted(me.labels.items())), tuple(k.address_of(me) for k in KINDS))


def inputs_after(started: Inputs, held: Mapping[TunnelKind, IPAddress | None]) -> Inputs:
    """The inputs as the cache shows them once a pass that started from `started` and left the
    Node recording `held` is seen (kinds it did not reconcile keep what they had)."""
    pools, labels, addresses = started
    before = addresses or (None,) * len(KINDS)
    return (pools, labels, tuple(held[k] if k in held else before[i] for i, k in enumerate(KINDS)))


def describe(held: Mapping[TunnelKind, IPAddress | None]) -> str:
    """A health detail naming the addresses held."""
    parts = [f"{kind.label} {address}" for kind, address in held.items() if address is not None]
    return "tunnel addresses: " + ", ".join(parts) if parts else "no tunnel address needed"


# --- IPAM and the Node -------------------------------------------------------------------------


def _read(store: Datastore, nodename: str) -> tuple[Resource | None, ClusterView]:
    """This node's Node and every pool, in one round trip."""
    (node_kvs, pool_kvs), _ = store.client.read([Range(keys.node(nodename)), Range(keys.POOLS, prefix=True)])
    items = {kv.key: kv for kv in (*node_kvs, *pool_kvs)}
    node = Resource(NODE, json.loads(node_kvs[0].value), node_kvs[0].mod_revision) if node_kvs else None
    return node, ClusterView.read(items, nodename)


def _write_node(store: Datastore, node: Resource, kind: TunnelKind, address: str | None) -> None:
    """The Node with the field for `kind` set (or cleared), by compare-and-swap against the
    revision it was read at: `Conflict` (the step runs again from a fresh read) when it moved."""
    if write_node(store, node, lambda doc: set_field(doc, kind, address)) is not node:
        log.info("tunnel addresses: Node(%s) %s %s", node.name, kind.field, f"set to {address}" if address else "cleared")


def reconcile(store: Datastore, nodename: str, kind: TunnelKind) -> IPAddress | None:
    """Keep, assign or release this node's address of `kind` (see the module docstring); the
    address the node holds afterwards (None: no pool asks for one). Raises a CalicoError
    (TunnelAddressError, a datastore or IPAM error) when it cannot."""
    handle_id = kind.handle(nodename)
    attachment = Attachment.tunnel(handle_id, nodename, kind.attr_type)

    def ours(secondary: Mapping[str, Any]) -> bool:
        return secondary.get("type") == kind.attr_type and secondary.get("node") == nodename

    def claimable(found: Allocation) -> bool:
        # Calico's correctAllocationWithHandle and removeHostTunnelAddr: an allocation with no
        # handle and no attributes (from before handles), one naming our handle (its record lost,
        # so `held` misses it, whatever its attributes), and here also one whose attributes name
        # it ours: never leaked, never left to a holder that does not exist.
        return found.state == blk.BARE or (found.state in (blk.HELD, blk.NO_HANDLE) and (found.handle == handle_id or ours(found.secondary)))

    def step(attempt: int) -> IPAddress | None:
        node, view = _read(store, nodename)
        if node is None or view.me is None:
            raise TunnelAddressError(f"Node({nodename}) does not exist or is not readable", "calico-node's start-up registers it; its tunnel addresses follow")
        pools = qualifying_pools(view, kind)
        held = held_with_attributes(store, store.handle(handle_id), None)
        current = kind.address_of(view.me)
        # The Node's address when our handle does not hold it: Calico looks it up whatever holds it.
        found = allocation_at(store, current) if current is not None and all(a.address != current for a, _ in held) else None
        if not pools:
            if held:
                log.info("tunnel addresses: no pool needs a %s address on %s; releasing %s", kind.label, nodename, ", ".join(str(a.address) for a, _ in held))
                release(store, handle_id, None)
            # The Node's address is freed too when it is ours though our handle misses it.
            if found is not None and claimable(found):
                release_allocation(store, found)
            _write_node(store, node, kind, None)
            return None

        def in_pools(address: IPAddress) -> bool:
            return any(address in p.cidr for p in pools)

        valid = [a for a, secondary in held if ours(secondary) and in_pools(a.address)]
        keep = next((a for a in valid if a.address == current), None)
        if keep is None and found is not None:
            if claimable(found):
                # Kept under our handle (its count recreated) while a qualifying pool holds it,
                # else released.
                if in_pools(current):
                    keep = rehome(store, found, attachment)
                else:
                    release_allocation(store, found)
            # Anything else holding it (a pod, someone else's tunnel) is left to its holder.
        if keep is None and valid:
            keep = valid[0]
        if keep is None:
            if held:
                release(store, handle_id, None)
            keep = assign(store, attachment, [FamilyRequest(kind.family, tuple(p.name for p in pools), use=TUNNEL)])[0]
            held = []
            log.info("tunnel addresses: assigned %s address %s to %s from block %s", kind.label, keep.address, nodename, keep.block)
        _write_node(store, node, kind, str(keep.address))
        # Only once the Node names the kept address: what else the handle holds (a duplicate left
        # by an interrupted pass) is released, exactly those allocations.
        extras = [a for a, _ in held if (a.block, a.ordinal) != (keep.block, keep.ordinal)]
        if extras:
            log.info("tunnel addresses: releasing %s, also held by %s", ", ".join(str(a.address) for a in extras), handle_id)
            release_exact(store, handle_id, extras)
        return keep.address

    return with_retries(f"keeping the {kind.label} tunnel address of Node({nodename})", step)


# --- the daemon part ---------------------------------------------------------------------------


class TunnelAddressController:
    """Keeps this node's tunnel addresses as its pools ask (a calico-node part).

    `connect()` gives a datastore for one pass's IPAM work; the controller closes its client when
    the pass is over. The cache must hold the Nodes and IP pools (it may hold more).
    """

    def __init__(self, nodename: str, cache: Cache, connect: Callable[[], Datastore], kinds: Sequence[TunnelKind] = KINDS) -> None:
        self.nodename = nodename
        self.cache = cache
        self.connect = connect
        self.kinds = tuple(kinds)
        # The inputs the last good pass started from, and those it left (its own Node write
        # changes the Node's fields): a cache showing either needs no IPAM pass.
        self._settled: tuple[Inputs, ...] = ()
        self._next_ipam = 0.0  # time.monotonic() from which a pass reads IPAM whatever the inputs
        self.failure: str | None = None  # what the last IPAM pass could not do
        self.held: dict[TunnelKind, IPAddress | None] = {}
        self.problems = ProblemLog(log, "tunnel addresses")
        self._inputs: tuple[int, Inputs] | None = None  # (cache version, its inputs)

    def inputs_of(self, snapshot: Snapshot) -> Inputs:
        """`inputs` of the snapshot, read from the pools and this node's Node only (the cache also
        holds every block, which change with every pod and are not parsed here), once per cache
        version."""
        if self._inputs is not None and self._inputs[0] == snapshot.version:
            return self._inputs[1]
        mine = keys.node(self.nodename)
        items = {k: v for k, v in snapshot.items.items() if k == mine or k.startswith(keys.POOLS)}
        found = inputs(ClusterView.read(items, self.nodename))
        self._inputs = (snapshot.version, found)
        return found

    def due(self, snapshot: Snapshot, now: float | None = None) -> bool:
        """Whether a pass over `snapshot` must read IPAM: the inputs changed since the last good
        pass, or SAFETY_INTERVAL passed (RETRY_INTERVAL after a failure)."""
        now = time.monotonic() if now is None else now
        if not self._settled or now >= self._next_ipam:
            return True
        return self.inputs_of(snapshot) not in self._settled

    def run_pass(self, snapshot: Snapshot, force: bool = False) -> str | None:
        """One reconciliation started from `snapshot` (IPAM only when `due`, or `force`); what
        failed (in the last IPAM pass), or None."""
        if not force and not self.due(snapshot):
            return self.failure
        started = self.inputs_of(snapshot)
        problems: list[str] = []
        held: dict[TunnelKind, IPAddress | None] = {}
        try:
            store = self.connect()
        except CalicoError as exc:
            problems.append(f"cannot reach the datastore: {exc}")
        else:
            try:
                for kind in self.kinds:
                    try:
                        held[kind] = reconcile(store, self.nodename, kind)
                    except CalicoError as exc:
                        problems.append(f"{kind.label} tunnel address ({kind.handle(self.nodename)}): {exc}")
            finally:
                store.client.close()
        self.problems.report(problems)
        self.held.update(held)
        if problems:
            self._settled = (started,)
            self._next_ipam = time.monotonic() + RETRY_INTERVAL
            self.failure = "; ".join(problems)
        else:
            self._settled = (started, inputs_after(started, held))
            self._next_ipam = time.monotonic() + SAFETY_INTERVAL
            self.failure = None
        return self.failure

    def run(self, stop: threading.Event, health: PartHealth) -> None:
        """The controller's loop: a pass on every change of the cache, and every PERIOD; nothing
        before the first full list (design rule 27)."""

        def one_pass(snapshot: Snapshot) -> tuple[bool, str]:
            failure = self.run_pass(snapshot)
            return (True, describe(self.held)) if failure is None else (False, failure)

        reconcile_passes(self.cache, stop, health, PERIOD, one_pass)
