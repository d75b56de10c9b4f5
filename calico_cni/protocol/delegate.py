"""Delegation to another CNI plugin (an IPAM plugin such as `host-local`), as the spec says:
find `type` in CNI_PATH, exec it with the same environment (only CNI_COMMAND changed) and the same
stdin, and take its result or its error."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from calico_cni.protocol.errors import INTERNAL_ERROR, INVALID_CONFIG, CniError
from calico_cni.protocol.request import CniRequest
from calico_cni.protocol.result import normalize

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 50.0


def find_plugin(name: str, cni_path: list[str]) -> str:
    """The executable called `name` in the CNI_PATH directories (first match)."""
    if not name or "/" in name or name in (".", ".."):
        raise CniError(INVALID_CONFIG, f"plugin type {name!r} is not a plugin name", "a plugin name may not contain '/'")
    for directory in cni_path:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise CniError(INVALID_CONFIG, f'failed to find plugin "{name}" in path {cni_path}', "install it or fix CNI_PATH")


def delegate(request: CniRequest, plugin: str, command: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any] | None:
    """Run `plugin` for `command` with this request's environment and stdin.

    Returns its result in 1.x shape for ADD (None for other verbs); its CNI error is raised as is.
    """
    import subprocess  # noqa: PLC0415 - only when delegating: 3 ms of every calico-ipam ADD otherwise

    path = find_plugin(plugin, request.cni_path)
    env = dict(request.environ)
    env["CNI_COMMAND"] = command
    try:
        proc = subprocess.run([path], input=request.stdin, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CniError(INTERNAL_ERROR, f"plugin {plugin} did not finish {command} within {timeout:g}s") from None
    except OSError as exc:
        raise CniError(INTERNAL_ERROR, f"cannot run plugin {plugin} ({path})", exc.strerror or str(exc)) from None
    stderr = proc.stderr.decode(errors="replace").strip()
    if stderr:
        log.info("%s %s stderr: %s", plugin, command, stderr[-2000:])
    try:
        answer = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        answer = None
    if proc.returncode != 0:
        if isinstance(answer, dict) and isinstance(answer.get("code"), int) and answer.get("msg"):
            msg = str(answer["msg"])
            raise CniError(answer["code"], msg if msg.startswith(f"{plugin}: ") else f"{plugin}: {msg}", str(answer.get("details") or ""))
        raise CniError(INTERNAL_ERROR, f"plugin {plugin} failed {command} with exit status {proc.returncode}", (stderr or proc.stdout.decode(errors="replace"))[-500:])
    if command != "ADD":
        return None
    if not isinstance(answer, dict):
        raise CniError(INTERNAL_ERROR, f"plugin {plugin} printed no result for ADD", proc.stdout.decode(errors="replace")[:200])
    return normalize(answer)
