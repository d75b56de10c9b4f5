"""The rules controller: keeps the daemon's nftables tables (`ip calico`, `ip6 calico`) as the
datastore asks: NAT outgoing, the VXLAN port's guards and the tunnel-source masquerade
(node/nft_rules.py), and network policy (node/nft_policy.py): every local endpoint's chains, the
policy and profile chains they use, selector sets and the fail-closed dispatch.

Level-triggered, and cheap on the common change: the cache holds every IPAM block, so every pod
written anywhere in the cluster changes its version, but the rules read only pools, Nodes,
FelixConfigurations and the policy records (tiers, policies, profiles, network sets, workload
endpoints). A pass renders both tables from those records alone, again only when one of their keys
or revisions changed, and writes only what differs from what it wrote last (`nft_tables.delta`,
one transaction per family). Every PERIOD it lists each table with `nft -s list table` and writes
it whole when the listing differs from the one taken after our last write (someone flushed,
deleted or edited it). Nothing is changed before the first full list of the datastore is in the
cache (design rule 27): until then the tables a previous calico-node left keep working, and the
first write replaces them whole in one transaction. Only these two tables are ever written; every
other table (portmap's, iptables-nft's) is left alone (design rule 26).

Policy from a pod's first packet: the plugins' requests served by this daemon call
`endpoint_added` after the pod's interface exists and before its endpoint is written, and answer
only once its chains are in the kernel (`endpoint_removed` likewise on DEL, which then flushes the
addresses' conntrack entries). The endpoint is held as pending until the watch brings the write.
Enforcement begins once the profiles existing endpoints name but nobody created are created
(`resources.profiles.repair`: a missing profile denies, which would cut every pod written before
the plugin created profiles); the file `policy-enforced` beside the plugins' socket then tells an
exec'd plugin that finds no daemon to refuse ADD (error 11) rather than create a pod the
dispatch drops. It lives under the run directory, which a reboot clears along with the tables.

The tables are not removed when the daemon stops: NAT outgoing, the VXLAN filters and policy must
keep working across a restart of calico-node (the next daemon adopts them).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from calico_cni.dataplane import conntrack, nftables
from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane.nftables import NftError
from calico_cni.datastore.errors import DatastoreUnavailable
from calico_cni.datastore.store import Datastore
from calico_cni.files import replace_file
from calico_cni.model import keys
from calico_cni.model.kinds.policy import PROFILE
from calico_cni.model.resource import prefix
from calico_cni.node.cluster_view import FELIX_CONFIGURATIONS, ClusterView
from calico_cni.node.nft_policy import PolicyCompiler, PolicySettings, endpoint_chains
from calico_cni.node.nft_rules import tables
from calico_cni.node.nft_tables import FAMILIES, NotIncremental, Table, delta, script
from calico_cni.node.parts import PartHealth, ProblemLog, reconcile_passes
from calico_cni.node.policy_model import PREFIXES as POLICY_PREFIXES
from calico_cni.node.policy_view import PolicyView
from calico_cni.node.syncer import Cache, Snapshot
from calico_cni.protocol.errors import TRY_AGAIN_LATER, CniError
from calico_cni.resources import profiles

log = logging.getLogger(__name__)

# How often a pass runs with no change in the datastore: it repairs a table flushed or edited
# behind our back.
PERIOD = 5.0
# How long a plugin request waits for the first programming of policy (a daemon just started, not
# yet in sync) before answering "try again later".
SYNC_WAIT = 10.0
# How long an endpoint written (or deleted) by a request is held without the watch bringing it.
PENDING_TTL = 60.0

# The records the rules are rendered from (never the IPAM blocks: they change with every pod).
INPUTS = (keys.POOLS, keys.NODES, FELIX_CONFIGURATIONS)
# What the syncer must watch for policy, beyond what the other parts watch.
WATCHED = POLICY_PREFIXES
PROFILE_PREFIX = prefix(PROFILE)


class Nft(Protocol):
    """What the controller needs of nft (dataplane/nftables.py; a fake in unit tests)."""

    def apply(self, text: str) -> None: ...

    def list_table(self, family: str, name: str) -> str | None: ...

    def dropping_chains(self) -> list[str]: ...

    def generation(self) -> int: ...


class _Module:
    """dataplane.nftables's functions as an `Nft`."""

    def apply(self, text: str) -> None:
        nftables.apply(text)

    def list_table(self, family: str, name: str) -> str | None:
        return nftables.list_table(family, name)

    def dropping_chains(self) -> list[str]:
        return nftables.dropping_chains()

    def generation(self) -> int:
        return nftables.generation()


@dataclass(frozen=True)
class Enforcement:
    """Network policy's settings: `marker` the file telling exec'd plugins enforcement is on,
    `connect` a datastore for creating the profiles existing endpoints lack."""

    marker: str
    connect: Callable[[], Datastore]


@dataclass(frozen=True)
class _Pending:
    """An endpoint a request wrote (`value`) or deleted (None), until the watch brings that write:
    a record of the key with a revision above `revision`, or its absence for a deletion."""

    value: bytes | None
    revision: int
    expires: float
    serial: int


class _Stored:
    """A pending endpoint as the cache would hold it (what policy_model reads). Its mod_revision is
    negative and unique to the request, so PolicyView's memo never mistakes it for another
    version of the record."""

    def __init__(self, value: bytes, serial: int) -> None:
        self.value, self.mod_revision = value, -serial


@dataclass
class _Written:
    """What we last wrote to one family's table; the kernel's listing of it once a check took one
    (None until then), and the ruleset generation at which the kernel was known to hold it (None:
    unknown, e.g. another commit came between ours and the listing)."""

    table: Table
    listing: str | None
    generation: int | None


class RulesController:
    """Keeps this node's `ip calico` and `ip6 calico` tables as rendered from the cache (and, with
    `enforcement`, network policy in them)."""

    def __init__(self, nodename: str, cache: Cache, nft: Nft | None = None, enforcement: Enforcement | None = None) -> None:
        self.nodename = nodename
        self.cache = cache
        self.nft: Nft = nft if nft is not None else _Module()
        self.enforcement = enforcement
        self.problems = ProblemLog(log, "rules")
        # One writer of the tables at a time: the loop and the plugins' requests.
        self.lock = threading.RLock()
        self.written: dict[str, _Written] = {}
        self.compiler = PolicyCompiler()
        self.pending: dict[str, _Pending] = {}
        self._serials = itertools.count(1)
        # PolicyView's decodings by key and revision, kept from pass to pass.
        self._policy_memo: dict = {}
        # Set once policy is in the kernel (the requests wait for it).
        self.enforcing = threading.Event()
        self._profiles_repaired = False
        # The profiles the repair created, until the watch brings them (policy waits for them).
        self._awaited: set[str] = set()
        # The cache version last looked at and the inputs' (key, mod_revision)s at it.
        self._inputs: tuple[int, tuple[tuple[str, int], ...]] | None = None
        # The last rendering: what it came from, the tables and the problems found.
        self._rendered: tuple[object, list[Table], list[str]] | None = None
        # When the kernel's tables were last listed and compared (monotonic), None: never.
        self._checked: float | None = None
        # Other tables' forward and input chains whose policy is drop, found at the first pass.
        self._foreign: list[str] | None = None

    # --- rendering ------------------------------------------------------------------------------

    def _inputs_at(self, snapshot: Snapshot) -> tuple[tuple[str, int], ...]:
        """The (key, mod_revision) of every record the rules read, once per cache version."""
        if self._inputs is None or self._inputs[0] != snapshot.version:
            prefixes = INPUTS + (POLICY_PREFIXES if self.enforcement is not None else ())
            found = tuple(sorted((key, kv.mod_revision) for key, kv in snapshot.items.items() if key.startswith(prefixes)))
            self._inputs = (snapshot.version, found)
        return self._inputs[1]

    def _pending_now(self, snapshot: Snapshot, now: float) -> dict[str, _Pending]:
        """The pending endpoints the cache has not caught up with (the others are forgotten)."""
        for key, entry in list(self.pending.items()):
            kv = snapshot.items.get(key)
            arrived = (kv is None) if entry.value is None else (kv is not None and kv.mod_revision > entry.revision)
            if arrived or now >= entry.expires:
                del self.pending[key]
        return dict(self.pending)

    def _policy_on(self, snapshot: Snapshot) -> bool:
        """Whether policy goes into the tables: enforcement configured, the missing profiles created
        and in the cache."""
        if self.enforcement is None or not self._profiles_repaired:
            return False
        self._awaited = {key for key in self._awaited if key not in snapshot.items}
        return not self._awaited

    def _render(self, snapshot: Snapshot, now: float) -> tuple[list[Table], list[str]]:
        """Both tables and what could not be read; kept while none of the records read changed (a
        block's change leaves them as they are)."""
        inputs_at = self._inputs_at(snapshot)
        pending = self._pending_now(snapshot, now)
        policy_on = self._policy_on(snapshot)
        source = (inputs_at, tuple(sorted((k, p.value) for k, p in pending.items())), policy_on)
        if self._rendered is not None and self._rendered[0] == source:
            return self._rendered[1], self._rendered[2]
        items = {key: snapshot.items[key] for key, _ in inputs_at}
        view = ClusterView.read({k: v for k, v in items.items() if k.startswith(INPUTS)}, self.nodename)
        problems = list(view.problems)
        rendered = []
        policy_view = None
        if policy_on:
            for key, entry in pending.items():
                if entry.value is None:
                    items.pop(key, None)
                else:
                    items[key] = _Stored(entry.value, entry.serial)  # type: ignore[assignment]
            policy_view = PolicyView.read({k: v for k, v in items.items() if k.startswith(POLICY_PREFIXES)}, self._policy_memo)
            problems += policy_view.problems
            settings = PolicySettings(endpoint_to_host_action=view.felix.endpoint_to_host_action, vxlan_port=view.felix.vxlan_port)
        nat_and_vxlan = tables(view)
        for family in FAMILIES:
            table = nat_and_vxlan[family]
            if policy_view is not None:
                section = self.compiler.section(policy_view, self.nodename, family, settings)
                table = Table(table.family, (*table.sections, section))
                problems += self.compiler.problems
            rendered.append(table)
        problems = list(dict.fromkeys(problems))
        self._rendered = (source, rendered, problems)
        return rendered, problems

    # --- writing --------------------------------------------------------------------------------

    def _generation(self) -> int | None:
        """The ruleset's generation (None: unreadable; then every check lists the tables)."""
        try:
            return self.nft.generation()
        except NftError as exc:
            log.debug("rules: %s", exc)
            return None

    def _write(self, tables: list[Table], text: str) -> None:
        """Apply `text` (making the kernel hold `tables`; under the lock) and remember them: with the
        generation after it when the kernel counted only our commit meanwhile, so the next check
        may trust that the tables are exactly what we wrote."""
        before = self._generation()
        self.nft.apply(text)
        after = self._generation()
        exclusive = before is not None and after == before + 1
        if exclusive:
            # Only our commit came in between: the other tables we know are still as they were.
            for other in self.written.values():
                if other.generation == before:
                    other.generation = after
        for table in tables:
            self.written[table.family] = _Written(table, None, after if exclusive else None)

    def sync_tables(self, tables: list[Table]) -> str | None:
        """Make the kernel hold `tables` (under the lock), in one nft transaction: one nft run for
        both families; what went wrong, or None. A table is written whole the first time (and after
        a failure, or when a check found it changed); otherwise only the difference from what we
        wrote last; one without a difference is left out."""
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
                self._write(changed, "".join(script(t) if text is None else text for t, text in changes))
            except NftError:
                if all(text is None for _, text in changes):
                    raise
                log.warning("rules: a partial write of %s was refused; writing whole", what)
                self._write(changed, "".join(script(t) for t in changed))
        except NftError as exc:
            for table in changed:
                self.written.pop(table.family, None)
            return f"{what} not programmed: {exc}"
        how = ", ".join("whole" if text is None else f"{text.count(chr(10))} changes" for _, text in changes)
        log.info("rules: %s programmed (%s; %.0f ms)", what, how, (time.monotonic() - started) * 1000)
        return None

    def check_table(self, family: str) -> str | None:
        """Compare the kernel's table of `family` with what we wrote last and write it whole when
        it differs; what went wrong, or None. Cheap when nothing was committed since the last look
        (the ruleset's generation has not moved): no listing. The lock is not held while nft lists
        the table (most of a second for a large one): a write meanwhile makes this check moot."""
        with self.lock:
            written = self.written.get(family)
        if written is None:
            return None  # not written yet, or the last write failed: the next pass writes it whole
        what = f"table {family} {written.table.name}"
        generation = self._generation()
        if written.listing is not None and generation is not None and generation == written.generation:
            return None
        try:
            listing = self.nft.list_table(family, written.table.name)
        except NftError as exc:
            return f"{what} cannot be checked: {exc}"
        after = self._generation()
        with self.lock:
            if self.written.get(family) is not written:
                return None  # written meanwhile: the next check looks at that
            if written.listing is None:
                if generation is not None and generation == written.generation == after:
                    # Our write is the last commit, before and after the listing: it is ours.
                    written.listing = listing
                    return None
                # Something else committed since our write and before a listing we could compare
                # with: only a whole write makes the table certain again.
                log.info("rules: %s: other commits since our last write; writing it whole to be sure", what)
            elif listing == written.listing:
                written.generation = generation
                return None
            else:
                log.warning("rules: %s was changed or removed behind our back; writing it whole", what)
            try:
                self._write([written.table], script(written.table))
            except NftError as exc:
                self.written.pop(family, None)
                return f"{what} is not programmed: {exc}"
        return None

    def _repair_profiles(self) -> str | None:
        """Create the profiles existing endpoints name but nobody created, once, before policy is
        enforced; what went wrong, or None (then policy goes on at the next pass, when the watch
        has brought the new profiles)."""
        assert self.enforcement is not None
        try:
            store = self.enforcement.connect()
            try:
                repaired = profiles.repair(store)
            finally:
                store.client.close()
        except DatastoreUnavailable as exc:
            return f"network policy is not enforced yet: cannot create the profiles endpoints lack: {exc}"
        self._awaited = {PROFILE_PREFIX + entry.name for entry in repaired.created}
        for entry in repaired.created:
            log.info("rules: created profile %s (named by %s)", entry.name, ", ".join(entry.endpoints[:5]))
        for entry in repaired.unknown:
            log.warning(
                "rules: profile %s does not exist and its content is unknown: endpoints naming it (%s) are denied until it is created",
                entry.name,
                ", ".join(entry.endpoints[:5]),
            )
        self._profiles_repaired = True
        return None

    def _mark_enforcing(self) -> str | None:
        """Record that policy is in the kernel: the requests waiting for it go on, and the marker
        file tells exec'd plugins."""
        assert self.enforcement is not None
        if not self.enforcing.is_set():
            try:
                replace_file(self.enforcement.marker, "network policy is enforced on this node by calico-node\n")
            except OSError as exc:
                return f"cannot write {self.enforcement.marker} ({exc.strerror or exc}): exec'd plugins would create pods while calico-node is down"
            log.info("rules: network policy enforced; %s written", self.enforcement.marker)
            self.enforcing.set()
        return None

    def _dropping_chains(self) -> list[str]:
        """Reported once at start: what another table drops whatever our policy allows."""
        try:
            found = self.nft.dropping_chains()
        except NftError as exc:
            return [f"cannot list other tables' chains: {exc}"]
        return [
            f"chain {chain} of another table has policy drop: it drops pod traffic calico-node's policy allows (an accept here does not stop it)"
            for chain in found
        ]

    def run_pass(self, snapshot: Snapshot, now: float | None = None, check: bool = True) -> str | None:
        """One reconciliation from `snapshot` (at monotonic time `now`); the first failure, or None.
        With `check` (the loop's passes, not a request's), the kernel's tables are compared with
        what we wrote once PERIOD passed since the last check."""
        now = time.monotonic() if now is None else now
        with self.lock:
            failures = []
            if self.enforcement is not None and not self._profiles_repaired:
                failure = self._repair_profiles()
                if failure is not None:
                    failures.append(failure)
            if self.enforcement is not None and not self._policy_on(snapshot):
                # Nothing is written until policy can be: the tables a previous calico-node left
                # keep enforcing rather than be replaced by tables without policy.
                failure = failures[0] if failures else f"waiting for the profiles created for existing endpoints: {', '.join(sorted(self._awaited))}"
                self.problems.report([failure])
                return failure
            rendered, problems = self._render(snapshot, now)
            failure = self.sync_tables(rendered)
            if failure is not None:
                failures.append(failure)
            if self.enforcement is not None and self._foreign is None:
                self._foreign = self._dropping_chains()
            problems = problems + (self._foreign or [])
            if not failures and self.enforcement is not None:
                failure = self._mark_enforcing()
                if failure is not None:
                    failures.append(failure)
        if check and (self._checked is None or now - self._checked >= PERIOD):
            self._checked = now
            failures += [f for f in (self.check_table(family) for family in FAMILIES.values()) if f is not None]
        with self.lock:
            self.problems.report(list(problems) + failures)
        return failures[0] if failures else None

    # --- the plugins' requests ------------------------------------------------------------------

    def _request_pass(self, key: str, value: bytes | None, what: str) -> None:
        """Hold `key` as pending with `value` and write the tables now, within SYNC_WAIT."""
        if not self.enforcing.wait(SYNC_WAIT):
            raise CniError(
                TRY_AGAIN_LATER,
                f"calico-node has not programmed network policy yet ({what})",
                "it is not in sync with the datastore or cannot write its nftables tables: see `calico-node -felix-ready` and its log",
            )
        with self.lock:
            snapshot = self.cache.snapshot()
            now = time.monotonic()
            self.pending[key] = _Pending(value, snapshot.revision, now + PENDING_TTL, next(self._serials))
            failure = self.run_pass(snapshot, now, check=False)
        if failure is not None:
            raise CniError(TRY_AGAIN_LATER, f"calico-node could not program network policy ({what})", failure)

    def endpoint_added(self, key: str, doc: dict) -> None:
        """A request is about to write the endpoint `doc` at `key`: its chains go into the kernel
        first. Raises CniError (try again later) when they cannot."""
        if self.enforcement is None:
            return
        interface = (doc.get("spec") or {}).get("interfaceName") or ""
        self._request_pass(key, json.dumps(doc).encode(), f"endpoint {key.rsplit('/', 2)[-2]}/{key.rsplit('/', 1)[-1]} on {interface}")
        ingress, egress = endpoint_chains(interface)
        written = {c.name for w in self.written.values() for s in w.table.sections for c in s.chains}
        if ingress not in written or egress not in written:
            with self.lock:
                self.pending.pop(key, None)
            raise CniError(TRY_AGAIN_LATER, f"calico-node did not program the chains of {interface}", "see calico-node's log")

    def endpoint_abandoned(self, key: str) -> None:
        """The request that called `endpoint_added` failed before writing the endpoint: forget it
        (the next pass drops its chains)."""
        with self.lock:
            self.pending.pop(key, None)

    def endpoint_removed(self, key: str, addresses: list[str]) -> None:
        """A request deleted the endpoint at `key`: its chains leave the kernel, then the conntrack
        entries of its addresses go, before the request answers. Never fails the DEL: a retried DEL
        finds no endpoint and could not do better, and the next pass removes the chains anyway;
        what went wrong is logged."""
        if self.enforcement is None:
            return
        name = f"{key.rsplit('/', 2)[-2]}/{key.rsplit('/', 1)[-1]}"
        if self.enforcing.is_set():
            try:
                self._request_pass(key, None, f"removing endpoint {name}")
            except CniError as exc:
                log.error("rules: %s; its chains go at the next pass", exc)
        try:
            conntrack.flush_addresses([ipaddress.ip_interface(a).ip for a in addresses])
        except (DataplaneError, ValueError) as exc:
            log.error("rules: the connections of endpoint %s (%s) were not flushed: %s", name, ", ".join(addresses), exc)

    def run(self, stop: threading.Event, health: PartHealth) -> None:
        """The controller's loop: a pass on every change of the cache, and every PERIOD."""

        def one_pass(snapshot: Snapshot) -> tuple[bool, str]:
            failure = self.run_pass(snapshot)
            return (True, f"nftables tables programmed from revision {snapshot.revision}") if failure is None else (False, failure)

        reconcile_passes(self.cache, stop, health, PERIOD, one_pass)
