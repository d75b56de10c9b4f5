"""The agent's serving loop: the listening socket, the warm datastores and block memory every
request shares, the verbs imported up front, and a clean stop on SIGTERM or SIGINT. The daemon's
future parts (the datastore syncer, the routing and policy controllers) start here too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import socket
import stat
import sys
from dataclasses import dataclass
from typing import Callable

from calico_cni import logs
from calico_cni.agent import client
from calico_cni.agent.server import Server
from calico_cni.agent.warm import WarmStores
from calico_cni.plugins.dispatch import PLUGINS, verb_handlers
from calico_cni.plugins.services import EndpointPrograms, Hints, Services


class _Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT."""


def listen(path: str, program: str = "calico-cni-agent") -> socket.socket:
    """A listening socket at `path` (0600, directory 0700); refuses when an agent answers there."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    existing = client.connect(path)
    if existing is not None:
        existing.close()
        raise SystemExit(f"{program}: a daemon already answers on {path}: stop it first (never two on one socket)")
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # stale: left by an agent that was killed
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(512)
    return sock


@dataclass
class PluginServing:
    """The plugins' socket and what its requests share: warm etcd channels and one block memory."""

    path: str
    listener: socket.socket
    server: Server
    stores: WarmStores

    def close(self) -> None:
        """Stop serving: remove the socket, let requests in flight finish, close the channels."""
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.server.stop()
        self.stores.close()
        self.listener.close()


def open_serving(
    path: str,
    program: str = "calico-cni-agent",
    extra_health: Callable[[], dict] | None = None,
    endpoints: EndpointPrograms | None = None,
    hints: Hints | None = None,
) -> PluginServing:
    """Import the verbs, bind the plugins' socket at `path` and build its server (not yet serving:
    call `server.serve_forever`). calico-node shares `stores` with its own parts, and gives
    `endpoints`: its policy programming of the endpoints the requests write, and `hints`: its
    watch cache, which replaces reads the requests would make (their commits compare it)."""
    for module in PLUGINS.values():
        importlib.import_module(module)  # the verbs now, not on the first pod's ADD
    stores = WarmStores()
    # One set of services for every request: datastores over the warm channels, and one block
    # memory per datastore, so a node's next allocation reads (or, with hints, reuses) its blocks.
    services = Services(connect=stores.connect, endpoints=endpoints, hints=hints)
    listener = listen(path, program)
    server = Server(listener, {name: verb_handlers(name, lambda: services) for name in PLUGINS}, extra_health)
    return PluginServing(path, listener, server, stores)


def serve(args: argparse.Namespace) -> int:
    """Serve the plugins on `args.socket` until SIGTERM or SIGINT."""
    logs.setup_agent({"level": args.log_level, "path": args.log_file}, "calico-cni-agent")
    serving = open_serving(args.socket)

    def stop(_signum, _frame) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"calico-cni-agent: serving {args.socket}", file=sys.stderr, flush=True)
    try:
        serving.server.serve_forever()
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        serving.close()
    return 0
