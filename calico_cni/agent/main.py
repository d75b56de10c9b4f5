"""`calico-cni-agent`: the per-node agent (serve) and its health check.

    calico-cni-agent [--socket PATH] [--log-file PATH] [--log-level LEVEL]   serve until SIGTERM/SIGINT
    calico-cni-agent health [--socket PATH]                                 exit 0 when the agent answers

Start it where etcd is reachable (the node's network namespace): it acts in each caller's network
namespace, and keeps its etcd connections in its own. The socket is created mode 0600 in a
directory made mode 0700: only root reaches it.
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
from calico_cni.agent import client, wire
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


def health(args: argparse.Namespace) -> int:
    """Ask the agent on `args.socket` how it is; print its answer; 0 when it answered."""
    sock = client.connect(args.socket)
    if sock is None:
        print(f"calico-cni-agent: nothing answers on {args.socket}", file=sys.stderr)
        return 1
    try:
        sock.settimeout(5.0)
        wire.send_request(sock, wire.HEALTH, {}, b"")
        code, out, _ = wire.recv_answer(sock)
    except (OSError, ValueError, wire.Truncated) as exc:
        print(f"calico-cni-agent: no answer on {args.socket}: {exc}", file=sys.stderr)
        return 1
    finally:
        sock.close()
    print(out.decode())
    return code


def parser() -> argparse.ArgumentParser:
    """The command line of `calico-cni-agent`."""
    p = argparse.ArgumentParser(prog="calico-cni-agent", description="Per-node agent serving the calico and calico-ipam CNI plugins.")
    p.add_argument("command", nargs="?", choices=("serve", "health"), default="serve")
    p.add_argument("--socket", default=os.environ.get(wire.SOCKET_ENV) or wire.DEFAULT_SOCKET, help="Unix socket path")
    p.add_argument("--log-file", default=None, help="log file (default: stderr only)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of `calico-cni-agent`."""
    args = parser().parse_args(argv)
    sys.exit(health(args) if args.command == "health" else serve(args))


if __name__ == "__main__":
    main()
