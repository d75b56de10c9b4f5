"""`calicoctl ipam show`: utilisation per pool and block, one address, borrowed addresses, and the
IPAM configuration."""

from __future__ import annotations

import ipaddress
from typing import Any

import click

from calico_cni.ctl.context import CtlError, connection_options, ctl, output_option
from calico_cni.ctl.output import cell, emit, percent, table, yes_no
from calico_cni.model.records import IpamConfig
from calico_ipam.inventory import address_info, borrowed, utilisation


def config_doc(config: IpamConfig) -> dict[str, Any]:
    """The IPAM configuration as `-o json|yaml` prints it."""
    return {
        "strictAffinity": config.strict_affinity,
        "autoAllocateBlocks": config.auto_allocate_blocks,
        "maxBlocksPerHost": config.max_blocks_per_host,
        "ipCooldownSeconds": config.ip_cooldown_seconds,
    }


def emit_config(config: IpamConfig, output: str) -> None:
    """Print the IPAM configuration (a table, or JSON/YAML)."""
    rows = [
        ["StrictAffinity", yes_no(config.strict_affinity)],
        ["AutoAllocateBlocks", yes_no(config.auto_allocate_blocks)],
        ["MaxBlocksPerHost", f"{config.max_blocks_per_host}" + (" (Calico's default: 20)" if not config.max_blocks_per_host else "")],
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
                [[b["address"], b["node"] or "(unknown)", b["block"], b["blockOwner"] or "(none)", b["handle"] or "(none)"] for b in data["borrowed"]],
            )
        )
