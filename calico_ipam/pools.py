"""Which IP pools a node may allocate from, and in which order a pool's blocks are tried."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from typing import Iterator, Mapping, Sequence

from calico_cni.model.records import MANUAL, WORKLOAD, IPAddress, IPPool

from calico_cni.model import selector
from calico_ipam.errors import AddressesExhausted

log = logging.getLogger(__name__)


def _usable_block_size(pool: IPPool) -> bool:
    problem = pool.block_size_problem()
    if problem:
        log.error("IP pool %s is skipped: %s", pool.name, problem)
    return problem is None


def _matches_node(pool: IPPool, labels: Mapping[str, str]) -> bool:
    try:
        return selector.matches(pool.node_selector, labels)
    except selector.SelectorError as exc:
        log.error("IP pool %s is skipped: its nodeSelector does not parse: %s", pool.name, exc)
        return False


# The labels of the pod's namespace, which an IP pool's `namespaceSelector` is matched against.
# Outside Kubernetes a pod has no namespace object, so the set is empty: `all()` matches it and
# `has(x)` never does (what Calico v3.31's SelectsNamespace evaluates with no namespace).
NAMESPACE_LABELS: Mapping[str, str] = {}


def namespace_selector(pool: IPPool) -> str:
    """The pool's `spec.namespaceSelector` (a Calico v3.31 field, read from the stored record;
    empty when absent, which selects every namespace)."""
    value = (pool.doc.get("spec") or {}).get("namespaceSelector")
    return "" if value is None else value


def _matches_namespace(pool: IPPool, labels: Mapping[str, str]) -> bool:
    text = namespace_selector(pool)
    if text == "":
        return True
    try:
        if not isinstance(text, str):
            raise selector.SelectorError(f"expected a string, got {text!r}")
        return selector.matches(text, labels)
    except selector.SelectorError as exc:
        log.error("IP pool %s is skipped: its namespaceSelector does not parse: %s", pool.name, exc)
        return False


def _find_named(pools: Sequence[IPPool], wanted: str) -> IPPool | None:
    for pool in pools:
        if pool.name == wanted:
            return pool
    try:
        net = ipaddress.ip_network(wanted, strict=False)
    except ValueError:
        return None
    return next((p for p in pools if p.cidr == net), None)


def usable_pools(
    pools: Sequence[IPPool], family: int, node: str, labels: Mapping[str, str], named: Sequence[str] = (), use: str = WORKLOAD
) -> list[IPPool]:
    """The pools to allocate from, in the order to try them.

    Pools named in the config (by name or CIDR) are used first to last and override node and
    namespace selectors and `assignmentMode: Manual` (as Calico's requested pools do); otherwise
    every enabled pool of the family whose nodeSelector matches the node and namespaceSelector the
    pod's namespace labels (`NAMESPACE_LABELS`), that allows the intended `use` and is not Manual,
    in name order. `use` is Calico's IntendedUse: Workload for pods, Tunnel for a node's tunnel
    addresses (only pools whose allowedUses has it are taken, named ones included).
    """
    if named:
        out = []
        for wanted in named:
            pool = _find_named(pools, wanted)
            if pool is None or pool.disabled or pool.family != family:
                raise AddressesExhausted(
                    f"the given pool ({wanted}) does not exist, or is not enabled",
                    f"ipv{family}_pools of node {node} names {wanted!r}; existing IPv{family} pools: "
                    + (", ".join(f"{p.name} ({p.cidr}{', disabled' if p.disabled else ''})" for p in pools if p.family == family) or "none"),
                )
            if use not in pool.allowed_uses:
                raise AddressesExhausted(f"the given pool ({wanted}) does not allow {use} use", f"allowedUses: {list(pool.allowed_uses)}")
            problem = pool.block_size_problem()
            if problem:
                raise AddressesExhausted(f"the given pool ({wanted}) has an invalid block size", problem)
            out.append(pool)
        return out
    out = [
        p
        for p in sorted(pools, key=lambda p: p.name)
        if p.family == family
        and not p.disabled
        and use in p.allowed_uses
        and p.assignment_mode != MANUAL
        and _usable_block_size(p)
        and _matches_node(p, labels)
        and _matches_namespace(p, NAMESPACE_LABELS)
    ]
    if not out:
        same = [p for p in pools if p.family == family]
        raise AddressesExhausted(
            f"no configured Calico pools for node {node}",
            f"no enabled IPv{family} pool allows {use}, is Automatic, has a nodeSelector matching the node's labels {dict(labels)} "
            f"and a namespaceSelector matching the namespace's labels {dict(NAMESPACE_LABELS)} (none outside Kubernetes); "
            + (f"IPv{family} pools: " + ", ".join(f"{p.name} ({p.cidr}, selector {p.node_selector!r}{_ns_note(p)}{', disabled' if p.disabled else ''})" for p in same) if same else f"there is no IPv{family} pool: create one with calicoctl ippool create"),
        )
    return out


def _ns_note(pool: IPPool) -> str:
    text = namespace_selector(pool)
    return f", namespaceSelector {text!r}" if text != "" else ""


def pool_of(pools: Sequence[IPPool], cidr: str) -> IPPool | None:
    """The first of `pools` that a block, an address range or a single address (any CIDR text)
    lies in; None when it is in none of them."""
    net = ipaddress.ip_network(cidr)
    return next((p for p in pools if net.version == p.cidr.version and net.subnet_of(p.cidr)), None)


def pool_containing(pools: Sequence[IPPool], address: IPAddress, use: str = WORKLOAD) -> IPPool | None:
    """The enabled pool allowing `use` (Workload unless said) that holds `address` (what a
    specific address is assigned from: selectors and `assignmentMode` do not apply to it)."""
    return pool_of([p for p in pools if not p.disabled and use in p.allowed_uses and p.block_size_problem() is None], str(address))


def block_cidr_for(pool: IPPool, address: IPAddress) -> str:
    """The CIDR of the block of `pool` that holds `address`."""
    return str(ipaddress.ip_network(f"{address}/{pool.block_size}", strict=False))


def candidate_blocks(pool: IPPool, node: str) -> Iterator[str]:
    """Every block CIDR of the pool, in a per-node pseudo-random order (a node-seeded start, then
    sequential with wrap-around), so that nodes claiming at the same time rarely collide."""
    size = 1 << (pool.cidr.max_prefixlen - pool.block_size)
    count = 1 << max(pool.block_size - pool.cidr.prefixlen, 0)
    start = int.from_bytes(hashlib.sha256(node.encode()).digest()[:8], "big") % count
    base = int(pool.cidr.network_address)
    cls = type(pool.cidr.network_address)
    for i in range(count):
        idx = (start + i) % count
        yield f"{cls(base + idx * size)}/{pool.block_size}"
