"""`calicoctl ippool`: shorthands over the resource verbs for the pool operations an operator
types most (create from flags, enable, disable, delete with --force). They go through the same
resource layer as `create -f`, `patch` and `delete ippool`, with the same rules and messages;
listing and showing pools is `calicoctl get ippools`."""

from __future__ import annotations

from typing import Any

import click

from calico_cni.datastore.resources import Ref
from calico_cni.model import kinds
from calico_cni.model.kinds.ipam import IPPOOL
from calico_cni.model.schema import Invalid
from calico_cni.resources import verbs
from calico_cni.resources.documents import Document

from calico_cni.ctl.context import CtlError, connection_options, ctl, output_option
from calico_cni.ctl.output import emit

USES = {u.lower(): u for u in ("Workload", "Tunnel", "LoadBalancer")}
MODES = {m.lower(): m for m in ("Automatic", "Manual")}


@click.group("ippool")
def ippool() -> None:
    """Shorthands for IP pools: create from flags, enable, disable, delete (see also get ippools)."""


def _canonical(values: dict[str, str], given: str, what: str) -> str:
    """A flag value in Calico's spelling, whatever its case (a resource file must spell it exactly)."""
    try:
        return values[given.strip().lower()]
    except KeyError:
        raise CtlError(f"invalid {what} {given.strip()!r}: expected {' or '.join(values.values())}") from None


@ippool.command("create")
@click.argument("name")
@click.option("--cidr", required=True, help="The pool's network, e.g. 198.18.0.0/16 or fd00:198:18::/48.")
@click.option("--block-size", type=int, help="Prefix length of the blocks nodes claim (IPv4 20-32, default 26; IPv6 116-128, default 122).")
@click.option("--node-selector", default="all()", show_default=True, help="Which nodes may use the pool, e.g. \"zone == 'a'\".")
@click.option("--disabled", is_flag=True, help="Create the pool disabled (no new addresses are handed out from it).")
@click.option("--allowed-uses", multiple=True, metavar="USES", help="Workload, Tunnel or Workload,Tunnel (default both).")
@click.option("--assignment-mode", default="Automatic", show_default=True, metavar="MODE", help="Automatic, or Manual: used only by networks that name the pool in ipv4_pools/ipv6_pools.")
@click.option("--vxlan-mode", default="Never", show_default=True, type=click.Choice(["Never", "Always", "CrossSubnet"]), help="VXLAN encapsulation between nodes.")
@click.option("--nat-outgoing", is_flag=True, help="Masquerade traffic from the pool's addresses to destinations outside every pool.")
@output_option
@connection_options
def create(name, cidr, block_size, node_selector, disabled, allowed_uses, assignment_mode, vxlan_mode, nat_outgoing, output) -> None:
    """Create the IP pool NAME (the same as `calicoctl create -f` with an IPPool document)."""
    uses = [_canonical(USES, u, "allowed use") for value in (allowed_uses or ("Workload,Tunnel",)) for u in value.split(",")]
    spec: dict[str, Any] = {
        "cidr": cidr,
        "nodeSelector": node_selector,
        "allowedUses": list(dict.fromkeys(uses)),
        "assignmentMode": _canonical(MODES, assignment_mode, "assignment mode"),
        "vxlanMode": vxlan_mode,
    }
    if block_size is not None:
        spec["blockSize"] = block_size
    if disabled:
        spec["disabled"] = True
    if nat_outgoing:
        spec["natOutgoing"] = True
    raw = {"apiVersion": kinds.API_VERSION, "kind": "IPPool", "metadata": {"name": name}, "spec": spec}
    try:
        _, doc = kinds.decode(raw)
    except Invalid as exc:
        raise CtlError(f"invalid IP pool {name}: {exc}") from None
    outcome = verbs.write(ctl().store, "create", [Document("the command line", IPPOOL, doc)])
    pool = outcome.resources[0]
    if output == "table":
        spec = pool.doc["spec"]
        click.echo(f"Created IP pool {name} ({spec['cidr']}, block size /{spec['blockSize']}{', disabled' if disabled else ''}).")
    else:
        emit(output, pool.document())


def _set_disabled(name: str, disabled: bool) -> None:
    _, changed = verbs.patch(ctl().store, Ref(IPPOOL, name), '{"spec": {"disabled": %s}}' % ("true" if disabled else "false"))
    state = "disabled" if disabled else "enabled"
    click.echo(f"IP pool {name} {state if changed else 'is already ' + state}.")


@ippool.command("enable")
@click.argument("name")
@connection_options
def enable(name) -> None:
    """Enable the IP pool NAME (addresses are handed out from it again)."""
    _set_disabled(name, False)


@ippool.command("disable")
@click.argument("name")
@connection_options
def disable(name) -> None:
    """Disable the IP pool NAME: no new address comes from it; existing ones stay."""
    _set_disabled(name, True)


@ippool.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also release every address still allocated from the pool (each is listed).")
@connection_options
def delete(name, force) -> None:
    """Delete the IP pool NAME with its blocks and block affinities (as `calicoctl delete ippool`).

    Refused while addresses of the pool are allocated, unless --force. The pool is disabled first,
    so no new address is handed out from it while it is being taken apart.
    """
    verbs.delete(ctl().store, [(Ref(IPPOOL, name), None, "")], force=force, report=click.echo)
