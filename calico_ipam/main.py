"""Entry point of the `calico-ipam` executable. Kept thin: each verb imports only what it needs."""

from __future__ import annotations

import sys


def main() -> None:
    """Run one CNI invocation of calico-ipam and exit with its status."""
    from calico_cni.plugin_support import lazy, setup_logging
    from calico_cni.protocol.runner import run

    handlers = {verb: lazy("calico_ipam.plugin", name) for verb, name in (("ADD", "add"), ("DEL", "delete"), ("CHECK", "check"), ("GC", "gc"), ("STATUS", "status"))}
    sys.exit(run(handlers, "calico-ipam", setup=setup_logging("calico-ipam")))


if __name__ == "__main__":
    main()
