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

from calico_cni import logs
from calico_cni.agent import client
from calico_cni.agent.server import Server
from calico_cni.agent.warm import WarmStores
from calico_cni.plugins.dispatch import PLUGINS, verb_handlers
from calico_cni.plugins.services import Services
from calico_ipam.allocator import BlockMemory


class _Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT."""


def listen(path: str) -> socket.socket:
    """A listening socket at `path` (0600, directory 0700); refuses when an agent answers there."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    existing = client.connect(path)
    if existing is not None:
        existing.close()
        raise SystemExit(f"calico-cni-agent: an agent already answers on {path}")
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


def serve(args: argparse.Namespace) -> int:
    """Serve the plugins on `args.socket` until SIGTERM or SIGINT."""
    logs.setup_agent({"level": args.log_level, "path": args.log_file}, "calico-cni-agent")
    for module in PLUGINS.values():
        importlib.import_module(module)  # the verbs now, not on the first pod's ADD

    stores = WarmStores()
    # One set of services for every request: datastores over the warm channels, and one block
    # memory, so a node's next allocation reads its blocks with the view.
    services = Services(connect=stores.connect, blocks=BlockMemory())
    listener = listen(args.socket)
    server = Server(listener, {name: verb_handlers(name, lambda: services) for name in PLUGINS})

    def stop(_signum, _frame) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"calico-cni-agent: serving {args.socket}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            os.unlink(args.socket)
        except OSError:
            pass
        server.stop()
        stores.close()
        listener.close()
    return 0
