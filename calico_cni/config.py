"""Typed view of the Calico keys in a network configuration (both plugins read the same keys).

Only the standard library is imported: parsing the config must stay cheap.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping

from .protocol.errors import INVALID_CONFIG, CniError

DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_ETCD_TIMEOUT = 5.0


@dataclass(frozen=True)
class EtcdSettings:
    """How to reach etcd: endpoints, TLS files, credentials and the per-call deadline."""

    endpoints: tuple[str, ...]
    ca_cert_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_ETCD_TIMEOUT


@dataclass(frozen=True)
class IpamSettings:
    """The `ipam` section as calico-ipam reads it."""

    type: str
    assign_ipv4: bool = True
    assign_ipv6: bool = False
    ipv4_pools: tuple[str, ...] = ()
    ipv6_pools: tuple[str, ...] = ()


def _string(config: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = config.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise CniError(INVALID_CONFIG, f"{key} must be a string", f"got {value!r}"[:120])
    return value


def _bool(config: Mapping[str, Any], key: str, default: bool) -> bool:
    """Calico writes booleans as "true"/"false" strings; accept real booleans too."""
    value = config.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CniError(INVALID_CONFIG, f"{key} must be true or false", f"got {value!r}"[:120])


def _number(config: Mapping[str, Any], key: str, default: float, minimum: float = 0) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise CniError(INVALID_CONFIG, f"{key} must be a number >= {minimum}", f"got {value!r}"[:120])
    return value


def _pool_list(ipam: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = ipam.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CniError(INVALID_CONFIG, f"ipam.{key} must be a list of pool names or CIDRs", f"got {value!r}"[:120])
    return tuple(value)


def etcd_settings(config: Mapping[str, Any], environ: Mapping[str, str]) -> EtcdSettings:
    """etcd connection settings: config keys first, then the ETCD_* environment variables."""
    datastore = _string(config, "datastore_type", "etcdv3")
    if datastore != "etcdv3":
        raise CniError(INVALID_CONFIG, f"datastore_type {datastore!r} is not supported", "this implementation stores its data in etcd v3: use etcdv3")

    def pick(key: str, env: str) -> str | None:
        return _string(config, key) or environ.get(env) or None

    endpoints = pick("etcd_endpoints", "ETCD_ENDPOINTS")
    if not endpoints:
        authority = pick("etcd_authority", "ETCD_AUTHORITY")
        endpoints = f"http://{authority}" if authority else None
    if not endpoints:
        raise CniError(
            INVALID_CONFIG,
            "no etcd endpoints configured",
            "set etcd_endpoints in the network configuration (e.g. \"http://127.0.0.1:2379\") or ETCD_ENDPOINTS",
        )
    parsed = tuple(e.strip() for e in endpoints.split(",") if e.strip())
    for endpoint in parsed:
        scheme, sep, rest = endpoint.partition("://")
        if not sep or scheme not in ("http", "https") or not rest:
            raise CniError(INVALID_CONFIG, f"etcd endpoint {endpoint!r} is invalid", "expected http://host:port or https://host:port")
    return EtcdSettings(
        endpoints=parsed,
        ca_cert_file=pick("etcd_ca_cert_file", "ETCD_CA_CERT_FILE"),
        cert_file=pick("etcd_cert_file", "ETCD_CERT_FILE"),
        key_file=pick("etcd_key_file", "ETCD_KEY_FILE"),
        username=pick("etcd_username", "ETCD_USERNAME"),
        password=pick("etcd_password", "ETCD_PASSWORD"),
        timeout=float(_number(config, "etcd_timeout", DEFAULT_ETCD_TIMEOUT, minimum=0.1)),
    )


def ipam_settings(config: Mapping[str, Any]) -> IpamSettings:
    """The `ipam` section, validated."""
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        raise CniError(INVALID_CONFIG, "network configuration needs an ipam section", "for example {\"type\": \"calico-ipam\"}")
    itype = ipam.get("type")
    if not isinstance(itype, str) or not itype:
        raise CniError(INVALID_CONFIG, "ipam.type must be a non-empty string")
    settings = IpamSettings(
        type=itype,
        assign_ipv4=_bool(ipam, "assign_ipv4", True),
        assign_ipv6=_bool(ipam, "assign_ipv6", False),
        ipv4_pools=_pool_list(ipam, "ipv4_pools"),
        ipv6_pools=_pool_list(ipam, "ipv6_pools"),
    )
    if not settings.assign_ipv4 and not settings.assign_ipv6:
        raise CniError(INVALID_CONFIG, "ipam assigns no address", "assign_ipv4 and assign_ipv6 are both false")
    return settings


def node_name(config: Mapping[str, Any]) -> str:
    """The node's name: `nodename`, else `nodename_file`, else the host name (lower-cased)."""
    name = _string(config, "nodename")
    if name:
        return name
    path = _string(config, "nodename_file", DEFAULT_NODENAME_FILE) or DEFAULT_NODENAME_FILE
    optional = _bool(config, "nodename_file_optional", False)
    try:
        with open(path, encoding="utf-8") as f:
            name = f.read().strip()
    except FileNotFoundError:
        if not optional:
            raise CniError(
                INVALID_CONFIG,
                f"cannot determine the node name: {path} does not exist",
                "set nodename in the network configuration, write the node name to that file, or set nodename_file_optional to true to use the host name",
            ) from None
    except OSError as exc:
        raise CniError(INVALID_CONFIG, f"cannot read the node name from {path}", str(exc)) from None
    if name:
        return name
    return socket.gethostname().lower()


def log_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The logging keys, with Calico's defaults."""
    return {
        "level": _string(config, "log_level", "info") or "info",
        "path": _string(config, "log_file_path", os.environ.get("CALICO_CNI_LOG_FILE", "/var/log/calico/cni/cni.log")),
        "max_size_mb": _number(config, "log_file_max_size", 100),
        "max_count": int(_number(config, "log_file_max_count", 10)),
        "max_age_days": _number(config, "log_file_max_age", 30),
    }
