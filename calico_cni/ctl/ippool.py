"""`calicoctl ippool`: create, list, get, enable, disable and delete IP pools."""

from __future__ import annotations

from typing import Any

import click

from calico_cni.model import keys
from calico_cni.model.records import IPPool
from calico_cni.datastore.retry import Conflict, with_retries

from calico_ipam import repair
from calico_cni.ctl import validate
from calico_cni.ctl.context import CtlError, connection_options, ctl, output_option
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


def _get(name: str) -> IPPool:
    pool = ctl().store.pool(name)
    if pool is None:
        raise CtlError(f"IP pool {name} does not exist")
    return pool


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
    store = ctl().store

    def step(attempt: int) -> IPPool:
        pools, revision = store.pools_and_revision()
        if any(p.name == name for p in pools):
            raise CtlError(f"IP pool {name} already exists")
        validate.no_overlap(net, pools, name)
        pool = IPPool.new(name, str(net), size, disabled=disabled, node_selector=selector, allowed_uses=uses, assignment_mode=mode)
        # Fails if any pool was created or changed since the overlap check read them.
        if not store.commit(puts=[pool], prefix_unchanged_since=(keys.POOLS, revision)):
            raise Conflict()
        return pool

    pool = with_retries(f"creating IP pool {name}", step)
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
    pool = _get(name)
    emit(output, resource_doc(pool), HEADERS, _rows([pool]))


def _set_disabled(name: str, disabled: bool) -> bool:
    """Set the pool's disabled flag (CAS, retried); False when it already had that value."""
    store = ctl().store

    def step(attempt: int) -> bool:
        pool = _get(name)
        if pool.disabled == disabled:
            return False
        pool.disabled = disabled
        if not store.commit(puts=[pool]):
            raise Conflict()
        return True

    return with_retries(f"{'disabling' if disabled else 'enabling'} IP pool {name}", step)


@ippool.command("enable")
@click.argument("name")
@connection_options
def enable(name) -> None:
    """Enable the IP pool NAME (addresses are handed out from it again)."""
    changed = _set_disabled(name, False)
    click.echo(f"IP pool {name} {'enabled' if changed else 'is already enabled'}.")


@ippool.command("disable")
@click.argument("name")
@connection_options
def disable(name) -> None:
    """Disable the IP pool NAME: no new address comes from it; existing ones stay."""
    changed = _set_disabled(name, True)
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
    store = ctl().store
    pool = _get(name)
    held = repair.pool_allocations(store.ipam_snapshot(), pool)
    if held and not force:
        raise CtlError(_refusal(name, held))
    was_disabled = pool.disabled
    _set_disabled(name, True)
    held = repair.pool_allocations(store.ipam_snapshot(), pool)
    if held and not force:
        if not was_disabled:
            _set_disabled(name, False)
        raise CtlError(_refusal(name, held))
    released = 0
    for a in held:
        used = f", used by workload endpoint {', '.join(a.endpoints)}" if a.endpoints else ""
        click.echo(f"Releasing {a.address} (handle {a.handle}, node {a.node or 'unknown'}{used})")
    if held:
        released = len(repair.release_allocations(store, held))
    blocks, meanwhile = repair.remove_pool_blocks(
        store, pool, force, releasing=lambda a: click.echo(f"Releasing {a.address} (handle {a.handle}), allocated meanwhile")
    )
    released += meanwhile
    repair.delete_pool(store, name)
    click.echo(f"Deleted IP pool {name} ({pool.cidr}): released {released} addresses, removed {blocks} blocks.")


def _refusal(name: str, held) -> str:
    sample = ", ".join(f"{a.address} ({a.handle})" for a in held[:3]) + (", ..." if len(held) > 3 else "")
    return f"IP pool {name} still has {len(held)} allocated addresses: {sample}; release them first or pass --force to release them too"
