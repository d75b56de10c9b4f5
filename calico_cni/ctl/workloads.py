"""`calicoctl get workloadendpoints`: the endpoints the `calico` plugin wrote for pods."""

from __future__ import annotations

import click

from calico_cni.ctl.context import connection_options, ctl, output_option
from calico_cni.ctl.output import emit, resource_doc


class AliasGroup(click.Group):
    """A group whose commands also answer to short names (`wep`, `workloadendpoint`)."""

    ALIASES = {"wep": "workloadendpoints", "weps": "workloadendpoints", "workloadendpoint": "workloadendpoints"}

    def get_command(self, ctx, cmd_name):
        """The command `cmd_name` names, directly or by one of its aliases."""
        return super().get_command(ctx, self.ALIASES.get(cmd_name, cmd_name))


@click.group("get", cls=AliasGroup)
def get() -> None:
    """Show resources (workloadendpoints; also `wep`)."""


@get.command("workloadendpoints")
@click.option("--node", metavar="NAME", help="Only the endpoints on this node.")
@click.option("--namespace", "-n", metavar="NS", help="Only the endpoints in this namespace.")
@output_option
@connection_options
def workloadendpoints(node, namespace, output) -> None:
    """List workload endpoints (one per pod interface)."""
    weps = [
        w
        for w in ctl().store.workload_endpoints()
        if (node is None or w.node == node) and (namespace is None or w.namespace == namespace)
    ]
    weps.sort(key=lambda w: (w.namespace, w.name))
    emit(
        output,
        [resource_doc(w) for w in weps],
        ["namespace", "name", "node", "container", "networks", "interface"],
        [[w.namespace, w.name, w.node, w.container_id[:12], ",".join(w.ip_networks), w.spec.get("interfaceName", "")] for w in weps],
    )
