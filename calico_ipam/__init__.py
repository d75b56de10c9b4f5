"""Calico's block-affinity IPAM: the allocation logic the `calico-ipam` plugin and `calico` share,
and what is built on it (see docs/architecture.md for the floors).

- `blocks`: pure operations on one block record (assign, release, cooldown cleanup).
- `pools`: which pools a node may use, in which order block CIDRs are tried, which pool holds a CIDR.
- `allocator`: assignment and release over the datastore (compare-and-swap steps), and the
  `BlockMemory` a warm process keeps of each node's blocks.
- `capacity`: whether an automatic ADD could get an address now (CNI STATUS).
- `reconcile`: release what dead attachments hold (CNI GC, `calicoctl ipam gc`).
- `replay`: finish the releases the node-local journal records.
- `inventory`, `audit`, `repair`: who holds what, what is wrong, and the repairs
  (`calicoctl ipam show/check/release`, `ippool delete`).
- `errors`: the exceptions of this floor.
- `main`: the `calico-ipam` executable's entry point (its verbs are `calico_cni.plugins.calico_ipam`).
"""
