"""`calicoctl datastore migrate lock|unlock`: freeze IPAM for a datastore migration, as Calico's
commands do (ClusterInformation `default`, `datastoreReady`)."""

from __future__ import annotations

import click

from calico_cni.resources import cluster

from calico_cni.ctl.context import connection_options, ctl


@click.group("datastore")
def datastore() -> None:
    """Datastore-wide operations."""


@datastore.group("migrate")
def migrate() -> None:
    """Lock or unlock the datastore around a migration."""


@migrate.command("lock")
@connection_options
def lock() -> None:
    """Lock the datastore: ADDs fail with "try again later" and DELs record their releases until
    unlock (the ClusterInformation is created first if it is missing)."""
    changed = cluster.set_ready(ctl().store, False)
    click.echo("Datastore locked." if changed else "Datastore was already locked.")


@migrate.command("unlock")
@connection_options
def unlock() -> None:
    """Unlock the datastore: ADDs work again, and this node's recorded releases are finished."""
    changed = cluster.set_ready(ctl().store, True)
    click.echo("Datastore unlocked." if changed else "Datastore was not locked.")
