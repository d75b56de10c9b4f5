"""Whether an automatic ADD could get an address of one family on one node now (CNI STATUS asks
this), answered with the functions the allocator decides with: the blocks a node may claim, in the
order it tries them (`allocator.claimable_blocks`), the free ordinals of a block once its
cooled-down ones are returned and its reserved ones skipped (`allocator.prepare_block`,
`blocks.free_ordinals`), and when a node may claim or borrow (`allocator.may_claim`,
`may_borrow`: the block cap and strict affinity). Nothing is written.
"""

from __future__ import annotations

from typing import Sequence

from calico_cni.datastore.store import Datastore, IpamView
from calico_cni.model.records import Block, IPPool
from calico_ipam import blocks as blk
from calico_ipam.allocator import claimable_blocks, may_borrow, may_claim, prepare_block
from calico_ipam.pools import pool_of


def _has_free(block: Block, view: IpamView) -> bool:
    return bool(blk.free_ordinals(block, prepare_block(block, view)))  # the block is changed in memory only


def has_room(store: Datastore, view: IpamView, pools: Sequence[IPPool], family: int, node: str, node_cap: int = 0) -> bool:
    """Whether an automatic ADD of an IPv`family` address on `node` could get one from `pools` (the
    node's usable pools, in order) now, decided as the allocator decides: a free address in one of
    the node's own blocks of these pools; else, when the node may claim a block, one it could
    claim; else, when it may borrow, a free address in another node's block of these pools.
    `view` is the node's IPAM view (its affinities, the IPAM config, reservations); `node_cap` is
    the CNI config's `ipam.max_blocks_per_node` (0: none of its own), as the allocator takes it."""
    mine = [a.cidr for a in view.affinities.get(family, []) if pool_of(pools, a.cidr)]
    if any(b.affine_node == node and _has_free(b, view) for b in store.blocks(mine).values()):
        return True
    config, held = view.config, len(mine)  # the node's blocks in these pools, as Calico counts them
    if may_claim(config, held, node_cap) and next(claimable_blocks(store.block_cidrs(family), pools, node, view.reservations), None):
        return True
    if may_borrow(config, held, node_cap):
        return any(b.affine_node != node and pool_of(pools, b.cidr) and _has_free(b, view) for b in store.all_blocks(family))
    return False
