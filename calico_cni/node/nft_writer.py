"""Writes calico-node's nftables tables (`ip calico`, `ip6 calico`) and keeps them as written.

One nft run per write, holding every table that changed (one transaction): a table whole the first
time, after a failure or after tampering, otherwise only `nft_tables.delta` from what was written
last. Tampering is found by `check`: it reads the ruleset's generation (one netlink round trip; the
kernel adds one at every commit, by anyone) and lists a table with `nft -s list table` only when
something was committed since the table was last known; a listing that differs from the one
adopted earlier means someone changed the table, and it is written whole again. Right after our
own write there is no listing to compare with yet: the first check adopts the one it takes while
the generation shows that only our commits happened since (the controller checks at once after a
write for that). If another program committed in between, whether it touched our table cannot be
told, and the table is written whole. When the generation cannot be read, a check adopts or
compares listings as they come.

Writes happen under the caller's lock (the controller's: its loop and the plugins' requests both
write); a check lists without it, since a listing of a large table takes most of a second, and
gives up when a write came meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from calico_cni.dataplane import nftables
from calico_cni.dataplane.nftables import NftError
from calico_cni.node.nft_tables import NotIncremental, Table, delta, script
from calico_cni.timing import timed

log = logging.getLogger(__name__)

# Whole writes for want of a listing to compare with (another program committed right after ours)
# come at most this often per table.
WHOLE_WRITES_APART = 5.0


class Nft(Protocol):
    """What the writer and its controller need of nft (dataplane/nftables.py; a fake in unit
    tests)."""

    def apply(self, text: str) -> None: ...

    def list_table(self, family: str, name: str) -> str | None: ...

    def dropping_chains(self) -> list[str]: ...

    def generation(self) -> int: ...


class NftModule:
    """dataplane.nftables's functions as an `Nft`."""

    @timed("nft")
    def apply(self, text: str) -> None:
        nftables.apply(text)

    def list_table(self, family: str, name: str) -> str | None:
        return nftables.list_table(family, name)

    def dropping_chains(self) -> list[str]:
        return nftables.dropping_chains()

    def generation(self) -> int:
        return nftables.generation()


@dataclass
class Written:
    """What we last wrote to one family's table; the kernel's listing of it once a check adopted
    one (None until then; a missing table is never adopted), and the ruleset generation at which
    the kernel was known to hold it (None: unknown, e.g. another commit came between ours and the
    listing, or before a delta of ours)."""

    table: Table
    listing: str | None
    generation: int | None


class TableWriter:
    """The tables as last written, written again as asked (see the module docstring)."""

    def __init__(self, nft: Nft, lock: threading.RLock) -> None:
        self.nft = nft
        self.lock = lock
        self.written: dict[str, Written] = {}
        # When a table was last written whole for want of a listing to compare with (monotonic).
        self._unsure_at: dict[str, float] = {}

    def chains(self) -> set[str]:
        """The names of the chains written (the caller holds the lock)."""
        return {c.name for w in self.written.values() for s in w.table.sections for c in s.chains}

    def unlisted(self) -> bool:
        """Whether a table was written since its last listing (a check should adopt one soon)."""
        with self.lock:
            return any(w.listing is None for w in self.written.values())

    def generation(self) -> int | None:
        """The ruleset's generation (None: unreadable; then checks list every time)."""
        try:
            return self.nft.generation()
        except NftError as exc:
            log.debug("rules: %s", exc)
            return None

    def _write(self, tables: list[Table], text: str, wholes: list[bool]) -> None:
        """Apply `text` (making the kernel hold `tables`; under the lock) and remember them: with the
        generation after it when the kernel counted only our commit meanwhile, so the next check
        may trust that the tables are exactly what we wrote."""
        before = self.generation()
        self.nft.apply(text)
        after = self.generation()
        exclusive = before is not None and after == before + 1
        known = {family: w.generation == before for family, w in self.written.items()}
        if exclusive:
            # Only our commit came in between: the other tables we know are still as they were.
            for other in self.written.values():
                if other.generation == before:
                    other.generation = after
        for table, whole in zip(tables, wholes):
            # A delta lands on whatever the kernel held: the result is what we meant only if the
            # table was known to be ours right before it (else a flush by someone else would be
            # taken for our work). A whole write needs only that nothing else came in between.
            trusted = exclusive and (whole or known.get(table.family, False))
            self.written[table.family] = Written(table, None, after if trusted else None)

    @timed("nft_write")
    def sync(self, tables: list[Table]) -> str | None:
        """Make the kernel hold `tables` (under the lock) in one nft run; what went wrong, or None.
        A table is written whole the first time (and after a failure, or when a check found it
        changed), otherwise as the difference from what we wrote last; one without a difference is
        left out."""
        changes: list[tuple[Table, str | None]] = []  # (table, its delta; None: whole)
        for table in tables:
            previous = self.written.get(table.family)
            text = None
            if previous is not None:
                try:
                    text = delta(previous.table, table)
                except NotIncremental:
                    pass
                if text == "":
                    continue
            changes.append((table, text))
        if not changes:
            return None
        changed = [table for table, _ in changes]
        what = " and ".join(f"table {t.family} {t.name}" for t in changed)
        started = time.monotonic()
        try:
            try:
                self._write(changed, "".join(script(t) if text is None else text for t, text in changes), [text is None for _, text in changes])
            except NftError as exc:
                if all(text is None for _, text in changes):
                    raise
                # Our delta did not fit what the kernel holds: a bug of ours, or tampering.
                log.warning("rules: nft refused the changes to %s (%s); writing whole", what, exc)
                self._write(changed, "".join(script(t) for t in changed), [True] * len(changed))
        except NftError as exc:
            for table in changed:
                self.written.pop(table.family, None)
            return f"{what} not programmed: {exc}"
        how = ", ".join("whole" if text is None else f"{text.count(chr(10))} changes" for _, text in changes)
        log.info("rules: %s programmed (%s; %.0f ms)", what, how, (time.monotonic() - started) * 1000)
        return None

    def check(self, family: str) -> str | None:
        """Compare the kernel's table of `family` with what we wrote last and write it whole when
        it differs; what went wrong, or None. Cheap when nothing was committed since the table was
        last known (no listing); the listing is taken without the lock."""
        with self.lock:
            written = self.written.get(family)
        if written is None:
            return None  # not written yet, or the last write failed: the next pass writes it whole
        what = f"table {family} {written.table.name}"
        generation = self.generation()
        if written.listing is not None and generation is not None and generation == written.generation:
            return None
        try:
            listing = self.nft.list_table(family, written.table.name)
        except NftError as exc:
            return f"{what} cannot be checked: {exc}"
        after = self.generation()
        with self.lock:
            if self.written.get(family) is not written:
                return None  # written meanwhile: the next check looks at that
            if listing is None:
                log.warning("rules: %s is missing; writing it whole", what)
            elif written.listing is None:
                if generation is None or generation == written.generation == after:
                    # Only our commits since our write, before and after the listing (or no way to
                    # tell): the listing is of what we wrote.
                    written.listing, written.generation = listing, generation
                    return None
                # Another program committed between our write and this listing: whether it touched
                # this table cannot be told, so it is written whole; at most once a PERIOD, so that
                # another program committing all the time cannot keep us rewriting.
                if time.monotonic() - self._unsure_at.get(family, -WHOLE_WRITES_APART) < WHOLE_WRITES_APART:
                    return None
                self._unsure_at[family] = time.monotonic()
                log.info("rules: %s: other commits came before our write could be checked; writing it whole", what)
            elif listing == written.listing:
                written.generation = generation if generation == after else None
                return None
            else:
                log.warning("rules: %s was changed or removed behind our back; writing it whole", what)
            try:
                self._write([written.table], script(written.table), [True])
            except NftError as exc:
                self.written.pop(family, None)
                return f"{what} is not programmed: {exc}"
        return None
