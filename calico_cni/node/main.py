"""`calico-node`: the per-node daemon, configured as Calico's calico/node is (environment variables,
each also a flag: `calico-node --help`), and its readiness and liveness probes.

    calico-node                    run in the foreground until SIGTERM (systemd or any supervisor)
    calico-node -bird-ready        exit 0 when BGP is established as Calico's probe asks (also
                                   -bird6-ready, -bird-live, -bird6-live, -felix-ready, -felix-live,
                                   with -threshold-time N)

Probes run every few seconds under a supervisor: each imports only what it needs (never gRPC or the
plugins), so this module imports the daemon only to run it.
"""

from __future__ import annotations

import os
import sys


def run_probes(settings) -> int:
    """Run the probes the flags asked for (Calico's readiness probe combines several, e.g.
    `-felix-ready -bird-ready`); 0 when every one passes, else print what is wrong and 1."""
    from calico_cni.node import probes

    failed = False
    for probe in settings.probes:
        ok, message = probes.run(probe, settings)
        if not ok:
            print(message, file=sys.stderr)
            failed = True
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of `calico-node`."""
    from calico_cni.errors import CalicoError
    from calico_cni.node import settings as node_settings

    try:
        settings = node_settings.from_args(sys.argv[1:] if argv is None else argv, os.environ)
    except CalicoError as exc:
        # Exit 1, as Calico's calico-node does for a setting it cannot use (a supervisor restarts
        # it; the one line says what to set).
        print(f"calico-node: {exc}", file=sys.stderr)
        sys.exit(1)
    if settings.probes:
        sys.exit(run_probes(settings))
    from calico_cni.node.daemon import run

    sys.exit(run(settings))


if __name__ == "__main__":
    main()
