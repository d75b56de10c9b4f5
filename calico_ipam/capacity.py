"""Whether an automatic ADD could get an address of one family on one node now (CNI STATUS asks
this), answered with the functions the allocator decides with: its pools' block order
(`pools.candidate_blocks`), the free ordinals of a block once its cooled-down ones are returned
and its reserved ones skipped (`allocator.prepare_block`, `blocks.free_ordinals`), the node's block
cap, and strict affinity. Nothing is written.
"""

from __future__ import annotations

from typing import Sequence

from calico_cni.datastore.store import Datastore, IpamView
from calico_cni.model.records import Block, IPPool
from calico_ipam import blocks as blk
from calico_ipam.allocator import prepare_block
from calico_ipam.pools import candidate_blocks, pool_of


def _has_free(block: Block, view: IpamView) -> bool:
    return bool(blk.free_ordinals(block, prepare_block(block, view)))  # the block is changed in memory only


def has_room(store: Datastore, view: IpamView, pools: Sequence[IPPool], family: int, node: str) -> bool:
    """Whether an automatic ADD of an IPv`family` address on `node` could get one from `pools` (the
    node's usable pools, in order) now: a free address in one of the node's own blocks of these
    pools; else, with auto-allocation on and the node under its block cap, a block of these pools
    that no node has claimed yet; else, without strict affinity, a free address in any block of
    these pools. `view` is the node's IPAM view (its affinities, the IPAM config, reservations)."""
    mine = [a.cidr for a in view.affinities.get(family, []) if pool_of(pools, a.cidr)]
    if any(b.affine_node == node and _has_free(b, view) for b in store.blocks(mine).values()):
        return True
    config = view.config
    if config.auto_allocate_blocks and len(view.affinities.get(family, [])) < config.block_cap:
        existing = store.block_cidrs(family)
        if any(c not in existing for p in pools for c in candidate_blocks(p, node)):
            return True
    if not config.strict_affinity:
        return any(pool_of(pools, b.cidr) and _has_free(b, view) for b in store.all_blocks(family))
    return False
