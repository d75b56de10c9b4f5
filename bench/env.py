"""The benchmark's private world: a fabric namespace holding etcd, entered by this process, so the
machine's own network namespace is never touched."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Iterator

from tests import etcd_server, netns

FABRIC_ADDRESS = "198.19.0.1"


def run_header(module: str, argv: list[str] | None) -> dict:
    """What every cluster benchmark's results start with: when, on what machine, the command, the
    load before. Also makes SIGTERM end the run as Ctrl-C does, so everything made is removed."""

    def terminate(_signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.node()} {os.cpu_count()} vCPU {platform.release()}",
            "command": " ".join([f"python -m {module}", *(argv if argv is not None else sys.argv[1:])]),
            "load_before": os.getloadavg()}


def write_results(out: str, name: str, results: dict, markdown: str) -> None:
    """`<out>/<name>.json` and `<out>/<name>.md`, and the Markdown on standard output."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(results, indent=2))
    (directory / f"{name}.md").write_text(markdown)
    print(markdown)


@contextlib.contextmanager
def fabric_with_etcd() -> Iterator[tuple[str, str]]:
    """Create and enter a fabric namespace with etcd on 198.19.0.1:2379; yields (name, endpoint)."""
    with fabric_with_etcd_server("bench-fabric") as (name, server):
        yield name, server.endpoint


@contextlib.contextmanager
def fabric_with_etcd_server(label: str) -> Iterator[tuple[str, etcd_server.EtcdServer]]:
    """Create and enter (this thread, and the threads and processes it starts) a fabric namespace
    `calico-test-<label>-<pid>` with etcd on 198.19.0.1:2379; yields (name, server)."""
    netns.sweep_stale()
    name = netns.add(f"{netns.PREFIX}{label}-{os.getpid()}")
    previous = None
    server = None
    try:
        netns.ip("-n", name, "addr", "add", f"{FABRIC_ADDRESS}/32", "dev", "lo")
        previous = netns.enter(name)
        server = etcd_server.start(FABRIC_ADDRESS)
        yield name, server
    finally:
        if server is not None:
            server.stop()
        if previous is not None:
            netns.leave(previous)
        netns.delete(name)
