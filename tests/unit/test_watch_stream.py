"""The watch's handling of one stream's answers in an order etcd may send but a test cannot
provoke on demand: a watcher's events arriving before etcd answers the next watcher's create.
The gRPC stream is replaced by a queue of real protobuf answers (pytest-mock's monkeypatch)."""

from __future__ import annotations

import queue
import threading

from pyetcd import etcdrpc

from calico_cni.datastore import watch as watch_module
from calico_cni.datastore.watch import PUT, watch


class _FakeStream:
    """Answers queued as the reader thread would queue them: the first ones at once, the `later`
    ones after a pause (so the watch has taken what had arrived and waits for more)."""

    answers: list = []
    later: list = []

    def __init__(self, client, reauthenticate) -> None:
        self.responses: queue.Queue = queue.Queue()
        self.endpoint_failed = None
        self.sent: list = []
        for answer in self.answers:
            self.responses.put(answer)
        timer = threading.Timer(0.3, lambda: [self.responses.put(a) for a in self.later])
        timer.daemon = True
        timer.start()

    def send(self, request) -> None:
        self.sent.append(request)

    def close(self) -> None:
        pass


def _answer(watch_id: int, revision: int, created: bool = False, puts: tuple[tuple[str, int], ...] = ()):
    response = etcdrpc.WatchResponse(watch_id=watch_id, created=created)
    response.header.revision = revision
    for key, mod_revision in puts:
        event = response.events.add()
        event.type = event.PUT
        event.kv.key, event.kv.value, event.kv.mod_revision = key.encode(), b"v", mod_revision
    return response


def test_events_that_arrive_before_the_last_create_is_answered_are_delivered(monkeypatch):
    # Watcher 0 (nodes) is created and gets an event before etcd answers the create of watcher 1.
    _FakeStream.answers = [_answer(0, 10, created=True), _answer(0, 11, puts=(("/n/a", 11),))]
    _FakeStream.later = [_answer(1, 11, created=True)]
    monkeypatch.setattr(watch_module, "_Stream", _FakeStream)
    batches = watch(None, ["/n/", "/h/"], 11, threading.Event())
    first = next(batches)
    batches.close()
    assert [(e.kind, e.key, e.mod_revision) for e in first.events] == [(PUT, "/n/a", 11)]
    assert first.progress["/n/"] == 11
