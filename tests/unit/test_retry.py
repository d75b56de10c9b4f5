"""The datastore's compare-and-swap retry loop (calico_cni.datastore.retry), without etcd: a step
that keeps losing ends in "try again later" (CNI error 11) after a bounded number of attempts or at
its deadline, never in an endless loop."""

from __future__ import annotations

import pytest

from calico_cni.datastore import retry
from calico_cni.datastore.errors import TooManyConflicts
from calico_cni.plugins.errors import cni_error


def test_retries_give_up_with_try_again_later(mocker):
    """A step that loses every compare-and-swap ends in CNI error 11 after MAX_ATTEMPTS tries,
    never in an endless loop (the back-off sleeps are skipped here)."""
    mocker.patch("calico_cni.datastore.retry.time.sleep")
    calls = []

    def always_conflicts(attempt):
        calls.append(attempt)
        raise retry.Conflict()

    before = retry.stats["conflicts"]
    with pytest.raises(TooManyConflicts) as err:
        retry.with_retries("assigning an IPv4 address", always_conflicts)
    assert cni_error(err.value).code == 11 and "try again later" in err.value.msg
    assert calls == list(range(retry.MAX_ATTEMPTS))
    assert retry.stats["conflicts"] - before == retry.MAX_ATTEMPTS


def test_retries_stop_at_the_deadline(mocker):
    mocker.patch("calico_cni.datastore.retry.time.sleep")
    clock = iter(range(0, 10_000, 10))
    mocker.patch("calico_cni.datastore.retry.time.monotonic", side_effect=lambda: next(clock))
    calls = []

    def always_conflicts(attempt):
        calls.append(attempt)
        raise retry.Conflict()

    with pytest.raises(TooManyConflicts) as err:
        retry.with_retries("releasing h", always_conflicts, deadline_seconds=25)
    assert cni_error(err.value).code == 11
    assert len(calls) < retry.MAX_ATTEMPTS
