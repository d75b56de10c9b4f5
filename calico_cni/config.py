"""Typed view of the Calico keys in a network configuration (both plugins read the same keys).

Each plugin verb parses its configuration once, at its top, into one frozen settings object
(`CalicoSettings`, `IpamPluginSettings`) that it passes down; nothing below re-reads the dict. A
key that cannot be used raises `ConfigError` (the plugins report it as CNI error 7, calicoctl as a
usage error). Only the standard library is imported: parsing the config must stay cheap.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Mapping

from calico_cni.errors import CalicoError

DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_JOURNAL_DIR = "/var/lib/calico/cni-journal"
JOURNAL_DIR_ENV = "CALICO_RELEASE_JOURNAL_DIR"
DEFAULT_ETCD_TIMEOUT = 5.0
# Runtimes give a plugin about 60 s or less; a longer per-call deadline could never fire first.
MAX_ETCD_TIMEOUT = 300.0
ETCD_STRING_KEYS = (
    "etcd_endpoints",
    "etcd_authority",
    "etcd_ca_cert_file",
    "etcd_cert_file",
    "etcd_key_file",
    "etcd_username",
    "etcd_password",
)
PLUGIN_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")
_ENDPOINT_RE = re.compile(r"https?://(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?/?")
# Keys whose values are secrets: never echoed in an error message or a log record.
SECRET_KEYS = frozenset({"etcd_password"})
# A node name becomes part of etcd keys (/calico/ipam/v2/host/<node>/...): a host name or DNS
# subdomain, case preserved as Calico does, never a '/', whitespace or control character.
NODE_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")


class ConfigError(CalicoError):
    """A network configuration key, environment variable or settings file that cannot be used."""


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
    # An optional cap on the blocks of one family this node claims for automatic assignments
    # (0: none of its own, as Calico's CNI plugin sets none: maxBlocksPerHost, else 20, applies).
    max_blocks_per_node: int = 0


def _shown(key: str, value: Any) -> str:
    """What an error may say about a value: never a secret's value, only its type."""
    if key in SECRET_KEYS:
        return f"got a {type(value).__name__}"
    return f"got {value!r}"[:120]


def _string(config: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = config.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string", _shown(key, value))
    return value


def _flag(value: Any, key: str) -> bool:
    """A boolean setting: Calico writes booleans as "true"/"false" strings; real booleans too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{key} must be true or false", f"got {value!r}"[:120])


def _bool(config: Mapping[str, Any], key: str, default: bool) -> bool:
    return _flag(config.get(key, default), key)


def _number(config: Mapping[str, Any], key: str, default: float, minimum: float = 0) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{key} must be a number >= {minimum}", f"got {value!r}"[:120])
    return value


# The whole datastore part of one plugin invocation ends within `add_timeout` seconds: well under
# the ~60 s a runtime gives a plugin.
DEFAULT_OPERATION_TIMEOUT = 20.0
MAX_OPERATION_TIMEOUT = 55.0


def operation_timeout(config: Mapping[str, Any]) -> float:
    """`add_timeout`: the bound on all etcd work of one ADD, DEL or CHECK (both plugins)."""
    timeout = config.get("add_timeout", DEFAULT_OPERATION_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= MAX_OPERATION_TIMEOUT:
        raise ConfigError(f"add_timeout must be a number of seconds from 0.1 to {MAX_OPERATION_TIMEOUT:g}", f"got {timeout!r}"[:120])
    return float(timeout)


def _pool_list(ipam: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = ipam.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"ipam.{key} must be a list of pool names or CIDRs", f"got {value!r}"[:120])
    return tuple(value)


def _max_blocks(ipam: Mapping[str, Any]) -> int:
    value = ipam.get("max_blocks_per_node", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError("ipam.max_blocks_per_node must be a whole number >= 0 (0: the cluster's limit)", f"got {value!r}"[:120])
    return value


def etcd_settings(config: Mapping[str, Any], environ: Mapping[str, str]) -> EtcdSettings:
    """etcd connection settings: config keys first, then the ETCD_* environment variables."""
    datastore = _string(config, "datastore_type", "etcdv3")
    if datastore != "etcdv3":
        raise ConfigError(f"datastore_type {datastore!r} is not supported", "this implementation stores its data in etcd v3: use etcdv3")

    for key in ETCD_STRING_KEYS:
        _string(config, key)  # every key's type, also of keys this config does not end up using

    def pick(key: str, env: str) -> str | None:
        return _string(config, key) or environ.get(env) or None

    endpoints = pick("etcd_endpoints", "ETCD_ENDPOINTS")
    if not endpoints:
        authority = pick("etcd_authority", "ETCD_AUTHORITY")
        endpoints = f"http://{authority}" if authority else None
    if not endpoints:
        raise ConfigError(
            "no etcd endpoints configured",
            "set etcd_endpoints in the network configuration (e.g. \"http://127.0.0.1:2379\") or ETCD_ENDPOINTS",
        )
    parsed = tuple(e.strip() for e in endpoints.split(",") if e.strip())
    if not parsed:
        raise ConfigError("no etcd endpoints configured", "etcd_endpoints is a comma-separated list of http(s)://host:port")
    for endpoint in parsed:
        if "@" in endpoint:
            # Never echo it: the part before '@' is likely a user name and password.
            raise ConfigError(
                "an etcd endpoint carries credentials in its URL",
                "put the user name and password in etcd_username and etcd_password (or ETCD_USERNAME and ETCD_PASSWORD)",
            )
        match = _ENDPOINT_RE.fullmatch(endpoint)
        if not match or (match.group("port") and not 0 < int(match.group("port")) < 65536):
            raise ConfigError(f"etcd endpoint {endpoint[:120]!r} is invalid", "expected http://host:port or https://host:port")
    settings = EtcdSettings(
        endpoints=parsed,
        ca_cert_file=pick("etcd_ca_cert_file", "ETCD_CA_CERT_FILE"),
        cert_file=pick("etcd_cert_file", "ETCD_CERT_FILE"),
        key_file=pick("etcd_key_file", "ETCD_KEY_FILE"),
        username=pick("etcd_username", "ETCD_USERNAME"),
        password=pick("etcd_password", "ETCD_PASSWORD"),
        timeout=float(_number(config, "etcd_timeout", DEFAULT_ETCD_TIMEOUT, minimum=0.1)),
    )
    if settings.timeout > MAX_ETCD_TIMEOUT:
        raise ConfigError(f"etcd_timeout must be at most {MAX_ETCD_TIMEOUT:g} seconds", f"got {settings.timeout:g}")
    if settings.password and not settings.username:
        raise ConfigError("an etcd password is set but no user name", "set etcd_username (or ETCD_USERNAME) too")
    if bool(settings.cert_file) != bool(settings.key_file):
        raise ConfigError(
            "etcd_cert_file and etcd_key_file go together",
            "a client certificate needs its private key (set both, in the config or as ETCD_CERT_FILE and ETCD_KEY_FILE)",
        )
    return settings


def ipam_settings(config: Mapping[str, Any]) -> IpamSettings:
    """The `ipam` section, validated."""
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        raise ConfigError("network configuration needs an ipam section", "for example {\"type\": \"calico-ipam\"}")
    itype = ipam.get("type")
    if not isinstance(itype, str) or not itype:
        raise ConfigError("ipam.type must be a non-empty string")
    if not PLUGIN_NAME_RE.fullmatch(itype) or itype in (".", ".."):
        # A plugin is found by name in CNI_PATH: a path here could run any program on the host.
        raise ConfigError(
            f"ipam.type {itype[:80]!r} is not a plugin name",
            "it names an executable in CNI_PATH: letters, digits, '.', '-' and '_' only, no '/'",
        )
    settings = IpamSettings(
        type=itype,
        assign_ipv4=_bool(ipam, "assign_ipv4", True),
        assign_ipv6=_bool(ipam, "assign_ipv6", False),
        ipv4_pools=_pool_list(ipam, "ipv4_pools"),
        ipv6_pools=_pool_list(ipam, "ipv6_pools"),
        max_blocks_per_node=_max_blocks(ipam),
    )
    if not settings.assign_ipv4 and not settings.assign_ipv6:
        raise ConfigError("ipam assigns no address", "assign_ipv4 and assign_ipv6 are both false")
    return settings


def node_name(config: Mapping[str, Any]) -> str:
    """The node's name: `nodename`, else `nodename_file`, else the host name (lower-cased)."""
    check_node_name_keys(config)
    name = _string(config, "nodename")
    if name:
        return name
    path = _string(config, "nodename_file", DEFAULT_NODENAME_FILE) or DEFAULT_NODENAME_FILE
    optional = _bool(config, "nodename_file_optional", False)
    try:
        name = read_regular_file(path, 4096).decode("utf-8").strip()
    except FileNotFoundError:
        if not optional:
            raise ConfigError(
                f"cannot determine the node name: {path} does not exist",
                "set nodename in the network configuration, write the node name to that file, or set nodename_file_optional to true to use the host name",
            ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the node name from {path[:200]}", str(exc)[:200]) from None
    if name:
        return valid_node_name(name, f"the node name in {path}")
    return valid_node_name(host_name().lower(), "the host name")


def host_name() -> str:
    """The host name (what socket.gethostname() returns, without importing socket: 3 ms of every
    in-process plugin run)."""
    return os.uname().nodename


def read_regular_file(path: str, limit: int) -> bytes:
    """At most `limit` bytes of a regular file. A FIFO or device at the path (a hostile or mistaken
    setting) must neither block the plugin nor flood its memory: they are refused with EINVAL."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def valid_node_name(name: str, origin: str) -> str:
    """`name` when it is a valid node name; ConfigError naming `origin` otherwise (the one rule for
    the plugins and calico-node)."""
    if not NODE_NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{origin} {name[:80]!r} is not a valid node name",
            "a node name has 1 to 253 letters, digits, '.', '-' or '_', starting and ending with a letter or digit",
        )
    return name


def check_node_name_keys(config: Mapping[str, Any]) -> None:
    """Type-check the node-name keys without reading any file (for verbs that need no node name)."""
    name = _string(config, "nodename")
    if name:
        valid_node_name(name, "nodename")
    _string(config, "nodename_file")
    _bool(config, "nodename_file_optional", False)


def log_settings(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The logging keys, with Calico's defaults; $CALICO_CNI_LOG_FILE of `environ` (the request's:
    in the agent, the caller's) names the default file."""
    environ = os.environ if environ is None else environ
    return {
        "level": _string(config, "log_level", "info") or "info",
        "path": _string(config, "log_file_path", environ.get("CALICO_CNI_LOG_FILE", "/var/log/calico/cni/cni.log")),
        "max_size_mb": _number(config, "log_file_max_size", 100),
        "max_count": int(_number(config, "log_file_max_count", 10)),
        "max_age_days": _number(config, "log_file_max_age", 30),
    }


def journal_dir(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """The release journal's directory: `release_journal_dir`, else $CALICO_RELEASE_JOURNAL_DIR of
    `environ` (the request's environment; default this process's, as calicoctl reads it), else
    /var/lib/calico/cni-journal."""
    value = config.get("release_journal_dir")
    if value is None:
        return (os.environ if environ is None else environ).get(JOURNAL_DIR_ENV) or DEFAULT_JOURNAL_DIR
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError("release_journal_dir must be an absolute path", f"got {value!r}"[:120])
    return value


# --------------------------------------------------------------------------------------------
# One object per plugin invocation


@dataclass(frozen=True)
class IpamPluginSettings:
    """What `calico-ipam` reads from its network configuration and environment, but the node name:
    each verb resolves it (or, needing none, only type-checks its keys) where its order of errors
    puts it."""

    ipam: IpamSettings
    etcd: EtcdSettings
    operation_timeout: float
    journal_dir: str


def ipam_plugin_settings(config: Mapping[str, Any], environ: Mapping[str, str]) -> IpamPluginSettings:
    """calico-ipam's settings, every key checked before the first etcd call so that a bad request
    fails with its error and changes nothing."""
    return IpamPluginSettings(ipam_settings(config), etcd_settings(config, environ), operation_timeout(config), journal_dir(config, environ))


@dataclass(frozen=True)
class CalicoSettings:
    """What the `calico` plugin reads from its network configuration and environment."""

    mtu: int | None
    allow_ip_forwarding: bool
    operation_timeout: float
    journal_dir: str
    ipam: IpamSettings
    node: str | None
    # The etcd settings, or why they cannot be used (raised by `etcd`, when the verb needs them).
    _etcd: EtcdSettings | ConfigError = field(repr=False)
    # `policy.type`: "" (profiles named after the network) or "k8s" (a pod's namespace profile).
    policy_type: str = ""
    # `mtu_file`: where calico-node writes the pod MTU (None: $CALICO_MTU_FILE, else the default).
    mtu_file: str | None = None

    @property
    def ipam_type(self) -> str:
        """The IPAM plugin: calico-ipam (run in this process) or another one (run by exec)."""
        return self.ipam.type

    @property
    def etcd(self) -> EtcdSettings:
        """The etcd settings. An unusable etcd key is reported here, when the verb first needs
        etcd, not at parse time: DEL tears the dataplane down before it needs etcd, and an ADD
        into a missing network namespace reports that first."""
        if isinstance(self._etcd, ConfigError):
            raise self._etcd
        return self._etcd


def calico_settings(config: Mapping[str, Any], environ: Mapping[str, str], *, resolve_node: bool) -> CalicoSettings:
    """The `calico` plugin's settings (before any side effect). `resolve_node` says whether the
    node name is resolved; when not, the node-name keys are not read."""
    mtu = config.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int)):
        raise ConfigError("mtu must be a whole number", f"got {mtu!r}"[:120])
    container = config.get("container_settings") or {}
    if not isinstance(container, dict):
        raise ConfigError("container_settings must be an object")
    forwarding = _flag(container.get("allow_ip_forwarding", False), "container_settings.allow_ip_forwarding")
    timeout = operation_timeout(config)
    directory = journal_dir(config, environ)
    ipam = ipam_settings(config)
    node = node_name(config) if resolve_node else None
    etcd: EtcdSettings | ConfigError
    try:
        etcd = etcd_settings(config, environ)
    except ConfigError as exc:
        etcd = exc
    mtu_file = config.get("mtu_file")
    if mtu_file is not None and (not isinstance(mtu_file, str) or not mtu_file.startswith("/")):
        raise ConfigError("mtu_file must be an absolute path", f"got {mtu_file!r}"[:120])
    return CalicoSettings(mtu or None, forwarding, timeout, directory, ipam, node, etcd, policy_type(config), mtu_file)


POLICY_TYPES = ("", "k8s")


def policy_type(config: Mapping[str, Any]) -> str:
    """`policy.type`, as Calico's plugin reads it: absent or "" (endpoints name the network's
    profile, created when missing) or "k8s" (a pod's endpoint names `kns.<namespace>`). Another
    string is returned as it is: only ADD refuses it (`check_policy_type`), so a DEL of a network
    whose config Calico accepted still works."""
    policy = config.get("policy") or {}
    if not isinstance(policy, dict):
        raise ConfigError("policy must be an object", f"got {policy!r}"[:120])
    value = policy.get("type", "")
    if not isinstance(value, str):
        raise ConfigError("policy.type must be a string: \"k8s\" or absent", f"got {value!r}"[:120])
    return value


def check_policy_type(value: str) -> None:
    """ConfigError unless `value` is a policy type this plugin acts on ("" or "k8s")."""
    if value not in POLICY_TYPES:
        raise ConfigError("policy.type must be \"k8s\" or absent", f"got {value!r}"[:120])
