"""`calicoctl ipam show`: utilisation per pool and block, one address, borrowed addresses, and the
IPAM configuration."""

from __future__ import annotations

import ipaddress
from typing import Any

import click

from calico_cni.model.records import IpamConfig
from calico_cni.datastore.store import IpamSnapshot
from calico_ipam.blocks import in_use

from calico_ipam import inventory
from calico_cni.ctl.context import CtlError, connection_options, ctl, output_option
from calico_cni.ctl.output import cell, emit, percent, table, yes_no


def _usage(total: int, in_use: int, cooling: int) -> dict[str, Any]:
    free = total - in_use - cooling
    return {"total": total, "inUse": in_use, "cooling": cooling, "free": free}


def utilisation(snapshot: IpamSnapshot) -> list[dict[str, Any]]:
    """Per pool (and per block within it): total, in use, cooling down and free addresses. Blocks
    outside every pool (their pool was deleted) are grouped under a pool of None."""
    groups: dict[str | None, list] = {p.name: [] for p in snapshot.pools}
    for block in sorted(snapshot.blocks, key=lambda b: (b.network.version, b.network)):
        pool = inventory.pool_of(snapshot.pools, block.cidr)
        groups.setdefault(pool.name if pool else None, []).append(
            {"cidr": block.cidr, "affinity": block.affine_node, **_usage(block.size, in_use(block), inventory.cooling(block))}
        )
    out = []
    for pool in snapshot.pools:
        blocks = groups[pool.name]
        out.append(
            {
                "name": pool.name,
                "cidr": str(pool.cidr),
                "disabled": pool.disabled,
                **_usage(pool.cidr.num_addresses, sum(b["inUse"] for b in blocks), sum(b["cooling"] for b in blocks)),
                "blocks": blocks,
            }
        )
    if groups.get(None):
        blocks = groups[None]
        out.append({"name": None, "cidr": None, "disabled": None, **_usage(sum(b["total"] for b in blocks), sum(b["inUse"] for b in blocks), sum(b["cooling"] for b in blocks)), "blocks": blocks})
    return out


def borrowed(snapshot: IpamSnapshot) -> list[dict[str, Any]]:
    """Allocations whose node is not the block's affine node."""
    blocks = {b.cidr: b for b in snapshot.blocks}
    out = []
    for a in inventory.allocations(snapshot):
        owner = blocks[a.block].affine_node
        if a.node != owner:
            out.append({"address": str(a.address), "node": a.node, "block": a.block, "blockOwner": owner, "handle": a.handle, "endpoints": a.endpoints})
    return out


def address_info(snapshot: IpamSnapshot, address) -> dict[str, Any]:
    """Whether an address is free, cooling down or in use, and by whom."""
    pool = inventory.pool_of(snapshot.pools, str(address))
    info: dict[str, Any] = {"address": str(address), "state": "free", "pool": pool.name if pool else None}
    block = inventory.block_containing(snapshot, address)
    if block is None:
        if pool is None:
            info["state"] = "not in any IP pool"
        return info
    ordinal = block.ordinal(address)
    info.update(block=block.cidr, blockAffinity=block.affine_node, ordinal=ordinal)
    attr = block.attribute(ordinal)
    if attr is None:
        info["state"] = "free"
    elif attr.get("handle_id") is None:
        info.update(state="cooling down", releasedAt=attr.get("releasedAt"))
    else:
        info.update(
            state="in use",
            handle=attr["handle_id"],
            attributes=attr.get("secondary") or {},
            sequence=block.seq_for_alloc.get(str(ordinal)),
            endpoints=inventory.endpoint_addresses(snapshot).get(address, []),
        )
    return info


def config_doc(config: IpamConfig) -> dict[str, Any]:
    return {
        "strictAffinity": config.strict_affinity,
        "autoAllocateBlocks": config.auto_allocate_blocks,
        "maxBlocksPerHost": config.max_blocks_per_host,
        "ipCooldownSeconds": config.ip_cooldown_seconds,
    }


def emit_config(config: IpamConfig, output: str) -> None:
    rows = [
        ["StrictAffinity", yes_no(config.strict_affinity)],
        ["AutoAllocateBlocks", yes_no(config.auto_allocate_blocks)],
        ["MaxBlocksPerHost", f"{config.max_blocks_per_host}" + (f" (unlimited; safety cap {config.SAFETY_BLOCK_CAP})" if not config.max_blocks_per_host else "")],
        ["IPCooldownSeconds", config.ip_cooldown_seconds],
    ]
    emit(output, config_doc(config), ["property", "value"], rows)


@click.command("show")
@click.option("--show-blocks", is_flag=True, help="Add a row per block under its pool.")
@click.option("--ip", "ip", metavar="ADDR", help="Show whether ADDR is free, cooling down or in use, and by which handle.")
@click.option("--show-borrowed", is_flag=True, help="List addresses a node borrowed from a block affine to another node.")
@click.option("--show-configuration", is_flag=True, help="Show the IPAM configuration (see ipam configure).")
@output_option
@connection_options
def show(show_blocks, ip, show_borrowed, show_configuration, output) -> None:
    """Show how full the IP pools are (and more, with the options)."""
    store = ctl().store
    if show_configuration:
        emit_config(store.ipam_config(), output)
        return
    if ip:
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            raise CtlError(f"{ip!r} is not an IP address") from None
        info = address_info(store.ipam_snapshot(), address)
        emit(output, info, ["field", "value"], [[k, cell(v)] for k, v in info.items()])
        return
    snapshot = store.ipam_snapshot()
    pools = utilisation(snapshot)
    data: dict[str, Any] = {"pools": pools if show_blocks else [{k: v for k, v in p.items() if k != "blocks"} for p in pools]}
    if show_borrowed:
        data["borrowed"] = borrowed(snapshot)
    if output != "table":
        emit(output, data)
        return
    rows = []
    for p in pools:
        rows.append(["IP Pool", p["cidr"] or "(no pool)", p["total"], percent(p["inUse"], p["total"]), percent(p["free"], p["total"])])
        if show_blocks:
            for b in p["blocks"]:
                rows.append(["Block", b["cidr"], b["total"], percent(b["inUse"], b["total"]), percent(b["free"], b["total"]), b["affinity"] or "(none)"])
    headers = ["grouping", "cidr", "ips total", "ips in use", "ips free"] + (["affinity"] if show_blocks else [])
    click.echo(table(headers, rows))
    if snapshot.corrupt:
        click.echo(f"{len(snapshot.corrupt)} IPAM records cannot be parsed and are not counted; calicoctl ipam check lists them.")
    cooling = sum(p["cooling"] for p in pools)
    if cooling:
        click.echo(f"{cooling} released addresses are cooling down (ipCooldownSeconds) and count as neither in use nor free.")
    if show_borrowed:
        click.echo("")
        click.echo(f"Borrowed addresses (allocated by a node from a block affine to another): {len(data['borrowed'])}")
        click.echo(
            table(
                ["ip", "borrowing node", "block", "block owner", "handle"],
                [[b["address"], b["node"] or "(unknown)", b["block"], b["blockOwner"] or "(none)", b["handle"]] for b in data["borrowed"]],
            )
        )
