"""The daemon's nftables tables, `ip calico` and `ip6 calico`, as data and as nft script (pure).

A table is made of `Section`s (sets, verdict maps, chains), each from one concern: NAT outgoing and
the VXLAN guards (node/nft_rules.py), network policy (node/nft_policy.py). `script()` gives the text
that replaces a table whole in one nft transaction (the first write after a start, and a repair);
`delta()` the text that turns the table last written into the next one, touching only the sets,
maps and chains that differ, also in one transaction.
"""

from __future__ import annotations

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
    duplicates = sorted({n for n in names if names.count(n) > 1})
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
