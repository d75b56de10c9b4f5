"""Typed reads and compare-and-swap writes of Calico records over `EtcdClient`.

Every write goes through `Datastore.commit`: each written record is compared against the revision it
was read at (0: it must not exist yet), and all writes of one commit land atomically or not at all.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from calico_cni.config import EtcdSettings
from calico_cni.model import keys
from calico_cni.datastore.errors import DatastoreNotReady
from calico_cni.datastore.etcd import Compare, EtcdClient, KeyValue, Range
from calico_cni.model.records import (
    Affinity,
    Block,
    CorruptRecord,
    Handle,
    IpamConfig,
    IPNetwork,
    IPPool,
    Node,
    WorkloadEndpoint,
    parse_reservation,
)

log = logging.getLogger(__name__)


class Record(Protocol):
    """What `Datastore.commit` writes or compares: a record's key, the revision it was read at
    (0: not stored yet) and its JSON."""

    key: str
    revision: int

    def to_json(self) -> bytes: ...


@dataclass
class IpamView:
    """What one allocation needs to know, read in one round trip at one revision."""

    config: IpamConfig
    pools: list[IPPool]
    node: Node | None
    affinities: dict[int, list[Affinity]]
    handle: Handle | None
    reservations: list[IPNetwork]
    revision: int = 0
    # Blocks read with the view because the caller expected to need them (see `Datastore.blocks`).
    blocks: dict[str, Block | None] = field(default_factory=dict)
    # What a commit based on this view compares besides the records it writes: empty for a view
    # read from etcd (a commit compares what it writes, and the read saw the rest at one
    # revision); for a view built from a watch cache (`hinted_ipam_view`), every key and prefix
    # the view was built from, so a stale guess fails its compare-and-swap instead of being used.
    pins: list["Pin"] = field(default_factory=list)
    guards: list[tuple[str, int]] = field(default_factory=list)
    # Blocks as this view's successful commits left them (what a block memory learns).
    written: dict[str, Block] = field(default_factory=dict)


@dataclass(frozen=True)
class Pin:
    """A key a commit compares without writing it: still at `revision` (0: still absent)."""

    key: str
    revision: int

    def to_json(self) -> bytes:
        raise TypeError(f"{self.key} is only compared, never written")


class Hint(Protocol):
    """What a watch cache of this datastore last saw (calico-node's syncer): a guess of what a read
    would return, which a commit must compare (`Pin`, prefix guards) before anything relies on it.
    It offers no revision to compare from: a watch of several prefixes may report one ahead of
    events still queued for one of them (`hinted_ipam_view` guards each prefix from what it saw)."""

    def get(self, key: str) -> KeyValue | None:
        """The key as last seen, or None (absent, as far as the hint knows)."""

    def under(self, prefix: str) -> Mapping[str, KeyValue]:
        """The keys under `prefix`, as last seen."""


def pin(hint: Hint, key: str) -> Pin:
    """`key` compared at the revision the hint saw it (0: absent)."""
    kv = hint.get(key)
    return Pin(key, kv.mod_revision if kv is not None else 0)


def hint_locked(hint: Hint) -> bool:
    """Whether the hint's ClusterInformation says the datastore is locked (a migration)."""
    kv = hint.get(keys.CLUSTER_INFORMATION)
    return _locked([kv] if kv is not None else [])


def hinted_ipam_view(hint: Hint, node: str, families: Sequence[int], blocks: Mapping[str, Block]) -> IpamView | None:
    """The IPAM view `Datastore.ipam_view` would read, built from a watch cache's `hint` with no
    round trip, for a new attachment (its handle assumed absent: the commit creates it, version 0),
    with `blocks` (the caller's remembered block records) as its prefetched blocks; None when the
    hint says the datastore is locked (the read path then raises `DatastoreNotReady`).

    The view pins everything it was built from: the IPAM config, ClusterInformation (a lock set
    since fails the commit), the node and each pool and affinity by revision (a deletion fails
    too), and no key created or changed under the pools, the reservations and the node's affinities
    of each family since the newest change the hint saw under that prefix."""
    if hint_locked(hint):
        return None
    cfg = hint.get(keys.IPAM_CONFIG)
    node_kv = hint.get(keys.node(node))
    under = {p: hint.under(p) for p in (keys.POOLS, keys.RESERVATIONS, *(keys.host_affinities(node, f) for f in families))}
    pool_kvs = under[keys.POOLS]
    affinities = {f: _affinities(under[keys.host_affinities(node, f)].values()) for f in families}
    pins = [pin(hint, keys.CLUSTER_INFORMATION), pin(hint, keys.IPAM_CONFIG), pin(hint, keys.node(node))]
    pins += [Pin(kv.key, kv.mod_revision) for kv in pool_kvs.values()]
    pins += [Pin(a.key, a.revision) for f in families for a in affinities[f]]
    # Each prefix is guarded from the newest change the hint saw under it, not from the hint's
    # revision: a watch stream may report a revision ahead of events still queued for one of its
    # prefixes, while its events under one prefix arrive in order. Deletions pass a guard: pools
    # and affinities are pinned one by one for that (a deleted reservation only frees addresses).
    guards = [(p, max((kv.mod_revision for kv in kvs.values()), default=0)) for p, kvs in under.items()]
    return IpamView(
        config=_config(cfg) if cfg is not None else IpamConfig(),
        pools=_pools(pool_kvs.values()),
        node=Node.from_json(node, node_kv.value, node_kv.mod_revision) if node_kv is not None else None,
        affinities=affinities,
        handle=None,
        reservations=_reservations(under[keys.RESERVATIONS].values()),
        revision=min(since for _, since in guards),
        blocks=dict(blocks),
        pins=pins,
        guards=guards,
    )


@dataclass
class IpamSnapshot:
    """Every IPAM record, with the pools, nodes and workload endpoints that use them, read in one
    round trip at one revision (so cross-record checks never see half of a transaction).
    Records that do not parse are listed in `corrupt` as (key, reason)."""

    revision: int
    config: IpamConfig
    pools: list[IPPool]
    nodes: list[Node]
    blocks: list[Block]
    handles: list[Handle]
    affinities: list[Affinity]
    endpoints: list[WorkloadEndpoint]
    corrupt: list[tuple[str, str]] = field(default_factory=list)


def _pools(kvs: Iterable[KeyValue]) -> list[IPPool]:
    return sorted(_parse_all(kvs, _pool, what=lambda kv: f"IP pool {kv.key[len(keys.POOLS) :]}"), key=lambda p: p.name)


def _affinities(kvs: Iterable[KeyValue]) -> list[Affinity]:
    return _parse_all(kvs, _affinity)


def _reservations(kvs: Iterable[KeyValue]) -> list[IPNetwork]:
    out: list[IPNetwork] = []
    for kv in kvs:
        try:
            out.extend(parse_reservation(kv.key[len(keys.RESERVATIONS) :], kv.value))
        except CorruptRecord as exc:
            log.error("skipping IP reservation: %s", exc)
    return out


def _parse_all(kvs: Iterable[KeyValue], parse, corrupt: list[tuple[str, str]] | None = None, what=None) -> list:
    """Parse each key-value with `parse`. One that fails is skipped: logged as "skipping <what>"
    (`what(kv)`, else the key), or added to `corrupt` as (key, reason) when that list is given."""
    out = []
    for kv in kvs:
        try:
            out.append(parse(kv))
        except (ValueError, TypeError, AttributeError) as exc:
            if corrupt is None:
                log.error("skipping %s: %s", what(kv) if what else kv.key, exc)
            else:
                corrupt.append((kv.key, str(exc)))
    return out


def _pool(kv: KeyValue) -> IPPool:
    return IPPool.from_json(kv.key[len(keys.POOLS) :], kv.value, kv.mod_revision)


def _node(kv: KeyValue) -> Node:
    return Node.from_json(kv.key[len(keys.NODES) :], kv.value, kv.mod_revision)


def _block(kv: KeyValue) -> Block:
    return Block.from_kv(kv.key, kv.value, kv.mod_revision)


def _handle(kv: KeyValue) -> Handle:
    return Handle.from_kv(kv.key, kv.value, kv.mod_revision)


def _affinity(kv: KeyValue) -> Affinity:
    return Affinity.from_kv(kv.key, kv.value, kv.mod_revision)


def _endpoint(kv: KeyValue) -> WorkloadEndpoint:
    return WorkloadEndpoint.from_kv(kv.key, kv.value, kv.mod_revision)


def _config(kv: KeyValue) -> IpamConfig:
    return IpamConfig.from_json(kv.value, kv.mod_revision)


def _locked(kvs: Sequence[KeyValue]) -> bool:
    """Whether Calico's ClusterInformation (`kvs`, its range result) says `datastoreReady: false`
    (a migration lock). A missing or unreadable record counts as ready: nothing has locked it."""
    if not kvs:
        return False
    try:
        doc = json.loads(kvs[0].value)
    except ValueError:
        return False
    spec = doc.get("spec") if isinstance(doc, dict) else None
    return isinstance(spec, dict) and spec.get("datastoreReady") is False


def _endpoint_of(kvs: Sequence[KeyValue]) -> WorkloadEndpoint | None:
    return _endpoint(kvs[0]) if kvs else None


def _parse_blocks(cidrs: Sequence[str], results: Sequence[Sequence[KeyValue]]) -> dict[str, Block]:
    """Blocks read for `cidrs` (one range result each); absent and corrupt ones are left out."""
    out = {}
    for cidr, kvs in zip(cidrs, results):
        if kvs:
            try:
                out[cidr] = _block(kvs[0])
            except CorruptRecord as exc:
                log.error("skipping block: %s", exc)
    return out


def _prefetched(cidrs: Sequence[str], results: Sequence[Sequence[KeyValue]]) -> dict[str, Block | None]:
    """Prefetched blocks: absent ones map to None; corrupt ones are left out (a later read of
    them reports them as `blocks` does)."""
    parsed = _parse_blocks(cidrs, results)
    return {c: parsed.get(c) for c, kvs in zip(cidrs, results) if c in parsed or not kvs}


class Datastore:
    """Calico's records in etcd."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client

    @property
    def round_trips(self) -> int:
        """Round trips made so far (for benchmarks)."""
        return self.client.round_trips

    def limit_to(self, seconds: float) -> None:
        """From now on, every etcd call of this datastore ends within `seconds`: a whole operation
        (a verb's datastore part, bounded by `add_timeout`) is limited, not just each call."""
        self.client.deadline_at = time.monotonic() + seconds

    def close(self) -> None:
        """Close the etcd client (a lease of the agent's warm channel keeps the channel)."""
        self.client.close()

    # -- reads --------------------------------------------------------------------------------

    def _read(self, ranges: Sequence[Range], ready_check: bool = True, locked_carries: Callable[[list], object] | None = None) -> tuple[list[list[KeyValue]], int]:
        """`client.read(ranges)`: their results and the revision, in one round trip. With
        `ready_check`, Calico's ClusterInformation is read in the same round trip (its result is not
        returned) and `DatastoreNotReady` raised when it says the datastore is locked, carrying
        `locked_carries(results)` when given (what the read also found, for the caller's journal)."""
        if not ready_check:
            return self.client.read(ranges)
        results, revision = self.client.read([*ranges, Range(keys.CLUSTER_INFORMATION)])
        if _locked(results.pop()):
            raise DatastoreNotReady(locked_carries(results) if locked_carries else None)
        return results, revision

    def ipam_view(self, node: str, families: Sequence[int], handle_id: str | None, prefetch_blocks: Sequence[str] = ()) -> IpamView:
        """Config, pools, the node, its affinities, the handle and reservations, in one round trip;
        with the blocks of `prefetch_blocks` (the caller's guess of the node's blocks) in `blocks`.
        `DatastoreNotReady` when Calico's ClusterInformation (read in the same round trip) says
        the datastore is locked."""
        ranges = [
            Range(keys.IPAM_CONFIG),
            Range(keys.POOLS, prefix=True),
            Range(keys.node(node)),
            Range(keys.RESERVATIONS, prefix=True),
            Range(keys.handle(handle_id) if handle_id else keys.HANDLES + "\0"),
        ]
        ranges += [Range(keys.host_affinities(node, f), prefix=True) for f in families]
        ranges += [Range(keys.block(c)) for c in prefetch_blocks]
        results, revision = self._read(ranges)
        cfg_kv, pool_kvs, node_kv, res_kvs, handle_kv = results[:5]
        aff = results[5 : 5 + len(families)]
        block_kvs = results[5 + len(families) :]
        return IpamView(
            config=_config(cfg_kv[0]) if cfg_kv else IpamConfig(),
            pools=_pools(pool_kvs),
            node=Node.from_json(node, node_kv[0].value, node_kv[0].mod_revision) if node_kv else None,
            affinities={f: _affinities(a) for f, a in zip(families, aff)},
            handle=_handle(handle_kv[0]) if handle_kv else None,
            reservations=_reservations(res_kvs),
            revision=revision,
            blocks=_prefetched(prefetch_blocks, block_kvs),
        )

    def handles_config_blocks(
        self, handle_ids: Sequence[str], prefetch_blocks: Sequence[str] = ()
    ) -> tuple[dict[str, Handle | None], IpamConfig, dict[str, Block | None]]:
        """Several handles, the IPAM config and the blocks of `prefetch_blocks` (None: absent),
        in one round trip. `DatastoreNotReady` when Calico's ClusterInformation (read in the same
        round trip) says the datastore is locked."""
        n = len(handle_ids)
        ranges = [
            *(Range(keys.handle(h)) for h in handle_ids),
            Range(keys.IPAM_CONFIG),
            *(Range(keys.block(c)) for c in prefetch_blocks),
        ]
        results, _ = self._read(ranges)
        handles = {h: (_handle(kvs[0]) if kvs else None) for h, kvs in zip(handle_ids, results)}
        cfg = results[n]
        config = _config(cfg[0]) if cfg else IpamConfig()
        return handles, config, _prefetched(prefetch_blocks, results[n + 1 :])

    def ipam_config(self) -> IpamConfig:
        """The IPAM configuration (defaults when none is stored)."""
        kv = self.client.get(keys.IPAM_CONFIG)
        return _config(kv) if kv else IpamConfig()

    def pools(self) -> list[IPPool]:
        """Every IP pool, by name."""
        return _pools(self.client.get_prefix(keys.POOLS))

    def pool(self, name: str) -> IPPool | None:
        """One IP pool by name, or None."""
        kv = self.client.get(keys.pool(name))
        return IPPool.from_json(name, kv.value, kv.mod_revision) if kv else None

    def node(self, name: str) -> Node | None:
        """One node by name, or None."""
        kv = self.client.get(keys.node(name))
        return Node.from_json(name, kv.value, kv.mod_revision) if kv else None

    def nodes(self) -> list[Node]:
        """Every node; corrupt ones are logged and skipped."""
        return _parse_all(self.client.get_prefix(keys.NODES), _node, what=lambda kv: f"node {kv.key[len(keys.NODES) :]}")

    def affinities(self, node: str | None = None, family: int | None = None) -> list[Affinity]:
        """Affinities of one node (optionally one family), or of every node."""
        prefix = keys.host_affinities(node, family) if node else keys.IPAM + "host/"
        return _affinities(self.client.get_prefix(prefix))

    def handle(self, handle_id: str) -> Handle | None:
        """One IPAM handle, or None."""
        kv = self.client.get(keys.handle(handle_id))
        return _handle(kv) if kv else None

    def handles(self) -> list[Handle]:
        """Every handle; corrupt ones are logged and skipped."""
        return _parse_all(self.client.get_prefix(keys.HANDLES), _handle)

    def block(self, cidr: str) -> Block | None:
        """One block by CIDR, or None."""
        kv = self.client.get(keys.block(cidr))
        return _block(kv) if kv else None

    def blocks(self, cidrs: Sequence[str], known: Mapping[str, Block | None] | None = None) -> dict[str, Block]:
        """Several blocks in one round trip (missing ones are absent from the result). Blocks in
        `known` (read earlier in the same operation, None when absent) are taken from there; no
        round trip is made when it covers them all."""
        known = known or {}
        out = {c: known[c] for c in cidrs if known.get(c) is not None}
        wanted = [c for c in cidrs if c not in known]
        if not wanted:
            return out
        results, _ = self.client.read([Range(keys.block(c)) for c in wanted])
        out.update(_parse_blocks(wanted, results))
        return out

    def all_blocks(self, family: int | None = None) -> list[Block]:
        """Every block (of one family, or both); corrupt ones are logged and skipped."""
        return [b for fam in ((family,) if family else (4, 6)) for b in _parse_all(self.client.get_prefix(keys.blocks(fam)), _block)]

    def block_cidrs(self, family: int) -> set[str]:
        """The CIDRs of every existing block of a family (keys only)."""
        return {keys.parse_block(kv.key) for kv in self.client.get_prefix(keys.blocks(family), keys_only=True)}

    def workload_endpoint(self, namespace: str, name: str, ready_check: bool = False) -> WorkloadEndpoint | None:
        """One workload endpoint, or None. With `ready_check`, `DatastoreNotReady` (carrying the
        endpoint read) when Calico's ClusterInformation, read in the same round trip, says the
        datastore is locked."""
        if not ready_check:
            kv = self.client.get(keys.workload_endpoint(namespace, name))
            return _endpoint(kv) if kv else None
        # A DEL journals the endpoint the locked read found, to delete it after the unlock.
        (found,), _ = self._read([Range(keys.workload_endpoint(namespace, name))], locked_carries=lambda results: _endpoint_of(results[0]))
        return _endpoint_of(found)

    def present(self, wanted: Sequence[str], ready_check: bool = False) -> set[str]:
        """Which of the keys `wanted` exist, in one round trip. With `ready_check`,
        `DatastoreNotReady` when Calico's ClusterInformation (read in the same round trip) says the
        datastore is locked."""
        results, _ = self._read([Range(k, keys_only=True) for k in wanted], ready_check)
        return {k for k, kvs in zip(wanted, results) if kvs}

    def workload_endpoints(self) -> list[WorkloadEndpoint]:
        """Every workload endpoint; corrupt ones are logged and skipped."""
        return _parse_all(self.client.get_prefix(keys.WORKLOAD_ENDPOINTS), _endpoint)

    def workload_endpoints_and_names(self, prefix: str) -> tuple[list[WorkloadEndpoint], set[str]]:
        """Every workload endpoint (corrupt ones skipped silently: `calicoctl ipam check` reports
        them) and the names of the keys under `prefix` (keys only), read at one revision in one
        round trip."""
        (wep_kvs, named), _ = self.client.read([Range(keys.WORKLOAD_ENDPOINTS, prefix=True), Range(prefix, prefix=True, keys_only=True)])
        return _parse_all(wep_kvs, _endpoint, corrupt=[]), {kv.key[len(prefix) :] for kv in named}

    def ipam_snapshot(self) -> IpamSnapshot:
        """Config, pools, nodes, blocks, handles, affinities and workload endpoints, in one round
        trip at one revision (for `calicoctl ipam show/check`)."""
        ranges = [
            Range(keys.IPAM_CONFIG),
            Range(keys.POOLS, prefix=True),
            Range(keys.NODES, prefix=True),
            Range(keys.blocks(4), prefix=True),
            Range(keys.blocks(6), prefix=True),
            Range(keys.HANDLES, prefix=True),
            Range(keys.IPAM + "host/", prefix=True),
            Range(keys.WORKLOAD_ENDPOINTS, prefix=True),
        ]
        (cfg, pools, nodes, b4, b6, handles, affs, weps), revision = self.client.read(ranges)
        corrupt: list[tuple[str, str]] = []
        config = _parse_all(cfg, _config, corrupt)
        return IpamSnapshot(
            revision=revision,
            config=config[0] if config else IpamConfig(),
            pools=sorted(
                _parse_all(pools, _pool, corrupt),
                key=lambda p: p.name,
            ),
            nodes=_parse_all(nodes, _node, corrupt),
            blocks=_parse_all([*b4, *b6], _block, corrupt),
            handles=_parse_all(handles, _handle, corrupt),
            affinities=_parse_all(affs, _affinity, corrupt),
            endpoints=_parse_all(weps, _endpoint, corrupt),
            corrupt=corrupt,
        )

    # -- writes -------------------------------------------------------------------------------

    def commit(
        self,
        puts: Sequence[Record] = (),
        deletes: Sequence[Record] = (),
        unchanged: Sequence[Record] = (),
        prefixes_unchanged_since: Sequence[tuple[str, int]] = (),
    ) -> bool:
        """Write `puts` and delete `deletes` atomically, if none of them (nor `unchanged`) moved.

        Each record is compared against the revision it was read at (0: must not exist). On
        success the put records take the new revision; on a lost race nothing is written and
        False is returned, so the caller re-reads and tries again. Each (prefix, revision) of
        `prefixes_unchanged_since` also requires that no key under the prefix was created or
        modified after that revision (so concurrent block claims of one node serialise, and a pool
        cannot appear while another is checked against the pools).
        """
        compares = [Compare(r.key, r.revision) for r in (*puts, *deletes, *unchanged)]
        for prefix, since in prefixes_unchanged_since:
            compares.append(Compare(prefix, since, prefix=True))
        ok, revision = self.client.commit(compares, [(r.key, r.to_json()) for r in puts], [r.key for r in deletes])
        if ok:
            for r in puts:
                r.revision = revision
        return ok


def connect(settings: EtcdSettings) -> Datastore:
    """A datastore over a new etcd client (one per call: a one-shot plugin process or calicoctl;
    the agent's datastores share warm channels instead, see `agent.warm`)."""
    return Datastore(EtcdClient(settings))
