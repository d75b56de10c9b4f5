"""`calicoctl datastore`: `migrate lock|unlock` freezes IPAM for a datastore migration, as Calico's
commands do (ClusterInformation `default`, `datastoreReady`); `repair profiles` creates the profiles
workload endpoints name but nobody created (endpoints the `calico` plugin wrote before it created
their profiles), the work being `calico_cni.resources.profiles`'."""

from __future__ import annotations

import click

from calico_cni.resources import cluster, profiles

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


@datastore.group("repair")
def repair() -> None:
    """Repair records Calico's tools expect to exist."""


def _named_by(entry: profiles.Missing) -> str:
    shown = ", ".join(entry.endpoints[:3])
    more = len(entry.endpoints) - 3
    return shown + (f" and {more} more" if more > 0 else "")


@repair.command("profiles")
@click.option("--dry-run", is_flag=True, help="List the profiles that would be created; create none.")
@connection_options
def repair_profiles(dry_run: bool) -> None:
    """Create each profile a workload endpoint names that does not exist, with the content the
    calico plugin creates it with: the network's profile (egress allow all, ingress from
    has(<network>), or from anywhere when only Kubernetes pods name it) and kns.<namespace>
    (allow all, as kube-controllers writes it). An existing profile is never changed. A profile
    of unknown content is listed and left for a person to create.
    """
    done = profiles.repair(ctl().store, dry_run=dry_run)
    verb = "Would create" if dry_run else "Created"
    for entry in done.created:
        click.echo(f"{verb} profile {entry.name} (named by {_named_by(entry)}).")
    for entry in done.raced:
        click.echo(f"Profile {entry.name} was created meanwhile by another writer; left as it is.")
    for entry in done.unknown:
        why = entry.refused or "neither the network that wrote the endpoint nor kns.<namespace>, so its content is unknown"
        click.echo(f"Not creating profile {entry.name} (named by {_named_by(entry)}): {why}.")
    if not (done.created or done.raced or done.unknown):
        click.echo("Every profile the workload endpoints name exists.")
