"""The one entry-point wrapper both plugins use: dispatch a verb, print the result or the error.

stdout carries only CNI JSON. Every failure, including an unexpected exception, becomes CNI error
JSON with a non-zero exit; tracebacks go to the log, never to the runtime.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable, Mapping

from calico_cni.protocol.errors import INTERNAL_ERROR, CniError
from calico_cni.protocol.request import MAX_STDIN, CniRequest, parse_command, parse_request
from calico_cni.protocol.versions import SUPPORTED_VERSIONS, version_info

Handler = Callable[[CniRequest], "dict[str, Any] | None"]
log = logging.getLogger("calico_cni")

# libcni 1.1.2 (podman, containerd, cnitool on Debian 12) understands errors up to this version.
_FALLBACK_ERROR_VERSION = "1.0.0"


def _error_version(stdin: bytes) -> str:
    """The cniVersion to stamp on an error: the config's when we speak it."""
    try:
        version = json.loads(stdin).get("cniVersion")
    except Exception:  # noqa: BLE001 - any garbage means "unknown"
        return _FALLBACK_ERROR_VERSION
    return version if version in SUPPORTED_VERSIONS else _FALLBACK_ERROR_VERSION


def error_output(err: CniError, stdin: bytes) -> bytes:
    """The stdout of a plugin failing with `err` (for the agent and its client, which answer with
    bytes): the error JSON in the config's cniVersion, and a newline."""
    return (json.dumps(err.to_dict(_error_version(stdin))) + "\n").encode()


def _write(stream, obj: dict) -> None:
    stream.write(json.dumps(obj))
    stream.write("\n")
    stream.flush()


def run(
    handlers: Mapping[str, Handler],
    plugin: str,
    environ: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    stdout=None,
    setup: Callable[[CniRequest], None] | None = None,
    translate: Callable[[BaseException], CniError | None] | None = None,
) -> int:
    """Run one CNI invocation and return the process exit code.

    `handlers` maps verbs (ADD, DEL, CHECK, GC, STATUS) to functions taking the parsed request and
    returning the result dict to print (or None to print nothing). VERSION is answered here.
    `setup` runs once the request is valid (it configures logging from the config).
    `translate` turns an exception of a lower floor into its CNI error (None: not one it knows);
    the protocol floor cannot know those exceptions, so the plugins pass their table in.
    """
    environ = os.environ if environ is None else environ
    stdout = sys.stdout if stdout is None else stdout
    raw = b""
    try:
        command = parse_command(environ)
        if command == "VERSION":
            _write(stdout, version_info())
            return 0
        # Never read more than the limit: a runtime (or anyone) piping gigabytes gets error 6.
        raw = sys.stdin.buffer.read(MAX_STDIN + 1) if stdin is None else stdin
        request = parse_request(command, environ, raw)
        if setup is not None:
            setup(request)
        handler = handlers.get(command)
        if handler is None:
            # A verb this plugin has no work for (never the case for ADD/DEL).
            return 0
        result = handler(request)
        if result is not None:
            _write(stdout, result)
        return 0
    except CniError as err:
        log.error("%s %s failed: %s", plugin, environ.get("CNI_COMMAND", "?"), err)
        _write(stdout, err.to_dict(_error_version(raw)))
        return 1
    except Exception as exc:  # noqa: BLE001 - the runtime must get JSON, never a traceback
        translated = translate(exc) if translate is not None else None
        if translated is not None:
            log.error("%s %s failed: %s", plugin, environ.get("CNI_COMMAND", "?"), translated)
            _write(stdout, translated.to_dict(_error_version(raw)))
            return 1
        # The traceback goes to the log file only (stderr's formatter drops it); before logging
        # is set up there is no file, and Python's last-resort handler would print it on stderr.
        configured = bool(logging.getLogger().handlers)
        log.error("%s %s: unexpected error: %r", plugin, environ.get("CNI_COMMAND", "?"), exc, exc_info=configured)
        err = CniError(INTERNAL_ERROR, f"{plugin}: internal error: {type(exc).__name__}: {exc}"[:500], "details are in the plugin log")
        _write(stdout, err.to_dict(_error_version(raw)))
        return 1
