"""`calicoctl ipam check`: compare allocations, handles, blocks, affinities and workload endpoints
(the audit is `calico_ipam.audit`; this module prints its report)."""

from __future__ import annotations

import json
from typing import Any

import click

from calico_cni.ctl.context import CtlError, connection_options, ctl
from calico_cni.ctl.errors import EXIT_PROBLEMS
from calico_cni.ctl.output import table
from calico_ipam.audit import DEFAULT_GRACE, Report, analyse


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
    if report.unowned:
        lines.append("")
        lines.append(f"Allocations without a handle (kept; not counted as problems): {len(report.unowned)}")
        rows = [[e["address"], e["kind"], e["node"] or "(unknown)", e["block"], e["note"]] for e in report.unowned]
        lines.extend("  " + line for line in table(["address", "kind", "node", "block", "note"], rows).splitlines())
        lines.append("")
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
    without their block, and records that cannot be parsed. Allocations without a handle
    (Calico's AssignIP accepts none) are listed apart and are never leaks; an entry with no
    handle and no attributes is probably a released address whose cooldown entry a Calico tool
    stripped, which `calicoctl ipam release --ip ADDR` frees.

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
