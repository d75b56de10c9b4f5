"""The IPAM audit behind `calicoctl ipam check`: compare allocations, handles, blocks, affinities and
workload endpoints, and say what is wrong.

`analyse` is pure (a snapshot in, a `Report` out), so `ipam release --from-report` re-runs it on a
fresh snapshot and repairs only what the report lists and is still wrong (`repair.repair_report`).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from calico_cni.datastore.store import IpamSnapshot
from calico_cni.model import keys
from calico_ipam import blocks as blk
from calico_ipam import inventory
from calico_ipam.blocks import consistency_problems
from calico_ipam.errors import InvalidReport
from calico_ipam.inventory import Allocation

REPORT_VERSION = 1
# Allocations younger than this are not judged leaked, also by `ipam gc`: with no runtime vouching
# that no ADD is in flight, a pod that is starting may hold an address before its endpoint exists.
DEFAULT_GRACE = 60.0


@dataclass
class Report:
    """What `ipam check` found. Each list holds one JSON-ready entry per problem."""

    revision: int
    grace_seconds: float
    generated_at: str
    leaked: list[dict[str, Any]] = field(default_factory=list)
    endpoints_without_allocation: list[dict[str, Any]] = field(default_factory=list)
    orphan_handles: list[dict[str, Any]] = field(default_factory=list)
    handle_mismatches: list[dict[str, Any]] = field(default_factory=list)
    inconsistent_blocks: list[dict[str, Any]] = field(default_factory=list)
    stray_affinities: list[dict[str, Any]] = field(default_factory=list)
    corrupt_records: list[dict[str, Any]] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    within_grace: int = 0
    # Allocations without a handle: reported, never leaks, not problems (`unowned_entry`).
    unowned: list[dict[str, Any]] = field(default_factory=list)
    # The leaked allocations themselves (not serialised; `release` uses them).
    leaked_allocations: list[Allocation] = field(default_factory=list, repr=False)

    SECTIONS = (
        ("leaked", "leakedAddresses"),
        ("endpoints_without_allocation", "endpointsWithoutAllocation"),
        ("orphan_handles", "handlesWithoutAddresses"),
        ("handle_mismatches", "handleCountMismatches"),
        ("inconsistent_blocks", "inconsistentBlocks"),
        ("stray_affinities", "affinitiesWithoutBlocks"),
        ("corrupt_records", "corruptRecords"),
    )
    UNOWNED = "allocationsWithoutHandle"

    @property
    def problems(self) -> int:
        """How many problems the report lists (those within the grace period are not problems)."""
        return sum(len(getattr(self, attr)) for attr, _ in self.SECTIONS)

    def to_json(self) -> dict[str, Any]:
        """The report as `ipam check -o FILE` writes it."""
        doc: dict[str, Any] = {
            "version": REPORT_VERSION,
            "generatedAt": self.generated_at,
            "etcdRevision": self.revision,
            "graceSeconds": self.grace_seconds,
            "problems": self.problems,
            "checked": self.checked,
            "withinGracePeriod": self.within_grace,
        }
        for attr, name in self.SECTIONS:
            doc[name] = getattr(self, attr)
        doc[self.UNOWNED] = self.unowned
        return doc

    @classmethod
    def from_json(cls, doc: Any, origin: str) -> "Report":
        """A report read back from its JSON (`origin` names the file in errors); `InvalidReport`
        when it is not one."""
        if not isinstance(doc, dict) or doc.get("version") != REPORT_VERSION:
            raise InvalidReport(f"{origin} is not a calicoctl ipam check report (version {REPORT_VERSION})")
        try:
            report = cls(int(doc["etcdRevision"]), float(doc["graceSeconds"]), str(doc["generatedAt"]))
            for attr, name in cls.SECTIONS:
                entries = doc.get(name) or []
                if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                    raise ValueError(f"{name} is not a list of objects")
                setattr(report, attr, entries)
            report.unowned = list(doc.get(cls.UNOWNED) or [])
            for e in report.leaked:
                leak_key(e)
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidReport(f"{origin} is not a valid ipam check report: {exc}") from None
        return report


def leak_key(entry: dict[str, Any]) -> tuple[str, str, int, int | None]:
    """(handle, block, ordinal, sequence number): one allocation, never its address's next one."""
    seq = entry["sequence"]
    return (str(entry["handle"]), str(entry["block"]), int(entry["ordinal"]), None if seq is None else int(seq))


def _leak_entry(a: Allocation, age: float | None) -> dict[str, Any]:
    return {
        "address": str(a.address),
        "handle": a.handle,
        "block": a.block,
        "ordinal": a.ordinal,
        "sequence": a.sequence,
        "node": a.node,
        "ifname": a.secondary.get("ifname"),
        "namespace": a.secondary.get("namespace"),
        "pod": a.secondary.get("pod"),
        "timestamp": a.timestamp,
        "ageSeconds": None if age is None else int(age),
    }


def unowned_entry(a: Allocation, tunnel: str | None = None) -> dict[str, Any]:
    """How `ipam check` reports an allocation without a handle. Calico's own check calls one that
    no endpoint claims leaked; we do not: `AssignIP` accepts a nil handle, and nothing of ours
    releases such an address unless an operator names it (`calicoctl ipam release --ip`)."""
    if a.endpoints:
        note = f"used by workload endpoint {', '.join(a.endpoints)}"
    elif tunnel is not None:
        note = f"the tunnel address of node {tunnel}"
    elif a.state == blk.BARE:
        note = (
            "no handle, no attributes and no workload endpoint: probably an address released here whose cooldown entry "
            "(releasedAt) a Calico tool dropped when it rewrote the block; `calicoctl ipam release --ip` frees it"
        )
    else:
        note = "allocated without a handle and no workload endpoint claims it; release it with `calicoctl ipam release --ip` if nothing uses it"
    return {
        "address": str(a.address),
        "block": a.block,
        "ordinal": a.ordinal,
        "sequence": a.sequence,
        "kind": "bare entry" if a.state == blk.BARE else "no handle",
        "node": a.node,
        "endpoints": a.endpoints,
        "note": note,
    }


def _endpoint_problems(snapshot: IpamSnapshot) -> list[dict[str, Any]]:
    """Addresses workload endpoints claim that no handle holds."""
    out = []
    for wep in sorted(snapshot.endpoints, key=lambda w: (w.namespace, w.name)):
        for net in wep.ip_networks:
            entry = {"endpoint": f"{wep.namespace}/{wep.name}", "node": wep.node, "containerID": wep.container_id, "address": str(net)}
            try:
                address = ipaddress.ip_interface(str(net)).ip
            except ValueError:
                out.append({**entry, "reason": "not an IP address"})
                continue
            entry["address"] = str(address)
            block = inventory.block_containing(snapshot, address)
            if block is None:
                out.append({**entry, "reason": "no allocation block holds the address"})
                continue
            ordinal = block.ordinal(address)
            state = blk.state(block, ordinal)
            if state == blk.FREE:
                out.append({**entry, "block": block.cidr, "reason": "the address is free"})
            elif state == blk.RELEASED:
                released_at = block.attributes[block.allocations[ordinal]].get("releasedAt")
                out.append({**entry, "block": block.cidr, "reason": f"the address was released at {released_at}"})
    return out


def analyse(snapshot: IpamSnapshot, grace_seconds: float, now: float | None = None) -> Report:
    """Every problem in the snapshot; allocations younger than the grace period are not leaks."""
    now = time.time() if now is None else now
    report = Report(
        revision=snapshot.revision,
        grace_seconds=grace_seconds,
        generated_at=datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    allocations = inventory.allocations(snapshot)
    tunnels = inventory.tunnel_addresses(snapshot)
    for a in allocations:
        if a.endpoints or a.address in tunnels:
            continue
        age = a.age(now)
        if age is not None and age < grace_seconds:
            report.within_grace += 1
            continue
        report.leaked.append(_leak_entry(a, age))
        report.leaked_allocations.append(a)
    report.unowned = [unowned_entry(a, tunnels.get(a.address)) for a in inventory.allocations(snapshot, unowned=True)]

    report.endpoints_without_allocation = _endpoint_problems(snapshot)

    actual = inventory.handle_counts(snapshot)
    recorded = {h.handle_id: h for h in snapshot.handles}
    for handle_id in sorted(set(actual) | set(recorded)):
        handle = recorded.get(handle_id)
        counts = actual.get(handle_id, {})
        if handle is not None and not counts:
            report.orphan_handles.append({"handle": handle_id, "recorded": handle.blocks})
        elif handle is None or handle.blocks != counts:
            report.handle_mismatches.append({"handle": handle_id, "recorded": None if handle is None else handle.blocks, "actual": counts})

    for block in sorted(snapshot.blocks, key=lambda b: (b.network.version, b.network)):
        problems = consistency_problems(block)
        if problems:
            report.inconsistent_blocks.append({"block": block.cidr, "problems": problems})

    blocks = {b.cidr: b for b in snapshot.blocks}
    corrupt_keys = {key for key, _ in snapshot.corrupt}
    for aff in sorted(snapshot.affinities, key=lambda a: (a.node, a.cidr)):
        block = blocks.get(aff.cidr)
        if block is None and keys.block(aff.cidr) in corrupt_keys:
            continue  # the block exists but does not parse: reported as corrupt
        if block is None:
            reason = "the block does not exist"
        elif block.affine_node != aff.node:
            reason = f"the block is affine to {block.affinity or 'no node'}"
        else:
            continue
        report.stray_affinities.append({"node": aff.node, "block": aff.cidr, "state": aff.state, "reason": reason})

    report.corrupt_records = [{"key": key, "reason": reason} for key, reason in snapshot.corrupt]
    report.checked = {
        "pools": len(snapshot.pools),
        "blocks": len(snapshot.blocks),
        "allocations": len(allocations) + len(report.unowned),
        "handles": len(snapshot.handles),
        "affinities": len(snapshot.affinities),
        "workloadEndpoints": len(snapshot.endpoints),
    }
    return report
