"""Where one invocation spends its time, for the benchmark: enabled by CALICO_CNI_TIMING=1.

When enabled, the verb's imports, etcd calls, netlink requests and sysctl accesses are timed (the
I/O floors mark those functions with `timed(phase)`, decided once at import), and one line of JSON
goes to stderr at exit:
`calico-cni timing {"process_ms": ..., "verb_ms": ..., "imports_ms": ..., "etcd_ms": ..., ...}`:
process = since exec (from /proc/self/stat, 10 ms resolution), verb = since the verb's handler
started (its imports, its work and exit), then the time inside each wrapped layer.
When disabled (the default) `timed` returns each function unchanged and nothing is printed.
Standard library only: the datastore and dataplane floors import it.

In the agent and calico-node (started with CALICO_CNI_TIMING=1) the totals are kept per thread, and
each request's are sent back at its end as the same line on the request's stderr (`request_line`),
with `daemon_ms`, the request's time in the daemon: the plugin prints it as if it had done the work.
Phases nest: `policy` (calico-node programming a request's endpoint) contains `policy_lock` (the
wait for the tables' lock), `render`, `nft_write` (which contains `nft`, libnftables' apply) and
`conntrack`.
"""

from __future__ import annotations

import _thread
import atexit
import functools
import json
import os
import sys
import time

ENABLED = bool(os.environ.get("CALICO_CNI_TIMING"))
_STARTED = time.perf_counter()
# Per thread (the daemon serves requests on threads): thread id -> phase -> (seconds, calls).
_totals: dict[int, dict[str, list]] = {}
_reporting = False


_lock = _thread.allocate_lock()  # a helper thread hands its totals to its request's (hand_over)


def add(phase: str, seconds: float) -> None:
    """Account `seconds` to a phase, for the calling thread."""
    with _lock:
        phases = _totals.setdefault(_thread.get_ident(), {})
        entry = phases.setdefault(phase, [0.0, 0])
        entry[0] += seconds
        entry[1] += 1


def timed(phase: str):
    """A decorator accounting each call's time to `phase` when timing is enabled; otherwise it
    returns the function itself (no cost per call)."""

    def decorate(function):
        if not ENABLED:
            return function

        @functools.wraps(function)
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                add(phase, time.perf_counter() - start)

        return timed_call

    return decorate


def _process_age() -> float | None:
    """Seconds since this process was exec'd, or None where /proc does not tell."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError):
        return None


def _line(out: dict, phases: dict[str, list]) -> str:
    for phase, (seconds, calls) in sorted(phases.items()):
        out[f"{phase}_ms"] = round(seconds * 1000, 2)
        out[f"{phase}_calls"] = calls
    return "calico-cni timing " + json.dumps(out) + "\n"


def _report() -> None:
    out: dict = {"verb_ms": round((time.perf_counter() - _STARTED) * 1000, 2)}
    age = _process_age()
    if age is not None:
        out["process_ms"] = round(age * 1000, 1)
    merged: dict[str, list] = {}
    for phases in list(_totals.values()):  # a copy: daemon threads may still add
        for phase, (seconds, calls) in phases.items():
            entry = merged.setdefault(phase, [0.0, 0])
            entry[0] += seconds
            entry[1] += calls
    sys.stderr.write(_line(out, merged))


def start_report() -> None:
    """Print the totals when the process exits (called once the verb's modules are imported;
    registered once however many verbs a process runs)."""
    global _reporting
    if not _reporting:
        _reporting = True
        atexit.register(_report)


def request_start() -> float:
    """In a daemon: forget what this thread accounted before (an earlier request); the start time."""
    _totals.pop(_thread.get_ident(), None)
    return time.perf_counter()


def request_line(started: float) -> str:
    """In a daemon: the timing line of the request this thread served since `started`
    (`request_start`), its totals then forgotten."""
    phases = _totals.pop(_thread.get_ident(), {})
    return _line({"daemon_ms": round((time.perf_counter() - started) * 1000, 2)}, phases)


def hand_over(to: int) -> None:
    """On a helper thread of a request: add what this thread accounted to the thread `to` (the
    request's, by `_thread.get_ident()`), so the request's line counts its helpers' time."""
    with _lock:
        phases = _totals.pop(_thread.get_ident(), None)
        target = _totals.setdefault(to, {})
        for phase, (seconds, calls) in (phases or {}).items():
            entry = target.setdefault(phase, [0.0, 0])
            entry[0] += seconds
            entry[1] += calls
