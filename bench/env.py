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
    netns.sweep_stale()
    name = netns.add(f"{netns.PREFIX}bench-fabric-{os.getpid()}")
    previous = None
    server = None
    try:
        netns.ip("-n", name, "addr", "add", f"{FABRIC_ADDRESS}/32", "dev", "lo")
        previous = netns.enter(name)
        server = etcd_server.start(FABRIC_ADDRESS)
        yield name, server.endpoint
    finally:
        if server is not None:
            server.stop()
        if previous is not None:
            netns.leave(previous)
        netns.delete(name)
