"""etcd watch: several prefixes on one gRPC stream, from one revision, ending with a clear reason.

`watch(client, prefixes, start, stop)` opens one bidirectional Watch stream on the client's
channel (`EtcdClient.open_stream`) with etcd's require-leader metadata (`hasleader: true`): a
member cut off from its cluster ends the stream with "no leader" instead of going silent. It sends
one WatchCreateRequest per prefix (from its start revision, progress notifications on) and yields
`Batch`es of events in the order etcd sent them. A stream silent for a while is asked for a
progress report (a WatchProgressRequest: etcd answers at once); a stream that then answers nothing
within `dead_after` is declared dead. The watch ends:

- when `stop` is set (the generator returns within about `POLL` seconds);
- otherwise by raising `WatchLost` with a `LostReason`: COMPACTED (the start revision is gone: list
  again), AUTH (the token was refused or expired, or permission denied: authenticate and list
  again), NO_LEADER (the member lost its cluster), UNREACHABLE (the stream failed, could not be
  opened, or went silent), CANCELED (etcd canceled a watcher for another reason), REWOUND (etcd's
  revision is below the start revision: it was restored or replaced; list again).

Blocking work (authentication, opening and reading the stream) runs in a reader thread; the
generator only waits on a queue in short steps, so a stop or a dead stream is noticed promptly.
gRPC and pyetcd are imported at the first watch, as `datastore.etcd` imports them at its first call.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from calico_cni.datastore.errors import DatastoreCredentialsError, DatastoreError
from calico_cni.datastore.etcd import EtcdClient, KeyValue, _prefix_end

log = logging.getLogger(__name__)

# etcd's require-leader metadata (rpctypes.MetadataRequireLeaderKey / MetadataHasLeader).
REQUIRE_LEADER = ("hasleader", "true")
# How often the generator wakes up to look at `stop` and the stream's liveness (seconds).
POLL = 0.1
# gRPC status text of a member without a leader (rpctypes.ErrGRPCNoLeader).
NO_LEADER_MARKER = "no leader"
# Cancel reasons that mean "authenticate again" (etcd 3.4 puts the gRPC error's text there).
AUTH_CANCEL_MARKERS = ("invalid auth token", "auth store is old", "permission denied", "user name is empty", "unauthenticated")

PUT = "put"
DELETE = "delete"


class LostReason(enum.Enum):
    """Why a watch ended (other than by its stop event)."""

    COMPACTED = "compacted"
    AUTH = "auth"
    NO_LEADER = "no leader"
    UNREACHABLE = "unreachable"
    CANCELED = "canceled"
    REWOUND = "rewound"


class WatchLost(DatastoreError):
    """The watch ended: `reason` (a `LostReason`), `compact_revision` (COMPACTED only), `detail`."""

    def __init__(self, reason: LostReason, detail: str, compact_revision: int = 0) -> None:
        super().__init__(f"etcd watch lost: {reason.value}", detail)
        self.reason = reason
        self.detail = detail
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class Event:
    """One change of one key: `kind` PUT (value, revisions as stored) or DELETE (value b"";
    `mod_revision` is the revision of the delete)."""

    kind: str
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0

    def key_value(self) -> KeyValue:
        """The key as a read would return it (for a PUT)."""
        return KeyValue(self.key, self.value, self.mod_revision, self.create_revision, self.version)


@dataclass(frozen=True)
class Batch:
    """Events in etcd's order (all that arrived together), with where the watch stands.

    `progress`: per prefix, the revision up to which that prefix's events are all delivered (the
    point to resume from after a loss: one above it). It advances with the prefix's own events and
    with etcd's per-watcher progress notifications, never with the stream-wide answers to progress
    requests, which etcd 3.4 may send ahead of events still queued. `revision`: the highest
    revision etcd reported on this stream (informational: a prefix can lag it, see `progress`).
    The first batch of a watch says every watcher was created: the watch is established (it carries
    the events of the watchers created before the last one, often none). A later batch without
    events says the stream is alive: etcd answered a progress request, or advanced a watcher's
    progress (a consumer's liveness report needs that while the datastore is idle).
    """

    events: tuple[Event, ...]
    revision: int
    progress: Mapping[str, int]


@dataclass
class _Ended:
    """Put on the queue by the reader thread: the stream ended (error None: it just ended)."""

    error: DatastoreError | None
    code: str = ""
    detail: str = ""


def _event(ev) -> Event:
    kv = ev.kv
    if ev.type == ev.DELETE:
        return Event(DELETE, kv.key.decode(), b"", kv.mod_revision)
    return Event(PUT, kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision, kv.version)


def _cancel_reason(reason: str) -> LostReason:
    lowered = reason.lower()
    if any(m in lowered for m in AUTH_CANCEL_MARKERS):
        return LostReason.AUTH
    if NO_LEADER_MARKER in lowered:
        return LostReason.NO_LEADER
    return LostReason.CANCELED


class _Stream:
    """The gRPC side: a request queue feeding the stream and a reader thread filling `responses`."""

    def __init__(self, client: EtcdClient, reauthenticate: bool) -> None:
        self.requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        self.call = None
        self.endpoint_failed = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(client, reauthenticate), name="etcd-watch", daemon=True)
        self._thread.start()

    def _request_iter(self):
        while True:
            request = self.requests.get()
            if request is None:
                return
            yield request

    def _read(self, client: EtcdClient, reauthenticate: bool) -> None:
        import grpc  # noqa: PLC0415 - gRPC is imported at first use (see the module docstring)

        try:
            call, failed = client.open_stream("Watch", "Watch", self._request_iter(), (REQUIRE_LEADER,), reauthenticate)
        except DatastoreError as exc:
            self.responses.put(_Ended(exc))
            return
        with self._lock:
            self.call, self.endpoint_failed = call, failed
            if self._closed.is_set():
                call.cancel()
                return
        try:
            for response in call:
                self.responses.put(response)
            self.responses.put(_Ended(None, "", "etcd ended the watch stream"))
        except grpc.RpcError as exc:
            self.responses.put(_Ended(None, exc.code().name, exc.details() or exc.code().name))
        except Exception as exc:  # noqa: BLE001 - a failing stream must end the watch, never the thread silently
            self.responses.put(_Ended(None, "UNKNOWN", f"{type(exc).__name__}: {exc}"))

    def send(self, request) -> None:
        """Queue `request` for the stream (never blocks)."""
        self.requests.put(request)

    def close(self) -> None:
        """Cancel the stream and end the request iterator; never blocks."""
        with self._lock:
            self._closed.set()
            call = self.call
        if call is not None:
            call.cancel()
        self.requests.put(None)


def watch(
    client: EtcdClient,
    prefixes: Sequence[str],
    start: int | Mapping[str, int],
    stop: threading.Event,
    *,
    reauthenticate: bool = False,
    progress_interval: float = 10.0,
    dead_after: float = 10.0,
) -> Iterator[Batch]:
    """Watch every key under `prefixes` on one stream (see the module docstring), from revision
    `start` (for every prefix, or per prefix: a mapping prefix -> start revision).

    Yields `Batch`es: first one once every watcher is created, then the events as they come, and
    an empty one whenever etcd answers a progress request. Returns when `stop` is set; raises `WatchLost` otherwise. `reauthenticate`: get a new
    token before opening the stream (the last one was refused). A progress report is requested
    after `progress_interval` seconds without a word from etcd; nothing heard within `dead_after`
    seconds of a request (or of opening the stream) ends the watch as UNREACHABLE.
    """
    from pyetcd import etcdrpc  # noqa: PLC0415 - gRPC is imported at first use (see the module docstring)

    starts = {p: (start[p] if isinstance(start, Mapping) else start) for p in prefixes}
    stream = _Stream(client, reauthenticate)
    try:
        pending: list[str] = []  # prefixes whose create request is not answered yet, in order
        for prefix in prefixes:
            key = prefix.encode()
            create = etcdrpc.WatchCreateRequest(key=key, range_end=_prefix_end(key), start_revision=starts[prefix], progress_notify=True)
            stream.send(etcdrpc.WatchRequest(create_request=create))
            pending.append(prefix)
        by_id: dict[int, str] = {}  # watch id -> prefix
        progress = {p: starts[p] - 1 for p in prefixes}
        revision = max(progress.values(), default=0)
        # Events of watchers already created are kept until every create is answered: the first
        # batch comes only then, and it must carry them (etcd may send a watcher's events before
        # it answers the next create on the same stream).
        events: list[Event] = []
        advanced = False  # a prefix's progress moved without events
        heard = time.monotonic()  # when etcd last said anything on this stream
        answer_due: float | None = heard + dead_after  # a create or progress request unanswered
        while True:
            if stop.is_set():
                return
            try:
                item = stream.responses.get(timeout=POLL)
            except queue.Empty:
                now = time.monotonic()
                if answer_due is not None and now > answer_due:
                    if stream.endpoint_failed is not None:
                        stream.endpoint_failed()  # the next call tries another endpoint first
                    raise WatchLost(LostReason.UNREACHABLE, f"etcd did not answer on the watch stream within {dead_after:g}s") from None
                if answer_due is None and now - heard >= progress_interval:
                    # Any answer proves the stream alive; the revision it carries is not used (see Batch).
                    stream.send(etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest()))
                    answer_due = now + dead_after
                continue
            # Take everything that has arrived: one batch, one cache update for the caller.
            while True:
                if isinstance(item, _Ended):
                    _ended(item, stream)
                response = item
                revision = max(revision, response.header.revision)
                if response.created:
                    if not pending:
                        raise WatchLost(LostReason.CANCELED, f"etcd created a watcher nobody asked for (id {response.watch_id})")
                    prefix = pending.pop(0)
                    if response.canceled:
                        reason = _cancel_reason(response.cancel_reason)
                        raise WatchLost(reason, f"etcd refused the watch of {prefix}: {response.cancel_reason or 'no reason given'}")
                    by_id[response.watch_id] = prefix
                    if response.header.revision < starts[prefix] - 1:
                        raise WatchLost(
                            LostReason.REWOUND,
                            f"etcd's revision {response.header.revision} is below {starts[prefix] - 1}, the revision the watch of "
                            f"{prefix} continues from: etcd was restored or replaced",
                        )
                elif response.canceled:
                    prefix = by_id.get(response.watch_id, f"watcher {response.watch_id}")
                    if response.compact_revision:
                        raise WatchLost(
                            LostReason.COMPACTED,
                            f"the watch of {prefix} from revision {starts.get(prefix, 0)} was compacted "
                            f"(etcd keeps history from revision {response.compact_revision})",
                            response.compact_revision,
                        )
                    reason = _cancel_reason(response.cancel_reason)
                    raise WatchLost(reason, f"etcd canceled the watch of {prefix}: {response.cancel_reason or 'no reason given'}")
                elif response.watch_id in by_id:
                    prefix = by_id[response.watch_id]
                    if response.events:
                        events.extend(_event(ev) for ev in response.events)
                        # Events come in revision order: everything up to the last one is delivered.
                        progress[prefix] = max(progress[prefix], response.events[-1].kv.mod_revision)
                    elif response.header.revision > progress[prefix]:
                        # A progress notification of this watcher: sent only when it is in sync.
                        progress[prefix] = response.header.revision
                        advanced = True
                # watch id -1 and not created: the answer to a progress request (liveness only).
                try:
                    item = stream.responses.get_nowait()
                except queue.Empty:
                    break
            heard = time.monotonic()
            if not pending:
                # Every create, or a progress request, answered: a batch tells the caller so.
                answered, answer_due = answer_due is not None, None
                if events or advanced or answered:
                    batch, events, advanced = Batch(tuple(events), revision, dict(progress)), [], False
                    yield batch
    finally:
        stream.close()


def _ended(item: _Ended, stream: _Stream) -> None:
    """Raise the `WatchLost` for a stream that ended (`item` from the reader thread)."""
    if item.error is not None:
        reason = LostReason.AUTH if isinstance(item.error, DatastoreCredentialsError) else LostReason.UNREACHABLE
        raise WatchLost(reason, str(item.error)) from item.error
    lowered = item.detail.lower()
    if NO_LEADER_MARKER in lowered:
        reason = LostReason.NO_LEADER
    elif item.code in ("UNAUTHENTICATED", "PERMISSION_DENIED") or any(m in lowered for m in AUTH_CANCEL_MARKERS):
        reason = LostReason.AUTH
    else:
        reason = LostReason.UNREACHABLE
    if reason in (LostReason.NO_LEADER, LostReason.UNREACHABLE) and stream.endpoint_failed is not None:
        stream.endpoint_failed()  # the next call tries another endpoint first
    raise WatchLost(reason, f"{item.code}: {item.detail}" if item.code else item.detail)
