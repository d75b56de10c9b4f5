"""The per-verb dispatch both plugins' entry points and the agent share: which function runs each
verb of each plugin, the services it is given, the entry function and the logging hooks.

The exec'd plugin imports this module before it knows whether the agent answers, so it imports
nothing at its top (`typing` alone costs 10 ms, the protocol modules 20 ms); each function imports
what it needs, and a verb's handler imports only that verb's module when it runs (VERSION imports
neither gRPC nor netlink).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from calico_cni.plugins.services import Services
    from calico_cni.protocol.errors import CniError
    from calico_cni.protocol.request import CniRequest

    Handler = Callable[[CniRequest], "dict | None"]

# Plugin name -> the module whose functions are its verbs (each takes (request, services)).
PLUGINS = {"calico": "calico_cni.plugins.calico", "calico-ipam": "calico_cni.plugins.calico_ipam"}
VERBS = (("ADD", "add"), ("DEL", "delete"), ("CHECK", "check"), ("GC", "gc"), ("STATUS", "status"))


def in_process_services() -> Services:
    """`Services.in_process()`, the services of a one-shot plugin process, imported only when a
    verb runs (this module imports nothing at its top)."""
    from calico_cni.plugins.services import Services

    return Services.in_process()


def verb_handlers(plugin: str, services: Callable[[], Services] = in_process_services) -> dict[str, Handler]:
    """The verb handlers of `plugin` (a name in PLUGINS); each imports its module when its verb
    runs and calls it with the request and `services()`."""
    module = PLUGINS[plugin]
    return {verb: lazy(module, name, services) for verb, name in VERBS}


def main(plugin: str) -> None:
    """Run one CNI invocation of `plugin` and exit with its status: hand it to the agent when one
    answers (`agent.client`, standard library only), else run its verbs in this process."""
    from calico_cni.agent.client import main_thin

    run_in_process(plugin, main_thin(plugin))


def run_in_process(plugin: str, stdin: bytes) -> None:
    """Run the invocation in this process (no daemon answered; `stdin` already read) and exit
    with its status."""
    from calico_cni.protocol.runner import run

    sys.exit(run(verb_handlers(plugin), plugin, stdin=stdin, setup=setup_logging(plugin), translate=translate))


def translate(exc: BaseException) -> CniError | None:
    """The runner's `translate`: the lower floors' exceptions as CNI errors (`plugins.errors`),
    imported only when a verb failed so a successful run never loads the table."""
    from calico_cni.plugins.errors import cni_error

    return cni_error(exc)


def _log_start(plugin: str, request: CniRequest) -> tuple[dict, str]:
    """(log settings, record context) of a request."""
    from calico_cni.config import log_settings

    where = f"{request.container_id[:12]}/{request.ifname}" if request.container_id else request.network
    return log_settings(request.config, request.environ), f"{plugin} {request.command} {where}"


def setup_logging(plugin: str) -> Callable[[CniRequest], None]:
    """A runner `setup` hook that configures logging from the request's config."""

    def setup(request: CniRequest) -> None:
        from calico_cni import logs

        logs.setup(*_log_start(plugin, request))

    return setup


def request_logging(plugin: str, stderr) -> Callable[[CniRequest], None]:
    """In the agent, the runner `setup` hook: this request logs to its config's file and to
    `stderr` (sent back to the plugin), as the exec'd plugin would."""

    def setup(request: CniRequest) -> None:
        from calico_cni import logs

        logs.start_request(*_log_start(plugin, request), stderr)

    return setup


def lazy(module: str, function: str, services: Callable[[], Services] = in_process_services) -> Handler:
    """A handler that imports its module only when its verb runs (VERSION imports nothing) and
    calls `function(request, services())`."""

    def handler(request: CniRequest) -> dict | None:
        import importlib

        from calico_cni import timing

        if not timing.ENABLED:
            return getattr(importlib.import_module(module), function)(request, services())
        start = timing.time.perf_counter()
        verb = getattr(importlib.import_module(module), function)
        given = services()
        timing.add("imports", timing.time.perf_counter() - start)
        timing.start_report()
        return verb(request, given)

    return handler
