"""`calicoctl`: the operator's command line for Calico's resources, IP pools and IPAM. Its click
commands parse, call a lower floor and print; they hold no IPAM or datastore logic.

- `main`: the command tree; `errors`: the one table that turns every floor's exceptions into a
  one-line message and an exit code.
- `context`: connection options (flags, calicoctl.cfg or CNI config file, ETCD_* environment) and
  the datastore.
- `output`: tables for people, JSON and YAML for scripts.
- `resources`: create, apply, replace, delete, get, patch and label over every resource kind (the
  work is `calico_cni.resources`); `ippool`: shorthands over the same verbs; `version`;
  `datastore` (`migrate lock/unlock`, `repair profiles`).
- `validate`: the IPAM settings rules of `ipam configure`.
- `ipam_show`, `ipam_check`, `ipam_release`, `ipam_gc`, `ipam_configure`: the `ipam` verbs (audit,
  repair and reconciliation live in `calico_ipam`).
"""
