"""dataplane.conntrack against a fake `conntrack` (a /bin/sh script): which invocations it runs,
what counts as success, and its errors (tool missing, failing, retried, too slow). The real tool
and kernel are in tests/namespaces/test_conntrack.py."""

from __future__ import annotations

import ipaddress
import time

import pytest

from calico_cni.dataplane import conntrack
from calico_cni.dataplane.conntrack import ConntrackError
from calico_cni.dataplane.errors import DataplaneError

X4, X6 = ipaddress.ip_address("198.18.0.5"), ipaddress.ip_address("fd00:198:18::5")
NOTHING = "echo 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.' >&2; exit 1"


def _fake(tmp_path, monkeypatch, shell: str):
    """conntrack runs `shell` in place of the tool; every run appends its arguments to calls.txt."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "conntrack"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n{shell}\n')
    fake.chmod(0o755)
    monkeypatch.setattr(conntrack, "CONNTRACK", str(fake))
    return calls


def test_each_address_is_deleted_by_original_and_reply_source_in_its_family(tmp_path, monkeypatch):
    calls = _fake(tmp_path, monkeypatch, "echo 'conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.' >&2")
    conntrack.flush_addresses([X4, X6, X4])  # the repeated address runs once
    assert sorted(calls.read_text().splitlines()) == sorted(
        [
            "--family ipv4 --delete --orig-src 198.18.0.5",
            "--family ipv4 --delete --reply-src 198.18.0.5",
            "--family ipv6 --delete --orig-src fd00:198:18::5",
            "--family ipv6 --delete --reply-src fd00:198:18::5",
        ]
    )


def test_nothing_to_delete_is_success_and_no_address_runs_nothing(tmp_path, monkeypatch):
    calls = _fake(tmp_path, monkeypatch, NOTHING)
    conntrack.flush_addresses([X4])
    assert len(calls.read_text().splitlines()) == 2
    calls.unlink()
    conntrack.flush_addresses([])
    assert not calls.exists()


def test_missing_tool_says_to_install_debians_conntrack(tmp_path, monkeypatch):
    monkeypatch.setattr(conntrack, "CONNTRACK", str(tmp_path / "absent"))
    with pytest.raises(ConntrackError, match=r"not installed: install Debian's conntrack package \(apt-get install conntrack\)"):
        conntrack.flush_addresses([X4])
    assert issubclass(ConntrackError, DataplaneError)


def test_a_failure_is_retried_then_reported_with_the_tools_message(tmp_path, monkeypatch):
    calls = _fake(tmp_path, monkeypatch, "echo 'conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted' >&2; exit 1")
    with pytest.raises(
        ConntrackError, match=r"--orig-src 198.18.0.5 failed 4 times: conntrack v1.4.7 \(conntrack-tools\): Operation failed: Operation not permitted$"
    ):
        conntrack.flush_addresses([X4])
    assert calls.read_text().splitlines().count("--family ipv4 --delete --orig-src 198.18.0.5") == conntrack.ATTEMPTS


def test_a_failure_that_passes_on_retry_is_success(tmp_path, monkeypatch):
    # The first run of each invocation fails (an entry vanished between the tool's dump and its
    # delete), the second finds nothing left.
    marks = tmp_path / "marks"
    marks.mkdir()
    calls = _fake(
        tmp_path,
        monkeypatch,
        f'm="{marks}/$(echo "$*" | tr -c "a-z0-9" _)"\n'
        f'if [ ! -e "$m" ]; then touch "$m"; echo "Operation failed: such conntrack doesn\'t exist" >&2; exit 1; fi\n' + NOTHING,
    )
    conntrack.flush_addresses([X4])
    assert len(calls.read_text().splitlines()) == 4


def test_a_slow_tool_is_killed_at_the_deadline(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    _fake(tmp_path, monkeypatch, f"echo $$ >> {pids}; exec sleep 30")
    started = time.monotonic()
    with pytest.raises(ConntrackError, match=r"did not finish within 0.3 s"):
        conntrack.flush_addresses([X4, X6], timeout=0.3)
    # A generous bound (a loaded machine): it only tells a kill at the deadline from waiting out the 30 s sleep.
    assert time.monotonic() - started < 15
    # Every invocation (all four started together) is gone, not left running. A shell killed before
    # its second line leaves no pid (on a loaded machine possibly all four: then no file at all).
    for pid in pids.read_text().split() if pids.exists() else []:
        assert not _alive(int(pid)), pid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
