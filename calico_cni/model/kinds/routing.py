"""Node, BGPConfiguration, BGPPeer and BGPFilter: the cluster's routing resources. Fields, rules
and defaults as Calico v3.30's validator and clients apply them in etcd mode; the few places where
we refuse what Calico would store are marked "stricter than Calico" with the reason.

Go's `omitempty` means an empty string, a zero number, false or an empty list is not stored: the
kinds' `prepare` drops such values where Calico's field is not a pointer, so what is stored is what
Calico would store. Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable

from calico_cni.model import checks
from calico_cni.model.checks import ip_family, parse_cidr_or_ip, parse_ip
from calico_cni.model.kinds.metadata import name_of
from calico_cni.model.schema import Bool, Column, Enum, Field, Int, Invalid, Kind, List, Obj, Str, duration, join

DEFAULT_AS_NUMBER = 64512
LOG_LEVELS = ("Debug", "Info", "Warning", "Error", "Fatal")

# --- checks of this module's fields (the general address parsing is in `checks`) ---


def ipv4(text: str) -> str | None:
    """An IPv4 address (or an IPv4-mapped IPv6 one, as Go reads it)."""
    addr = parse_ip(text)
    if addr is None or ip_family(addr) != 4:
        return f"invalid IPv4 address {text!r}"
    return None


def ipv6(text: str) -> str | None:
    """An IPv6 address that is not IPv4-mapped."""
    addr = parse_ip(text)
    if addr is None or ip_family(addr) != 6:
        return f"invalid IPv6 address {text!r}"
    return None


def any_ip(text: str) -> str | None:
    """An IPv4 or IPv6 address."""
    if parse_ip(text) is None:
        return f"invalid IP address {text!r}"
    return None


def cidr_v4(text: str) -> str | None:
    """An IPv4 address with an optional prefix, host bits allowed (a node's `ipv4Address`)."""
    parsed = parse_cidr_or_ip(text)
    if parsed is None or ip_family(parsed[0]) != 4:
        return f"invalid IPv4 CIDR {text!r}: expected an address with its prefix length, e.g. 198.19.0.1/24"
    return None


def cidr_v6(text: str) -> str | None:
    """An IPv6 address with an optional prefix, host bits allowed (a node's `ipv6Address`)."""
    parsed = parse_cidr_or_ip(text)
    if parsed is None or ip_family(parsed[0]) != 6:
        return f"invalid IPv6 CIDR {text!r}: expected an address with its prefix length, e.g. fd00:198:19::1/64"
    return None


def any_cidr(text: str) -> str | None:
    """An IPv4 or IPv6 network or address, host bits allowed (Calico's `cidr` rule)."""
    if parse_cidr_or_ip(text) is None:
        return f"invalid CIDR {text!r}: expected an IPv4 or IPv6 network such as 198.18.0.0/24, or an address"
    return None


def network_v4(text: str) -> str | None:
    """A strictly masked IPv4 network or a bare IPv4 address (Calico's `netv4` rule)."""
    return checks.network(text, 4)


def network_v6(text: str) -> str | None:
    """A strictly masked IPv6 network or a bare IPv6 address (Calico's `netv6` rule)."""
    return checks.network(text, 6)


def wireguard_key(text: str) -> str | None:
    """A WireGuard public key: 32 bytes, base64-encoded."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        return f"invalid WireGuard public key {text!r}: expected 32 bytes in base64 (44 characters)"
    return None


# An interface name or glob as BIRD quotes it (BGPConfiguration.ignoredInterfaces, BGPFilter rules).
_INTERFACE_GLOB = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}\Z")


def ignored_interface(text: str) -> str | None:
    """An interface name or glob BIRD leaves out of its device routes (not a bare '*')."""
    if text == "*" or not _INTERFACE_GLOB.match(text):
        return f"invalid interface {text!r}: at most 15 letters, digits, '_', '.', '-' or '*', and not '*' alone"
    return None


# Calico's pattern leaves the dots unescaped, harmless in Go's linear-time regexp; in Python's
# backtracking one it takes hours on a long digit string (a peerIP is user input), so they are
# escaped here: a host that is not four dotted numbers fails the address parse below either way.
_IPV4_PORT = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+):(\d+)\Z")
_IPV6_PORT = re.compile(r"^\[([0-9a-fA-F:.]+)\]:(\d+)\Z")


def split_peer_ip(text: str) -> tuple[str, int] | None:
    """A BGP peer's `ip`, `ip:port` or `[ipv6]:port` as (address, port or 0); None when invalid."""
    host, port = text, 0
    m4, m6 = _IPV4_PORT.match(text), _IPV6_PORT.match(text)
    if m4 or m6:
        if m6:
            host, port_text = m6.group(1), m6.group(2)
        else:
            host, _, port_text = text.rpartition(":")
        port = int(port_text)
        if not 1 <= port <= 65535:
            return None
    if parse_ip(host) is None:
        return None
    return host, port


def peer_ip(text: str) -> str | None:
    """A BGP peer's `peerIP`: an address, `ipv4:port` or `[ipv6]:port`."""
    if split_peer_ip(text) is None:
        return f"invalid peerIP {text!r}: expected <IP>, <IPv4>:<port> or [<IPv6>]:<port>, the port 1 to 65535"
    return None


def resource_name(text: str) -> str | None:
    """A resource's name, as another resource refers to it (Calico's `name` rule)."""
    return checks.dns_subdomain(text)


# --- field types of this module ---


@dataclass(frozen=True)
class ASNumber(Field):
    """A BGP AS number as Calico decodes it: a number up to 4294967295, or a string holding one,
    or the dotted "a.b" form (each part 0 to 65535, meaning a*65536+b). Decoded to a number.
    `allow_zero`: a BGPPeer's 0 means "not set" (Calico stores nothing); a Node's or a
    BGPConfiguration's 0 is refused (stricter than Calico, which stores it and then renders a
    BIRD configuration that BIRD rejects)."""

    allow_zero: bool = False

    def decode(self, value: Any, path: str) -> Any:
        number = None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            if value.isascii() and value.isdigit():
                number = int(value)
            else:
                high, dot, low = value.partition(".")
                if dot and all(p.isascii() and p.isdigit() and int(p) <= 65535 for p in (high, low)):
                    number = (int(high) << 16) + int(low)
        if number is None or not 0 <= number <= 4294967295:
            raise Invalid(path, f"invalid AS number {value!r}: expected 1 to 4294967295, or the dotted form a.b (each 0 to 65535)")
        if number == 0 and not self.allow_zero:
            raise Invalid(path, "invalid AS number 0: expected 1 to 4294967295")
        return number


@dataclass(frozen=True)
class OrEmpty(Field):
    """An optional (omitempty) string field: "" is accepted as "not set" (Calico skips its rule
    and stores nothing); anything else must pass `inner`."""

    inner: Field

    def decode(self, value: Any, path: str) -> Any:
        if value == "":
            return ""
        return self.inner.decode(value, path)


def omit_empty(obj: dict, keys: Iterable[str]) -> None:
    """Drops the `keys` whose value Go's omitempty would not store ("", 0, false, [], {})."""
    for key in keys:
        if key in obj and obj[key] in ("", 0, [], {}):  # 0 == False, so false is dropped too
            del obj[key]


_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def _fraction_text(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def go_duration_text(nanos: int) -> str:
    """A duration written as Go writes it (time.Duration.String): 90s is "1m30s", 1h is "1h0m0s"."""
    if nanos == 0:
        return "0s"
    if nanos < 10**3:
        return f"{nanos}ns"
    if nanos < 10**6:
        return _fraction_text(nanos, 10**3) + "µs"
    if nanos < 10**9:
        return _fraction_text(nanos, 10**6) + "ms"
    hours, rest = divmod(nanos, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _fraction_text(rest, 10**9) + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def duration_nanos(text: str) -> int:
    """A duration `schema.duration` accepted, in nanoseconds with its sign (a fraction of a
    nanosecond is dropped)."""
    nanos = int(sum(Fraction(number) * _NANOS[unit] for number, unit in _DURATION_PART.findall(text)))
    return -nanos if text.startswith("-") else nanos


@dataclass(frozen=True)
class GoDuration(Field):
    """A Kubernetes duration (`metav1.Duration`) such as "90s" or "1h30m": checked with
    `schema.duration` and stored as Calico stores it, in Go's spelling ("90s" becomes "1m30s")."""

    def decode(self, value: Any, path: str) -> Any:
        nanos = duration_nanos(Str(duration).decode(value, path))
        # Go keeps the sign ("-90s" is stored as "-1m30s").
        text = go_duration_text(abs(nanos))
        return f"-{text}" if nanos < 0 else text


SECRET_KEY_REF = Obj({"name": Str(), "key": Str(), "optional": Bool()})
BGP_PASSWORD = Obj({"secretKeyRef": SECRET_KEY_REF})


def _spec(doc: dict) -> dict:
    return doc.get("spec") or {}


# --- Node ---

_NODE_BGP_KEYS = ("ipv4Address", "ipv6Address", "ipv4IPIPTunnelAddr", "routeReflectorClusterID")

NODE_BGP = Obj(
    {
        "asNumber": ASNumber(),
        "ipv4Address": OrEmpty(Str(cidr_v4)),
        "ipv6Address": OrEmpty(Str(cidr_v6)),
        "ipv4IPIPTunnelAddr": OrEmpty(Str(ipv4)),
        "routeReflectorClusterID": OrEmpty(Str(ipv4)),
    }
)

NODE_SPEC = Obj(
    {
        "bgp": NODE_BGP,
        "ipv4VXLANTunnelAddr": OrEmpty(Str(ipv4)),
        "vxlanTunnelMACAddr": OrEmpty(Str(checks.mac)),
        "ipv6VXLANTunnelAddr": OrEmpty(Str(ipv6)),
        "vxlanTunnelMACAddrV6": OrEmpty(Str(checks.mac)),
        "orchRefs": List(Obj({"nodeName": Str(), "orchestrator": Str()})),
        "wireguard": Obj({"interfaceIPv4Address": OrEmpty(Str(ipv4)), "interfaceIPv6Address": OrEmpty(Str(ipv6))}),
        "addresses": List(
            Obj({"address": Str(checks.network), "type": OrEmpty(Enum("CalicoNodeIP", "InternalIP", "ExternalIP"))}, required=("address",)),
        ),
    }
)

NODE_STATUS = Obj(
    {
        "wireguardPublicKey": OrEmpty(Str(wireguard_key)),
        "wireguardPublicKeyV6": OrEmpty(Str(wireguard_key)),
        "podCIDRs": List(Str()),
    }
)


def _prepare_node(doc: dict) -> None:
    """Drops what Calico would not store, then: `spec.bgp`, when given, must set something."""
    spec = doc["spec"]
    omit_empty(spec, ("ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr", "ipv6VXLANTunnelAddr", "vxlanTunnelMACAddrV6", "orchRefs", "addresses"))
    for ref in spec.get("orchRefs", []):
        omit_empty(ref, ("nodeName",))
    for address in spec.get("addresses", []):
        omit_empty(address, ("type",))
    if "wireguard" in spec:
        omit_empty(spec["wireguard"], ("interfaceIPv4Address", "interfaceIPv6Address"))
    if "bgp" in spec:
        omit_empty(spec["bgp"], _NODE_BGP_KEYS)
        if not spec["bgp"]:
            raise Invalid("spec.bgp", "Spec.BGP should not be empty: set ipv4Address or ipv6Address (or remove bgp)")
    if "status" in doc:
        omit_empty(doc["status"], ("wireguardPublicKey", "wireguardPublicKeyV6", "podCIDRs"))


def node_asn(doc: dict, global_as: int | str = DEFAULT_AS_NUMBER) -> str:
    """The ASN cell of `get nodes -o wide`: the node's own AS, or the AS it inherits in
    parentheses ("(64512)"), or nothing when the node has no BGP settings. calicoctl shows the
    cluster's AS there (the `default` BGPConfiguration's, else 64512); a cell sees only the node, so
    the caller may pass `global_as`."""
    bgp = _spec(doc).get("bgp")
    if not bgp:
        return ""
    if bgp.get("asNumber"):
        return str(bgp["asNumber"])
    return f"({global_as})"


def _bgp_field(doc: dict, key: str) -> str:
    return str((_spec(doc).get("bgp") or {}).get(key) or "")


NODE = Kind(
    name="Node",
    plural="nodes",
    aliases=("node", "nodes", "no", "nos"),
    spec=NODE_SPEC,
    status=NODE_STATUS,
    prepare=_prepare_node,
    columns=(Column("NAME", name_of),),
    wide=(
        Column("NAME", name_of),
        Column("ASN", lambda d, context: node_asn(d, context.get("global_as", DEFAULT_AS_NUMBER)), contextual=True),
        Column("IPV4", lambda d: _bgp_field(d, "ipv4Address")),
        Column("IPV6", lambda d: _bgp_field(d, "ipv6Address")),
    ),
)

# --- BGPConfiguration ---

_STANDARD_COMMUNITY = re.compile(r"^(\d+):(\d+)\Z")
_LARGE_COMMUNITY = re.compile(r"^(\d+):(\d+):(\d+)\Z")


def community_value(text: str) -> str | None:
    """Why a community value is refused: None when it is `aa:nn` (16-bit parts) or `aa:nn:mm`
    (32-bit parts); "format" when it is neither form (it may still be a community's name)."""
    standard, large = _STANDARD_COMMUNITY.match(text), _LARGE_COMMUNITY.match(text)
    if not (standard or large):
        return "format"
    bits = 16 if standard else 32
    if any(int(part) >= 1 << bits for part in text.split(":")):
        return f"invalid community value {text!r}: expected {bits} bit values (aa:nn with 16 bit parts, or aa:nn:mm with 32 bit parts)"
    return None


def _community_check(text: str) -> str | None:
    reason = community_value(text)
    if reason == "format":
        return f"invalid community value {text!r}: expected aa:nn or aa:nn:mm"
    return reason


CIDR_BLOCK = Obj({"cidr": OrEmpty(Str(checks.network))})

BGP_CONFIGURATION_SPEC = Obj(
    {
        "logSeverityScreen": OrEmpty(Enum(*LOG_LEVELS)),
        "nodeToNodeMeshEnabled": Bool(),
        "asNumber": ASNumber(),
        "serviceLoadBalancerIPs": List(CIDR_BLOCK),
        "serviceExternalIPs": List(CIDR_BLOCK),
        "serviceClusterIPs": List(CIDR_BLOCK),
        "communities": List(Obj({"name": Str(resource_name), "value": Str(_community_check)}, required=("name", "value"))),
        "prefixAdvertisements": List(Obj({"cidr": Str(checks.network), "communities": List(Str())}, required=("cidr", "communities"))),
        "listenPort": Int(0, 65535),
        "nodeMeshPassword": BGP_PASSWORD,
        "nodeMeshMaxRestartTime": GoDuration(),
        # Calico's validator takes any string here and treats all but NodeIP as None: stricter
        # than Calico, a misspelt mode is refused rather than silently meaning "all addresses".
        "bindMode": Enum("None", "NodeIP"),
        "ignoredInterfaces": List(Str(ignored_interface)),
        "localWorkloadPeeringIPV4": OrEmpty(Str(ipv4)),
        "localWorkloadPeeringIPV6": OrEmpty(Str(ipv6)),
    }
)

# Fields only the `default` BGPConfiguration may set (Calico's clientv3 rule), with the
# spelling Calico's message uses.
DEFAULT_ONLY = (
    ("nodeToNodeMeshEnabled", "nodeToNodeMeshEnabled"),
    ("asNumber", "ASNumber"),
    ("serviceLoadBalancerIPs", "ServiceLoadBalancerIPs"),
    ("serviceExternalIPs", "ServiceExternalIPs"),
    ("serviceClusterIPs", "ServiceClusterIPs"),
    ("nodeMeshPassword", "nodeMeshPassword"),
    ("nodeMeshMaxRestartTime", "nodeMeshMaxRestartTime"),
)


def _prepare_bgp_configuration(doc: dict) -> None:
    """Calico sets no defaults here (an absent field means: mesh on, AS 64512, log Info); it
    checks the communities, the mesh-only fields and what a non-default resource may set."""
    spec = doc["spec"]
    _omit_empty_bgp_configuration(spec)
    _check_communities(spec)
    _check_mesh_only_fields(spec)
    if name_of(doc) != "default":
        _check_default_only_fields(spec)


def _omit_empty_bgp_configuration(spec: dict) -> None:
    """Drop the empty values Go's omitempty leaves out, also in each service CIDR block."""
    omit_empty(spec, ("logSeverityScreen", "listenPort", "localWorkloadPeeringIPV4", "localWorkloadPeeringIPV6"))
    omit_empty(spec, ("serviceLoadBalancerIPs", "serviceExternalIPs", "serviceClusterIPs", "communities", "prefixAdvertisements", "ignoredInterfaces"))
    for key in ("serviceLoadBalancerIPs", "serviceExternalIPs", "serviceClusterIPs"):
        for block in spec.get(key, []):
            omit_empty(block, ("cidr",))


def _check_communities(spec: dict) -> None:
    """Defined communities must be used by a prefix advertisement, and each community a prefix
    advertisement names is a well-formed value (aa:nn or aa:nn:mm) or a defined community's name."""
    communities = spec.get("communities", [])
    if communities and not spec.get("prefixAdvertisements"):
        raise Invalid("spec.communities", "communities are defined but not used in Spec.PrefixAdvertisement[]: add prefixAdvertisements that use them")
    names = {c["name"] for c in communities}
    for i, advert in enumerate(spec.get("prefixAdvertisements", [])):
        for j, value in enumerate(advert["communities"]):
            reason = community_value(value)
            path = join(join(join("spec.prefixAdvertisements", i), "communities"), j)
            if reason == "format" and value not in names:
                raise Invalid(path, f"community used is invalid or not defined: {value!r} is neither aa:nn, aa:nn:mm nor the name of one of spec.communities")
            if reason and reason != "format":
                raise Invalid(path, reason)


def _check_mesh_only_fields(spec: dict) -> None:
    """The mesh password and restart time apply to the node-to-node mesh: not set when it is off."""
    if spec.get("nodeToNodeMeshEnabled") is False:
        for key in ("nodeMeshPassword", "nodeMeshMaxRestartTime"):
            if key in spec:
                raise Invalid(f"spec.{key}", f"spec.{key} cannot be set if spec.nodeToNodeMeshEnabled is disabled")


def _check_default_only_fields(spec: dict) -> None:
    """A BGPConfiguration other than 'default' (a per-node one) sets none of DEFAULT_ONLY: the
    mesh and its settings, the AS number, the service IPs to advertise."""
    for key, spelt in DEFAULT_ONLY:
        if key in spec:
            raise Invalid(
                f"spec.{key}",
                f"Cannot set {spelt} on a non default BGP Configuration: only the BGPConfiguration named 'default' may set it",
            )


# calicoctl prints the same table with or without -o wide. An unset mesh flag or AS shows "-".
_BGP_CONFIGURATION_COLUMNS = (
    Column("NAME", name_of),
    Column("LOGSEVERITY", lambda d: _spec(d).get("logSeverityScreen", "")),
    Column("MESHENABLED", lambda d: {True: "true", False: "false"}.get(_spec(d).get("nodeToNodeMeshEnabled"), "-")),
    Column("ASNUMBER", lambda d: str(_spec(d).get("asNumber") or "-")),
)

BGP_CONFIGURATION = Kind(
    name="BGPConfiguration",
    plural="bgpconfigurations",
    aliases=("bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"),
    spec=BGP_CONFIGURATION_SPEC,
    prepare=_prepare_bgp_configuration,
    columns=_BGP_CONFIGURATION_COLUMNS,
    wide=_BGP_CONFIGURATION_COLUMNS,
)

# --- BGPPeer ---

BGP_PEER_SPEC = Obj(
    {
        "node": OrEmpty(Str(resource_name)),
        "nodeSelector": OrEmpty(Str(checks.selector)),
        "peerIP": OrEmpty(Str(peer_ip)),
        "asNumber": ASNumber(allow_zero=True),
        "peerSelector": OrEmpty(Str(checks.selector)),
        "keepOriginalNextHop": Bool(),
        "password": BGP_PASSWORD,
        "sourceAddress": OrEmpty(Enum("UseNodeIP", "None")),
        "maxRestartTime": GoDuration(),
        "numAllowedLocalASNumbers": Int(-(2**31), 2**31 - 1),
        "ttlSecurity": Int(0, 255),
        "reachableBy": OrEmpty(Str(any_ip)),
        "filters": List(Str(resource_name)),
        "localWorkloadSelector": OrEmpty(Str(checks.selector)),
    }
)


def _prepare_bgp_peer(doc: dict) -> None:
    """The rules between the local side (node, nodeSelector, localWorkloadSelector) and the remote
    side (peerIP with asNumber, or peerSelector). Calico sets no defaults (no sourceAddress means
    UseNodeIP). That every named filter exists is the writer's check (it needs the datastore)."""
    spec = doc["spec"]
    omit_empty(
        spec,
        (
            "node",
            "nodeSelector",
            "peerIP",
            "asNumber",
            "peerSelector",
            "keepOriginalNextHop",
            "sourceAddress",
            "reachableBy",
            "filters",
            "localWorkloadSelector",
        ),
    )
    _check_peer_local_side(spec)
    # A local workload peering excludes the other remote sides: checked first, as the more specific.
    _check_local_workload_peering(spec)
    _check_peer_remote_side(spec)
    _check_reachable_by(spec)


def _check_peer_local_side(spec: dict) -> None:
    """The local side is one node or the nodes a selector matches, not both."""
    if "node" in spec and "nodeSelector" in spec:
        raise Invalid("spec.node", "Node field must be empty when NodeSelector is specified: a peer is for one node or for the nodes a selector matches")


def _check_local_workload_peering(spec: dict) -> None:
    """A peering with local workloads (localWorkloadSelector) takes an AS number, and neither a
    peer IP nor a peer selector."""
    if "localWorkloadSelector" not in spec:
        return
    if "peerSelector" in spec:
        raise Invalid("spec.peerSelector", "PeerSelector field must be empty when LocalWorkloadSelector is specified")
    if "asNumber" not in spec:
        raise Invalid("spec.asNumber", "ASNumber field must NOT be empty when LocalWorkloadSelector is specified")
    if "peerIP" in spec:
        raise Invalid("spec.peerIP", "PeerIP field must be empty when LocalWorkloadSelector is specified")


def _check_peer_remote_side(spec: dict) -> None:
    """The remote side is a peer IP with its AS number, or a peer selector (whose nodes bring
    their own AS numbers), not both."""
    if "peerIP" in spec and "peerSelector" in spec:
        raise Invalid("spec.peerIP", "PeerIP field must be empty when PeerSelector is specified")
    if "asNumber" in spec and "peerSelector" in spec:
        raise Invalid("spec.asNumber", "ASNumber field must be empty when PeerSelector is specified: each selected node's own AS is used")


def _check_reachable_by(spec: dict) -> None:
    """reachableBy (the gateway to the peer) needs a peer IP of the same address family."""
    if "reachableBy" not in spec:
        return
    if "peerIP" not in spec:
        raise Invalid("spec.reachableBy", "ReachableBy field must be empty when PeerIP is empty")
    peer = parse_ip(split_peer_ip(spec["peerIP"])[0])  # type: ignore[index]  # peerIP was checked
    gateway = parse_ip(spec["reachableBy"])
    if peer is not None and gateway is not None and ip_family(peer) != ip_family(gateway):
        raise Invalid("spec.reachableBy", "ReachableBy and PeerIP address family mismatched")


def peer_node(doc: dict) -> str:
    """The NODE cell of `get bgppeers`: the node, else the node selector, else "(global)"."""
    spec = _spec(doc)
    return spec.get("node") or spec.get("nodeSelector") or "(global)"


# The same table with or without -o wide; an unset AS prints as 0, as calicoctl's template does.
_BGP_PEER_COLUMNS = (
    Column("NAME", name_of),
    Column("PEERIP", lambda d: _spec(d).get("peerIP", "")),
    Column("NODE", peer_node),
    Column("ASN", lambda d: str(_spec(d).get("asNumber") or 0)),
)

BGP_PEER = Kind(
    name="BGPPeer",
    plural="bgppeers",
    aliases=("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"),
    spec=BGP_PEER_SPEC,
    prepare=_prepare_bgp_peer,
    columns=_BGP_PEER_COLUMNS,
    wide=_BGP_PEER_COLUMNS,
)

# --- BGPFilter ---

def bgp_filter_interface(text: str) -> str | None:
    """A BGPFilter rule's interface: a name or glob of at most 15 characters, or '*' alone."""
    if not _INTERFACE_GLOB.match(text):
        return f"invalid interface {text!r}: at most 15 letters, digits, '_', '.', '-' or '*'"
    return None


def _filter_rule(family: int) -> Obj:
    bits = 32 if family == 4 else 128

    def check(rule: dict, path: str) -> None:
        omit_empty(rule, ("cidr", "source", "interface", "matchOperator"))
        if "cidr" in rule and "matchOperator" not in rule:
            raise Invalid(join(path, "matchOperator"), "MatchOperator cannot be empty when CIDR is not: give Equal, NotEqual, In or NotIn")
        if "matchOperator" in rule and "cidr" not in rule:
            raise Invalid(join(path, "cidr"), "CIDR cannot be empty when MatchOperator is not")
        if "prefixLength" in rule and "cidr" not in rule:
            raise Invalid(join(path, "cidr"), "CIDR cannot be empty when PrefixLength is not")

    return Obj(
        {
            "cidr": OrEmpty(Str(network_v4 if family == 4 else network_v6)),
            "prefixLength": Obj({"min": Int(0, bits), "max": Int(0, bits)}),
            "source": OrEmpty(Enum("RemotePeers")),
            "interface": OrEmpty(Str(bgp_filter_interface)),
            "matchOperator": OrEmpty(Enum("Equal", "NotEqual", "In", "NotIn")),
            "action": Enum("Accept", "Reject"),
        },
        required=("action",),
        check=check,
    )


BGP_FILTER_SPEC = Obj(
    {
        "exportV4": List(_filter_rule(4)),
        "importV4": List(_filter_rule(4)),
        "exportV6": List(_filter_rule(6)),
        "importV6": List(_filter_rule(6)),
    }
)


def _prepare_bgp_filter(doc: dict) -> None:
    omit_empty(doc["spec"], ("exportV4", "importV4", "exportV6", "importV6"))


# The number of rules in each list, with or without -o wide.
_BGP_FILTER_COLUMNS = (
    Column("NAME", name_of),
    *(Column(f"NUM{key.upper()}", lambda d, key=key: str(len(_spec(d).get(key) or []))) for key in ("exportV4", "importV4", "exportV6", "importV6")),
)

BGP_FILTER = Kind(
    name="BGPFilter",
    plural="bgpfilters",
    aliases=("bgpfilter", "bgpfilters", "bgpf", "bgpfs", "bf", "bfs"),
    spec=BGP_FILTER_SPEC,
    prepare=_prepare_bgp_filter,
    columns=_BGP_FILTER_COLUMNS,
    wide=_BGP_FILTER_COLUMNS,
)

KINDS = (NODE, BGP_CONFIGURATION, BGP_PEER, BGP_FILTER)
