"""The daemon's view of the datastore: a cache of the watched prefixes, kept by one syncer.

`Syncer.run` lists every prefix in one transaction (one revision), puts the result in the `Cache`
(which is then `synced`: design rule 27, nothing is removed from the kernel before), and watches
every prefix on one stream from the next revision (`datastore.watch`), applying the events in
order. When the watch is lost it waits (0.1 s doubling to 5 s, back to 0.1 s once a watch was
established again) and then:

- after a compaction, an auth error (token refused, permission denied: the client authenticates
  again), or an etcd whose revision went back (restored or replaced), it lists again: the new list
  replaces the cache in one step, so keys deleted while we were away disappear;
- after a lost stream (etcd unreachable or restarted, a member without leader, a silent stream) it
  resumes each prefix's watch after the last revision whose events it has all applied, which costs
  etcd no list; a resume that finds its revision compacted lists again.

Every blocking call is bounded (the client's deadlines) and runs where `stop` is looked at every
0.1 s: `run` returns promptly once `stop` is set, whatever etcd does.

Controllers read the cache: `snapshot()` is an immutable view (replaced, never changed, on every
update), `wait(version, timeout)` blocks until the next change.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from calico_cni.datastore.errors import DatastoreError
from calico_cni.datastore.etcd import EtcdClient, KeyValue, Range
from calico_cni.datastore.watch import POLL, PUT, Event, LostReason, WatchLost, watch

log = logging.getLogger(__name__)

# Losses after which the syncer lists again instead of resuming the watch.
RELIST = (LostReason.COMPACTED, LostReason.AUTH, LostReason.REWOUND)


@dataclass(frozen=True)
class Snapshot:
    """The cache at one moment. `items`: key -> KeyValue (read-only); `revision`: the highest etcd
    revision the cache has caught up with (the list's, then each applied batch's); `synced`: the
    first full list is in; `version`: increments on every change of `items`."""

    items: Mapping[str, KeyValue]
    revision: int
    synced: bool
    version: int
    # The items under each of the cache's indexed prefixes (see `Cache`): what `under` looks at.
    index: Mapping[str, Mapping[str, KeyValue]] = field(default_factory=dict)

    def under(self, prefix: str) -> dict[str, KeyValue]:
        """The items whose key starts with `prefix` (from the index when an indexed prefix covers
        it: a scan of every item costs ~0.6 ms at 3,500 keys, too much for a pod's ADD)."""
        for indexed, sub in self.index.items():
            if prefix.startswith(indexed):
                return {k: v for k, v in sub.items() if k.startswith(prefix)}
        return {k: v for k, v in self.items.items() if k.startswith(prefix)}


class Cache:
    """key -> KeyValue for the watched prefixes. Updates build a new dict and publish a new
    `Snapshot`, so readers never copy and never see a half-applied batch."""

    def __init__(self, indexed: Sequence[str] = ()) -> None:
        """`indexed`: prefixes whose items each snapshot also keeps apart (`Snapshot.under` reads
        them without a scan of every item); small, slowly changing prefixes only."""
        self._cond = threading.Condition()
        self._indexed = tuple(indexed)
        self._snapshot = Snapshot(MappingProxyType({}), 0, False, 0, self._index({}))

    def _index(self, items: Mapping[str, KeyValue]) -> dict[str, Mapping[str, KeyValue]]:
        return {p: MappingProxyType({k: v for k, v in items.items() if k.startswith(p)}) for p in self._indexed}

    def _reindexed(self, old: Mapping[str, Mapping[str, KeyValue]], changed: Mapping[str, KeyValue | None]) -> Mapping[str, Mapping[str, KeyValue]]:
        """`old` index with the `changed` keys (None: deleted); sub-indexes nothing changed are kept."""
        out = dict(old)
        for p in self._indexed:
            mine = {k: v for k, v in changed.items() if k.startswith(p)}
            if mine:
                sub = dict(out[p])
                for k, v in mine.items():
                    if v is None:
                        sub.pop(k, None)
                    else:
                        sub[k] = v
                out[p] = MappingProxyType(sub)
        return out

    def snapshot(self) -> Snapshot:
        """The current snapshot (immutable; cheap: no copy)."""
        return self._snapshot

    def wait(self, version: int, timeout: float | None) -> int:
        """Block until the version differs from `version` or `timeout` seconds pass; the current version."""
        with self._cond:
            self._cond.wait_for(lambda: self._snapshot.version != version, timeout)
            return self._snapshot.version

    def _publish(self, snapshot: Snapshot) -> None:
        with self._cond:
            changed = snapshot.version != self._snapshot.version
            self._snapshot = snapshot
            if changed:
                self._cond.notify_all()

    def replace(self, items: Iterable[KeyValue], revision: int) -> None:
        """A full list at `revision`: the cache becomes exactly `items` and is synced."""
        new = {kv.key: kv for kv in items}
        with self._cond:
            old = self._snapshot
            same = old.synced and new == old.items
            version = old.version if same else old.version + 1
            self._publish(Snapshot(old.items if same else MappingProxyType(new), revision, True, version, old.index if same else self._index(new)))

    def apply(self, events: Sequence[Event], revision: int) -> None:
        """Watch events in etcd's order, then `revision` (see `Snapshot.revision`).

        An event not newer than the key's cached revision is a replay (a watch resumed from an
        earlier revision) and is skipped, so replays never move a key back in time.
        """
        with self._cond:
            old = self._snapshot
            items: dict[str, KeyValue] | None = None
            changed: dict[str, KeyValue | None] = {}
            for ev in events:
                current = (items if items is not None else old.items).get(ev.key)
                if current is not None and ev.mod_revision <= current.mod_revision:
                    continue
                if ev.kind == PUT:
                    if items is None:
                        items = dict(old.items)
                    items[ev.key] = changed[ev.key] = ev.key_value()
                elif current is not None:
                    if items is None:
                        items = dict(old.items)
                    del items[ev.key]
                    changed[ev.key] = None
            revision = max(old.revision, revision)
            if items is None:
                if revision != old.revision:
                    self._publish(Snapshot(old.items, revision, old.synced, old.version, old.index))
                return
            self._publish(Snapshot(MappingProxyType(items), revision, old.synced, old.version + 1, self._reindexed(old.index, changed)))


class Reporter(Protocol):
    """Where `Syncer.run` reports how it is doing (calico-node's part health: its probes read it)."""

    def ok(self, detail: str | None = None) -> None:
        """The cache is in sync and the watch was heard from just now."""

    def not_ready(self, why: str) -> None:
        """The watch is down (the cache may be stale): `why`."""


class Syncer:
    """Lists and watches `prefixes` into `cache` (see the module docstring).

    `connect` gives the client for one attempt (a lease of the daemon's warm channel); the syncer
    closes it when the attempt ends. `progress_interval` and `dead_after` are the watch's
    liveness settings (`datastore.watch.watch`).
    """

    def __init__(
        self,
        connect: Callable[[], EtcdClient],
        prefixes: Sequence[str],
        cache: Cache,
        *,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        progress_interval: float = 10.0,
        dead_after: float = 10.0,
    ) -> None:
        self.connect = connect
        self.prefixes = tuple(prefixes)
        self.cache = cache
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.progress_interval = progress_interval
        self.dead_after = dead_after
        self._lock = threading.Lock()
        # Per prefix, the revision up to which its events are applied (resume after it); None:
        # the next attempt lists.
        self._resume: dict[str, int] | None = None
        self._reauthenticate = False
        self._watching = False
        self._lists = 0
        self._losses = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_event_at: float | None = None

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict:
        """in_sync (the first list is in and a watch is established now), revision, lists, relists
        (lists after the first), losses (watches lost), watching, last_error, last_error_at and
        last_event_at (unix times: the last failure, the last list or event applied)."""
        snapshot = self.cache.snapshot()
        with self._lock:
            return {
                "in_sync": snapshot.synced and self._watching,
                "revision": snapshot.revision,
                "lists": self._lists,
                "relists": max(self._lists - 1, 0),
                "losses": self._losses,
                "watching": self._watching,
                "last_error": self._last_error,
                "last_error_at": self._last_error_at,
                "last_event_at": self._last_event_at,
            }

    def _failed(self, message: str, established: bool, delay: float, reporter: Reporter | None) -> None:
        """Record a failure, report it and log it: a warning, unless it repeats the last one while
        no watch was established in between (etcd down for an hour must not log every 5 s at warning)."""
        with self._lock:
            repeated = message == self._last_error and not established
            self._last_error, self._last_error_at = message, time.time()
        if reporter is not None:
            reporter.not_ready(message)
        log.log(logging.DEBUG if repeated else logging.WARNING, "datastore sync: %s; %s in %.1fs", message,
                "listing" if self._resume is None else "resuming the watch", delay)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, reporter: Reporter | None = None) -> None:
        """List and watch until `stop` is set; never raises a datastore error (it waits and tries
        again), and returns within a fraction of a second of `stop`. `reporter` hears of every
        batch the watch delivers (events, or etcd answering a progress request: at least every
        `progress_interval` seconds) and of every failure."""
        delay = self.backoff_min
        while not stop.is_set():
            established = False
            try:
                established, lost = self._attempt(stop, reporter)
            except DatastoreError as exc:
                message = str(exc)
            else:
                if lost is None:
                    return  # only a stop ends an attempt without a loss
                with self._lock:
                    self._losses += 1
                if lost.reason in RELIST:
                    self._resume = None
                    self._reauthenticate = lost.reason is LostReason.AUTH
                message = f"{lost.reason.value}: {lost.detail}"
            if established:
                delay = self.backoff_min
            self._failed(message, established, delay, reporter)
            if stop.wait(delay):
                return
            delay = min(delay * 2, self.backoff_max)

    def _attempt(self, stop: threading.Event, reporter: Reporter | None) -> tuple[bool, WatchLost | None]:
        """One connection: list if needed, then watch until `stop` or a loss. Returns whether a
        watch was established, and the loss (None: stopped). A failed list raises."""
        client = self.connect()
        established = False
        batches = None
        try:
            if self._resume is None or not self.cache.snapshot().synced:
                listed = self._list(client, stop)
                if listed is None:
                    return False, None
                items, revision = listed
                self.cache.replace(items, revision)
                self._resume = {p: revision for p in self.prefixes}
                with self._lock:
                    self._lists += 1
                    self._last_event_at = time.time()
                log.info("datastore listed at revision %d: %d keys", revision, len(self.cache.snapshot().items))
            reauthenticate, self._reauthenticate = self._reauthenticate, False
            starts = {p: r + 1 for p, r in self._resume.items()}
            batches = watch(client, self.prefixes, starts, stop, reauthenticate=reauthenticate,
                            progress_interval=self.progress_interval, dead_after=self.dead_after)
            for batch in batches:
                if not established:
                    established = True
                    with self._lock:
                        self._watching = True
                self.cache.apply(batch.events, batch.revision)
                self._resume.update(batch.progress)
                if batch.events:
                    with self._lock:
                        self._last_event_at = time.time()
                if reporter is not None:
                    reporter.ok(f"watching from revision {self.cache.snapshot().revision}")
            return established, None
        except WatchLost as lost:
            return established, lost
        finally:
            if batches is not None:
                batches.close()  # ends the stream even when applying a batch failed
            with self._lock:
                self._watching = False
            client.close()

    def _list(self, client: EtcdClient, stop: threading.Event) -> tuple[list[KeyValue], int] | None:
        """Every key under the prefixes, at one revision; None when `stop` was set first. The read
        runs on a thread of its own (bounded by the client's deadline) so a stop is not kept
        waiting by an etcd that does not answer."""
        result: dict = {}

        def read() -> None:
            try:
                result["value"] = client.read([Range(p, prefix=True) for p in self.prefixes])
            except BaseException as exc:  # noqa: BLE001 - handed to the syncer's thread, which raises it
                result["error"] = exc

        reader = threading.Thread(target=read, name="etcd-list", daemon=True)
        reader.start()
        while reader.is_alive():
            if stop.is_set():
                return None
            reader.join(POLL)
        if "error" in result:
            raise result["error"]
        ranges, revision = result["value"]
        return [kv for found in ranges for kv in found], revision
