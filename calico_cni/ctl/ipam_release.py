"""`calicoctl ipam release`: release addresses by hand, or repair what an `ipam check` report lists
(the checks and writes are `calico_ipam.repair`'s; this module parses, calls and prints)."""

from __future__ import annotations

import ipaddress

import click

from calico_cni.ctl.context import CtlError, connection_options, ctl, read_json_file
from calico_ipam import repair
from calico_ipam.audit import Report


@click.command("release")
@click.option("--ip", "ips", multiple=True, metavar="ADDR", help="Release this address (repeatable).")
@click.option("--from-report", "report_file", metavar="FILE", help="Repair what this `ipam check -o FILE` report lists and is still wrong.")
@click.option("--force", is_flag=True, help="With --ip: release even an address a workload endpoint still uses.")
@connection_options
def release(ips, report_file, force) -> None:
    """Release addresses, or repair what an `ipam check` report found.

    --ip releases the given addresses, with or without a handle; an address a workload
    endpoint uses is refused unless --force.

    --from-report checks every problem of the report again and repairs only what is still
    wrong: leaked addresses are released (only if the same allocation, by handle, block,
    ordinal and sequence number, still holds them with no workload endpoint, so an address
    released and reused since is never freed), handle counts are rewritten from the blocks,
    handles without addresses are deleted, block bookkeeping is rebuilt and affinities without
    their block are deleted. Endpoints without an allocation and unparsable records are listed
    for a person to fix.
    """
    if bool(ips) == bool(report_file):
        raise CtlError("give either --ip ADDR (one or more) or --from-report FILE")
    if ips:
        _release_ips(ips, force)
    else:
        _release_report(report_file)


def _release_ips(texts, force: bool) -> None:
    store = ctl().store
    snapshot = store.ipam_snapshot()
    wanted = []
    for text in texts:
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            raise CtlError(f"{text!r} is not an IP address") from None
        wanted.append(repair.allocation_to_release(snapshot, address, force))
    released = {a.address for a in repair.release_allocations(store, wanted)}
    for a in wanted:
        if a.address in released:
            click.echo(f"Released {a.address} ({f'handle {a.handle}' if a.handle else 'no handle'}, block {a.block}).")
    missed = [a for a in wanted if a.address not in released]
    if missed:
        raise CtlError(f"{missed[0].address} changed while it was being released (released or reallocated meanwhile); left alone")


def _describe(r: repair.Repaired) -> str:
    """What one outcome of `repair_report` prints."""
    e = r.entry
    if r.kind == "block":
        return f"Repaired the bookkeeping of block {e['block']}." if r.done else f"Skipped block {e['block']}: no longer a problem."
    if r.kind == "handle":
        return f"Repaired handle: {r.what}." if r.done else f"Skipped handle {e['handle']}: no longer a problem."
    if r.kind == "leak":
        if r.done:
            return f"Released {e['address']} (handle {e['handle']}, block {e['block']}, sequence {e['sequence']})."
        return f"Skipped {e['address']} (handle {e['handle']}): no longer a problem."
    if r.done:
        return f"Deleted the affinity of node {e['node']} to block {e['block']}."
    return f"Skipped affinity of {e['node']} to {e['block']}: no longer a problem."


def _release_report(path: str) -> None:
    report = Report.from_json(read_json_file(path), path)
    repaired = skipped = 0
    for outcome in repair.repair_report(ctl().store, report):
        repaired += outcome.done
        skipped += not outcome.done
        click.echo(_describe(outcome))
    manual = len(report.endpoints_without_allocation) + len(report.corrupt_records)
    for e in report.endpoints_without_allocation:
        click.echo(f"Needs a person: workload endpoint {e['endpoint']} claims {e['address']} ({e['reason']}).")
    for e in report.corrupt_records:
        click.echo(f"Needs a person: {e['key']} cannot be parsed ({e['reason']}).")
    click.echo(f"Repaired {repaired} problems; skipped {skipped} that are gone; {manual} need a person.")
