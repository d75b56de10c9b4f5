"""`calicoctl ipam gc`: the CNI GC reconciliation for runtimes that never send GC (podman,
containerd), run by an operator from the list of containers that are alive on a node."""

from __future__ import annotations

import json
import sys

import click

from calico_cni.ctl.context import CtlError, connection_options, ctl
from calico_cni.dataplane.netns import Netns
from calico_cni.protocol.errors import CniError
from calico_cni.protocol.gc import VALID_ATTACHMENTS, valid_attachments
from calico_ipam.audit import DEFAULT_GRACE
from calico_ipam.reconcile import Live, reconcile


def parse_live(text: str, origin: str) -> Live:
    """A live list: the JSON of `cni.dev/valid-attachments` ([{containerID, ifname}]), or lines of
    `containerID [ifname]` (no ifname: every interface of the container; '#' starts a comment)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            return Live.of(valid_attachments({VALID_ATTACHMENTS: json.loads(stripped)}))
        except (ValueError, CniError) as exc:
            raise CtlError(f"{origin}: not a list of {{containerID, ifname}}: {exc}") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise CtlError(f"{origin} line {number}: expected 'containerID [ifname]'")
        pairs.append((words[0], words[1] if len(words) == 2 else None))
    return Live.of(pairs)


@click.command("gc")
@click.option("--node", required=True, help="The node whose allocations and endpoints to reconcile.")
@click.option("--network", required=True, help="The CNI network name (the config's `name`).")
@click.option("--live-containers", "live_file", required=True, metavar="FILE|-", help="The live containers: lines 'containerID [ifname]' or a JSON list of {containerID, ifname}; '-' reads stdin.")
@click.option("--grace", type=click.FloatRange(min=0), default=DEFAULT_GRACE, show_default=True, metavar="SECONDS", help="Leave alone anything younger (an ADD may be in flight).")
@click.option("--links", is_flag=True, help="Also delete the cali* links of dead attachments in this network namespace (run it on the node).")
@connection_options
def gc(node, network, live_file, grace, links) -> None:
    """Release what the network holds on a node for containers that are not alive.

    The same reconciliation as the CNI GC verb: allocations of the network on the node (read at
    one etcd revision, released only if still the same allocation), their workload endpoints and,
    with --links, the cali* links whose alias names a dead attachment. Unlike CNI GC, it has no
    runtime's word that no ADD is running, so anything younger than --grace is left alone.
    """
    try:
        text = sys.stdin.read() if live_file == "-" else open(live_file, encoding="utf-8").read()
    except OSError as exc:
        raise CtlError(f"cannot read {live_file}: {exc.strerror}") from None
    live = parse_live(text, "stdin" if live_file == "-" else live_file)
    host = None
    if links:
        host = Netns.here()
    try:
        report = reconcile(ctl().store, network, node, live, host=host, grace_seconds=grace)
    finally:
        if host is not None:
            host.close()
    for address in report.released:
        click.echo(f"Released {address}")
    for endpoint in report.endpoints:
        click.echo(f"Deleted workload endpoint {endpoint}")
    for link in report.links:
        click.echo(f"Deleted link {link}")
    click.echo(f"GC of network {network} on node {node}: {report.summary()}.")
