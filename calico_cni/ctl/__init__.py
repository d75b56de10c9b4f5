"""`calicoctl`: the operator's command line for pools, nodes, IPAM and workload endpoints. Its click
commands parse, call a lower floor and print; they hold no IPAM or datastore logic.

- `main`: the command tree; `errors`: the one table that turns every floor's exceptions into a
  one-line message and an exit code.
- `context`: connection options (flags, CNI config file, ETCD_* environment) and the datastore.
- `output`: tables for people, JSON and YAML for scripts.
- `validate`: parsing of what an operator types (pool settings, labels, IPAM settings).
- `ippool`, `node`, `workloads`: resource verbs (pool rules in `calico_ipam.pool_admin`, node labels
  in `calico_cni.datastore.nodes`).
- `ipam_show`, `ipam_check`, `ipam_release`, `ipam_gc`, `ipam_configure`: the `ipam` verbs (audit,
  repair and reconciliation live in `calico_ipam`).
"""
