"""Pure operations on one allocation block: no I/O, so every rule here is unit-testable.

An ordinal is an address's index in the block. `allocations[ordinal]` points at an entry of
`attributes` (or is None when free); `unallocated` lists free ordinals, head first (FIFO reuse).
Ordinals with the same handle and attributes share one entry, as Calico writes blocks (so a block
stays small and other Calico tools read it unchanged). A release points the
ordinal at a fresh `{"releasedAt": ...}` entry; `cleanup` returns ordinals whose cooldown has
passed to the tail of `unallocated` and drops attribute entries no ordinal uses.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from calico_cni.model.records import Block, IPNetwork, now_rfc3339, parse_time


def _bump(block: Block) -> int:
    block.sequence_number += 1
    return block.sequence_number


def _attribute_index(block: Block, attribute: dict[str, Any]) -> int:
    for i, existing in enumerate(block.attributes):
        if existing == attribute:
            return i
    block.attributes.append(attribute)
    return len(block.attributes) - 1


def reserved_ordinals(block: Block, reservations: Sequence[IPNetwork]) -> set[int]:
    """Ordinals of the block that an IPReservation covers."""
    net = block.network
    out: set[int] = set()
    base = int(net.network_address)
    for res in reservations:
        if res.version != net.version or not net.overlaps(res):
            continue
        lo = max(int(res.network_address), base) - base
        hi = min(int(res.broadcast_address), int(net.broadcast_address)) - base
        out.update(range(lo, hi + 1))
    return out


def free_ordinals(block: Block, reserved: set[int] = frozenset()) -> list[int]:
    """Free ordinals in the order they will be handed out, reserved ones skipped."""
    return [o for o in block.unallocated if o not in reserved and block.allocations[o] is None]


def assign(block: Block, count: int, handle_id: str, secondary: dict[str, str], reserved: set[int] = frozenset()) -> list[int]:
    """Allocate up to `count` ordinals from the head of `unallocated`; returns the ordinals taken."""
    taken = free_ordinals(block, reserved)[:count]
    if taken:
        assign_ordinals(block, taken, handle_id, secondary)
    return taken


def assign_ordinals(block: Block, ordinals: Sequence[int], handle_id: str, secondary: dict[str, str]) -> None:
    """Allocate these specific (free) ordinals to the handle."""
    seq = _bump(block)
    index = _attribute_index(block, {"handle_id": handle_id, "secondary": dict(secondary)})
    wanted = set(ordinals)
    for o in ordinals:
        if block.allocations[o] is not None:
            raise ValueError(f"ordinal {o} of block {block.cidr} is not free")
        block.allocations[o] = index
        block.seq_for_alloc[str(o)] = seq
    block.unallocated = [o for o in block.unallocated if o not in wanted]


def ordinals_of(block: Block, handle_id: str, ifname: str | None = None) -> list[int]:
    """Ordinals held by the handle (and, if given, this interface).

    Allocations that record no interface (made by Calico's own plugin) belong to every interface
    of their handle.
    """
    out = []
    for o, index in enumerate(block.allocations):
        if index is None or not 0 <= index < len(block.attributes):
            continue
        attr = block.attributes[index]
        if attr.get("handle_id") != handle_id:
            continue
        recorded = (attr.get("secondary") or {}).get("ifname")
        if ifname is None or recorded is None or recorded == ifname:
            out.append(o)
    return out


def release(block: Block, ordinals: Iterable[int], expected_seq: dict[int, int] | None = None) -> list[int]:
    """Release ordinals; with `expected_seq`, only those still holding that allocation's sequence number.

    Returns the ordinals released. Each is pointed at a fresh releasedAt entry (shared entries are
    never edited); call `cleanup` to return cooled-down ones to the free list.
    """
    released = []
    stamp = now_rfc3339()
    for o in ordinals:
        if block.attribute(o) is None or "handle_id" not in block.attribute(o):
            continue
        if expected_seq is not None and block.seq_for_alloc.get(str(o)) != expected_seq.get(o):
            continue
        block.attributes.append({"releasedAt": stamp})
        block.allocations[o] = len(block.attributes) - 1
        block.seq_for_alloc.pop(str(o), None)
        released.append(o)
    if released:
        _bump(block)
    return released


def cleanup(block: Block, cooldown_seconds: float, now: float) -> bool:
    """Free released ordinals whose cooldown has passed and drop unused attribute entries.

    Returns True when the block changed.
    """
    changed = False
    dangling = False
    for o, index in enumerate(block.allocations):
        if index is None:
            continue
        if not 0 <= index < len(block.attributes):
            # The owner of this address is unknown: it may still be a live pod's, so it is never
            # freed here (calicoctl ipam check reports the block for an operator to repair).
            dangling = True
            continue
        attr = block.attributes[index]
        if "handle_id" in attr:
            continue
        released_at = parse_time(attr.get("releasedAt"))
        if cooldown_seconds <= 0 or released_at is None or now - released_at >= cooldown_seconds:
            block.allocations[o] = None
            block.unallocated.append(o)
            changed = True
    # Renumber: keep only attribute entries still referenced, in their original order (not in
    # a block with dangling indexes, whose meaning renumbering would change).
    used = sorted({i for i in block.allocations if i is not None})
    if not dangling and len(used) != len(block.attributes):
        remap = {old: new for new, old in enumerate(used)}
        block.attributes = [block.attributes[i] for i in used]
        block.allocations = [None if i is None else remap[i] for i in block.allocations]
        changed = True
    if changed:
        _bump(block)
    return changed


def cooling_until(block: Block, ordinal: int, cooldown_seconds: float) -> float | None:
    """When a released ordinal becomes free again (None if it is not cooling down)."""
    attr = block.attribute(ordinal)
    if attr is None or "handle_id" in attr:
        return None
    released_at = parse_time(attr.get("releasedAt"))
    return None if released_at is None else released_at + cooldown_seconds


def is_empty(block: Block) -> bool:
    """No ordinal allocated or cooling down."""
    return all(a is None for a in block.allocations)


def in_use(block: Block) -> int:
    """Ordinals held by a handle (cooling-down ones excluded)."""
    return sum(1 for o in range(block.size) if (block.attribute(o) or {}).get("handle_id") is not None)


def consistency_problems(block: Block) -> list[str]:
    """What is wrong with a block's bookkeeping (empty when it is consistent)."""
    problems = []
    seen: set[int] = set()
    for o in block.unallocated:
        if not 0 <= o < block.size:
            problems.append(f"unallocated lists ordinal {o}, outside the block")
        elif o in seen:
            problems.append(f"unallocated lists ordinal {o} twice")
        elif block.allocations[o] is not None:
            problems.append(f"ordinal {o} ({block.address(o)}) is both allocated and in unallocated")
        seen.add(o)
    for o, index in enumerate(block.allocations):
        if index is None and o not in seen:
            problems.append(f"ordinal {o} ({block.address(o)}) is neither allocated nor in unallocated")
        elif index is not None and not 0 <= index < len(block.attributes):
            problems.append(f"ordinal {o} ({block.address(o)}) points at missing attribute {index}")
    return problems
