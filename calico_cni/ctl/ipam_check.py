"""`calicoctl ipam check`: compare allocations, handles, blocks, affinities and workload endpoints.

`analyse` is pure (a snapshot in, a `Report` out), so `ipam release --from-report` re-runs it on a
fresh snapshot and repairs only what the report lists and is still wrong.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import click

from calico_cni.model import keys
from calico_cni.datastore.store import IpamSnapshot
from calico_ipam.blocks import consistency_problems

from calico_ipam import inventory
from calico_cni.ctl.context import EXIT_PROBLEMS, CtlError, connection_options, ctl
from calico_ipam.inventory import Allocation
from calico_cni.ctl.output import table

REPORT_VERSION = 1
DEFAULT_GRACE = 60.0  # rule 20; also `ipam gc`'s


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

    @property
    def problems(self) -> int:
        return sum(len(getattr(self, attr)) for attr, _ in self.SECTIONS)

    def to_json(self) -> dict[str, Any]:
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
        return doc

    @classmethod
    def from_json(cls, doc: Any, origin: str) -> "Report":
        if not isinstance(doc, dict) or doc.get("version") != REPORT_VERSION:
            raise CtlError(f"{origin} is not a calicoctl ipam check report (version {REPORT_VERSION})")
        try:
            report = cls(int(doc["etcdRevision"]), float(doc["graceSeconds"]), str(doc["generatedAt"]))
            for attr, name in cls.SECTIONS:
                entries = doc.get(name) or []
                if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                    raise ValueError(f"{name} is not a list of objects")
                setattr(report, attr, entries)
            for e in report.leaked:
                leak_key(e)
        except (KeyError, ValueError, TypeError) as exc:
            raise CtlError(f"{origin} is not a valid ipam check report: {exc}") from None
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
            attr = block.attribute(block.ordinal(address))
            if attr is None:
                out.append({**entry, "block": block.cidr, "reason": "the address is free"})
            elif attr.get("handle_id") is None:
                out.append({**entry, "block": block.cidr, "reason": f"the address was released at {attr.get('releasedAt')}"})
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
        "allocations": len(allocations),
        "handles": len(snapshot.handles),
        "affinities": len(snapshot.affinities),
        "workloadEndpoints": len(snapshot.endpoints),
    }
    return report


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _counts(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "(missing)"
    return ", ".join(f"{c}: {n}" for c, n in sorted(counts.items())) or "(none)"


def render(report: Report) -> str:
    """The report for people: a count per kind of problem, and a table under each that has some."""
    c = report.checked
    lines = [
        f"Checked {c['pools']} IP pools, {c['blocks']} blocks, {c['allocations']} allocations, {c['handles']} handles, "
        f"{c['affinities']} block affinities and {c['workloadEndpoints']} workload endpoints at etcd revision {report.revision}.",
        "",
    ]

    def section(title: str, headers: list[str], rows: list[list[Any]]) -> None:
        if rows:
            lines.append("")
        lines.append(f"{title}: {len(rows)}")
        if rows:
            lines.extend("  " + line for line in table(headers, rows).splitlines())
            lines.append("")

    section(
        f"Leaked addresses (allocated, no workload endpoint, older than {report.grace_seconds:g}s)",
        ["address", "handle", "node", "block", "ordinal", "sequence", "age"],
        [[e["address"], e["handle"], e["node"], e["block"], e["ordinal"], e["sequence"], _age(e["ageSeconds"])] for e in report.leaked],
    )
    section(
        "Workload endpoints without an allocation",
        ["endpoint", "node", "address", "reason"],
        [[e["endpoint"], e["node"], e["address"], e["reason"]] for e in report.endpoints_without_allocation],
    )
    section("Handles without addresses", ["handle", "recorded"], [[e["handle"], _counts(e["recorded"])] for e in report.orphan_handles])
    section(
        "Handles whose counts do not match the blocks",
        ["handle", "recorded", "in blocks"],
        [[e["handle"], _counts(e["recorded"]), _counts(e["actual"])] for e in report.handle_mismatches],
    )
    section("Blocks with inconsistent bookkeeping", ["block", "problem"], [[e["block"], "; ".join(e["problems"])] for e in report.inconsistent_blocks])
    section("Block affinities without their block", ["node", "block", "state", "reason"], [[e["node"], e["block"], e["state"], e["reason"]] for e in report.stray_affinities])
    section("Records that cannot be parsed", ["key", "reason"], [[e["key"], e["reason"]] for e in report.corrupt_records])
    if report.within_grace:
        lines.append(
            f"{report.within_grace} allocations have no workload endpoint yet but are younger than {report.grace_seconds:g}s "
            "(a pod may be starting); not counted."
        )
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip("\n")


@click.command("check")
@click.option("-o", "--output", "report_file", metavar="FILE", help="Also write the report as JSON to FILE ('-': only the JSON, on stdout).")
@click.option("--grace", type=click.FloatRange(min=0), default=DEFAULT_GRACE, show_default=True, metavar="SECONDS", help="Allocations younger than this are never judged leaked.")
@connection_options
def check(report_file, grace) -> None:
    """Find leaked addresses and inconsistent IPAM records.

    Reads every block, handle, affinity and workload endpoint at one etcd revision and reports:
    leaked addresses (allocated, no workload endpoint claims them, older than --grace),
    workload endpoints whose address is not allocated, handles without addresses, handles
    whose counts do not match the blocks, blocks with inconsistent bookkeeping, affinities
    without their block, and records that cannot be parsed.

    Exits 0 when nothing is wrong and 3 when problems were found. Repair what a report lists
    with `calicoctl ipam release --from-report FILE`.
    """
    report = analyse(ctl().store.ipam_snapshot(), grace)
    text = json.dumps(report.to_json(), indent=2) + "\n"
    if report_file == "-":
        click.echo(text, nl=False)
    else:
        click.echo(render(report))
        click.echo("")
        if report_file:
            try:
                with open(report_file, "w", encoding="utf-8") as f:
                    f.write(text)
            except OSError as exc:
                raise CtlError(f"cannot write the report to {report_file}: {exc.strerror}") from None
            click.echo(f"Report written to {report_file}; repair it with: calicoctl ipam release --from-report {report_file}")
        click.echo(f"Check complete; found {report.problems} problems.")
    if report.problems:
        click.get_current_context().exit(EXIT_PROBLEMS)
