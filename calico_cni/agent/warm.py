"""Warm etcd connections for the agent: one gRPC channel per etcd settings tuple, kept open.

Each request gets its own `EtcdClient` (its own deadline, round-trip count and close) that shares
the warm channel; closing it leaves the channel open. Channels are created on the agent's request
threads, which never change network namespace (namespace work runs on short-lived threads of its
own, see `dataplane.netns`), so a reconnect stays in the node's namespace, where etcd is reachable.
"""

from __future__ import annotations

import threading

from calico_cni.config import EtcdSettings
from calico_cni.datastore import store
from calico_cni.datastore.etcd import EtcdClient


class WarmStores:
    """Datastores over warm channels, keyed by etcd settings (endpoints, TLS files, credentials)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[EtcdSettings, EtcdClient] = {}

    def connect(self, settings: EtcdSettings) -> store.Datastore:
        """A datastore for one request, over the warm channel of `settings` (made on first use)."""
        with self._lock:
            warm = self._clients.get(settings) or EtcdClient(settings)
            leased = warm.lease()  # the first lease builds the channel object; no network traffic yet
            self._clients[settings] = warm
        return store.Datastore(leased)

    def close(self) -> None:
        """Close every warm channel (the agent is stopping)."""
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __len__(self) -> int:
        return len(self._clients)
