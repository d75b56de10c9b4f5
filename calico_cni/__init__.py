"""Calico's container networking for Linux, in Python: the `calico` CNI plugin and shared layers.

Subpackages:
- `calico_cni.protocol`: the CNI protocol (environment, stdin, versions, results, errors),
  shared by both plugins.
- `calico_cni.datastore`: the only code that speaks to etcd (typed records, CAS transactions).

Keep this module empty of imports: every plugin exec pays for what is imported here.
"""
