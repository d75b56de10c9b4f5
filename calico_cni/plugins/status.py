"""CNI STATUS for calico-ipam (and the `calico` plugin using it): can an ADD get an address now?

Success when etcd answers and, for every family the config assigns, a pool usable by this node
(`usable_pools` with the node's labels) has a free address in one of the node's blocks, a block it
may still claim, or (without strict affinity) a block it may borrow from. Otherwise error 50 with
a message that says which: etcd unreachable, no usable pool, or pools full.
"""

from __future__ import annotations

from calico_cni.protocol.errors import NOT_AVAILABLE, CniError


def etcd_unavailable(err: CniError) -> CniError:
    return CniError(NOT_AVAILABLE, f"etcd unreachable: {err.msg}", err.details)


def ipam_status(store, config: dict) -> None:
    """Raise error 50 unless an automatic ADD could get an address on this node now."""
    from calico_ipam import blocks as blk
    from calico_ipam.pools import candidate_blocks, usable_pools

    from calico_cni.config import ipam_settings, node_name

    settings = ipam_settings(config)
    node = node_name(config)
    families = [f for f, on in ((4, settings.assign_ipv4), (6, settings.assign_ipv6)) if on]
    try:
        view = store.ipam_view(node, families, None)
    except CniError as err:
        raise etcd_unavailable(err) from None
    labels = view.node.labels if view.node else {}
    for family in families:
        named = settings.ipv4_pools if family == 4 else settings.ipv6_pools
        try:
            pools = usable_pools(view.pools, family, node, labels, named)
        except CniError as err:
            raise CniError(NOT_AVAILABLE, f"no usable pool: {err.msg}", err.details) from None
        if not _has_room(store, view, pools, family, node, blk, candidate_blocks):
            raise CniError(
                NOT_AVAILABLE,
                f"pools full: no free IPv{family} address for node {node}",
                "pools " + ", ".join(f"{p.name} ({p.cidr})" for p in pools) + ": the node's blocks are full and no block can be claimed"
                + ("" if view.config.strict_affinity else " or borrowed"),
            )


def _in(cidr: str, pools) -> bool:
    import ipaddress

    net = ipaddress.ip_network(cidr)
    return any(net.subnet_of(p.cidr) for p in pools)


def _has_room(store, view, pools, family: int, node: str, blk, candidate_blocks) -> bool:
    import time

    def free(block) -> bool:
        blk.cleanup(block, view.config.ip_cooldown_seconds, time.time())  # in memory only
        return bool(blk.free_ordinals(block, blk.reserved_ordinals(block, view.reservations)))

    mine = [a.cidr for a in view.affinities.get(family, []) if _in(a.cidr, pools)]
    if any(b.affine_node == node and free(b) for b in store.blocks(mine).values()):
        return True
    config = view.config
    if config.auto_allocate_blocks and len(view.affinities.get(family, [])) < config.block_cap:
        existing = store.block_cidrs(family)
        if any(c not in existing for p in pools for c in candidate_blocks(p, node)):
            return True
    if not config.strict_affinity:
        return any(_in(b.cidr, pools) and free(b) for b in store.all_blocks(family))
    return False
