"""Deleting an IP pool with its blocks and affinities (what `calicoctl delete ippool` does), each step
a compare-and-swap retried from a fresh read. (Creating and changing pools is the resource verbs'
work, `calico_cni.resources.verbs`.) Refusals raise `PoolRefused` with the sentence a user reads;
nothing here prints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from calico_cni.datastore.retry import Conflict, with_retries
from calico_cni.datastore.store import Datastore
from calico_cni.model.records import IPPool
from calico_ipam import repair
from calico_ipam.errors import PoolRefused
from calico_ipam.inventory import Allocation


def get_pool(store: Datastore, name: str) -> IPPool:
    """The IP pool `name`; `PoolRefused` when it does not exist."""
    pool = store.pool(name)
    if pool is None:
        raise PoolRefused(f"IP pool {name} does not exist")
    return pool


def set_disabled(store: Datastore, name: str, disabled: bool, expected_revision: int | None = None) -> bool:
    """Set the pool's disabled flag; False when it already had that value. With
    `expected_revision`, the pool must still be at that revision (`PoolRefused` otherwise)."""

    def step(attempt: int) -> bool:
        pool = get_pool(store, name)
        if expected_revision is not None and pool.revision != expected_revision:
            raise PoolRefused(f"update conflict: IPPool({name}): resource version '{expected_revision}' is out of date (latest: {pool.revision})")
        if pool.disabled == disabled:
            return False
        pool.disabled = disabled
        if not store.commit(puts=[pool]):
            raise Conflict()
        return True

    return with_retries(f"{'disabling' if disabled else 'enabling'} IP pool {name}", step)


@dataclass
class Deleted:
    """What deleting a pool did."""

    pool: IPPool
    released: int
    blocks: int


def _refusal(name: str, held: list[Allocation]) -> PoolRefused:
    sample = ", ".join(f"{a.address} ({a.handle})" for a in held[:3]) + (", ..." if len(held) > 3 else "")
    return PoolRefused(
        f"IP pool {name} still has {len(held)} allocated addresses: {sample}; release them first or pass --force to release them too"
    )


def delete_pool(
    store: Datastore,
    name: str,
    force: bool,
    releasing: Callable[[Allocation], None] = lambda a: None,
    releasing_meanwhile: Callable[[Allocation], None] = lambda a: None,
    expected_revision: int | None = None,
) -> Deleted:
    """Delete the IP pool `name` with its blocks and block affinities.

    Refused (`PoolRefused`) while addresses of the pool are allocated, unless `force`, which
    releases them (each passed to `releasing` first, for the caller to report). The pool is
    disabled first, so no new address is handed out from it while it is being taken apart; a
    refusal after that enables it again if it was enabled. An address allocated while the blocks
    are removed is passed to `releasing_meanwhile` and released (with `force`). With
    `expected_revision` (a resourceVersion from a file) the pool must still be at that revision when
    it is disabled, the first write.
    """
    pool = get_pool(store, name)
    held = repair.pool_allocations(store.ipam_snapshot(), pool)
    if held and not force:
        raise _refusal(name, held)
    was_disabled = pool.disabled
    set_disabled(store, name, True, expected_revision)
    held = repair.pool_allocations(store.ipam_snapshot(), pool)
    if held and not force:
        if not was_disabled:
            set_disabled(store, name, False)
        raise _refusal(name, held)
    for a in held:
        releasing(a)
    released = len(repair.release_allocations(store, held))
    blocks, meanwhile = repair.remove_pool_blocks(store, pool, force, releasing=releasing_meanwhile)
    repair.delete_pool(store, name)
    return Deleted(pool, released + meanwhile, blocks)
