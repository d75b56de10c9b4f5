"""The CNI protocol layer shared by `calico` and `calico-ipam`.

Only the standard library is imported here, so VERSION and every validation error are answered
without loading the etcd client or netlink.
"""
