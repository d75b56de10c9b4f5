"""node.syncer against real etcd: the first list, events in order, and convergence after every way
a watch is lost (compaction while away, etcd restarted, etcd replaced, a token that vanished), with
`run` ending promptly on its stop event whatever etcd does."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore.etcd import EtcdClient, Range
from calico_cni.node.syncer import Cache, Syncer
from tests.etcd.test_watch import closing_factory, compact, private_etcd
from tests.security_support import PASSWORD, TOKEN_TTL

RESOURCES = "/calico/resources/v3/projectcalico.org/"
HOSTS = "/calico/ipam/v2/host/node1/"
PREFIXES = (RESOURCES, HOSTS)
PRIVATE_PORT = 23890  # private etcds of this module (peer port one above)


def stored(client: EtcdClient) -> dict:
    """Every key under the watched prefixes, as the cache should hold them."""
    ranges, _ = client.read([Range(p, prefix=True) for p in PREFIXES])
    return {kv.key: kv for found in ranges for kv in found}


def wait_until(predicate, timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Running:
    """A syncer's `run` on a thread, with its warm client; `halt` sets stop and joins (bounded)."""

    def __init__(self, settings: EtcdSettings, cache: Cache | None = None, reporter=None, **options) -> None:
        self.warm = EtcdClient(settings)
        self.cache = cache or Cache()
        self.syncer = Syncer(self.warm.lease, PREFIXES, self.cache, **options)
        self.reporter = reporter
        self.leases = 0
        self.start()

    def start(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.syncer.run, args=(self.stop, self.reporter), daemon=True)
        self.thread.start()

    def halt(self, timeout: float = 2) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"run() did not return within {timeout}s of its stop event"

    def converged(self, client: EtcdClient) -> bool:
        snap = self.cache.snapshot()
        return snap.synced and dict(snap.items) == stored(client)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.warm.close()


@pytest.fixture
def running():
    yield from closing_factory(Running)


@pytest.fixture
def client(etcd_endpoint):
    c = EtcdClient(EtcdSettings((etcd_endpoint,)))
    yield c
    c.close()


def test_list_then_events_in_order(client, etcd_endpoint, running):
    client.commit([], puts=[(RESOURCES + "nodes/n1", b"n1"), (RESOURCES + "ippools/p1", b"p1"), (HOSTS + "ipv4/block/a", b"a"),
                            ("/calico/ipam/v2/host/node2/ipv4/block/b", b"other node"), ("/calico/ipam/v2/handle/h", b"unwatched")])
    r = running(EtcdSettings((etcd_endpoint,)))
    wait_until(lambda: r.cache.snapshot().synced, what="the first list")
    snap = r.cache.snapshot()
    assert set(snap.items) == {RESOURCES + "nodes/n1", RESOURCES + "ippools/p1", HOSTS + "ipv4/block/a"}
    assert dict(snap.items) == stored(client)
    wait_until(lambda: r.syncer.status()["in_sync"], what="the watch")

    version = snap.version
    client.commit([], puts=[(RESOURCES + "nodes/n2", b"n2")])
    client.commit([], puts=[(RESOURCES + "nodes/n1", b"n1 v2")], deletes=[HOSTS + "ipv4/block/a"])
    client.commit([], deletes=[RESOURCES + "ippools/p1"])
    _, last = client.commit([], puts=[(HOSTS + "ipv6/block/b", b"b")])
    wait_until(lambda: r.converged(client), what="the events")
    snap = r.cache.snapshot()
    assert snap.items[RESOURCES + "nodes/n1"].value == b"n1 v2" and snap.items[RESOURCES + "nodes/n1"].version == 2
    assert snap.version > version and snap.revision >= last
    status = r.syncer.status()
    assert status["in_sync"] and status["lists"] == 1 and status["relists"] == 0 and status["last_error"] is None
    assert status["last_event_at"] is not None
    r.halt()
    assert not r.syncer.status()["in_sync"]


def test_before_the_first_list_nothing_is_synced_and_stop_is_prompt(fabric, running):
    """etcd accepts connections and never answers: the cache stays unsynced (no controller may
    remove anything), the failure is reported, and a stop still ends run() at once."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        r = running(EtcdSettings((f"http://127.0.0.1:{silent.getsockname()[1]}",), timeout=1))
        wait_until(lambda: r.syncer.status()["last_error"] is not None, what="the failed list to be reported")
        assert "unreachable" in r.syncer.status()["last_error"]
        status = r.syncer.status()
        snap = r.cache.snapshot()
        assert not snap.synced and dict(snap.items) == {} and not status["in_sync"] and status["lists"] == 0
        r.halt(2)
    finally:
        silent.close()


def test_stop_ends_run_while_watching(client, etcd_endpoint, running):
    r = running(EtcdSettings((etcd_endpoint,)))
    wait_until(lambda: r.syncer.status()["in_sync"], what="the watch")
    r.halt(2)


def test_compaction_while_away_lists_again(client, etcd_endpoint, running):
    """The syncer stops (its part restarted, say), keys change and etcd compacts its history:
    the next run cannot resume its watch, lists again, and keys deleted meanwhile disappear."""
    client.commit([], puts=[(RESOURCES + "nodes/n1", b"1"), (RESOURCES + "nodes/n2", b"2"), (HOSTS + "ipv4/block/a", b"a")])
    r = running(EtcdSettings((etcd_endpoint,)))
    wait_until(lambda: r.converged(client) and r.syncer.status()["in_sync"], what="the first sync")
    r.halt()
    client.commit([], deletes=[RESOURCES + "nodes/n1", HOSTS + "ipv4/block/a"])
    _, rev = client.commit([], puts=[(RESOURCES + "nodes/n3", b"3"), (RESOURCES + "nodes/n2", b"2 v2")])
    compact(client, rev)
    r.start()
    wait_until(lambda: r.converged(client) and r.syncer.status()["in_sync"], what="the re-list")
    status = r.syncer.status()
    assert status["lists"] == 2 and status["relists"] == 1 and status["losses"] == 1
    assert "compacted" in status["last_error"]
    assert set(r.cache.snapshot().items) == {RESOURCES + "nodes/n2", RESOURCES + "nodes/n3"}


def test_restart_without_compaction_resumes_without_listing(client, etcd_endpoint, running):
    """A run that starts with a synced cache resumes the watch: the changes made while it was
    away arrive as events (deletes included), and etcd serves no second list."""
    client.commit([], puts=[(RESOURCES + "nodes/n1", b"1"), (HOSTS + "ipv4/block/a", b"a")])
    r = running(EtcdSettings((etcd_endpoint,)))
    wait_until(lambda: r.converged(client) and r.syncer.status()["in_sync"], what="the first sync")
    r.halt()
    client.commit([], deletes=[RESOURCES + "nodes/n1"], puts=[(RESOURCES + "nodes/n2", b"2")])
    r.start()
    wait_until(lambda: r.converged(client), what="the resumed watch")
    assert r.syncer.status()["lists"] == 1


@pytest.fixture
def private(fabric, tmp_path):
    """An etcd of this test alone that it may stop, restart (same data) or replace."""
    yield from private_etcd(PRIVATE_PORT, str(tmp_path))


def test_etcd_restarted_the_syncer_resumes_and_converges(private, running):
    c = EtcdClient(EtcdSettings((private.endpoint,)))
    try:
        c.commit([], puts=[(RESOURCES + "nodes/n1", b"1"), (HOSTS + "ipv4/block/a", b"a")])
        r = running(EtcdSettings((private.endpoint,)))
        wait_until(lambda: r.converged(c) and r.syncer.status()["in_sync"], what="the first sync")
        member = private.members[0]
        member.stop()
        wait_until(lambda: not r.syncer.status()["in_sync"], what="the loss to be noticed")
        assert r.cache.snapshot().synced  # what was listed stays usable while etcd is away
        member.start()
        private.wait_healthy()
        c.commit([], deletes=[RESOURCES + "nodes/n1"], puts=[(RESOURCES + "nodes/n2", b"2"), (HOSTS + "ipv4/block/b", b"b")])
        wait_until(lambda: r.converged(c) and r.syncer.status()["in_sync"], timeout=20, what="convergence after the restart")
        status = r.syncer.status()
        assert status["losses"] >= 1 and "unreachable" in status["last_error"]
        assert status["lists"] == 1  # resumed from its revision: the data directory kept the history
        r.halt()
    finally:
        c.close()


def test_etcd_replaced_by_one_with_less_history_lists_again(private, running):
    """etcd restored from an old backup or rebuilt empty: its revision is below the syncer's, so
    resuming would wait for revisions that mean something else; the syncer lists again."""
    c = EtcdClient(EtcdSettings((private.endpoint,)))
    try:
        for i in range(20):
            c.commit([], puts=[(RESOURCES + f"nodes/n{i}", b"old")])
        r = running(EtcdSettings((private.endpoint,)))
        wait_until(lambda: r.converged(c) and r.syncer.status()["in_sync"], what="the first sync")
        member = private.members[0]
        member.stop()
        shutil.rmtree(member.data_dir)
        member.start()
        private.wait_healthy()
        c.commit([], puts=[(RESOURCES + "nodes/fresh", b"new"), (HOSTS + "ipv4/block/a", b"a")])
        wait_until(lambda: r.converged(c), timeout=20, what="the re-list on the replaced etcd")
        assert set(r.cache.snapshot().items) == {RESOURCES + "nodes/fresh", HOSTS + "ipv4/block/a"}
        status = r.syncer.status()
        assert status["relists"] == 1 and "rewound" in status["last_error"]
        r.halt()
    finally:
        c.close()


@pytest.fixture
def auth_settings(auth_etcd):
    """The session's etcd with authentication (simple tokens expire after TOKEN_TTL seconds
    unused), /calico/ emptied; the settings of user calico."""
    settings = EtcdSettings((auth_etcd.endpoint,), username="calico", password=PASSWORD)
    c = EtcdClient(settings)
    try:
        for kv in c.get_prefix("/calico/", keys_only=True):
            c.commit([], deletes=[kv.key])
    finally:
        c.close()
    return settings


def test_a_token_expiring_under_an_open_watch_changes_nothing(auth_settings, running):
    """etcd checks the token when a watcher is created, not afterwards: an established watch
    outlives its token, and the syncer neither loses it nor lists again."""
    c = EtcdClient(auth_settings)
    try:
        r = running(auth_settings)
        wait_until(lambda: r.converged(c) and r.syncer.status()["in_sync"], what="the first sync")
        time.sleep(TOKEN_TTL * 3)  # the syncer's token expires unused
        c.commit([], puts=[(RESOURCES + "nodes/n1", b"1")])
        wait_until(lambda: r.converged(c), what="the event")
        status = r.syncer.status()
        assert status["in_sync"] and status["losses"] == 0 and status["lists"] == 1, status
        r.halt()
    finally:
        c.close()


def test_a_refused_token_is_renewed_and_the_syncer_lists_again(auth_settings, running):
    """The syncer resumes with a token etcd no longer knows (expired while it was away; a
    restarted etcd forgets its simple tokens too): the watch is refused ("invalid auth token"),
    the syncer authenticates again, lists again, and follows the changes made since."""
    c = EtcdClient(auth_settings)
    try:
        c.commit([], puts=[(RESOURCES + "nodes/n1", b"1")])
        r = running(auth_settings)
        wait_until(lambda: r.converged(c) and r.syncer.status()["in_sync"], what="the first sync")
        r.halt()
        time.sleep(TOKEN_TTL * 3)  # the token expires unused
        c.commit([], deletes=[RESOURCES + "nodes/n1"], puts=[(RESOURCES + "nodes/n2", b"2")])
        r.start()
        wait_until(lambda: r.converged(c) and r.syncer.status()["in_sync"], what="convergence with a new token")
        status = r.syncer.status()
        assert status["relists"] == 1 and status["losses"] == 1, status
        assert "auth" in status["last_error"] and "invalid auth token" in status["last_error"], status
        assert set(r.cache.snapshot().items) == {RESOURCES + "nodes/n2"}
        r.halt()
    finally:
        c.close()


class Reports:
    """A syncer's reporter (calico-node's part health stands here): what it was told, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str | None, float]] = []

    def ok(self, detail: str | None = None) -> None:
        with self.lock:
            self.calls.append(("ok", detail, time.monotonic()))

    def not_ready(self, why: str) -> None:
        with self.lock:
            self.calls.append(("not_ready", why, time.monotonic()))

    def of(self, kind: str) -> list[tuple[str, str | None, float]]:
        with self.lock:
            return [c for c in self.calls if c[0] == kind]


def etcd_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("etcd-watch", "etcd-list")]


def test_an_idle_watch_reports_it_is_alive_and_a_lost_one_reports_why(private, running):
    """calico-node's liveness probe reads the syncer's last good pass: an idle datastore must not
    look like a dead syncer (every answered progress request is one), and an etcd gone says so."""
    reports = Reports()
    r = running(EtcdSettings((private.endpoint,)), reporter=reports, progress_interval=0.2, dead_after=1.0)
    wait_until(lambda: r.syncer.status()["in_sync"], what="the watch")
    first = len(reports.of("ok"))
    wait_until(lambda: len(reports.of("ok")) >= first + 3, timeout=10, what="progress answers reported while idle")
    assert reports.of("ok")[-1][1].startswith("watching from revision ")
    assert not reports.of("not_ready")
    private.members[0].stop()
    wait_until(lambda: reports.of("not_ready"), timeout=15, what="the loss reported")
    assert "unreachable" in reports.of("not_ready")[0][1]
    r.halt()
    wait_until(lambda: not etcd_threads(), timeout=10, what=f"the syncer's threads to end: {etcd_threads()}")


def test_losses_leave_no_thread_behind(private, running):
    """A watch lost again and again (etcd stopped and started) and a stop: every stream's reader
    thread ends."""
    r = running(EtcdSettings((private.endpoint,)), dead_after=1.0)
    for _ in range(3):
        wait_until(lambda: r.syncer.status()["in_sync"], timeout=20, what="the watch")
        assert etcd_threads().count("etcd-watch") == 1, etcd_threads()
        private.members[0].stop()
        wait_until(lambda: not r.syncer.status()["in_sync"], what="the loss")
        private.members[0].start()
        private.wait_healthy()
    wait_until(lambda: r.syncer.status()["in_sync"], timeout=20, what="the watch")
    assert r.syncer.status()["losses"] >= 3  # each attempt while etcd was down is one too
    r.halt()
    wait_until(lambda: not etcd_threads(), timeout=10, what=f"the syncer's threads to end: {etcd_threads()}")
