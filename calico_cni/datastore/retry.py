"""The one compare-and-swap retry loop: every writer (IPAM, the `calico` plugin's endpoint writes,
calicoctl) reads, decides, commits with a CAS, and re-runs its step from a fresh read when the
commit lost a race. Standard library only, so any verb may import it cheaply."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from calico_cni.protocol.errors import TRY_AGAIN_LATER, CniError

MAX_ATTEMPTS = 100
T = TypeVar("T")

# Lost compare-and-swap races retried by this process (read by benchmarks).
stats = {"conflicts": 0}


class Conflict(Exception):
    """A compare-and-swap lost a race; the step must be re-run from a fresh read."""


def with_retries(what: str, step: Callable[[int], T], deadline_seconds: float = 30.0) -> T:
    """Run `step(attempt)` until it returns without a `Conflict`, bounded in attempts and time."""
    deadline = time.monotonic() + deadline_seconds
    for attempt in range(MAX_ATTEMPTS):
        try:
            return step(attempt)
        except Conflict:
            stats["conflicts"] += 1
            if time.monotonic() > deadline:
                break
            if attempt >= 2:
                import random  # only under contention: it costs 3 ms to import

                # Back off a little with jitter so a crowd of writers spreads out.
                time.sleep(random.uniform(0, min(0.002 * attempt, 0.05)))
    raise CniError(
        TRY_AGAIN_LATER,
        f"{what}: gave up after {attempt + 1} attempts lost to concurrent updates; try again later",
    )
