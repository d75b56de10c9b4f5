"""What a plugin verb is given besides its request: how to reach the datastore (and, in the agent,
what earlier requests of the same process learned). A one-shot plugin process and the agent wire
them differently (`plugins.dispatch`, `agent.main`); the verbs never reach for a global.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

from calico_cni.config import EtcdSettings
from calico_cni.datastore import store
from calico_cni.datastore.store import Datastore, Hint
from calico_ipam.allocator import BlockMemory


class EndpointPrograms(Protocol):
    """What calico-node does for the endpoints its requests write: their policy in the kernel
    before the plugin answers (node/rules.py). `endpoint_added` raises CniError when it cannot;
    the others never fail the request (what goes wrong is logged and repaired by the next pass)."""

    def endpoint_added(self, key: str, doc: dict) -> None:
        """The endpoint `doc` is about to be written at `key` (its interface exists)."""

    def endpoint_abandoned(self, key: str) -> None:
        """The ADD that announced `key` failed before writing it."""

    def endpoint_removed(self, key: str, addresses: list[str]) -> None:
        """The endpoint at `key` was deleted (its interface closed and unlisted); `addresses` its
        ipNetworks."""


class Hints(Protocol):
    """calico-node's watch cache, offered to the verbs as hints (`datastore.store.Hint`): a guess of
    what a read would return, which every commit relying on it compares."""

    def for_settings(self, settings: EtcdSettings) -> Hint | None:
        """The hint for a request to the datastore `settings` name: None unless they are the
        daemon's own settings and its cache is synced (another etcd, or no list yet: no hints)."""


@dataclass(frozen=True)
class Services:
    """The dependencies of the plugin verbs."""

    # A datastore for these settings; the verb closes it when it is done.
    connect: Callable[[EtcdSettings], Datastore]
    # What this process last saw of each node's IPAM (`BlockMemory`), one per datastore (see
    # `memory`): which blocks to read with an allocation or release (one round trip fewer in a warm
    # process), and in calico-node the block and handle records its hinted commits compare.
    # Shared by every request of the process to that datastore.
    memories: dict[frozenset[str], BlockMemory] = field(default_factory=dict, compare=False, repr=False)
    _memories_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    # calico-node's policy programming for the endpoints written; None in a one-shot process and
    # in calico-cni-agent (nothing to program).
    endpoints: EndpointPrograms | None = None
    # calico-node's watch cache as hints (reads it replaces are compared by the commits); None in a
    # one-shot process and in calico-cni-agent (no cache).
    hints: Hints | None = None

    @classmethod
    def in_process(cls) -> Services:
        """A one-shot plugin process: a new etcd client for each datastore, and a block memory
        that knows nothing (a fresh process has read no node's blocks)."""
        return cls(connect=store.connect)

    def memory(self, settings: EtcdSettings) -> BlockMemory:
        """The block memory of requests to the datastore `settings` name (by its endpoints). One per
        datastore: a record remembered from one cluster is a compare-and-swap token, and must never
        be compared in another, whose block of the same CIDR could carry the same revision."""
        key = frozenset(settings.endpoints)
        with self._memories_lock:
            memory = self.memories.get(key)
            if memory is None:
                memory = self.memories[key] = BlockMemory()
            return memory

    def hint(self, settings: EtcdSettings) -> Hint | None:
        """The hint for a request to `settings` (see `Hints.for_settings`); None without hints."""
        return self.hints.for_settings(settings) if self.hints is not None else None

    def datastore(self, settings: EtcdSettings, timeout: float | None = None) -> Datastore:
        """A datastore for `settings`; with `timeout`, every etcd call it makes ends within
        `timeout` seconds from now (a verb's whole datastore part is bounded by `add_timeout`)."""
        datastore = self.connect(settings)
        if timeout is not None:
            datastore.limit_to(timeout)
        return datastore
