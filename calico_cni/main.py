"""Entry point of the `calico` executable. Kept thin: each verb imports only what it needs.

When the per-node agent answers on its socket the request is handed to it (`agent.client`, standard
library only); otherwise it runs in this process exactly as the agent would run it
(`plugins.dispatch`, whose verb table the agent uses too).
"""

from __future__ import annotations

PLUGIN = "calico"


def main() -> None:
    """Run one CNI invocation of calico and exit with its status."""
    from calico_cni.plugins.dispatch import main as run_plugin

    run_plugin(PLUGIN)


if __name__ == "__main__":
    main()
