"""`calicoctl ipam configure`: the cluster-wide IPAM settings (/calico/ipam/v2/config)."""

from __future__ import annotations

import click

from calico_cni.datastore.retry import Conflict, with_retries

from calico_cni.ctl import validate
from calico_cni.ctl.context import CtlError, connection_options, ctl, output_option
from calico_cni.ctl.ipam_show import emit_config


@click.command("configure")
@click.option("--strictaffinity", "--strict-affinity", "strict", type=click.BOOL, metavar="true|false", help="Never borrow addresses from other nodes' blocks.")
@click.option("--max-blocks-per-host", "max_blocks", type=click.IntRange(min=0), metavar="N", help="Most blocks a node may hold per IP family, in the pools an allocation may use (0: Calico's default of 20). Needs strict affinity.")
@click.option("--auto-allocate-blocks", "auto", type=click.BOOL, metavar="true|false", help="Let nodes claim new blocks when theirs are full.")
@click.option("--ip-cooldown-seconds", "cooldown", type=click.IntRange(min=0), metavar="N", help="How long a released address rests before it is handed out again.")
@output_option
@connection_options
def configure(strict, max_blocks, auto, cooldown, output) -> None:
    """Change the IPAM settings; options not given keep their current value.

    Rules: strict affinity and auto-allocate-blocks may not both be false, and a
    max-blocks-per-host above 0 needs strict affinity.
    """
    if strict is None and max_blocks is None and auto is None and cooldown is None:
        raise CtlError("nothing to change: give --strictaffinity, --max-blocks-per-host, --auto-allocate-blocks or --ip-cooldown-seconds")
    store = ctl().store

    def step(attempt: int):
        config = store.ipam_config()
        if strict is not None:
            config.strict_affinity = strict
        if auto is not None:
            config.auto_allocate_blocks = auto
        if max_blocks is not None:
            config.max_blocks_per_host = max_blocks
        if cooldown is not None:
            config.ip_cooldown_seconds = cooldown
        validate.ipam_settings(config.strict_affinity, config.auto_allocate_blocks, config.max_blocks_per_host)
        if not store.commit(puts=[config]):
            raise Conflict()
        return config

    config = with_retries("updating the IPAM configuration", step)
    if output == "table":
        click.echo("IPAM configuration updated:")
    emit_config(config, output)
