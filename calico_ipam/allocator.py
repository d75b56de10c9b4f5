"""Assignment and release of addresses over the datastore.

All concurrency is optimistic: every step reads, decides with the pure functions of `blocks` and
`pools`, and writes with one compare-and-swap commit. A lost race raises `Conflict`, and
`with_retries` (the only retry loop, in calico_cni.datastore.retry) re-runs the step from a fresh
read. No lock or lease is ever taken: a plugin killed while holding one would stall every other
ADD on the node until it expired, while a lost compare-and-swap costs only a re-read.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Iterator, Sequence

from calico_cni.model import keys
from calico_cni.model.records import CONFIRMED, PENDING, WORKLOAD, Affinity, Block, Handle, IpamConfig, IPAddress, IPNetwork, IPPool, Node, now_rfc3339, parse_time
from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore, Hint, IpamView, Pin, hinted_ipam_view

from calico_ipam import blocks as blk
from calico_ipam.errors import AddressConflict, AddressesExhausted
from calico_ipam.pools import block_cidr_for, candidate_blocks, pool_containing, pool_of, usable_pools

log = logging.getLogger(__name__)


class BlockMemory:
    """What a warm process last saw of each node's IPAM: the block CIDRs each (node, family) had
    affinity for, the block records as last read or committed here (with their revision), and
    the handles this process's allocations wrote.

    A warm process (the agent, calico-node) keeps one and reads those blocks in the same
    transaction as the next allocation's view, so a steady-state allocation is one read and one
    commit, and a release likewise; with a watch cache's hints (calico-node) the remembered
    records replace the reads: one commit each. It is only a guess: every write is a
    compare-and-swap against the revision remembered, so a record changed by anyone since fails
    the commit and the caller reads afresh. A fresh one (an exec'd plugin) knows nothing, which
    is always correct.
    """

    # Handles remembered at most (the pods of a node; the oldest are forgotten first).
    HANDLES_MAX = 4096

    def __init__(self) -> None:
        self._blocks: dict[tuple[str, int], tuple[str, ...]] = {}
        # Kept as stored (JSON, revision), so that each use parses a private copy: requests run
        # on several threads and the allocator changes the records it is given.
        self._records: dict[str, tuple[bytes, int]] = {}
        self._handles: dict[str, tuple[bytes, int]] = {}
        # Requests share one memory on several threads: keeping the newer of two records is a
        # check then a set, and evicting the oldest handle iterates the dict.
        self._lock = threading.Lock()
        # One lock per node: this process's allocations and releases on a node, one at a time.
        self._node_locks: dict[str, threading.RLock] = {}
        self._node_locks_lock = threading.Lock()

    def node_lock(self, node: str) -> threading.RLock:
        """The lock under which this process allocates and releases on `node`. Concurrent requests
        of one node in one process (a burst of pods through calico-node) would otherwise race for
        the same block, and every lost compare-and-swap costs a fresh read and another commit: 100
        at once spent most of their time so. In turn, each finds the block as the one before left
        it (remembered here), and its commit is the only round trip. Other writers (other nodes,
        calicoctl) are still met by compare-and-swap only."""
        with self._node_locks_lock:
            lock = self._node_locks.get(node)
            if lock is None:
                lock = self._node_locks[node] = threading.RLock()
            return lock

    def known(self, node: str, families: Sequence[int] = (4, 6)) -> list[str]:
        """The block CIDRs `node` had affinity for at its last allocation seen here."""
        return [c for f in families for c in self._blocks.get((node, f), ())]

    def remember(self, node: str, view: IpamView, blocks: bool = True) -> None:
        """Remember the node's affinities of each family `view` read, and with `blocks` the blocks
        read with it (right after the read: the allocator changes them before it commits)."""
        for family, affinities in view.affinities.items():
            self._blocks[(node, family)] = tuple(sorted(a.cidr for a in affinities))
        if blocks:
            self.remember_blocks(b for b in view.blocks.values() if b is not None)

    def remember_blocks(self, blocks: Iterable[Block]) -> None:
        """Remember these block records as read or committed (their revision is the CAS token)."""
        for block in blocks:
            record = (block.to_json(), block.revision)  # outside the lock: serialising takes time
            with self._lock:
                known = self._records.get(block.cidr)
                if known is not None and known[1] > block.revision:
                    continue  # another request's commit, later than this one, is remembered already
                self._records[block.cidr] = record

    def block(self, cidr: str) -> Block | None:
        """A private copy of block `cidr` as last read or committed here; None: not remembered."""
        found = self._records.get(cidr)
        return Block.from_kv(keys.block(cidr), *found) if found is not None else None

    def forget_block(self, cidr: str) -> None:
        """Forget block `cidr`'s record (it was deleted, or is known stale)."""
        self._records.pop(cidr, None)

    def remember_handle(self, handle: Handle) -> None:
        """Remember the handle record as this process committed it."""
        record = (handle.to_json(), handle.revision)
        with self._lock:
            known = self._handles.get(handle.handle_id)
            if known is not None and known[1] > handle.revision:
                return  # a later commit of this handle is remembered already
            self._handles.pop(handle.handle_id, None)
            self._handles[handle.handle_id] = record
            while len(self._handles) > self.HANDLES_MAX:
                self._handles.pop(next(iter(self._handles)), None)

    def handle(self, handle_id: str) -> Handle | None:
        """A private copy of the handle as this process last committed it; None: not remembered."""
        found = self._handles.get(handle_id)
        return Handle.from_kv(keys.handle(handle_id), *found) if found is not None else None

    def forget_handle(self, handle_id: str) -> None:
        """Forget a handle (released, or known stale)."""
        with self._lock:
            self._handles.pop(handle_id, None)

    def set(self, node: str, family: int, cidrs: Sequence[str]) -> None:
        """Remember these blocks for (node, family), whatever they are (tests plant stale guesses)."""
        self._blocks[(node, family)] = tuple(cidrs)

    def forget(self) -> None:
        """Forget everything (what a freshly exec'd plugin knows)."""
        self._blocks.clear()
        self._records.clear()
        with self._lock:
            self._handles.clear()

    @property
    def empty(self) -> bool:
        """Whether nothing has been remembered yet (a fresh exec has read no node's blocks)."""
        return not self._blocks


@dataclass(frozen=True)
class Attachment:
    """Who addresses are for: the handle `<network>.<containerID>` plus the interface (addresses
    belong to an attachment, so a container with several interfaces holds one set per interface).

    A node's tunnel address is an attachment too (`Attachment.tunnel`): its handle is
    `<kind>-tunnel-addr-<node>` and `tunnel_type` the kind Calico records."""

    handle_id: str
    node: str
    ifname: str
    namespace: str | None = None
    pod: str | None = None
    network: str | None = None
    tunnel_type: str | None = None

    @classmethod
    def tunnel(cls, handle_id: str, node: str, tunnel_type: str) -> "Attachment":
        """A node's tunnel address of `tunnel_type` ("vxlanTunnelAddress", ...) under `handle_id`
        (no interface: the allocation belongs to the whole handle)."""
        return cls(handle_id, node, "", tunnel_type=tunnel_type)

    def secondary(self) -> dict[str, str]:
        """The attributes recorded with each allocation.

        `network` lets GC find a network's allocations without parsing handle ids (a network
        name may itself contain dots). A tunnel address records exactly what Calico's
        allocateip records, `{"node", "type"}`: Calico's tools read the type, and neither an
        interface nor a timestamp belongs to it (no grace period applies: `calicoctl ipam check`
        knows it from the Node's field).
        """
        if self.tunnel_type is not None:
            return {"node": self.node, "type": self.tunnel_type}
        out = {"node": self.node, "ifname": self.ifname, "timestamp": now_rfc3339()}
        if self.network:
            out["network"] = self.network
        if self.namespace and self.pod:
            out.update(namespace=self.namespace, pod=self.pod)
        return out


@dataclass(frozen=True)
class Assigned:
    """One address held by an attachment."""

    address: IPAddress
    block: str
    ordinal: int
    sequence: int | None
    new: bool = False

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.address.version

    @property
    def prefixlen(self) -> int:
        """The prefix length of the address's block."""
        return int(self.block.rsplit("/", 1)[1])

    @property
    def cidr(self) -> str:
        """The address with its block's prefix length (what calico-ipam returns)."""
        return f"{self.address}/{self.prefixlen}"


@dataclass
class Allocation:
    """One allocated address, whatever holds it (Calico's GetAssignmentAttributes): which handle
    (None: it has none), where, and since when. `state` is the ordinal's `blocks.state` (HELD,
    NO_HANDLE or BARE); `record` the block as it was read, which a change of this allocation
    writes back by compare-and-swap."""

    address: IPAddress
    handle: str | None
    block: str
    ordinal: int
    sequence: int | None
    attributes: dict[str, Any]
    endpoints: list[str] = field(default_factory=list)
    state: str = blk.HELD
    record: Block | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, block: Block, o: int, state: str) -> "Allocation":
        """The allocation of ordinal `o` of `block`, which is in `state` (one of blocks.RELEASABLE)."""
        attr = block.attributes[block.allocations[o]]
        return cls(block.address(o), blk.handle_of(attr), block.cidr, o, block.seq_for_alloc.get(str(o)), attr, state=state, record=block)

    @property
    def secondary(self) -> dict[str, Any]:
        """The attributes recorded with the allocation (node, ifname, pod, timestamp, ...)."""
        secondary = self.attributes.get("secondary") if isinstance(self.attributes, dict) else None
        return secondary if isinstance(secondary, dict) else {}

    @property
    def node(self) -> str | None:
        """The node that allocated the address, when recorded."""
        return self.secondary.get("node")

    @property
    def timestamp(self) -> str | None:
        """When the address was allocated (RFC 3339), when recorded."""
        return self.secondary.get("timestamp")

    def age(self, now: float) -> float | None:
        """Seconds since the allocation (None when it records no readable timestamp)."""
        t = parse_time(self.timestamp)
        return None if t is None else now - t

    @property
    def key(self) -> tuple[str | None, str, int, int | None]:
        """What identifies this allocation even after its address is released and reused."""
        return (self.handle, self.block, self.ordinal, self.sequence)

    @property
    def assigned(self) -> Assigned:
        """The allocation as `Assigned` (what `release_exact` takes)."""
        return Assigned(self.address, self.block, self.ordinal, self.sequence)


@dataclass(frozen=True)
class FamilyRequest:
    """What to assign for one family: an automatic address (from `pools`, if named) or `address`.

    `max_blocks_per_node` is the CNI config's optional limit on the blocks an automatic assignment
    lets the node hold (`ipam.max_blocks_per_node`), Calico's per-request limit: 0 sets none of
    its own, as Calico's CNI plugin sets none, so `maxBlocksPerHost` or Calico's 20 applies (see
    `block_limit`). A specific address ignores every limit, as Calico's AssignIP does.

    `use` is Calico's IntendedUse: WORKLOAD (pods) takes pools allowing Workload, TUNNEL (a node's
    tunnel address) pools allowing Tunnel; named `pools` are checked for it too.
    """

    family: int
    pools: tuple[str, ...] = ()
    address: IPAddress | None = None
    max_blocks_per_node: int = 0
    use: str = WORKLOAD


# ------------------------------------------------------------------------------------------------
# Reading what an attachment holds


def held_with_attributes(store: Datastore, handle: Handle | None, ifname: str | None) -> list[tuple[Assigned, dict]]:
    """Addresses the handle holds (for one interface, or all), read from its blocks, each with the
    attributes its allocation records (`secondary`; {} when it records none)."""
    if handle is None or not handle.blocks:
        return []
    out = []
    for cidr, block in sorted(store.blocks(sorted(handle.blocks)).items()):
        for o in blk.ordinals_of(block, handle.handle_id, ifname):
            secondary = (block.attribute(o) or {}).get("secondary")
            out.append((Assigned(block.address(o), cidr, o, block.seq_for_alloc.get(str(o))), secondary if isinstance(secondary, dict) else {}))
    return out


def held(store: Datastore, handle: Handle | None, ifname: str | None) -> list[Assigned]:
    """Addresses the handle holds (for one interface, or all), read from its blocks."""
    return [a for a, _ in held_with_attributes(store, handle, ifname)]


def held_by(store: Datastore, handle_id: str, ifname: str | None) -> list[Assigned]:
    """Addresses held by a handle id (for CHECK and repeated ADDs)."""
    return held(store, store.handle(handle_id), ifname)


def allocation_at(store: Datastore, address: IPAddress) -> Allocation | None:
    """The allocation of `address`, whatever holds it, with its block as read (None: no block
    covers it, or the address is free, cooling down or its attribute entry is missing)."""
    cidr = next((c for c in store.block_cidrs(address.version) if address in ipaddress.ip_network(c)), None)
    block = store.block(cidr) if cidr else None
    if block is None:
        return None
    o = block.ordinal(address)
    state = blk.state(block, o)
    return Allocation.of(block, o, state) if state in blk.RELEASABLE else None


# ------------------------------------------------------------------------------------------------
# Assignment


def _commit_assignment(store: Datastore, block: Block, ordinals: list[int], att: Attachment, view: IpamView, extra_puts=()) -> list[Assigned]:
    handle = view.handle or Handle(att.handle_id)
    handle.blocks[block.cidr] = handle.blocks.get(block.cidr, 0) + len(ordinals)
    puts = [block, handle, *extra_puts]
    if view.node is None:
        # A node without a Node resource registers itself, with no labels, in the commit of its
        # first allocation (so a refused ADD writes nothing).
        view.node = Node.new(att.node)
        puts.append(view.node)
    # A view built from hints also compares everything it was built from (see `hinted_ipam_view`).
    if not store.commit(puts=puts, unchanged=view.pins, prefixes_unchanged_since=view.guards):
        raise Conflict()
    view.handle = handle
    view.written[block.cidr] = block
    return [Assigned(block.address(o), block.cidr, o, block.seq_for_alloc[str(o)], new=True) for o in ordinals]


def rehome(store: Datastore, found: Allocation, att: Attachment) -> Assigned:
    """Put the allocation `found` (from `allocation_at`) under the attachment's handle with its
    attributes, keeping the address, in one compare-and-swap of the block as read and both
    handles' counts (`Conflict` when any moved: the caller retries from a fresh `allocation_at`).
    A previous handle whose record is missing is left missing; ours is created when absent. The
    block is tidied as a release tidies it (`_tidy`: the old attribute entry, now unused, is
    dropped). Calico's correctAllocationWithHandle releases and assigns the address again; here a
    released address would cool down first, so the allocation is rewritten in place. Works on a
    copy of `found.record`: `found` is left as read."""
    if found.record is None:
        raise ValueError(f"allocation of {found.address} carries no block record: read it with allocation_at")
    block, o, cidr = copy.deepcopy(found.record), found.ordinal, found.block
    other = found.handle if found.handle not in (None, att.handle_id) else None
    handles, config, _ = store.handles_config_blocks([att.handle_id, *([other] if other else [])])
    ours = handles[att.handle_id] or Handle(att.handle_id)
    previous = handles[other] if other else None
    block.allocations[o] = None  # assigned again below, in the same commit
    blk.assign_ordinals(block, [o], att.handle_id, att.secondary())
    puts: list = []
    deletes: list = []
    _tidy(block, config.ip_cooldown_seconds, puts, deletes)
    _recount(ours, cidr, block, puts, deletes)
    if previous is not None:
        _recount(previous, cidr, block, puts, deletes)
    if not store.commit(puts=puts, deletes=deletes):
        raise Conflict()
    log.info("%s (%s, handle %s) now held by %s", block.address(o), found.state, found.handle, att.handle_id)
    return Assigned(block.address(o), cidr, o, block.seq_for_alloc.get(str(o)))


def prepare_block(block: Block, view: IpamView) -> set[int]:
    """Return cooled-down ordinals to the free list (of this in-memory block); the reserved
    ordinals of the block. What `blocks.free_ordinals` then lists is what an allocation may take."""
    if any(blk.entry_state(a) == blk.RELEASED for a in block.attributes):
        blk.cleanup(block, view.config.ip_cooldown_seconds, time.time())
    return blk.reserved_ordinals(block, view.reservations)


def _claim_block(store: Datastore, att: Attachment, pools: Sequence[IPPool], view: IpamView, family: int) -> tuple[Block, Affinity] | None:
    """Claim a free block of the first pool that has one (`_create_claimed`); None when every
    pool is fully claimed. The caller confirms the affinity in the commit that allocates from the
    block.
    """
    for pool, block in claimable_blocks(store.block_cidrs(family), pools, att.node, view.reservations):
        affinity = _create_claimed(store, att.node, block, view)
        log.info("node %s claimed block %s of pool %s", att.node, block.cidr, pool.name)
        return block, affinity
    return None


def _create_claimed(store: Datastore, node: str, block: Block, view: IpamView) -> Affinity:
    """Create the new `block` with a pending affinity of `node` to it, in one transaction that
    fails (`Conflict`) if any of the node's affinities of the block's family changed since `view`
    was read, so concurrent ADDs on one node claim one block between them, not one each. An
    affinity of the node to the block that is already there (left by a claim that never
    finished) is taken over, as Calico's getPendingAffinity does."""
    family = keys.family_of(block.cidr)
    known = next((a for a in view.affinities.get(family, []) if a.cidr == block.cidr), None)
    affinity = Affinity(node, block.cidr, PENDING)
    if known is not None:
        affinity.extra, affinity.revision = dict(known.extra), known.revision
    guard = (keys.host_affinities(node, family), view.revision)
    if not store.commit(puts=[affinity, block], prefixes_unchanged_since=[guard]):
        raise Conflict()
    view.affinities[family] = [a for a in view.affinities.get(family, []) if a.cidr != block.cidr] + [affinity]
    return affinity


def claimable_blocks(existing: Collection[str], pools: Sequence[IPPool], node: str, reservations: Sequence[IPNetwork]) -> Iterator[tuple[IPPool, Block]]:
    """The blocks `node` may claim, in the order it tries them, as new records: each pool's
    candidate blocks that no node has created (`existing`: the block CIDRs of the family), except
    a block whose every address is reserved."""
    for pool in pools:
        for cidr in candidate_blocks(pool, node):
            if cidr in existing:
                continue
            block = Block.new(cidr, node)
            if len(blk.reserved_ordinals(block, reservations)) < block.size:
                yield pool, block


def block_limit(config: IpamConfig, node_cap: int = 0) -> int:
    """The most blocks of one family a node may hold for automatic assignments, merged as Calico's
    autoAssign merges its per-request limit (here the CNI config's `ipam.max_blocks_per_node`,
    `node_cap`) with the cluster's `maxBlocksPerHost`: the cluster's when it is more restrictive
    or the request sets none, else the request's; Calico's 20 when neither is set."""
    cluster = config.max_blocks_per_host
    limit = node_cap
    if cluster > 0 and (limit == 0 or limit > cluster):
        limit = cluster
    return limit or config.block_cap


def _at_limit(config: IpamConfig, held_blocks: int, node_cap: int) -> bool:
    return held_blocks >= block_limit(config, node_cap)


def may_claim(config: IpamConfig, held_blocks: int, node_cap: int = 0) -> bool:
    """Whether a node holding `held_blocks` blocks of a family may claim another (auto-allocation
    on, under the block limit if any). A node that may not because of the limit does not borrow
    either."""
    return config.auto_allocate_blocks and not _at_limit(config, held_blocks, node_cap)


def may_borrow(config: IpamConfig, held_blocks: int, node_cap: int = 0) -> bool:
    """Whether a node may take an address from another node's block: never with strict affinity,
    and never once it is at its block limit, whether or not it may claim blocks (Calico's
    autoAssign returns its block-limit error before it looks at other nodes' blocks)."""
    return not config.strict_affinity and not _at_limit(config, held_blocks, node_cap)


def _limit_text(config: IpamConfig, node_cap: int) -> str:
    limit = block_limit(config, node_cap)
    if limit == config.max_blocks_per_host:
        source = "maxBlocksPerHost"
    elif limit == node_cap:
        source = "the CNI config's ipam.max_blocks_per_node"
    else:
        source = "Calico's default when no limit is set"
    return f"the limit is {limit} ({source})"


def _pool_list(pools: Sequence[IPPool]) -> str:
    return "[" + ", ".join(str(p.cidr) for p in pools) + "]"


def _affine(view: IpamView, att: Attachment, req: FamilyRequest) -> tuple[list[IPPool], list[tuple[IPPool, Affinity]]]:
    """The pools the request may use, and the node's affinities in them, in the order their
    blocks are tried (pool order, confirmed first, then by address)."""
    labels = view.node.labels if view.node else {}
    pools = usable_pools(view.pools, req.family, att.node, labels, req.pools, req.use)
    mine = [(p, a) for a in view.affinities.get(req.family, []) if (p := pool_of(pools, a.cidr))]
    mine.sort(key=lambda pa: (pools.index(pa[0]), pa[1].state != CONFIRMED, ipaddress.ip_network(pa[1].cidr)))
    return pools, mine


def _from_affine(store: Datastore, att: Attachment, view: IpamView, mine: list[tuple[IPPool, Affinity]], affine_blocks, secondary: dict) -> Assigned | None:
    """An address from the first of the node's blocks (`affine_blocks`: cidr -> Block) with a free
    one, committed; None when none has."""
    for _, affinity in mine:
        block = affine_blocks.get(affinity.cidr)
        if block is None or block.affine_node != att.node:
            continue
        ordinals = blk.assign(block, 1, att.handle_id, secondary, prepare_block(block, view))
        if ordinals:
            extra = []
            if affinity.state != CONFIRMED:
                affinity.state = CONFIRMED
                extra.append(affinity)
            return _commit_assignment(store, block, ordinals, att, view, extra)[0]
    return None


def _assign_held(store: Datastore, att: Attachment, req: FamilyRequest, view: IpamView) -> Assigned | None:
    """An automatic address from one of the node's blocks, using only the blocks `view` carries
    (remembered records; no read): the block `_assign_auto` would choose, committed with the view's
    pins. None, having written nothing, when that block is not remembered or no block has room
    (the caller then reads, and claims or borrows as `_assign_auto` does); `Conflict` when
    anything the view was built from moved."""
    _, mine = _affine(view, att, req)
    blocks = {}
    for _, affinity in mine:
        block = view.blocks.get(affinity.cidr)
        if block is None:
            return None  # `_assign_auto` would read it: only a read knows whether it has room
        blocks[affinity.cidr] = block
    return _from_affine(store, att, view, mine, blocks, att.secondary())


def _assign_auto(store: Datastore, att: Attachment, req: FamilyRequest, view: IpamView) -> Assigned:
    family = req.family
    pools, mine = _affine(view, att, req)
    secondary = att.secondary()

    # 1. The node's own blocks, in pool order.
    found = _from_affine(store, att, view, mine, store.blocks([a.cidr for _, a in mine], view.blocks), secondary)
    if found is not None:
        return found

    # 2. A new block, within the node's limit (if any).
    config = view.config
    node_cap = req.max_blocks_per_node
    # Calico counts the node's blocks in the pools this request may use (autoAssign's affine
    # blocks, filtered by pool), not every block it holds.
    held_blocks = len(mine)
    # At the limit Calico's autoAssign fails here, before it looks at auto-allocation or at other
    # nodes' blocks: a node at its limit neither claims nor borrows.
    if _at_limit(config, held_blocks, node_cap):
        raise AddressesExhausted(
            "cannot allocate new block due to per host block limit",
            f"node {att.node} holds {held_blocks} IPv{family} blocks, {_limit_text(config, node_cap)}, and they are full; "
            f"pools {_pool_list(pools)}. Raise the limit (calicoctl ipam configure --max-blocks-per-host, "
            "or the CNI config's ipam.max_blocks_per_node), or free addresses",
        )
    if may_claim(config, held_blocks, node_cap):
        claimed = _claim_block(store, att, pools, view, family)
        if claimed is not None:
            block, affinity = claimed
            ordinals = blk.assign(block, 1, att.handle_id, secondary, blk.reserved_ordinals(block, view.reservations))
            affinity.state = CONFIRMED
            return _commit_assignment(store, block, ordinals, att, view, [affinity])[0]

    # 3. Borrow from another node's block, unless strict affinity forbids it.
    if config.strict_affinity:
        raise AddressesExhausted(
            "No more free affine blocks and strict affinity enabled",
            f"node {att.node} has no free address in its {held_blocks} IPv{family} blocks and "
            + ("every block of pools " if config.auto_allocate_blocks else "auto_allocate_blocks is off for pools ")
            + f"{_pool_list(pools)} is claimed; borrowing is off because strict affinity is on",
        )
    for block in sorted(store.all_blocks(family), key=lambda b: ipaddress.ip_network(b.cidr)):
        if block.affine_node == att.node or not pool_of(pools, block.cidr):
            continue
        ordinals = blk.assign(block, 1, att.handle_id, secondary, prepare_block(block, view))
        if ordinals:
            log.info("node %s borrows %s from block %s (affinity %s)", att.node, block.address(ordinals[0]), block.cidr, block.affinity)
            return _commit_assignment(store, block, ordinals, att, view)[0]

    raise AddressesExhausted(
        f"Assigned 0 out of 1 requested IPv{family} addresses; No IPs available in pools: {_pool_list(pools)}",
        f"node {att.node}: every block of these pools is claimed and full (the node holds {held_blocks} blocks, {_limit_text(config, node_cap)}); "
        "add a pool or free addresses (calicoctl ipam show, calicoctl ipam check)",
    )


def _assign_address(store: Datastore, att: Attachment, req: FamilyRequest, view: IpamView) -> Assigned:
    address = req.address
    pool = pool_containing(view.pools, address, req.use)
    if pool is None:
        raise AddressesExhausted(
            "The provided IP address is not in a configured pool",
            f"{address} is in no enabled IP pool allowing {req.use}; pools: "
            + (", ".join(f"{p.name} ({p.cidr})" for p in view.pools) or "none"),
        )
    cidr = block_cidr_for(pool, address)
    block = store.block(cidr)
    affinity = next((a for a in view.affinities.get(address.version, []) if a.cidr == cidr), None)
    if block is None:
        # Calico's AssignIP claims the block for the node (pending affinity, the block, then the
        # affinity confirmed, here in the commit that assigns the address), whatever
        # auto_allocate_blocks and the block limits say: a block with no affinity is a state
        # Calico never creates, and refuses to assign from under strict affinity.
        block = Block.new(cidr, att.node)
        affinity = _create_claimed(store, att.node, block, view)
        log.info("node %s claimed block %s of pool %s for %s", att.node, cidr, pool.name, address)
    elif view.config.strict_affinity and block.affine_node != att.node:
        # Calico's allocationBlock.assign under strict affinity (v3.30 ipam_block.go).
        if block.affinity is None:
            raise AddressConflict(f"Attempt to assign from block {cidr} with no affinity", f"{address}: strict affinity is on and the block has no affinity")
        raise AddressConflict("Block host affinity does not match", f"{address}: strict affinity is on and block {cidr} has affinity {block.affinity}, not host:{att.node}")
    ordinal = block.ordinal(address)
    state = blk.state(block, ordinal)
    if state == blk.RELEASED:
        until = blk.cooling_until(block, ordinal, view.config.ip_cooldown_seconds)
        if until is not None and until > time.time():
            raise AddressConflict(
                f"Address {address} was released recently and is cooling down",
                f"it becomes free in {until - time.time():.0f}s (ipCooldownSeconds {view.config.ip_cooldown_seconds})",
            )
        blk.cleanup(block, view.config.ip_cooldown_seconds, time.time())
    elif state != blk.FREE:
        attr = block.attribute(ordinal) or {}
        if state == blk.HELD and blk.handle_of(attr) == att.handle_id and (attr.get("secondary") or {}).get("ifname") in (None, att.ifname):
            return Assigned(address, cidr, ordinal, block.seq_for_alloc.get(str(ordinal)))
        holder = f"handle {blk.handle_of(attr)} ({attr.get('secondary') or {}})" if state == blk.HELD else f"an allocation with {state} ({attr})"
        raise AddressConflict("Address already assigned in block", f"{address} in block {cidr} is held by {holder}")
    blk.assign_ordinals(block, [ordinal], att.handle_id, att.secondary())
    extra = []
    if affinity is not None and block.affine_node == att.node and affinity.state != CONFIRMED:
        affinity.state = CONFIRMED
        extra.append(affinity)
    return _commit_assignment(store, block, [ordinal], att, view, extra)[0]


def assign(
    store: Datastore, att: Attachment, requests: Sequence[FamilyRequest], memory: BlockMemory | None = None, hint: Hint | None = None
) -> list[Assigned]:
    """Give the attachment one address per requested family: both or neither.

    A repeated ADD returns the addresses the attachment already holds. If a later family fails,
    what this call allocated is released again (never what an earlier ADD holds). `memory` (a
    warm process's) says which blocks to read with the view, and learns the node's blocks; None
    remembers nothing.

    With `hint` (calico-node's watch cache of this datastore), an automatic address from a block
    the node holds and `memory` remembers is one commit and no read: the view is built from the
    hint (`hinted_ipam_view`: the handle assumed absent, a new ADD) and the commit compares all it
    was built from. Anything else (a stale hint, a repeated ADD, a full block, a locked datastore)
    fails that commit or writes nothing, and the family is done from a fresh read as without
    hints; the hint is never used again by this call after it failed once.
    """
    memory = BlockMemory() if memory is None else memory
    families = sorted({r.family for r in requests})
    hinted: IpamView | None = None
    if hint is not None and all(r.address is None for r in requests):
        remembered = {c: b for c in memory.known(att.node, families) if (b := memory.block(c)) is not None}
        hinted = hinted_ipam_view(hint, att.node, families, remembered)
    unused: list[IpamView] = []  # a view read for the first attempt
    existing: list[Assigned] | None = None  # None: unknown until a read shows it or a commit proves the handle absent
    if hinted is None:
        first = store.ipam_view(att.node, families, att.handle_id, prefetch_blocks=memory.known(att.node, families))
        memory.remember(att.node, first)
        existing = held(store, first.handle, att.ifname)
        unused.append(first)
    results: list[Assigned] = []
    try:
        for req in requests:
            mine = [a for a in existing or () if a.family == req.family]
            if mine:
                log.info("%s/%s already holds %s", att.handle_id, att.ifname, ", ".join(str(a.address) for a in mine))
                results.extend(mine)
                continue
            worker = _assign_address if req.address is not None else _assign_auto

            def step(attempt: int, req=req, worker=worker) -> list[Assigned]:
                nonlocal hinted, existing
                if hinted is not None and attempt == 0:
                    view, hinted = hinted, None  # used again only if this commit succeeds
                    assigned = _assign_held(store, att, req, view)
                    if assigned is not None:
                        log.debug("%s: %s from held block %s in one commit (watch hint)", att.handle_id, assigned.address, assigned.block)
                        # The commit compared the handle absent (or as our own previous commit
                        # left it): the attachment held nothing before this call.
                        existing = existing if existing is not None else []
                        hinted = view
                        _learn(memory, view)
                        return [assigned]
                if unused:
                    view = unused.pop()
                else:
                    view = store.ipam_view(att.node, [req.family], att.handle_id, prefetch_blocks=memory.known(att.node, [req.family]))
                    memory.remember(att.node, view)
                    if existing is None:
                        # The hint failed before this call wrote anything: a read shows what the
                        # attachment holds (a repeated ADD gets its addresses back).
                        existing = held(store, view.handle, att.ifname)
                        mine = [a for a in existing if a.family == req.family]
                        if mine:
                            log.info("%s/%s already holds %s", att.handle_id, att.ifname, ", ".join(str(a.address) for a in mine))
                            return mine
                assigned = worker(store, att, req, view)
                memory.remember(att.node, view, blocks=False)  # a claimed block is in the view's affinities now
                _learn(memory, view)
                return [assigned]

            results.extend(with_retries(f"assigning an IPv{req.family} address", step))
    except BaseException:
        taken = [a for a in results if a.new]
        if taken:
            try:
                release_exact(store, att.handle_id, taken)
            except Exception:  # noqa: BLE001 - report the original error; the log has this one
                log.exception("could not roll back %s", ", ".join(str(a.address) for a in taken))
        raise
    return results


def _learn(memory: BlockMemory, view: IpamView) -> None:
    """Remember the blocks and the handle as the view's commits left them (their revisions)."""
    memory.remember_blocks(view.written.values())
    if view.handle is not None and view.handle.revision:
        memory.remember_handle(view.handle)


# ------------------------------------------------------------------------------------------------
# Release


def _recount(handle: Handle, cidr: str, block: Block | None, puts: list, deletes: list) -> None:
    """Set the handle's count for block `cidr` to what `block` (as about to be committed; None:
    gone) holds for it, and add the handle to the commit: to `puts` while it counts any block,
    else to `deletes`."""
    count = len(blk.ordinals_of(block, handle.handle_id)) if block is not None else 0
    if count:
        handle.blocks[cidr] = count
    else:
        handle.blocks.pop(cidr, None)
    (puts if handle.blocks else deletes).append(handle)


def _tidy(block: Block, cooldown: float, puts: list, deletes: list) -> None:
    """Tidy a block about to be committed after a release or rehome (cooled-down ordinals freed,
    unused attribute entries dropped: `blocks.cleanup`) and add it to the commit: to `deletes`
    when it is empty and has no affinity (nobody will allocate from it), else to `puts`."""
    blk.cleanup(block, cooldown, time.time())
    (deletes if blk.is_empty(block) and block.affinity is None else puts).append(block)


def _release_in_block(
    store: Datastore, handle: Handle, cidr: str, block: Block | None, ordinals: list[int], cooldown: int, expected=None, pins: Sequence[Pin] = ()
) -> list[Assigned]:
    """Release ordinals of one block (None: the block is gone) and fix the handle's count for it,
    in one commit. Only ordinals this handle holds are released (as Calico's release compares the
    handle): an ordinal now held by another handle, or by an allocation without one, is left
    alone even if its sequence number matches. An empty block with no affinity is deleted.
    `pins`: keys the commit also compares (what a hinted release was decided from)."""
    released: list[int] = []
    puts: list = []
    deletes: list = []
    if block is not None:
        mine = [o for o in ordinals if blk.handle_of(block.attribute(o)) == handle.handle_id]
        released = blk.release(block, mine, expected)
        _tidy(block, cooldown, puts, deletes)
    _recount(handle, cidr, block, puts, deletes)
    if not store.commit(puts=puts, deletes=deletes, unchanged=pins):
        raise Conflict()
    return [Assigned(block.address(o), cidr, o, None) for o in released]


def release(
    store: Datastore,
    handle_id: str,
    ifname: str | None,
    first: tuple[Handle | None, IpamConfig] | None = None,
    blocks: dict[str, Block | None] | None = None,
) -> list[Assigned]:
    """Release what a handle holds for one interface (or everything, with ifname None).

    Also repairs the handle's per-block counts, and deletes the handle once it holds nothing.
    Releasing something that does not exist succeeds and returns nothing. `first` is the handle
    and IPAM config when the caller has just read them, and `blocks` blocks read with them
    (each saves a round trip).
    """
    released: list[Assigned] = []
    prefetched = [(*first, blocks)] if first is not None else []

    def step(attempt: int) -> bool:
        """One block per step; True when nothing is left to do."""
        if prefetched:
            handle, config, known = prefetched.pop()
        else:
            handles, config, known = store.handles_config_blocks([handle_id])
            handle = handles[handle_id]
        if handle is None:
            return True
        blocks = store.blocks(sorted(handle.blocks), known)
        for cidr, count in sorted(handle.blocks.items()):
            block = blocks.get(cidr)
            mine = blk.ordinals_of(block, handle_id, ifname) if block else []
            if block is None or mine or len(blk.ordinals_of(block, handle_id)) != count:
                released.extend(_release_in_block(store, handle, cidr, block, mine, config.ip_cooldown_seconds))
                if not handle.blocks:
                    return True  # the commit deleted the handle: nothing is left
                # The handle and blocks are as that commit left them: the next step starts from
                # them (a stale one fails its compare-and-swap, and the retry reads afresh).
                prefetched.append((handle, config, blocks))
                return False
        if not handle.blocks and not store.commit(deletes=[handle]):
            raise Conflict()
        return True

    while not with_retries(f"releasing {handle_id}", step):
        pass
    return released


def release_remembered(
    store: Datastore, memory: BlockMemory, handle_id: str, ifname: str | None, config: IpamConfig, pins: Sequence[Pin]
) -> tuple[list[Assigned], bool]:
    """Release what the handle holds for `ifname` from the handle and blocks `memory` remembers
    as this process last committed them, with no read: one commit per block, each comparing the
    handle's and the block's revisions and `pins` (what else the decision relied on: the lock,
    the IPAM config `config` came from, ...). Returns (released, done): done False when the
    memory does not cover it (the handle or a block not remembered, a block where the interface
    holds nothing: only a read can say what is right) or a commit failed; the caller then releases
    from a fresh read as without memory, which finishes whatever is left."""
    handle = memory.handle(handle_id)
    if handle is None or not handle.blocks:
        return [], False
    blocks = {cidr: memory.block(cidr) for cidr in sorted(handle.blocks)}
    plan = [(cidr, b, blk.ordinals_of(b, handle_id, ifname)) for cidr, b in blocks.items() if b is not None]
    if len(plan) != len(blocks) or not all(mine for _, _, mine in plan):
        return [], False
    released: list[Assigned] = []
    for cidr, block, mine in plan:
        try:
            released += _release_in_block(store, handle, cidr, block, mine, config.ip_cooldown_seconds, pins=pins)
        except Conflict:
            memory.forget_handle(handle_id)
            memory.forget_block(cidr)
            return released, False
        _learn_block(memory, block)
    log.debug("%s: released %s from remembered records (watch hint)", handle_id, ", ".join(str(a.address) for a in released) or "nothing")
    if handle.blocks:
        memory.remember_handle(handle)  # other interfaces' addresses: the commit left it at its revision
    else:
        memory.forget_handle(handle_id)
    return released, True


def _learn_block(memory: BlockMemory, block: Block) -> None:
    """Remember a block as a successful release commit left it: put (new revision), or deleted
    when it was left empty without affinity (`_tidy`)."""
    if blk.is_empty(block) and block.affinity is None:
        memory.forget_block(block.cidr)
    else:
        memory.remember_blocks([block])


def release_exact(store: Datastore, handle_id: str, allocations: Sequence[Assigned]) -> list[Assigned]:
    """Release exactly these allocations (block, ordinal, sequence number): an address that was
    released and reused meanwhile is left alone."""
    released: list[Assigned] = []
    by_block: dict[str, list[Assigned]] = {}
    for a in allocations:
        by_block.setdefault(a.block, []).append(a)
    for cidr, items in by_block.items():

        def step(attempt: int, cidr=cidr, items=items):
            handles, config, known = store.handles_config_blocks([handle_id], [cidr])
            handle = handles[handle_id]
            block = known[cidr] if cidr in known else store.block(cidr)  # not in `known`: corrupt, raise as `block` does
            if block is None:
                return []
            # A missing handle record must not keep the addresses held: the commit recreates
            # it only if the handle still holds others.
            handle = handle or Handle(handle_id)
            expected = {a.ordinal: a.sequence for a in items}
            return _release_in_block(store, handle, cidr, block, list(expected), config.ip_cooldown_seconds, expected)

        released.extend(with_retries(f"releasing {handle_id} in {cidr}", step))
    return released


def release_allocation(store: Datastore, found: Allocation) -> None:
    """Release exactly the allocation `found` (from `allocation_at`), by compare-and-swap: under a
    handle as `release_exact` (re-read; nothing done when the ordinal no longer carries its
    sequence number; the handle's count fixed); without one, in the block as read (`Conflict` when
    it moved: the caller retries from a fresh `allocation_at`), tidied as `release_exact` tidies
    (`_tidy`). Works on a copy of `found.record`: `found` is left as read."""
    if found.handle is not None:
        release_exact(store, found.handle, [found.assigned])
        return
    if found.record is None:
        raise ValueError(f"allocation of {found.address} carries no block record: read it with allocation_at")
    block = copy.deepcopy(found.record)
    if not blk.release(block, [found.ordinal], {found.ordinal: found.sequence}):
        return
    puts: list = []
    deletes: list = []
    _tidy(block, store.ipam_config().ip_cooldown_seconds, puts, deletes)
    if not store.commit(puts=puts, deletes=deletes):
        raise Conflict()
    log.info("released %s (%s)", found.address, found.state)
