"""The routing controller of the bird backend: desired state is the BIRD configuration rendered
from the cache, actual state is the installed configuration and the running BIRD.

Level-triggered: every pass renders the whole configuration from the latest snapshot, installs it
only when the file does not hold that text already (checked with `bird -p` before it replaces the
old one, design rule 28), reloads BIRD with `configure` (never a restart for a change), and starts
BIRD when nothing answers on its socket (adopting one that already runs: a restarted calico-node
does not disturb the routes). Nothing happens before the first full list of the datastore is in
the cache (design rule 27). Every call to BIRD has a deadline, so a hung BIRD is reported, never
waited for; each problem is logged once while it lasts.
"""

from __future__ import annotations

import json
import logging
import threading

from calico_cni.dataplane.bird import Bird, BirdError
from calico_cni.model import keys
from calico_cni.model.records import CONFIRMED, Affinity, CorruptRecord
from calico_cni.node.bird_config import RoutingInputs, render
from calico_cni.node.parts import PartHealth, ProblemLog, reconcile_passes
from calico_cni.node.syncer import Cache, Snapshot

log = logging.getLogger(__name__)

# The resource kinds the configuration is rendered from, by their etcd plural.
_NODES, _BGP_CONFIGURATIONS, _PEERS, _FILTERS, _POOLS = "nodes", "bgpconfigurations", "bgppeers", "bgpfilters", "ippools"
_KINDS = (_NODES, _BGP_CONFIGURATIONS, _PEERS, _FILTERS, _POOLS)

# How often a pass runs with no change in the datastore: it restarts a BIRD that died and repairs a
# configuration file changed behind our back.
PERIOD = 2.0


def watched(node: str) -> tuple[str, ...]:
    """The prefixes the routing controller of `node` needs in the cache (the syncer watches them):
    those kinds and the node's own block affinities; not workload endpoints, blocks or handles,
    which change with every pod (every node would otherwise receive every pod's writes)."""
    return (*(f"{keys.RESOURCES}{plural}/" for plural in _KINDS), keys.host_affinities(node))


def _resources(snapshot: Snapshot, problems: list[str]) -> dict[str, dict[str, dict]]:
    """The cached resources the configuration depends on: plural -> name -> document."""
    out: dict[str, dict[str, dict]] = {plural: {} for plural in _KINDS}
    for key, kv in snapshot.items.items():
        if not key.startswith(keys.RESOURCES):
            continue
        plural, _, name = key[len(keys.RESOURCES) :].partition("/")
        if plural not in out or not name or "/" in name:
            continue
        try:
            doc = json.loads(kv.value)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            problems.append(f"{key}: not a JSON object; left out of the BIRD configuration")
            continue
        out[plural][name] = doc
    return out


def _confirmed_blocks(snapshot: Snapshot, node: str, problems: list[str]) -> list[str]:
    """The CIDRs of `node`'s confirmed block affinities."""
    prefix = keys.host_affinities(node)
    blocks = []
    for key, kv in snapshot.items.items():
        if not key.startswith(prefix):
            continue
        try:
            affinity = Affinity.from_kv(key, kv.value, kv.mod_revision)
        except CorruptRecord as exc:
            problems.append(f"{exc}; its block is not advertised")
            continue
        if affinity.state == CONFIRMED and not affinity.deleted:
            blocks.append(affinity.cidr)
    return sorted(blocks)


def inputs_from(snapshot: Snapshot, node: str, router_id: str | None) -> tuple[RoutingInputs, list[str]]:
    """What the BIRD configuration of `node` is rendered from, read off one cache snapshot, and the
    records that could not be read."""
    problems: list[str] = []
    found = _resources(snapshot, problems)
    inputs = RoutingInputs(
        node=node,
        nodes=found[_NODES],
        bgp_configurations=found[_BGP_CONFIGURATIONS],
        peers=[found[_PEERS][name] for name in sorted(found[_PEERS])],
        filters=found[_FILTERS],
        pools=[found[_POOLS][name] for name in sorted(found[_POOLS])],
        blocks=_confirmed_blocks(snapshot, node, problems),
        router_id=router_id,
    )
    return inputs, problems


class RoutingController:
    """Keeps this node's BIRD running with the configuration the datastore asks for."""

    def __init__(self, node: str, router_id: str | None, cache: Cache, bird: Bird) -> None:
        self.node = node
        self.router_id = router_id
        self.cache = cache
        self.bird = bird
        self.problems = ProblemLog(log, "routing")
        # The text the running BIRD was told to load (None: not known, e.g. a BIRD adopted at
        # start, which gets one `configure` to be sure).
        self.loaded: str | None = None
        # The last rendering and the revisions of the records it came from: a pass with nothing
        # it reads changed (every PERIOD, and on every change of the IPAM blocks the other parts
        # watch) only checks BIRD and its file, it does not render again.
        self._rendered: tuple[tuple, str, list[str]] | None = None
        self._prefixes = watched(node)

    def apply(self, text: str) -> str | None:
        """Make BIRD run `text`; what went wrong, or None. The file is written only when it does
        not hold `text` already (changed in the datastore, or behind our back); BIRD is started
        when nothing answers on its socket, else reloaded after a write or when it was not told
        this text yet."""
        changed = not self._file_holds(text)
        if changed:
            try:
                refused = self.bird.install(text)
            except (BirdError, OSError) as exc:
                return f"BIRD's configuration {self.bird.config} is not installed: {exc}"
            if refused is not None:
                return f"BIRD refused the rendered configuration (the running one is kept): {refused}"
        try:
            started = self.bird.start()
        except BirdError as exc:
            return f"BIRD is not running or does not answer: {exc}"
        if started:
            if self.loaded is None:  # the first start of this calico-node: nothing went wrong
                log.info("routing: BIRD started")
            else:
                log.warning("routing: BIRD was no longer running (it died or was stopped); started it again")
        elif changed or self.loaded != text:
            problem = self.bird.configure()
            if problem is not None:
                return f"BIRD did not load the new configuration: {problem}"
            log.info("routing: BIRD reconfigured")
        self.loaded = text
        return None

    def _file_holds(self, text: str) -> bool:
        try:
            with open(self.bird.config, encoding="utf-8") as f:
                return f.read() == text
        except (OSError, UnicodeDecodeError):
            return False

    def _render(self, snapshot: Snapshot) -> tuple[str, list[str]]:
        """The configuration text for `snapshot` and what could not be rendered (kept from the
        last pass when the cache has not changed since)."""
        inputs_at = tuple((key, kv.mod_revision) for key, kv in snapshot.items.items() if key.startswith(self._prefixes))
        if self._rendered is not None and self._rendered[0] == inputs_at:
            return self._rendered[1], self._rendered[2]
        inputs, problems = inputs_from(snapshot, self.node, self.router_id)
        rendered = render(inputs)
        problems += list(rendered.problems)
        self._rendered = (inputs_at, rendered.text, problems)
        return rendered.text, problems

    def run_pass(self, snapshot: Snapshot) -> str | None:
        """One reconciliation from `snapshot`; what keeps the node from being routed, or None."""
        text, problems = self._render(snapshot)
        problems = list(problems)
        failure = self.apply(text)
        if failure is not None:
            problems.append(failure)
        self.problems.report(problems)
        return failure

    def run(self, stop: threading.Event, health: PartHealth) -> None:
        """The controller's loop: a pass on every change of the cache, and every PERIOD."""

        def one_pass(snapshot: Snapshot) -> tuple[bool, str]:
            failure = self.run_pass(snapshot)
            return (True, f"BIRD configured from revision {snapshot.revision}") if failure is None else (False, failure)

        reconcile_passes(self.cache, stop, health, PERIOD, one_pass)

