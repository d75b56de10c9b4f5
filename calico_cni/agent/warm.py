"""Warm etcd connections for the agent: one gRPC channel per etcd settings tuple, kept open.

Each request gets its own `EtcdClient` (its own deadline, round-trip count and close) that shares
the warm channel; closing it leaves the channel open. Channels are created on the agent's request
threads, which never change network namespace (design rule 7), so a reconnect stays in the node's.
"""

from __future__ import annotations

import threading
from typing import Mapping

from calico_cni.config import EtcdSettings, etcd_settings
from calico_cni.datastore import store
from calico_cni.datastore.etcd import EtcdClient


class WarmStores:
    """Datastores over warm channels, keyed by etcd settings (endpoints, TLS files, credentials)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[EtcdSettings, EtcdClient] = {}

    def connect(self, config: dict, environ: Mapping[str, str]) -> store.Datastore:
        settings = etcd_settings(config, environ)
        with self._lock:
            warm = self._clients.get(settings) or EtcdClient(settings)
            leased = warm.lease()  # the first lease builds the channel object; no network traffic yet
            self._clients[settings] = warm
        return store.Datastore(leased)

    def install(self) -> None:
        """Make `datastore.store.connect` (used by every verb) hand out warm datastores."""
        store.set_provider(self.connect)

    def close(self) -> None:
        store.set_provider(None)
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __len__(self) -> int:
        return len(self._clients)
