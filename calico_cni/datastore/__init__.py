"""The datastore layer: the only code that speaks to etcd.

- `etcd`: the connection (endpoints, TLS, deadlines, failover) and raw reads and CAS transactions.
- `keys`: Calico's etcd key layout.
- `records`: typed records (pools, blocks, affinities, handles, nodes, endpoints, IPAM config) that
  keep every JSON field they do not model.
- `store`: typed reads and compare-and-swap writes of those records.
"""
