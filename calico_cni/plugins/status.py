"""CNI STATUS for calico-ipam (and the `calico` plugin using it): can an ADD get an address now?

Success when etcd answers and, for every family the config assigns, a pool usable by this node
(`usable_pools` with the node's labels) has room (`calico_ipam.capacity.has_room`: a free address
in one of the node's blocks, a block it may still claim, or, without strict affinity, a block it
may borrow from). Otherwise error 50 with a message that says which: etcd unreachable, no usable
pool, or pools full.
"""

from __future__ import annotations

from calico_cni.config import IpamSettings
from calico_cni.datastore.errors import DatastoreError, DatastoreNotReady
from calico_cni.datastore.store import Datastore
from calico_cni.errors import CalicoError
from calico_cni.protocol.errors import NOT_AVAILABLE, CniError
from calico_ipam.capacity import has_room
from calico_ipam.errors import AddressesExhausted
from calico_ipam.pools import usable_pools


def etcd_unavailable(err: CniError | CalicoError) -> CniError:
    """STATUS's error 50 for a datastore that cannot be used, with the datastore's own message."""
    what = "datastore locked" if isinstance(err, DatastoreNotReady) else "etcd unreachable"
    return CniError(NOT_AVAILABLE, f"{what}: {err.msg}", err.details)


def ipam_status(store: Datastore, settings: IpamSettings, node: str) -> None:
    """Raise error 50 unless an automatic ADD with these IPAM settings could get an address on
    `node` now."""
    families = [f for f, on in ((4, settings.assign_ipv4), (6, settings.assign_ipv6)) if on]
    try:
        view = store.ipam_view(node, families, None)
    except DatastoreError as err:
        raise etcd_unavailable(err) from None
    labels = view.node.labels if view.node else {}
    for family in families:
        named = settings.ipv4_pools if family == 4 else settings.ipv6_pools
        try:
            pools = usable_pools(view.pools, family, node, labels, named)
        except AddressesExhausted as err:
            raise CniError(NOT_AVAILABLE, f"no usable pool: {err.msg}", err.details) from None
        if not has_room(store, view, pools, family, node, settings.max_blocks_per_node):
            raise CniError(
                NOT_AVAILABLE,
                f"pools full: no free IPv{family} address for node {node}",
                "pools " + ", ".join(f"{p.name} ({p.cidr})" for p in pools) + ": the node's blocks are full and no block can be claimed"
                + ("" if view.config.strict_affinity else " or borrowed"),
            )
