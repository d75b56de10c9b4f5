"""`calicoctl ippool`: create, list, get, enable, disable and delete IP pools."""

from __future__ import annotations

from typing import Any

import click

from calico_cni.model.records import IPPool
from calico_ipam import pool_admin
from calico_ipam.inventory import Allocation

from calico_cni.ctl import validate
from calico_cni.ctl.context import connection_options, ctl, output_option
from calico_cni.ctl.output import emit, resource_doc, yes_no


@click.group("ippool")
def ippool() -> None:
    """Manage IP pools: the address ranges pods get addresses from."""


def _rows(pools: list[IPPool]) -> list[list[Any]]:
    return [
        [p.name, p.cidr, p.block_size, p.node_selector, ",".join(p.allowed_uses), p.assignment_mode, yes_no(p.disabled)]
        for p in pools
    ]


HEADERS = ["name", "cidr", "block size", "node selector", "allowed uses", "assignment", "disabled"]


@ippool.command("create")
@click.argument("name")
@click.option("--cidr", required=True, help="The pool's network, e.g. 198.18.0.0/16 or fd00:198:18::/48.")
@click.option("--block-size", type=int, help="Prefix length of the blocks nodes claim (IPv4 20-32, default 26; IPv6 116-128, default 122).")
@click.option("--node-selector", default="all()", show_default=True, help="Which nodes may use the pool, e.g. \"zone == 'a'\".")
@click.option("--disabled", is_flag=True, help="Create the pool disabled (no new addresses are handed out from it).")
@click.option("--allowed-uses", multiple=True, metavar="USES", help="Workload, Tunnel or Workload,Tunnel (default both).")
@click.option("--assignment-mode", default="Automatic", show_default=True, metavar="MODE", help="Automatic, or Manual: used only by networks that name the pool in ipv4_pools/ipv6_pools.")
@output_option
@connection_options
def create(name, cidr, block_size, node_selector, disabled, allowed_uses, assignment_mode, output) -> None:
    """Create the IP pool NAME."""
    validate.resource_name(name)
    net = validate.pool_cidr(cidr)
    size = validate.block_size(net, block_size)
    selector = validate.node_selector(node_selector)
    uses = validate.allowed_uses(allowed_uses) if allowed_uses else validate.allowed_uses(["Workload,Tunnel"])
    mode = validate.assignment_mode(assignment_mode)
    draft = IPPool.new(name, str(net), size, disabled=disabled, node_selector=selector, allowed_uses=uses, assignment_mode=mode)
    pool = pool_admin.create_pool(ctl().store, draft)
    if output == "table":
        click.echo(f"Created IP pool {name} ({pool.cidr}, block size /{pool.block_size}{', disabled' if disabled else ''}).")
    else:
        emit(output, resource_doc(pool))


@ippool.command("list")
@output_option
@connection_options
def list_pools(output) -> None:
    """List every IP pool."""
    pools = ctl().store.pools()
    emit(output, [resource_doc(p) for p in pools], HEADERS, _rows(pools))


@ippool.command("get")
@click.argument("name")
@output_option
@connection_options
def get(name, output) -> None:
    """Show the IP pool NAME."""
    pool = pool_admin.get_pool(ctl().store, name)
    emit(output, resource_doc(pool), HEADERS, _rows([pool]))


@ippool.command("enable")
@click.argument("name")
@connection_options
def enable(name) -> None:
    """Enable the IP pool NAME (addresses are handed out from it again)."""
    changed = pool_admin.set_disabled(ctl().store, name, False)
    click.echo(f"IP pool {name} {'enabled' if changed else 'is already enabled'}.")


@ippool.command("disable")
@click.argument("name")
@connection_options
def disable(name) -> None:
    """Disable the IP pool NAME: no new address comes from it; existing ones stay."""
    changed = pool_admin.set_disabled(ctl().store, name, True)
    click.echo(f"IP pool {name} {'disabled' if changed else 'is already disabled'}.")


@ippool.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also release every address still allocated from the pool (each is listed).")
@connection_options
def delete(name, force) -> None:
    """Delete the IP pool NAME with its blocks and block affinities.

    Refused while addresses of the pool are allocated, unless --force. The pool is disabled first,
    so no new address is handed out from it while it is being taken apart.
    """
    deleted = pool_admin.delete_pool(ctl().store, name, force, releasing=_releasing, releasing_meanwhile=_releasing_meanwhile)
    click.echo(f"Deleted IP pool {name} ({deleted.pool.cidr}): released {deleted.released} addresses, removed {deleted.blocks} blocks.")


def _releasing(a: Allocation) -> None:
    used = f", used by workload endpoint {', '.join(a.endpoints)}" if a.endpoints else ""
    click.echo(f"Releasing {a.address} (handle {a.handle}, node {a.node or 'unknown'}{used})")


def _releasing_meanwhile(a: Allocation) -> None:
    click.echo(f"Releasing {a.address} (handle {a.handle}), allocated meanwhile")
