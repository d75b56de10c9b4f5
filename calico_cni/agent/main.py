"""`calico-cni-agent`: the per-node agent (serve) and its health check.

    calico-cni-agent [--socket PATH] [--log-file PATH] [--log-level LEVEL]   serve until SIGTERM/SIGINT
    calico-cni-agent health [--socket PATH]                                 exit 0 when the agent answers

Start it where etcd is reachable (the node's network namespace): it acts in each caller's network
namespace, and keeps its etcd connections in its own. The socket is created mode 0600 in a
directory made mode 0700: only root reaches it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import sys

from calico_cni.agent import client, wire


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
    from calico_cni import logs
    from calico_cni.main import PLUGIN as CALICO, handlers as calico_handlers
    from calico_ipam.main import PLUGIN as IPAM, handlers as ipam_handlers
    from calico_cni.agent.server import Server
    from calico_cni.agent.warm import WarmStores

    logs.setup_agent({"level": args.log_level, "path": args.log_file}, "calico-cni-agent")
    # Import the verbs now, not on the first pod's ADD.
    import calico_cni.plugins.calico  # noqa: F401
    import calico_cni.plugins.calico_ipam  # noqa: F401

    stores = WarmStores()
    stores.install()
    listener = listen(args.socket)
    server = Server(listener, {CALICO: calico_handlers, IPAM: ipam_handlers})

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
    p = argparse.ArgumentParser(prog="calico-cni-agent", description="Per-node agent serving the calico and calico-ipam CNI plugins.")
    p.add_argument("command", nargs="?", choices=("serve", "health"), default="serve")
    p.add_argument("--socket", default=os.environ.get(wire.SOCKET_ENV) or wire.DEFAULT_SOCKET, help="Unix socket path")
    p.add_argument("--log-file", default=None, help="log file (default: stderr only)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sys.exit(health(args) if args.command == "health" else serve(args))


if __name__ == "__main__":
    main()
