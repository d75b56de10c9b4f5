"""Calico's block-affinity IPAM: the `calico-ipam` plugin and the allocation logic it shares with `calico`.

- `selector`: Calico's label-selector language (pool node selectors).
- `blocks`: pure operations on one block record (assign, release, cooldown cleanup).
- `pools`: which pools a node may use, and in which order block CIDRs are tried.
- `allocator`: assignment and release over the datastore, with the one compare-and-swap retry loop.
- `plugin`: the CNI verbs; `main`: the executable's entry point.
"""
