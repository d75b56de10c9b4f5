"""datastore.watch against real etcd: several prefixes on one stream, events in order, history from
a revision, and every way a watch ends (stop, compaction, a revision etcd does not have yet, etcd
stopped or silent, a member without leader, a refused token, permission denied)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore.etcd import EtcdClient
from calico_cni.datastore.watch import DELETE, PUT, Batch, LostReason, WatchLost, watch
from tests import etcd_secure
from tests.conftest import FABRIC_ADDRESS
from tests.security_support import PASSWORD, TOKEN_TTL

RESOURCES = "/calico/resources/v3/projectcalico.org/"
HOSTS = "/calico/ipam/v2/host/node1/"
PREFIXES = (RESOURCES, HOSTS)
PRIVATE_PORT = 23870  # a private etcd for the tests that stop or freeze it (peer port one above)
CLUSTER_PORT = 23880  # a three-member cluster: clients 23880, 23882, 23884, peers one above each


def revision(client: EtcdClient) -> int:
    return client.read([])[1]


def compact(client: EtcdClient, rev: int) -> None:
    """etcd's Compact RPC: history before `rev` is gone."""
    client._call("KV", "Compact", client._rpc.CompactionRequest(revision=rev, physical=True))


class Watching:
    """Consume a watch on a thread: its batches, how it ended (returned, or the WatchLost)."""

    def __init__(self, client: EtcdClient, prefixes, start, **options) -> None:
        self.stop = threading.Event()
        self.batches: list[Batch] = []
        self.lost: WatchLost | None = None
        self.returned = False
        self.established = threading.Event()
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, args=(client, prefixes, start, options), daemon=True)
        self.thread.start()

    def _run(self, client, prefixes, start, options) -> None:
        try:
            for batch in watch(client, prefixes, start, self.stop, **options):
                with self.changed:
                    self.batches.append(batch)
                    self.changed.notify_all()
                self.established.set()
            self.returned = True
        except WatchLost as exc:
            self.lost = exc
        finally:
            with self.changed:
                self.changed.notify_all()

    @property
    def events(self):
        return [ev for b in self.batches for ev in b.events]

    def wait_events(self, n: int, timeout: float = 10) -> list:
        with self.changed:
            self.changed.wait_for(lambda: len(self.events) >= n or not self.thread.is_alive(), timeout)
        return self.events

    def wait_established(self, timeout: float = 10) -> None:
        assert self.established.wait(timeout), f"watch not established: {self.lost}"

    def wait_lost(self, timeout: float) -> WatchLost:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the watch did not end"
        assert self.lost is not None, "the watch returned instead of reporting a loss"
        return self.lost

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def client(etcd_endpoint):
    c = EtcdClient(EtcdSettings((etcd_endpoint,)))
    yield c
    c.close()


def closing_factory(make):
    """A factory fixture's body (`yield from`): the test calls `make`; whatever it made is closed
    when the test ends (also used by test_syncer)."""
    made = []

    def start(*args, **kwargs):
        made.append(obj := make(*args, **kwargs))
        return obj

    yield start
    for obj in made:
        obj.close()


@pytest.fixture
def watching():
    yield from closing_factory(Watching)


def private_etcd(port: int, directory: str):
    """An etcd of one test alone on `port` (peer port one above), which the test may stop, freeze
    or restart; resumed and removed at the end (a generator for fixtures: `yield from`)."""
    cluster = etcd_secure.start_single(FABRIC_ADDRESS, port, port + 1, directory)
    try:
        yield cluster
    finally:
        proc = cluster.members[0].proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        cluster.stop()


@pytest.fixture
def private(fabric, tmp_path):
    """An etcd of this test alone (it may be stopped or frozen); resumed and removed at the end."""
    yield from private_etcd(PRIVATE_PORT, str(tmp_path))


def test_events_of_several_prefixes_arrive_in_order_on_one_stream(client, watching):
    start = revision(client) + 1
    w = watching(client, PREFIXES, start)
    w.wait_established()
    first = w.batches[0]
    assert first.events == () and first.progress == {RESOURCES: start - 1, HOSTS: start - 1}

    a, b = RESOURCES + "ippools/p1", HOSTS + "ipv4/block/198.18.0.0-26"
    client.commit([], puts=[(a, b"1")])
    client.commit([], puts=[(b, b"confirmed")])
    client.commit([], puts=[("/calico/ipam/v2/assignment/ipv4/block/198.18.0.0-26", b"{}")])  # not watched
    client.commit([], puts=[(a, b"2")])
    client.commit([], deletes=[a])
    _, last = client.commit([], puts=[(a, b"3"), (HOSTS + "ipv6/block/fd00-198-18--", b"x")])  # one Txn, both prefixes

    events = w.wait_events(6)
    assert [(e.kind, e.key, e.value) for e in events if e.key.startswith(RESOURCES)] == [
        (PUT, a, b"1"), (PUT, a, b"2"), (DELETE, a, b""), (PUT, a, b"3")]
    assert [(e.kind, e.key) for e in events if e.key.startswith(HOSTS)] == [(PUT, b), (PUT, HOSTS + "ipv6/block/fd00-198-18--")]
    assert len(events) == 6  # nothing outside the prefixes
    assert [e.mod_revision for e in events if e.key.startswith(RESOURCES)] == sorted(
        e.mod_revision for e in events if e.key.startswith(RESOURCES))
    put_a = [e for e in events if e.key == a]
    assert put_a[1].create_revision == put_a[0].mod_revision and put_a[1].version == 2
    assert w.batches[-1].progress == {RESOURCES: last, HOSTS: last}
    assert w.batches[-1].revision >= last


def test_history_from_a_past_revision_with_a_start_per_prefix(client, watching):
    _, r1 = client.commit([], puts=[(RESOURCES + "nodes/n1", b"1")])
    _, r2 = client.commit([], puts=[(HOSTS + "ipv4/block/a", b"1")])
    _, r3 = client.commit([], puts=[(HOSTS + "ipv4/block/b", b"1"), (RESOURCES + "nodes/n2", b"1")])
    w = watching(client, PREFIXES, {RESOURCES: r1, HOSTS: r3})
    events = w.wait_events(3)
    assert [(e.key, e.mod_revision) for e in events if e.key.startswith(RESOURCES)] == [
        (RESOURCES + "nodes/n1", r1), (RESOURCES + "nodes/n2", r3)]
    # The host prefix starts at r3: its put at r2 is not delivered.
    assert [(e.key, e.mod_revision) for e in events if e.key.startswith(HOSTS)] == [(HOSTS + "ipv4/block/b", r3)]
    assert w.batches[-1].progress[RESOURCES] == r3


def test_a_compacted_start_revision_ends_the_watch_as_compacted(client, watching):
    _, r1 = client.commit([], puts=[(RESOURCES + "nodes/n1", b"1")])
    _, r2 = client.commit([], puts=[(RESOURCES + "nodes/n1", b"2")])
    compact(client, r2)
    lost = watching(client, PREFIXES, r1).wait_lost(10)
    assert lost.reason is LostReason.COMPACTED
    assert lost.compact_revision == r2
    # etcd cancels every compacted watcher; which prefix's cancel comes first is etcd's choice.
    assert any(lost.detail == f"the watch of {p} from revision {r1} was compacted (etcd keeps history from revision {r2})" for p in PREFIXES), lost.detail


def test_a_start_beyond_etcds_revision_ends_the_watch_as_rewound(client, watching):
    """A watch resumed after etcd was replaced by one with less history must not wait silently."""
    now = revision(client)
    lost = watching(client, PREFIXES, now + 100).wait_lost(10)
    assert lost.reason is LostReason.REWOUND
    assert str(now) in lost.detail


def test_stop_ends_an_idle_watch(client, watching):
    w = watching(client, PREFIXES, revision(client) + 1)
    w.wait_established()
    w.stop.set()
    w.thread.join(2)
    assert not w.thread.is_alive() and w.returned and w.lost is None


def test_stop_ends_a_watch_still_opening(fabric, watching):
    """Opening a stream to an endpoint that accepts connections and never answers: the stop
    still ends the watch, and the watch itself would end as unreachable."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes TCP handshakes; nothing ever speaks HTTP/2
    c = EtcdClient(EtcdSettings((f"http://127.0.0.1:{silent.getsockname()[1]}",), timeout=30))
    try:
        w = watching(c, PREFIXES, 1)
        time.sleep(0.5)
        assert w.thread.is_alive()
        w.stop.set()
        w.thread.join(2)
        assert not w.thread.is_alive() and w.returned, w.lost
        lost = watching(c, PREFIXES, 1, dead_after=1.0).wait_lost(10)
        assert lost.reason is LostReason.UNREACHABLE, lost
    finally:
        c.close()
        silent.close()


def test_etcd_stopped_ends_the_watch_as_unreachable(private, watching):
    c = EtcdClient(EtcdSettings((private.endpoint,)))
    try:
        w = watching(c, PREFIXES, revision(c) + 1)
        w.wait_established()
        private.members[0].stop()
        lost = w.wait_lost(15)
        assert lost.reason is LostReason.UNREACHABLE
    finally:
        c.close()


def test_a_silent_stream_is_noticed(private, watching):
    """etcd frozen (SIGSTOP: connections stay open, nothing answers): the unanswered progress
    request ends the watch as unreachable instead of letting it wait for ever."""
    c = EtcdClient(EtcdSettings((private.endpoint,)))
    proc = private.members[0].proc
    try:
        w = watching(c, PREFIXES, revision(c) + 1, progress_interval=0.5, dead_after=1.0)
        w.wait_established()
        os.kill(proc.pid, signal.SIGSTOP)
        lost = w.wait_lost(15)
        assert lost.reason is LostReason.UNREACHABLE
        assert "did not answer" in lost.detail
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        c.close()


def test_an_idle_stream_that_answers_stays_up(private, watching):
    """The liveness check must not end a healthy idle watch: progress answers keep it up."""
    c = EtcdClient(EtcdSettings((private.endpoint,)))
    try:
        w = watching(c, PREFIXES, revision(c) + 1, progress_interval=0.2, dead_after=1.0)
        w.wait_established()
        time.sleep(3)  # many progress rounds
        assert w.thread.is_alive() and w.lost is None
        # Each answered progress request is an empty batch: the consumer knows the stream is alive.
        assert len(w.batches) >= 5 and not w.events, w.batches
        c.commit([], puts=[(RESOURCES + "nodes/n1", b"1")])
        assert [e.key for e in w.wait_events(1)] == [RESOURCES + "nodes/n1"]
    finally:
        c.close()


@pytest.fixture
def cluster(fabric, tmp_path):
    c = etcd_secure.start_cluster(FABRIC_ADDRESS, CLUSTER_PORT, str(tmp_path))
    try:
        yield c
    finally:
        c.stop()


def test_a_member_without_leader_ends_the_watch(cluster, watching):
    """etcd's require-leader option: a member cut off from its cluster ends the watch with "no
    leader" (without it the watch would stay open and silent), and refuses a new one."""
    member = cluster.members[0]
    c = EtcdClient(EtcdSettings((member.client_url,)))
    try:
        w = watching(c, PREFIXES, revision(c) + 1)
        w.wait_established()
        for other in cluster.members[1:]:
            other.stop()
        lost = w.wait_lost(30)
        assert lost.reason is LostReason.NO_LEADER, lost
        again = watching(c, PREFIXES, 1).wait_lost(15)
        assert again.reason is LostReason.NO_LEADER, again
    finally:
        c.close()


def test_a_refused_token_ends_the_watch_as_auth_and_a_new_token_opens_it(auth_etcd, watching):
    c = EtcdClient(EtcdSettings((auth_etcd.endpoint,), username="calico", password=PASSWORD))
    try:
        start = revision(c) + 1  # authenticates
        time.sleep(TOKEN_TTL * 3)  # the simple token expires unused
        lost = watching(c, PREFIXES, start).wait_lost(10)
        assert lost.reason is LostReason.AUTH
        assert "invalid auth token" in lost.detail
        before = c.authentications
        w = watching(c, PREFIXES, start, reauthenticate=True)
        w.wait_established()
        assert c.authentications == before + 1
        c.commit([], puts=[(RESOURCES + "nodes/n1", b"1")])
        assert [e.key for e in w.wait_events(1)] == [RESOURCES + "nodes/n1"]
    finally:
        c.commit([], deletes=[RESOURCES + "nodes/n1"])
        c.close()


def test_a_prefix_without_permission_ends_the_watch_as_auth(auth_etcd, watching):
    c = EtcdClient(EtcdSettings((auth_etcd.endpoint,), username="calico", password=PASSWORD))
    try:
        lost = watching(c, (RESOURCES, "/elsewhere/"), revision(c) + 1).wait_lost(10)
        assert lost.reason is LostReason.AUTH
        assert "permission denied" in lost.detail and "/elsewhere/" in lost.detail
    finally:
        c.close()
