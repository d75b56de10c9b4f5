"""`calicoctl`: the operator's command line for pools, nodes, IPAM and workload endpoints.

- `main`: the command tree and the one place errors become a one-line message and an exit code.
- `context`: connection options (flags, CNI config file, ETCD_* environment) and the datastore.
- `output`: tables for people, JSON and YAML for scripts.
- `validate`: the rules pools, labels and IPAM settings must satisfy (pure functions).
- `ippool`, `node`, `workloads`: resource verbs.
- `ipam_show`, `ipam_check`, `ipam_release`, `ipam_configure`: the `ipam` verbs; `repair` holds
  the compare-and-swap repairs that `ipam release` and `ippool delete` perform.
"""
