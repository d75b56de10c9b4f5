"""The rules controller: keeps the daemon's nftables tables (`ip calico`, `ip6 calico`) as the
datastore asks (NAT outgoing, the VXLAN input filter, the pod VXLAN drop, the VXLAN NOTRACK, the
tunnel-source masquerade; node/nft_rules.py renders them).

Level-triggered, and cheap on the common change: the cache holds every IPAM block, so every pod
written anywhere in the cluster changes its version, but the rules read only pools, Nodes and
FelixConfigurations. A pass renders both tables from those records alone, again only when one of
their keys or revisions changed. It touches nft only when the rendering changed (apply, then list
the result) or PERIOD has passed since the last kernel check: then it lists each table with `nft -s
list table` and replaces it whole (one nft transaction per family) when the listing differs from
the one taken right after our last apply (someone flushed, deleted or edited it). A block-only
change costs no nft run. Nothing is changed before the first full list of the datastore is in the
cache (design rule 27). Only these two tables are ever written; every other table (portmap's,
iptables-nft's) is left alone (design rule 26).

Both tables are kept even when they hold no rule (sets only): an empty table costs nothing, hooks
no chain, and keeps one simple rule for the policy work that adds chains to the same tables;
removing it would only churn. The tables are not removed when the daemon stops: NAT outgoing and
the VXLAN filters must keep working across a restart of calico-node (the next daemon adopts them).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from calico_cni.dataplane import nftables
from calico_cni.dataplane.nftables import NftError
from calico_cni.model import keys
from calico_cni.node.cluster_view import FELIX_CONFIGURATIONS, ClusterView
from calico_cni.node.nft_rules import tables
from calico_cni.node.nft_tables import Table, script
from calico_cni.node.parts import PartHealth, ProblemLog, reconcile_passes
from calico_cni.node.syncer import Cache, Snapshot

log = logging.getLogger(__name__)

# How often a pass runs with no change in the datastore: it repairs a table flushed or edited
# behind our back.
PERIOD = 5.0

# The records the rules are rendered from (never the IPAM blocks: they change with every pod).
INPUTS = (keys.POOLS, keys.NODES, FELIX_CONFIGURATIONS)


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
        # The cache version last looked at and the inputs' (key, mod_revision)s at it.
        self._inputs: tuple[int, tuple[tuple[str, int], ...]] | None = None
        # The last rendering: the inputs it came from, the tables and the problems found.
        self._rendered: tuple[tuple[tuple[str, int], ...], list[Table], list[str]] | None = None
        # When the kernel's tables were last listed and compared (monotonic), None: never.
        self._checked: float | None = None

    def _inputs_at(self, snapshot: Snapshot) -> tuple[tuple[str, int], ...]:
        """The (key, mod_revision) of every record the rules read, once per cache version."""
        if self._inputs is None or self._inputs[0] != snapshot.version:
            found = tuple(sorted((key, kv.mod_revision) for key, kv in snapshot.items.items() if key.startswith(INPUTS)))
            self._inputs = (snapshot.version, found)
        return self._inputs[1]

    def _render(self, snapshot: Snapshot) -> tuple[list[Table], list[str]]:
        """Both tables and what could not be read, from the pools, Nodes and FelixConfigurations
        only; kept while none of those records changed (a block's change leaves them as they are)."""
        inputs_at = self._inputs_at(snapshot)
        if self._rendered is not None and self._rendered[0] == inputs_at:
            return self._rendered[1], self._rendered[2]
        items = {key: snapshot.items[key] for key, _ in inputs_at}
        view = ClusterView.read(items, self.nodename)
        rendered = [tables(view)[family] for family in (4, 6)]
        problems = list(view.problems)
        self._rendered = (inputs_at, rendered, problems)
        return rendered, problems

    def sync_table(self, table: Table, check: bool = True) -> str | None:
        """Make the kernel hold `table`; what went wrong, or None. Unchanged since our last apply
        and `check` false: nothing is run at all. Changed: written, then listed once. Unchanged
        and `check`: listed, and written again only if the listing is not the one we left."""
        text = script(table)
        what = f"table {table.family} {table.name}"
        previous = self.applied.get(table.family)
        unchanged = previous is not None and previous[0] == text
        if unchanged and not check:
            return None
        try:
            if previous is not None and unchanged:
                if self.nft.list_table(table.family, table.name) == previous[1]:
                    return None
                log.warning("rules: %s was changed or removed behind our back; writing it again", what)
            self.nft.apply(text)
            self.applied[table.family] = (text, self.nft.list_table(table.family, table.name))
        except NftError as exc:
            self.applied.pop(table.family, None)
            return f"{what} is not programmed: {exc}"
        log.info("rules: %s programmed", what)
        return None

    def run_pass(self, snapshot: Snapshot, now: float | None = None) -> str | None:
        """One reconciliation from `snapshot` (at monotonic time `now`); the first failure, or None.
        The kernel's tables are listed only when PERIOD passed since the last check (a table that
        was not rendered anew is otherwise trusted to be as we left it)."""
        now = time.monotonic() if now is None else now
        rendered, problems = self._render(snapshot)
        check = self._checked is None or now - self._checked >= PERIOD
        failures = [f for f in (self.sync_table(t, check) for t in rendered) if f is not None]
        if check:
            self._checked = now
        self.problems.report(list(problems) + failures)
        return failures[0] if failures else None

    def run(self, stop: threading.Event, health: PartHealth) -> None:
        """The controller's loop: a pass on every change of the cache, and every PERIOD."""

        def one_pass(snapshot: Snapshot) -> tuple[bool, str]:
            failure = self.run_pass(snapshot)
            return (True, f"nftables tables programmed from revision {snapshot.revision}") if failure is None else (False, failure)

        reconcile_passes(self.cache, stop, health, PERIOD, one_pass)
