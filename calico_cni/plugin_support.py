"""Helpers both plugins' entry points share: logging setup and lazily imported verb handlers."""

from __future__ import annotations

import importlib
from typing import Callable

from .protocol.request import CniRequest


def setup_logging(plugin: str) -> Callable[[CniRequest], None]:
    """A runner `setup` hook that configures logging from the request's config."""

    def setup(request: CniRequest) -> None:
        from . import logs
        from .config import log_settings

        where = f"{request.container_id[:12]}/{request.ifname}" if request.container_id else request.network
        logs.setup(log_settings(request.config), f"{plugin} {request.command} {where}")

    return setup


def request_logging(plugin: str, stderr) -> Callable[[CniRequest], None]:
    """In the agent, the runner `setup` hook: this request logs to its config's file and to
    `stderr` (sent back to the plugin), as the exec'd plugin would."""

    def setup(request: CniRequest) -> None:
        from . import logs
        from .config import log_settings

        where = f"{request.container_id[:12]}/{request.ifname}" if request.container_id else request.network
        logs.start_request(log_settings(request.config), f"{plugin} {request.command} {where}", stderr)

    return setup


def lazy(module: str, function: str) -> Callable[[CniRequest], dict | None]:
    """A handler that imports its module only when its verb runs (VERSION imports nothing)."""

    def handler(request: CniRequest) -> dict | None:
        from . import timing

        if not timing.ENABLED:
            return getattr(importlib.import_module(module), function)(request)
        start = timing.time.perf_counter()
        verb = getattr(importlib.import_module(module), function)
        timing.add("imports", timing.time.perf_counter() - start)
        timing.instrument()
        return verb(request)

    return handler
