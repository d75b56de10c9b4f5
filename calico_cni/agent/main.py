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
import sys

from calico_cni.agent import client, wire


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


def serve(args: argparse.Namespace) -> int:
    """Serve the plugins until SIGTERM or SIGINT (`agent.daemon`, imported only to serve: the
    health probe, which supervisors run often, loads neither the plugins nor gRPC)."""
    from calico_cni.agent.daemon import serve as serve_forever

    return serve_forever(args)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `calico-cni-agent`."""
    args = parser().parse_args(argv)
    sys.exit(health(args) if args.command == "health" else serve(args))


if __name__ == "__main__":
    main()
