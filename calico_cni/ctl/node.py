"""`calicoctl node`: list nodes and set the labels pools' node selectors match."""

from __future__ import annotations

import click

from calico_cni.datastore.nodes import label_node
from calico_cni.model.records import Node

from calico_cni.ctl import validate
from calico_cni.ctl.context import CtlError, connection_options, ctl, output_option
from calico_cni.ctl.output import cell, emit, resource_doc


@click.group("node")
def node() -> None:
    """List nodes and manage their labels (IP pools' --node-selector matches these)."""


@node.command("list")
@output_option
@connection_options
def list_nodes(output) -> None:
    """List nodes with their labels and how many IPAM blocks they hold."""
    store = ctl().store
    nodes = sorted(store.nodes(), key=lambda n: n.name)
    blocks: dict[str, list[str]] = {}
    for a in store.affinities():
        blocks.setdefault(a.node, []).append(a.cidr)
    emit(
        output,
        [resource_doc(n) for n in nodes],
        ["name", "labels", "blocks"],
        [[n.name, cell(n.labels), len(blocks.get(n.name, []))] for n in nodes],
    )


@node.command("label")
@click.argument("name")
@click.argument("labels", nargs=-1, metavar="KEY=VALUE... KEY-...")
@click.option("--create", is_flag=True, help="Create the node if it has not registered yet (nodes register on their first pod).")
@output_option
@connection_options
def label(name, labels, create, output) -> None:
    """Set (key=value) or remove (key-) labels of node NAME."""
    sets, removes = validate.label_changes(labels)
    # The name is checked only when the node is created: a registered node keeps the name it has.
    new_node = (lambda: Node.new(validate.resource_name(name, "node"))) if create else None
    labelled = label_node(ctl().store, name, sets, removes, new_node)
    if labelled is None:
        raise CtlError(f"node {name} does not exist (nodes register on their first pod; pass --create to create it now)")
    record = labelled.node
    for key in labelled.absent:
        click.echo(f"Note: node {name} had no label {key}.", err=True)
    if output == "table":
        click.echo(f"Node {name} labels: {cell(record.labels) if record.labels else '(none)'}")
    else:
        emit(output, resource_doc(record))
