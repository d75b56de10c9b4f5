"""The datastore layer: the only code that speaks to etcd.

- `etcd`: the client (endpoints, deadlines, failover, authentication) and raw reads and CAS
  transactions; `Range`, `Compare`, `KeyValue`.
- `tls`: the TLS files checked before the first call, and a failed handshake explained.
- `failures`: what a failed etcd call means (endpoint down, reauthenticate, credentials,
  permission), and the message of each.
- `errors`: the floor's exceptions (`DatastoreUnavailable`, `DatastoreCredentialsError`,
  `DatastoreRequestFailed`, `TooManyConflicts`).
- `store`: typed reads and compare-and-swap writes of Calico's records (`model.records`, at the keys
  of `model.keys`).
- `retry`: the one compare-and-swap retry loop.
- `resources`: Calico's v3 resources of every kind read by their typed description (`model.schema.Kind`).
"""
