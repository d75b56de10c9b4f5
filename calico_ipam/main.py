"""Entry point of the `calico-ipam` executable. Kept thin: each verb imports only what it needs.

When the per-node agent answers on its socket the request is handed to it (`agent.client`, standard
library only); otherwise it runs in this process exactly as the agent would run it.
"""

from __future__ import annotations

import sys

PLUGIN = "calico-ipam"
VERBS = (("ADD", "add"), ("DEL", "delete"), ("CHECK", "check"), ("GC", "gc"), ("STATUS", "status"))


def handlers() -> dict:
    """The verb handlers (lazy imports), shared by this entry point and the agent."""
    from calico_cni.plugin_support import lazy

    return {verb: lazy("calico_ipam.plugin", name) for verb, name in VERBS}


def main() -> None:
    """Run one CNI invocation of calico-ipam and exit with its status."""
    from calico_cni.agent.client import main_thin

    stdin = main_thin(PLUGIN)
    from calico_cni.plugin_support import setup_logging
    from calico_cni.protocol.runner import run

    sys.exit(run(handlers(), PLUGIN, stdin=stdin, setup=setup_logging(PLUGIN)))


if __name__ == "__main__":
    main()
