"""calico-node: the per-node daemon (start-up, the datastore syncer, BIRD, the plugins' socket)."""
