"""`calicoctl ipam release`: release addresses by hand, or repair what an `ipam check` report lists."""

from __future__ import annotations

import ipaddress

import click

from calico_ipam import inventory, repair
from calico_cni.ctl.context import CtlError, connection_options, ctl, read_json_file
from calico_cni.ctl.ipam_check import Report, analyse, leak_key


@click.command("release")
@click.option("--ip", "ips", multiple=True, metavar="ADDR", help="Release this address (repeatable).")
@click.option("--from-report", "report_file", metavar="FILE", help="Repair what this `ipam check -o FILE` report lists and is still wrong.")
@click.option("--force", is_flag=True, help="With --ip: release even an address a workload endpoint still uses.")
@connection_options
def release(ips, report_file, force) -> None:
    """Release addresses, or repair what an `ipam check` report found.

    --ip releases the given addresses; an address a workload endpoint uses is refused
    unless --force.

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
    used = inventory.endpoint_addresses(snapshot)
    wanted = []
    for text in texts:
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            raise CtlError(f"{text!r} is not an IP address") from None
        block = inventory.block_containing(snapshot, address)
        attr = block.attribute(block.ordinal(address)) if block is not None else None
        if attr is None:
            raise CtlError(f"{address} is not allocated; nothing released")
        if attr.get("handle_id") is None:
            raise CtlError(f"{address} was already released at {attr.get('releasedAt')}; nothing released")
        allocation = next(a for a in inventory.block_allocations(block) if a.address == address)
        if used.get(address) and not force:
            raise CtlError(
                f"{address} is used by workload endpoint {', '.join(used[address])}; nothing released "
                "(delete the pod, or pass --force to release it anyway)"
            )
        wanted.append(allocation)
    released = {a.address for a in repair.release_allocations(store, wanted)}
    for a in wanted:
        if a.address in released:
            click.echo(f"Released {a.address} (handle {a.handle}, block {a.block}).")
    missed = [a for a in wanted if a.address not in released]
    if missed:
        raise CtlError(f"{missed[0].address} changed while it was being released (released or reallocated meanwhile); left alone")


def _release_report(path: str) -> None:
    report = Report.from_json(read_json_file(path), path)
    store = ctl().store
    now = analyse(store.ipam_snapshot(), report.grace_seconds)
    repaired = skipped = 0

    def gone(what: str) -> None:
        nonlocal skipped
        skipped += 1
        click.echo(f"Skipped {what}: no longer a problem.")

    still = {e["block"] for e in now.inconsistent_blocks}
    for e in report.inconsistent_blocks:
        if e["block"] in still and repair.repair_block(store, e["block"]):
            repaired += 1
            click.echo(f"Repaired the bookkeeping of block {e['block']}.")
        else:
            gone(f"block {e['block']}")

    still = {e["handle"] for e in now.handle_mismatches + now.orphan_handles}
    for e in report.handle_mismatches + report.orphan_handles:
        done = repair.rebuild_handle(store, e["handle"]) if e["handle"] in still else None
        if done:
            repaired += 1
            click.echo(f"Repaired handle: {done}.")
        else:
            gone(f"handle {e['handle']}")

    current = {a.key: a for a in now.leaked_allocations}
    listed = [(leak_key(e), e) for e in report.leaked]
    to_release = [current[k] for k, _ in listed if k in current]
    released = {(a.block, a.ordinal) for a in repair.release_allocations(store, to_release)} if to_release else set()
    for key, e in listed:
        if (key[1], key[2]) in released and key in current:
            repaired += 1
            click.echo(f"Released {e['address']} (handle {e['handle']}, block {e['block']}, sequence {e['sequence']}).")
        else:
            gone(f"{e['address']} (handle {e['handle']})")

    still = {(e["node"], e["block"]) for e in now.stray_affinities}
    for e in report.stray_affinities:
        if (e["node"], e["block"]) in still and repair.delete_stray_affinity(store, e["node"], e["block"]):
            repaired += 1
            click.echo(f"Deleted the affinity of node {e['node']} to block {e['block']}.")
        else:
            gone(f"affinity of {e['node']} to {e['block']}")

    manual = len(report.endpoints_without_allocation) + len(report.corrupt_records)
    for e in report.endpoints_without_allocation:
        click.echo(f"Needs a person: workload endpoint {e['endpoint']} claims {e['address']} ({e['reason']}).")
    for e in report.corrupt_records:
        click.echo(f"Needs a person: {e['key']} cannot be parsed ({e['reason']}).")
    click.echo(f"Repaired {repaired} problems; skipped {skipped} that are gone; {manual} need a person.")
