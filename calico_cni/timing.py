"""Where one invocation spends its time, for the benchmark: enabled by CALICO_CNI_TIMING=1.

When enabled, the verb's imports, etcd calls, netlink requests and sysctl accesses are timed (the
I/O floors mark those functions with `timed(phase)`, decided once at import), and one line of JSON
goes to stderr at exit:
`calico-cni timing {"process_ms": ..., "verb_ms": ..., "imports_ms": ..., "etcd_ms": ..., ...}`:
process = since exec (from /proc/self/stat, 10 ms resolution), verb = since the verb's handler
started (its imports, its work and exit), then the time inside each wrapped layer.
When disabled (the default) `timed` returns each function unchanged and nothing is printed.
Standard library only: the datastore and dataplane floors import it.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time

ENABLED = bool(os.environ.get("CALICO_CNI_TIMING"))
_STARTED = time.perf_counter()
_totals: dict[str, float] = {}
_counts: dict[str, int] = {}


def add(phase: str, seconds: float) -> None:
    """Account `seconds` to a phase."""
    _totals[phase] = _totals.get(phase, 0.0) + seconds
    _counts[phase] = _counts.get(phase, 0) + 1


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


def _report() -> None:
    out = {"verb_ms": round((time.perf_counter() - _STARTED) * 1000, 2)}
    age = _process_age()
    if age is not None:
        out["process_ms"] = round(age * 1000, 1)
    for phase, seconds in sorted(_totals.items()):
        out[f"{phase}_ms"] = round(seconds * 1000, 2)
        out[f"{phase}_calls"] = _counts[phase]
    sys.stderr.write("calico-cni timing " + json.dumps(out) + "\n")


def start_report() -> None:
    """Print the totals when the process exits (called once the verb's modules are imported)."""
    atexit.register(_report)
