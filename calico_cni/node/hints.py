"""calico-node's watch cache offered to the plugins' requests as hints (`plugins.services.Hints`).

A request that reads what the cache already holds (the IPAM configuration, pools, reservations,
the node and its block affinities, ClusterInformation's lock, profiles, the pod's endpoint) can
take it from here instead of a round trip to etcd. A hint is only a guess of what that read would
return: every commit that relies on one compares the revisions it was built from
(`datastore.store.Pin`, prefix guards), so a stale hint costs one failed compare-and-swap and a
fresh read, never a wrong answer. Hints are given only for requests to the daemon's own etcd
(the cache knows no other) and only once the first list is in.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from calico_cni.config import EtcdSettings
from calico_cni.datastore.etcd import KeyValue
from calico_cni.model import keys
from calico_cni.node.syncer import Cache, Snapshot

# What the requests read that no controller watches: small keys that change rarely (never blocks or
# handles, which change with every pod of every node).
WATCHED = (keys.IPAM_CONFIG, keys.RESERVATIONS, keys.CLUSTER_INFORMATION)


def indexed(node: str) -> tuple[str, ...]:
    """The prefixes a request looks under (the cache keeps them apart: no scan of every key)."""
    return (keys.POOLS, keys.RESERVATIONS, keys.host_affinities(node))


class SnapshotHint:
    """One cache snapshot as a `datastore.store.Hint`."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def get(self, key: str) -> KeyValue | None:
        """The key as the watch last saw it, or None."""
        return self._snapshot.items.get(key)

    def under(self, prefix: str) -> Mapping[str, KeyValue]:
        """The keys under `prefix` as the watch last saw them."""
        return self._snapshot.under(prefix)


class CacheHints:
    """The daemon's cache as hints for requests to the datastore `settings` name."""

    def __init__(self, cache: Cache, settings: EtcdSettings) -> None:
        self.cache = cache
        self.settings = settings

    def for_settings(self, settings: EtcdSettings) -> SnapshotHint | None:
        """The current snapshot when `settings` are the daemon's own and the cache is synced; else
        None (a request naming another etcd, or no first list yet)."""
        # The same etcd: endpoints, TLS files and credentials (a request's own call deadline may differ).
        if replace(settings, timeout=self.settings.timeout) != self.settings:
            return None
        snapshot = self.cache.snapshot()
        return SnapshotHint(snapshot) if snapshot.synced else None
