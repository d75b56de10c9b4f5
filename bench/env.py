"""The benchmark's private world: a fabric namespace holding etcd, entered by this process, so the
machine's own network namespace is never touched."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from tests import etcd_server, netns

FABRIC_ADDRESS = "198.19.0.1"


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
