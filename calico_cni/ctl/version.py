"""`calicoctl version`: this client's version, and the cluster's as its ClusterInformation says."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as package_version

import click

from calico_cni.datastore import resources as stored
from calico_cni.datastore.resources import Ref
from calico_cni.model.kinds.config import CLUSTER_INFORMATION

from calico_cni.ctl.context import connection_options, ctl

# The Calico release whose resources, etcd layout and messages this calicoctl follows.
CALICO_VERSION = "v3.30"


def client_version() -> str:
    """The installed package's version ("unknown" when run from a checkout without metadata)."""
    try:
        return package_version("calico-cni-py")
    except PackageNotFoundError:
        return "unknown"


@click.command("version")
@connection_options
def version() -> None:
    """Show the client version and the cluster version and type (from ClusterInformation default)."""
    click.echo(f"Client Version:    {client_version()} (Calico {CALICO_VERSION} resources)")
    info = stored.get(ctl().store, Ref(CLUSTER_INFORMATION, "default"))
    spec = (info.doc.get("spec") or {}) if info is not None else {}
    missing = "unknown (no ClusterInformation default: calico-node writes it when it starts)"
    click.echo(f"Cluster Version:   {spec.get('calicoVersion') or missing}")
    click.echo(f"Cluster Type:      {spec.get('clusterType') or missing}")
