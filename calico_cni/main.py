"""Entry point of the `calico` executable. Kept thin: each verb imports only what it needs.

When the per-node agent answers on its socket the request is handed to it (`agent.client`, standard
library only); otherwise it runs in this process exactly as the agent would run it
(`plugin_support.main`).
"""

from __future__ import annotations

PLUGIN = "calico"


def handlers() -> dict:
    """The verb handlers (lazy imports), shared by this entry point and the agent."""
    from calico_cni.plugins.dispatch import verb_handlers

    return verb_handlers("calico_cni.plugins.calico")


def main() -> None:
    """Run one CNI invocation of calico and exit with its status."""
    from calico_cni.plugins.dispatch import main as run_plugin

    run_plugin(PLUGIN, handlers)


if __name__ == "__main__":
    main()
