"""Parse and validate one CNI invocation: the environment variables and the config on stdin.

Every plugin gets its request from `parse_request`; no plugin code reads `CNI_*` variables itself.
Validation happens here, before any side effect, and every problem is a `CniError` with the
spec's code and a message naming the variable or key at fault.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from calico_cni.protocol.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    CniError,
)
from calico_cni.protocol.versions import at_least, require_supported

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
# Which attachment variables each verb needs (the spec's table; DEL may come without CNI_NETNS).
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": (),
    "STATUS": (),
}
# CNI_ARGS keys this project understands; anything else needs IgnoreUnknown=1.
KNOWN_ARGS = frozenset(
    {
        "IgnoreUnknown",
        "IP",
        "K8S_POD_NAMESPACE",
        "K8S_POD_NAME",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
    }
)
# Matched with fullmatch: '$' would also accept a trailing newline.
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
MAX_STDIN = 4 * 1024 * 1024
MAX_ID_LENGTH = 1024
# Kubernetes names are DNS subdomains (at most 253 characters); they end up in IPAM handles.
K8S_NAME_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9_.\-]{0,251}[a-zA-Z0-9])?")


@dataclass
class CniRequest:
    """One validated CNI invocation."""

    command: str
    cni_version: str
    config: dict[str, Any]
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    cni_path: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes = b""

    @property
    def network(self) -> str:
        """The network name (`name` of the config)."""
        return self.config["name"]

    @property
    def prev_result(self) -> dict | None:
        """The `prevResult` the runtime passed, if any."""
        prev = self.config.get("prevResult")
        return prev if isinstance(prev, dict) else None

    @property
    def runtime_config(self) -> dict:
        """`runtimeConfig` (capability arguments), always a dict."""
        rc = self.config.get("runtimeConfig")
        return rc if isinstance(rc, dict) else {}

    @property
    def k8s_pod(self) -> tuple[str, str] | None:
        """(namespace, pod name) when both Kubernetes CNI_ARGS are present."""
        ns = self.args.get("K8S_POD_NAMESPACE")
        pod = self.args.get("K8S_POD_NAME")
        return (ns, pod) if ns and pod else None


def parse_command(environ: Mapping[str, str]) -> str:
    """The CNI verb, validated."""
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(INVALID_ENVIRONMENT, "CNI_COMMAND is not set", "expected one of " + ", ".join(COMMANDS))
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT,
            f"CNI_COMMAND {command!r} is not a CNI verb",
            "expected one of " + ", ".join(COMMANDS),
        )
    return command


def parse_cni_args(raw: str) -> dict[str, str]:
    """Parse `CNI_ARGS` (`K=V;K2=V2`); unknown keys are an error unless `IgnoreUnknown` is true."""
    args: dict[str, str] = {}
    if not raw:
        return args
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: invalid pair {pair!r}", "expected KEY=VALUE pairs separated by ';'")
        args[key] = value
    for key in ("K8S_POD_NAMESPACE", "K8S_POD_NAME"):
        value = args.get(key)
        if value and not K8S_NAME_RE.fullmatch(value):
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: {key} {value[:80]!r} is not a Kubernetes name", "expected a DNS subdomain name")
    ignore = args.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = sorted(k for k in args if k not in KNOWN_ARGS)
    if unknown and not ignore:
        raise CniError(
            INVALID_ENVIRONMENT,
            "CNI_ARGS: unknown key(s) " + ", ".join(unknown),
            "known keys: " + ", ".join(sorted(KNOWN_ARGS)) + "; add IgnoreUnknown=1 to ignore others",
        )
    return args


def _validate_ifname(name: str) -> None:
    if not 1 <= len(name.encode("utf-8", "surrogateescape")) <= 15:
        raise CniError(INVALID_ENVIRONMENT, f"CNI_IFNAME {name[:40]!r} is invalid", "an interface name has 1 to 15 bytes")
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_IFNAME {name!r} is invalid", "it may not be '.' or '..' nor contain '/', ':' or whitespace"
        )


def _validate_env(command: str, environ: Mapping[str, str]) -> None:
    missing = [v for v in _REQUIRED_ENV[command] if not environ.get(v)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"{command} needs " + ", ".join(missing) + " in the environment", "missing or empty")
    cid = environ.get("CNI_CONTAINERID", "")
    if cid and (len(cid) > MAX_ID_LENGTH or not NAME_RE.fullmatch(cid)):
        raise CniError(
            INVALID_ENVIRONMENT,
            f"CNI_CONTAINERID {cid[:80]!r} is invalid",
            "it must match [a-zA-Z0-9][a-zA-Z0-9_.-]* and be at most 1024 characters",
        )
    ifname = environ.get("CNI_IFNAME", "")
    if ifname or command in ("ADD", "CHECK", "DEL"):
        _validate_ifname(ifname)


def decode_config(stdin: bytes) -> dict[str, Any]:
    """Decode the network configuration on stdin (error 6 when it is not JSON, 7 when not an object)."""
    if len(stdin) > MAX_STDIN:
        raise CniError(DECODE_FAILURE, "network configuration on stdin is too large", f"{len(stdin)} bytes, limit {MAX_STDIN}")
    try:
        config = json.loads(stdin)
    except (ValueError, RecursionError) as exc:
        raise CniError(DECODE_FAILURE, "cannot decode the network configuration on stdin", str(exc)[:200]) from None
    if not isinstance(config, dict):
        raise CniError(INVALID_CONFIG, "network configuration must be a JSON object", f"got {type(config).__name__}")
    return config


def config_version(config: Mapping[str, Any]) -> str:
    """The config's `cniVersion`, validated as a version we speak."""
    if "cniVersion" not in config:
        raise CniError(
            INCOMPATIBLE_VERSION,
            "network configuration has no cniVersion (that means 0.1.0, which is not supported)",
            "set cniVersion to 0.3.1, 0.4.0, 1.0.0 or 1.1.0",
        )
    version = config["cniVersion"]
    if not isinstance(version, str):
        raise CniError(INVALID_CONFIG, "cniVersion must be a string", f"got {json.dumps(version)[:80]}")
    require_supported(version)
    return version


def _validate_config(command: str, config: dict[str, Any], version: str) -> None:
    for key in ("name", "type"):
        value = config.get(key)
        if not isinstance(value, str) or not value:
            raise CniError(INVALID_CONFIG, f"network configuration needs a string {key!r}", f"got {json.dumps(value)[:80]}")
    if len(config["name"]) > MAX_ID_LENGTH or not NAME_RE.fullmatch(config["name"]):
        raise CniError(
            INVALID_CONFIG,
            f"network name {config['name'][:80]!r} is invalid",
            f"it must match [a-zA-Z0-9][a-zA-Z0-9_.-]* and be at most {MAX_ID_LENGTH} characters",
        )
    if "prevResult" in config and not isinstance(config["prevResult"], dict):
        raise CniError(INVALID_CONFIG, "prevResult must be a JSON object")
    if "runtimeConfig" in config and not isinstance(config["runtimeConfig"], dict):
        raise CniError(INVALID_CONFIG, "runtimeConfig must be a JSON object")
    if command == "CHECK" and not at_least(version, "0.4.0"):
        raise CniError(INCOMPATIBLE_VERSION, f"CHECK is not supported for cniVersion {version}", "CHECK needs cniVersion 0.4.0 or newer")
    if command in ("GC", "STATUS") and not at_least(version, "1.1.0"):
        raise CniError(INCOMPATIBLE_VERSION, f"{command} is not supported for cniVersion {version}", f"{command} needs cniVersion 1.1.0")
    if command == "CHECK" and not isinstance(config.get("prevResult"), dict):
        raise CniError(INVALID_CONFIG, "CHECK needs prevResult in the network configuration")


def parse_request(command: str, environ: Mapping[str, str], stdin: bytes) -> CniRequest:
    """Validate the environment and stdin of a non-VERSION verb and return the request."""
    _validate_env(command, environ)
    config = decode_config(stdin)
    version = config_version(config)
    _validate_config(command, config, version)
    args = parse_cni_args(environ.get("CNI_ARGS", ""))
    return CniRequest(
        command=command,
        cni_version=version,
        config=config,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        cni_path=[p for p in environ.get("CNI_PATH", "").split(":") if p],
        args=args,
        environ=environ,
        stdin=stdin,
    )
