"""Pure operations on one allocation block: no I/O, so every rule here is unit-testable.

An ordinal is an address's index in the block. `allocations[ordinal]` points at an entry of
`attributes` (or is None when free); `unallocated` lists free ordinals, head first (FIFO reuse).
Ordinals with the same handle and attributes share one entry, as Calico writes blocks (so a block
stays small and other Calico tools read it unchanged). A release points the
ordinal at a fresh `{"releasedAt": ...}` entry; `cleanup` returns ordinals whose cooldown has
passed to the tail of `unallocated` and drops attribute entries no ordinal uses.

What an ordinal's entry means is decided in one place, `state` (and `entry_state`): every module
that asks "allocated or released?" asks it. Only our own cooldown entries (`releasedAt`) are ever
freed without an operator: Calico's `AssignIP` accepts a nil handle, so an entry without
`handle_id` may be a live address (libcalico-go v3.30.0 `AllocationAttribute` encodes it as
`{"handle_id": null, "secondary": {...}}`).

Sequence numbers follow Calico v3.30.0: an allocation records the block's current
`sequenceNumber` (`SetSequenceNumberForOrdinal`), then the block's number is incremented (as
`updateBlock` does on every write); a release clears the ordinal's entry
(`ClearSequenceNumberForOrdinal`).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from calico_cni.model.records import Block, IPNetwork, now_rfc3339, parse_time


# The states of an ordinal (`state`).
FREE = "free"
HELD = "held"  # allocated to a handle
NO_HANDLE = "no handle"  # allocated with no handle but with attributes (Calico's AssignIP with a nil handle)
BARE = "bare"  # no handle, no attributes, no releasedAt: see `entry_state`
RELEASED = "released"  # our cooldown entry {"releasedAt": ...}; Calico's main branch writes the same
DANGLING = "dangling"  # points at no attribute entry: its owner is unknown
# The states in which the address may belong to a live workload: never freed automatically.
ALLOCATED = frozenset({HELD, NO_HANDLE, BARE, DANGLING})
# The allocations an operator may release by address (`calicoctl ipam release --ip`).
RELEASABLE = frozenset({HELD, NO_HANDLE, BARE})


def handle_of(attr: Any) -> str | None:
    """The handle an attribute entry names (None: it names none)."""
    handle = attr.get("handle_id") if isinstance(attr, dict) else None
    return handle if isinstance(handle, str) and handle else None


def entry_state(attr: Any) -> str:
    """What an attribute entry means: HELD (it names a handle), RELEASED (our cooldown entry, a
    non-null `releasedAt` and no handle), NO_HANDLE (no handle, but other content: an allocation
    made with a nil handle, which Calico v3.30 writes as `{"handle_id": null, "secondary":
    {...}}`), or BARE (no handle and nothing else: `{}`, or `{"handle_id": null, "secondary":
    null}`, which is both what v3.30's `AllocationAttribute` makes of our `{"releasedAt": ...}`
    when a Calico tool rewrites the block, and a nil-handle allocation made with no attributes;
    the two cannot be told apart, so it is kept until an operator releases it)."""
    if not isinstance(attr, dict):
        return NO_HANDLE  # not a shape anyone writes: kept, an operator decides
    if handle_of(attr) is not None:
        return HELD
    if attr.get("releasedAt") is not None:
        return RELEASED
    if any(v not in (None, "", {}, []) for v in attr.values()):
        return NO_HANDLE
    return BARE


def state(block: Block, ordinal: int) -> str:
    """The state of one ordinal: FREE, DANGLING, or its entry's `entry_state`."""
    index = block.allocations[ordinal]
    if index is None:
        return FREE
    if not 0 <= index < len(block.attributes):
        return DANGLING
    return entry_state(block.attributes[index])


def ordinals_in(block: Block, *states: str) -> list[int]:
    """The ordinals of the block in any of these states, in ordinal order."""
    return [o for o in range(block.size) if state(block, o) in states]


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
    """Allocate these specific (free) ordinals to the handle: each records the block's current
    sequence number, then the block's is incremented (Calico v3.30.0: `SetSequenceNumberForOrdinal`
    in `autoAssign`/`assign`, then `updateBlock`'s increment)."""
    for o in ordinals:
        if block.allocations[o] is not None:
            raise ValueError(f"ordinal {o} of block {block.cidr} is not free")
    seq = block.sequence_number
    index = _attribute_index(block, {"handle_id": handle_id, "secondary": dict(secondary)})
    wanted = set(ordinals)
    for o in ordinals:
        block.allocations[o] = index
        block.seq_for_alloc[str(o)] = seq
    block.unallocated = [o for o in block.unallocated if o not in wanted]
    _bump(block)


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
        if handle_of(attr) != handle_id:
            continue
        recorded = (attr.get("secondary") or {}).get("ifname")
        if ifname is None or recorded is None or recorded == ifname:
            out.append(o)
    return out


def release(block: Block, ordinals: Iterable[int], expected_seq: dict[int, int] | None = None) -> list[int]:
    """Release allocated ordinals (with or without a handle: callers choose which); with
    `expected_seq`, only those still holding that allocation's sequence number.

    Returns the ordinals released. Each is pointed at a fresh releasedAt entry (shared entries are
    never edited) and its sequence number entry is cleared, as Calico v3.30.0's release does; call
    `cleanup` to return cooled-down ones to the free list.
    """
    released = []
    stamp = now_rfc3339()
    for o in ordinals:
        if state(block, o) not in RELEASABLE:
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
    """Free released ordinals (our cooldown entries, `RELEASED`) whose cooldown has passed and drop
    unused attribute entries. Nothing else is ever freed here: an entry without a handle may be a
    live address Calico allocated with a nil handle.

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
        if entry_state(attr) != RELEASED:
            continue
        released_at = parse_time(attr.get("releasedAt"))
        if cooldown_seconds <= 0 or released_at is None or now - released_at >= cooldown_seconds:
            block.allocations[o] = None
            block.unallocated.append(o)
            block.seq_for_alloc.pop(str(o), None)  # cleared at release already; Calico's main branch clears it here
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
    """When a released ordinal becomes free again (None if it is not released; 0.0, long past,
    when its release time does not parse, which `cleanup` frees at once)."""
    if state(block, ordinal) != RELEASED:
        return None
    released_at = parse_time(block.attributes[block.allocations[ordinal]].get("releasedAt"))
    return 0.0 if released_at is None else released_at + cooldown_seconds


def is_empty(block: Block) -> bool:
    """No ordinal allocated or cooling down."""
    return all(a is None for a in block.allocations)


def in_use(block: Block) -> int:
    """Ordinals allocated, with or without a handle (cooling-down ones excluded)."""
    return len(ordinals_in(block, *ALLOCATED))


def cooling(block: Block) -> int:
    """Ordinals released and not yet free again."""
    return len(ordinals_in(block, RELEASED))


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
