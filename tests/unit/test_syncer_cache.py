"""The syncer's cache (pure): full lists, watch events in order, replays, versions, waiting."""

from __future__ import annotations

import threading

import pytest

from calico_cni.datastore.etcd import KeyValue
from calico_cni.datastore.watch import DELETE, PUT, Event
from calico_cni.node.syncer import Cache


def kv(key: str, value: bytes, rev: int, created: int | None = None, version: int = 1) -> KeyValue:
    return KeyValue(key, value, rev, created if created is not None else rev, version)


def put(key: str, value: bytes, rev: int, created: int | None = None, version: int = 1) -> Event:
    return Event(PUT, key, value, rev, created if created is not None else rev, version)


def delete(key: str, rev: int) -> Event:
    return Event(DELETE, key, b"", rev)


def test_before_the_first_list_the_snapshot_is_empty_and_not_synced():
    snap = Cache().snapshot()
    assert (dict(snap.items), snap.synced, snap.version, snap.revision) == ({}, False, 0, 0)


def test_a_list_replaces_everything_and_marks_synced():
    cache = Cache()
    cache.replace([kv("/a", b"1", 5), kv("/b", b"2", 6)], 7)
    snap = cache.snapshot()
    assert snap.synced and snap.revision == 7 and snap.version == 1
    assert dict(snap.items) == {"/a": kv("/a", b"1", 5), "/b": kv("/b", b"2", 6)}
    cache.replace([kv("/b", b"3", 9)], 10)
    snap = cache.snapshot()
    assert dict(snap.items) == {"/b": kv("/b", b"3", 9)}  # /a was deleted while we were away
    assert snap.version == 2 and snap.revision == 10


def test_an_empty_first_list_is_a_change_from_not_synced():
    cache = Cache()
    cache.replace([], 3)
    snap = cache.snapshot()
    assert snap.synced and snap.version == 1 and dict(snap.items) == {}


def test_a_list_equal_to_the_cache_keeps_the_version():
    cache = Cache()
    cache.replace([kv("/a", b"1", 5)], 7)
    cache.replace([kv("/a", b"1", 5)], 9)
    snap = cache.snapshot()
    assert snap.version == 1 and snap.revision == 9


def test_events_apply_in_order():
    cache = Cache()
    cache.replace([kv("/a", b"1", 5)], 5)
    cache.apply([put("/b", b"x", 6), put("/a", b"2", 7, created=5, version=2), delete("/b", 8), put("/c", b"y", 8)], 8)
    snap = cache.snapshot()
    assert dict(snap.items) == {"/a": kv("/a", b"2", 7, created=5, version=2), "/c": kv("/c", b"y", 8)}
    assert snap.version == 2 and snap.revision == 8


def test_a_replayed_event_never_moves_a_key_back():
    """A watch resumed from an earlier revision delivers events the cache already has."""
    cache = Cache()
    cache.replace([kv("/a", b"new", 9, created=3, version=3)], 9)
    cache.apply([put("/a", b"old", 4, created=3, version=2), delete("/a", 6)], 9)
    snap = cache.snapshot()
    assert dict(snap.items) == {"/a": kv("/a", b"new", 9, created=3, version=3)}
    assert snap.version == 1  # nothing changed: controllers are not woken


def test_a_replay_of_put_then_delete_leaves_the_key_deleted():
    cache = Cache()
    cache.replace([], 5)
    cache.apply([put("/a", b"1", 6), delete("/a", 7)], 7)
    assert dict(cache.snapshot().items) == {}


def test_deleting_a_missing_key_changes_nothing():
    cache = Cache()
    cache.replace([kv("/a", b"1", 2)], 2)
    cache.apply([delete("/zz", 3)], 3)
    snap = cache.snapshot()
    assert snap.version == 1 and snap.revision == 3


def test_snapshots_are_immutable_and_independent():
    cache = Cache()
    cache.replace([kv("/a", b"1", 2)], 2)
    before = cache.snapshot()
    with pytest.raises(TypeError):
        before.items["/b"] = kv("/b", b"2", 3)  # type: ignore[index]
    cache.apply([put("/b", b"2", 3), delete("/a", 4)], 4)
    assert dict(before.items) == {"/a": kv("/a", b"1", 2)}
    assert dict(cache.snapshot().items) == {"/b": kv("/b", b"2", 3)}
    assert cache.snapshot() is cache.snapshot()  # no copy per reader


def test_under_selects_a_prefix():
    cache = Cache()
    cache.replace([kv("/x/1", b"1", 2), kv("/x/2", b"2", 3), kv("/y/1", b"3", 4)], 4)
    assert set(cache.snapshot().under("/x/")) == {"/x/1", "/x/2"}


def test_wait_returns_at_once_when_the_version_already_differs():
    cache = Cache()
    cache.replace([], 1)
    assert cache.wait(0, 10) == 1


def test_wait_times_out_with_the_same_version():
    cache = Cache()
    assert cache.wait(0, 0.05) == 0


def test_wait_wakes_on_a_change_from_another_thread():
    cache = Cache()
    cache.replace([], 1)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(cache.wait(1, 10)))
    waiter.start()
    cache.apply([put("/a", b"1", 2)], 2)
    waiter.join(10)
    assert got == [2]


def test_a_revision_only_update_does_not_wake_waiters():
    cache = Cache()
    cache.replace([kv("/a", b"1", 2)], 2)
    cache.apply([], 9)
    snap = cache.snapshot()
    assert snap.revision == 9 and snap.version == 1
    assert cache.wait(1, 0.05) == 1


def test_revision_never_goes_back_on_apply():
    cache = Cache()
    cache.replace([], 9)
    cache.apply([], 4)
    assert cache.snapshot().revision == 9
