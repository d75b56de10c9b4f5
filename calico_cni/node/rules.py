"""The rules controller: keeps the daemon's nftables tables (`ip calico`, `ip6 calico`) as the
datastore asks (NAT outgoing, the VXLAN input filter, the pod VXLAN drop, the tunnel-source
masquerade; node/nft_rules.py renders them).

Level-triggered: every pass renders both tables from the latest snapshot (kept while the cache
version does not change), lists each table with `nft -s list table` and replaces it whole (one nft
transaction per family) when its listing differs from the one taken right after our last apply
(someone flushed, deleted or edited it) or the rendering changed. Nothing is changed before the
first full list of the datastore is in the cache (design rule 27). Only these two tables are ever
written; every other table (portmap's, iptables-nft's) is left alone (design rule 26).

Both tables are kept even when they hold no rule (sets only): an empty table costs nothing, hooks
no chain, and keeps one simple rule for the policy work that adds chains to the same tables;
removing it would only churn. The tables are not removed when the daemon stops: NAT outgoing and
the VXLAN filters must keep working across a restart of calico-node (the next daemon adopts them).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from calico_cni.dataplane import nftables
from calico_cni.dataplane.nftables import NftError
from calico_cni.node.cluster_view import ClusterView
from calico_cni.node.nft_rules import Table, script, tables
from calico_cni.node.parts import PartHealth, ProblemLog, reconcile_passes
from calico_cni.node.syncer import Cache, Snapshot

log = logging.getLogger(__name__)

# How often a pass runs with no change in the datastore: it repairs a table flushed or edited
# behind our back.
PERIOD = 5.0


class Nft(Protocol):
    """What the controller needs of nft (dataplane/nftables.py; a fake in unit tests)."""

    def apply(self, text: str) -> None: ...

    def list_table(self, family: str, name: str) -> str | None: ...


class _Module:
    """dataplane.nftables's functions as an `Nft`."""

    def apply(self, text: str) -> None:
        nftables.apply(text)

    def list_table(self, family: str, name: str) -> str | None:
        return nftables.list_table(family, name)


class RulesController:
    """Keeps this node's `ip calico` and `ip6 calico` tables as rendered from the cache."""

    def __init__(self, nodename: str, cache: Cache, nft: Nft | None = None) -> None:
        self.nodename = nodename
        self.cache = cache
        self.nft: Nft = nft if nft is not None else _Module()
        self.problems = ProblemLog(log, "rules")
        # Per family: the script last applied and the table's listing right after it.
        self.applied: dict[str, tuple[str, str | None]] = {}
        # The last rendering and the cache version it came from.
        self._rendered: tuple[int, list[Table], list[str]] | None = None

    def _render(self, snapshot: Snapshot) -> tuple[list[Table], list[str]]:
        if self._rendered is not None and self._rendered[0] == snapshot.version:
            return self._rendered[1], self._rendered[2]
        view = ClusterView.read(snapshot.items, self.nodename)
        rendered = [tables(view)[family] for family in (4, 6)]
        problems = list(view.problems)
        self._rendered = (snapshot.version, rendered, problems)
        return rendered, problems

    def sync_table(self, table: Table) -> str | None:
        """Make the kernel hold `table`; what went wrong, or None."""
        text = script(table)
        what = f"table {table.family} {table.name}"
        try:
            actual = self.nft.list_table(table.family, table.name)
            previous = self.applied.get(table.family)
            if previous is not None and previous == (text, actual):
                return None
            if previous is not None and previous[0] == text:
                log.warning("rules: %s was changed or removed behind our back; writing it again", what)
            self.nft.apply(text)
            self.applied[table.family] = (text, self.nft.list_table(table.family, table.name))
        except NftError as exc:
            self.applied.pop(table.family, None)
            return f"{what} is not programmed: {exc}"
        log.info("rules: %s programmed", what)
        return None

    def run_pass(self, snapshot: Snapshot) -> str | None:
        """One reconciliation from `snapshot`; the first failure, or None."""
        rendered, problems = self._render(snapshot)
        problems = list(problems)
        failures = [f for f in (self.sync_table(t) for t in rendered) if f is not None]
        self.problems.report(problems + failures)
        return failures[0] if failures else None

    def run(self, stop: threading.Event, health: PartHealth) -> None:
        """The controller's loop: a pass on every change of the cache, and every PERIOD."""

        def one_pass(snapshot: Snapshot) -> tuple[bool, str]:
            failure = self.run_pass(snapshot)
            return (True, f"nftables tables programmed from revision {snapshot.revision}") if failure is None else (False, failure)

        reconcile_passes(self.cache, stop, health, PERIOD, one_pass)
