"""The one compare-and-swap retry loop: every writer (IPAM, the `calico` plugin's endpoint writes,
calicoctl) reads, decides, commits with a CAS, and re-runs its step from a fresh read when the
commit lost a race. Standard library and the datastore's errors only, so any verb may import it
cheaply. A step that keeps losing ends in `TooManyConflicts` ("try again later")."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from calico_cni.datastore.errors import TooManyConflicts

MAX_ATTEMPTS = 100
T = TypeVar("T")

# Lost compare-and-swap races retried by this process (read by benchmarks).
stats = {"conflicts": 0}


class Conflict(Exception):
    """A compare-and-swap lost a race; the step must be re-run from a fresh read."""


def with_retries(what: str, step: Callable[[int], T], deadline_seconds: float = 30.0) -> T:
    """Run `step(attempt)` until it returns without a `Conflict`, bounded in attempts and time;
    `TooManyConflicts` (its message starts with `what`) when it never does."""
    deadline = time.monotonic() + deadline_seconds
    for attempt in range(MAX_ATTEMPTS):
        try:
            return step(attempt)
        except Conflict:
            stats["conflicts"] += 1
            if time.monotonic() > deadline:
                break
            if attempt >= 2:
                # Imported only under contention: `random` costs 3 ms to import, and most verbs
                # never lose a race.
                import random  # noqa: PLC0415

                # Back off a little with jitter so a crowd of writers spreads out.
                time.sleep(random.uniform(0, min(0.002 * attempt, 0.05)))
    raise TooManyConflicts(f"{what}: gave up after {attempt + 1} attempts lost to concurrent updates; try again later")
