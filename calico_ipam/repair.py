"""The writes `ipam release` and `ippool delete` make. Each is a compare-and-swap against what it
read, re-read and retried on conflict; each first re-checks that the repair is still needed. What
the records do not allow raises `errors.RepairRefused`; nothing here prints.

Addresses are released only through `calico_ipam.allocator.release_exact`, keyed by (handle,
block, ordinal, sequence number), so an address released and reused meanwhile is never freed. An
allocation without a handle (`blocks.NO_HANDLE`, `blocks.BARE`) is released only when an operator
names it (`ipam release --ip`, `ippool delete --force`), by `release_unowned`: a compare-and-swap
on its block that requires the same entry and sequence number still to hold the ordinal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore, IpamSnapshot
from calico_cni.model import keys
from calico_cni.model.records import Block, CorruptRecord, Handle, IPAddress, IPPool
from calico_ipam import blocks as blk
from calico_ipam import inventory
from calico_ipam.allocator import Assigned, release_exact
from calico_ipam.audit import Report, analyse, leak_key
from calico_ipam.errors import RepairRefused
from calico_ipam.inventory import Allocation
from calico_ipam.pools import pool_of


@dataclass
class Absent:
    """A guard for `Datastore.commit(unchanged=...)`: the key must not exist."""

    key: str
    revision: int = 0

    def to_json(self) -> bytes:  # pragma: no cover - never written
        """Never called: an Absent guard is compared, not written."""
        raise NotImplementedError


def pool_allocations(snapshot: IpamSnapshot, pool: IPPool) -> list[Allocation]:
    """Every address allocated from the pool's blocks, with or without a handle."""
    everything = inventory.allocations(snapshot) + inventory.allocations(snapshot, unowned=True)
    return [a for a in everything if pool_of([pool], a.block)]


# ------------------------------------------------------------------------------------------------
# Addresses


def release_allocations(store: Datastore, allocations: list[Allocation]) -> list[Assigned]:
    """Release exactly these allocations; returns the `Assigned` entries actually released.

    A handle record that is missing is rebuilt from the blocks first (release_exact needs it).
    Allocations without a handle go to `release_unowned`.
    """
    by_handle: dict[str, list[Allocation]] = {}
    unowned: list[Allocation] = []
    for a in allocations:
        if a.handle is None:
            unowned.append(a)
        else:
            by_handle.setdefault(a.handle, []).append(a)
    released: list[Assigned] = release_unowned(store, unowned) if unowned else []
    for handle_id, items in sorted(by_handle.items()):
        if store.handle(handle_id) is None:
            rebuild_handle(store, handle_id)
        released += release_exact(store, handle_id, [Assigned(a.address, a.block, a.ordinal, a.sequence) for a in items])
    return released


def release_unowned(store: Datastore, allocations: list[Allocation]) -> list[Assigned]:
    """Release allocations without a handle, each only while its ordinal still points at an equal
    entry without a handle and carries the same sequence number (so an address released and given
    to a pod meanwhile is never freed); returns those released. The release is ours (a cooldown
    entry, then `cleanup`); no handle record changes."""
    by_block: dict[str, list[Allocation]] = {}
    for a in allocations:
        by_block.setdefault(a.block, []).append(a)
    released: list[Assigned] = []
    for cidr, items in sorted(by_block.items()):

        def step(attempt: int, cidr=cidr, items=items) -> list[Assigned]:
            block = store.block(cidr)
            if block is None:
                return []
            still = [
                a.ordinal
                for a in items
                if blk.state(block, a.ordinal) in (blk.NO_HANDLE, blk.BARE)
                and block.attributes[block.allocations[a.ordinal]] == a.attributes
                and block.seq_for_alloc.get(str(a.ordinal)) == a.sequence
            ]
            done = blk.release(block, still)
            if not done:
                return []
            blk.cleanup(block, store.ipam_config().ip_cooldown_seconds, time.time())
            if not store.commit(puts=[block]):
                raise Conflict()
            return [Assigned(block.address(o), cidr, o, None) for o in done]

        released += with_retries(f"releasing addresses without a handle in {cidr}", step)
    return released


# ------------------------------------------------------------------------------------------------
# Handles


def rebuild_handle(store: Datastore, handle_id: str) -> str | None:
    """Make the handle's per-block counts match the blocks: create it when addresses reference a
    missing handle, delete it when it holds nothing. Returns what was done (None: nothing)."""

    def step(attempt: int) -> str | None:
        snap = store.ipam_snapshot()
        actual = inventory.handle_counts(snap).get(handle_id, {})
        handle = next((h for h in snap.handles if h.handle_id == handle_id), None)
        if handle is None and not actual:
            return None
        if handle is not None and handle.blocks == actual:
            return None
        # The blocks counted must not change; any allocation or release for this handle also
        # rewrites the handle, which the compare on the handle itself catches.
        counted = [b for b in snap.blocks if b.cidr in actual]
        if not actual:
            ok, done = store.commit(deletes=[handle], unchanged=counted), f"deleted handle {handle_id}, which held no address"
        else:
            record = handle or Handle(handle_id)
            before = dict(record.blocks) if handle is not None else None
            record.blocks = dict(actual)
            ok = store.commit(puts=[record], unchanged=counted)
            done = f"{'rewrote' if handle else 'recreated'} handle {handle_id}: {_counts(before)} -> {_counts(actual)}"
        if not ok:
            raise Conflict()
        return done

    return with_retries(f"repairing handle {handle_id}", step)


def _counts(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "missing"
    return ", ".join(f"{n} in {c}" for c, n in sorted(counts.items())) or "no address"


# ------------------------------------------------------------------------------------------------
# Blocks


def fix_bookkeeping(block: Block, cooldown_seconds: float, now: float) -> None:
    """Make `unallocated` list exactly the free ordinals, once each, keeping their FIFO order
    (missing free ordinals go to the tail). Allocations are the truth: only our released entries
    whose cooldown has passed are freed (`blocks.cleanup`); one pointing at a missing attribute entry
    stays allocated, since nothing says it is free (`ipam check` reports it)."""
    blk.cleanup(block, cooldown_seconds, now)
    free, seen = [], set()
    for o in block.unallocated:
        if 0 <= o < block.size and o not in seen and block.allocations[o] is None:
            free.append(o)
            seen.add(o)
    free += [o for o in range(block.size) if block.allocations[o] is None and o not in seen]
    block.unallocated = free
    block.sequence_number += 1


def repair_block(store: Datastore, cidr: str) -> list[str]:
    """Repair a block whose bookkeeping is inconsistent; returns the problems it had (empty: none)."""

    def step(attempt: int) -> list[str]:
        try:
            block = store.block(cidr)
        except CorruptRecord:
            return []
        if block is None:
            return []
        problems = blk.consistency_problems(block)
        if not problems:
            return []
        fix_bookkeeping(block, store.ipam_config().ip_cooldown_seconds, time.time())
        if not store.commit(puts=[block]):
            raise Conflict()
        return problems

    return with_retries(f"repairing block {cidr}", step)


# ------------------------------------------------------------------------------------------------
# Affinities


def delete_stray_affinity(store: Datastore, node: str, cidr: str) -> bool:
    """Delete a node's affinity to a block that does not exist or is affine to someone else."""

    def step(attempt: int) -> bool:
        affinity = next((a for a in store.affinities(node, keys.family_of(cidr)) if a.cidr == cidr), None)
        if affinity is None:
            return False
        try:
            block = store.block(cidr)
        except CorruptRecord:
            return False
        if block is not None and block.affine_node == node:
            return False
        if not store.commit(deletes=[affinity], unchanged=[block if block is not None else Absent(keys.block(cidr))]):
            raise Conflict()
        return True

    return with_retries(f"deleting the affinity of {node} to {cidr}", step)


# ------------------------------------------------------------------------------------------------
# Pools


def remove_pool_blocks(store: Datastore, pool: IPPool, force: bool, releasing: Callable[[Allocation], None] = lambda a: None) -> tuple[int, int]:
    """Delete the pool's blocks and every affinity to them; returns (blocks deleted, addresses
    released because they were allocated meanwhile).

    A block that gained an allocation since it was checked is released first with `force` (each
    such allocation is passed to `releasing` first, for the caller to report), and stops the
    deletion without it (`RepairRefused`).
    """
    snap = store.ipam_snapshot()
    cidrs = sorted({b.cidr for b in snap.blocks if pool_of([pool], b.cidr)} | {a.cidr for a in snap.affinities if pool_of([pool], a.cidr)})
    removed = released = 0
    for cidr in cidrs:

        def step(attempt: int, cidr=cidr) -> bool:
            block = store.block(cidr)
            affinities = [a for a in store.affinities() if a.cidr == cidr]
            if block is not None:
                held = [*inventory.block_allocations(block), *inventory.unowned_allocations(block)]
                if held and not force:
                    raise RepairRefused(f"block {cidr} of IP pool {pool.name} has new allocations ({held[0].address}, ...); the pool is left disabled")
                if held:
                    nonlocal released
                    for a in held:
                        releasing(a)
                    released += len(release_allocations(store, held))
                    raise Conflict()
            deletes = ([block] if block is not None else []) + affinities
            if deletes and not store.commit(deletes=deletes):
                raise Conflict()
            return block is not None

        removed += with_retries(f"removing block {cidr}", step)
    return removed, released


def delete_pool(store: Datastore, name: str) -> None:
    """Delete the IP pool resource (its blocks are gone: `remove_pool_blocks`)."""

    def step(attempt: int) -> None:
        pool = store.pool(name)
        if pool is not None and not store.commit(deletes=[pool]):
            raise Conflict()

    with_retries(f"deleting IP pool {name}", step)


# ------------------------------------------------------------------------------------------------
# `ipam release --ip`


def allocation_to_release(snapshot: IpamSnapshot, address: IPAddress, force: bool) -> Allocation:
    """The allocation holding `address`, with or without a handle; `RepairRefused` when it is not
    allocated, was released already, has lost its attribute entry, or (without `force`) is still
    used by a workload endpoint."""
    block = inventory.block_containing(snapshot, address)
    state = blk.state(block, block.ordinal(address)) if block is not None else blk.FREE
    if state == blk.FREE:
        raise RepairRefused(f"{address} is not allocated; nothing released")
    if state == blk.RELEASED:
        released_at = block.attributes[block.allocations[block.ordinal(address)]].get("releasedAt")
        raise RepairRefused(f"{address} was already released at {released_at}; nothing released")
    if state == blk.DANGLING:
        raise RepairRefused(f"{address} points at a missing attribute entry of block {block.cidr}, so its owner is unknown; nothing released (see calicoctl ipam check)")
    walk = inventory.block_allocations if state == blk.HELD else inventory.unowned_allocations
    allocation = next(a for a in walk(block) if a.address == address)
    used = inventory.endpoint_addresses(snapshot).get(address)
    if used and not force:
        raise RepairRefused(f"{address} is used by workload endpoint {', '.join(used)}; nothing released (delete the pod, or pass --force to release it anyway)")
    return allocation


# ------------------------------------------------------------------------------------------------
# `ipam release --from-report`


@dataclass(frozen=True)
class Repaired:
    """The outcome of one problem a report listed: `kind` is "block", "handle", "leak" or
    "affinity"; `entry` is the report's entry; `done` says whether it was repaired (False: it is no
    longer a problem); `what` describes a handle repair (`rebuild_handle`'s text)."""

    kind: str
    entry: dict
    done: bool
    what: str | None = None


def repair_report(store: Datastore, report: Report) -> Iterator[Repaired]:
    """Repair what `report` lists and a fresh audit still finds, one outcome at a time (block
    bookkeeping, handles, leaked addresses, then affinities). A leaked address is released only if
    the same allocation (handle, block, ordinal, sequence number) still holds it with no workload
    endpoint, so an address released and reused since is never freed. Endpoints without an
    allocation and unparsable records are not repaired here: they need a person."""
    now = analyse(store.ipam_snapshot(), report.grace_seconds)

    still = {e["block"] for e in now.inconsistent_blocks}
    for e in report.inconsistent_blocks:
        yield Repaired("block", e, bool(e["block"] in still and repair_block(store, e["block"])))

    still = {e["handle"] for e in now.handle_mismatches + now.orphan_handles}
    for e in report.handle_mismatches + report.orphan_handles:
        done = rebuild_handle(store, e["handle"]) if e["handle"] in still else None
        yield Repaired("handle", e, bool(done), done)

    current = {a.key: a for a in now.leaked_allocations}
    listed = [(leak_key(e), e) for e in report.leaked]
    to_release = [current[k] for k, _ in listed if k in current]
    released = {(a.block, a.ordinal) for a in release_allocations(store, to_release)}
    for key, e in listed:
        yield Repaired("leak", e, (key[1], key[2]) in released and key in current)

    still = {(e["node"], e["block"]) for e in now.stray_affinities}
    for e in report.stray_affinities:
        yield Repaired("affinity", e, bool((e["node"], e["block"]) in still and delete_stray_affinity(store, e["node"], e["block"])))
