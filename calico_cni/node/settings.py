"""calico-node's settings: Calico's `calico/node` environment variables, each also a flag.

`from_args(argv, environ)` reads the command line and the environment once, checks every value
and returns a frozen `NodeSettings`; nothing below re-reads the environment. A value that cannot
be used raises `SettingsError` saying what to set. A flag wins over its variable. The datastore
variables are read as Calico's apiconfig reads them: the `CALICO_`-prefixed name first
(`CALICO_ETCD_ENDPOINTS`, then `ETCD_ENDPOINTS`). A variable or flag set to the empty string counts
as unset (manifests often carry `value: ""`).

Only etcd is a datastore here: `DATASTORE_TYPE=kubernetes`, or no etcd endpoints (where Calico
would fall back to Kubernetes), is refused at start.

scripts/install-cni.sh runs `from_args` from the checkout with the machine's Python, before any
package is installed, to refuse bad settings early: this module imports only the standard library
and calico_cni's stdlib-only modules (config, errors, model).

The readiness and liveness probes (`-bird-ready`, `-felix-live`, ... `-threshold-time`) parse with
one dash as Calico's Go flags do (two dashes work too); with a probe flag the datastore settings
are not required, so a probe never fails on one.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping, Sequence

from calico_cni.config import ConfigError, EtcdSettings, etcd_settings, read_regular_file
from calico_cni.config import valid_node_name as plugins_node_name_check  # the plugins' rule; see _valid_name
from calico_cni.errors import CalicoError
from calico_cni.model import selector

DEFAULT_RUN_DIR = "/var/run/calico"
DEFAULT_STATE_DIR = "/var/lib/calico"
DEFAULT_CNI_NET_DIR = "/etc/cni/net.d"
DEFAULT_IPV4_POOL_CIDR = "192.168.0.0/16"
DEFAULT_IPV4_BLOCK_SIZE = 26
DEFAULT_IPV6_BLOCK_SIZE = 122
BLOCK_SIZES = {4: (20, 32), 6: (116, 128)}
BACKENDS = ("bird", "vxlan", "none")
DEFAULT_THRESHOLD_TIME = 30.0
DEFAULT_AUTODETECT_POLL_INTERVAL = 60.0
LOG_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning", "error": "error", "fatal": "error", "panic": "error"}
PROBES = ("bird-ready", "bird6-ready", "bird-live", "bird6-live", "felix-ready", "felix-live")
# The IP_AUTODETECTION_METHOD forms (Calico v3.30's node/pkg/lifecycle/startup/autodetection).
FIRST_FOUND = "first-found"
INTERFACE = "interface="
SKIP_INTERFACE = "skip-interface="
CAN_REACH = "can-reach="
CIDR = "cidr="
KUBERNETES_INTERNAL_IP = "kubernetes-internal-ip"
_LIST_SEPARATOR = re.compile(r"\s*,\s*")
# Calico's evaluateENVBool: these words are false, any other set value is true. Here a value that
# is neither one of these nor one of the true words is refused (a typo must not silently mean true).
_FALSE_WORDS = ("false", "0", "no", "n", "f")
_TRUE_WORDS = ("true", "1", "yes", "y", "t")
# NO_DEFAULT_POOLS and DISABLE_NODE_IP_CHECK are not read by evaluateENVBool: Calico compares them
# with "true", so its "yes" or "1" mean false. Only true and false (any case) are taken for them: a
# word Calico would read the other way is refused rather than taken differently. (Calico compares
# DISABLE_NODE_IP_CHECK case-sensitively; "True" is taken here as the true it is meant to be.)
_STRICT_WORDS = (("true",), ("false",))


class SettingsError(CalicoError):
    """A calico-node setting (flag or environment variable) that cannot be used."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises `SettingsError` instead of exiting, so the caller
    reports it like any other setting (`--help` still prints and exits)."""

    def error(self, message: str):  # type: ignore[override]
        raise SettingsError(message, "see calico-node --help")


# --------------------------------------------------------------------------------------------
# The variables


@dataclass(frozen=True)
class Variable:
    """One setting: its environment names (tried in order), its flag, the default and the help."""

    dest: str
    envs: tuple[str, ...]
    help: str
    default: str | None = None
    flag: str | None = None
    boolean: bool = False
    secret: bool = False
    # A boolean Calico compares with "true" (see _STRICT_WORDS) rather than reads with evaluateENVBool.
    strict: bool = False

    @property
    def option(self) -> str:
        """The flag: the unprefixed variable name in lower case with dashes (IP_AUTODETECTION_METHOD
        is --ip-autodetection-method), unless the variable names another."""
        return self.flag or "--" + self.envs[-1].lower().replace("_", "-")


def _datastore(dest: str, name: str, help_text: str, default: str | None = None, secret: bool = False) -> Variable:
    return Variable(dest, (f"CALICO_{name}", name), help_text, default, secret=secret)


VARIABLES: tuple[Variable, ...] = (
    Variable("nodename", ("NODENAME",), "this node's name; else the nodename file's contents, else HOSTNAME, else the host name (both lower-cased)"),
    Variable("nodename_file", ("CALICO_NODENAME_FILE",), "where the node name is kept between runs (default: <state dir>/nodename)"),
    Variable("ip", ("IP",), "IPv4 address with prefix (198.19.1.2/24), a bare address (its prefix taken from the interface holding it), autodetect, or none (keep the stored one); empty: autodetect when nothing is stored"),
    Variable("ip6", ("IP6",), "IPv6 address with prefix (a bare one is a /128, as Calico), autodetect, or none; empty: keep the stored one (IPv6 is detected only when asked)"),
    Variable("ip_autodetection_method", ("IP_AUTODETECTION_METHOD",), "first-found, interface=REGEX[,REGEX], skip-interface=REGEX[,REGEX], can-reach=DEST or cidr=CIDR[,CIDR]", FIRST_FOUND),
    Variable("ip6_autodetection_method", ("IP6_AUTODETECTION_METHOD",), "as IP_AUTODETECTION_METHOD, for IPv6", FIRST_FOUND),
    Variable("as_number", ("AS",), "this node's BGP AS number (a number, or a.b); unset: keep the stored one (none: the cluster's)", flag="--as"),
    Variable("backend", ("CALICO_NETWORKING_BACKEND",), "bird (BGP with BIRD), vxlan or none (no routing, no node addresses)", "bird"),
    Variable("router_id", ("CALICO_ROUTER_ID",), "BGP router id: an IPv4 address, or hash (derived from the node name; an IPv6-only node needs one); unset: the node's IPv4 address"),
    _datastore("datastore_type", "DATASTORE_TYPE", "etcdv3 (the only datastore supported)", "etcdv3"),
    _datastore("etcd_endpoints", "ETCD_ENDPOINTS", "comma-separated etcd URLs, e.g. http://198.19.0.1:2379 (required)"),
    _datastore("etcd_discovery_srv", "ETCD_DISCOVERY_SRV", "not supported: set ETCD_ENDPOINTS"),
    _datastore("etcd_username", "ETCD_USERNAME", "etcd user name"),
    _datastore("etcd_password", "ETCD_PASSWORD", "etcd password", secret=True),
    _datastore("etcd_key_file", "ETCD_KEY_FILE", "client private key file (TLS)"),
    _datastore("etcd_cert_file", "ETCD_CERT_FILE", "client certificate file (TLS)"),
    _datastore("etcd_ca_cert_file", "ETCD_CA_CERT_FILE", "CA certificate file to verify etcd (TLS)"),
    _datastore("etcd_timeout", "ETCD_TIMEOUT", "seconds each etcd call may take", "5"),
    Variable("ipv4_pool_cidr", ("CALICO_IPV4POOL_CIDR",), f"the default IPv4 pool's CIDR, or none; unset: {DEFAULT_IPV4_POOL_CIDR} (or the first free 172.16-31.0.0/16 if that holds a host address)"),
    Variable("ipv4_pool_block_size", ("CALICO_IPV4POOL_BLOCK_SIZE",), "the default IPv4 pool's block size (20 to 32)", str(DEFAULT_IPV4_BLOCK_SIZE)),
    Variable("ipv4_pool_ipip", ("CALICO_IPV4POOL_IPIP",), "the default IPv4 pool's ipipMode: never/off, cross-subnet, always", "never"),
    Variable("ipv4_pool_vxlan", ("CALICO_IPV4POOL_VXLAN",), "the default IPv4 pool's vxlanMode: never/off, cross-subnet, always", "never"),
    Variable("ipv4_pool_nat_outgoing", ("CALICO_IPV4POOL_NAT_OUTGOING",), "the default IPv4 pool's natOutgoing", "true", boolean=True),
    Variable("ipv4_pool_disable_bgp_export", ("CALICO_IPV4POOL_DISABLE_BGP_EXPORT",), "the default IPv4 pool's disableBGPExport", "false", boolean=True),
    Variable("ipv4_pool_node_selector", ("CALICO_IPV4POOL_NODE_SELECTOR",), "the default IPv4 pool's nodeSelector (empty: all())"),
    Variable("ipv6_pool_cidr", ("CALICO_IPV6POOL_CIDR",), "the default IPv6 pool's CIDR, or none; unset: a random ULA /48"),
    Variable("ipv6_pool_block_size", ("CALICO_IPV6POOL_BLOCK_SIZE",), "the default IPv6 pool's block size (116 to 128)", str(DEFAULT_IPV6_BLOCK_SIZE)),
    Variable("ipv6_pool_vxlan", ("CALICO_IPV6POOL_VXLAN",), "the default IPv6 pool's vxlanMode: never/off, cross-subnet, always", "never"),
    Variable("ipv6_pool_nat_outgoing", ("CALICO_IPV6POOL_NAT_OUTGOING",), "the default IPv6 pool's natOutgoing", "false", boolean=True),
    Variable("ipv6_pool_disable_bgp_export", ("CALICO_IPV6POOL_DISABLE_BGP_EXPORT",), "the default IPv6 pool's disableBGPExport", "false", boolean=True),
    Variable("ipv6_pool_node_selector", ("CALICO_IPV6POOL_NODE_SELECTOR",), "the default IPv6 pool's nodeSelector (empty: all())"),
    Variable("no_default_pools", ("NO_DEFAULT_POOLS",), "create no default pool (true or false)", "false", boolean=True, strict=True),
    Variable("ipv6_support", ("FELIX_IPV6SUPPORT",), "false: never create the default IPv6 pool", "true", boolean=True),
    Variable("disable_node_ip_check", ("DISABLE_NODE_IP_CHECK",), "allow an address another node already has (true or false)", "false", boolean=True, strict=True),
    Variable("k8s_node_ref", ("CALICO_K8S_NODE_REF",), "the Kubernetes node name, recorded in the Node's orchRefs"),
    Variable("cluster_type", ("CLUSTER_TYPE",), "cluster types added to ClusterInformation (comma-separated; default bgp)"),
    Variable("autodetect_poll_interval", ("AUTODETECT_POLL_INTERVAL",), "how often the node's addresses are detected again (a duration: 60s, 5m; 0: never)", "60s"),
    Variable("run_dir", ("CALICO_RUN_DIR",), "BIRD's control socket (bird.ctl) and the plugins' socket (cni.sock)", DEFAULT_RUN_DIR),
    Variable("state_dir", ("CALICO_STATE_DIR",), "the nodename and MTU files and BIRD's rendered configuration", DEFAULT_STATE_DIR),
    Variable("cni_net_dir", ("CNI_NET_DIR",), "the CNI network configurations (calico-node warns about a calico mtu above what the encapsulation leaves room for)", DEFAULT_CNI_NET_DIR),
    Variable("log_level", ("CALICO_LOG_LEVEL",), "debug, info, warning or error", "info", flag="--log-level"),
    Variable("log_file", ("CALICO_LOG_FILE",), "log file (default: standard error only)", flag="--log-file"),
)
_BY_DEST = {v.dest: v for v in VARIABLES}


def _help(variable: Variable) -> str:
    names = " or ".join(f"${e}" for e in variable.envs)
    default = "" if variable.default is None else f"; default {variable.default}"
    return f"{variable.help} [{names}{default}]".replace("%", "%%")


def parser() -> argparse.ArgumentParser:
    """The command line of `calico-node`: one flag per variable, and the probe flags."""
    p = _Parser(
        prog="calico-node",
        allow_abbrev=False,
        description="The per-node daemon: registers this node, creates the default pools, serves the CNI plugins and runs BIRD. "
        "Every setting is an environment variable (as Calico's calico/node) or the flag named after it; a flag wins.",
    )
    settings = p.add_argument_group("settings")
    for variable in VARIABLES:
        if variable.boolean:
            # `--no-default-pools` alone is true; `--no-default-pools=false` works too.
            settings.add_argument(variable.option, dest=variable.dest, nargs="?", const="true", default=None, metavar="BOOL", help=_help(variable))
        else:
            settings.add_argument(variable.option, dest=variable.dest, default=None, metavar="VALUE", help=_help(variable))
    probes = p.add_argument_group("probes (exit 0 when healthy, else print what is wrong and exit 1)")
    for probe in PROBES:
        probes.add_argument(f"-{probe}", f"--{probe}", dest=probe.replace("-", "_"), action="store_true", help=f"run the {probe} check")
    probes.add_argument(
        "-threshold-time", "--threshold-time", dest="threshold_time", default=None, metavar="DURATION",
        help=f"-bird-ready: how long after start-up every BGP session must be up (default {DEFAULT_THRESHOLD_TIME:g}s); "
        "-felix-live: how recent each part's last good pass must be (default: not checked). 30s, 1m; a bare number is seconds",
    )
    return p


# --------------------------------------------------------------------------------------------
# The settings


@dataclass(frozen=True)
class PoolSettings:
    """What the default pool of one family is made of (CALICO_IPV4POOL_* or CALICO_IPV6POOL_*).
    `cidr` is "" (choose the default), "none" (create none) or a CIDR (masked, as Calico does)."""

    version: int
    cidr: str
    block_size: int
    ipip_mode: str
    vxlan_mode: str
    nat_outgoing: bool
    disable_bgp_export: bool
    node_selector: str

    @property
    def name(self) -> str:
        """The pool Calico's start-up creates: default-ipv4-ippool or default-ipv6-ippool."""
        return f"default-ipv{self.version}-ippool"


@dataclass(frozen=True)
class Method:
    """A parsed IP_AUTODETECTION_METHOD: `kind` is first-found, interface, skip-interface,
    can-reach, cidr or kubernetes-internal-ip; `values` its regexes, destination or CIDRs."""

    text: str
    kind: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSettings:
    """Every calico-node setting, checked. `ip`/`ip6` are the raw text ("", "autodetect", "none",
    or an address with or without prefix); `as_number` the AS as given (None: unset)."""

    nodename: str
    nodename_origin: str
    ip: str
    ip6: str
    ip_autodetection_method: str
    ip6_autodetection_method: str
    as_number: str | None
    backend: str
    router_id: str | None
    etcd: EtcdSettings
    ipv4_pool: PoolSettings
    ipv6_pool: PoolSettings
    no_default_pools: bool
    ipv6_support: bool
    disable_node_ip_check: bool
    k8s_node_ref: str | None
    cluster_type: str | None
    autodetect_poll_interval: float
    run_dir: str
    state_dir: str
    log_level: str
    log_file: str | None
    nodename_file_setting: str | None = None
    cni_net_dir: str = DEFAULT_CNI_NET_DIR
    datastore_type: str = "etcdv3"
    probes: tuple[str, ...] = ()
    # -threshold-time as given; None: not given (-bird-ready then uses DEFAULT_THRESHOLD_TIME,
    # -felix-live checks no age).
    threshold_time: float | None = None

    @property
    def nodename_file(self) -> str:
        """CALICO_NODENAME_FILE, else <state dir>/nodename."""
        return self.nodename_file_setting or os.path.join(self.state_dir, "nodename")

    @property
    def bird_socket(self) -> str:
        """BIRD's control socket: <run dir>/bird.ctl."""
        return os.path.join(self.run_dir, "bird.ctl")

    @property
    def bird_pid(self) -> str:
        """BIRD's pid file: <run dir>/bird.pid."""
        return os.path.join(self.run_dir, "bird.pid")

    @property
    def cni_socket(self) -> str:
        """The plugins' socket: <run dir>/cni.sock."""
        return os.path.join(self.run_dir, "cni.sock")

    @property
    def bird_config(self) -> str:
        """BIRD's rendered configuration: <state dir>/bird.cfg."""
        return os.path.join(self.state_dir, "bird.cfg")

    @property
    def mtu_file(self) -> str:
        """The MTU file the plugins read: <state dir>/mtu."""
        return os.path.join(self.state_dir, "mtu")

    @property
    def as_number_value(self) -> int | None:
        """AS as a number (the dotted a.b form converted), or None when unset."""
        return None if self.as_number is None else as_number(self.as_number)

    def method(self, version: int) -> Method:
        """The parsed autodetection method of one IP version."""
        return parse_method(self.ip_autodetection_method if version == 4 else self.ip6_autodetection_method, _env_name("ip_autodetection_method" if version == 4 else "ip6_autodetection_method"))

    def pool(self, version: int) -> PoolSettings:
        """The default pool settings of one IP version."""
        return self.ipv4_pool if version == 4 else self.ipv6_pool


def _env_name(dest: str) -> str:
    return _BY_DEST[dest].envs[-1]


class _Values:
    """The raw value of each variable: the flag's, else the first environment name that is set,
    else the default; and where it came from, for messages."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str]) -> None:
        self.args = args
        self.environ = environ

    def raw(self, dest: str) -> tuple[str | None, str]:
        variable = _BY_DEST[dest]
        given = getattr(self.args, dest, None)
        if given is not None and given.strip():
            return given, variable.option
        for env in variable.envs:
            if self.environ.get(env, "").strip():
                return self.environ[env], env
        return variable.default, variable.envs[-1]

    def get(self, dest: str) -> str | None:
        return self.raw(dest)[0]

    def text(self, dest: str) -> str:
        return (self.get(dest) or "").strip()

    def flag(self, dest: str) -> bool:
        value, origin = self.raw(dest)
        word = (value or "").strip().lower()
        true_words, false_words = _STRICT_WORDS if _BY_DEST[dest].strict else (_TRUE_WORDS, _FALSE_WORDS)
        if word in true_words:
            return True
        if word in false_words:
            return False
        if _BY_DEST[dest].strict and word in _TRUE_WORDS + _FALSE_WORDS:
            raise SettingsError(f"{origin}={value!r} is ambiguous: Calico takes only the word true as true here", "use true or false")
        raise SettingsError(f"{origin}={value!r} is not a boolean", "use true or false")


# --------------------------------------------------------------------------------------------
# Checks of single values


def parse_method(text: str, origin: str = "IP_AUTODETECTION_METHOD") -> Method:
    """An autodetection method checked as Calico reads it: regexes must compile, CIDRs parse.
    SettingsError for any other text."""
    text = text.strip()
    if text in ("", FIRST_FOUND):
        return Method(text or FIRST_FOUND, "first-found")
    if text.startswith(KUBERNETES_INTERNAL_IP):
        return Method(text, "kubernetes-internal-ip")
    for prefix, kind in ((INTERFACE, "interface"), (SKIP_INTERFACE, "skip-interface")):
        if text.startswith(prefix):
            patterns = tuple(_LIST_SEPARATOR.split(text[len(prefix):].strip()))
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise SettingsError(f"{origin}={text!r}: {pattern!r} is not a valid interface regex", str(exc)) from None
            return Method(text, kind, patterns)
    if text.startswith(CIDR):
        cidrs = []
        for part in _LIST_SEPARATOR.split(text[len(CIDR):].strip()):
            try:
                if "/" not in part:
                    raise ValueError("no prefix length")
                cidrs.append(str(ipaddress.ip_network(part, strict=False)))
            except ValueError:
                raise SettingsError(f"{origin}={text!r}: {part!r} is not a CIDR", "write cidr=198.19.0.0/16[,CIDR...]") from None
        return Method(text, "cidr", tuple(cidrs))
    if text.startswith(CAN_REACH):
        destination = text[len(CAN_REACH):].strip()
        if not destination:
            raise SettingsError(f"{origin}={text!r}: can-reach needs a destination", "write can-reach=198.19.0.1 (an address or a host name)")
        return Method(text, "can-reach", (destination,))
    raise SettingsError(
        f"invalid IP autodetection method {origin}={text!r}",
        "use first-found, interface=REGEX[,REGEX], skip-interface=REGEX[,REGEX], can-reach=DEST or cidr=CIDR[,CIDR]",
    )


def _address(value: str, origin: str, version: int) -> str:
    """IP/IP6: "", autodetect, none, or an address of `version` with or without a prefix."""
    if value in ("", "autodetect", "none"):
        return value
    try:
        parsed = ipaddress.ip_interface(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.version != version:
        raise SettingsError(
            f"{origin}={value!r} is not an IPv{version} address",
            f"set {origin} to an IPv{version} address (with or without /prefix), autodetect, or none",
        )
    return value


def as_number(text: str) -> int | None:
    """An AS number as Calico's numorstring reads one: 1 to 4294967295, or the dotted a.b form
    (each part 0 to 65535, meaning a*65536+b); None when it is neither. (The model's ASNumber field
    reads the same; not imported here so that a probe stays light.)"""
    if text.isascii() and text.isdigit():
        number = int(text)
    else:
        high, dot, low = text.partition(".")
        if not (dot and all(p.isascii() and p.isdigit() and int(p) <= 65535 for p in (high, low))):
            return None
        number = (int(high) << 16) + int(low)
    return number if 0 < number <= 4294967295 else None


def _as_number(value: str | None, origin: str) -> str | None:
    if value is None or value.strip() == "":
        return None
    if as_number(value.strip()) is None:
        raise SettingsError(f"{origin}={value!r} is not a valid AS number", "use 1 to 4294967295, or the dotted form a.b (each part 0 to 65535)")
    return value.strip()


def _router_id(value: str | None, origin: str) -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if value == "hash":
        return value
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise SettingsError(f"{origin}={value!r} is not a router id", "use an IPv4 address (BGP router ids are 32-bit) or hash") from None
    return value


def _backend(value: str, origin: str) -> str:
    backend = value.strip().lower() or "bird"
    if backend not in BACKENDS:
        raise SettingsError(f"{origin}={value!r} is not a networking backend", "use bird, vxlan or none")
    return backend


def _mode(value: str, origin: str) -> str:
    """Calico's pool mode words, case-insensitive: ""/off/never, crosssubnet/cross-subnet, always."""
    word = value.strip().lower()
    if word in ("", "off", "never"):
        return "Never"
    if word in ("crosssubnet", "cross-subnet"):
        return "CrossSubnet"
    if word == "always":
        return "Always"
    raise SettingsError(f"{origin}={value!r} is not an encapsulation mode", "use never (or off), cross-subnet, or always")


def _block_size(values: _Values, dest: str, version: int) -> int:
    value, origin = values.raw(dest)
    low, high = BLOCK_SIZES[version]
    text = (value or "").strip()
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise SettingsError(f"{origin}={value!r} is not an IPv{version} block size", f"use a prefix length from {low} to {high}")
    return int(text)


def _pool_cidr(value: str, origin: str, version: int) -> str:
    text = value.strip()
    if text in ("", "none"):
        return text
    try:
        if "/" not in text:
            raise ValueError("no prefix length")
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        net = None
    if net is None or net.version != version:
        raise SettingsError(f"Invalid CIDR specified in {origin} {value!r}", f"use an IPv{version} CIDR, or none for no default IPv{version} pool")
    return str(net)


def _selector(value: str, origin: str) -> str:
    text = value.strip()
    try:
        selector.parse(text)
    except ValueError as exc:
        raise SettingsError(f"{origin}={value!r} is not a valid node selector", str(exc)) from None
    return text


_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)")
_DURATION = re.compile(r"(?:[0-9]*(?:\.[0-9]*)?(?:ns|us|µs|ms|s|m|h))+")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: str, origin: str) -> float:
    """A Go duration ("30s", "1m30s") or a bare number of seconds, as seconds (not negative)."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        if not _DURATION.fullmatch(text) or any(n in ("", ".") for n, _ in _DURATION_PART.findall(text)):
            raise SettingsError(f"{origin}={value!r} is not a duration", "write e.g. 30s, 5m or 1h30m (a bare number is seconds)") from None
        seconds = sum(float(n) * _SECONDS[u] for n, u in _DURATION_PART.findall(text))
    if not 0 <= seconds < float("inf"):
        raise SettingsError(f"{origin}={value!r} is not a duration", "it must be 0 or more")
    return seconds


# --------------------------------------------------------------------------------------------
# Node name


def resolve_nodename(values: Mapping[str, str | None], environ: Mapping[str, str], nodename_file: str) -> tuple[str, str]:
    """The node name and where it came from, in Calico's order: NODENAME; the nodename file;
    HOSTNAME (lower-cased); the host name (lower-cased)."""
    name = (values.get("nodename") or "").strip()
    if name:
        return _valid_name(name, "NODENAME"), "NODENAME"
    try:
        stored = read_regular_file(nodename_file, 4096).decode("utf-8").strip()
    except FileNotFoundError:
        stored = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read the node name from {nodename_file}", f"{exc}; fix the file, or set NODENAME") from None
    if stored:
        return _valid_name(stored, nodename_file), nodename_file
    name = environ.get("HOSTNAME", "").strip().lower()
    if name:
        return _valid_name(name, "HOSTNAME"), "HOSTNAME"
    return _valid_name(socket.gethostname().strip().lower(), "the host name"), "the host name"


def _valid_name(name: str, origin: str) -> str:
    """`name`, checked by the rule the plugins apply to the same name (calico_cni.config): the node
    and its plugins must agree on which names are valid."""
    try:
        return plugins_node_name_check(name, f"the node name from {origin}")
    except ConfigError as exc:
        raise SettingsError(exc.msg, f"{exc.details}: set NODENAME") from None


# --------------------------------------------------------------------------------------------
# The whole


def _etcd(values: _Values) -> EtcdSettings:
    datastore, origin = values.raw("datastore_type")
    if (datastore or "").strip() == "kubernetes":
        raise SettingsError(
            f"{origin}=kubernetes is not supported",
            "only etcdv3 is supported: set DATASTORE_TYPE=etcdv3 and ETCD_ENDPOINTS",
        )
    if (datastore or "").strip() not in ("", "etcdv3"):
        raise SettingsError(f"{origin}={datastore!r} is not a datastore type", "only etcdv3 is supported: set DATASTORE_TYPE=etcdv3 and ETCD_ENDPOINTS")
    srv, srv_origin = values.raw("etcd_discovery_srv")
    if srv:
        raise SettingsError(f"{srv_origin} (etcd discovery by DNS SRV records) is not supported", "set ETCD_ENDPOINTS to the etcd URLs instead")
    if not values.text("etcd_endpoints"):
        raise SettingsError(
            "no etcd endpoints configured (Calico would fall back to the Kubernetes datastore, which is not supported)",
            "only etcdv3 is supported: set DATASTORE_TYPE=etcdv3 and ETCD_ENDPOINTS (e.g. http://198.19.0.1:2379)",
        )
    if values.get("etcd_password") and not values.get("etcd_username"):
        raise SettingsError("an etcd password is set but no user name", "set ETCD_USERNAME too")
    if bool(values.get("etcd_cert_file")) != bool(values.get("etcd_key_file")):
        raise SettingsError("ETCD_CERT_FILE and ETCD_KEY_FILE go together", "a client certificate needs its private key: set both")
    timeout, timeout_origin = values.raw("etcd_timeout")
    try:
        seconds = float(timeout or "")
    except ValueError:
        raise SettingsError(f"{timeout_origin}={timeout!r} is not a number of seconds", f"set {timeout_origin} to e.g. 5 (0.1 to 300)") from None
    config = {
        "etcd_endpoints": values.text("etcd_endpoints"),
        "etcd_username": values.get("etcd_username") or None,
        "etcd_password": values.get("etcd_password") or None,
        "etcd_key_file": values.get("etcd_key_file") or None,
        "etcd_cert_file": values.get("etcd_cert_file") or None,
        "etcd_ca_cert_file": values.get("etcd_ca_cert_file") or None,
        "etcd_timeout": seconds,
    }
    try:
        return etcd_settings({k: v for k, v in config.items() if v is not None}, {})
    except ConfigError as exc:
        # The plugins' checks name their config keys: only etcd_timeout and the endpoints are left
        # to check here (the rest was checked above with the variables' names).
        if "etcd_timeout" in exc.msg:
            raise SettingsError(exc.msg.replace("etcd_timeout", timeout_origin), exc.details) from None
        raise SettingsError(f"{values.raw('etcd_endpoints')[1]}: {exc.msg}", exc.details) from None


def _pool(values: _Values, version: int) -> PoolSettings:
    family = f"ipv{version}_pool"
    cidr_value, cidr_origin = values.raw(f"{family}_cidr")
    ipip_value, ipip_origin = values.raw(f"{family}_ipip") if version == 4 else ("never", "")
    vxlan_value, vxlan_origin = values.raw(f"{family}_vxlan")
    selector_value, selector_origin = values.raw(f"{family}_node_selector")
    return PoolSettings(
        version=version,
        cidr=_pool_cidr(cidr_value or "", cidr_origin, version),
        block_size=_block_size(values, f"{family}_block_size", version),
        ipip_mode=_mode(ipip_value or "", ipip_origin),
        vxlan_mode=_mode(vxlan_value or "", vxlan_origin),
        nat_outgoing=values.flag(f"{family}_nat_outgoing"),
        disable_bgp_export=values.flag(f"{family}_disable_bgp_export"),
        node_selector=_selector(selector_value or "", selector_origin),
    )


def _log_level(value: str, origin: str) -> str:
    level = LOG_LEVELS.get(value.strip().lower())
    if level is None:
        raise SettingsError(f"{origin}={value!r} is not a log level", "use debug, info, warning or error")
    return level


def _probes(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(p for p in PROBES if getattr(args, p.replace("-", "_"), False))


def _threshold(args: argparse.Namespace) -> float | None:
    if args.threshold_time is None:
        return None
    return duration_seconds(args.threshold_time, "-threshold-time")


def _absolute_path(values: _Values, dest: str, example: str) -> str | None:
    """The variable's path (its default when unset; None when it has none): an absolute path."""
    value, origin = values.raw(dest)
    text = (value or "").strip() or None
    if text is not None and not text.startswith("/"):
        raise SettingsError(f"{origin}={value!r} is not an absolute path", f"set {origin} to an absolute path, e.g. {example}")
    return text


def from_args(argv: Sequence[str], environ: Mapping[str, str]) -> NodeSettings:
    """Every setting from the command line (`argv`, without the program name) and `environ`,
    checked; SettingsError for the first that cannot be used. With a probe flag the datastore
    settings are not required (`etcd` then has no endpoints when they are unusable)."""
    args = parser().parse_args(list(argv))
    values = _Values(args, environ)
    probes = _probes(args)
    try:
        etcd = _etcd(values)
    except SettingsError:
        if not probes:
            raise
        # A probe never reads the datastore: it must not fail on a datastore setting.
        etcd = EtcdSettings(())
    backend = _backend(*values.raw("backend"))
    ip = _address(values.text("ip"), values.raw("ip")[1], 4)
    ip6 = _address(values.text("ip6"), values.raw("ip6")[1], 6)
    methods = {}
    for dest in ("ip_autodetection_method", "ip6_autodetection_method"):
        methods[dest] = parse_method(values.text(dest), values.raw(dest)[1]).text
    as_number = _as_number(*values.raw("as_number"))
    router_id = _router_id(*values.raw("router_id"))
    ipv4_pool, ipv6_pool = _pool(values, 4), _pool(values, 6)
    no_default_pools = values.flag("no_default_pools")
    if no_default_pools and (ipv4_pool.cidr or ipv6_pool.cidr):
        given = values.raw("ipv4_pool_cidr")[1] if ipv4_pool.cidr else values.raw("ipv6_pool_cidr")[1]
        raise SettingsError(f"NO_DEFAULT_POOLS is true and {given} is set", "Calico refuses this combination: unset one of them")
    run_dir = _absolute_path(values, "run_dir", DEFAULT_RUN_DIR) or DEFAULT_RUN_DIR
    state_dir = _absolute_path(values, "state_dir", DEFAULT_STATE_DIR) or DEFAULT_STATE_DIR
    nodename_file = _absolute_path(values, "nodename_file", os.path.join(DEFAULT_STATE_DIR, "nodename"))
    nodename, origin = resolve_nodename({"nodename": values.get("nodename")}, environ, nodename_file or os.path.join(state_dir, "nodename"))
    poll = duration_seconds(values.text("autodetect_poll_interval") or "60s", values.raw("autodetect_poll_interval")[1])
    return NodeSettings(
        nodename=nodename,
        nodename_origin=origin,
        ip=ip,
        ip6=ip6,
        ip_autodetection_method=methods["ip_autodetection_method"],
        ip6_autodetection_method=methods["ip6_autodetection_method"],
        as_number=as_number,
        backend=backend,
        router_id=router_id,
        etcd=etcd,
        ipv4_pool=ipv4_pool,
        ipv6_pool=ipv6_pool,
        no_default_pools=no_default_pools,
        ipv6_support=values.flag("ipv6_support"),
        disable_node_ip_check=values.flag("disable_node_ip_check"),
        k8s_node_ref=values.text("k8s_node_ref") or None,
        cluster_type=values.get("cluster_type"),
        autodetect_poll_interval=poll,
        run_dir=run_dir,
        state_dir=state_dir,
        log_level=_log_level(*values.raw("log_level")),
        log_file=values.text("log_file") or None,
        nodename_file_setting=nodename_file,
        cni_net_dir=_absolute_path(values, "cni_net_dir", DEFAULT_CNI_NET_DIR) or DEFAULT_CNI_NET_DIR,
        probes=probes,
        threshold_time=_threshold(args),
    )
