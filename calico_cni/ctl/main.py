"""The `calicoctl` command tree, and the one place failures become a one-line message on stderr
and an exit code (never a traceback), as the table in `ctl.errors` says."""

from __future__ import annotations

import logging
import sys

import click

from calico_cni.ctl import datastore, ipam_check, ipam_configure, ipam_gc, ipam_release, ipam_show, ippool, node_policy, node_status, resources, version
from calico_cni.ctl.context import connection_options
from calico_cni.ctl.errors import failure


class _StderrHandler(logging.Handler):
    """Log records as "calicoctl: <level>: <message>" lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"calicoctl: {record.levelname.lower()}: {record.getMessage()}", err=True)


_HANDLER = _StderrHandler()


def _setup_logging(level: str) -> None:
    """Only our own loggers, at the chosen level (errors by default, so a failing etcd call's
    retries do not add lines to the one-line error)."""
    _HANDLER.setLevel(getattr(logging, level.upper()))
    for name in ("calico_cni", "calico_ipam"):
        logger = logging.getLogger(name)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
        logger.setLevel(min(logger.level or logging.WARNING, _HANDLER.level))


class CtlGroup(click.Group):
    """The root group: runs the command, then maps any failure to one line and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's entry point; in standalone mode (the console script) a failure prints one line
        from `ctl.errors` and exits with its code instead of click's own handling."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name or "calicoctl", complete_var, standalone_mode=False, **extra)
        except Exception as exc:  # noqa: BLE001 - every failure is one line, never a traceback
            message, status = failure(exc)
            click.echo(f"Error: {' '.join(message.split())}", err=True)
            sys.exit(status)
        sys.exit(code if isinstance(code, int) else 0)


@click.group("calicoctl", cls=CtlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False), default="error", show_default=True, help="Also show log messages of this level and above on stderr.")
@connection_options
@click.version_option(package_name="calico-cni-py", prog_name="calicoctl")
def cli(log_level: str) -> None:
    """Manage Calico's resources and IPAM in etcd.

    \b
    Apply resource files:  calicoctl apply -f pool.yaml
    See them:              calicoctl get ippools -o wide
    See utilisation:       calicoctl ipam show --show-blocks
    Find leaks:            calicoctl ipam check -o report.json
    Repair them:           calicoctl ipam release --from-report report.json

    etcd is found through --etcd-endpoints (or the other connection options, given before or
    after the verb), else -c/--config (a calicoctl.cfg, kind CalicoAPIConfig, or a CNI config;
    /etc/calico/calicoctl.cfg when it exists), else ETCD_ENDPOINTS and the other ETCD_*
    variables, else http://127.0.0.1:2379.
    """
    _setup_logging(log_level)


@cli.group("ipam")
def ipam() -> None:
    """Show IPAM utilisation, check and repair allocations, configure IPAM."""


@cli.group("node")
def node() -> None:
    """The state of calico-node and its BGP peers (run on the node), and what is enforced for one endpoint."""


node.add_command(node_status.status)
node.add_command(node_policy.policy)
for command in (ipam_show.show, ipam_check.check, ipam_release.release, ipam_configure.configure, ipam_gc.gc):
    ipam.add_command(command)
for group in (*resources.COMMANDS, ippool.ippool, datastore.datastore, version.version):
    cli.add_command(group)
