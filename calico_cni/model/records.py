"""Typed records of Calico's etcd data.

Every record remembers the etcd `revision` (mod_revision) it was read at: 0 means "not in etcd",
and a write of the record is a compare-and-swap against that revision (see `store.Datastore.commit`).
Records keep every JSON field they do not model and write it back unchanged (other Calico
components share these records and may use fields this code does not know).
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from calico_cni.model import keys

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

WORKLOAD = "Workload"
TUNNEL = "Tunnel"
AUTOMATIC = "Automatic"
MANUAL = "Manual"
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}

# Affinity states.
PENDING = "pending"
CONFIRMED = "confirmed"
PENDING_DELETION = "pendingDeletion"


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 (what we write into timestamps)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time or Go's time.String() form; None if unparsable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    # Go's default form: "2006-01-02 15:04:05.999999999 +0000 UTC" (nanoseconds trimmed to micro).
    parts = text.split(" ")
    if len(parts) >= 3:
        date, clock, offset = parts[0], parts[1], parts[2]
        if "." in clock:
            head, frac = clock.split(".", 1)
            clock = f"{head}.{frac[:6]}"
        try:
            return datetime.fromisoformat(f"{date}T{clock}{offset[:3]}:{offset[3:]}").timestamp()
        except ValueError:
            return None
    return None


def _flag(value: Any) -> bool:
    """A stored boolean; Calico's tools may write "true"/"false" strings."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _split(doc: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in known}


def _load(value: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(value)
    except ValueError as exc:
        raise CorruptRecord(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptRecord(f"{what} is not a JSON object")
    return doc


def dumps(doc: dict[str, Any]) -> bytes:
    """Compact JSON, the way Calico stores values."""
    return json.dumps(doc, separators=(",", ":")).encode()


class CorruptRecord(ValueError):
    """A stored value that cannot be understood."""


# --------------------------------------------------------------------------------------------
# IP pools, nodes, reservations, IPAM config


@dataclass
class IPPool:
    """A v3 IPPool resource."""

    name: str
    cidr: IPNetwork
    block_size: int
    disabled: bool = False
    node_selector: str = "all()"
    allowed_uses: tuple[str, ...] = (WORKLOAD, TUNNEL)
    assignment_mode: str = AUTOMATIC
    doc: dict[str, Any] = field(default_factory=dict)
    revision: int = 0

    @property
    def key(self) -> str:
        """The etcd key of this record."""
        return keys.pool(self.name)

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.cidr.version

    @classmethod
    def from_json(cls, name: str, value: bytes, revision: int = 0) -> "IPPool":
        """The record as read from etcd; `CorruptRecord` when it cannot be parsed."""
        doc = _load(value, f"IP pool {name}")
        spec = doc.get("spec") or {}
        try:
            if not isinstance(spec["cidr"], str):
                raise TypeError("spec.cidr is not a string")
            cidr = ipaddress.ip_network(spec["cidr"], strict=False)
        except (KeyError, ValueError, TypeError):
            raise CorruptRecord(f"IP pool {name} has no valid spec.cidr") from None
        uses = spec.get("allowedUses") or [WORKLOAD, TUNNEL]
        return cls(
            name=name,
            cidr=cidr,
            block_size=int(spec.get("blockSize") or DEFAULT_BLOCK_SIZE[cidr.version]),
            disabled=bool(spec.get("disabled", False)),
            node_selector=spec.get("nodeSelector") or "all()",
            allowed_uses=tuple(uses),
            assignment_mode=spec.get("assignmentMode") or AUTOMATIC,
            doc=doc,
            revision=revision,
        )

    @classmethod
    def new(cls, name: str, cidr: str, block_size: int | None = None, **spec: Any) -> "IPPool":
        """A pool as `calicoctl ippool create` writes it."""
        net = ipaddress.ip_network(cidr, strict=True)
        pool = cls(name=name, cidr=net, block_size=block_size or DEFAULT_BLOCK_SIZE[net.version])
        for k, v in spec.items():
            setattr(pool, k, v)
        pool.doc = {
            "kind": "IPPool",
            "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now_rfc3339()},
            "spec": {},
        }
        return pool

    def block_size_problem(self) -> str | None:
        """Why the pool's blockSize is unusable (outside Calico's ranges, or larger than the pool),
        or None when it is fine."""
        lo, hi = BLOCK_SIZE_RANGE[self.family]
        if not isinstance(self.block_size, int) or not lo <= self.block_size <= hi:
            return f"blockSize {self.block_size} is outside {lo}-{hi} for IPv{self.family}"
        if self.block_size < self.cidr.prefixlen:
            return f"blockSize /{self.block_size} is larger than the pool {self.cidr}"
        return None

    def to_json(self) -> bytes:
        """The record as written to etcd (the fields it does not model kept unchanged)."""
        doc = dict(self.doc)
        spec = dict(doc.get("spec") or {})
        spec.update(
            cidr=str(self.cidr),
            blockSize=self.block_size,
            nodeSelector=self.node_selector,
            allowedUses=list(self.allowed_uses),
            assignmentMode=self.assignment_mode,
        )
        spec.setdefault("ipipMode", "Never")
        spec.setdefault("vxlanMode", "Never")
        spec.setdefault("natOutgoing", False)
        if self.disabled:
            spec["disabled"] = True
        else:
            spec.pop("disabled", None)
        doc["spec"] = spec
        return dumps(doc)


@dataclass
class Node:
    """A v3 Node resource (its labels are what pool node selectors match)."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    doc: dict[str, Any] = field(default_factory=dict)
    revision: int = 0

    @property
    def key(self) -> str:
        """The etcd key of this record."""
        return keys.node(self.name)

    @classmethod
    def from_json(cls, name: str, value: bytes, revision: int = 0) -> "Node":
        """The record as read from etcd; `CorruptRecord` when it cannot be parsed."""
        doc = _load(value, f"node {name}")
        labels = (doc.get("metadata") or {}).get("labels") or {}
        return cls(name=name, labels={str(k): str(v) for k, v in labels.items()}, doc=doc, revision=revision)

    @classmethod
    def new(cls, name: str) -> "Node":
        """A node registering itself, with no labels."""
        return cls(
            name=name,
            doc={
                "kind": "Node",
                "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now_rfc3339()},
                "spec": {},
            },
        )

    def to_json(self) -> bytes:
        """The record as written to etcd (the fields it does not model kept unchanged)."""
        doc = dict(self.doc)
        meta = dict(doc.get("metadata") or {})
        if self.labels:
            meta["labels"] = dict(self.labels)
        else:
            meta.pop("labels", None)
        doc["metadata"] = meta
        return dumps(doc)


def parse_reservation(name: str, value: bytes) -> list[IPNetwork]:
    """The reserved CIDRs of an IPReservation resource (bad entries are skipped)."""
    doc = _load(value, f"IP reservation {name}")
    out = []
    for text in (doc.get("spec") or {}).get("reservedCIDRs") or []:
        if not isinstance(text, str):
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except (ValueError, TypeError):
            continue
    return out


@dataclass
class IpamConfig:
    """Cluster-wide IPAM settings (`/calico/ipam/v2/config`)."""

    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = 0
    ip_cooldown_seconds: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    revision: int = 0

    KNOWN = ("strict_affinity", "auto_allocate_blocks", "maxBlocksPerHost", "ipCooldownSeconds")
    # Calico's limit when neither the request nor maxBlocksPerHost sets one ("a reasonable limit to
    # act as a safeguard against runaway block allocation").
    DEFAULT_BLOCK_LIMIT = 20

    @property
    def key(self) -> str:
        """The etcd key of this record."""
        return keys.IPAM_CONFIG

    @property
    def block_cap(self) -> int:
        """The most blocks one node may hold per family when a request sets no limit of its own:
        `maxBlocksPerHost`, else Calico's safeguard of 20 (libcalico-go ipam.go autoAssign). See
        `allocator.block_limit` for the merge with the CNI config's `ipam.max_blocks_per_node`."""
        return self.max_blocks_per_host if self.max_blocks_per_host > 0 else self.DEFAULT_BLOCK_LIMIT

    @classmethod
    def from_json(cls, value: bytes, revision: int = 0) -> "IpamConfig":
        """The record as read from etcd; `CorruptRecord` when it cannot be parsed."""
        doc = _load(value, "IPAM config")
        # A present key with a boolean omitted means false (Go's omitempty).
        return cls(
            strict_affinity=_flag(doc.get("strict_affinity", False)),
            auto_allocate_blocks=_flag(doc.get("auto_allocate_blocks", False)),
            max_blocks_per_host=int(doc.get("maxBlocksPerHost") or 0),
            ip_cooldown_seconds=int(doc.get("ipCooldownSeconds") or 0),
            extra=_split(doc, cls.KNOWN),
            revision=revision,
        )

    def to_json(self) -> bytes:
        """The record as written to etcd (the fields it does not model kept unchanged)."""
        doc = dict(self.extra)
        if self.strict_affinity:
            doc["strict_affinity"] = True
        if self.auto_allocate_blocks:
            doc["auto_allocate_blocks"] = True
        doc["maxBlocksPerHost"] = self.max_blocks_per_host
        if self.ip_cooldown_seconds:
            doc["ipCooldownSeconds"] = self.ip_cooldown_seconds
        return dumps(doc)


# --------------------------------------------------------------------------------------------
# IPAM: affinities, blocks, handles


@dataclass
class Affinity:
    """A node's claim on a block: pending while the block is being created, then confirmed."""

    node: str
    cidr: str
    state: str = PENDING
    deleted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    revision: int = 0

    @property
    def key(self) -> str:
        """The etcd key of this record."""
        return keys.affinity(self.node, self.cidr)

    @classmethod
    def from_kv(cls, key: str, value: bytes, revision: int = 0) -> "Affinity":
        """The record as read from etcd (key and value); `CorruptRecord` when it cannot be parsed."""
        parsed = keys.parse_affinity(key)
        if parsed is None:
            raise CorruptRecord(f"{key} is not an affinity key")
        # Calico releases before v3.0.7 wrote no state: Calico's Python IPAM an empty value, its
        # early Go port `{}`. Calico v3.30 still reads both as a confirmed affinity (the empty
        # value as `{}` in model.ParseValue, keys.go; an empty state as confirmed in ipam.go's
        # getBlockFromAffinity), so they are the node's own blocks here too, not corrupt.
        doc = _load(value, f"affinity {key}") if value else {}
        return cls(
            node=parsed[0],
            cidr=parsed[1],
            state=doc.get("state") or CONFIRMED,
            deleted=bool(doc.get("deleted", False)),
            extra=_split(doc, ("state", "deleted")),
            revision=revision,
        )

    def to_json(self) -> bytes:
        """The record as written to etcd (the fields it does not model kept unchanged)."""
        return dumps({**self.extra, "state": self.state, "deleted": self.deleted})


@dataclass
class Block:
    """An allocation block: who holds each address (ordinal) of a CIDR."""

    cidr: str
    affinity: str | None
    allocations: list[int | None]
    unallocated: list[int]
    attributes: list[dict[str, Any]]
    sequence_number: int
    seq_for_alloc: dict[str, int] = field(default_factory=dict)
    deleted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    revision: int = 0

    KNOWN = (
        "cidr",
        "affinity",
        "allocations",
        "unallocated",
        "attributes",
        "sequenceNumber",
        "sequenceNumberForAllocation",
        "deleted",
    )

    @property
    def key(self) -> str:
        """The etcd key of this record."""
        return keys.block(self.cidr)

    @property
    def network(self) -> IPNetwork:
        """The block's CIDR as a network."""
        return ipaddress.ip_network(self.cidr)

    @property
    def size(self) -> int:
        """How many addresses the block has."""
        return len(self.allocations)

    @property
    def affine_node(self) -> str | None:
        """The node named by `affinity: host:<node>`, if any."""
        if self.affinity and self.affinity.startswith("host:"):
            return self.affinity[5:]
        return None

    @classmethod
    def new(cls, cidr: str, node: str | None) -> "Block":
        """An empty block; its sequence number starts at the current time in ns, so a block deleted
        and created again never repeats a sequence number an old release record may carry."""
        size = ipaddress.ip_network(cidr).num_addresses
        return cls(
            cidr=cidr,
            affinity=f"host:{node}" if node else None,
            allocations=[None] * size,
            unallocated=list(range(size)),
            attributes=[],
            sequence_number=time.time_ns(),
            extra={"affinity_claim_time": now_rfc3339()} if node else {},
        )

    @classmethod
    def from_kv(cls, key: str, value: bytes, revision: int = 0) -> "Block":
        """The record as read from etcd (key and value); `CorruptRecord` when it cannot be parsed."""
        doc = _load(value, f"block {key}")
        try:
            cidr = str(ipaddress.ip_network(doc["cidr"]))
            size = ipaddress.ip_network(cidr).num_addresses
            stored = doc.get("allocations")
            allocations = [None] * size if stored is None else [None if a is None else int(a) for a in stored]
            unallocated = [int(o) for o in doc.get("unallocated") or []]
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptRecord(f"block {key} is malformed: {exc}") from None
        if len(allocations) != size:
            raise CorruptRecord(f"block {key} has {len(allocations)} allocations for {size} addresses")
        return cls(
            cidr=cidr,
            affinity=doc.get("affinity"),
            allocations=allocations,
            unallocated=unallocated,
            attributes=list(doc.get("attributes") or []),
            sequence_number=int(doc.get("sequenceNumber") or 0),
            seq_for_alloc={str(k): int(v) for k, v in (doc.get("sequenceNumberForAllocation") or {}).items()},
            deleted=bool(doc.get("deleted", False)),
            extra=_split(doc, cls.KNOWN),
            revision=revision,
        )

    def to_json(self) -> bytes:
        """The record as written to etcd (the fields it does not model kept unchanged)."""
        return dumps(
            {
                **self.extra,
                "cidr": self.cidr,
                "affinity": self.affinity,
                "allocations": self.allocations,
                "unallocated": self.unallocated,
                "attributes": self.attributes,
                "sequenceNumber": self.sequence_number,
                "sequenceNumberForAllocation": self.seq_for_alloc,
                "deleted": self.deleted,
            }
        )

    def address(self, ordinal: int) -> IPAddress:
        """The address of an ordinal."""
        return self.network[ordinal]

    def ordinal(self, address: IPAddress) -> int:
        """The ordinal of an address inside this block."""
        net = self.network
        if address not in net:
            raise ValueError(f"{address} is not in block {self.cidr}")
        return int(address) - int(net.network_address)

    def attribute(self, ordinal: int) -> dict[str, Any] | None:
        """The attribute entry of an allocated ordinal (None when free)."""
        index = self.allocations[ordinal]
        if index is None or not 0 <= index < len(self.attributes):
            return None
        return self.attributes[index]


@dataclass
class Handle:
    """How many addresses an allocation handle holds in each block."""

    handle_id: str
    blocks: dict[str, int] = field(default_factory=dict)
    deleted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    revision: int = 0

    @property
    def key(self) -> str:
        """The etcd key of this record."""
        return keys.handle(self.handle_id)

    @classmethod
    def from_kv(cls, key: str, value: bytes, revision: int = 0) -> "Handle":
        """The record as read from etcd (key and value); `CorruptRecord` when it cannot be parsed."""
        doc = _load(value, f"handle {key}")
        try:
            counts = {str(k): int(v) for k, v in (doc.get("block") or {}).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise CorruptRecord(f"handle {key} has invalid block counts: {exc}") from None
        return cls(
            handle_id=key[len(keys.HANDLES) :],
            blocks=counts,
            deleted=bool(doc.get("deleted", False)),
            extra=_split(doc, ("block", "deleted")),
            revision=revision,
        )

    @property
    def total(self) -> int:
        """How many addresses the handle holds in all its blocks."""
        return sum(self.blocks.values())

    def to_json(self) -> bytes:
        """The record as written to etcd (the fields it does not model kept unchanged)."""
        return dumps({**self.extra, "block": self.blocks, "deleted": self.deleted})


# --------------------------------------------------------------------------------------------
# Workload endpoints


# The annotation of a WorkloadEndpoint naming the CNI network that wrote it (GC tells a network's
# endpoints by it).
NETWORK_ANNOTATION = "cni.projectcalico.org/network"


@dataclass
class WorkloadEndpoint:
    """A v3 WorkloadEndpoint resource (written by the `calico` plugin)."""

    namespace: str
    name: str
    doc: dict[str, Any] = field(default_factory=dict)
    revision: int = 0

    @property
    def key(self) -> str:
        """The etcd key of this record."""
        return keys.workload_endpoint(self.namespace, self.name)

    @property
    def spec(self) -> dict[str, Any]:
        """The endpoint's spec (created empty when absent)."""
        return self.doc.setdefault("spec", {})

    @property
    def container_id(self) -> str:
        """The container the endpoint is for ("" when unrecorded)."""
        return self.spec.get("containerID", "")

    @property
    def node(self) -> str:
        """The node the endpoint is on ("" when unrecorded)."""
        return self.spec.get("node", "")

    @property
    def ip_networks(self) -> list[str]:
        """The endpoint's addresses as CIDR text (spec.ipNetworks)."""
        return list(self.spec.get("ipNetworks") or [])

    @classmethod
    def from_kv(cls, key: str, value: bytes, revision: int = 0) -> "WorkloadEndpoint":
        """The record as read from etcd (key and value); `CorruptRecord` when it cannot be parsed."""
        rest = key[len(keys.WORKLOAD_ENDPOINTS) :]
        namespace, _, name = rest.partition("/")
        return cls(namespace=namespace, name=name, doc=_load(value, f"workload endpoint {key}"), revision=revision)

    def to_json(self) -> bytes:
        """The record as written to etcd (the fields it does not model kept unchanged)."""
        return dumps(self.doc)
