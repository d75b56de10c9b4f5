"""The daemon's nftables tables, `ip calico` and `ip6 calico`, as data and as nft script (pure).

A table is made of `Section`s (sets, verdict maps, chains), each from one concern: NAT outgoing and
the VXLAN guards (node/nft_rules.py), network policy (node/nft_policy.py). `script()` gives the text
that replaces a table whole in one nft transaction (the first write after a start, and a repair);
`delta()` the text that turns the table last written into the next one, touching only the sets,
maps and chains that differ (and of a set or map, only the elements that differ), also in one
transaction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

TABLE = "calico"
FAMILIES = {4: "ip", 6: "ip6"}


@dataclass(frozen=True)
class NftSet:
    """A named set: `interval` for CIDRs, else addresses. `type` overrides the element type (None:
    the table family's addresses), e.g. "ipv4_addr . inet_proto . inet_service" for named ports."""

    name: str
    elements: tuple[str, ...]
    interval: bool
    type: str | None = None


@dataclass(frozen=True)
class NftMap:
    """A named verdict map: `key_type` (e.g. "ifname") to verdicts; `elements` are (key, verdict)
    pairs as nft writes them, e.g. ('"cali1234"', "goto fw-cali1234")."""

    name: str
    key_type: str
    elements: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Chain:
    """A chain: `hook` is e.g. "type nat hook postrouting priority srcnat" for a base chain, or
    None for a regular chain reached by a jump."""

    name: str
    hook: str | None
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Section:
    """Sets and chains one concern adds to a table."""

    sets: tuple[NftSet, ...] = ()
    chains: tuple[Chain, ...] = ()
    maps: tuple[NftMap, ...] = ()


@dataclass(frozen=True)
class Table:
    """One family's table, ready to be written."""

    family: str  # "ip" or "ip6"
    sections: tuple[Section, ...] = field(default=())

    @property
    def name(self) -> str:
        return TABLE


def address_type(family: int) -> tuple[str, str]:
    """The nft type of addresses of `family` and the match keyword for them."""
    return ("ipv4_addr", "ip") if family == 4 else ("ipv6_addr", "ip6")


def _set_text(s: NftSet, family: int) -> list[str]:
    addr_type, _ = address_type(family)
    lines = [f"\tset {s.name} {{", f"\t\ttype {s.type or addr_type}"]
    if s.interval:
        lines.append("\t\tflags interval")
    if s.elements:
        lines.append(f"\t\telements = {{ {', '.join(s.elements)} }}")
    lines.append("\t}")
    return lines


def _map_text(m: NftMap) -> list[str]:
    lines = [f"\tmap {m.name} {{", f"\t\ttype {m.key_type} : verdict"]
    if m.elements:
        lines.append(f"\t\telements = {{ {', '.join(f'{k} : {v}' for k, v in m.elements)} }}")
    lines.append("\t}")
    return lines


def _chain_text(c: Chain) -> list[str]:
    lines = [f"\tchain {c.name} {{"]
    if c.hook is not None:
        lines.append(f"\t\t{c.hook}")
    lines += [f"\t\t{rule}" for rule in c.rules]
    lines.append("\t}")
    return lines


def body(table: Table) -> str:
    """`table <family> calico { ... }`: the table's sets, its chains, then its verdict maps, by
    section order (nft resolves a map's `goto` targets and a chain's `vmap @map` references within
    the one transaction, so either order loads)."""
    family = 4 if table.family == "ip" else 6
    sets = [s for section in table.sections for s in section.sets]
    chains = [c for section in table.sections for c in section.chains]
    maps = [m for section in table.sections for m in section.maps]
    names = [s.name for s in sets] + [c.name for c in chains] + [m.name for m in maps]
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"table {table.family} {table.name}: names given twice by its sections: {', '.join(duplicates)}")
    lines = [f"table {table.family} {table.name} {{"]
    for s in sets:
        lines += _set_text(s, family)
    for m in maps:
        lines += _map_text(m)
    for c in chains:
        lines += _chain_text(c)
    lines.append("}")
    return "\n".join(lines) + "\n"


def script(table: Table) -> str:
    """The nft script that replaces `table` whole in one transaction: create it (so the delete is
    safe when it is absent), delete it, write it again."""
    head = f"table {table.family} {table.name} {{}}\ndelete table {table.family} {table.name}\n"
    return head + body(table)


def _objects(table: Table) -> tuple[dict[str, NftSet], dict[str, NftMap], dict[str, Chain]]:
    sets = {s.name: s for section in table.sections for s in section.sets}
    maps = {m.name: m for section in table.sections for m in section.maps}
    chains = {c.name: c for section in table.sections for c in section.chains}
    return sets, maps, chains


def _set_declaration(s: NftSet, family: int) -> str:
    addr_type, _ = address_type(family)
    flags = " flags interval;" if s.interval else ""
    return f"{{ type {s.type or addr_type};{flags} }}"


def _container_type(c: NftSet | NftMap) -> tuple:
    """What nft cannot change in place: a set's element type and flags, a map's key type."""
    return (c.type, c.interval) if isinstance(c, NftSet) else (c.key_type,)


class NotIncremental(ValueError):
    """A change `delta` cannot make in place (a set's or map's type changed): write the table whole."""


def delta(old: Table, new: Table) -> str:
    """The nft script that turns `old` (as last written) into `new` in one transaction, touching
    only what differs; empty when nothing does. In order: new sets, maps and chains declared (so
    every reference below resolves); of changed sets and maps, the elements that went deleted and
    the new ones added (interval sets flushed and filled); changed chains
    flushed and new or changed ones filled; then the chains no longer wanted flushed and deleted
    (nothing refers to them any more: every chain or map that did was rewritten above, the maps no
    longer wanted deleted between), then the sets no longer wanted. A base chain whose hook changed is deleted and added again
    first. Raises NotIncremental when a set or map changed type."""
    if old.family != new.family or old.name != new.name:
        raise NotIncremental(f"table {old.family} {old.name} is not table {new.family} {new.name}")
    family = 4 if new.family == "ip" else 6
    where = f"{new.family} {new.name}"
    old_sets, old_maps, old_chains = _objects(old)
    new_sets, new_maps, new_chains = _objects(new)
    declare: list[str] = []
    fill: list[str] = []
    rewrite: list[str] = []
    # Sets and maps alike: declared and filled when new; else only their elements that differ are
    # deleted and added (a pod's ADD adds one element to the dispatch maps and the sets that select
    # it, not all of them again), but for interval sets, flushed and filled (nft may store an
    # interval other than as written, so an element is not deleted by its text).
    containers: list[tuple[str, NftSet | NftMap, NftSet | NftMap | None, str, dict[str, str]]] = [
        ("set", s, old_sets.get(name), _set_declaration(s, family), {e: e for e in s.elements}) for name, s in new_sets.items()
    ]
    containers += [
        ("map", m, old_maps.get(name), f"{{ type {m.key_type} : verdict; }}", {k: f"{k} : {v}" for k, v in m.elements}) for name, m in new_maps.items()
    ]
    for kind, after, before, declaration, elements in containers:
        if before == after:
            continue
        if before is not None and _container_type(before) != _container_type(after):
            raise NotIncremental(f"{kind} {after.name} changed type")
        if before is None or (isinstance(after, NftSet) and after.interval):
            if before is None:
                declare.append(f"add {kind} {where} {after.name} {declaration}")
            else:
                fill.append(f"flush {kind} {where} {after.name}")
            added = list(elements.values())
        else:
            # key -> element text; a map element whose verdict changed is deleted, then added.
            had = {e: e for e in before.elements} if isinstance(before, NftSet) else {k: f"{k} : {v}" for k, v in before.elements}
            gone = [key for key, text in had.items() if elements.get(key) != text]
            added = [text for key, text in elements.items() if had.get(key) != text]
            if gone:
                fill.append(f"delete element {where} {after.name} {{ {', '.join(gone)} }}")
        if added:
            fill.append(f"add element {where} {after.name} {{ {', '.join(added)} }}")
    rehooked: list[str] = []
    for name, c in new_chains.items():
        before_chain = old_chains.get(name)
        if before_chain == c:
            continue
        if before_chain is not None and before_chain.hook != c.hook:
            rehooked += [f"flush chain {where} {name}", f"delete chain {where} {name}"]
            before_chain = None
        if before_chain is None:
            hook = f" {{ {c.hook} }}" if c.hook is not None else ""
            declare.append(f"add chain {where} {name}{hook}")
        else:
            rewrite.append(f"flush chain {where} {name}")
        rewrite += [f"add rule {where} {name} {rule}" for rule in c.rules]
    gone_chains = [name for name in old_chains if name not in new_chains]
    # Gone chains flushed (they may jump to each other or read a gone map), then gone maps deleted
    # (their elements may go to a gone chain), then the chains, then the sets.
    remove = [f"flush chain {where} {name}" for name in gone_chains]
    remove += [f"delete map {where} {name}" for name in old_maps if name not in new_maps]
    remove += [f"delete chain {where} {name}" for name in gone_chains]
    remove += [f"delete set {where} {name}" for name in old_sets if name not in new_sets]
    commands = rehooked + declare + fill + rewrite + remove
    return "".join(f"{line}\n" for line in commands)
