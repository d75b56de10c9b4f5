"""The rules controller: keeps the daemon's nftables tables (`ip calico`, `ip6 calico`) as the
datastore asks: NAT outgoing, the VXLAN port's guards and the tunnel-source masquerade
(node/nft_rules.py), and network policy (node/nft_policy.py): every local endpoint's chains, the
policy and profile chains they use, selector sets and the fail-closed dispatch. node/nft_writer.py
writes them (one transaction for both families, deltas) and finds tampering.

Level-triggered, and cheap on the common change: the cache holds every IPAM block, so every pod
written anywhere in the cluster changes its version, but the rules read only pools, Nodes,
FelixConfigurations and the policy records (tiers, policies, profiles, network sets, workload
endpoints). A pass renders both tables from those records alone, again only when one of their keys
or revisions changed, and writes only what differs. The tables are checked against the kernel every
PERIOD, and after a write (to adopt the listing that later checks compare with) at the loop's next
pass once requests have been quiet for ADOPT_QUIET (else at the next PERIOD). Nothing
is changed before the first full list of the datastore is in the cache (design rule 27): until then
the tables a previous calico-node left keep working, and the first write replaces them whole in one
transaction. Only these two tables are ever written; every other table (portmap's, iptables-nft's)
is left alone (design rule 26).

Policy from a pod's first packet: the plugins' requests served by this daemon call
`endpoint_added` after the pod's interface exists and before its endpoint is written, and answer
only once its chains are in the kernel (`endpoint_removed` likewise on DEL, which then flushes the
addresses' conntrack entries). The endpoint is held as pending until the watch brings the write. An
address that leaves this node's endpoints any other way while calico-node runs (`calicoctl delete`,
a journal replay) has its conntrack entries flushed by the pass that sees it go, so a pod given it
later inherits no established flow (a DEL while calico-node is down is not seen: see
docs/calico-node.md). Enforcement begins once the profiles existing endpoints name but nobody created
are created (`resources.profiles.repair`: a missing profile denies, which would cut every pod
written before the plugin created profiles); the file `policy-enforced` beside the plugins' socket
then tells an exec'd plugin that finds no daemon to refuse ADD (error 11) rather than create a pod
the dispatch drops. It lives under the run directory, which a reboot clears along with the tables.

The tables are not removed when the daemon stops: NAT outgoing, the VXLAN filters and policy must
keep working across a restart of calico-node (the next daemon adopts them).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from calico_cni.dataplane import conntrack
from calico_cni.dataplane.errors import DataplaneError
from calico_cni.dataplane.nftables import NftError
from calico_cni.datastore.errors import DatastoreError
from calico_cni.datastore.store import Datastore
from calico_cni.files import replace_file
from calico_cni.model import keys
from calico_cni.model.kinds.policy import PROFILE
from calico_cni.model.resource import prefix
from calico_cni.node.cluster_view import FELIX_CONFIGURATIONS, ClusterView
from calico_cni.node.nft_policy import PolicyCompiler, PolicySettings, endpoint_chains
from calico_cni.node.nft_rules import tables
from calico_cni.node.nft_tables import FAMILIES, Table
from calico_cni.node.nft_writer import Nft, NftModule, TableWriter
from calico_cni.node.parts import PartHealth, ProblemLog, reconcile_passes
from calico_cni.node.policy_model import PREFIXES as POLICY_PREFIXES
from calico_cni.node.policy_view import PolicyView
from calico_cni.node.syncer import Cache, Snapshot
from calico_cni.protocol.errors import TRY_AGAIN_LATER, CniError
from calico_cni.resources import profiles
from calico_cni.timing import timed

log = logging.getLogger(__name__)

# How often a pass runs with no change in the datastore: it repairs a table flushed or edited
# behind our back.
PERIOD = 5.0
# How long a plugin request waits for the first programming of policy (a daemon just started, not
# yet in sync) before answering "try again later"; also its bound on waiting for the tables.
SYNC_WAIT = 10.0
# How long an ADD waits for the watch to bring a profile its endpoint names (the plugin has just
# created it): a missing profile denies.
PROFILE_WAIT = 2.0
# How long an endpoint written (or deleted) by a request is held without the watch bringing it.
PENDING_TTL = 60.0
# How quiet requests must have been for a loop pass to list the tables and adopt what they wrote
# (otherwise the next PERIOD's check does): an `nft` listing process that exits right after a
# commit that deleted chains holds the next commit back about 10 ms (kernel 6.18), which a burst
# of pods would pay at every request.
ADOPT_QUIET = 0.5
# How long policy waits for the profiles the start-up repair created to come through the watch.
AWAIT_PROFILES = 30.0

# The records the rules are rendered from (never the IPAM blocks: they change with every pod).
INPUTS = (keys.POOLS, keys.NODES, FELIX_CONFIGURATIONS)
# What the syncer must watch for policy, beyond what the other parts watch.
WATCHED = POLICY_PREFIXES
PROFILE_PREFIX = prefix(PROFILE)


@dataclass(frozen=True)
class Enforcement:
    """Network policy's settings: `marker` the file telling exec'd plugins enforcement is on,
    `connect` a datastore for creating the profiles existing endpoints lack."""

    marker: str
    connect: Callable[[], Datastore]


@dataclass(frozen=True)
class _Pending:
    """An endpoint a request wrote (`value`) or deleted (None), until the watch brings that write:
    a record of the key with a revision above `revision` (or, for a deletion, none)."""

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


@functools.lru_cache(maxsize=65536)
def _address(network: object) -> str:
    """The address of an endpoint's ipNetworks entry (an address with a prefix), as text. Cached:
    every pass reads every local endpoint's (0.15 ms per 100 endpoints parsed again each time)."""
    return str(ipaddress.ip_interface(str(network)).ip)


def _endpoint_name(key: str) -> str:
    """`<namespace>/<name>` of a workload endpoint's key."""
    return "/".join(key.rsplit("/", 2)[-2:])


class RulesController:
    """Keeps this node's `ip calico` and `ip6 calico` tables as rendered from the cache (and, with
    `enforcement`, network policy in them)."""

    def __init__(self, nodename: str, cache: Cache, nft: Nft | None = None, enforcement: Enforcement | None = None) -> None:
        self.nodename = nodename
        self.cache = cache
        self.nft: Nft = nft if nft is not None else NftModule()
        self.enforcement = enforcement
        self.problems = ProblemLog(log, "rules")
        # One writer of the tables at a time: the loop and the plugins' requests.
        self.lock = threading.RLock()
        self.writer = TableWriter(self.nft, self.lock)
        self.compiler = PolicyCompiler()
        self.pending: dict[str, _Pending] = {}
        self._serials = itertools.count(1)
        # Requests' endpoints not yet taken into a pass (key -> (value, serial)), and the highest
        # serial a successful pass took in: concurrent requests (a burst of pods) share one pass,
        # the first to get the lock programming every endpoint registered so far (`_request_pass`).
        self._intake_lock = threading.Lock()
        self._intake: dict[str, tuple[bytes | None, int]] = {}
        self._programmed_through = 0
        # PolicyView's decodings by key and revision, kept from pass to pass.
        self._policy_memo: dict = {}
        # Set once policy is in the kernel (the requests wait for it).
        self.enforcing = threading.Event()
        self._profiles_repaired = False
        # The profiles the repair created, until the watch brings them (policy waits for them, at
        # most until the deadline: a profile deleted meanwhile must not hold policy back for good).
        self._awaited: set[str] = set()
        self._awaited_until = 0.0
        # The cache version last looked at and the inputs' (key, mod_revision)s at it.
        self._inputs: tuple[int, tuple[tuple[str, int], ...]] | None = None
        # The last rendering: what it came from, the tables, the problems found, and the addresses
        # of this node's endpoints in it.
        self._rendered: tuple[object, list[Table], list[str], frozenset[str]] | None = None
        # This node's endpoint addresses as last written, and those that left since and still need
        # their conntrack entries flushed (by the loop, off the lock).
        self._local_addresses: frozenset[str] = frozenset()
        self._to_flush: set[str] = set()
        # Conntrack flushes, shared as passes are (`_flush`): the addresses waiting (address -> why)
        # and one walk of the table at a time.
        self._flush_intake_lock = threading.Lock()
        self._flush_intake: dict[str, str] = {}
        self._flush_lock = threading.Lock()
        # When the kernel's tables were last checked (monotonic), None: never.
        self._checked: float | None = None
        # When a request last wrote the tables (monotonic; see ADOPT_QUIET).
        self._request_written = float("-inf")
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
        """The pending endpoints the cache has not caught up with (the others are forgotten): a
        write of the key after the request's (or, for a deletion, no record) is the watch's word."""
        for key, entry in list(self.pending.items()):
            kv = snapshot.items.get(key)
            newer = kv is not None and kv.mod_revision > entry.revision
            arrived = newer or (entry.value is None and kv is None)
            # Expired only while the watch moves: a stalled watch must not drop a new pod's chains.
            if arrived or (now >= entry.expires and snapshot.revision > entry.revision):
                del self.pending[key]
        return dict(self.pending)

    def _policy_on(self, snapshot: Snapshot, now: float) -> bool:
        """Whether policy goes into the tables: enforcement configured, the missing profiles created
        and in the cache (or waited for long enough)."""
        if self.enforcement is None or not self._profiles_repaired:
            return False
        self._awaited = {key for key in self._awaited if key not in snapshot.items}
        if self._awaited and now >= self._awaited_until:
            log.warning("rules: the created profiles %s never came through the watch; enforcing without them", ", ".join(sorted(self._awaited)))
            self._awaited = set()
        return not self._awaited

    @timed("render")
    def _render(self, snapshot: Snapshot, now: float) -> tuple[list[Table], list[str], frozenset[str]]:
        """Both tables, what could not be read and this node's endpoint addresses; kept while none of
        the records read changed (a block's change leaves them as they are)."""
        inputs_at = self._inputs_at(snapshot)
        pending = self._pending_now(snapshot, now)
        policy_on = self._policy_on(snapshot, now)
        source = (inputs_at, tuple(sorted((k, p.value) for k, p in pending.items())), policy_on)
        if self._rendered is not None and self._rendered[0] == source:
            return self._rendered[1], self._rendered[2], self._rendered[3]
        items = {key: snapshot.items[key] for key, _ in inputs_at}
        view = ClusterView.read({k: v for k, v in items.items() if k.startswith(INPUTS)}, self.nodename)
        problems = list(view.problems)
        rendered = []
        policy_view = None
        local: frozenset[str] = frozenset()
        if policy_on:
            for key, entry in pending.items():
                if entry.value is None:
                    items.pop(key, None)
                else:
                    items[key] = _Stored(entry.value, entry.serial)  # type: ignore[assignment]
            policy_view = PolicyView.read({k: v for k, v in items.items() if k.startswith(POLICY_PREFIXES)}, self._policy_memo)
            problems += policy_view.problems
            local = frozenset(_address(n) for e in policy_view.endpoints.values() if e.node == self.nodename for n in e.ip_networks)
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
        self._rendered = (source, rendered, problems, local)
        return rendered, problems, local

    # --- policy's start -------------------------------------------------------------------------

    def _repair_profiles(self, now: float) -> str | None:
        """Create the profiles existing endpoints name but nobody created, once, before policy is
        enforced; what went wrong, or None (then policy goes on once the watch has brought the new
        profiles)."""
        assert self.enforcement is not None
        try:
            store = self.enforcement.connect()
            try:
                repaired = profiles.repair(store)
            finally:
                store.client.close()
        except DatastoreError as exc:
            return f"network policy is not enforced yet: cannot create the profiles endpoints lack: {exc}"
        self._awaited = {PROFILE_PREFIX + entry.name for entry in repaired.created}
        self._awaited_until = now + AWAIT_PROFILES
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

    def _dropping_chains(self) -> list[str] | None:
        """Reported once at start: what another table drops whatever our policy allows (None: the
        chains could not be listed; tried again next pass)."""
        try:
            found = self.nft.dropping_chains()
        except NftError as exc:
            log.warning("rules: cannot list other tables' chains: %s", exc)
            return None
        return [
            f"chain {chain} of another table has policy drop: it drops pod traffic calico-node's policy allows (an accept here does not stop it)"
            for chain in found
        ]

    # --- passes ---------------------------------------------------------------------------------

    def _write_pass(self, snapshot: Snapshot, now: float) -> tuple[list[str], list[str]]:
        """Render and write (under the lock): (failures, problems)."""
        failures: list[str] = []
        if self.enforcement is not None and not self._profiles_repaired:
            failure = self._repair_profiles(now)
            if failure is not None:
                failures.append(failure)
        # A request may have written from a newer snapshot meanwhile: never go back from it.
        latest = self.cache.snapshot()
        if latest.version > snapshot.version:
            snapshot = latest
        if self.enforcement is not None and not self._policy_on(snapshot, now):
            # Nothing is written until policy can be: the tables a previous calico-node left keep
            # enforcing rather than be replaced by tables without policy.
            return failures or [f"waiting for the profiles created for existing endpoints: {', '.join(sorted(self._awaited))}"], []
        rendered, problems, local = self._render(snapshot, now)
        failure = self.writer.sync(rendered)
        if failure is not None:
            failures.append(failure)
        else:
            self._to_flush |= self._local_addresses - local
            self._to_flush -= local
            self._local_addresses = local
        if self.enforcement is not None and self._foreign is None:
            self._foreign = self._dropping_chains()
        problems = problems + (self._foreign or [])
        if not failures and self.enforcement is not None:
            failure = self._mark_enforcing()
            if failure is not None:
                failures.append(failure)
        return failures, problems

    def run_pass(self, snapshot: Snapshot, now: float | None = None, check: bool = True) -> str | None:
        """One reconciliation from `snapshot` (at monotonic time `now`, or a newer one a request
        wrote from); the first failure, or None. With `check` (the loop's passes, not a request's),
        the kernel's tables are compared with what we wrote, when PERIOD passed since the last check
        or a table was written since its last listing and requests have been quiet for
        ADOPT_QUIET, and the addresses that left this node's
        endpoints have their conntrack entries flushed; both off the lock."""
        now = time.monotonic() if now is None else now
        with self.lock:
            failures, problems = self._write_pass(snapshot, now)
        if check:
            adopt = self.writer.unlisted() and time.monotonic() - self._request_written >= ADOPT_QUIET
            if self._checked is None or now - self._checked >= PERIOD or adopt:
                self._checked = now
                failures += [f for f in (self.writer.check(family) for family in FAMILIES.values()) if f is not None]
            with self.lock:
                # Still gone: an address handed to a new pod meanwhile keeps its fresh flows.
                gone, self._to_flush = self._to_flush - self._local_addresses, set()
            if gone:
                self._flush(sorted(gone), "left this node's endpoints")
        with self.lock:
            self.problems.report(list(problems) + failures)
        return failures[0] if failures else None

    @timed("conntrack")
    def _flush(self, addresses: list[str], why: str) -> None:
        """Delete the conntrack entries of `addresses` before returning (failures logged: a flow
        left over is accepted as established until it ends, no reason to stop anything else).

        Each flush walks the kernel's whole conntrack table (about 10 ms, however few entries), so
        concurrent callers share walks: each registers its addresses, and one flush at a time takes
        every address registered so far. A caller that finds nothing left to take had its addresses
        taken by a flush that started after it registered them, and that flush is over (it held the
        lock): a burst of DELs costs a few walks, not one each. A failed flush is logged for every
        address it took."""
        with self._flush_intake_lock:
            for address in addresses:
                self._flush_intake[address] = why
        with self._flush_lock:
            with self._flush_intake_lock:
                taken, self._flush_intake = self._flush_intake, {}
            if not taken:
                return
            try:
                conntrack.flush_addresses([ipaddress.ip_interface(a).ip for a in taken])
            except (DataplaneError, ValueError) as exc:
                # Not retried (as before sharing): an address handed to a new pod meanwhile must keep
                # its fresh flows.
                log.error("rules: the connections of %s (%s) were not flushed: %s", ", ".join(sorted(taken)), "; ".join(sorted(set(taken.values()))), exc)

    # --- the plugins' requests ------------------------------------------------------------------

    def _request_pass(self, key: str, value: bytes | None, what: str, deadline: float, interface: str | None = None) -> None:
        """Hold `key` as pending with `value` and write the tables now, by `deadline` (monotonic);
        with `interface`, the endpoint's chains must then be in the kernel."""
        if not self.enforcing.wait(max(0.0, deadline - time.monotonic())):
            raise CniError(
                TRY_AGAIN_LATER,
                f"calico-node has not programmed network policy yet ({what})",
                "it is not in sync with the datastore or cannot write its nftables tables: see `calico-node -felix-ready` and its log",
            )
        with self._intake_lock:
            # Drawn under the intake's lock: every serial up to the highest taken is in the intake.
            serial = next(self._serials)
            self._intake[key] = (value, serial)
        if not self._acquire(deadline):
            self._withdraw(key, serial)
            raise CniError(TRY_AGAIN_LATER, f"calico-node could not program network policy in time ({what})", "its nftables tables are busy; try again")
        try:
            if self._programmed_through < serial:
                self._pass_for_requests(what)
            if interface is not None:
                ingress, egress = endpoint_chains(interface)
                if not {ingress, egress} <= self.writer.chains():
                    self.pending.pop(key, None)
                    why = [p for p in (self._rendered[2] if self._rendered else []) if key in p or ingress[3:] in p]
                    raise CniError(TRY_AGAIN_LATER, f"calico-node did not program the chains of {what}", "; ".join(why) or "see calico-node's log")
        finally:
            self.lock.release()

    @timed("policy_lock")
    def _acquire(self, deadline: float) -> bool:
        """The tables' lock, by `deadline` (the time a request waits for the loop's pass or
        another request's is its own phase in the timing report)."""
        return self.lock.acquire(timeout=max(0.0, deadline - time.monotonic()))

    def _pass_for_requests(self, what: str) -> None:
        """Under the lock: every endpoint the requests registered so far becomes pending and is
        programmed in one pass. A burst of ADDs thus costs a few passes, not one per pod: a request
        whose serial a successful pass covered needs none of its own. A failed pass covers nobody:
        each request then runs its own (its endpoint stays pending)."""
        snapshot = self.cache.snapshot()
        now = time.monotonic()
        with self._intake_lock:
            taken, self._intake = self._intake, {}
        for key, (value, serial) in taken.items():
            self.pending[key] = _Pending(value, snapshot.revision, now + PENDING_TTL, serial)
        self._request_written = time.monotonic()
        try:
            failure = self.run_pass(snapshot, now, check=False)
        except Exception as exc:  # noqa: BLE001 - a bug of ours must answer 11, not a traceback
            log.exception("rules: programming policy for %s failed", what)
            failure = f"{type(exc).__name__}: {exc}"
        if failure is not None:
            raise CniError(TRY_AGAIN_LATER, f"calico-node could not program network policy ({what})", failure)
        if taken:
            self._programmed_through = max(self._programmed_through, max(serial for _, serial in taken.values()))

    def _withdraw(self, key: str, serial: int) -> None:
        """Take a request's endpoint out of the intake if no pass took it yet."""
        with self._intake_lock:
            if self._intake.get(key, (None, 0))[1] == serial:
                del self._intake[key]

    def _await_profiles(self, doc: dict, deadline: float) -> None:
        """Wait (until `deadline`) for the watch to bring the profiles `doc` names: the plugin has
        just created a new network's profile, and a missing profile denies."""
        names = [PROFILE_PREFIX + p for p in (doc.get("spec") or {}).get("profiles") or [] if isinstance(p, str)]
        snapshot = self.cache.snapshot()
        while any(name not in snapshot.items for name in names) and time.monotonic() < deadline:
            self.cache.wait(snapshot.version, max(0.0, deadline - time.monotonic()))
            snapshot = self.cache.snapshot()

    @timed("policy")
    def endpoint_added(self, key: str, doc: dict) -> None:
        """A request is about to write the endpoint `doc` at `key`: its chains go into the kernel
        first. Raises CniError (try again later) when they cannot."""
        if self.enforcement is None:
            return
        now = time.monotonic()
        self._await_profiles(doc, now + PROFILE_WAIT)
        interface = (doc.get("spec") or {}).get("interfaceName") or ""
        self._request_pass(key, json.dumps(doc).encode(), f"endpoint {_endpoint_name(key)} on {interface}", now + SYNC_WAIT, interface)

    def endpoint_abandoned(self, key: str) -> None:
        """The request that called `endpoint_added` failed before writing the endpoint: forget it
        (the next pass drops its chains)."""
        with self._intake_lock:
            self._intake.pop(key, None)
        with self.lock:
            self.pending.pop(key, None)

    @timed("policy")
    def endpoint_removed(self, key: str, addresses: list[str]) -> None:
        """A request deleted the endpoint at `key` (its veth is closed and unlisted already, its
        routes gone: the host's own traffic to the pod, which policy does not see, makes no entry
        after the flush): its chains
        leave the kernel, then the conntrack entries of its addresses go, before the request
        answers. Never fails the DEL: a retried DEL finds no endpoint and could not do better, and
        the next pass removes the chains anyway; what went wrong is logged."""
        if self.enforcement is None:
            return
        name = _endpoint_name(key)
        if self.enforcing.is_set():
            try:
                self._request_pass(key, None, f"removing endpoint {name}", time.monotonic() + SYNC_WAIT)
            except CniError as exc:
                log.error("rules: %s; its chains go at the next pass", exc)
        try:
            mine = {_address(a) for a in addresses}
        except (ValueError, TypeError) as exc:  # TypeError: an entry _address's cache cannot hash
            log.error("rules: endpoint %s has an address that is not one (%s); its connections are not flushed", name, exc)
            return
        with self.lock:
            self._to_flush -= mine
        self._flush(sorted(mine), f"endpoint {name} deleted")

    def run(self, stop: threading.Event, health: PartHealth) -> None:
        """The controller's loop: a pass on every change of the cache, and every PERIOD."""

        def one_pass(snapshot: Snapshot) -> tuple[bool, str]:
            failure = self.run_pass(snapshot)
            return (True, f"nftables tables programmed from revision {snapshot.revision}") if failure is None else (False, failure)

        reconcile_passes(self.cache, stop, health, PERIOD, one_pass)
